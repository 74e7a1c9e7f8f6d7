//! Guest block → Cranelift IR. Every instruction either gets inline IR (in 64-bit code: the
//! register forms of MOV, LEA, ADD/ADC/SUB/SBB/AND/OR/XOR/CMP/TEST (any operand size, AH..BH
//! included), NOT/NEG/INC/DEC, MOVZX/MOVSX/MOVSXD, SHL/SHR/SAR by an immediate, IMUL,
//! MUL, SETcc, CMOVcc, BT, BSF/BSR, SHLD/SHRD and NOP; ROL/ROR by an immediate,
//! SHL/SHR/SAR r32/r64 by CL; through the TLB fast path MOV loads and stores of every
//! size, ALU ops with a memory source, CMP/TEST of memory, ADD/SUB/AND/OR/XOR/INC/DEC to
//! memory, MUL/DIV/BT/BSF/BSR of memory, FNSTCW, PUSH, POP, CALL rel32/[mem] and RET;
//! under a run-time guard (the interpreter otherwise) DIV, JMP/CALL r64 and the SSE forms
//! of `sse.rs`; direct JMP and every Jcc) or becomes a call to the interpreter's
//! per-instruction step ([`crate::context::step_helper`]), which owns the semantics of
//! everything else: faults, flags, platform actions, leaving the block. Helpers are called
//! through thunks that preserve every register ([`crate::backend::Helpers`]).
//!
//! Conditions (Jcc, SETcc, CMOVcc) come from the pending inline flags when those decide
//! them (the operands of an inline CMP/SUB/ADD/logic op, or the flags an inline shift
//! computed); otherwise the pending flags are stored and [`cond_helper`] evaluates the
//! lazy flags in `CpuState`, which needs no register write-back.
//!
//! State handling: guest GPRs live in Cranelift variables from their first use to the next
//! helper call or block exit, where the modified ones are written back to `CpuState`; after a
//! helper call they are reloaded on demand. The lazy-flags record of inline ALU instructions
//! is kept in variables too and stored once before a helper call or exit (a later ALU
//! instruction overwrites it entirely, so intermediate records are dead). RIP and the
//! retired-instruction count of inline instructions are likewise written only at those
//! points.
//!
//! Files: this one has the translator's register and sync machinery and the block loop;
//! `select.rs` which forms are inline; `flags.rs` conditions and flag write-back; `memory.rs` the
//! TLB fast path and effective addresses; `alu.rs` the ALU ops, shifts and IMUL; `exit.rs`
//! how a block ends: entering its successor (chaining) or, for a block that branches to its
//! own start, iterating inside the function; `indirect_exit.rs` the successor lookup that
//! quick translations share for an exit whose RIP is known only at run time.

use crate::backend::{block_signature, thunk_signature, Helpers, ModelFeatures};
use crate::compiler::JUMP_TABLE_ENTRIES;
use crate::context::{BlockCtx, StepArg};
use crane86_interp::block::{Block, ChainSite, Link, LinkSlot, NativeShape, BLOCK_LINKS};
use crane86_memory::tlb::{TlbEntry, TLB_ENTRIES};
use crane86_x86::flags::CcOp;
use crane86_x86::segment::Segment;
use crane86_x86::{CpuState, LazyFlags};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{self, types, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::{FunctionBuilder, Variable};
use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};
use std::cell::Cell;
use std::mem::{offset_of, size_of};

mod alu;
mod exit;
mod flags;
pub(crate) mod indirect_exit;
mod memory;
mod select;
mod sse;
mod sse_scalar;

pub use exit::{ChainImmediate, ChainPlaceholders};
use flags::cc_number;
pub use flags::{arith_flags_helper, cond_helper};
use select::near_target;
pub(crate) use select::{
    continues_at, exit_targets, inline_jcc_target, native_shape, side_exit_of, slot_of, SideExit,
};
pub use select::{inline_kind, Inline};
use select::{is_cmovcc, mem_simple, stack_run};

/// GPR number of a 32- or 64-bit general register.
fn gpr_index(r: Register) -> Option<usize> {
    let n = r as usize;
    if (Register::RAX as usize..=Register::R15 as usize).contains(&n) {
        Some(n - Register::RAX as usize)
    } else if (Register::EAX as usize..=Register::R15D as usize).contains(&n) {
        Some(n - Register::EAX as usize)
    } else {
        None
    }
}

/// GPR number and bit position of a general register of any size (AH..BH are bits 8..15).
fn gpr_part(r: Register) -> Option<(usize, u32)> {
    let n = r as usize;
    let at = |a: Register| n.wrapping_sub(a as usize);
    if at(Register::AL) < 4 {
        Some((at(Register::AL), 0))
    } else if at(Register::AH) < 4 {
        Some((at(Register::AH), 8))
    } else if at(Register::SPL) < 12 {
        Some((at(Register::SPL) + 4, 0))
    } else if at(Register::AX) < 16 {
        Some((at(Register::AX), 0))
    } else {
        gpr_index(r).map(|k| (k, 0))
    }
}

fn mask_of(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1 << bits) - 1
    }
}

fn gpr_offset(k: usize) -> i32 {
    (offset_of!(CpuState, gpr) + 8 * k) as i32
}

const RIP: i32 = offset_of!(CpuState, rip) as i32;
const RFLAGS: i32 = offset_of!(CpuState, rflags) as i32;
/// GPR numbers of RAX, RSP and RBP.
const RAX: usize = 0;
const RSP: usize = 4;
const RBP: usize = 5;
const LAZY_OP: i32 = (offset_of!(CpuState, lazy) + offset_of!(LazyFlags, op)) as i32;
const LAZY_RES: i32 = (offset_of!(CpuState, lazy) + offset_of!(LazyFlags, res)) as i32;
const LAZY_SRC: i32 = (offset_of!(CpuState, lazy) + offset_of!(LazyFlags, src)) as i32;
const LAZY_AUX: i32 = (offset_of!(CpuState, lazy) + offset_of!(LazyFlags, aux)) as i32;

/// The lazy-flags record of the last inline ALU instruction, not yet stored.
#[derive(Clone, Copy)]
struct PendingFlags {
    op: CcOp,
    res: Value,
    src: Value,
    /// The first operand (for conditions evaluated inline).
    a: Value,
    /// Operand size in bits.
    bits: u32,
    /// SUB/CMP/NEG (else a logic op: AND/OR/XOR/TEST), ADD, INC or DEC; `Eflags` for
    /// materialized flags (`res` is then the six arithmetic flags, which replace those of
    /// RFLAGS at sync).
    kind: CcOp,
    /// The lazy record's `aux` (INC/DEC: the preserved CF, an I64 0/1); `None` is 0.
    aux: Option<Value>,
}

impl PendingFlags {
    /// Materialized flags: `fl` is the six arithmetic flags in their RFLAGS positions.
    fn materialized(fl: Value, bits: u32) -> PendingFlags {
        PendingFlags {
            op: CcOp::Eflags,
            res: fl,
            src: fl,
            a: fl,
            bits,
            kind: CcOp::Eflags,
            aux: None,
        }
    }

    /// The record of `a - src = res` (SUB, CMP, NEG, CMPXCHG), `bits` wide.
    fn sub(bits: u32, a: Value, src: Value, res: Value) -> PendingFlags {
        PendingFlags {
            op: CcOp::sized(CcOp::Sub8, bits),
            res,
            src,
            a,
            bits,
            kind: CcOp::Sub8,
            aux: None,
        }
    }
}

pub struct Translator<'a, 'b> {
    pub b: &'a mut FunctionBuilder<'b>,
    ptr: Type,
    ctx: Value,
    state: Value,
    /// The helper thunks (see [`Helpers`]): `(ctx, ptr, i32)` for the step and condition
    /// helpers, `(ctx, ptr)` for the flags helper.
    thunk_sig: ir::SigRef,
    flags_thunk_sig: ir::SigRef,
    helpers: Helpers,
    vars: [Variable; 16],
    /// What the translation has pending at the current point (compile-time state).
    tracked: Tracked,
    /// The pending RIP when it is only known at run time ([`PendingRip::Var`]).
    rip_var: Variable,
    /// The pending flags' `res`, `src` and `a` of an inline load + ALU op, merged from its
    /// fast and slow paths.
    flag_vars: [Variable; 4],
    /// The block's exit (every path there has synced).
    exit: ir::Block,
    /// The condition of the inline Jcc just translated (an I8: taken or not), which the
    /// block's end branches on to enter the successor of each target directly.
    branch_taken: Option<Value>,
    /// Instructions given inline IR.
    pub inlined: u32,
    /// Count TLB hits and chained transitions ([`crate::backend::Job::counters`]).
    counters: bool,
    /// The lazy-flags op expected in `CpuState` where the block reads flags it did not set
    /// ([`crate::backend::Job::entry_flags`]).
    entry_flags: Option<CcOp>,
    features: ModelFeatures,
    /// With chaining, the block's own `Block` address ([`Chain::block`]), which the code
    /// stores in [`BlockCtx::block`] before each helper call and before it returns (entering
    /// a successor does not store it).
    own_block: Option<usize>,
    /// [`BlockCtx::tlb`] once a memory form has loaded it: constant while the function runs
    /// (a change of CPL, which picks the other set, leaves native code), and loaded in a
    /// block that dominates every later instruction (see `Translator::tlb_set`).
    tlb_set: Option<Value>,
    /// An exit whose RIP is known only at run time tail-calls the module's shared lookup
    /// ([`indirect_exit`]) instead of inlining it (quick translations).
    pub shared_indirect_exit: bool,
    /// Direct successors are entered through immediates the compiler patches when it links
    /// the block ([`ChainImmediate`]) instead of through the link cells (code memory the
    /// vCPU thread may write: see `code_memory::patchable`).
    pub patch_chains: bool,
    /// The placeholders of those immediates in this translation.
    pub chain_placeholders: ChainPlaceholders,
}

/// The compile-time half of the translator's state, saved around an inline form whose slow
/// path must see the state from before it.
#[derive(Clone, Copy, Default)]
struct Tracked {
    /// The variable holds the register's current value.
    cached: [bool; 16],
    /// The variable is newer than `CpuState`.
    dirty: [bool; 16],
    flags: Option<PendingFlags>,
    /// Inline instructions retired since the last sync, and inline TLB hits (for the TLB
    /// statistics): added to their counters at the next sync. Known at translation time,
    /// so the two paths of an inline memory access agree on them without a merge (the slow
    /// path takes its instruction's counts back out of the counters, see
    /// [`Translator::interpreter_path`]).
    retired: u32,
    tlb_hits: u32,
    /// The RIP after the inline instructions since the last sync, not yet stored.
    rip: PendingRip,
    /// GPRs (bit k: GPR k) whose variable got a new value since the fast path of the
    /// current inline form began: the ones its slow path reloads.
    defined: u16,
}

/// The RIP inline code has not stored yet.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum PendingRip {
    /// `CpuState::rip` is current.
    #[default]
    Stored,
    /// Known at translation time.
    Const(u64),
    /// In [`Translator::rip_var`] (a taken-or-not Jcc, a RET's return address).
    Var,
}

fn trusted() -> MemFlagsData {
    MemFlagsData::trusted()
}

/// A load of memory that does not change while native code runs (the block context's
/// pointers and limits): pure for Cranelift, so repeated loads merge.
fn fixed() -> MemFlagsData {
    MemFlagsData::trusted().with_readonly().with_can_move()
}

/// What a block's exit needs to enter its successor itself: the address of the block's
/// `Block` (see [`crate::backend::Job::linked_block`]), whose link cells it reads, and the
/// block's RIP and physical address.
pub struct Chain {
    pub block: usize,
    pub rip: u64,
    pub paddr: u64,
}

impl Chain {
    /// The address of link cell `k` of the block (`Block::links[k]`).
    pub fn link(&self, k: usize) -> usize {
        debug_assert!(k < BLOCK_LINKS);
        self.block + offset_of!(Block, links) + k * std::mem::size_of::<Cell<Link>>()
    }
}

impl<'a, 'b> Translator<'a, 'b> {
    pub fn new(
        b: &'a mut FunctionBuilder<'b>,
        ptr: Type,
        helpers: Helpers,
        counters: bool,
        entry_flags: Option<CcOp>,
        features: ModelFeatures,
    ) -> Self {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let ctx = b.block_params(entry)[0];
        // Set by the entry trampoline (see `host_isa` in the backend).
        let state = b.ins().get_pinned_reg(ptr);
        let thunk_sig = b.import_signature(thunk_signature(ptr, &[ptr, types::I32]));
        let flags_thunk_sig = b.import_signature(thunk_signature(ptr, &[ptr]));
        let vars = std::array::from_fn(|_| b.declare_var(types::I64));
        let zero = b.ins().iconst(types::I64, 0);
        let rip_var = b.declare_var(types::I64);
        b.def_var(rip_var, zero);
        let flag_vars = std::array::from_fn(|_| b.declare_var(types::I64));
        let exit = b.create_block();
        // Reached only when the run loop must take over (a helper-run instruction said
        // leave): laid out after the hot code.
        b.set_cold_block(exit);
        Translator {
            b,
            ptr,
            ctx,
            state,
            thunk_sig,
            flags_thunk_sig,
            helpers,
            vars,
            tracked: Tracked::default(),
            rip_var,
            flag_vars,
            exit,
            branch_taken: None,
            inlined: 0,
            counters,
            entry_flags,
            features,
            own_block: None,
            tlb_set: None,
            shared_indirect_exit: false,
            patch_chains: false,
            chain_placeholders: ChainPlaceholders::default(),
        }
    }

    /// Make [`BlockCtx::block`] this block, for Rust code about to read it (a helper, or the
    /// run loop after a return). Nothing for a block without chaining: the run loop set it
    /// to this block before entering it.
    fn store_own_block(&mut self) {
        if let Some(block) = self.own_block {
            let at = self.b.ins().iconst(self.ptr, block as i64);
            self.b
                .ins()
                .store(trusted(), at, self.ctx, offset_of!(BlockCtx, block) as i32);
        }
    }

    /// One more inline instruction retired, with RIP `next` after it.
    fn retire(&mut self, next: u64) {
        self.tracked.retired += 1;
        self.tracked.rip = PendingRip::Const(next);
    }

    /// One more inline instruction retired, with a RIP after it known only at run time.
    fn retire_to(&mut self, next: Value) {
        self.tracked.retired += 1;
        self.b.def_var(self.rip_var, next);
        self.tracked.rip = PendingRip::Var;
    }

    /// The pending RIP as a value (`None`: `CpuState::rip` is current).
    fn pending_rip(&mut self) -> Option<Value> {
        match self.tracked.rip {
            PendingRip::Stored => None,
            PendingRip::Const(rip) => Some(self.b.ins().iconst(types::I64, rip as i64)),
            PendingRip::Var => Some(self.b.use_var(self.rip_var)),
        }
    }

    /// Sync the state (but RIP, which the helper sets from the instruction) and let the
    /// interpreter run instruction `index`; on "leave" go to the exit. The retired count is
    /// not flushed in IR: the helper adds the pending count itself, and takes `give_back`
    /// back out when native code goes on (see [`StepArg`]).
    fn call_step(&mut self, index: usize, give_back: u32) {
        // A constant pending RIP is the instruction's own: the helper sets it.
        if let PendingRip::Const(_) = self.tracked.rip {
            self.tracked.rip = PendingRip::Stored;
        }
        self.sync_state();
        self.flush_tlb_hits();
        let arg = StepArg {
            index: index as u32,
            pending: std::mem::take(&mut self.tracked.retired),
            give_back,
        };
        self.store_own_block();
        let idx = self.b.ins().iconst(types::I32, i64::from(arg.pack()));
        let leave = self.call_helper(self.helpers.step, &[self.ctx, idx], types::I32);
        let next = self.continuation_block();
        self.b.ins().brif(leave, self.exit, &[], next, &[]);
        self.b.seal_block(next);
        self.b.switch_to_block(next);
    }

    /// Emit block `insns` (code size `bits`) and finish the function, with native chaining
    /// at its exit when `chain` is given.
    pub fn block(&mut self, insns: &[Instruction], bits: u32, chain: Option<&Chain>) {
        self.own_block = chain.map(|c| c.block);
        if let (Some(_), Some(first)) = (chain, insns.first()) {
            // A successor entered by native code finds the RIP its predecessor left, not
            // its own: it starts with its own pending (see `Self::chain_direct`).
            self.tracked.rip = PendingRip::Const(first.ip());
        }
        let header = match (bits, chain) {
            (64, Some(_)) => self.loop_header(insns),
            _ => None,
        };
        let mut looped = false;
        let shape = native_shape(insns);
        // Instructions already translated with the one before (a run of PUSHes or POPs).
        let mut covered = 0;
        for (k, i) in insns.iter().enumerate() {
            if covered > 0 {
                covered -= 1;
                continue;
            }
            self.branch_taken = None;
            let next = insns.get(k + 1);
            if bits == 64 && self.branch(i, next) {
                self.inlined += 1;
                match next {
                    None => {
                        if let Some(h) = &header {
                            self.back_edge(h, insns.len());
                            looped = true;
                        }
                    }
                    Some(next) => {
                        if let Some(taken) = self.branch_taken.take() {
                            let side = side_exit_of(i, next).expect("a Jcc has a side exit");
                            self.side_exit(chain, &shape, side, taken);
                        }
                    }
                }
                continue;
            }
            let kind = inline_kind(i, bits).filter(|&k| self.model_allows(k, i));
            match kind {
                Some(
                    kind @ (Inline::Load
                    | Inline::Store
                    | Inline::Rmw
                    | Inline::Push
                    | Inline::Pop
                    | Inline::LoadAlu
                    | Inline::Call
                    | Inline::CallReg
                    | Inline::CallMem
                    | Inline::Ret
                    | Inline::JmpMem
                    | Inline::SseMem(_)),
                ) => {
                    let run = match (bits, kind) {
                        (64, Inline::Push | Inline::Pop) => stack_run(&insns[k..]),
                        _ => 1,
                    };
                    if run > 1 {
                        self.stack_group(&insns[k..k + run], k);
                        self.inlined += run as u32;
                        covered = run - 1;
                    } else {
                        self.memory(i, k, kind);
                        self.inlined += 1;
                    }
                }
                Some(Inline::JmpReg) => {
                    self.jump_register(i, k);
                    self.inlined += 1;
                }
                Some(Inline::Div) => {
                    self.div(i, k);
                    self.inlined += 1;
                }
                Some(Inline::Cli) => {
                    self.cli(i, k);
                    self.inlined += 1;
                }
                Some(Inline::Sse(kind)) => {
                    self.sse(i, k, kind);
                    self.inlined += 1;
                }
                Some(kind) => {
                    self.inline(i, kind);
                    self.inlined += 1;
                    self.retire(i.next_ip());
                }
                None => {
                    self.call_step(k, 0);
                    self.tracked.cached = [false; 16];
                }
            }
        }
        if let (Some(h), false) = (&header, looped) {
            // The branch back went to the interpreter after all: the head has no back edge.
            self.b.seal_block(h.block);
        }
        // Helper calls that leave the block go to `exit` and return (the helper stopped the
        // chain); the end of the block may enter the successor.
        let targets = insns.last().and_then(exit_targets);
        let direct = match (&targets, self.branch_taken) {
            // A JMP, a CALL, a fall-through: RIP is the one target here.
            (Some(t), None) => t.len() == 1,
            // An inline Jcc: RIP is the target its condition picks.
            (Some(t), Some(_)) => t.len() == 2,
            _ => false,
        };
        match (bits, chain, targets) {
            (64, Some(chain), Some(targets)) if direct => {
                // Each path has its own RIP (stored only if the exit returns).
                self.tracked.rip = PendingRip::Stored;
                self.sync();
                let taken = self.branch_taken;
                self.chain_direct(chain, &shape, &targets, taken);
            }
            (64, Some(chain), targets) => {
                // The exit stores RIP only if it returns.
                let rip = self.pending_rip();
                self.tracked.rip = PendingRip::Stored;
                self.sync();
                let rip = match rip {
                    Some(v) => v,
                    None => self.b.ins().load(types::I64, trusted(), self.state, RIP),
                };
                self.chain_exit(chain, &shape, rip, targets.as_deref());
            }
            _ => {
                self.sync();
                let exit = self.exit;
                self.b.ins().jump(exit, &[]);
            }
        }
        let exit = self.exit;
        self.b.seal_block(exit);
        self.b.switch_to_block(exit);
        self.store_own_block();
        self.b.ins().return_(&[]);
    }

    /// Whether the CPU model gives `i` the meaning inline form `kind` implements.
    fn model_allows(&self, kind: Inline, i: &Instruction) -> bool {
        match (kind, i.mnemonic()) {
            (Inline::CountZeros, Mnemonic::Tzcnt) => self.features.tzcnt,
            (Inline::CountZeros, _) => self.features.lzcnt,
            _ => true,
        }
    }

    /// Write back everything inline code holds: dirty registers, the pending flags record,
    /// RIP and the counts.
    fn sync(&mut self) {
        self.sync_state();
        self.flush_counts();
    }

    /// Write back the architectural state inline code holds: dirty registers, the pending
    /// flags record and RIP (not the counts).
    fn sync_state(&mut self) {
        for k in 0..16 {
            if self.tracked.dirty[k] {
                let v = self.b.use_var(self.vars[k]);
                self.b.ins().store(trusted(), v, self.state, gpr_offset(k));
                self.tracked.dirty[k] = false;
            }
        }
        self.flush_flags();
        if let Some(v) = self.pending_rip() {
            self.b.ins().store(trusted(), v, self.state, RIP);
            self.tracked.rip = PendingRip::Stored;
        }
    }

    /// One more inline access through the TLB (counted only with
    /// [`crate::backend::Job::counters`]).
    fn count_tlb_hit(&mut self) {
        if self.counters {
            self.tracked.tlb_hits += 1;
        }
    }

    /// Add the pending retired instructions and TLB hits to their counters.
    fn flush_counts(&mut self) {
        let retired = std::mem::take(&mut self.tracked.retired);
        if retired != 0 {
            let at = offset_of!(BlockCtx, retired) as i32;
            let old = self.b.ins().load(types::I64, trusted(), self.ctx, at);
            let new = self.b.ins().iadd_imm_s(old, i64::from(retired));
            self.b.ins().store(trusted(), new, self.ctx, at);
        }
        self.flush_tlb_hits();
    }

    /// Add the pending TLB hits to their counter.
    fn flush_tlb_hits(&mut self) {
        let hits = std::mem::take(&mut self.tracked.tlb_hits);
        self.add_to_counter(offset_of!(BlockCtx, tlb_accesses), i64::from(hits));
    }

    /// Add `n` to the counter the [`BlockCtx`] pointer at `field` points at (nothing for 0).
    fn add_to_counter(&mut self, field: usize, n: i64) {
        if n == 0 {
            return;
        }
        let counter = self.ctx_ptr(field);
        let old = self.b.ins().load(types::I64, trusted(), counter, 0);
        let new = self.b.ins().iadd_imm_s(old, n);
        self.b.ins().store(trusted(), new, counter, 0);
    }

    /// The compile-time state before an inline form with a slow path; the fast path starts
    /// here (and counts the registers it defines from here on).
    fn begin_fast_path(&mut self) -> Tracked {
        let before = self.tracked;
        self.tracked.defined = 0;
        before
    }

    /// The slow path of an inline form: back to the compile-time state `before`, sync it,
    /// and let the interpreter run instruction `index`; then make the state agree with the
    /// fast path's `after`, so that both paths merge without reloading everything:
    /// - the interpreter changed only the registers the instruction writes, and the fast
    ///   path defined those (and any register it loaded first) anew: only those are
    ///   reloaded, every other variable still holds the register's value;
    /// - the fast path leaves its instruction's retired count and TLB hit pending, which the
    ///   interpreter has already added to the counters: the slow path takes them (with the
    ///   counts synced before) back out, so the next sync adds them once. The step helper
    ///   does this for the retired count (it adds the count pending before the instruction
    ///   and takes `after`'s back when the block goes on, see [`StepArg`]).
    fn interpreter_path(&mut self, before: Tracked, after: &Tracked, index: usize) {
        self.interpreter_path_run(before, after, index, 1);
    }

    /// [`Self::interpreter_path`] of an inline form covering the `count` instructions from
    /// `first` (a run of PUSHes or POPs, see [`Self::stack_group`]): the interpreter
    /// runs them one after the other (each may fault or leave; the first helper call adds
    /// the count pending before, and the last takes `after`'s back).
    fn interpreter_path_run(
        &mut self,
        before: Tracked,
        after: &Tracked,
        first: usize,
        count: usize,
    ) {
        self.tracked = before;
        for j in 0..count {
            let give_back = if j + 1 == count { after.retired } else { 0 };
            self.call_step(first + j, give_back);
        }
        self.add_to_counter(
            offset_of!(BlockCtx, tlb_accesses),
            -i64::from(after.tlb_hits),
        );
        for k in 0..16 {
            if after.defined & (1 << k) != 0 {
                let v = self
                    .b
                    .ins()
                    .load(types::I64, trusted(), self.state, gpr_offset(k));
                self.b.def_var(self.vars[k], v);
            }
        }
    }

    /// A block of a path that normal runs do not take (an inline form's interpreter path, a
    /// return to the run loop): marked cold, so Cranelift lays it out after the hot code and
    /// the hot path of a block stays in fewer cache lines, falling through its branches.
    fn slow_block(&mut self) -> ir::Block {
        let block = self.b.create_block();
        self.b.set_cold_block(block);
        block
    }

    /// A block that goes on where the current one ends: cold when the current one is (a
    /// slow path's code after a helper call stays with the slow path).
    fn continuation_block(&mut self) -> ir::Block {
        let current = self.b.current_block();
        if current.is_some_and(|c| self.b.func.layout.is_cold(c)) {
            self.slow_block()
        } else {
            self.b.create_block()
        }
    }

    /// Call the helper thunk at `thunk` with `args` (after the context) and return the
    /// helper's result (the low `ty` of [`BlockCtx::ret`]).
    fn call_helper(&mut self, thunk: usize, args: &[Value], ty: Type) -> Value {
        let f = self.b.ins().iconst(self.ptr, thunk as i64);
        let sig = if args.len() == 2 {
            self.thunk_sig
        } else {
            self.flags_thunk_sig
        };
        let mut all = vec![self.ctx];
        all.extend_from_slice(args);
        self.b.ins().call_indirect(sig, f, &all);
        self.b
            .ins()
            .load(ty, trusted(), self.ctx, offset_of!(BlockCtx, ret) as i32)
    }

    /// An inline form that applies only when `ok` (a boolean computed before) holds: the
    /// fast path is `body`'s IR; otherwise the interpreter runs instruction `index` (and
    /// raises what it must). A form whose fast path leaves RIP known only at run time, or
    /// materializes the flags, gets them back from the interpreter's state on the slow
    /// path, so that both paths merge.
    fn guarded(&mut self, index: usize, ok: Value, body: impl FnOnce(&mut Self)) {
        let before = self.begin_fast_path();
        let (fast, slow, merge) = (
            self.b.create_block(),
            self.slow_block(),
            self.b.create_block(),
        );
        self.b.ins().brif(ok, fast, &[], slow, &[]);
        self.b.seal_block(fast);
        self.b.seal_block(slow);
        self.b.switch_to_block(fast);
        body(self);
        let materialized = self.define_materialized_flags(&before);
        let after = self.tracked;
        self.b.ins().jump(merge, &[]);
        self.b.switch_to_block(slow);
        self.interpreter_path(before, &after, index);
        if after.rip == PendingRip::Var {
            let rip = self.b.ins().load(types::I64, trusted(), self.state, RIP);
            self.b.def_var(self.rip_var, rip);
        }
        if materialized {
            self.reload_materialized_flags(&after);
        }
        self.b.ins().jump(merge, &[]);
        self.b.seal_block(merge);
        self.b.switch_to_block(merge);
        self.tracked = after;
        if materialized {
            self.use_flag_vars();
        }
    }

    /// At the end of a fast path that began at `before`: whether it materialized new flags,
    /// and if so, their value into the flag variables (the slow path defines them with
    /// [`Self::reload_materialized_flags`], the merge reads them with
    /// [`Self::use_flag_vars`]).
    fn define_materialized_flags(&mut self, before: &Tracked) -> bool {
        let Some(f) = self.tracked.flags else {
            return false;
        };
        let new = f.kind == CcOp::Eflags && before.flags.map(|b| b.res) != Some(f.res);
        if new {
            self.def_flag_vars(f);
        }
        new
    }

    /// CLI (instruction `index`) in 64-bit code: IF clear when CPL <= IOPL; otherwise the
    /// interpreter raises #GP. (The IF in `CpuState`'s RFLAGS is current: only the
    /// arithmetic flags are kept elsewhere.)
    fn cli(&mut self, i: &Instruction, index: usize) {
        use crane86_x86::flags::IF;
        let cs = offset_of!(CpuState, seg)
            + crane86_x86::SegReg::Cs as usize * size_of::<Segment>()
            + offset_of!(Segment, selector);
        let selector = self
            .b
            .ins()
            .uload16(types::I64, trusted(), self.state, cs as i32);
        let cpl = self.b.ins().band_imm_u(selector, 3);
        let rflags = self.b.ins().load(types::I64, trusted(), self.state, RFLAGS);
        let iopl = self.b.ins().ushr_imm_u(rflags, 12);
        let iopl = self.b.ins().band_imm_u(iopl, 3);
        let ok = self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, cpl, iopl);
        self.guarded(index, ok, |t| {
            let cleared = t.b.ins().band_imm_s(rflags, !(IF as i64));
            t.b.ins().store(trusted(), cleared, t.state, RFLAGS);
            t.retire(i.next_ip());
        });
    }

    /// Whether CR0 has none of the bits of `mask` set, as a boolean value.
    fn cr0_clear(&mut self, mask: u64) -> Value {
        let c0 = self.b.ins().load(
            types::I64,
            trusted(),
            self.state,
            offset_of!(CpuState, cr0) as i32,
        );
        let set = self.b.ins().band_imm_u(c0, mask as i64);
        self.b.ins().icmp_imm_u(IntCC::Equal, set, 0)
    }

    /// A pointer field of [`BlockCtx`] that stays the same while native code runs (loaded
    /// once, however often it is used).
    fn ctx_ptr(&mut self, offset: usize) -> Value {
        self.b
            .ins()
            .load(self.ptr, fixed(), self.ctx, offset as i32)
    }

    /// The full 64-bit value of GPR `k`.
    fn gpr(&mut self, k: usize) -> Value {
        if !self.tracked.cached[k] {
            let v = self
                .b
                .ins()
                .load(types::I64, trusted(), self.state, gpr_offset(k));
            self.b.def_var(self.vars[k], v);
            self.tracked.cached[k] = true;
            self.tracked.defined |= 1 << k;
        }
        self.b.use_var(self.vars[k])
    }

    fn set_gpr(&mut self, k: usize, v: Value) {
        self.b.def_var(self.vars[k], v);
        self.tracked.cached[k] = true;
        self.tracked.dirty[k] = true;
        self.tracked.defined |= 1 << k;
    }

    /// Operand `n` (a GPR of any size or an immediate) at `bits` width, zero-extended.
    fn operand(&mut self, i: &Instruction, n: u32, bits: u32) -> Value {
        let v = match i.op_kind(n) {
            OpKind::Register => {
                let (k, at) = gpr_part(i.op_register(n)).expect("inline operands are GPRs");
                let v = self.gpr(k);
                if at != 0 {
                    self.b.ins().ushr_imm_u(v, i64::from(at))
                } else {
                    v
                }
            }
            _ => self.b.ins().iconst(types::I64, i.immediate(n) as i64),
        };
        self.truncate(v, bits)
    }

    /// `v` zero-extended from its low `bits` (a narrowing and widening pair: one `mov r32`
    /// or `movzx` on x86-64, where an AND with 0xFFFF_FFFF would need a constant in memory).
    ///
    /// Where the IR already shows the answer (a constant, or a value zero-extended from at
    /// most `bits`), no pair: quick translations skip the e-graph pass that would fold it,
    /// and every 32-bit operand that an earlier 32-bit result feeds came with one.
    fn truncate(&mut self, v: Value, bits: u32) -> Value {
        let ty = match bits {
            8 => types::I8,
            16 => types::I16,
            32 => types::I32,
            _ => return v,
        };
        match known_bits(&self.b.func.dfg, v) {
            Known::Constant(c) => {
                return self.b.ins().iconst(types::I64, (c & mask_of(bits)) as i64);
            }
            Known::ZeroExtendedFrom(from) if from <= bits => return v,
            Known::ZeroExtendedFrom(_) | Known::Nothing => {}
        }
        let narrow = self.b.ins().ireduce(ty, v);
        self.b.ins().uextend(types::I64, narrow)
    }

    /// Write a register operand: 32-bit writes zero-extend, 8/16-bit writes merge into the
    /// register (AH..BH at bits 8..15).
    fn write_reg(&mut self, r: Register, v: Value) {
        let bits = r.size() as u32 * 8;
        let (k, at) =
            gpr_part(r).unwrap_or_else(|| panic!("inline destination {r:?} is not a GPR"));
        let v = self.truncate(v, bits);
        if bits >= 32 {
            self.set_gpr(k, v);
            return;
        }
        let old = self.gpr(k);
        let keep = self
            .b
            .ins()
            .band_imm_s(old, !((mask_of(bits) << at) as i64));
        let v = if at != 0 {
            self.b.ins().ishl_imm_u(v, i64::from(at))
        } else {
            v
        };
        let new = self.b.ins().bor(keep, v);
        self.set_gpr(k, new);
    }

    fn inline(&mut self, i: &Instruction, kind: Inline) {
        match kind {
            Inline::Nop => {}
            Inline::MovFromSeg => {
                let seg = i.op_register(1) as usize - Register::ES as usize;
                let at = offset_of!(CpuState, seg)
                    + seg * size_of::<Segment>()
                    + offset_of!(Segment, selector);
                let sel = self
                    .b
                    .ins()
                    .uload16(types::I64, trusted(), self.state, at as i32);
                self.write_reg(i.op_register(0), sel);
            }
            Inline::Mov => {
                let bits = i.op_register(0).size() as u32 * 8;
                let v = self.operand(i, 1, bits);
                self.write_reg(i.op_register(0), v);
            }
            Inline::Lea => {
                let addr = self.lea_address(i);
                self.write_reg(i.op_register(0), addr);
            }
            Inline::Alu => self.alu(i),
            Inline::Extend => {
                let from = i.op_register(1).size() as u32 * 8;
                let v = self.operand(i, 1, from);
                let v = if i.mnemonic() == Mnemonic::Movzx {
                    v
                } else {
                    let up = self.b.ins().ishl_imm_u(v, i64::from(64 - from));
                    self.b.ins().sshr_imm_u(up, i64::from(64 - from))
                };
                self.write_reg(i.op_register(0), v);
            }
            Inline::Shift => self.shift(i),
            Inline::ShiftCl => self.shift_cl(i),
            Inline::Rotate => self.rotate(i),
            Inline::BitScan => self.bit_scan(i),
            Inline::CountZeros => self.count_zeros(i),
            Inline::WidenAcc | Inline::SignToDx => {
                // The accumulator's width after the instruction (CBW: 16, CWD: 16, ...).
                let bits = match i.mnemonic() {
                    Mnemonic::Cbw | Mnemonic::Cwd => 16,
                    Mnemonic::Cwde | Mnemonic::Cdq => 32,
                    _ => 64,
                };
                let from = if kind == Inline::WidenAcc {
                    bits / 2
                } else {
                    bits
                };
                let acc = self.gpr(0);
                let up = self.b.ins().ishl_imm_u(acc, i64::from(64 - from));
                let sx = self.b.ins().sshr_imm_u(up, i64::from(64 - from));
                let (v, acc) = if kind == Inline::WidenAcc {
                    (sx, [Register::AX, Register::EAX, Register::RAX])
                } else {
                    let sign = self.b.ins().sshr_imm_u(sx, 63);
                    (sign, [Register::DX, Register::EDX, Register::RDX])
                };
                let dst = acc[match bits {
                    16 => 0,
                    32 => 1,
                    _ => 2,
                }];
                self.write_reg(dst, v);
            }
            Inline::Bswap => {
                let r = i.op_register(0);
                let v = self.operand(i, 0, r.size() as u32 * 8);
                let v = if r.size() == 4 {
                    let n = self.b.ins().ireduce(types::I32, v);
                    let n = self.b.ins().bswap(n);
                    self.b.ins().uextend(types::I64, n)
                } else {
                    self.b.ins().bswap(v)
                };
                self.write_reg(r, v);
            }
            Inline::Imul => self.imul(i),
            Inline::Mul => self.mul(i),
            Inline::DoubleShift => self.double_shift(i),
            Inline::BitTest => self.bit_test(i),
            Inline::Unary => self.unary(i),
            Inline::Setcc => {
                let cc = cc_number(i).expect("SETcc has a condition");
                let c = self.cond_value(cc);
                let v = self.b.ins().uextend(types::I64, c);
                self.write_reg(i.op_register(0), v);
            }
            Inline::Cmov => {
                let bits = i.op_register(0).size() as u32 * 8;
                let cc = cc_number(i).expect("CMOVcc has a condition");
                let c = self.cond_value(cc);
                let src = self.operand(i, 1, bits);
                let dst = self.operand(i, 0, bits);
                // A 32-bit destination is zero-extended even when the move does not happen.
                let v = self.b.ins().select(c, src, dst);
                self.write_reg(i.op_register(0), v);
            }
            Inline::Load
            | Inline::Store
            | Inline::Rmw
            | Inline::Push
            | Inline::Pop
            | Inline::LoadAlu
            | Inline::Call
            | Inline::CallReg
            | Inline::CallMem
            | Inline::Ret
            | Inline::JmpMem
            | Inline::JmpReg
            | Inline::Div
            | Inline::Cli
            | Inline::Sse(_)
            | Inline::SseMem(_) => {
                unreachable!(
                    "memory, SSE, guarded and indirect branch forms have their own translation"
                )
            }
        }
    }
}

/// What the IR that defines a 64-bit value says about its bits (see [`Translator::truncate`]).
#[derive(Debug, PartialEq, Eq)]
enum Known {
    Constant(u64),
    /// Zero above its low `n` bits.
    ZeroExtendedFrom(u32),
    Nothing,
}

fn known_bits(dfg: &ir::DataFlowGraph, v: Value) -> Known {
    let v = dfg.resolve_aliases(v);
    let ir::ValueDef::Result(inst, 0) = dfg.value_def(v) else {
        return Known::Nothing;
    };
    match dfg.insts[inst] {
        ir::InstructionData::UnaryImm {
            opcode: ir::Opcode::Iconst,
            imm,
        } if dfg.value_type(v) == types::I64 => Known::Constant(imm.bits() as u64),
        ir::InstructionData::Unary {
            opcode: ir::Opcode::Uextend,
            arg,
        } => Known::ZeroExtendedFrom(dfg.value_type(arg).bits()),
        ir::InstructionData::Load { opcode, .. } => match opcode {
            ir::Opcode::Uload8 => Known::ZeroExtendedFrom(8),
            ir::Opcode::Uload16 => Known::ZeroExtendedFrom(16),
            ir::Opcode::Uload32 => Known::ZeroExtendedFrom(32),
            _ => Known::Nothing,
        },
        _ => Known::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_bits_reads_constants_extensions_and_narrow_loads() {
        use cranelift_frontend::FunctionBuilderContext;
        let mut func = ir::Function::new();
        func.signature.params.push(ir::AbiParam::new(types::I64));
        let mut fctx = FunctionBuilderContext::new();
        let mut b = FunctionBuilder::new(&mut func, &mut fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let p = b.block_params(entry)[0];
        let c = b.ins().iconst(types::I64, -1);
        let narrow = b.ins().ireduce(types::I16, p);
        let widened = b.ins().uextend(types::I64, narrow);
        let byte = b.ins().uload8(types::I64, trusted(), p, 0);
        let word = b.ins().uload32(trusted(), p, 0);
        let full = b.ins().load(types::I64, trusted(), p, 0);
        let sum = b.ins().iadd(widened, byte);
        let dfg = &b.func.dfg;
        assert_eq!(known_bits(dfg, c), Known::Constant(u64::MAX));
        assert_eq!(known_bits(dfg, widened), Known::ZeroExtendedFrom(16));
        assert_eq!(known_bits(dfg, byte), Known::ZeroExtendedFrom(8));
        assert_eq!(known_bits(dfg, word), Known::ZeroExtendedFrom(32));
        for v in [p, full, sum] {
            assert_eq!(known_bits(dfg, v), Known::Nothing);
        }
    }

    #[test]
    fn chain_link_addresses_are_the_blocks_link_cells() {
        let block = Block::new(Vec::new());
        let chain = Chain {
            block: &block as *const Block as usize,
            rip: 0,
            paddr: 0,
        };
        for k in 0..BLOCK_LINKS {
            assert_eq!(chain.link(k), block.links[k].as_ptr() as usize);
        }
    }
}
