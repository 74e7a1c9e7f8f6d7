//! x87 transcendental instructions: FSIN, FCOS, FSINCOS, FPTAN, FPATAN, F2XM1, FYL2X and
//! FYL2XP1.
//!
//! Precision limitation: these are evaluated with the host's f64 library on the operand
//! rounded to double precision, so results are good to about double precision (53 bits),
//! not to the last ulp of the 80-bit format that real x87 hardware delivers (within 1 ulp),
//! and operands or results outside the f64 range saturate to infinity/zero. Range reduction
//! follows the x87 contract: for |x| >= 2^63, FSIN/FCOS/FSINCOS/FPTAN leave the operand
//! unchanged and set C2 ("out of range"); otherwise C2 is cleared. The reduction itself is
//! the host library's (exact for f64 operands), not the x87's 66-bit approximation of pi.

use super::softfloat::{self, Res};
use super::UNDERFLOW;
use crate::cpu::Cpu;
use crate::exec::Handler;
use crane86_x86::fpu::fsw;
use crane86_x86::{Exception, F80};
use iced_x86::{Instruction, Mnemonic};

pub fn handler(i: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match i.mnemonic() {
        Fsin => trig::<SIN>,
        Fcos => trig::<COS>,
        Fptan => trig::<TAN>,
        Fsincos => trig::<SINCOS>,
        Fpatan => binary::<ATAN>,
        Fyl2x => binary::<YL2X>,
        Fyl2xp1 => binary::<YL2XP1>,
        F2xm1 => f2xm1,
        _ => return None,
    })
}

const SIN: u8 = 0;
const COS: u8 = 1;
const TAN: u8 = 2;
const SINCOS: u8 = 3;
const ATAN: u8 = 0;
const YL2X: u8 = 1;
const YL2XP1: u8 = 2;

/// An f64 result as an 80-bit value, inexact unless it is an exact zero.
fn host_result(v: f64, de: u16) -> Res {
    if v.is_nan() {
        return Res::invalid();
    }
    let inexact = if v == 0.0 || v.is_infinite() {
        0
    } else {
        fsw::PE
    };
    Res {
        value: softfloat::from_f64(v),
        flags: de | inexact,
    }
}

/// |x| >= 2^63: outside the range the trigonometric instructions accept.
fn out_of_range(v: F80) -> bool {
    v.exponent() >= 0x3FFF + 63 && v.exponent() != 0x7FFF
}

fn set_c2(cpu: &mut Cpu, on: bool) {
    let w = &mut cpu.s.fpu.fsw;
    *w = (*w & !fsw::C2) | if on { fsw::C2 } else { 0 };
}

fn trig<const F: u8>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_begin(i)?;
    let pushes = matches!(F, TAN | SINCOS);
    let Some(v) = cpu.x87_get(0) else {
        if cpu.x87_store(0, UNDERFLOW) && pushes {
            cpu.x87_push_raw(F80::INDEFINITE);
        }
        return Ok(());
    };
    if pushes && !cpu.s.fpu.is_empty(7) {
        if cpu.x87_flags(fsw::IE | fsw::SF | fsw::C1) {
            cpu.s.fpu.set_st(0, F80::INDEFINITE);
            cpu.x87_push_raw(F80::INDEFINITE);
        }
        return Ok(());
    }
    if out_of_range(v) {
        cpu.x87_flags(0);
        set_c2(cpu, true);
        return Ok(());
    }
    let (first, second) = match softfloat::check_operands(&[v], cpu.s.fpu.fcw & fsw::EXCEPTIONS) {
        Err(r) => (r, r),
        Ok(_) if softfloat::is_inf(v) => (Res::invalid(), Res::invalid()),
        Ok(de) => {
            let x = softfloat::to_f64(v);
            match F {
                SIN => (host_result(x.sin(), de), UNDERFLOW),
                COS => (host_result(x.cos(), de), UNDERFLOW),
                TAN => (host_result(x.tan(), de), Res::ok(softfloat::from_int(1))),
                _ => (host_result(x.sin(), de), host_result(x.cos(), de)),
            }
        }
    };
    let flags = first.flags | if pushes { second.flags } else { 0 };
    if cpu.x87_flags(flags) {
        cpu.s.fpu.set_st(0, first.value);
        if pushes {
            cpu.x87_push_raw(second.value);
        }
    }
    set_c2(cpu, false);
    Ok(())
}

/// Two-operand functions of ST(1) (y) and ST(0) (x); the result replaces ST(1) and the stack
/// is popped.
fn binary<const F: u8>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_begin(i)?;
    let r = match (cpu.x87_get(0), cpu.x87_get(1)) {
        (Some(x), Some(y)) => {
            match softfloat::check_operands(&[x, y], cpu.s.fpu.fcw & fsw::EXCEPTIONS) {
                Err(r) => r,
                Ok(de) => {
                    let (xf, yf) = (softfloat::to_f64(x), softfloat::to_f64(y));
                    match F {
                        ATAN => host_result(yf.atan2(xf), de),
                        YL2X => {
                            if xf < 0.0 || (xf == 0.0 && (yf == 0.0 || yf.is_nan())) {
                                Res::invalid()
                            } else if xf == 0.0 && !yf.is_infinite() {
                                Res {
                                    value: softfloat::infinity(!y.sign()),
                                    flags: fsw::ZE | de,
                                }
                            } else {
                                host_result(yf * xf.log2(), de)
                            }
                        }
                        _ => host_result(yf * xf.ln_1p() / std::f64::consts::LN_2, de),
                    }
                }
            }
        }
        _ => UNDERFLOW,
    };
    if cpu.x87_store(1, r) {
        cpu.x87_pop();
    }
    Ok(())
}

fn f2xm1(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_begin(i)?;
    let r = match cpu.x87_get(0) {
        Some(v) => match softfloat::check_operands(&[v], cpu.s.fpu.fcw & fsw::EXCEPTIONS) {
            Err(r) => r,
            Ok(_) if softfloat::is_inf(v) => Res::ok(if v.sign() {
                softfloat::negate(softfloat::from_int(1))
            } else {
                v
            }),
            Ok(_) if softfloat::is_zero(v) => Res::ok(v),
            Ok(de) => {
                let x = softfloat::to_f64(v);
                // exp2 is exact at the integers; exp_m1 keeps small results accurate.
                let r = if x.abs() >= 0.5 {
                    x.exp2() - 1.0
                } else {
                    (x * std::f64::consts::LN_2).exp_m1()
                };
                host_result(r, de)
            }
        },
        None => UNDERFLOW,
    };
    cpu.x87_store(0, r);
    Ok(())
}
