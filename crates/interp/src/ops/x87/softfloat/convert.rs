//! Conversions between the 80-bit format and integers, IEEE single/double, and host f64.

use super::*;
use rustc_apfloat::{Float, Round};

/// An exact integer as an 80-bit value (always representable up to 64 bits).
pub fn from_int(v: i64) -> F80 {
    let x = Exact {
        sign: v < 0,
        mant: u128::from(v.unsigned_abs()),
        exp: 0,
    };
    round80(
        x,
        Env {
            precision: 64,
            round: Round::NearestTiesToEven,
            masks: fcw::MASKS,
        },
    )
    .value
}

/// Convert to a signed integer of `bits` width in `round` mode. `Err(flags)` means invalid
/// (NaN, infinity, out of range): the caller stores the integer indefinite when IM is set.
/// Denormal operands raise no DE here (FIST/FBSTP list only #IA and #P).
pub fn to_int(a: F80, bits: u32, round: Round) -> Result<(i64, u16), u16> {
    if is_unsupported(a) || is_nan(a) || is_inf(a) {
        return Err(fsw::IE);
    }
    let r = to_quad(a).round_to_integral(round);
    let v = r.value.to_i128_r(128, Round::TowardZero, &mut true).value;
    let min = -(1i128 << (bits - 1));
    if v < min || v > -min - 1 {
        return Err(fsw::IE);
    }
    let mut flags = 0;
    if r.status.contains(Status::INEXACT) {
        flags |= fsw::PE;
        if r.value.abs() > to_quad(abs(a)) {
            flags |= fsw::C1;
        }
    }
    Ok((v as i64, flags))
}

/// Load an IEEE single/double (`exp_bits`, `frac_bits`) exactly; SNaNs raise IE and are
/// quieted, denormals raise DE.
pub fn from_ieee(bits: u64, exp_bits: u32, frac_bits: u32) -> Res {
    let sign = (bits >> (exp_bits + frac_bits)) & 1 != 0;
    let e = ((bits >> frac_bits) & ((1 << exp_bits) - 1)) as i32;
    let frac = bits & ((1u64 << frac_bits) - 1);
    let max_exp = (1 << exp_bits) - 1;
    let sign_bit = if sign { F80::SIGN } else { 0 };
    if e == max_exp {
        if frac == 0 {
            return Res::ok(infinity(sign));
        }
        let signif = F80::INTEGER_BIT | (frac << (63 - frac_bits));
        let v = F80::new(sign_bit | 0x7FFF, signif);
        let flags = if is_snan(v) { fsw::IE } else { 0 };
        return Res {
            value: quiet(v),
            flags,
        };
    }
    if e == 0 && frac == 0 {
        return Res::ok(zero(sign));
    }
    let bias = (1 << (exp_bits - 1)) - 1;
    let x = Exact {
        sign,
        mant: u128::from(if e == 0 {
            frac
        } else {
            frac | (1 << frac_bits)
        }),
        exp: e.max(1) - bias - frac_bits as i32,
    };
    let env = Env {
        precision: 64,
        round: Round::NearestTiesToEven,
        masks: fcw::MASKS,
    };
    Res {
        value: round80(x, env).value,
        flags: if e == 0 { fsw::DE } else { 0 },
    }
}

/// Store to IEEE single/double: rounds under `env`, NaNs keep their top payload bits.
/// Returns the bits and flags.
pub fn to_ieee(a: F80, fmt: Format, exp_bits: u32, frac_bits: u32, env: Env) -> (u64, u16) {
    let sign = u64::from(a.sign()) << (exp_bits + frac_bits);
    let max_exp = (1u64 << exp_bits) - 1;
    if is_unsupported(a) {
        let (indefinite, _) = to_ieee(F80::INDEFINITE, fmt, exp_bits, frac_bits, env);
        return (indefinite, fsw::IE);
    }
    if is_nan(a) {
        let flags = if is_snan(a) { fsw::IE } else { 0 };
        let frac = (quiet(a).signif << 1) >> (64 - frac_bits);
        return (sign | (max_exp << frac_bits) | frac, flags);
    }
    if is_inf(a) {
        return (sign | (max_exp << frac_bits), 0);
    }
    // FST/FSTP report no denormal-operand exception. An unmasked overflow or underflow
    // suppresses the store and is reported alone.
    let r = round(unpack(a), fmt, env);
    let unmasked = r.flags & (fsw::OE | fsw::UE) & !env.masks;
    if unmasked != 0 {
        return (0, unmasked);
    }
    (pack_ieee(&r, exp_bits, frac_bits), r.flags)
}

/// The 80-bit value as an f64 (round to nearest), for the transcendental functions.
pub fn to_f64(a: F80) -> f64 {
    let env = Env {
        precision: 53,
        round: Round::NearestTiesToEven,
        masks: fcw::MASKS,
    };
    f64::from_bits(to_ieee(a, Format::DOUBLE, 11, 52, env).0)
}

/// An f64 as an exact 80-bit value.
pub fn from_f64(v: f64) -> F80 {
    from_ieee(v.to_bits(), 11, 52).value
}
