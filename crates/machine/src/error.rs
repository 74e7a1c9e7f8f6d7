//! The machine's error type. Every message says what was wrong and with which value; CPU-state
//! errors carry a register dump (see [`crate::dump`]).

use crate::loader::LoadError;
use crane86_memory::MemoryError;
use crane86_x86::Exception;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MachineError {
    #[error("reading {}: {reason}", path.display())]
    ReadImage {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("invalid memory size {0:?} (expected e.g. 256M, 1G, or a plain number of MiB)")]
    BadMemSize(String),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(
        "firmware image {name}: {size} bytes is not a non-zero multiple of 64 KiB (at most 16 MiB)"
    )]
    BadFirmwareSize { name: String, size: usize },
    #[error("loading kernel {name}: {reason}")]
    Kernel { name: String, reason: LoadError },
    #[error("loading module {name}: {reason}")]
    Module { name: String, reason: LoadError },
    #[error("nothing to boot: give a kernel (--kernel FILE) or a firmware image (--bios FILE)")]
    NothingToBoot,
    #[error("opening serial output file {}: {reason}", path.display())]
    SerialFile {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("starting the stdin reader thread for the serial console: {0}")]
    StdinReader(std::io::Error),
    #[error("triple fault: {exception} could not be delivered; the CPU shut down after {instructions} instructions\n{dump}")]
    TripleFault {
        exception: Exception,
        instructions: u64,
        dump: String,
    },
    #[error("the guest halted with interrupts disabled and no event can wake it (after {instructions} instructions)\n{dump}")]
    HaltedForever { instructions: u64, dump: String },
    #[error("engine {engine} cannot run here: {reason}")]
    EngineUnavailable {
        engine: crate::EngineKind,
        reason: String,
    },
    #[error("engine {engine} failed after {instructions} instructions: {message}\n{dump}")]
    EngineFailed {
        engine: crate::EngineKind,
        message: String,
        instructions: u64,
        dump: String,
    },
    #[error("engine {engine} cannot count guest instructions, which {feature} needs")]
    NeedsInstructionCount {
        engine: crate::EngineKind,
        feature: &'static str,
    },
    #[error("invalid engine switch {spec:?}: {reason}")]
    BadEngineSwitch { spec: String, reason: String },
    #[error("the guest reset the machine {resets} times in a row, each within {} instructions (or, under kvm, {:?}) of the last (limit {limit}): reset loop", crate::machine::RESET_LOOP_WINDOW, crate::machine::RESET_LOOP_TIME)]
    ResetLoop { resets: u32, limit: u32 },
}
