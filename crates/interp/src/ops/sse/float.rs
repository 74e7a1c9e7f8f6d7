//! IEEE single and double precision as SSE computes it, on raw bit patterns: the MXCSR
//! rounding mode, DAZ (denormal inputs read as zero) and FTZ (tiny results flushed to zero),
//! the sticky exception flags, and the x86 NaN rules (a NaN operand propagates quieted, the
//! first operand's when both are NaN; an invalid operation returns the "real indefinite"
//! QNaN). Correctly rounded sums, products and quotients come from `rustc_apfloat`, which
//! detects tininess after rounding as x86 does; square roots are computed exactly with an
//! integer square root. Works the same on every host architecture.

use rustc_apfloat::ieee::{Double, Quad, Single};
use rustc_apfloat::{Float, FloatConvert, Round, Status, StatusAnd};
use std::cmp::Ordering;

/// MXCSR bits.
pub mod mxcsr {
    pub const IE: u32 = 1 << 0;
    pub const DE: u32 = 1 << 1;
    pub const ZE: u32 = 1 << 2;
    pub const OE: u32 = 1 << 3;
    pub const UE: u32 = 1 << 4;
    pub const PE: u32 = 1 << 5;
    /// The six exception flags.
    pub const FLAGS: u32 = 0x3F;
    pub const DAZ: u32 = 1 << 6;
    /// Exception masks IM..PM, bits 7..12.
    pub const MASK_SHIFT: u32 = 7;
    pub const RC_SHIFT: u32 = 13;
    pub const FTZ: u32 = 1 << 15;
    /// The bits software may set (the rest raise #GP on LDMXCSR/FXRSTOR).
    pub const WRITABLE: u32 = 0xFFFF;
}

/// One instruction's floating-point environment: the MXCSR it runs under and the exception
/// flags its lanes raise.
#[derive(Clone, Copy, Debug)]
pub struct Mx {
    pub csr: u32,
    pub flags: u32,
}

impl Mx {
    pub fn new(csr: u32) -> Mx {
        Mx { csr, flags: 0 }
    }

    pub fn round(&self) -> Round {
        rounding((self.csr >> mxcsr::RC_SHIFT) & 3)
    }

    fn daz(&self) -> bool {
        self.csr & mxcsr::DAZ != 0
    }

    fn ftz(&self) -> bool {
        self.csr & mxcsr::FTZ != 0
    }

    fn masked(&self, flag: u32) -> bool {
        (self.csr >> mxcsr::MASK_SHIFT) & flag != 0
    }

    /// The flags raised that are unmasked.
    pub fn unmasked(&self) -> u32 {
        self.flags & !(self.csr >> mxcsr::MASK_SHIFT) & mxcsr::FLAGS
    }
}

/// The x86 rounding-control encoding (MXCSR.RC, ROUNDSS imm8[1:0]) as an apfloat mode.
pub fn rounding(rc: u32) -> Round {
    match rc & 3 {
        0 => Round::NearestTiesToEven,
        1 => Round::TowardNegative,
        2 => Round::TowardPositive,
        _ => Round::TowardZero,
    }
}

/// A format: apfloat's type plus the bit layout.
pub trait Ieee: Float + FloatConvert<Single> + FloatConvert<Double> + FloatConvert<Quad> {
    /// Lane width in bytes.
    const BYTES: usize;
    /// Fraction bits (explicit significand bits).
    const FRAC: u32 = Self::PRECISION as u32 - 1;
    const SIGN: u64 = 1 << (Self::BITS - 1);
    const EXP_MASK: u64 = ((1u64 << (Self::BITS as u32 - 1 - Self::FRAC)) - 1) << Self::FRAC;
    const QUIET: u64 = 1 << (Self::FRAC - 1);
    const FRAC_MASK: u64 = (1 << Self::FRAC) - 1;
    /// The "real indefinite" QNaN (sign set, quiet bit set, payload zero).
    const INDEFINITE: u64 = Self::SIGN | Self::EXP_MASK | Self::QUIET;

    fn of(bits: u64) -> Self {
        Self::from_bits(u128::from(bits))
    }

    fn bits(self) -> u64 {
        self.to_bits() as u64
    }

    /// A quadruple-precision value rounded to this format.
    fn narrow(q: Quad, round: Round) -> Self;
}

impl Ieee for Single {
    const BYTES: usize = 4;

    fn narrow(q: Quad, round: Round) -> Self {
        q.convert_r(round, &mut false).value
    }
}

impl Ieee for Double {
    const BYTES: usize = 8;

    fn narrow(q: Quad, round: Round) -> Self {
        q.convert_r(round, &mut false).value
    }
}

fn is_nan<F: Ieee>(b: u64) -> bool {
    b & F::EXP_MASK == F::EXP_MASK && b & F::FRAC_MASK != 0
}

fn is_snan<F: Ieee>(b: u64) -> bool {
    is_nan::<F>(b) && b & F::QUIET == 0
}

fn is_denormal<F: Ieee>(b: u64) -> bool {
    b & F::EXP_MASK == 0 && b & !F::SIGN != 0
}

/// The lane bits (sign, exponent, fraction) of format F in a u64.
fn lane_mask<F: Ieee>() -> u64 {
    if F::BITS == 64 {
        u64::MAX
    } else {
        (1u64 << F::BITS) - 1
    }
}

impl Mx {
    /// A denormal input: zero (same sign) under DAZ, else the DE flag. Non-NaN inputs only.
    fn input<F: Ieee>(&mut self, b: u64) -> F {
        if is_denormal::<F>(b) {
            if self.daz() {
                return F::of(b & F::SIGN);
            }
            self.flags |= mxcsr::DE;
        }
        F::of(b)
    }

    /// The NaN result of a two-operand operation with a NaN operand: the first NaN,
    /// quieted; IE when either operand is a signaling NaN.
    fn propagate<F: Ieee>(&mut self, a: u64, b: u64) -> u64 {
        if is_snan::<F>(a) || is_snan::<F>(b) {
            self.flags |= mxcsr::IE;
        }
        (if is_nan::<F>(a) { a } else { b }) | F::QUIET
    }

    /// Record a rounded result's status and apply FTZ; returns the result bits.
    fn finish<F: Ieee>(&mut self, r: StatusAnd<F>) -> u64 {
        let s = r.status;
        if s.intersects(Status::INVALID_OP) {
            self.flags |= mxcsr::IE;
            return F::INDEFINITE;
        }
        if s.intersects(Status::DIV_BY_ZERO) {
            self.flags |= mxcsr::ZE;
        }
        if s.intersects(Status::OVERFLOW) {
            self.flags |= mxcsr::OE;
        }
        let tiny = s.intersects(Status::UNDERFLOW) || r.value.is_denormal();
        if tiny && self.masked(mxcsr::UE) && self.ftz() {
            self.flags |= mxcsr::UE | mxcsr::PE;
            return r.value.bits() & F::SIGN;
        }
        if tiny && (!self.masked(mxcsr::UE) || s.intersects(Status::INEXACT)) {
            self.flags |= mxcsr::UE;
        }
        if s.intersects(Status::INEXACT) {
            self.flags |= mxcsr::PE;
        }
        r.value.bits() & lane_mask::<F>()
    }

    /// `op(a, b)` for the arithmetic operations (NaN rules, DAZ/DE, rounding, flags).
    fn arith<F: Ieee>(&mut self, a: u64, b: u64, op: Op) -> u64 {
        if is_nan::<F>(a) || is_nan::<F>(b) {
            return self.propagate::<F>(a, b);
        }
        let before = self.flags;
        let (x, y) = (self.input::<F>(a), self.input::<F>(b));
        let round = self.round();
        let mut r = op.apply(x, y, round);
        if r.status
            .intersects(Status::INVALID_OP | Status::DIV_BY_ZERO)
        {
            // Invalid and divide-by-zero outrank the denormal exception in one operation.
            self.flags = (self.flags & !mxcsr::DE) | (before & mxcsr::DE);
        }
        if overflow_hidden(&r, round) && op.overflows::<F>(x, y) {
            r.status |= Status::OVERFLOW;
        }
        if underflow_hidden(&r) && tiny_unbounded::<F>(op.exact(x, y), round) {
            r.status |= Status::UNDERFLOW;
        }
        self.finish(r)
    }

    pub fn add<F: Ieee>(&mut self, a: u64, b: u64) -> u64 {
        self.arith::<F>(a, b, Op::Add)
    }

    pub fn sub<F: Ieee>(&mut self, a: u64, b: u64) -> u64 {
        self.arith::<F>(a, b, Op::Sub)
    }

    pub fn mul<F: Ieee>(&mut self, a: u64, b: u64) -> u64 {
        self.arith::<F>(a, b, Op::Mul)
    }

    pub fn div<F: Ieee>(&mut self, a: u64, b: u64) -> u64 {
        self.arith::<F>(a, b, Op::Div)
    }

    /// MINPS/MAXPS semantics: a NaN in either operand (IE, quiet or not) or two zeros give
    /// the second operand (read through DAZ); otherwise the smaller (larger) one.
    pub fn min_max<F: Ieee>(&mut self, a: u64, b: u64, max: bool) -> u64 {
        if is_nan::<F>(a) || is_nan::<F>(b) {
            self.flags |= mxcsr::IE;
            return if self.daz() && is_denormal::<F>(b) {
                b & F::SIGN
            } else {
                b
            };
        }
        let (x, y) = (self.input::<F>(a), self.input::<F>(b));
        if x.is_zero() && y.is_zero() {
            return y.bits();
        }
        let pick_a = if max { x > y } else { x < y };
        if pick_a {
            x.bits()
        } else {
            y.bits()
        }
    }

    /// The ordering of `a` and `b` (`None` when unordered). IE for signaling NaNs, and for
    /// quiet NaNs too when `signal_qnan` (the "signaling" predicates, COMISS).
    pub fn compare<F: Ieee>(&mut self, a: u64, b: u64, signal_qnan: bool) -> Option<Ordering> {
        if is_nan::<F>(a) || is_nan::<F>(b) {
            if signal_qnan || is_snan::<F>(a) || is_snan::<F>(b) {
                self.flags |= mxcsr::IE;
            }
            return None;
        }
        let (x, y) = (self.input::<F>(a), self.input::<F>(b));
        x.partial_cmp(&y)
    }

    /// Correctly rounded square root.
    pub fn sqrt<F: Ieee>(&mut self, a: u64) -> u64 {
        if is_nan::<F>(a) {
            return self.propagate::<F>(a, a);
        }
        // A negative operand other than -0 is invalid, and then no DE is reported for a
        // negative denormal (DAZ makes it -0, whose root is -0).
        let negative_zero = a == F::SIGN || (self.daz() && is_denormal::<F>(a));
        if a & F::SIGN != 0 && !negative_zero {
            self.flags |= mxcsr::IE;
            return F::INDEFINITE;
        }
        let x = self.input::<F>(a);
        if x.is_zero() {
            return x.bits();
        }
        if x.is_infinite() {
            return x.bits();
        }
        let (m, e) = decompose::<F>(x.bits());
        // m * 2^e with m < 2^53: widen m to ~2*(precision + 2) bits with an even exponent.
        let want = 2 * (F::PRECISION as u32 + 3);
        let mut s = want.saturating_sub(64 - m.leading_zeros());
        if (e - s as i32) % 2 != 0 {
            s += 1;
        }
        let wide = u128::from(m) << s;
        let root = isqrt(wide);
        let sticky = u128::from(root * root != wide);
        let n = (root << 1) | sticky;
        let exp = (e - s as i32) / 2 - 1;
        let round = self.round();
        let r = F::from_u128_r(n, round);
        let scaled = r.value.scalbn_r(exp, round);
        self.finish(r.status.and(scaled))
    }

    /// Convert between formats (CVTSS2SD / CVTSD2SS): NaNs keep their sign and top payload
    /// bits, quieted (IE for a signaling NaN); otherwise rounded with the flags.
    pub fn convert<F: Ieee + FloatConvert<T>, T: Ieee>(&mut self, a: u64) -> u64 {
        if is_nan::<F>(a) {
            if is_snan::<F>(a) {
                self.flags |= mxcsr::IE;
            }
            let sign = if a & F::SIGN != 0 { T::SIGN } else { 0 };
            let payload = a & (F::QUIET - 1);
            let payload = if T::FRAC >= F::FRAC {
                payload << (T::FRAC - F::FRAC)
            } else {
                payload >> (F::FRAC - T::FRAC)
            };
            return sign | T::EXP_MASK | T::QUIET | payload;
        }
        let x = self.input::<F>(a);
        let mut loses = false;
        let round = self.round();
        let mut r: StatusAnd<T> = x.convert_r(round, &mut loses);
        let wide: Quad = x.convert_r(Round::TowardZero, &mut loses).value;
        if overflow_hidden(&r, round) && beyond_largest_binade::<T>(wide) {
            r.status |= Status::OVERFLOW;
        }
        if underflow_hidden(&r) && tiny_unbounded::<T>(wide, round) {
            r.status |= Status::UNDERFLOW;
        }
        self.finish(r)
    }

    /// Round to an integer of `width` bits (CVTSS2SI and friends): out of range or NaN gives
    /// the integer indefinite (only the top bit set) with IE; an inexact result sets PE.
    /// DAZ applies; no DE is reported.
    pub fn to_int<F: Ieee>(&mut self, a: u64, width: usize, round: Round) -> u64 {
        let indefinite = 1u64 << (width - 1);
        if is_nan::<F>(a) {
            self.flags |= mxcsr::IE;
            return indefinite;
        }
        let x = if self.daz() && is_denormal::<F>(a) {
            F::of(a & F::SIGN)
        } else {
            F::of(a)
        };
        let mut exact = false;
        let r = x.to_i128_r(width, round, &mut exact);
        if r.status.intersects(Status::INVALID_OP) {
            self.flags |= mxcsr::IE;
            return indefinite;
        }
        if r.status.intersects(Status::INEXACT) {
            self.flags |= mxcsr::PE;
        }
        let m = if width == 64 {
            u64::MAX
        } else {
            (1u64 << width) - 1
        };
        (r.value as u64) & m
    }

    /// A signed integer to format F, rounded (PE when inexact).
    pub fn from_int<F: Ieee>(&mut self, v: i64) -> u64 {
        let round = self.round();
        let r = F::from_i128_r(i128::from(v), round);
        if r.status.intersects(Status::INEXACT) {
            self.flags |= mxcsr::PE;
        }
        r.value.bits() & lane_mask::<F>()
    }

    /// ROUNDSS/ROUNDPS: to an integral value in format F under `round`; PE unless
    /// `suppress_pe`. A signaling NaN is quieted with IE.
    pub fn round_integral<F: Ieee>(&mut self, a: u64, round: Round, suppress_pe: bool) -> u64 {
        if is_nan::<F>(a) {
            return self.propagate::<F>(a, a);
        }
        let x = if self.daz() && is_denormal::<F>(a) {
            F::of(a & F::SIGN)
        } else {
            F::of(a)
        };
        let r = x.round_to_integral(round);
        if r.status.intersects(Status::INEXACT) && !suppress_pe {
            self.flags |= mxcsr::PE;
        }
        r.value.bits() & lane_mask::<F>()
    }

    /// RCPPS/RSQRTPS-style approximations (`rsqrt` selects 1/sqrt): computed exactly in f64
    /// and rounded to F, which is within the architectural error bound (|rel err| <=
    /// 1.5 * 2^-12) but not bit-identical to a given CPU's tables. Denormal inputs read as
    /// zero and tiny results flush to zero, as on hardware; no flags are raised.
    pub fn approx<F: Ieee>(&mut self, a: u64, rsqrt: bool) -> u64
    where
        Double: FloatConvert<F>,
    {
        let sign = a & F::SIGN;
        if is_nan::<F>(a) {
            return a | F::QUIET;
        }
        if a & F::EXP_MASK == 0 {
            // Zero or denormal: +-infinity.
            return sign | F::EXP_MASK;
        }
        if rsqrt && sign != 0 {
            return F::INDEFINITE;
        }
        let mut loses = false;
        let x: Double = F::of(a)
            .convert_r(Round::NearestTiesToEven, &mut loses)
            .value;
        let v = f64::from_bits(x.bits());
        let r = if rsqrt { 1.0 / v.sqrt() } else { 1.0 / v };
        let d = Double::of(r.to_bits());
        let out: F = d.convert_r(Round::NearestTiesToEven, &mut loses).value;
        if out.is_denormal() {
            return out.bits() & F::SIGN;
        }
        out.bits() & lane_mask::<F>()
    }
}

/// The four arithmetic operations, applicable in any format (the overflow check recomputes
/// in quadruple precision).
#[derive(Clone, Copy)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

impl Op {
    fn apply<T: Float>(self, x: T, y: T, round: Round) -> StatusAnd<T> {
        match self {
            Op::Add => x.add_r(y, round),
            Op::Sub => x.sub_r(y, round),
            Op::Mul => x.mul_r(y, round),
            Op::Div => x.div_r(y, round),
        }
    }

    /// `x op y` in quadruple precision, rounded toward zero (exact for every sum, difference
    /// and product of singles or doubles that can land near the underflow threshold).
    fn exact<F: Ieee>(self, x: F, y: F) -> Quad {
        let mut loses = false;
        let qx: Quad = x.convert_r(Round::TowardZero, &mut loses).value;
        let qy: Quad = y.convert_r(Round::TowardZero, &mut loses).value;
        self.apply(qx, qy, Round::TowardZero).value
    }

    /// Whether the exact result of `x op y` overflows format F, judged from the result
    /// rounded toward zero in quadruple precision (wider range, and rounding toward zero
    /// keeps every value below the next power of two below it).
    fn overflows<F: Ieee>(self, x: F, y: F) -> bool {
        beyond_largest_binade::<F>(self.exact(x, y))
    }
}

/// apfloat reports no overflow when a directed rounding mode turns an overflowing result
/// into the largest finite number (IEEE 754 says it overflowed all the same). True when `r`
/// may be such a result and the exact value must be checked.
fn overflow_hidden<T: Float>(r: &StatusAnd<T>, round: Round) -> bool {
    r.value.is_largest()
        && r.status.intersects(Status::INEXACT)
        && !r.status.intersects(Status::OVERFLOW)
        && round != Round::NearestTiesToEven
}

/// apfloat judges tininess after rounding to the denormal precision, so a result that rounds
/// up to the smallest normal number reports no underflow; IEEE 754 (and x86) judge it after
/// rounding with an unbounded exponent. True when `r` may be such a result.
fn underflow_hidden<T: Float>(r: &StatusAnd<T>) -> bool {
    r.value.is_smallest_normalized()
        && r.status.intersects(Status::INEXACT)
        && !r.status.intersects(Status::UNDERFLOW)
}

/// Tininess after rounding with an unbounded exponent: `q` scaled into F's normal range,
/// rounded to F's precision, is still below the scaled 2^emin.
fn tiny_unbounded<F: Ieee>(q: Quad, round: Round) -> bool {
    const SCALE: i32 = 64;
    let mut loses = false;
    let scaled = q.scalbn(SCALE);
    let rounded = F::narrow(scaled, round);
    let back: Quad = rounded.convert_r(Round::TowardZero, &mut loses).value;
    let limit = Quad::from_u128(1).value.scalbn(F::MIN_EXP + SCALE);
    back.abs() < limit
}

/// |q| >= 2^(emax + 1) of format F: the value overflows F whatever the rounding.
fn beyond_largest_binade<F: Ieee>(q: Quad) -> bool {
    let limit = Quad::from_u128(1).value.scalbn(F::MAX_EXP + 1);
    q.abs() >= limit
}

/// A positive finite value as `m * 2^e` with integer `m`.
fn decompose<F: Ieee>(b: u64) -> (u64, i32) {
    let frac = b & F::FRAC_MASK;
    let biased = ((b & F::EXP_MASK) >> F::FRAC) as i32;
    let bias = F::MAX_EXP;
    if biased == 0 {
        (frac, 1 - bias - F::FRAC as i32)
    } else {
        (frac | (1 << F::FRAC), biased - bias - F::FRAC as i32)
    }
}

/// Integer square root (floor).
fn isqrt(n: u128) -> u128 {
    if n == 0 {
        return 0;
    }
    let mut x = 1u128 << (128 - n.leading_zeros()).div_ceil(2);
    loop {
        let y = (x + n / x) / 2;
        if y >= x {
            break;
        }
        x = y;
    }
    while x * x > n {
        x -= 1;
    }
    while (x + 1) * (x + 1) <= n {
        x += 1;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSR: u32 = 0x1F80;

    fn f32b(v: f32) -> u64 {
        u64::from(v.to_bits())
    }

    #[test]
    fn arithmetic_flags_and_nans() {
        let mut mx = Mx::new(CSR);
        assert_eq!(mx.add::<Single>(f32b(1.5), f32b(2.25)), f32b(3.75));
        assert_eq!(mx.flags, 0);
        assert_eq!(mx.div::<Single>(f32b(1.0), f32b(3.0)), f32b(1.0 / 3.0));
        assert_eq!(mx.flags, mxcsr::PE);
        let mut mx = Mx::new(CSR);
        assert_eq!(mx.div::<Single>(f32b(1.0), 0), f32b(f32::INFINITY));
        assert_eq!(mx.flags, mxcsr::ZE);
        let mut mx = Mx::new(CSR);
        assert_eq!(
            mx.sub::<Single>(f32b(f32::INFINITY), f32b(f32::INFINITY)),
            0xFFC0_0000
        );
        assert_eq!(mx.flags, mxcsr::IE);
        // First NaN operand wins, quieted; IE for the signaling one.
        let mut mx = Mx::new(CSR);
        assert_eq!(mx.mul::<Single>(0x7F80_0001, 0x7FC0_0002), 0x7FC0_0001);
        assert_eq!(mx.flags, mxcsr::IE);
    }

    #[test]
    fn denormals_daz_and_ftz() {
        let tiny = 1u64; // smallest single denormal
        let mut mx = Mx::new(CSR);
        assert_eq!(mx.add::<Single>(tiny, 0), tiny);
        assert_eq!(mx.flags, mxcsr::DE);
        let mut mx = Mx::new(CSR | mxcsr::DAZ);
        assert_eq!(mx.add::<Single>(tiny, 0), 0);
        assert_eq!(mx.flags, 0);
        // FLT_MIN * 0.5 is an exact denormal: no UE when masked without FTZ; flushed with FTZ.
        let mut mx = Mx::new(CSR);
        assert_eq!(
            mx.mul::<Single>(f32b(f32::MIN_POSITIVE), f32b(0.5)),
            0x0040_0000
        );
        assert_eq!(mx.flags, 0);
        let mut mx = Mx::new(CSR | mxcsr::FTZ);
        assert_eq!(mx.mul::<Single>(f32b(f32::MIN_POSITIVE), f32b(0.5)), 0);
        assert_eq!(mx.flags, mxcsr::UE | mxcsr::PE);
    }

    #[test]
    fn square_root_is_correctly_rounded() {
        let mut mx = Mx::new(CSR);
        for v in [2.0f64, 3.0, 1e-310, 0.5, 1e300, 12345.678] {
            assert_eq!(
                mx.sqrt::<Double>(v.to_bits()),
                v.sqrt().to_bits(),
                "sqrt({v})"
            );
        }
        assert_eq!(mx.sqrt::<Single>(f32b(4.0)), f32b(2.0));
        assert_eq!(mx.sqrt::<Single>(f32b(-1.0)), 0xFFC0_0000);
        // Round toward zero and up differ for an inexact root.
        let mut down = Mx::new(CSR | (3 << mxcsr::RC_SHIFT));
        let mut up = Mx::new(CSR | (2 << mxcsr::RC_SHIFT));
        let d = down.sqrt::<Double>(2f64.to_bits());
        let u = up.sqrt::<Double>(2f64.to_bits());
        assert_eq!(u, d + 1);
        assert_eq!(down.flags, mxcsr::PE);
    }

    #[test]
    fn conversions() {
        let mut mx = Mx::new(CSR);
        assert_eq!(
            mx.to_int::<Single>(f32b(2.5), 32, Round::NearestTiesToEven),
            2
        );
        assert_eq!(
            mx.to_int::<Single>(f32b(-2.5), 32, Round::TowardZero),
            0xFFFF_FFFE
        );
        assert_eq!(
            mx.to_int::<Single>(f32b(3e9), 32, Round::TowardZero),
            0x8000_0000
        );
        assert_ne!(mx.flags & mxcsr::IE, 0);
        let mut mx = Mx::new(CSR);
        assert_eq!(
            mx.convert::<Single, Double>(0x7F80_0001),
            0x7FF8_0000_2000_0000
        );
        assert_eq!(mx.flags, mxcsr::IE);
        assert_eq!(mx.from_int::<Single>(16_777_217), f32b(16_777_216.0));
    }
}
