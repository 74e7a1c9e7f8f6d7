//! Inline SSE2 forms: the string-scanning idiom of libc (PXOR, PCMPEQB, PMOVMSKB) and its
//! neighbours (PAND/PANDN/POR and their floating-point twins ANDPS/XORPD/..., PCMPEQW/D,
//! PADD/PSUB of every lane width, register MOVDQA/MOVDQU/MOVAPS/MOVUPS/MOVAPD/MOVUPD,
//! MOVD/MOVQ between XMM and GPR), and the memory forms of
//! the moves (MOVDQA/MOVDQU/MOVAPS/MOVUPS/MOVNTDQ, MOVD/MOVQ/MOVSS/MOVSD loads and
//! stores) and of the lane operations (an aligned m128 source), which `memory.rs` runs
//! through the TLB fast path; and the register shuffles (PUNPCKL*/PUNPCKH*, PSHUFD/PSHUFLW/
//! PSHUFHW, PALIGNR, PSLLDQ/PSRLDQ: one Cranelift `shuffle` with the immediate folded into
//! its byte mask) and lane shifts by an immediate (PSLL/PSRL/PSRA).
//! Scalar floating point (ADDSD and the like, CVTSI2SD, COMISD of memory) is in
//! `sse_scalar.rs`.
//! XMM registers stay in `CpuState` (loaded and stored per instruction: no write-back is
//! needed around helper calls). Each form first checks what the interpreter's
//! `simd_begin` checks (CR0.EM and CR0.TS clear, CR4.OSFXSR set), and a form that needs
//! 16-byte alignment checks the address; otherwise the interpreter runs the instruction
//! and raises the fault.

use super::sse_scalar::{compare_type, from_int_type, scalar_op, FpOp};
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
    /// XMM = the bytes `mask` picks from (XMM, second): 0..15 XMM's own, 16..31 the
    /// second vector's, which is the source register, or zero if `zero` (PUNPCKL*/PUNPCKH*,
    /// PSHUFD/PSHUFLW/PSHUFHW, PALIGNR, PSLLDQ/PSRLDQ; the immediates are in the mask).
    Shuffle { mask: [u8; 16], zero: bool },
    /// Every lane of XMM shifted by an immediate below the lane width (PSLLW/D/Q,
    /// PSRLW/D/Q, PSRAW/D; a larger count is 0 for the logical shifts, the width - 1 for the
    /// arithmetic ones).
    ShiftImm(LaneShift, Type, u8),
    /// COMISS/UCOMISS (F32) and COMISD/UCOMISD (F64) of two registers whose operands are
    /// neither NaN nor denormal (then neither form changes MXCSR): ZF and CF from the
    /// comparison, PF, OF, SF and AF clear. Any other operand goes to the interpreter.
    Compare(Type),
    /// Scalar ADD/SUB/MUL/DIV of registers or CVTSI2SS/SD from a GPR (see `sse_scalar`).
    Scalar,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaneShift {
    Left,
    Right,
    Arithmetic,
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
    /// PSHUFB: each byte from the byte of XMM its selector names, or 0 for a selector with
    /// the top bit set.
    ByteShuffle,
}

/// The inline form of an SSE instruction with a memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SseMem {
    /// XMM = [mem] of 4, 8 or 16 bytes, the rest of the register zeroed. `aligned`: a
    /// 16-byte access that faults unless the address is a multiple of 16.
    Load { aligned: bool },
    /// [mem] = the low 4, 8 or 16 bytes of XMM.
    Store { aligned: bool },
    /// XMM op= m128 (aligned), as lanes of this type.
    Lanes(SseOp, Type),
    /// Scalar ADD/SUB/MUL/DIV of lane 0 of this float type by m32/m64 (see `sse_scalar`).
    Scalar(FpOp, Type),
    /// COMIS/UCOMIS of lane 0 with m32/m64 (see `sse_scalar`).
    Compare(Type),
}

impl SseMem {
    pub(super) fn aligned(self) -> bool {
        match self {
            SseMem::Load { aligned } | SseMem::Store { aligned } => aligned,
            SseMem::Lanes(..) => true,
            SseMem::Scalar(..) | SseMem::Compare(_) => false,
        }
    }
}

/// The bit layout of an IEEE format (F32 or F64), for tests on float bits held as integers.
#[derive(Clone, Copy)]
pub(super) struct FloatBits {
    width: u32,
    /// Fraction bits.
    mantissa: u32,
    bias: i64,
}

impl FloatBits {
    pub(super) fn of(ty: Type) -> FloatBits {
        if ty == types::F32 {
            FloatBits {
                width: 32,
                mantissa: 23,
                bias: 127,
            }
        } else {
            FloatBits {
                width: 64,
                mantissa: 52,
                bias: 1023,
            }
        }
    }

    /// Everything but the sign.
    pub(super) fn magnitude_mask(self) -> i64 {
        ((1u64 << (self.width - 1)) - 1) as i64
    }

    /// The magnitude bits of 2^e (a normal number).
    pub(super) fn power_of_two(self, e: i64) -> i64 {
        (self.bias + e) << self.mantissa
    }

    pub(super) fn smallest_normal(self) -> i64 {
        1 << self.mantissa
    }

    pub(super) fn infinity(self) -> i64 {
        ((1i64 << (self.width - 1 - self.mantissa)) - 1) << self.mantissa
    }
}

/// The lane operation of an SSE2 (or SSSE3 PSHUFB) integer instruction, or of a bitwise
/// one of the floating-point domain (XORPS/XORPD and the like: the same bits as PXOR).
fn lane_op(code: Code) -> Option<(SseOp, Type)> {
    use Code::*;
    Some(match code {
        Pxor_xmm_xmmm128 | Xorps_xmm_xmmm128 | Xorpd_xmm_xmmm128 => (SseOp::Xor, types::I64X2),
        Pand_xmm_xmmm128 | Andps_xmm_xmmm128 | Andpd_xmm_xmmm128 => (SseOp::And, types::I64X2),
        Pandn_xmm_xmmm128 | Andnps_xmm_xmmm128 | Andnpd_xmm_xmmm128 => {
            (SseOp::AndNot, types::I64X2)
        }
        Por_xmm_xmmm128 | Orps_xmm_xmmm128 | Orpd_xmm_xmmm128 => (SseOp::Or, types::I64X2),
        Pcmpeqb_xmm_xmmm128 => (SseOp::Equal, types::I8X16),
        Pcmpeqw_xmm_xmmm128 => (SseOp::Equal, types::I16X8),
        Pcmpeqd_xmm_xmmm128 => (SseOp::Equal, types::I32X4),
        Paddb_xmm_xmmm128 => (SseOp::Add, types::I8X16),
        Paddw_xmm_xmmm128 => (SseOp::Add, types::I16X8),
        Paddd_xmm_xmmm128 => (SseOp::Add, types::I32X4),
        Paddq_xmm_xmmm128 => (SseOp::Add, types::I64X2),
        Psubb_xmm_xmmm128 => (SseOp::Sub, types::I8X16),
        Psubw_xmm_xmmm128 => (SseOp::Sub, types::I16X8),
        Psubd_xmm_xmmm128 => (SseOp::Sub, types::I32X4),
        Psubq_xmm_xmmm128 => (SseOp::Sub, types::I64X2),
        Pshufb_xmm_xmmm128 => (SseOp::ByteShuffle, types::I8X16),
        _ => return None,
    })
}

/// The inline memory form of `i`, if it has one (64-bit addressing with GPR base and
/// index, as the other memory forms).
pub(super) fn sse_mem_kind(i: &Instruction) -> Option<SseMem> {
    use Code::*;
    let xmm = |n: u32| i.op_kind(n) == OpKind::Register && i.op_register(n).is_xmm();
    let mem = |n: u32| i.op_kind(n) == OpKind::Memory && super::mem_simple(i);
    let kind = match i.code() {
        Movdqu_xmm_xmmm128 | Movups_xmm_xmmm128 | Movupd_xmm_xmmm128 | Movd_xmm_rm32
        | Movq_xmm_rm64 | Movq_xmm_xmmm64 | Movss_xmm_xmmm32 | Movsd_xmm_xmmm64 => {
            SseMem::Load { aligned: false }
        }
        Movdqa_xmm_xmmm128 | Movaps_xmm_xmmm128 | Movapd_xmm_xmmm128 => {
            SseMem::Load { aligned: true }
        }
        Movdqu_xmmm128_xmm | Movups_xmmm128_xmm | Movupd_xmmm128_xmm | Movd_rm32_xmm
        | Movq_rm64_xmm | Movq_xmmm64_xmm | Movss_xmmm32_xmm | Movsd_xmmm64_xmm => {
            SseMem::Store { aligned: false }
        }
        Movdqa_xmmm128_xmm | Movaps_xmmm128_xmm | Movapd_xmmm128_xmm | Movntdq_m128_xmm
        | Movntps_m128_xmm | Movntpd_m128_xmm => SseMem::Store { aligned: true },
        code if let Some((op, ty)) = scalar_op(code) => SseMem::Scalar(op, ty),
        code if let Some(ty) = compare_type(code) => SseMem::Compare(ty),
        code => {
            let (op, ty) = lane_op(code)?;
            SseMem::Lanes(op, ty)
        }
    };
    let operands_ok = match kind {
        SseMem::Load { .. } | SseMem::Lanes(..) | SseMem::Scalar(..) | SseMem::Compare(_) => {
            xmm(0) && mem(1)
        }
        SseMem::Store { .. } => mem(0) && xmm(1),
    };
    let size = i.memory_size().size();
    (operands_ok && matches!(size, 4 | 8 | 16) && (!kind.aligned() || size == 16)).then_some(kind)
}

/// The byte mask of PUNPCKL* (`high` false) or PUNPCKH* of `size`-byte elements: the
/// destination's and the source's elements of the low or high half, interleaved.
fn unpack_mask(size: usize, high: bool) -> [u8; 16] {
    let base = if high { 8 } else { 0 };
    std::array::from_fn(|k| {
        let (element, within) = (k / (2 * size), k % (2 * size));
        let from = base + element * size + within % size;
        (if within < size { from } else { 16 + from }) as u8
    })
}

/// The inline shuffle or lane shift of an SSE2/SSSE3 register form with an immediate (or
/// a PUNPCK*), if `i` is one.
fn shuffle_kind(i: &Instruction) -> Option<Sse> {
    use Mnemonic::*;
    let xmm = |n: u32| i.op_kind(n) == OpKind::Register && i.op_register(n).is_xmm();
    let two = i.op_count() >= 2 && xmm(0) && xmm(1);
    let imm = |n: u32| (i.op_kind(n) == OpKind::Immediate8).then(|| i.immediate(n) as usize);
    // A lane of 4 (PSHUFD) or 2 (PSHUFLW/HW) bytes from the source's lane `pick`.
    let pick = |lanes: &mut [u8], bytes: usize, first: usize, n: usize| {
        for (l, lane) in lanes.chunks_mut(bytes).enumerate() {
            let from = first + bytes * ((n >> (2 * l)) & 3);
            for (j, b) in lane.iter_mut().enumerate() {
                *b = (16 + from + j) as u8;
            }
        }
    };
    let identity = |k: usize| (16 + k) as u8;
    let shuffle = |mask: [u8; 16], zero: bool| Some(Sse::Shuffle { mask, zero });
    let shift = |op: LaneShift, ty: Type, n: usize| {
        let bits = ty.lane_bits() as usize;
        Some(match (op, n >= bits) {
            (LaneShift::Arithmetic, true) => Sse::ShiftImm(op, ty, (bits - 1) as u8),
            // Every bit shifted out: PXOR's result with itself, as a shuffle from zero.
            (_, true) => Sse::Shuffle {
                mask: [16; 16],
                zero: true,
            },
            (_, false) => Sse::ShiftImm(op, ty, n as u8),
        })
    };
    match i.mnemonic() {
        Punpcklbw | Punpcklwd | Punpckldq | Punpcklqdq | Punpckhbw | Punpckhwd | Punpckhdq
        | Punpckhqdq
            if two && i.op_count() == 2 =>
        {
            let m = i.mnemonic();
            let size = match m {
                Punpcklbw | Punpckhbw => 1,
                Punpcklwd | Punpckhwd => 2,
                Punpckldq | Punpckhdq => 4,
                _ => 8,
            };
            let high = matches!(m, Punpckhbw | Punpckhwd | Punpckhdq | Punpckhqdq);
            shuffle(unpack_mask(size, high), false)
        }
        Pshufd if two => {
            let mut mask = [0; 16];
            pick(&mut mask, 4, 0, imm(2)?);
            shuffle(mask, false)
        }
        Pshuflw if two => {
            let mut mask = std::array::from_fn(identity);
            pick(&mut mask[..8], 2, 0, imm(2)?);
            shuffle(mask, false)
        }
        Pshufhw if two => {
            let mut mask = std::array::from_fn(identity);
            pick(&mut mask[8..], 2, 8, imm(2)?);
            shuffle(mask, false)
        }
        // Bytes `n..n + 16` of source:destination (the source is the low half); a count
        // above 16 would shift in zeros, which the interpreter handles.
        Palignr if two => {
            let n = imm(2).filter(|&n| n <= 16)?;
            let mask = std::array::from_fn(|k| {
                let p = k + n;
                (if p < 16 { 16 + p } else { p - 16 }) as u8
            });
            shuffle(mask, false)
        }
        Pslldq if xmm(0) => {
            let n = imm(1)?;
            shuffle(
                std::array::from_fn(|k| if k >= n { (k - n) as u8 } else { 16 }),
                true,
            )
        }
        Psrldq if xmm(0) => {
            let n = imm(1)?;
            shuffle(
                std::array::from_fn(|k| if k + n < 16 { (k + n) as u8 } else { 16 }),
                true,
            )
        }
        Psllw | Pslld | Psllq | Psrlw | Psrld | Psrlq | Psraw | Psrad if xmm(0) => {
            let n = imm(1)?;
            let m = i.mnemonic();
            let op = match m {
                Psllw | Pslld | Psllq => LaneShift::Left,
                Psraw | Psrad => LaneShift::Arithmetic,
                _ => LaneShift::Right,
            };
            let ty = match m {
                Psllw | Psrlw | Psraw => types::I16X8,
                Pslld | Psrld | Psrad => types::I32X4,
                _ => types::I64X2,
            };
            shift(op, ty, n)
        }
        _ => None,
    }
}

/// The inline form of `i`, if it has one.
pub(super) fn sse_kind(i: &Instruction) -> Option<Sse> {
    if let Some(k) = shuffle_kind(i) {
        // Legacy SSE encodings only (VEX forms have other operands).
        return (i.encoding() == iced_x86::EncodingKind::Legacy).then_some(k);
    }
    use Code::*;
    let xmm = |n: u32| i.op_kind(n) == OpKind::Register && i.op_register(n).is_xmm();
    let gpr = |n: u32| i.op_kind(n) == OpKind::Register && gpr_index(i.op_register(n)).is_some();
    let kind = match i.code() {
        code if let Some((op, ty)) = lane_op(code) => Some(Sse::Lanes(op, ty)),
        Movdqa_xmm_xmmm128 | Movdqu_xmm_xmmm128 | Movaps_xmm_xmmm128 | Movups_xmm_xmmm128
        | Movapd_xmm_xmmm128 | Movupd_xmm_xmmm128 | Movdqa_xmmm128_xmm | Movdqu_xmmm128_xmm
        | Movaps_xmmm128_xmm | Movups_xmmm128_xmm | Movapd_xmmm128_xmm | Movupd_xmmm128_xmm => {
            Some(Sse::Copy)
        }
        Pmovmskb_r32_xmm | Pmovmskb_r64_xmm => Some(Sse::MoveMask),
        Comiss_xmm_xmmm32 | Ucomiss_xmm_xmmm32 => Some(Sse::Compare(types::F32)),
        Comisd_xmm_xmmm64 | Ucomisd_xmm_xmmm64 => Some(Sse::Compare(types::F64)),
        Movd_xmm_rm32 | Movq_xmm_rm64 => Some(Sse::ToXmm),
        Movd_rm32_xmm | Movq_rm64_xmm => Some(Sse::FromXmm),
        code if scalar_op(code).is_some() || from_int_type(code).is_some() => Some(Sse::Scalar),
        _ => None,
    }?;
    let operands_ok = match kind {
        Sse::Scalar if scalar_op(i.code()).is_some() => xmm(0) && xmm(1),
        Sse::Scalar => xmm(0) && gpr(1),
        Sse::Lanes(..) | Sse::Copy | Sse::Compare(_) => xmm(0) && xmm(1),
        Sse::MoveMask | Sse::FromXmm => gpr(0) && xmm(1),
        Sse::ToXmm => xmm(0) && gpr(1),
        Sse::Shuffle { .. } | Sse::ShiftImm(..) => unreachable!("chosen by shuffle_kind"),
    };
    operands_ok.then_some(kind)
}

pub(super) fn xmm_offset(r: Register) -> i32 {
    let k = r as usize - Register::XMM0 as usize;
    (offset_of!(CpuState, fpu) + offset_of!(crane86_x86::FpuState, xmm) + 16 * k) as i32
}

impl Translator<'_, '_> {
    /// Whether SSE instructions run now (CR0.EM and CR0.TS clear, CR4.OSFXSR set), as a
    /// boolean value.
    pub(super) fn sse_usable(&mut self) -> Value {
        let ok0 = self.cr0_clear(cr0::EM | cr0::TS);
        let c4 = self.b.ins().load(
            types::I64,
            trusted(),
            self.state,
            offset_of!(CpuState, cr4) as i32,
        );
        let ok4 = self.b.ins().band_imm_u(c4, cr4::OSFXSR as i64);
        let ok4 = self.b.ins().icmp_imm_u(IntCC::NotEqual, ok4, 0);
        self.b.ins().band(ok0, ok4)
    }

    /// Instruction `index` (`i`, of inline form `kind`): inline when SSE is usable, else the
    /// interpreter (which raises #UD or #NM).
    pub(super) fn sse(&mut self, i: &Instruction, index: usize, kind: Sse) {
        if kind == Sse::Scalar {
            self.sse_scalar(i, index);
            return;
        }
        let mut ok = self.sse_usable();
        if let Sse::Compare(ty) = kind {
            for n in 0..2 {
                let at = xmm_offset(i.op_register(n));
                let v = self.b.ins().load(ty.as_int(), trusted(), self.state, at);
                let ordinary = self.ordinary_float(ty, v);
                ok = self.b.ins().band(ok, ordinary);
            }
        }
        // The interpreter raises the fault (it leaves the block); nothing returns from
        // the slow path unless the check and the interpreter disagree, in which case its
        // result stands.
        self.guarded(index, ok, |t| {
            t.sse_body(i, kind);
            t.retire(i.next_ip());
        });
    }

    /// Whether float bits `v` (an integer of `ty`'s width) are a zero, a normal number or
    /// an infinity: not a NaN and not a denormal, the operands that raise no MXCSR flag.
    pub(super) fn ordinary_float(&mut self, ty: Type, v: Value) -> Value {
        let f = FloatBits::of(ty);
        let normal_or_inf = self.magnitude_in(ty, v, f.smallest_normal(), f.infinity() + 1);
        let zero = self.magnitude_in(ty, v, 0, 1);
        self.b.ins().bor(normal_or_inf, zero)
    }

    /// Whether the magnitude of float bits `v` (an integer of `ty`'s width: the bits without
    /// the sign) lies in `low..high`, as a boolean value (one subtraction, one compare).
    pub(super) fn magnitude_in(&mut self, ty: Type, v: Value, low: i64, high: i64) -> Value {
        let f = FloatBits::of(ty);
        let magnitude = self.b.ins().band_imm_u(v, f.magnitude_mask());
        // Unsigned: a magnitude below `low` wraps around to a large value.
        let off = self.b.ins().iadd_imm_s(magnitude, -low);
        self.b
            .ins()
            .icmp_imm_u(IntCC::UnsignedLessThan, off, high - low)
    }

    /// XMM `dst` op= `b` (a vector of lane type `ty`).
    pub(super) fn lanes(&mut self, op: SseOp, ty: Type, dst: Register, b: Value) {
        let at = xmm_offset(dst);
        let a = self.b.ins().load(ty, trusted(), self.state, at);
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
            SseOp::ByteShuffle => {
                // Cranelift's swizzle gives 0 for an index of 16 or more: keep the selector's
                // top bit and its low four.
                let keep = ins.iconst(types::I8, 0x8F_u8 as i8 as i64);
                let keep = self.b.ins().splat(types::I8X16, keep);
                let index = self.b.ins().band(b, keep);
                self.b.ins().swizzle(a, index)
            }
        };
        self.b.ins().store(trusted(), r, self.state, at);
    }

    /// XMM `dst` = `v` (32, 64 or 128 bits), the bits above it zeroed.
    pub(super) fn set_xmm_zero_extended(&mut self, dst: Register, v: Value, bytes: u32) {
        let at = xmm_offset(dst);
        self.b.ins().store(trusted(), v, self.state, at);
        if bytes == 4 {
            let zero = self.b.ins().iconst(types::I32, 0);
            self.b.ins().store(trusted(), zero, self.state, at + 4);
        }
        if bytes < 16 {
            let zero = self.b.ins().iconst(types::I64, 0);
            self.b.ins().store(trusted(), zero, self.state, at + 8);
        }
    }

    fn sse_body(&mut self, i: &Instruction, kind: Sse) {
        let vec = |t: &mut Self, ty: Type, n: u32| {
            let at = xmm_offset(i.op_register(n));
            t.b.ins().load(ty, trusted(), t.state, at)
        };
        match kind {
            Sse::Lanes(op, ty) => {
                let b = vec(self, ty, 1);
                self.lanes(op, ty, i.op_register(0), b);
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
            Sse::Shuffle { mask, zero } => {
                let a = vec(self, types::I8X16, 0);
                let b = if zero {
                    let z = self.b.ins().iconst(types::I8, 0);
                    self.b.ins().splat(types::I8X16, z)
                } else {
                    vec(self, types::I8X16, 1)
                };
                let mask = self
                    .b
                    .func
                    .dfg
                    .immediates
                    .push(ir::ConstantData::from(&mask[..]));
                let r = self.b.ins().shuffle(a, b, mask);
                let at = xmm_offset(i.op_register(0));
                self.b.ins().store(trusted(), r, self.state, at);
            }
            Sse::Compare(ty) => {
                let a = self.xmm_lane0(i.op_register(0), ty);
                let b = self.xmm_lane0(i.op_register(1), ty);
                self.compare_flags(ty, a, b);
            }
            Sse::Scalar => unreachable!("`sse_scalar` emits the scalar forms"),
            Sse::ShiftImm(op, ty, n) => {
                let v = vec(self, ty, 0);
                let n = i64::from(n);
                let r = match op {
                    LaneShift::Left => self.b.ins().ishl_imm_u(v, n),
                    LaneShift::Right => self.b.ins().ushr_imm_u(v, n),
                    LaneShift::Arithmetic => self.b.ins().sshr_imm_u(v, n),
                };
                let at = xmm_offset(i.op_register(0));
                self.b.ins().store(trusted(), r, self.state, at);
            }
        }
    }
}
