//! x87 data transfer: FLD/FST/FSTP (m32, m64, m80, ST(i)), FILD/FIST/FISTP/FISTTP (m16,
//! m32, m64), FBLD/FBSTP (18-digit packed BCD), FXCH, FCMOVcc and the constant loads
//! FLD1/FLDZ/FLDPI/FLDL2E/FLDL2T/FLDLG2/FLDLN2 (whose last bit follows the rounding mode).

use super::softfloat::{self, Format, Res};
use super::{has_mem, st_op, UNDERFLOW};
use crate::cpu::Cpu;
use crate::exec::Handler;
use crane86_x86::fpu::fsw;
use crane86_x86::{flags, Exception, F80};
use iced_x86::{Instruction, MemorySize, Mnemonic};
use rustc_apfloat::Round;

pub fn handler(i: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match i.mnemonic() {
        Fld | Fild | Fbld => fld,
        Fst => fst::<false>,
        Fstp | Fstpnce => fst::<true>,
        Fist => fist::<false, false>,
        Fistp => fist::<true, false>,
        Fisttp => fist::<true, true>,
        Fbstp => fbstp,
        Fxch => fxch,
        Fcmovb | Fcmove | Fcmovbe | Fcmovu | Fcmovnb | Fcmovne | Fcmovnbe | Fcmovnu => fcmov,
        Fld1 | Fldz | Fldpi | Fldl2e | Fldl2t | Fldlg2 | Fldln2 => fld_const,
        _ => return None,
    })
}

/// Exceptions that, unmasked, leave a memory destination unwritten.
const NO_STORE: u16 = fsw::IE | fsw::DE | fsw::ZE | fsw::OE | fsw::UE;

/// A memory store may happen under these flags.
fn may_store(cpu: &Cpu, flags: u16) -> bool {
    flags & NO_STORE & !(cpu.s.fpu.fcw & fsw::EXCEPTIONS) == 0
}

fn fld(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_begin(i)?;
    let r = if has_mem(i) {
        cpu.x87_load_mem(i)?
    } else {
        cpu.x87_get(st_op(i, 0)).map_or(UNDERFLOW, Res::ok)
    };
    cpu.x87_push(r);
    Ok(())
}

/// The bits to store for ST(0) in the memory operand's format, with the flags raised.
fn encode_store(cpu: &Cpu, i: &Instruction, v: F80) -> (u128, u16) {
    let env = cpu.x87_env(false);
    match i.memory_size() {
        MemorySize::Float32 => {
            let (b, f) = softfloat::to_ieee(v, Format::SINGLE, 8, 23, env);
            (u128::from(b), f)
        }
        MemorySize::Float64 => {
            let (b, f) = softfloat::to_ieee(v, Format::DOUBLE, 11, 52, env);
            (u128::from(b), f)
        }
        _ => (v.to_bits(), 0),
    }
}

fn fst<const POP: bool>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_begin(i)?;
    let src = cpu.x87_get(0);
    if has_mem(i) {
        let bytes = i.memory_size().size() as u32;
        let lin = cpu.x87_mem_lin(i, bytes, true)?;
        let (bits, flags) = match src {
            Some(v) => encode_store(cpu, i, v),
            None => (encode_store(cpu, i, F80::INDEFINITE).0, UNDERFLOW.flags),
        };
        let store = may_store(cpu, flags);
        if store {
            cpu.x87_write_bytes(lin, bytes, bits)?;
        }
        cpu.x87_flags(flags);
        if POP && store {
            cpu.x87_pop();
        }
    } else {
        let dst = st_op(i, 0);
        let stored = cpu.x87_store(dst, src.map_or(UNDERFLOW, Res::ok));
        if POP && stored {
            cpu.x87_pop();
        }
    }
    Ok(())
}

fn fist<const POP: bool, const TRUNCATE: bool>(
    cpu: &mut Cpu,
    i: &Instruction,
) -> Result<(), Exception> {
    cpu.x87_begin(i)?;
    let bytes = i.memory_size().size() as u32;
    let bits = bytes * 8;
    let lin = cpu.x87_mem_lin(i, bytes, true)?;
    let round = if TRUNCATE {
        Round::TowardZero
    } else {
        softfloat::rounding(cpu.s.fpu.fcw)
    };
    let indefinite = 1u64 << (bits - 1);
    let (value, flags) = match cpu.x87_get(0) {
        None => (indefinite, UNDERFLOW.flags),
        Some(v) => match softfloat::to_int(v, bits, round) {
            Ok((n, f)) => (n as u64, f),
            Err(f) => (indefinite, f),
        },
    };
    let store = may_store(cpu, flags);
    if store {
        cpu.x87_write_bytes(lin, bytes, u128::from(value))?;
    }
    cpu.x87_flags(flags);
    if POP && store {
        cpu.x87_pop();
    }
    Ok(())
}

/// Decode 18 packed BCD digits and a sign byte (digit values above 9 are taken as-is).
pub(crate) fn from_bcd(raw: u128) -> F80 {
    let mut n: i64 = 0;
    for k in (0..18).rev() {
        n = n * 10 + ((raw >> (4 * k)) & 0xF) as i64;
    }
    let v = softfloat::from_int(n);
    if (raw >> 79) & 1 != 0 {
        softfloat::negate(v)
    } else {
        v
    }
}

/// The packed BCD integer indefinite (FFFF C000 0000 0000 0000h).
const BCD_INDEFINITE: u128 = 0xFFFF_C000_0000_0000_0000;

fn fbstp(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_begin(i)?;
    let lin = cpu.x87_mem_lin(i, 10, true)?;
    let round = softfloat::rounding(cpu.s.fpu.fcw);
    let (raw, flags) = match cpu.x87_get(0) {
        None => (BCD_INDEFINITE, UNDERFLOW.flags),
        Some(v) => match softfloat::to_int(v, 64, round) {
            Ok((n, f)) if n.unsigned_abs() < 1_000_000_000_000_000_000 => {
                let mut mag = n.unsigned_abs();
                let mut raw = 0u128;
                for k in 0..18 {
                    raw |= u128::from(mag % 10) << (4 * k);
                    mag /= 10;
                }
                if v.sign() {
                    raw |= 0x80 << 72;
                }
                (raw, f)
            }
            Ok(_) => (BCD_INDEFINITE, fsw::IE),
            Err(f) => (BCD_INDEFINITE, f),
        },
    };
    let store = may_store(cpu, flags);
    if store {
        cpu.x87_write_bytes(lin, 10, raw)?;
    }
    cpu.x87_flags(flags);
    if store {
        cpu.x87_pop();
    }
    Ok(())
}

fn fxch(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_begin(i)?;
    let other = if i.op_count() >= 2 { st_op(i, 1) } else { 1 };
    let (a, b) = (cpu.x87_get(0), cpu.x87_get(other));
    let flags = if a.is_none() || b.is_none() {
        UNDERFLOW.flags
    } else {
        0
    };
    if cpu.x87_flags(flags) {
        let a = a.unwrap_or(F80::INDEFINITE);
        let b = b.unwrap_or(F80::INDEFINITE);
        cpu.s.fpu.set_st(0, b);
        cpu.s.fpu.set_st(other, a);
    }
    Ok(())
}

fn fcmov(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    use Mnemonic::*;
    cpu.x87_begin(i)?;
    let f = cpu.flags();
    let cf = f & flags::CF != 0;
    let zf = f & flags::ZF != 0;
    let pf = f & flags::PF != 0;
    let take = match i.mnemonic() {
        Fcmovb => cf,
        Fcmove => zf,
        Fcmovbe => cf || zf,
        Fcmovu => pf,
        Fcmovnb => !cf,
        Fcmovne => !zf,
        Fcmovnbe => !cf && !zf,
        _ => !pf,
    };
    let src = st_op(i, 1);
    match (cpu.x87_get(0), cpu.x87_get(src)) {
        (Some(_), Some(v)) => {
            cpu.x87_flags(0);
            if take {
                cpu.s.fpu.set_st(0, v);
            }
        }
        _ => {
            cpu.x87_store(0, UNDERFLOW);
        }
    }
    Ok(())
}

/// A constant's 64-bit significand truncated, exponent, and whether round-to-nearest rounds
/// it up (the bits below are more than half an ulp).
fn constant(m: Mnemonic) -> (u16, u64, bool) {
    match m {
        Mnemonic::Fld1 => (0x3FFF, 1 << 63, false),
        Mnemonic::Fldz => (0, 0, false),
        Mnemonic::Fldpi => (0x4000, 0xC90F_DAA2_2168_C234, true),
        Mnemonic::Fldl2e => (0x3FFF, 0xB8AA_3B29_5C17_F0BB, true),
        Mnemonic::Fldl2t => (0x4000, 0xD49A_784B_CD1B_8AFE, false),
        Mnemonic::Fldlg2 => (0x3FFD, 0x9A20_9A84_FBCF_F798, true),
        _ => (0x3FFE, 0xB172_17F7_D1CF_79AB, true),
    }
}

fn fld_const(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_begin(i)?;
    let (exp, signif, nearest_up) = constant(i.mnemonic());
    let inexact = !matches!(i.mnemonic(), Mnemonic::Fld1 | Mnemonic::Fldz);
    let up = inexact
        && match softfloat::rounding(cpu.s.fpu.fcw) {
            Round::NearestTiesToEven => nearest_up,
            Round::TowardPositive => true,
            _ => false,
        };
    cpu.x87_push(Res::ok(F80::new(exp, signif + u64::from(up))));
    Ok(())
}
