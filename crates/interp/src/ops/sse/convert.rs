//! CVT* conversions between signed integers (GPRs, packed dwords in XMM or MM registers),
//! singles and doubles, in the rounding mode of MXCSR or truncating (the CVTT* forms).

use super::float::{Ieee, Mx};
use super::lanes::{get, set, sx};
use crate::cpu::Cpu;
use crate::exec::Handler;
use crane86_x86::Exception;
use iced_x86::{Instruction, Mnemonic, OpKind};
use rustc_apfloat::ieee::{Double, Single};
use rustc_apfloat::Round;

pub fn handler(i: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match i.mnemonic() {
        Cvtsi2ss => cvtsi2f::<Single>,
        Cvtsi2sd => cvtsi2f::<Double>,
        Cvtss2si => cvtf2si::<Single, false>,
        Cvttss2si => cvtf2si::<Single, true>,
        Cvtsd2si => cvtf2si::<Double, false>,
        Cvttsd2si => cvtf2si::<Double, true>,
        Cvtss2sd => cvtss2sd,
        Cvtsd2ss => cvtsd2ss,
        Cvtps2pd => cvtps2pd,
        Cvtpd2ps => cvtpd2ps,
        Cvtdq2ps => int2float::<Single, 4, false>,
        Cvtdq2pd => int2float::<Double, 2, false>,
        Cvtpi2ps => int2float::<Single, 2, true>,
        Cvtpi2pd => int2float::<Double, 2, false>,
        Cvtps2dq => float2int::<Single, 4, false>,
        Cvttps2dq => float2int::<Single, 4, true>,
        Cvtpd2dq | Cvtpd2pi => float2int::<Double, 2, false>,
        Cvttpd2dq | Cvttpd2pi => float2int::<Double, 2, true>,
        Cvtps2pi => float2int::<Single, 2, false>,
        Cvttps2pi => float2int::<Single, 2, true>,
        _ => return None,
    })
}

/// Rounding for a float-to-integer conversion: MXCSR.RC, or toward zero for CVTT*.
fn int_round(mx: &Mx, truncate: bool) -> Round {
    if truncate {
        Round::TowardZero
    } else {
        mx.round()
    }
}

/// Width in bytes of integer operand `n` (a GPR or a memory operand).
fn int_bytes(i: &Instruction, n: u32) -> usize {
    match i.op_kind(n) {
        OpKind::Register => i.op_register(n).size(),
        _ => i.memory_size().size(),
    }
}

/// CVTSI2SS/SD: a 32- or 64-bit signed integer into lane 0; the rest is kept.
fn cvtsi2f<F: Ieee>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let bytes = int_bytes(i, 1);
    let v = sx(cpu.vread(i, 1)? as u64, bytes);
    let a = cpu.vread(i, 0)?;
    let mut mx = cpu.mx();
    let r = mx.from_int::<F>(v);
    cpu.simd_commit(&mx)?;
    cpu.vwrite(i, 0, set(a, F::BYTES, 0, r))
}

/// CVTSS2SI/CVTSD2SI and the truncating forms: lane 0 into a 32- or 64-bit GPR.
fn cvtf2si<F: Ieee, const TRUNC: bool>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let width = 8 * i.op_register(0).size();
    let b = get(cpu.vread(i, 1)?, F::BYTES, 0);
    let mut mx = cpu.mx();
    let r = mx.to_int::<F>(b, width, int_round(&mx, TRUNC));
    cpu.simd_commit(&mx)?;
    cpu.vwrite(i, 0, r.into())
}

fn cvtss2sd(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let b = get(cpu.vread(i, 1)?, 4, 0);
    let a = cpu.vread(i, 0)?;
    let mut mx = cpu.mx();
    let r = mx.convert::<Single, Double>(b);
    cpu.simd_commit(&mx)?;
    cpu.vwrite(i, 0, set(a, 8, 0, r))
}

fn cvtsd2ss(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let b = get(cpu.vread(i, 1)?, 8, 0);
    let a = cpu.vread(i, 0)?;
    let mut mx = cpu.mx();
    let r = mx.convert::<Double, Single>(b);
    cpu.simd_commit(&mx)?;
    cpu.vwrite(i, 0, set(a, 4, 0, r))
}

/// CVTPS2PD: the two low singles of the source widened.
fn cvtps2pd(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let b = cpu.vread(i, 1)?;
    let mut mx = cpu.mx();
    let lo = mx.convert::<Single, Double>(get(b, 4, 0));
    let hi = mx.convert::<Single, Double>(get(b, 4, 1));
    cpu.simd_commit(&mx)?;
    cpu.vwrite(i, 0, set(u128::from(lo), 8, 1, hi))
}

/// CVTPD2PS: two doubles narrowed into the low singles; the high quadword is zeroed.
fn cvtpd2ps(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let b = cpu.vread(i, 1)?;
    let mut mx = cpu.mx();
    let lo = mx.convert::<Double, Single>(get(b, 8, 0));
    let hi = mx.convert::<Double, Single>(get(b, 8, 1));
    cpu.simd_commit(&mx)?;
    cpu.vwrite(i, 0, set(u128::from(lo), 4, 1, hi))
}

/// CVTDQ2PS/CVTDQ2PD/CVTPI2PS/CVTPI2PD: `N` signed dwords to F. CVTPI2PS (`KEEP_HIGH`)
/// keeps the destination's high quadword; the others write the whole register.
fn int2float<F: Ieee, const N: usize, const KEEP_HIGH: bool>(
    cpu: &mut Cpu,
    i: &Instruction,
) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let b = cpu.vread(i, 1)?;
    let mut r = if KEEP_HIGH { cpu.vread(i, 0)? } else { 0 };
    let mut mx = cpu.mx();
    for k in 0..N {
        r = set(r, F::BYTES, k, mx.from_int::<F>(sx(get(b, 4, k), 4)));
    }
    cpu.simd_commit(&mx)?;
    cpu.vwrite(i, 0, r)
}

/// CVTPS2DQ/CVTPD2DQ/CVTPS2PI/CVTPD2PI and the truncating forms: `N` lanes of F to signed
/// dwords in the low lanes (the rest of an XMM destination zeroed).
fn float2int<F: Ieee, const N: usize, const TRUNC: bool>(
    cpu: &mut Cpu,
    i: &Instruction,
) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let b = cpu.vread(i, 1)?;
    let mut mx = cpu.mx();
    let round = int_round(&mx, TRUNC);
    let mut r = 0;
    for k in 0..N {
        r = set(r, 4, k, mx.to_int::<F>(get(b, F::BYTES, k), 32, round));
    }
    cpu.simd_commit(&mx)?;
    cpu.vwrite(i, 0, r)
}
