//! The shared exit of quick translations whose RIP is known only at run time (RET, JMP and
//! CALL through a register or memory): one function per translation module that looks up
//! the successor and enters it, instead of that lookup inlined into every such block.
//! Inline, it is about 90 IR instructions and 25 basic blocks: on the Linux corpus a block
//! ending in RET took twice as long to compile as one ending in a Jcc. Quick translations
//! (made while a compile backlog waits) tail-call this instead; optimized ones keep the
//! inline lookup, which knows the block's own page.
//!
//! `(ctx, rip, block, slot0, slot1)`, tail calling convention, like a block: `rip` is the
//! RIP after the exiting block (everything else is written back), `block` that block's
//! `Block` and `slot0`/`slot1` the two link cells of its most recent successors (a cell
//! that never matches where the block has fewer, [`NO_LINK`]). It does what the inline
//! `Translator::chain_exit` does for such an exit: the physical address of `rip` through the
//! TLB's fetch entry, the two links and then the vCPU's jump table compared with it (RIP,
//! epoch, physical address), the budget check for the longest block, and a tail call of the
//! target's code; anything else stores RIP and the block and returns to the run loop.

use super::{fixed, trusted, RIP};
use crate::backend::block_signature;
use crate::compiler::JUMP_TABLE_ENTRIES;
use crate::context::BlockCtx;
use crane86_interp::block::{Block, Link, MAX_BLOCK_INSNS};
use crane86_memory::tlb::{TlbEntry, TLB_ENTRIES};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{self, types, AbiParam, InstBuilder, Signature, Type, Value};
use cranelift_frontend::FunctionBuilder;
use std::mem::{offset_of, size_of};

/// A link cell no lookup matches (its epoch is never current): the slot argument of a
/// block with fewer than two most-recent-successor slots.
pub struct NoLink(std::cell::Cell<Link>);

// SAFETY: nothing ever writes the cell (native code only reads link cells of the stub's
// slot arguments, and `link` in the compiler writes only cells of cached blocks).
unsafe impl Sync for NoLink {}

pub static NO_LINK: NoLink = NoLink(std::cell::Cell::new(Link::NONE));

impl NoLink {
    pub fn address(&self) -> usize {
        self.0.as_ptr() as usize
    }
}

/// The stub's signature.
pub fn signature(ptr: Type) -> Signature {
    let mut sig = block_signature(ptr);
    sig.params.push(AbiParam::new(types::I64));
    sig.params.extend([ptr, ptr, ptr].map(AbiParam::new));
    sig
}

/// Emit the stub's body into `b` (a function of [`signature`]); `counting`: count the
/// entered successor in [`BlockCtx::chained`] (see `Job::counters`).
pub fn build(b: &mut FunctionBuilder, ptr: Type, counting: bool) {
    let i64t = types::I64;
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let params = b.block_params(entry).to_vec();
    let (ctx, rip, block, slots) = (params[0], params[1], params[2], [params[3], params[4]]);

    let ret = b.create_block();
    b.set_cold_block(ret);
    let enter = b.create_block();
    b.append_block_param(enter, ptr);

    // The physical address of RIP, through the TLB's fetch entry.
    const ENTRY: usize = size_of::<TlbEntry>();
    let page = b.ins().band_imm_s(rip, !0xFFFi64);
    let low = b.ins().band_imm_u(rip, 0xFFF);
    let shifted = b
        .ins()
        .ushr_imm_u(rip, i64::from(12 - ENTRY.trailing_zeros()));
    let slot_off = b
        .ins()
        .band_imm_u(shifted, ((TLB_ENTRIES - 1) * ENTRY) as i64);
    let tlb = b
        .ins()
        .load(ptr, fixed(), ctx, offset_of!(BlockCtx, tlb) as i32);
    let tlb_entry = b.ins().iadd(tlb, slot_off);
    let tag = b.ins().load(
        i64t,
        trusted(),
        tlb_entry,
        offset_of!(TlbEntry, fetch_tag) as i32,
    );
    let hit = b.ins().icmp(IntCC::Equal, tag, page);
    let mapped = b.create_block();
    b.ins().brif(hit, mapped, &[], ret, &[]);
    b.seal_block(mapped);
    b.switch_to_block(mapped);
    let paddr_page = b.ins().load(
        i64t,
        trusted(),
        tlb_entry,
        offset_of!(TlbEntry, paddr_page) as i32,
    );
    let paddr = b.ins().bor(paddr_page, low);
    let epoch = b
        .ins()
        .load(i64t, fixed(), ctx, offset_of!(BlockCtx, epoch) as i32);
    let checks = [
        (offset_of!(Link, key.rip), rip),
        (offset_of!(Link, epoch), epoch),
        (offset_of!(Link, key.paddr), paddr),
    ];

    // The block's two most recent successors, then the jump table.
    for at in slots {
        let next = b.create_block();
        probe(b, at, &checks, enter, next);
        b.seal_block(next);
        b.switch_to_block(next);
    }
    let table = b
        .ins()
        .load(ptr, fixed(), ctx, offset_of!(BlockCtx, jump_table) as i32);
    let high = b.ins().ushr_imm_u(rip, 12);
    let hash = b.ins().bxor(rip, high);
    let index = b.ins().band_imm_u(hash, (JUMP_TABLE_ENTRIES - 1) as i64);
    let offset = b.ins().imul_imm_u(index, size_of::<Link>() as i64);
    let at = b.ins().iadd(table, offset);
    probe(b, at, &checks, enter, ret);

    // A live link: enter its target if a block of any length fits the budget.
    b.seal_block(enter);
    b.switch_to_block(enter);
    let at = b.block_params(enter)[0];
    let retired = b
        .ins()
        .load(i64t, trusted(), ctx, offset_of!(BlockCtx, retired) as i32);
    let after = b.ins().iadd_imm_u(retired, MAX_BLOCK_INSNS as i64);
    let limit = b
        .ins()
        .load(i64t, trusted(), ctx, offset_of!(BlockCtx, limit) as i32);
    let fits = b.ins().icmp(IntCC::UnsignedLessThanOrEqual, after, limit);
    let go = b.create_block();
    b.ins().brif(fits, go, &[], ret, &[]);
    b.seal_block(go);
    b.switch_to_block(go);
    let target = b
        .ins()
        .load(ptr, trusted(), at, offset_of!(Link, target) as i32);
    let code = b
        .ins()
        .load(ptr, trusted(), target, offset_of!(Block, native) as i32);
    if counting {
        let n_at = offset_of!(BlockCtx, chained) as i32;
        let n = b.ins().load(i64t, trusted(), ctx, n_at);
        let n = b.ins().iadd_imm_s(n, 1);
        b.ins().store(trusted(), n, ctx, n_at);
    }
    let tail_sig = b.import_signature(block_signature(ptr));
    b.ins().return_call_indirect(tail_sig, code, &[ctx]);

    // Back to the run loop, which finds the successor with its slow paths.
    b.seal_block(ret);
    b.switch_to_block(ret);
    let state = b.ins().get_pinned_reg(ptr);
    b.ins().store(trusted(), rip, state, RIP);
    b.ins()
        .store(trusted(), block, ctx, offset_of!(BlockCtx, block) as i32);
    b.ins().return_(&[]);
}

/// Compare the fields of the link at `at` with `checks` one load at a time: all equal to
/// `hit` (with `at`), the first difference to `miss`.
fn probe(
    b: &mut FunctionBuilder,
    at: Value,
    checks: &[(usize, Value)],
    hit: ir::Block,
    miss: ir::Block,
) {
    for (k, &(offset, expected)) in checks.iter().enumerate() {
        let field = b.ins().load(types::I64, trusted(), at, offset as i32);
        let same = b.ins().icmp(IntCC::Equal, field, expected);
        if k + 1 == checks.len() {
            b.ins().brif(same, hit, &[at.into()], miss, &[]);
        } else {
            let next = b.create_block();
            b.ins().brif(same, next, &[], miss, &[]);
            b.seal_block(next);
            b.switch_to_block(next);
        }
    }
}
