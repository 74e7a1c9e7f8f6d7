//! Packed integer instructions on MMX and XMM registers: add/subtract (wrapping and
//! saturating), multiplies, averages, min/max, compares, bitwise logic (also the
//! ANDPS/ORPS/XORPS family, which is the same bit operation), shifts, packs, and the SSSE3 /
//! SSE4.1 integer additions (horizontal adds, PABS/PSIGN, PMADDUBSW, PMULHRSW, PTEST,
//! PHMINPOSUW, MPSADBW). Lane widths come from the mnemonic, the vector width from operand 0.

use super::lanes::{get, map1, map2, ones, sat_s, sat_u, set, sget, sx, trunc};
use super::{binary, binary_imm, unary};
use crate::cpu::Cpu;
use crate::exec::Handler;
use crane86_x86::{flags, Exception};
use iced_x86::{Instruction, Mnemonic, OpKind};

pub fn handler(i: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match i.mnemonic() {
        Paddb => paddb,
        Paddw => paddw,
        Paddd => paddd,
        Paddq => paddq,
        Psubb => psubb,
        Psubw => psubw,
        Psubd => psubd,
        Psubq => psubq,
        Paddsb => paddsb,
        Paddsw => paddsw,
        Paddusb => paddusb,
        Paddusw => paddusw,
        Psubsb => psubsb,
        Psubsw => psubsw,
        Psubusb => psubusb,
        Psubusw => psubusw,
        Pmullw => pmullw,
        Pmulhw => pmulhw,
        Pmulhuw => pmulhuw,
        Pmulld => pmulld,
        Pmuludq => pmuludq,
        Pmuldq => pmuldq,
        Pmaddwd => pmaddwd,
        Pmaddubsw => pmaddubsw,
        Pmulhrsw => pmulhrsw,
        Pavgb => pavgb,
        Pavgw => pavgw,
        Pminub => pminub,
        Pmaxub => pmaxub,
        Pminsw => pminsw,
        Pmaxsw => pmaxsw,
        Pminsb => pminsb,
        Pmaxsb => pmaxsb,
        Pminuw => pminuw,
        Pmaxuw => pmaxuw,
        Pminsd => pminsd,
        Pmaxsd => pmaxsd,
        Pminud => pminud,
        Pmaxud => pmaxud,
        Psadbw => psadbw,
        Pcmpeqb => pcmpeqb,
        Pcmpeqw => pcmpeqw,
        Pcmpeqd => pcmpeqd,
        Pcmpeqq => pcmpeqq,
        Pcmpgtb => pcmpgtb,
        Pcmpgtw => pcmpgtw,
        Pcmpgtd => pcmpgtd,
        Pcmpgtq => pcmpgtq,
        Pand | Andps | Andpd => pand,
        Pandn | Andnps | Andnpd => pandn,
        Por | Orps | Orpd => por,
        Pxor | Xorps | Xorpd => pxor,
        Psllw => psllw,
        Pslld => pslld,
        Psllq => psllq,
        Psrlw => psrlw,
        Psrld => psrld,
        Psrlq => psrlq,
        Psraw => psraw,
        Psrad => psrad,
        Pslldq => pslldq,
        Psrldq => psrldq,
        Packsswb => packsswb,
        Packssdw => packssdw,
        Packuswb => packuswb,
        Packusdw => packusdw,
        Pabsb => pabsb,
        Pabsw => pabsw,
        Pabsd => pabsd,
        Psignb => psignb,
        Psignw => psignw,
        Psignd => psignd,
        Phaddw => phaddw,
        Phaddd => phaddd,
        Phaddsw => phaddsw,
        Phsubw => phsubw,
        Phsubd => phsubd,
        Phsubsw => phsubsw,
        Ptest => ptest,
        Phminposuw => phminposuw,
        Mpsadbw => mpsadbw,
        _ => return None,
    })
}

/// Lane-wise binary handlers: `name: lane width, |a, b| lane result`.
macro_rules! lanewise {
    ($($name:ident: $w:expr, |$a:ident, $b:ident| $body:expr;)*) => {
        $(fn $name(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
            binary(cpu, i, |a, b, bytes| map2(a, b, bytes, $w, |$a, $b| $body))
        })*
    };
}

/// All ones when `c`, else zero, in a lane of `w` bytes.
fn mask_if(c: bool, w: usize) -> u64 {
    if c {
        ones(w)
    } else {
        0
    }
}

lanewise! {
    paddb: 1, |a, b| a.wrapping_add(b);
    paddw: 2, |a, b| a.wrapping_add(b);
    paddd: 4, |a, b| a.wrapping_add(b);
    paddq: 8, |a, b| a.wrapping_add(b);
    psubb: 1, |a, b| a.wrapping_sub(b);
    psubw: 2, |a, b| a.wrapping_sub(b);
    psubd: 4, |a, b| a.wrapping_sub(b);
    psubq: 8, |a, b| a.wrapping_sub(b);
    paddsb: 1, |a, b| sat_s(sx(a, 1) + sx(b, 1), 1);
    paddsw: 2, |a, b| sat_s(sx(a, 2) + sx(b, 2), 2);
    paddusb: 1, |a, b| sat_u((a + b) as i64, 1);
    paddusw: 2, |a, b| sat_u((a + b) as i64, 2);
    psubsb: 1, |a, b| sat_s(sx(a, 1) - sx(b, 1), 1);
    psubsw: 2, |a, b| sat_s(sx(a, 2) - sx(b, 2), 2);
    psubusb: 1, |a, b| sat_u(a as i64 - b as i64, 1);
    psubusw: 2, |a, b| sat_u(a as i64 - b as i64, 2);
    pmullw: 2, |a, b| (sx(a, 2) * sx(b, 2)) as u64;
    pmulhw: 2, |a, b| ((sx(a, 2) * sx(b, 2)) >> 16) as u64;
    pmulhuw: 2, |a, b| (a * b) >> 16;
    pmulld: 4, |a, b| (sx(a, 4).wrapping_mul(sx(b, 4))) as u64;
    pmuludq: 8, |a, b| (a & 0xFFFF_FFFF) * (b & 0xFFFF_FFFF);
    pmuldq: 8, |a, b| (sx(a, 4) * sx(b, 4)) as u64;
    pmulhrsw: 2, |a, b| ((((sx(a, 2) * sx(b, 2)) >> 14) + 1) >> 1) as u64;
    pavgb: 1, |a, b| (a + b + 1) >> 1;
    pavgw: 2, |a, b| (a + b + 1) >> 1;
    pminub: 1, |a, b| a.min(b);
    pmaxub: 1, |a, b| a.max(b);
    pminuw: 2, |a, b| a.min(b);
    pmaxuw: 2, |a, b| a.max(b);
    pminud: 4, |a, b| a.min(b);
    pmaxud: 4, |a, b| a.max(b);
    pminsb: 1, |a, b| sx(a, 1).min(sx(b, 1)) as u64;
    pmaxsb: 1, |a, b| sx(a, 1).max(sx(b, 1)) as u64;
    pminsw: 2, |a, b| sx(a, 2).min(sx(b, 2)) as u64;
    pmaxsw: 2, |a, b| sx(a, 2).max(sx(b, 2)) as u64;
    pminsd: 4, |a, b| sx(a, 4).min(sx(b, 4)) as u64;
    pmaxsd: 4, |a, b| sx(a, 4).max(sx(b, 4)) as u64;
    pcmpeqb: 1, |a, b| mask_if(a == b, 1);
    pcmpeqw: 2, |a, b| mask_if(a == b, 2);
    pcmpeqd: 4, |a, b| mask_if(a == b, 4);
    pcmpeqq: 8, |a, b| mask_if(a == b, 8);
    pcmpgtb: 1, |a, b| mask_if(sx(a, 1) > sx(b, 1), 1);
    pcmpgtw: 2, |a, b| mask_if(sx(a, 2) > sx(b, 2), 2);
    pcmpgtd: 4, |a, b| mask_if(sx(a, 4) > sx(b, 4), 4);
    pcmpgtq: 8, |a, b| mask_if((a as i64) > (b as i64), 8);
    psignb: 1, |a, b| sign_by(a, b, 1);
    psignw: 2, |a, b| sign_by(a, b, 2);
    psignd: 4, |a, b| sign_by(a, b, 4);
}

/// PSIGN: `a` negated, zeroed or kept as `b` is negative, zero or positive.
fn sign_by(a: u64, b: u64, w: usize) -> u64 {
    match sx(b, w).signum() {
        -1 => (sx(a, w).wrapping_neg()) as u64,
        0 => 0,
        _ => a,
    }
}

fn pand(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary(cpu, i, |a, b, _| a & b)
}

fn pandn(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary(cpu, i, |a, b, w| trunc(!a & b, w))
}

fn por(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary(cpu, i, |a, b, _| a | b)
}

fn pxor(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary(cpu, i, |a, b, _| a ^ b)
}

fn pmaddwd(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary(cpu, i, |a, b, bytes| {
        let mut r = 0;
        for k in 0..bytes / 4 {
            let p = |j| sget(a, 2, j) * sget(b, 2, j);
            r = set(r, 4, k, p(2 * k).wrapping_add(p(2 * k + 1)) as u64);
        }
        r
    })
}

fn pmaddubsw(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary(cpu, i, |a, b, bytes| {
        let mut r = 0;
        for k in 0..bytes / 2 {
            let p = |j| get(a, 1, j) as i64 * sget(b, 1, j);
            r = set(r, 2, k, sat_s(p(2 * k) + p(2 * k + 1), 2));
        }
        r
    })
}

fn psadbw(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary(cpu, i, |a, b, bytes| {
        let mut r = 0;
        for q in 0..bytes / 8 {
            let sum: u64 = (8 * q..8 * q + 8)
                .map(|k| get(a, 1, k).abs_diff(get(b, 1, k)))
                .sum();
            r = set(r, 8, q, sum);
        }
        r
    })
}

// ------------------------------------------------------------------ shifts

/// The shift count: an immediate, or the low 64 bits of the source register/memory.
fn shift_count(cpu: &mut Cpu, i: &Instruction) -> Result<u64, Exception> {
    Ok(match i.op_kind(1) {
        OpKind::Immediate8 => i.immediate8().into(),
        _ => cpu.vread(i, 1)? as u64,
    })
}

/// A lane-wise shift of operand 0 by the count in operand 1.
fn shift(
    cpu: &mut Cpu,
    i: &Instruction,
    w: usize,
    f: impl Fn(u64, u32) -> u64,
) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let bytes = Cpu::vwidth(i);
    let count = shift_count(cpu, i)?;
    let a = cpu.vread(i, 0)?;
    let bits = 8 * w as u64;
    let r = map1(a, bytes, w, |x| f(x, count.min(bits) as u32));
    cpu.vwrite(i, 0, r)
}

fn logical_left(w: usize) -> impl Fn(u64, u32) -> u64 {
    move |x, n| if n as usize >= 8 * w { 0 } else { x << n }
}

fn logical_right(w: usize) -> impl Fn(u64, u32) -> u64 {
    move |x, n| if n as usize >= 8 * w { 0 } else { x >> n }
}

fn arith_right(w: usize) -> impl Fn(u64, u32) -> u64 {
    move |x, n| (sx(x, w) >> n.min(8 * w as u32 - 1)) as u64
}

fn psllw(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    shift(cpu, i, 2, logical_left(2))
}
fn pslld(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    shift(cpu, i, 4, logical_left(4))
}
fn psllq(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    shift(cpu, i, 8, logical_left(8))
}
fn psrlw(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    shift(cpu, i, 2, logical_right(2))
}
fn psrld(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    shift(cpu, i, 4, logical_right(4))
}
fn psrlq(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    shift(cpu, i, 8, logical_right(8))
}
fn psraw(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    shift(cpu, i, 2, arith_right(2))
}
fn psrad(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    shift(cpu, i, 4, arith_right(4))
}

/// PSLLDQ / PSRLDQ: whole-register byte shifts; counts above 15 clear the register.
fn pslldq(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let n = u32::from(i.immediate8());
    binary_imm_free(cpu, i, |a| if n > 15 { 0 } else { a << (8 * n) })
}

fn psrldq(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let n = u32::from(i.immediate8());
    binary_imm_free(cpu, i, |a| if n > 15 { 0 } else { a >> (8 * n) })
}

/// `op0 = f(op0)` (the byte-shift forms, whose only other operand is the immediate).
fn binary_imm_free(
    cpu: &mut Cpu,
    i: &Instruction,
    f: impl FnOnce(u128) -> u128,
) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let a = cpu.vread(i, 0)?;
    cpu.vwrite(i, 0, f(a))
}

// ------------------------------------------------------------------ packs

/// Narrow the lanes of `a` then `b` (each `w` bytes) into lanes of `w / 2` with `sat`.
fn pack(a: u128, b: u128, bytes: usize, w: usize, sat: impl Fn(i64) -> u64) -> u128 {
    let n = bytes / w;
    let mut r = 0;
    for k in 0..n {
        r = set(r, w / 2, k, sat(sget(a, w, k)));
        r = set(r, w / 2, n + k, sat(sget(b, w, k)));
    }
    r
}

fn packsswb(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary(cpu, i, |a, b, bytes| pack(a, b, bytes, 2, |x| sat_s(x, 1)))
}
fn packssdw(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary(cpu, i, |a, b, bytes| pack(a, b, bytes, 4, |x| sat_s(x, 2)))
}
fn packuswb(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary(cpu, i, |a, b, bytes| pack(a, b, bytes, 2, |x| sat_u(x, 1)))
}
fn packusdw(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary(cpu, i, |a, b, bytes| pack(a, b, bytes, 4, |x| sat_u(x, 2)))
}

// ------------------------------------------------------------------ SSSE3

fn pabs(cpu: &mut Cpu, i: &Instruction, w: usize) -> Result<(), Exception> {
    unary(cpu, i, |b, bytes| {
        map1(b, bytes, w, |x| sx(x, w).unsigned_abs())
    })
}
fn pabsb(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    pabs(cpu, i, 1)
}
fn pabsw(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    pabs(cpu, i, 2)
}
fn pabsd(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    pabs(cpu, i, 4)
}

/// Horizontal operation: adjacent lane pairs of `a`, then of `b`, combined with `f`.
fn horizontal(
    cpu: &mut Cpu,
    i: &Instruction,
    w: usize,
    f: impl Fn(i64, i64) -> u64,
) -> Result<(), Exception> {
    binary(cpu, i, |a, b, bytes| {
        let half = bytes / w / 2;
        let mut r = 0;
        for k in 0..half {
            r = set(r, w, k, f(sget(a, w, 2 * k), sget(a, w, 2 * k + 1)));
            r = set(r, w, half + k, f(sget(b, w, 2 * k), sget(b, w, 2 * k + 1)));
        }
        r
    })
}

fn phaddw(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    horizontal(cpu, i, 2, |x, y| (x + y) as u64)
}
fn phaddd(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    horizontal(cpu, i, 4, |x, y| (x + y) as u64)
}
fn phaddsw(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    horizontal(cpu, i, 2, |x, y| sat_s(x + y, 2))
}
fn phsubw(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    horizontal(cpu, i, 2, |x, y| (x - y) as u64)
}
fn phsubd(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    horizontal(cpu, i, 4, |x, y| (x - y) as u64)
}
fn phsubsw(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    horizontal(cpu, i, 2, |x, y| sat_s(x - y, 2))
}

// ------------------------------------------------------------------ SSE4.1

/// PTEST: ZF = (a AND b) = 0, CF = (NOT a AND b) = 0; AF, OF, PF, SF cleared.
fn ptest(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let a = cpu.vread(i, 0)?;
    let b = cpu.vread(i, 1)?;
    let mut f = 0;
    if a & b == 0 {
        f |= flags::ZF;
    }
    if !a & b == 0 {
        f |= flags::CF;
    }
    cpu.set_arith_flags(flags::ARITH, f);
    Ok(())
}

/// PHMINPOSUW: the smallest unsigned word and its index (lowest index on ties).
fn phminposuw(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    unary(cpu, i, |b, _| {
        let (idx, min) = (0..8)
            .map(|k| (k, get(b, 2, k)))
            .min_by_key(|&(k, v)| (v, k))
            .unwrap_or((0, 0));
        u128::from(min) | ((idx as u128) << 16)
    })
}

/// MPSADBW: eight sums of absolute differences of 4-byte groups, source offset from
/// imm8[1:0] (x4), destination offset from imm8[2] (x4), sliding by one byte.
fn mpsadbw(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary_imm(cpu, i, |a, b, imm, _| {
        let src = usize::from(imm & 3) * 4;
        let dst = usize::from((imm >> 2) & 1) * 4;
        let mut r = 0;
        for k in 0..8 {
            let sum: u64 = (0..4)
                .map(|j| get(a, 1, dst + k + j).abs_diff(get(b, 1, src + j)))
                .sum();
            r = set(r, 2, k, sum);
        }
        r
    })
}
