//! The PC machine: guest RAM, the device platform, loaders, and the vCPU loop over an
//! interchangeable execution [`engine`]. [`testkit`] builds ready-to-run guests in any CPU
//! mode for instruction tests and benchmarks.
//!
//! - [`acpi`] — ACPI tables for directly booted kernels
//! - [`config`] — [`MachineConfig`] (RAM, engine and engine switches, serial sink, boot images,
//!   clock, policies)
//! - [`engine`] — the [`Engine`] trait, the engines' adapters, `--accel auto`
//! - [`machine`] — [`PcMachine`] and the vCPU loop, [`RunSummary`]
//! - [`loader`] — firmware, flat binary and Multiboot v1 loaders
//! - [`demo`] — the built-in self-checking demo guest
//! - [`dump`] — the register dump used in error messages
//! - [`platform`] — what the loop needs from the device model

pub mod acpi;
pub mod config;
pub mod demo;
pub mod dump;
pub mod engine;
pub mod error;
pub mod loader;
pub mod machine;
pub mod platform;
pub mod testkit;

pub use config::{
    parse_mem_size, ClockMode, EngineSwitch, FlatEntryMode, ImageSource, KernelConfig,
    KernelFormat, MachineConfig, SerialBuffer, SerialSink, SwitchPoint, TripleFaultPolicy,
};
pub use engine::{choose_auto, Engine, EngineChoice, EngineExit, EngineKind};
pub use error::MachineError;
pub use machine::{ExitReason, PcMachine, RunSummary};
