//! Guest block → Cranelift IR. Every instruction either gets inline IR (the simple register
//! forms of MOV, LEA, ADD/SUB/AND/OR/XOR/CMP/TEST, NOP in 64-bit code) or becomes a call to
//! the interpreter's per-instruction step ([`crate::compiler::step_helper`]), which owns
//! the semantics of everything else: faults, flags, platform actions, leaving the block.
//!
//! State handling: guest GPRs live in Cranelift variables from their first use to the next
//! helper call or block exit, where the modified ones are written back to `CpuState`; after a
//! helper call they are reloaded on demand. The lazy-flags record of inline ALU instructions
//! is kept in variables too and stored once before a helper call or exit (a later ALU
//! instruction overwrites it entirely, so intermediate records are dead). RIP and the
//! retired-instruction count of inline instructions are likewise written only at those
//! points.

use crate::compiler::BlockCtx;
use crane86_interp::block::Block;
use crane86_x86::flags::CcOp;
use crane86_x86::{CpuState, LazyFlags};
use cranelift_codegen::ir::{
    self, types, AbiParam, InstBuilder, MemFlagsData, Signature, Type, Value,
};
use cranelift_frontend::{FunctionBuilder, Variable};
use iced_x86::{Instruction, Mnemonic, OpKind, Register};
use std::mem::offset_of;

/// The helper's signature: `(ctx, instruction index) -> leave?`.
pub fn step_signature(ptr: Type, call_conv: cranelift_codegen::isa::CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    sig.params.push(AbiParam::new(ptr));
    sig.params.push(AbiParam::new(types::I32));
    sig.returns.push(AbiParam::new(types::I32));
    sig
}

/// Which instructions of a block get inline IR.
pub fn inline_kind(i: &Instruction, bits: u32) -> Option<Inline> {
    if bits != 64 {
        return None;
    }
    let reg = |n: u32| i.op_kind(n) == OpKind::Register && gpr_index(i.op_register(n)).is_some();
    let imm = |n: u32| {
        matches!(
            i.op_kind(n),
            OpKind::Immediate8to32
                | OpKind::Immediate8to64
                | OpKind::Immediate32
                | OpKind::Immediate32to64
                | OpKind::Immediate64
        )
    };
    let wide = |n: u32| matches!(i.op_register(n).size(), 4 | 8);
    match i.mnemonic() {
        Mnemonic::Nop => Some(Inline::Nop),
        Mnemonic::Mov if reg(0) && wide(0) && (reg(1) || imm(1)) => Some(Inline::Mov),
        Mnemonic::Lea if reg(0) && wide(0) && lea_simple(i) => Some(Inline::Lea),
        Mnemonic::Add
        | Mnemonic::Sub
        | Mnemonic::And
        | Mnemonic::Or
        | Mnemonic::Xor
        | Mnemonic::Cmp
        | Mnemonic::Test
            if reg(0) && wide(0) && (reg(1) || imm(1)) =>
        {
            Some(Inline::Alu)
        }
        _ => None,
    }
}

/// The inline forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inline {
    Nop,
    Mov,
    Lea,
    Alu,
}

/// LEA with GPR base/index (or none) and 32/64-bit addressing.
fn lea_simple(i: &Instruction) -> bool {
    let ok = |r: Register| {
        r == Register::None
            || r == Register::RIP
            || gpr_index(r).is_some_and(|_| matches!(r.size(), 4 | 8))
    };
    ok(i.memory_base()) && ok(i.memory_index()) && i.memory_index() != Register::RIP
}

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

fn gpr_offset(k: usize) -> i32 {
    (offset_of!(CpuState, gpr) + 8 * k) as i32
}

const RIP: i32 = offset_of!(CpuState, rip) as i32;
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
}

pub struct Translator<'a, 'b> {
    pub b: &'a mut FunctionBuilder<'b>,
    ptr: Type,
    ctx: Value,
    state: Value,
    step_sig: ir::SigRef,
    step_fn: Value,
    vars: [Variable; 16],
    /// The variable holds the register's current value.
    cached: [bool; 16],
    /// The variable is newer than `CpuState`.
    dirty: [bool; 16],
    flags: Option<PendingFlags>,
    /// Inline instructions retired since the last sync, and the RIP after them.
    pending_retired: u64,
    pending_rip: Option<u64>,
    /// Instructions given inline IR.
    pub inlined: u32,
}

fn trusted() -> MemFlagsData {
    MemFlagsData::trusted()
}

impl<'a, 'b> Translator<'a, 'b> {
    pub fn new(
        b: &'a mut FunctionBuilder<'b>,
        ptr: Type,
        call_conv: cranelift_codegen::isa::CallConv,
        helper: usize,
    ) -> Self {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let ctx = b.block_params(entry)[0];
        let state = b
            .ins()
            .load(ptr, trusted(), ctx, offset_of!(BlockCtx, state) as i32);
        let step_sig = b.import_signature(step_signature(ptr, call_conv));
        let step_fn = b.ins().iconst(ptr, helper as i64);
        let vars = std::array::from_fn(|_| b.declare_var(types::I64));
        Translator {
            b,
            ptr,
            ctx,
            state,
            step_sig,
            step_fn,
            vars,
            cached: [false; 16],
            dirty: [false; 16],
            flags: None,
            pending_retired: 0,
            pending_rip: None,
            inlined: 0,
        }
    }

    /// Emit the whole block and finish the function.
    pub fn block(&mut self, block: &Block, bits: u32) {
        let exit = self.b.create_block();
        for (k, d) in block.insns.iter().enumerate() {
            let i = &d.insn;
            if let Some(kind) = inline_kind(i, bits) {
                self.inline(i, kind);
                self.inlined += 1;
                self.pending_retired += 1;
                self.pending_rip = Some(i.next_ip());
            } else {
                self.sync();
                let idx = self.b.ins().iconst(types::I32, k as i64);
                let call =
                    self.b
                        .ins()
                        .call_indirect(self.step_sig, self.step_fn, &[self.ctx, idx]);
                let leave = self.b.inst_results(call)[0];
                self.cached = [false; 16];
                let next = self.b.create_block();
                self.b.ins().brif(leave, exit, &[], next, &[]);
                self.b.seal_block(next);
                self.b.switch_to_block(next);
            }
        }
        self.sync();
        self.b.ins().jump(exit, &[]);
        self.b.seal_block(exit);
        self.b.switch_to_block(exit);
        self.b.ins().return_(&[]);
    }

    /// Write back everything inline code holds: dirty registers, the pending flags record,
    /// RIP and the retired count.
    fn sync(&mut self) {
        for k in 0..16 {
            if self.dirty[k] {
                let v = self.b.use_var(self.vars[k]);
                self.b.ins().store(trusted(), v, self.state, gpr_offset(k));
                self.dirty[k] = false;
            }
        }
        if let Some(f) = self.flags.take() {
            let op = self.b.ins().iconst(types::I32, f.op as i64);
            self.b.ins().store(trusted(), op, self.state, LAZY_OP);
            self.b.ins().store(trusted(), f.res, self.state, LAZY_RES);
            self.b.ins().store(trusted(), f.src, self.state, LAZY_SRC);
            let zero = self.b.ins().iconst(types::I64, 0);
            self.b.ins().store(trusted(), zero, self.state, LAZY_AUX);
        }
        if let Some(rip) = self.pending_rip.take() {
            let v = self.b.ins().iconst(types::I64, rip as i64);
            self.b.ins().store(trusted(), v, self.state, RIP);
        }
        if self.pending_retired > 0 {
            let counter = self.b.ins().load(
                self.ptr,
                trusted(),
                self.ctx,
                offset_of!(BlockCtx, retired) as i32,
            );
            let old = self.b.ins().load(types::I64, trusted(), counter, 0);
            let new = self.b.ins().iadd_imm_s(old, self.pending_retired as i64);
            self.b.ins().store(trusted(), new, counter, 0);
            self.pending_retired = 0;
        }
    }

    /// The full 64-bit value of GPR `k`.
    fn gpr(&mut self, k: usize) -> Value {
        if !self.cached[k] {
            let v = self
                .b
                .ins()
                .load(types::I64, trusted(), self.state, gpr_offset(k));
            self.b.def_var(self.vars[k], v);
            self.cached[k] = true;
        }
        self.b.use_var(self.vars[k])
    }

    fn set_gpr(&mut self, k: usize, v: Value) {
        self.b.def_var(self.vars[k], v);
        self.cached[k] = true;
        self.dirty[k] = true;
    }

    /// Operand `n` (a 32/64-bit register or an immediate) at `bits` width, zero-extended.
    fn operand(&mut self, i: &Instruction, n: u32, bits: u32) -> Value {
        let v = match i.op_kind(n) {
            OpKind::Register => {
                let k = gpr_index(i.op_register(n)).expect("inline operands are GPRs");
                self.gpr(k)
            }
            _ => self.b.ins().iconst(types::I64, i.immediate(n) as i64),
        };
        self.truncate(v, bits)
    }

    fn truncate(&mut self, v: Value, bits: u32) -> Value {
        if bits == 32 {
            self.b.ins().band_imm_u(v, 0xFFFF_FFFF)
        } else {
            v
        }
    }

    /// Write a 32/64-bit register operand (32-bit writes zero-extend).
    fn write_reg(&mut self, r: Register, v: Value) {
        let k = gpr_index(r).expect("inline destinations are GPRs");
        let v = self.truncate(v, r.size() as u32 * 8);
        self.set_gpr(k, v);
    }

    fn inline(&mut self, i: &Instruction, kind: Inline) {
        match kind {
            Inline::Nop => {}
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
        }
    }

    fn lea_address(&mut self, i: &Instruction) -> Value {
        let base = i.memory_base();
        let index = i.memory_index();
        let mut a = self
            .b
            .ins()
            .iconst(types::I64, i.memory_displacement64() as i64);
        if base != Register::None && base != Register::RIP {
            let k = gpr_index(base).expect("checked by lea_simple");
            let v = self.gpr(k);
            a = self.b.ins().iadd(a, v);
        }
        if index != Register::None {
            let k = gpr_index(index).expect("checked by lea_simple");
            let v = self.gpr(k);
            let scaled = self
                .b
                .ins()
                .imul_imm_s(v, i64::from(i.memory_index_scale()));
            a = self.b.ins().iadd(a, scaled);
        }
        // 32-bit addressing wraps at 4 GiB.
        let addr_bits = if base != Register::None {
            base.size()
        } else if index != Register::None {
            index.size()
        } else {
            8
        };
        if addr_bits == 4 && base != Register::RIP {
            a = self.b.ins().band_imm_u(a, 0xFFFF_FFFF);
        }
        a
    }

    fn alu(&mut self, i: &Instruction) {
        let bits = i.op_register(0).size() as u32 * 8;
        let a = self.operand(i, 0, bits);
        let bv = self.operand(i, 1, bits);
        let ins = self.b.ins();
        let (res, kind, write) = match i.mnemonic() {
            Mnemonic::Add => (ins.iadd(a, bv), CcOp::Add8, true),
            Mnemonic::Sub => (ins.isub(a, bv), CcOp::Sub8, true),
            Mnemonic::Cmp => (ins.isub(a, bv), CcOp::Sub8, false),
            Mnemonic::And => (ins.band(a, bv), CcOp::Logic8, true),
            Mnemonic::Test => (ins.band(a, bv), CcOp::Logic8, false),
            Mnemonic::Or => (ins.bor(a, bv), CcOp::Logic8, true),
            _ => (ins.bxor(a, bv), CcOp::Logic8, true),
        };
        let res = self.truncate(res, bits);
        let src = if kind == CcOp::Logic8 {
            self.b.ins().iconst(types::I64, 0)
        } else {
            bv
        };
        self.flags = Some(PendingFlags {
            op: CcOp::sized(kind, bits),
            res,
            src,
        });
        if write {
            self.write_reg(i.op_register(0), res);
        }
    }
}

/// The 32-bit `xor r32, r32` idiom is common enough to be worth a unit test of the decoder
/// facts the translator relies on.
#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    fn decode(bytes: &[u8]) -> Instruction {
        Decoder::with_ip(64, bytes, 0x1000, DecoderOptions::NONE).decode()
    }

    #[test]
    fn inline_selection() {
        assert_eq!(inline_kind(&decode(&[0x31, 0xC0]), 64), Some(Inline::Alu)); // xor eax,eax
        assert_eq!(
            inline_kind(&decode(&[0x48, 0x89, 0xD8]), 64),
            Some(Inline::Mov)
        ); // mov rax,rbx
        assert_eq!(
            inline_kind(&decode(&[0x88, 0xD8]), 64),
            None,
            "8-bit forms use the helper"
        );
        assert_eq!(
            inline_kind(&decode(&[0x48, 0x8B, 0x03]), 64),
            None,
            "loads use the helper"
        );
        assert_eq!(
            inline_kind(&decode(&[0x48, 0x8D, 0x44, 0x8B, 0x10]), 64),
            Some(Inline::Lea)
        );
        assert_eq!(
            inline_kind(&decode(&[0x31, 0xC0]), 32),
            None,
            "only 64-bit code"
        );
    }
}
