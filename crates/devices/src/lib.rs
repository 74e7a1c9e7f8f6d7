//! The PC device model. [`platform::Platform`] is the boundary every engine talks to (port I/O,
//! MMIO, interrupt acknowledge, machine-level actions such as reset or A20).

pub mod platform;

pub use platform::{Platform, PlatformAction};
