//! crane86 facade: re-exports the machine API so embedders depend on one crate.
//!
//! The layers (see `../shared/DESIGN.md`): [`x86`] defines architectural state, [`memory`]
//! holds guest RAM and the softmmu, [`devices`] the PC device model, [`interp`] the
//! interpreter engine, and [`machine`] ties them together into a runnable PC.

pub use crane86_devices as devices;
pub use crane86_interp as interp;
pub use crane86_machine as machine;
pub use crane86_memory as memory;
pub use crane86_x86 as x86;
