//! Inline SSE2 integer forms between registers: the string-scanning idiom of libc
//! (PXOR, PCMPEQB, PMOVMSKB) and its neighbours (PAND/PANDN/POR, PCMPEQW/D, PADD/PSUB of
//! every lane width, register MOVDQA/MOVDQU/MOVAPS/MOVUPS, MOVD/MOVQ between XMM and GPR).
//! XMM registers stay in `CpuState` (loaded and stored per instruction: no write-back is
//! needed around helper calls). Each form first checks what the interpreter's
//! `simd_begin` checks (CR0.EM and CR0.TS clear, CR4.OSFXSR set); otherwise the
//! interpreter runs the instruction and raises the fault.

use super::*;
use crane86_x86::regs::{cr0, cr4};

/// The inline SSE form of an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sse {
    /// XMM op= XMM, as lanes of this type.
    Lanes(SseOp, Type),
    /// XMM = XMM.
    Copy,
    /// GPR = the byte sign mask of XMM.
    MoveMask,
    /// XMM = GPR (32 or 64 bits, zero-extended).
    ToXmm,
    /// GPR = the low 32 or 64 bits of XMM.
    FromXmm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SseOp {
    Xor,
    And,
    AndNot,
    Or,
    Equal,
    Add,
    Sub,
}

/// The inline form of `i`, if it has one.
pub(super) fn sse_kind(i: &Instruction) -> Option<Sse> {
    use Code::*;
    let xmm = |n: u32| i.op_kind(n) == OpKind::Register && i.op_register(n).is_xmm();
    let gpr = |n: u32| i.op_kind(n) == OpKind::Register && gpr_index(i.op_register(n)).is_some();
    let lanes = |op, ty| Some(Sse::Lanes(op, ty));
    let kind = match i.code() {
        Pxor_xmm_xmmm128 => lanes(SseOp::Xor, types::I64X2),
        Pand_xmm_xmmm128 => lanes(SseOp::And, types::I64X2),
        Pandn_xmm_xmmm128 => lanes(SseOp::AndNot, types::I64X2),
        Por_xmm_xmmm128 => lanes(SseOp::Or, types::I64X2),
        Pcmpeqb_xmm_xmmm128 => lanes(SseOp::Equal, types::I8X16),
        Pcmpeqw_xmm_xmmm128 => lanes(SseOp::Equal, types::I16X8),
        Pcmpeqd_xmm_xmmm128 => lanes(SseOp::Equal, types::I32X4),
        Paddb_xmm_xmmm128 => lanes(SseOp::Add, types::I8X16),
        Paddw_xmm_xmmm128 => lanes(SseOp::Add, types::I16X8),
        Paddd_xmm_xmmm128 => lanes(SseOp::Add, types::I32X4),
        Paddq_xmm_xmmm128 => lanes(SseOp::Add, types::I64X2),
        Psubb_xmm_xmmm128 => lanes(SseOp::Sub, types::I8X16),
        Psubw_xmm_xmmm128 => lanes(SseOp::Sub, types::I16X8),
        Psubd_xmm_xmmm128 => lanes(SseOp::Sub, types::I32X4),
        Psubq_xmm_xmmm128 => lanes(SseOp::Sub, types::I64X2),
        Movdqa_xmm_xmmm128 | Movdqu_xmm_xmmm128 | Movaps_xmm_xmmm128 | Movups_xmm_xmmm128
        | Movdqa_xmmm128_xmm | Movdqu_xmmm128_xmm | Movaps_xmmm128_xmm | Movups_xmmm128_xmm => {
            Some(Sse::Copy)
        }
        Pmovmskb_r32_xmm | Pmovmskb_r64_xmm => Some(Sse::MoveMask),
        Movd_xmm_rm32 | Movq_xmm_rm64 => Some(Sse::ToXmm),
        Movd_rm32_xmm | Movq_rm64_xmm => Some(Sse::FromXmm),
        _ => None,
    }?;
    let operands_ok = match kind {
        Sse::Lanes(..) | Sse::Copy => xmm(0) && xmm(1),
        Sse::MoveMask | Sse::FromXmm => gpr(0) && xmm(1),
        Sse::ToXmm => xmm(0) && gpr(1),
    };
    operands_ok.then_some(kind)
}

fn xmm_offset(r: Register) -> i32 {
    let k = r as usize - Register::XMM0 as usize;
    (offset_of!(CpuState, fpu) + offset_of!(crane86_x86::FpuState, xmm) + 16 * k) as i32
}

impl Translator<'_, '_> {
    /// Instruction `index` (`i`, of inline form `kind`): inline when SSE is usable, else the
    /// interpreter (which raises #UD or #NM).
    pub(super) fn sse(&mut self, i: &Instruction, index: usize, kind: Sse) {
        let before = self.tracked;
        let c0 = self.b.ins().load(
            types::I64,
            trusted(),
            self.state,
            offset_of!(CpuState, cr0) as i32,
        );
        let c4 = self.b.ins().load(
            types::I64,
            trusted(),
            self.state,
            offset_of!(CpuState, cr4) as i32,
        );
        let bad0 = self.b.ins().band_imm_u(c0, (cr0::EM | cr0::TS) as i64);
        let ok4 = self.b.ins().band_imm_u(c4, cr4::OSFXSR as i64);
        let ok0 = self.b.ins().icmp_imm_u(IntCC::Equal, bad0, 0);
        let ok4 = self.b.ins().icmp_imm_u(IntCC::NotEqual, ok4, 0);
        let ok = self.b.ins().band(ok0, ok4);
        let fast = self.b.create_block();
        let slow = self.b.create_block();
        let merge = self.b.create_block();
        self.b.ins().brif(ok, fast, &[], slow, &[]);
        self.b.seal_block(fast);
        self.b.seal_block(slow);

        self.b.switch_to_block(fast);
        self.sse_body(i, kind);
        self.retire(i.next_ip());
        let after = self.tracked;
        self.b.ins().jump(merge, &[]);

        // The interpreter raises the fault (it leaves the block); nothing returns here
        // unless the check and the interpreter disagree, in which case its result stands.
        self.b.switch_to_block(slow);
        self.interpreter_path(before, &after, index);
        let rip = self.b.ins().iconst(types::I64, i.next_ip() as i64);
        self.b.def_var(self.rip_var, rip);
        self.b.ins().jump(merge, &[]);
        self.b.seal_block(merge);
        self.b.switch_to_block(merge);
        self.tracked = after;
    }

    fn sse_body(&mut self, i: &Instruction, kind: Sse) {
        let vec = |t: &mut Self, ty: Type, n: u32| {
            let at = xmm_offset(i.op_register(n));
            t.b.ins().load(ty, trusted(), t.state, at)
        };
        match kind {
            Sse::Lanes(op, ty) => {
                let a = vec(self, ty, 0);
                let b = vec(self, ty, 1);
                let ins = self.b.ins();
                let r = match op {
                    SseOp::Xor => ins.bxor(a, b),
                    SseOp::And => ins.band(a, b),
                    // PANDN: NOT destination AND source.
                    SseOp::AndNot => ins.band_not(b, a),
                    SseOp::Or => ins.bor(a, b),
                    SseOp::Equal => ins.icmp(IntCC::Equal, a, b),
                    SseOp::Add => ins.iadd(a, b),
                    SseOp::Sub => ins.isub(a, b),
                };
                let at = xmm_offset(i.op_register(0));
                self.b.ins().store(trusted(), r, self.state, at);
            }
            Sse::Copy => {
                let v = vec(self, types::I64X2, 1);
                let at = xmm_offset(i.op_register(0));
                self.b.ins().store(trusted(), v, self.state, at);
            }
            Sse::MoveMask => {
                let v = vec(self, types::I8X16, 1);
                let m = self.b.ins().vhigh_bits(types::I64, v);
                // The mask is zero-extended into the whole register.
                let (k, _) = gpr_part(i.op_register(0)).expect("a GPR");
                self.set_gpr(k, m);
            }
            Sse::ToXmm => {
                let bits = i.op_register(1).size() as u32 * 8;
                let v = self.operand(i, 1, bits);
                let at = xmm_offset(i.op_register(0));
                let zero = self.b.ins().iconst(types::I64, 0);
                self.b.ins().store(trusted(), v, self.state, at);
                self.b.ins().store(trusted(), zero, self.state, at + 8);
            }
            Sse::FromXmm => {
                let at = xmm_offset(i.op_register(1));
                let v = self.b.ins().load(types::I64, trusted(), self.state, at);
                self.write_reg(i.op_register(0), v);
            }
        }
    }
}
