//! Basic arithmetic on 80-bit values: FADD/FSUB/FMUL/FDIV through IEEE quad precision
//! rounded toward zero to odd (operands scaled into the middle of the exponent range so the
//! quad step never overflows or underflows), an exact integer square root, and rounding to
//! an integral value.

use super::*;
use rustc_apfloat::ieee::Quad;
use rustc_apfloat::{Float, Round, Status};

/// A quad result computed toward zero, as an exact form whose last bit records inexactness
/// (round to odd). Infinities and exact zeros come back as `Err` with their 80-bit encoding.
fn odd_result(r: rustc_apfloat::StatusAnd<Quad>) -> Result<Exact, F80> {
    let q = r.value;
    if q.is_infinite() {
        return Err(infinity(q.is_negative()));
    }
    if q.is_zero() {
        return Err(zero(q.is_negative()));
    }
    let mut x = quad_exact(q);
    if r.status.contains(Status::INEXACT) {
        x.mant |= 1;
    }
    Ok(x)
}

/// The exact value with the significand normalized so bit 63 is set.
pub fn normalized(v: F80) -> Exact {
    let mut x = unpack(v);
    let shift = x.mant.leading_zeros().saturating_sub(64);
    x.mant <<= shift;
    x.exp -= shift as i32;
    x
}

/// `a op b` for finite nonzero operands in exact integer arithmetic: products are exact in
/// 128 bits; quotients carry 97 bits plus a sticky bit; sums align the larger operand by up
/// to 62 bits and fold whatever of the smaller one falls below into a sticky bit. The result
/// is exact or rounded toward zero to odd, with at least two bits beyond 64 significant
/// bits, so the final rounding is correct. An exact zero sum comes back as `Err`.
fn finite_op(op: Op, a: F80, b: F80) -> Result<Exact, F80> {
    let (xa, xb) = (normalized(a), normalized(b));
    match op {
        Op::Mul => Ok(Exact {
            sign: xa.sign != xb.sign,
            mant: xa.mant * xb.mant,
            exp: xa.exp + xb.exp,
        }),
        Op::Div => {
            let num = xa.mant << 64;
            let (q1, r1) = (num / xb.mant, num % xb.mant);
            let num2 = r1 << 32;
            let (q2, r2) = (num2 / xb.mant, num2 % xb.mant);
            Ok(Exact {
                sign: xa.sign != xb.sign,
                mant: (((q1 << 32) | q2) << 1) | u128::from(r2 != 0),
                exp: xa.exp - xb.exp - 97,
            })
        }
        Op::Add | Op::Sub => {
            let b_sign = xb.sign != (op == Op::Sub);
            let a_larger = (xa.exp, xa.mant) >= (xb.exp, xb.mant);
            let ((big, big_sign), (small, small_sign)) = if a_larger {
                ((xa, xa.sign), (xb, b_sign))
            } else {
                ((xb, b_sign), (xa, xa.sign))
            };
            let d = (big.exp - small.exp) as u32;
            let shift = d.min(62);
            let rest = d - shift;
            let big_aligned = big.mant << shift;
            let (small_aligned, sticky) = if rest >= 128 {
                (0, true)
            } else {
                (small.mant >> rest, small.mant & ((1u128 << rest) - 1) != 0)
            };
            let (x, y, exp) = if sticky {
                (
                    big_aligned << 1,
                    (small_aligned << 1) | 1,
                    small.exp + rest as i32 - 1,
                )
            } else {
                (big_aligned, small_aligned, small.exp + rest as i32)
            };
            let mant = if big_sign == small_sign { x + y } else { x - y };
            if mant == 0 {
                return Err(zero(false));
            }
            Ok(Exact {
                sign: big_sign,
                mant,
                exp,
            })
        }
    }
}

// ------------------------------------------------------------------ arithmetic

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

/// `a op b` with the x87 special-case rules and exception flags.
pub fn arith(op: Op, a: F80, b: F80, env: Env) -> Res {
    let finite_nonzero = |v: F80| !is_zero(v) && v.exponent() != 0x7FFF;
    let supported = !is_unsupported(a) && !is_unsupported(b);
    if op == Op::Div && supported && is_zero(b) && finite_nonzero(a) {
        // Divide-by-zero outranks the denormal-operand exception (SDM Vol. 1 4.9.2).
        return Res {
            value: infinity(a.sign() != b.sign()),
            flags: fsw::ZE,
        };
    }
    let de = match check_operands(&[a, b], env.masks) {
        Ok(de) => de,
        Err(r) => return r,
    };
    let (qa, qb) = (to_quad(a), to_quad(b));
    let r = if finite_nonzero(a) && finite_nonzero(b) {
        finite_op(op, a, b)
    } else {
        let r = match op {
            Op::Add => qa.add_r(qb, Round::TowardZero),
            Op::Sub => qa.sub_r(qb, Round::TowardZero),
            Op::Mul => qa.mul_r(qb, Round::TowardZero),
            Op::Div => qa.div_r(qb, Round::TowardZero),
        };
        if r.status.contains(Status::INVALID_OP) {
            return Res::invalid();
        }
        if r.status.contains(Status::DIV_BY_ZERO) {
            // Divide-by-zero outranks the denormal-operand exception (SDM Vol. 1 4.9.2).
            return Res {
                value: infinity(r.value.is_negative()),
                flags: fsw::ZE,
            };
        }
        odd_result(r)
    };
    let flags = de;
    match r {
        Ok(x) => {
            let mut res = round80(x, env);
            res.flags |= flags;
            res
        }
        Err(mut special) => {
            // x + (-x) and (-0) + (+0): +0 except in round-down mode (IEEE 754 6.3).
            let effective_sub = matches!(op, Op::Add) == (a.sign() != b.sign());
            if is_zero(special) && matches!(op, Op::Add | Op::Sub) && effective_sub {
                special = zero(env.round == Round::TowardNegative);
            }
            Res {
                value: special,
                flags,
            }
        }
    }
}

/// Square root, correctly rounded.
pub fn sqrt(a: F80, env: Env) -> Res {
    // A negative operand is invalid before the denormal check (SDM Vol. 1 4.9.2).
    if a.sign() && !is_zero(a) && !is_nan(a) && !is_unsupported(a) {
        return Res::invalid();
    }
    let de = match check_operands(&[a], env.masks) {
        Ok(de) => de,
        Err(r) => return r,
    };
    if is_zero(a) || is_inf(a) {
        return Res {
            value: a,
            flags: de,
        };
    }
    let mut x = unpack(a);
    while bit_len(x.mant) < 63 {
        x.mant <<= 2;
        x.exp -= 2;
    }
    if x.exp & 1 != 0 {
        x.mant <<= 1;
        x.exp -= 1;
    }
    // 33 radicand bit pairs + 33 zero pairs: a 66-bit root, then the remainder is sticky.
    let pairs = 66u32;
    let (mut root, mut rem) = (0u128, 0u128);
    for k in (0..pairs).rev() {
        let pair = if k >= 33 {
            (x.mant >> (2 * (k - 33))) & 3
        } else {
            0
        };
        rem = (rem << 2) | pair;
        let trial = (root << 2) | 1;
        if rem >= trial {
            rem -= trial;
            root = (root << 1) | 1;
        } else {
            root <<= 1;
        }
    }
    let exact = Exact {
        sign: false,
        mant: (root << 1) | u128::from(rem != 0),
        exp: (x.exp - 66) / 2 - 1,
    };
    let mut r = round80(exact, env);
    r.flags |= de;
    r
}

/// Round to an integral value in the current rounding mode (FRNDINT).
pub fn round_to_integral(a: F80, env: Env) -> Res {
    let de = match check_operands(&[a], env.masks) {
        Ok(de) => de,
        Err(r) => return r,
    };
    if is_inf(a) || is_zero(a) {
        return Res {
            value: a,
            flags: de,
        };
    }
    let r = to_quad(a).round_to_integral(env.round);
    // The integral value of a 64-bit-significand input is exact in quad.
    let value = if r.value.is_zero() {
        zero(a.sign())
    } else {
        round80(
            quad_exact(r.value),
            Env {
                precision: 64,
                ..env
            },
        )
        .value
    };
    let mut flags = de;
    if r.status.contains(Status::INEXACT) {
        flags |= fsw::PE;
        if abs_greater(value, a) {
            flags |= fsw::C1;
        }
    }
    Res { value, flags }
}

/// |a| > |b| for finite values.
fn abs_greater(a: F80, b: F80) -> bool {
    to_quad(abs(a)) > to_quad(abs(b))
}
