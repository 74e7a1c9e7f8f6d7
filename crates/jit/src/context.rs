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
    /// The retired-instruction count (`InterpStats::instructions`) while native code runs,
    /// kept here so that native code adds to it and tests it without going through a
    /// pointer: `Compiler::execute` copies the interpreter's counter in and back, and the
    /// step helper makes the two agree around each instruction it runs.
    pub retired: u64,
    /// The TLB set of the current privilege (CPL 3 or not; constant for a block run, since
    /// every privilege change leaves the block) and its access counter.
    pub tlb: *const TlbEntry,
    pub tlb_accesses: *mut u64,
    /// The interpreter context (`*mut Cpu`), for helper calls.
    pub(crate) cpu: *mut c_void,
    /// The block running now, where Rust reads it: a block with links stores its own
    /// address here before each helper call and before it returns (entering a successor
    /// does not), so the step helper and the run loop after the return see the right one.
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

/// What native code hands the step helper in one `u32` (built by [`StepArg::pack`]):
/// the instruction's index in the block, the instructions the block retired since its last
/// count flush (the helper adds them, so the count is exact while the interpreter runs and
/// when the block is left), and the count the helper takes back when native code goes on
/// (a slow path's fast path counted its instruction and those before it as pending, so the
/// helper undoes its additions; 0 for an instruction only the interpreter runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StepArg {
    pub index: u32,
    pub pending: u32,
    pub give_back: u32,
}

impl StepArg {
    /// Bits of each count field (a block has at most `MAX_BLOCK_INSNS` instructions, and
    /// the counts never exceed one more than that).
    const COUNT_BITS: u32 = 12;
    const INDEX_BITS: u32 = 8;

    pub fn pack(self) -> u32 {
        const _: () = assert!(crane86_interp::block::MAX_BLOCK_INSNS < 1 << StepArg::INDEX_BITS);
        debug_assert!(self.index < 1 << Self::INDEX_BITS);
        debug_assert!(
            self.pending < 1 << Self::COUNT_BITS && self.give_back < 1 << Self::COUNT_BITS
        );
        self.index
            | self.pending << Self::INDEX_BITS
            | self.give_back << (Self::INDEX_BITS + Self::COUNT_BITS)
    }

    pub fn unpack(arg: u32) -> StepArg {
        let mask = (1 << Self::COUNT_BITS) - 1;
        StepArg {
            index: arg & ((1 << Self::INDEX_BITS) - 1),
            pending: (arg >> Self::INDEX_BITS) & mask,
            give_back: arg >> (Self::INDEX_BITS + Self::COUNT_BITS),
        }
    }
}

/// Run the instruction [`StepArg`] `arg` names through the interpreter, with its counts.
/// Returns nonzero when the native code must return (the block is left, the run ends, or
/// RFLAGS.TF became set so the interpreter must take over single-stepping). It zeroes
/// [`BlockCtx::limit`] whenever the block is left this way or the machine needs the run
/// loop's attention ([`must_leave_chain`]), so the native code returns at the block's end
/// instead of entering a successor.
///
/// # Safety
/// `ctx` points at the live [`BlockCtx`] of the running block, whose `cpu` and `block`
/// pointers are valid and not otherwise borrowed while the native code runs.
pub unsafe extern "C" fn step_helper(ctx: *mut BlockCtx, arg: u32) -> u32 {
    // SAFETY: guaranteed by the caller (the native block, called from `Compiler::execute`).
    let ctx = unsafe { &mut *ctx };
    // SAFETY: `cpu` was made from the `&mut Cpu` that `execute` holds unused meanwhile.
    let cpu = unsafe { &mut *(ctx.cpu as *mut Cpu<'_>) };
    // SAFETY: `block` is the running block (stored by its code before this call): the one
    // `execute` entered, whose `Rc` it holds, or a link target of the live epoch, which the
    // block cache holds.
    let block = unsafe { &*ctx.block };
    let StepArg {
        index,
        pending,
        give_back,
    } = StepArg::unpack(arg);
    cpu.stats.instructions = ctx.retired + u64::from(pending);
    // Native code leaves RIP pending at instruction boundaries: it is this instruction's.
    let d = &block.translated_insns()[index as usize];
    cpu.s.rip = d.insn.ip();
    if profile::enabled() {
        profile::count(&d.insn);
    }
    let leave = match step_insn(cpu, d, ctx.bits) {
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
    ctx.retired = cpu.stats.instructions;
    if leave == 0 {
        ctx.retired -= u64::from(give_back);
    }
    leave
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_arguments_round_trip_at_their_limits() {
        let max = crane86_interp::block::MAX_BLOCK_INSNS as u32;
        for arg in [
            StepArg {
                index: 0,
                pending: 0,
                give_back: 0,
            },
            StepArg {
                index: max - 1,
                pending: max,
                give_back: max + 1,
            },
            StepArg {
                index: 5,
                pending: 3,
                give_back: 4,
            },
        ] {
            assert_eq!(StepArg::unpack(arg.pack()), arg);
        }
    }
}
