//! The KVM engine: the guest runs on the host CPU through `/dev/kvm` (Linux x86-64 hosts),
//! over the same guest RAM mapping and the same userspace device model as the interpreter
//! and the JIT.
//!
//! - [`vcpu`] — [`KvmVcpu`]: VM + vCPU setup and the `KVM_RUN` loop (why the interrupt
//!   controller stays in userspace is written there)
//! - [`state`] — `CpuState` ⇄ KVM register structures, both directions
//! - [`cpuid`] — crane86's CPUID model intersected with what KVM supports
//! - [`memory`] — guest RAM and firmware as KVM memory slots
//! - [`kick`] — ending a `KVM_RUN` when the time slice is over
//! - [`probe`] — can KVM run here, and is it hardware virtualization?
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

pub mod cpuid;
pub mod kick;
pub mod memory;
pub mod probe;
pub mod state;
pub mod vcpu;

pub use probe::{probe, KvmProbe};
pub use vcpu::{KvmStats, KvmVcpu};

use crane86_devices::PlatformAction;
use thiserror::Error;

/// Why a KVM run ended (the non-error endings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvmExit {
    /// The time slice is over.
    SliceEnd,
    /// The guest executed HLT (or is halted) and no interrupt can wake it now.
    Halted,
    /// A device asked for a machine-level action.
    Action(PlatformAction),
    /// KVM_EXIT_SHUTDOWN: the guest triple-faulted.
    TripleFault,
}

#[derive(Debug, Error)]
pub enum KvmError {
    #[error("cannot open /dev/kvm: {}", std::io::Error::from_raw_os_error(*errno))]
    Open { errno: i32 },
    #[error("{what} failed: {}", std::io::Error::from_raw_os_error(*errno))]
    Ioctl { what: &'static str, errno: i32 },
    #[error("KVM refused guest memory slot {guest_phys:#x}+{size:#x}: {}", std::io::Error::from_raw_os_error(*errno))]
    MemorySlot {
        guest_phys: u64,
        size: u64,
        errno: i32,
    },
    #[error("guest RAM moved after it was registered with KVM")]
    MemoryMoved,
    #[error("KVM did not take {register} = {wanted:#x} (it holds {held:#x}): this KVM cannot run the guest in that mode")]
    StateRefused {
        register: &'static str,
        wanted: u64,
        held: u64,
    },
    #[error("a KVM table (CPUID or MSR list) is too large")]
    TableTooLarge,
    #[error("KVM refused MSR {index:#x} = {value:#x}")]
    MsrRefused { index: u32, value: u64 },
    #[error("KVM cannot read MSR {index:#x}")]
    MsrUnreadable { index: u32 },
    #[error("KVM could not enter the guest (hardware entry failure reason {reason:#x})")]
    EntryFailed { reason: u64 },
    #[error("KVM internal error (suberror {suberror}; 1 = instruction emulation failed), data {data:x?}")]
    Internal { suberror: u32, data: Vec<u64> },
    #[error("KVM could not emulate the guest instruction at RIP (bytes: {instruction})")]
    EmulationFailed { instruction: String },
    #[error("unexpected KVM exit: {0}")]
    UnexpectedExit(String),
    #[error("slice timer: {0}")]
    Timer(String),
}
