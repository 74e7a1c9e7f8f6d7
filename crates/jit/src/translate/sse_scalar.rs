//! Inline scalar SSE floating point: ADDSS/SUBSS/MULSS/DIVSS and their SD twins (register
//! or memory source), CVTSI2SS/CVTSI2SD from a GPR, and COMIS/UCOMIS with a memory source
//! (the register form is `sse.rs`'s `Sse::Compare`).
//!
//! The interpreter computes these with a soft-float library, exact in every MXCSR flag. The
//! host's IEEE arithmetic gives the same bits under MXCSR's default control (round to
//! nearest, every exception masked, no FTZ/DAZ), and leaves the flags as the interpreter
//! would when nothing but PE could be raised and PE needs no change: it is set already
//! (the flag is sticky), or the result is exact. So the fast path runs under the default
//! control when both operands and the result are normal numbers (no NaN, infinity, zero
//! or denormal: no IE, DE, ZE, OE or UE) and PE is set or the result exact; exactness is
//! computed with error-free transformations (TwoSum for ADD/SUB, Dekker's product for MUL,
//! and for DIV whether quotient * divisor gives the dividend back), with MUL and DIV kept
//! to magnitudes where their error terms cannot underflow. A conversion from an integer
//! needs the default control and PE set, or an integer the format holds exactly (from 32
//! bits to double, always). Anything else is the interpreter's, on the state from before.

use super::sse::{xmm_offset, FloatBits};
use super::*;
use crane86_interp::ops::sse::float::mxcsr;
use cranelift_codegen::ir::condcodes::FloatCC;

/// A scalar arithmetic operation on lane 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FpOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// The scalar arithmetic of `code` and its float type, if it is one of the forms here.
pub(super) fn scalar_op(code: Code) -> Option<(FpOp, Type)> {
    use Code::*;
    Some(match code {
        Addss_xmm_xmmm32 => (FpOp::Add, types::F32),
        Subss_xmm_xmmm32 => (FpOp::Sub, types::F32),
        Mulss_xmm_xmmm32 => (FpOp::Mul, types::F32),
        Divss_xmm_xmmm32 => (FpOp::Div, types::F32),
        Addsd_xmm_xmmm64 => (FpOp::Add, types::F64),
        Subsd_xmm_xmmm64 => (FpOp::Sub, types::F64),
        Mulsd_xmm_xmmm64 => (FpOp::Mul, types::F64),
        Divsd_xmm_xmmm64 => (FpOp::Div, types::F64),
        _ => return None,
    })
}

/// The float type CVTSI2SS/CVTSI2SD `code` converts to.
pub(super) fn from_int_type(code: Code) -> Option<Type> {
    use Code::*;
    match code {
        Cvtsi2ss_xmm_rm32 | Cvtsi2ss_xmm_rm64 => Some(types::F32),
        Cvtsi2sd_xmm_rm32 | Cvtsi2sd_xmm_rm64 => Some(types::F64),
        _ => None,
    }
}

/// The float type of COMISS/UCOMISS (F32) and COMISD/UCOMISD (F64).
pub(super) fn compare_type(code: Code) -> Option<Type> {
    use Code::*;
    match code {
        Comiss_xmm_xmmm32 | Ucomiss_xmm_xmmm32 => Some(types::F32),
        Comisd_xmm_xmmm64 | Ucomisd_xmm_xmmm64 => Some(types::F64),
        _ => None,
    }
}

impl Translator<'_, '_> {
    /// Whether MXCSR has the default control (every exception masked, round to nearest,
    /// FTZ and DAZ clear; any flags), and whether PE is set, as boolean values.
    fn mxcsr_default(&mut self) -> (Value, Value) {
        let at = offset_of!(CpuState, fpu) + offset_of!(crane86_x86::FpuState, mxcsr);
        let csr = self.b.ins().uload32(trusted(), self.state, at as i32);
        let control = self.b.ins().band_imm_s(csr, !i64::from(mxcsr::FLAGS));
        let expected = i64::from(crane86_x86::fpu::MXCSR_RESET);
        let default = self.b.ins().icmp_imm_u(IntCC::Equal, control, expected);
        let pe = self.b.ins().band_imm_u(csr, i64::from(mxcsr::PE));
        let pe = self.b.ins().icmp_imm_u(IntCC::NotEqual, pe, 0);
        (default, pe)
    }

    /// Whether float bits `v` (of `ty`) have a magnitude in [2^-lim, 2^lim], `lim` 900 for
    /// doubles and 100 for singles: where Dekker's error terms stay normal numbers.
    fn moderate_float(&mut self, ty: Type, v: Value) -> Value {
        let f = FloatBits::of(ty);
        let lim = if ty == types::F32 { 100 } else { 900 };
        let (low, high) = (f.power_of_two(-lim), f.power_of_two(lim + 1));
        self.magnitude_in(ty, v, low, high)
    }

    /// Float constant `v` of `ty`.
    fn float_const(&mut self, ty: Type, v: f64) -> Value {
        if ty == types::F32 {
            self.b.ins().f32const(v as f32)
        } else {
            self.b.ins().f64const(v)
        }
    }

    /// The rounding error of `p`, the rounded product of floats `x` and `y` (of `ty`):
    /// `x * y - p` by Dekker's algorithm (Veltkamp splits), exact unless a term over- or
    /// underflows (a NaN or infinity then, when a split overflows).
    fn product_error(&mut self, ty: Type, x: Value, y: Value, p: Value) -> Value {
        let splitter = if ty == types::F32 {
            4097.0
        } else {
            134_217_729.0
        };
        let c = self.float_const(ty, splitter);
        let split = |t: &mut Self, v: Value| {
            let cv = t.b.ins().fmul(c, v);
            let d = t.b.ins().fsub(cv, v);
            let hi = t.b.ins().fsub(cv, d);
            let lo = t.b.ins().fsub(v, hi);
            (hi, lo)
        };
        let (xh, xl) = split(self, x);
        let (yh, yl) = split(self, y);
        let hh = self.b.ins().fmul(xh, yh);
        let e = self.b.ins().fsub(hh, p);
        let hl = self.b.ins().fmul(xh, yl);
        let e = self.b.ins().fadd(e, hl);
        let lh = self.b.ins().fmul(xl, yh);
        let e = self.b.ins().fadd(e, lh);
        let ll = self.b.ins().fmul(xl, yl);
        self.b.ins().fadd(e, ll)
    }

    /// Whether float `r`, the rounded `a op b` (floats of `ty`), is exact, as a boolean
    /// value; `bits` are the bits of `(a, r)`.
    fn exact_result(
        &mut self,
        op: FpOp,
        ty: Type,
        (a, b, r): (Value, Value, Value),
        bits: (Value, Value),
    ) -> Value {
        let zero = self.float_const(ty, 0.0);
        match op {
            FpOp::Add | FpOp::Sub => {
                // TwoSum of a and b' = ±b: r's error is (a - (r - bb)) + (b' - bb), with
                // bb = r - a.
                let b = if op == FpOp::Sub {
                    self.b.ins().fneg(b)
                } else {
                    b
                };
                let bb = self.b.ins().fsub(r, a);
                let ab = self.b.ins().fsub(r, bb);
                let ea = self.b.ins().fsub(a, ab);
                let eb = self.b.ins().fsub(b, bb);
                let e = self.b.ins().fadd(ea, eb);
                self.b.ins().fcmp(FloatCC::Equal, e, zero)
            }
            FpOp::Mul => {
                let e = self.product_error(ty, a, b, r);
                let exact = self.b.ins().fcmp(FloatCC::Equal, e, zero);
                let moderate = self.moderate_float(ty, bits.1);
                self.b.ins().band(exact, moderate)
            }
            FpOp::Div => {
                // a / b is exact iff r * b is a exactly: its rounding is a, with no error.
                let p = self.b.ins().fmul(r, b);
                let e = self.product_error(ty, r, b, p);
                let no_error = self.b.ins().fcmp(FloatCC::Equal, e, zero);
                let back = self.b.ins().fcmp(FloatCC::Equal, p, a);
                let moderate = self.moderate_float(ty, bits.0);
                let exact = self.b.ins().band(no_error, back);
                self.b.ins().band(exact, moderate)
            }
        }
    }

    /// Whether float bits `v` (an integer of `ty`'s width) are a normal number.
    fn normal_float(&mut self, ty: Type, v: Value) -> Value {
        let f = FloatBits::of(ty);
        self.magnitude_in(ty, v, f.smallest_normal(), f.infinity())
    }

    /// Lane 0 of XMM `r` as the bits of a `ty`.
    pub(super) fn xmm_lane0(&mut self, r: Register, ty: Type) -> Value {
        self.b
            .ins()
            .load(ty.as_int(), trusted(), self.state, xmm_offset(r))
    }

    /// `a op b` on float bits of `ty` (integers of its width): the result's bits, and
    /// whether the fast path's conditions hold (see the module doc).
    pub(super) fn scalar_arith(
        &mut self,
        op: FpOp,
        ty: Type,
        a: Value,
        b: Value,
    ) -> (Value, Value) {
        let fa = self.b.ins().bitcast(ty, MemFlagsData::new(), a);
        let fb = self.b.ins().bitcast(ty, MemFlagsData::new(), b);
        let r = match op {
            FpOp::Add => self.b.ins().fadd(fa, fb),
            FpOp::Sub => self.b.ins().fsub(fa, fb),
            FpOp::Mul => self.b.ins().fmul(fa, fb),
            FpOp::Div => self.b.ins().fdiv(fa, fb),
        };
        let bits = self.b.ins().bitcast(ty.as_int(), MemFlagsData::new(), r);
        let (mut ok, pe) = self.mxcsr_default();
        for v in [a, b, bits] {
            let normal = self.normal_float(ty, v);
            ok = self.b.ins().band(ok, normal);
        }
        let exact = self.exact_result(op, ty, (fa, fb, r), (a, bits));
        let flags_stay = self.b.ins().bor(pe, exact);
        ok = self.b.ins().band(ok, flags_stay);
        (bits, ok)
    }

    /// Scalar arithmetic or CVTSI2SS/SD of registers (instruction `index`).
    pub(super) fn sse_scalar(&mut self, i: &Instruction, index: usize) {
        let dst = i.op_register(0);
        let usable = self.sse_usable();
        let (bits, ok) = if let Some((op, ty)) = scalar_op(i.code()) {
            let a = self.xmm_lane0(dst, ty);
            let b = self.xmm_lane0(i.op_register(1), ty);
            self.scalar_arith(op, ty, a, b)
        } else {
            let ty = from_int_type(i.code()).expect("a scalar form");
            let wide = i.op_register(1).size() == 8;
            let v = self.operand(i, 1, if wide { 64 } else { 32 });
            let v = if wide {
                v
            } else {
                let low = self.b.ins().ireduce(types::I32, v);
                self.b.ins().sextend(types::I64, low)
            };
            let f = self.b.ins().fcvt_from_sint(ty, v);
            let bits = self.b.ins().bitcast(ty.as_int(), MemFlagsData::new(), f);
            let ok = if !wide && ty == types::F64 {
                self.b.ins().iconst(types::I8, 1)
            } else {
                // Exact for |v| <= 2^p, p the precision: v + 2^p <= 2^(p+1), unsigned.
                let p = if ty == types::F32 { 24 } else { 53 };
                let off = self.b.ins().iadd_imm_s(v, 1 << p);
                let exact =
                    self.b
                        .ins()
                        .icmp_imm_u(IntCC::UnsignedLessThanOrEqual, off, 1 << (p + 1));
                let (default, pe) = self.mxcsr_default();
                let flags_stay = self.b.ins().bor(pe, exact);
                self.b.ins().band(default, flags_stay)
            };
            (bits, ok)
        };
        let ok = self.b.ins().band(ok, usable);
        self.guarded(index, ok, |t| {
            t.b.ins().store(trusted(), bits, t.state, xmm_offset(dst));
            t.retire(i.next_ip());
        });
    }

    /// The flags COMIS/UCOMIS leave for ordered operands `a` and `b` (float bits of `ty`):
    /// ZF and CF from the comparison, PF, OF, SF and AF clear, materialized.
    pub(super) fn compare_flags(&mut self, ty: Type, a: Value, b: Value) {
        use crane86_x86::flags::{CF, ZF};
        let a = self.b.ins().bitcast(ty, MemFlagsData::new(), a);
        let b = self.b.ins().bitcast(ty, MemFlagsData::new(), b);
        let less = self.b.ins().fcmp(FloatCC::LessThan, a, b);
        let equal = self.b.ins().fcmp(FloatCC::Equal, a, b);
        let cf = self.b.ins().uextend(types::I64, less);
        let zf = self.b.ins().uextend(types::I64, equal);
        let zf = self.b.ins().ishl_imm_u(zf, i64::from(ZF.trailing_zeros()));
        debug_assert_eq!(CF, 1);
        let fl = self.b.ins().bor(cf, zf);
        self.set_materialized(fl, 32);
    }
}
