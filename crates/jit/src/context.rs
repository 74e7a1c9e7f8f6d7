//! What native code and Rust share while a block runs: [`BlockCtx`] (whose fields inline code
//! addresses by offset), the step helper through which native code hands an instruction to
//! the interpreter, and [`must_leave_chain`], the conditions under which native code must
//! return to the run loop instead of entering the next block.

use crate::profile;
use crane86_interp::block::{Block, Link};
use crane86_interp::cpu::Cpu;
use crane86_interp::{step_insn, RunExit, Step};
use crane86_memory::tlb::TlbEntry;
use crane86_x86::{flags, CpuState};
use std::ffi::c_void;

/// What native code and the step helper share for one block execution.
#[repr(C)]
pub struct BlockCtx {
    /// The architectural state; inline code addresses its fields by offset.
    pub state: *mut CpuState,
    /// The retired-instruction counter (`InterpStats::instructions`).
    pub retired: *mut u64,
    /// The TLB set of the current privilege (CPL 3 or not; constant for a block run, since
    /// every privilege change leaves the block) and its access counter.
    pub tlb: *const TlbEntry,
    pub tlb_accesses: *mut u64,
    /// The interpreter context (`*mut Cpu`), for helper calls.
    pub(crate) cpu: *mut c_void,
    /// The block running now: native code updates it when it tail-calls a successor.
    pub(crate) block: *const Block,
    pub(crate) bits: u32,
    /// Native code enters a successor (or loops once more) only while the retired count
    /// plus the successor's length stays at or below this: the slice budget, absolute. The
    /// step helper sets it to 0 when native code must return to the run loop instead (see
    /// [`must_leave_chain`]), so one compare at each exit covers both.
    pub(crate) limit: u64,
    /// The block cache's epoch: only links of this epoch may be followed.
    pub(crate) epoch: u64,
    /// Successors native code entered by itself since the context was set up.
    pub(crate) chained: u64,
    /// Set by the helper when the run must end.
    pub(crate) exit: Option<RunExit>,
    /// The result of the last helper native code called (through its thunk, see
    /// [`crate::backend::Helpers`]).
    pub(crate) ret: u64,
    /// The vCPU's [`crate::compiler::JumpTable`] (its first entry).
    pub(crate) jump_table: *const Link,
}

/// Whether the run loop has to look at the machine before the next block: an interrupt
/// shadow, an interrupt to deliver (handed over by another engine, or deliverable now),
/// HLT, single-step, or overwritten code. Inline code changes none of these (its stores
/// take the slow path on code pages and device memory), so only the step helper and the
/// run loop need to ask.
pub(crate) fn must_leave_chain(cpu: &Cpu) -> bool {
    let s = &*cpu.s;
    s.interrupt_shadow
        || s.pending_external.is_some()
        || s.halted
        || s.rflags & flags::TF != 0
        || (s.rflags & flags::IF != 0 && cpu.plat.interrupt_pending())
        || cpu.mem.has_smc_dirty()
}

/// Run instruction `index` of the block through the interpreter. Returns nonzero when the
/// native code must return (the block is left, the run ends, or RFLAGS.TF became set so the
/// interpreter must take over single-stepping). It zeroes [`BlockCtx::limit`] whenever the
/// block is left this way or the machine needs the run loop's attention
/// ([`must_leave_chain`]), so the native code returns at the block's end instead of entering
/// a successor.
///
/// # Safety
/// `ctx` points at the live [`BlockCtx`] of the running block, whose `cpu` and `block`
/// pointers are valid and not otherwise borrowed while the native code runs.
pub unsafe extern "C" fn step_helper(ctx: *mut BlockCtx, index: u32) -> u32 {
    // SAFETY: guaranteed by the caller (the native block, called from `Compiler::execute`).
    let ctx = unsafe { &mut *ctx };
    // SAFETY: `cpu` was made from the `&mut Cpu` that `execute` holds unused meanwhile.
    let cpu = unsafe { &mut *(ctx.cpu as *mut Cpu<'_>) };
    // SAFETY: `block` is an `Rc<Block>` that `execute` keeps alive.
    let block = unsafe { &*ctx.block };
    if profile::enabled() {
        profile::count(&block.insns[index as usize].insn);
    }
    let leave = match step_insn(cpu, &block.insns[index as usize], ctx.bits) {
        Step::Next => u32::from(cpu.s.rflags & flags::TF != 0),
        Step::Leave => 1,
        Step::Exit(e) => {
            ctx.exit = Some(e);
            1
        }
    };
    // A change of code size (a far transfer or IRET into compatibility mode, say) also
    // stops the chain: native exits look up successors of the block's own code size only.
    if leave != 0 || must_leave_chain(cpu) || cpu.s.code_bits() != ctx.bits {
        ctx.limit = 0;
    }
    leave
}
