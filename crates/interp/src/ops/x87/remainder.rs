//! Exact x87 scaling and remainder operations: FPREM and FPREM1 (partial remainder with the
//! three low quotient bits in C0/C3/C1 and C2 = incomplete when the exponents differ by 64 or
//! more), FSCALE and FXTRACT.

use super::softfloat::{self, normalized, Env, Exact, Res};
use super::UNDERFLOW;
use crate::cpu::Cpu;
use crate::exec::Handler;
use crane86_x86::fpu::fsw;
use crane86_x86::{Exception, F80};
use iced_x86::{Instruction, Mnemonic};

pub fn handler(i: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match i.mnemonic() {
        Fprem => fprem::<false>,
        Fprem1 => fprem::<true>,
        Fscale => fscale,
        Fxtract => fxtract,
        _ => return None,
    })
}

/// How far an incomplete partial remainder reduces the exponent difference at once
/// (the SDM allows any N in 32..=63).
const PARTIAL_STEP: i32 = 63;

/// The partial remainder of `a` by `b`: the result, the quotient's low bits, and whether the
/// reduction is incomplete (C2).
pub fn partial_remainder(a: F80, b: F80, ieee: bool, env: Env) -> (Res, u64, bool) {
    // NaNs and unsupported encodings, then the invalid cases, outrank the denormal check.
    let de = match softfloat::check_operands(&[a, b], fsw::DE) {
        Ok(de) => de,
        Err(r) => return (r, 0, false),
    };
    if softfloat::is_inf(a) || softfloat::is_zero(b) {
        return (Res::invalid(), 0, false);
    }
    if de != 0 && env.masks & fsw::DE == 0 {
        let only_de = Res {
            value: a,
            flags: fsw::DE,
        };
        return (only_de, 0, false);
    }
    // ST(0) kept (zero dividend, infinite divisor, |ST(0)| < |ST(1)|) is still an exact
    // result that may be a tiny denormal (UE when unmasked).
    let unchanged = |a: F80| {
        let mut r = if softfloat::is_zero(a) {
            Res::ok(a)
        } else {
            let env64 = Env {
                precision: 64,
                ..env
            };
            softfloat::round80(softfloat::unpack(a), env64)
        };
        r.flags |= de;
        (r, 0, false)
    };
    if softfloat::is_zero(a) || softfloat::is_inf(b) {
        return unchanged(a);
    }
    let (xa, xb) = (normalized(a), normalized(b));
    let d = xa.exp - xb.exp;
    let smallest = if ieee { -1 } else { 0 };
    if d < smallest {
        return unchanged(a);
    }
    let incomplete = d >= 64;
    let k = if incomplete { PARTIAL_STEP } else { d };
    let (num, den, unit) = if k >= 0 {
        (xa.mant << k, xb.mant, xa.exp - k)
    } else {
        (xa.mant, xb.mant << 1, xa.exp)
    };
    let (mut q, mut rem) = (num / den, num % den);
    let mut sign = xa.sign;
    if ieee && !incomplete && (2 * rem > den || (2 * rem == den && q & 1 == 1)) {
        q += 1;
        rem = den - rem;
        sign = !sign;
    }
    if rem == 0 {
        sign = xa.sign;
    }
    let exact = Exact {
        sign,
        mant: rem,
        exp: unit,
    };
    let mut r = softfloat::round80(
        exact,
        Env {
            precision: 64,
            ..env
        },
    );
    r.flags |= de;
    (r, q as u64, incomplete)
}

fn fprem<const IEEE: bool>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_begin(i)?;
    let (r, q, incomplete) = match (cpu.x87_get(0), cpu.x87_get(1)) {
        (Some(a), Some(b)) => partial_remainder(a, b, IEEE, cpu.x87_env(false)),
        _ => (UNDERFLOW, 0, false),
    };
    let f = r.flags & !fsw::C1;
    if cpu.x87_store(
        0,
        Res {
            value: r.value,
            flags: f,
        },
    ) && f & fsw::IE == 0
    {
        let mut cc = if incomplete { fsw::C2 } else { 0 };
        if !incomplete {
            cc |= if q & 4 != 0 { fsw::C0 } else { 0 };
            cc |= if q & 2 != 0 { fsw::C3 } else { 0 };
            cc |= if q & 1 != 0 { fsw::C1 } else { 0 };
        }
        let w = &mut cpu.s.fpu.fsw;
        *w = (*w & !fsw::CC) | cc;
    }
    Ok(())
}

/// ST(0) × 2^trunc(ST(1)).
pub fn scale(a: F80, b: F80, env: Env) -> Res {
    let de = match softfloat::check_operands(&[a, b], env.masks) {
        Ok(de) => de,
        Err(r) => return r,
    };
    if softfloat::is_inf(b) {
        return match (b.sign(), softfloat::is_zero(a), softfloat::is_inf(a)) {
            (false, true, _) | (true, _, true) => Res::invalid(),
            (false, _, _) => Res {
                value: softfloat::infinity(a.sign()),
                flags: de,
            },
            (true, _, _) => Res {
                value: softfloat::zero(a.sign()),
                flags: de,
            },
        };
    }
    if softfloat::is_inf(a) || softfloat::is_zero(a) {
        return Res {
            value: a,
            flags: de,
        };
    }
    let n = match softfloat::to_int(b, 64, rustc_apfloat::Round::TowardZero) {
        Ok((n, _)) => n,
        Err(_) => {
            if b.sign() {
                i64::MIN
            } else {
                i64::MAX
            }
        }
    };
    let mut x = softfloat::unpack(a);
    x.exp += n.clamp(-70_000, 70_000) as i32;
    let mut r = softfloat::round80(
        x,
        Env {
            precision: 64,
            ..env
        },
    );
    r.flags |= de;
    r
}

fn fscale(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_begin(i)?;
    let r = match (cpu.x87_get(0), cpu.x87_get(1)) {
        (Some(a), Some(b)) => scale(a, b, cpu.x87_env(false)),
        _ => UNDERFLOW,
    };
    cpu.x87_store(0, r);
    Ok(())
}

fn fxtract(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_begin(i)?;
    let Some(v) = cpu.x87_get(0) else {
        if cpu.x87_store(0, UNDERFLOW) {
            cpu.x87_push(Res::ok(F80::INDEFINITE));
        }
        return Ok(());
    };
    if !cpu.s.fpu.is_empty(7) {
        cpu.x87_push(Res::ok(F80::INDEFINITE));
        return Ok(());
    }
    let (exponent, significand) =
        match softfloat::check_operands(&[v], cpu.s.fpu.fcw & fsw::EXCEPTIONS) {
            Err(r) => (r, r),
            Ok(_) if softfloat::is_zero(v) => (
                Res {
                    value: softfloat::infinity(true),
                    flags: fsw::ZE,
                },
                Res::ok(v),
            ),
            Ok(_) if softfloat::is_inf(v) => (Res::ok(softfloat::infinity(false)), Res::ok(v)),
            Ok(de) => {
                let x = normalized(v);
                let e = x.exp + 63;
                let sig = F80::new(0x3FFF | (v.sign_exp & F80::SIGN), x.mant as u64);
                (
                    Res {
                        value: softfloat::from_int(i64::from(e)),
                        flags: de,
                    },
                    Res::ok(sig),
                )
            }
        };
    if cpu.x87_store(0, exponent) {
        cpu.x87_push_raw(significand.value);
    }
    Ok(())
}
