//! The PC machine: guest RAM, the device platform, loaders, and the vCPU loop over an
//! interchangeable execution [`engine`]. [`testkit`] builds ready-to-run guests in any CPU
//! mode for instruction tests and benchmarks.

pub mod engine;
pub mod testkit;

pub use engine::{Engine, EngineExit, EngineKind};
