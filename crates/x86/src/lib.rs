//! x86 architectural definitions shared by every engine: the CPU state struct, RFLAGS bits and
//! the lazy-flags representation, segment descriptors, exceptions, control-register bits, the
//! CPUID model and MSR numbers. Definitions only: no instruction execution lives here.

pub mod cpuid;
pub mod exception;
pub mod flags;
pub mod fpu;
pub mod fxsave;
pub mod msr;
pub mod regs;
pub mod segment;
pub mod state;

pub use exception::{Exception, Vector};
pub use flags::{CcOp, LazyFlags};
pub use fpu::{FpuState, F80};
pub use segment::{SegReg, Segment, TableReg};
pub use state::{CpuMode, CpuState};
