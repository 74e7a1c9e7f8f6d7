//! The numeric core of the x87: 80-bit values classified, unpacked into exact (sign,
//! integer significand, exponent) triples, rounded to a significand width (24/53/64 bits by
//! precision control, or a memory format) in any rounding mode with the x87 exception flags,
//! and the basic arithmetic. Sums, products and quotients are computed by `rustc_apfloat` in
//! IEEE quad precision (113-bit significand, the same exponent range as the 80-bit format)
//! rounded toward zero with the inexact result folded into the last bit ("round to odd"),
//! which makes the second rounding to at most 64 bits exact-as-if-once. Square roots use an
//! exact integer digit-by-digit root. Pure functions: no CPU state. This module holds the
//! classification, exact forms and rounding; [`arith`] the operations, [`convert`] the
//! integer / IEEE / f64 conversions.

mod arith;
mod convert;
pub use arith::*;
pub use convert::*;

use crane86_x86::fpu::{fcw, fsw};
use crane86_x86::F80;
use rustc_apfloat::ieee::Quad;
use rustc_apfloat::{Float, Round, Status};

/// Exponent bias of the 80-bit (and quad) format.
pub const BIAS: i32 = 16383;
/// Unmasked overflow/underflow scale the exponent by this (SDM Vol. 1 4.9.1.4/5).
const WRAP_BIAS: i32 = 24576;

/// The rounding rules of one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Env {
    /// Significand width the result is rounded to.
    pub precision: u32,
    pub round: Round,
    /// Exception masks (FCW bits 0..5).
    pub masks: u16,
}

impl Env {
    /// The rules from a control word; `use_pc` applies precision control (only the basic
    /// arithmetic and FSQRT do), otherwise results have 64-bit significands.
    pub fn from_fcw(cw: u16, use_pc: bool) -> Env {
        let precision = if use_pc {
            match (cw & fcw::PC) >> fcw::PC_SHIFT {
                0 => 24,
                2 => 53,
                _ => 64,
            }
        } else {
            64
        };
        Env {
            precision,
            round: rounding(cw),
            masks: cw & fcw::MASKS,
        }
    }
}

/// The rounding mode selected by FCW.RC.
pub fn rounding(cw: u16) -> Round {
    match (cw & fcw::RC) >> fcw::RC_SHIFT {
        0 => Round::NearestTiesToEven,
        1 => Round::TowardNegative,
        2 => Round::TowardPositive,
        _ => Round::TowardZero,
    }
}

/// A result with the status-word bits it raised (exception flags, and C1 for "rounded up").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Res {
    pub value: F80,
    pub flags: u16,
}

impl Res {
    pub fn ok(value: F80) -> Res {
        Res { value, flags: 0 }
    }
    pub fn invalid() -> Res {
        Res {
            value: F80::INDEFINITE,
            flags: fsw::IE,
        }
    }
}

// ------------------------------------------------------------------ classification

pub fn is_unsupported(v: F80) -> bool {
    v.exponent() != 0 && v.signif & F80::INTEGER_BIT == 0
}
pub fn is_nan(v: F80) -> bool {
    v.exponent() == 0x7FFF && v.signif & F80::INTEGER_BIT != 0 && v.signif << 1 != 0
}
pub fn is_snan(v: F80) -> bool {
    is_nan(v) && v.signif & (1 << 62) == 0
}
pub fn is_inf(v: F80) -> bool {
    v.exponent() == 0x7FFF && v.signif == F80::INTEGER_BIT
}
pub fn is_zero(v: F80) -> bool {
    v.exponent() == 0 && v.signif == 0
}
pub fn is_denormal(v: F80) -> bool {
    v.exponent() == 0 && v.signif != 0
}
pub fn quiet(v: F80) -> F80 {
    F80::new(v.sign_exp, v.signif | (1 << 62))
}
pub fn infinity(sign: bool) -> F80 {
    F80::new(0x7FFF | if sign { 0x8000 } else { 0 }, F80::INTEGER_BIT)
}
pub fn zero(sign: bool) -> F80 {
    F80::new(if sign { 0x8000 } else { 0 }, 0)
}
pub fn negate(v: F80) -> F80 {
    F80::new(v.sign_exp ^ F80::SIGN, v.signif)
}
pub fn abs(v: F80) -> F80 {
    F80::new(v.sign_exp & !F80::SIGN, v.signif)
}

/// NaN operand rules (SDM Vol. 1 Table 4-7): IE for an SNaN; the QNaN of a QNaN/SNaN pair,
/// else the NaN with the larger significand, quieted. `None` when neither is a NaN.
pub fn propagate_nan(a: F80, b: F80) -> Option<Res> {
    let (na, nb) = (is_nan(a), is_nan(b));
    if !na && !nb {
        return None;
    }
    let flags = if is_snan(a) || is_snan(b) { fsw::IE } else { 0 };
    let pick = match (na, nb) {
        (true, false) => a,
        (false, true) => b,
        _ if is_snan(a) != is_snan(b) => {
            if is_snan(a) {
                b
            } else {
                a
            }
        }
        _ if (b.signif << 1) > (a.signif << 1) => b,
        _ => a,
    };
    Some(Res {
        value: quiet(pick),
        flags,
    })
}

/// The checks every arithmetic operation makes first: unsupported encodings and NaNs, then
/// the denormal-operand flag, returned as `Ok(DE)` when masked; an unmasked denormal operand
/// stops the operation with only DE reported. `Err` is the final result.
pub fn check_operands(ops: &[F80], masks: u16) -> Result<u16, Res> {
    if ops.iter().any(|&v| is_unsupported(v)) {
        return Err(Res::invalid());
    }
    let nan = match ops {
        [a] => propagate_nan(*a, *a),
        [a, b, ..] => propagate_nan(*a, *b),
        [] => None,
    };
    if let Some(r) = nan {
        return Err(r);
    }
    if !ops.iter().any(|&v| is_denormal(v)) {
        return Ok(0);
    }
    if masks & fsw::DE == 0 {
        return Err(Res {
            value: F80::INDEFINITE,
            flags: fsw::DE,
        });
    }
    Ok(fsw::DE)
}

// ------------------------------------------------------------------ exact forms

/// An exact finite value `(-1)^sign × mant × 2^exp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exact {
    pub sign: bool,
    pub mant: u128,
    pub exp: i32,
}

/// The exact value of a finite 80-bit number (denormals and pseudo-denormals included).
pub fn unpack(v: F80) -> Exact {
    let e = i32::from(v.exponent()).max(1);
    Exact {
        sign: v.sign(),
        mant: u128::from(v.signif),
        exp: e - BIAS - 63,
    }
}

/// The 80-bit value as an IEEE quad (exact for every finite value and infinities).
pub fn to_quad(v: F80) -> Quad {
    let sign = u128::from(v.sign()) << 127;
    let bits = if v.exponent() == 0x7FFF {
        0x7FFF_u128 << 112
    } else if v.exponent() == 0 {
        u128::from(v.signif) << 49
    } else {
        (u128::from(v.exponent()) << 112) | (u128::from(v.signif & !F80::INTEGER_BIT) << 49)
    };
    Quad::from_bits(sign | bits)
}

/// The exact value of a finite quad.
pub fn quad_exact(q: Quad) -> Exact {
    let bits = q.to_bits();
    let e = ((bits >> 112) & 0x7FFF) as i32;
    let frac = bits & ((1u128 << 112) - 1);
    Exact {
        sign: bits >> 127 != 0,
        mant: if e == 0 { frac } else { frac | (1 << 112) },
        exp: e.max(1) - BIAS - 112,
    }
}

fn bit_len(m: u128) -> i32 {
    128 - m.leading_zeros() as i32
}

/// The target of a rounding: significand width and exponent range of normal numbers.
#[derive(Clone, Copy, Debug)]
pub struct Format {
    pub precision: u32,
    pub emin: i32,
    pub emax: i32,
}

impl Format {
    pub const fn extended(precision: u32) -> Format {
        Format {
            precision,
            emin: -16382,
            emax: 16383,
        }
    }
    pub const SINGLE: Format = Format {
        precision: 24,
        emin: -126,
        emax: 127,
    };
    pub const DOUBLE: Format = Format {
        precision: 53,
        emin: -1022,
        emax: 1023,
    };
}

/// A rounded finite value: `mant × 2^exp` with `mant` < 2^precision, or an infinity.
#[derive(Clone, Copy, Debug)]
pub struct Rounded {
    pub sign: bool,
    pub mant: u128,
    pub exp: i32,
    pub infinite: bool,
    pub flags: u16,
}

/// Round `x` to `fmt` under `env` (rounding mode and masks), raising PE, UE, OE and C1
/// ("rounded up"). Unmasked overflow/underflow keep the full-precision significand and wrap
/// the exponent by 24576 (only meaningful for register destinations). Tininess is detected
/// after rounding to the target precision with an unbounded exponent.
pub fn round(x: Exact, fmt: Format, env: Env) -> Rounded {
    let p = fmt.precision as i32;
    let mut flags = 0;
    if x.mant == 0 {
        return Rounded {
            sign: x.sign,
            mant: 0,
            exp: 0,
            infinite: false,
            flags,
        };
    }
    let top = bit_len(x.mant) - 1 + x.exp;
    // Tiny: the result rounded to `p` bits with an unbounded exponent is below 2^emin
    // (SDM Vol. 1 4.9.1.5), so a carry up to exactly 2^emin is not tiny.
    let tiny = top < fmt.emin && {
        let lsb = top - p + 1;
        let (q, _, _) = round_at(x, lsb, env.round);
        bit_len(q) - 1 + lsb < fmt.emin
    };
    // Unmasked overflow/underflow wrap the exponent by 24576 for register (80-bit) results
    // when that brings it into range; memory stores are suppressed instead, and results
    // beyond the wrap become infinity or zero.
    let wraps = fmt.emax == Format::extended(64).emax;
    let underflow_unmasked = env.masks & fsw::UE == 0;
    let wrap_under = underflow_unmasked && (!wraps || top + WRAP_BIAS >= fmt.emin);
    if tiny && underflow_unmasked && !wrap_under {
        // Beyond the unmasked wrap range: zero in every rounding mode (observed with FSCALE).
        return Rounded {
            sign: x.sign,
            mant: 0,
            exp: 0,
            infinite: false,
            flags: fsw::UE | fsw::PE,
        };
    }
    let mut lsb = top - p + 1;
    if top < fmt.emin && !wrap_under {
        lsb = lsb.max(fmt.emin - p + 1);
    }
    let (mut mant, inexact, up) = round_at(x, lsb, env.round);
    if mant >> p != 0 {
        mant >>= 1;
        lsb += 1;
    }
    if inexact {
        flags |= fsw::PE;
        if up {
            flags |= fsw::C1;
        }
    }
    if tiny && (inexact || underflow_unmasked) {
        flags |= fsw::UE;
        if wrap_under && wraps {
            lsb += WRAP_BIAS;
        }
    }
    let mut r = Rounded {
        sign: x.sign,
        mant,
        exp: lsb,
        infinite: false,
        flags,
    };
    let result_top = bit_len(mant) - 1 + lsb;
    if mant != 0 && result_top > fmt.emax {
        r.flags |= fsw::OE;
        let overflow_unmasked = env.masks & fsw::OE == 0;
        if overflow_unmasked && (!wraps || result_top - WRAP_BIAS <= fmt.emax) {
            if wraps {
                r.exp -= WRAP_BIAS;
            }
            return r;
        }
        r.flags |= fsw::PE;
        // Beyond the unmasked wrap range the hardware delivers infinity in every rounding
        // mode (observed with FSCALE).
        let to_inf = overflow_unmasked
            || match env.round {
                Round::NearestTiesToEven => true,
                Round::TowardPositive => !x.sign,
                Round::TowardNegative => x.sign,
                _ => false,
            };
        r.flags &= !fsw::C1;
        if to_inf {
            r.infinite = true;
            r.flags |= fsw::C1;
        } else {
            r.mant = (1u128 << p) - 1;
            r.exp = fmt.emax - p + 1;
        }
    }
    r
}

/// `x` rounded to a multiple of 2^`lsb` in mode `round`: the multiple count, whether it was
/// inexact, and whether it was rounded away from zero.
fn round_at(x: Exact, lsb: i32, round: Round) -> (u128, bool, bool) {
    if lsb <= x.exp {
        return (x.mant << (x.exp - lsb) as u32, false, false);
    }
    let shift = (lsb - x.exp) as u32;
    let (q, rem, half) = if shift > 128 {
        // Below half an ulp even for a full 128-bit significand.
        (0, x.mant, u128::MAX)
    } else if shift == 128 {
        (0, x.mant, 1u128 << 127)
    } else {
        (
            x.mant >> shift,
            x.mant & ((1u128 << shift) - 1),
            1u128 << (shift - 1),
        )
    };
    let away = match round {
        Round::NearestTiesToEven => rem > half || (rem == half && q & 1 == 1),
        Round::TowardPositive => rem != 0 && !x.sign,
        Round::TowardNegative => rem != 0 && x.sign,
        _ => false,
    };
    (q + u128::from(away), rem != 0, away)
}

/// Pack a rounded value into the 80-bit format.
pub fn pack80(r: &Rounded) -> F80 {
    let sign = if r.sign { F80::SIGN } else { 0 };
    if r.infinite {
        return infinity(r.sign);
    }
    if r.mant == 0 {
        return F80::new(sign, 0);
    }
    let top = bit_len(r.mant) - 1 + r.exp;
    let biased = top + BIAS;
    if biased >= 1 {
        let signif = (r.mant << (63 - (bit_len(r.mant) - 1)) as u32) as u64;
        F80::new(sign | (biased.min(0x7FFE) as u16), signif)
    } else {
        let shift = r.exp + BIAS + 62;
        F80::new(sign, (r.mant << shift.max(0) as u32) as u64)
    }
}

/// Pack a rounded value into an IEEE interchange format with `exp_bits` / `frac_bits`.
pub fn pack_ieee(r: &Rounded, exp_bits: u32, frac_bits: u32) -> u64 {
    let sign = u64::from(r.sign) << (exp_bits + frac_bits);
    let max_exp = (1u64 << exp_bits) - 1;
    if r.infinite {
        return sign | (max_exp << frac_bits);
    }
    if r.mant == 0 {
        return sign;
    }
    let bias = (1i32 << (exp_bits - 1)) - 1;
    let top = bit_len(r.mant) - 1 + r.exp;
    let biased = top + bias;
    if biased >= 1 {
        let frac = ((r.mant << (frac_bits as i32 - (bit_len(r.mant) - 1)) as u32) as u64)
            & ((1u64 << frac_bits) - 1);
        sign | ((biased as u64) << frac_bits) | frac
    } else {
        let shift = r.exp + bias - 1 + frac_bits as i32;
        sign | (r.mant << shift.max(0) as u32) as u64
    }
}

/// Round an exact value into an 80-bit result.
pub fn round80(x: Exact, env: Env) -> Res {
    let r = round(x, Format::extended(env.precision), env);
    Res {
        value: pack80(&r),
        flags: r.flags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(precision: u32, round: Round) -> Env {
        Env {
            precision,
            round,
            masks: fcw::MASKS,
        }
    }
    const ONE: F80 = F80::new(0x3FFF, 1 << 63);
    const THREE: F80 = F80::new(0x4000, 0xC000_0000_0000_0000);

    #[test]
    fn one_third_in_each_precision_and_mode() {
        let near = arith(Op::Div, ONE, THREE, env(64, Round::NearestTiesToEven));
        assert_eq!(near.value, F80::new(0x3FFD, 0xAAAA_AAAA_AAAA_AAAB));
        assert_eq!(near.flags, fsw::PE | fsw::C1);
        let chop = arith(Op::Div, ONE, THREE, env(64, Round::TowardZero));
        assert_eq!(chop.value, F80::new(0x3FFD, 0xAAAA_AAAA_AAAA_AAAA));
        assert_eq!(chop.flags, fsw::PE);
        let single = arith(Op::Div, ONE, THREE, env(24, Round::NearestTiesToEven));
        assert_eq!(single.value.signif, 0xAAAA_AB00_0000_0000);
        let double = arith(Op::Div, ONE, THREE, env(53, Round::NearestTiesToEven));
        assert_eq!(double.value.signif, 0xAAAA_AAAA_AAAA_A800);
        assert_eq!(
            f64::from_bits(
                to_ieee(
                    double.value,
                    Format::DOUBLE,
                    11,
                    52,
                    env(53, Round::NearestTiesToEven)
                )
                .0
            ),
            1.0 / 3.0
        );
    }

    #[test]
    fn specials() {
        let inf = infinity(false);
        assert_eq!(
            arith(Op::Sub, inf, inf, env(64, Round::NearestTiesToEven)),
            Res::invalid()
        );
        let z = arith(Op::Div, ONE, F80::ZERO, env(64, Round::NearestTiesToEven));
        assert_eq!((z.value, z.flags), (inf, fsw::ZE));
        let zero_down = arith(Op::Sub, ONE, ONE, env(64, Round::TowardNegative));
        assert_eq!(zero_down.value, zero(true));
        assert_eq!(
            sqrt(F80::new(0x4000, 1 << 63), env(64, Round::NearestTiesToEven)).value,
            F80::new(0x3FFF, 0xB504_F333_F9DE_6484)
        );
        assert_eq!(
            sqrt(
                F80::new(0x4002, 0x9000_0000_0000_0000),
                env(64, Round::NearestTiesToEven)
            ),
            Res::ok(THREE)
        );
        assert_eq!(from_int(-5), F80::new(0xC001, 0xA000_0000_0000_0000));
        assert_eq!(to_int(THREE, 16, Round::NearestTiesToEven), Ok((3, 0)));
        assert_eq!(from_f64(1.5), F80::new(0x3FFF, 0xC000_0000_0000_0000));
        assert_eq!(to_f64(F80::new(0x3FFD, 0xAAAA_AAAA_AAAA_AAAB)), 1.0 / 3.0);
    }
}
