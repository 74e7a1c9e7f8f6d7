//! Packed and scalar floating-point instructions (SSE, SSE2, SSE3, SSE4.1): arithmetic,
//! min/max, square root, the reciprocal approximations, compares into masks (CMPccPS) and
//! into RFLAGS (COMISS/UCOMISS), the horizontal and alternating forms (HADDPS, ADDSUBPS),
//! ROUNDPS and the dot products DPPS/DPPD. Lane arithmetic lives in [`super::float`]; this
//! file walks lanes and commits the exception flags to MXCSR (an unmasked exception raises
//! #XM, or #UD when CR4.OSXMMEXCPT is clear, and leaves the destination unchanged).

use super::float::{rounding, Ieee, Mx};
use super::lanes::{get, set};
use crate::cpu::Cpu;
use crate::exec::Handler;
use crane86_x86::regs::cr4;
use crane86_x86::{flags, Exception, Vector};
use iced_x86::{Instruction, Mnemonic};
use rustc_apfloat::ieee::{Double, Single};
use std::cmp::Ordering;

pub fn handler(i: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match i.mnemonic() {
        Addps => addps,
        Addpd => addpd,
        Addss => addss,
        Addsd => addsd,
        Subps => subps,
        Subpd => subpd,
        Subss => subss,
        Subsd => subsd,
        Mulps => mulps,
        Mulpd => mulpd,
        Mulss => mulss,
        Mulsd => mulsd,
        Divps => divps,
        Divpd => divpd,
        Divss => divss,
        Divsd => divsd,
        Minps => minps,
        Minpd => minpd,
        Minss => minss,
        Minsd => minsd,
        Maxps => maxps,
        Maxpd => maxpd,
        Maxss => maxss,
        Maxsd => maxsd,
        Sqrtps => sqrtps,
        Sqrtpd => sqrtpd,
        Sqrtss => sqrtss,
        Sqrtsd => sqrtsd,
        Rcpps => rcpps,
        Rcpss => rcpss,
        Rsqrtps => rsqrtps,
        Rsqrtss => rsqrtss,
        Cmpps => cmp::<Single, false>,
        Cmppd => cmp::<Double, false>,
        Cmpss => cmp::<Single, true>,
        Cmpsd if i.op_count() == 3 => cmp::<Double, true>,
        Comiss => comis::<Single, true>,
        Comisd => comis::<Double, true>,
        Ucomiss => comis::<Single, false>,
        Ucomisd => comis::<Double, false>,
        Addsubps => addsub::<Single>,
        Addsubpd => addsub::<Double>,
        Haddps => horizontal::<Single, false>,
        Haddpd => horizontal::<Double, false>,
        Hsubps => horizontal::<Single, true>,
        Hsubpd => horizontal::<Double, true>,
        Roundps => round::<Single, false>,
        Roundpd => round::<Double, false>,
        Roundss => round::<Single, true>,
        Roundsd => round::<Double, true>,
        Dpps => dpps,
        Dppd => dppd,
        _ => return None,
    })
}

impl Cpu<'_> {
    /// The MXCSR an instruction starts from.
    pub(crate) fn mx(&self) -> Mx {
        Mx::new(self.s.fpu.mxcsr)
    }

    /// Merge an instruction's exception flags into MXCSR; an unmasked one raises #XM (#UD
    /// when the OS has not set CR4.OSXMMEXCPT).
    pub(crate) fn simd_commit(&mut self, mx: &Mx) -> Result<(), Exception> {
        self.s.fpu.mxcsr |= mx.flags;
        if mx.unmasked() != 0 {
            return Err(if self.s.cr4 & cr4::OSXMMEXCPT != 0 {
                Exception::new(Vector::SimdFp)
            } else {
                Exception::ud()
            });
        }
        Ok(())
    }
}

/// Walk the lanes of operands 0 and 1 (only lane 0 when `scalar`, the rest of operand 0
/// kept): `f(mx, a_k, b_k, k)` gives lane k of the result.
fn lanes<F: Ieee>(
    cpu: &mut Cpu,
    i: &Instruction,
    scalar: bool,
    mut f: impl FnMut(&mut Mx, u64, u64, usize) -> u64,
) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let a = cpu.vread(i, 0)?;
    let b = cpu.vread(i, 1)?;
    let mut mx = cpu.mx();
    let n = if scalar { 1 } else { 16 / F::BYTES };
    let mut r = a;
    for k in 0..n {
        let x = f(&mut mx, get(a, F::BYTES, k), get(b, F::BYTES, k), k);
        r = set(r, F::BYTES, k, x);
    }
    cpu.simd_commit(&mx)?;
    cpu.vwrite(i, 0, r)
}

/// Handlers `name = format, scalar, |mx, a, b| lane result`.
macro_rules! fp_lanes {
    ($($name:ident = $F:ty, $scalar:expr, |$mx:ident, $a:ident, $b:ident| $body:expr;)*) => {
        $(fn $name(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
            lanes::<$F>(cpu, i, $scalar, |$mx, $a, $b, _| $body)
        })*
    };
}

fp_lanes! {
    addps = Single, false, |mx, a, b| mx.add::<Single>(a, b);
    addpd = Double, false, |mx, a, b| mx.add::<Double>(a, b);
    addss = Single, true, |mx, a, b| mx.add::<Single>(a, b);
    addsd = Double, true, |mx, a, b| mx.add::<Double>(a, b);
    subps = Single, false, |mx, a, b| mx.sub::<Single>(a, b);
    subpd = Double, false, |mx, a, b| mx.sub::<Double>(a, b);
    subss = Single, true, |mx, a, b| mx.sub::<Single>(a, b);
    subsd = Double, true, |mx, a, b| mx.sub::<Double>(a, b);
    mulps = Single, false, |mx, a, b| mx.mul::<Single>(a, b);
    mulpd = Double, false, |mx, a, b| mx.mul::<Double>(a, b);
    mulss = Single, true, |mx, a, b| mx.mul::<Single>(a, b);
    mulsd = Double, true, |mx, a, b| mx.mul::<Double>(a, b);
    divps = Single, false, |mx, a, b| mx.div::<Single>(a, b);
    divpd = Double, false, |mx, a, b| mx.div::<Double>(a, b);
    divss = Single, true, |mx, a, b| mx.div::<Single>(a, b);
    divsd = Double, true, |mx, a, b| mx.div::<Double>(a, b);
    minps = Single, false, |mx, a, b| mx.min_max::<Single>(a, b, false);
    minpd = Double, false, |mx, a, b| mx.min_max::<Double>(a, b, false);
    minss = Single, true, |mx, a, b| mx.min_max::<Single>(a, b, false);
    minsd = Double, true, |mx, a, b| mx.min_max::<Double>(a, b, false);
    maxps = Single, false, |mx, a, b| mx.min_max::<Single>(a, b, true);
    maxpd = Double, false, |mx, a, b| mx.min_max::<Double>(a, b, true);
    maxss = Single, true, |mx, a, b| mx.min_max::<Single>(a, b, true);
    maxsd = Double, true, |mx, a, b| mx.min_max::<Double>(a, b, true);
    sqrtps = Single, false, |mx, _a, b| mx.sqrt::<Single>(b);
    sqrtpd = Double, false, |mx, _a, b| mx.sqrt::<Double>(b);
    sqrtss = Single, true, |mx, _a, b| mx.sqrt::<Single>(b);
    sqrtsd = Double, true, |mx, _a, b| mx.sqrt::<Double>(b);
    rcpps = Single, false, |mx, _a, b| mx.approx::<Single>(b, false);
    rcpss = Single, true, |mx, _a, b| mx.approx::<Single>(b, false);
    rsqrtps = Single, false, |mx, _a, b| mx.approx::<Single>(b, true);
    rsqrtss = Single, true, |mx, _a, b| mx.approx::<Single>(b, true);
}

/// CMPccPS/PD/SS/SD: predicate imm8[2:0] (EQ LT LE UNORD NEQ NLT NLE ORD) into an all-ones
/// or zero lane. LT, LE, NLT and NLE signal on quiet NaNs as well.
fn cmp<F: Ieee, const SCALAR: bool>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let pred = i.immediate8() & 7;
    let ones = if F::BYTES == 8 {
        u64::MAX
    } else {
        u64::from(u32::MAX)
    };
    lanes::<F>(cpu, i, SCALAR, |mx, a, b, _| {
        let signal = matches!(pred, 1 | 2 | 5 | 6);
        let ord = mx.compare::<F>(a, b, signal);
        let t = match pred {
            0 => ord == Some(Ordering::Equal),
            1 => ord == Some(Ordering::Less),
            2 => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
            3 => ord.is_none(),
            4 => ord != Some(Ordering::Equal),
            5 => ord != Some(Ordering::Less),
            6 => !matches!(ord, Some(Ordering::Less | Ordering::Equal)),
            _ => ord.is_some(),
        };
        if t {
            ones
        } else {
            0
        }
    })
}

/// COMISS/UCOMISS/COMISD/UCOMISD: ZF, PF, CF from the comparison (all set when unordered);
/// OF, SF, AF cleared. COMIS* signal on quiet NaNs too.
fn comis<F: Ieee, const SIGNAL: bool>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let a = get(cpu.vread(i, 0)?, F::BYTES, 0);
    let b = get(cpu.vread(i, 1)?, F::BYTES, 0);
    let mut mx = cpu.mx();
    let f = match mx.compare::<F>(a, b, SIGNAL) {
        None => flags::ZF | flags::PF | flags::CF,
        Some(Ordering::Greater) => 0,
        Some(Ordering::Less) => flags::CF,
        Some(Ordering::Equal) => flags::ZF,
    };
    cpu.simd_commit(&mx)?;
    cpu.set_arith_flags(flags::ARITH, f);
    Ok(())
}

/// ADDSUBPS/PD: even lanes subtract, odd lanes add.
fn addsub<F: Ieee>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    lanes::<F>(cpu, i, false, |mx, a, b, k| {
        if k % 2 == 0 {
            mx.sub::<F>(a, b)
        } else {
            mx.add::<F>(a, b)
        }
    })
}

/// HADDPS/HSUBPS/HADDPD/HSUBPD: adjacent pairs of the destination, then of the source.
fn horizontal<F: Ieee, const SUB: bool>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let a = cpu.vread(i, 0)?;
    let b = cpu.vread(i, 1)?;
    let mut mx = cpu.mx();
    let w = F::BYTES;
    let half = 16 / w / 2;
    let mut r = 0;
    for k in 0..16 / w {
        let (src, j) = if k < half {
            (a, 2 * k)
        } else {
            (b, 2 * (k - half))
        };
        let (x, y) = (get(src, w, j), get(src, w, j + 1));
        let v = if SUB {
            mx.sub::<F>(x, y)
        } else {
            mx.add::<F>(x, y)
        };
        r = set(r, w, k, v);
    }
    cpu.simd_commit(&mx)?;
    cpu.vwrite(i, 0, r)
}

/// ROUNDPS/PD/SS/SD: imm8[1:0] is the rounding mode unless imm8[2] selects MXCSR.RC;
/// imm8[3] suppresses the precision exception.
fn round<F: Ieee, const SCALAR: bool>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let imm = u32::from(i.immediate8());
    let suppress = imm & 8 != 0;
    let rc = if imm & 4 != 0 {
        (cpu.s.fpu.mxcsr >> super::float::mxcsr::RC_SHIFT) & 3
    } else {
        imm & 3
    };
    lanes::<F>(cpu, i, SCALAR, |mx, _a, b, _| {
        mx.round_integral::<F>(b, rounding(rc), suppress)
    })
}

/// DPPS: products of the lanes selected by imm8[7:4] (others +0.0), summed as
/// (p0 + p1) + (p2 + p3), broadcast to the lanes selected by imm8[3:0] (others zero).
fn dpps(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let a = cpu.vread(i, 0)?;
    let b = cpu.vread(i, 1)?;
    let imm = i.immediate8();
    let mut mx = cpu.mx();
    let p: [u64; 4] = std::array::from_fn(|k| {
        if imm & (0x10 << k) != 0 {
            mx.mul::<Single>(get(a, 4, k), get(b, 4, k))
        } else {
            0
        }
    });
    let lo = mx.add::<Single>(p[0], p[1]);
    let hi = mx.add::<Single>(p[2], p[3]);
    let sum = mx.add::<Single>(lo, hi);
    let r = (0..4).fold(0, |r, k| {
        if imm & (1 << k) != 0 {
            set(r, 4, k, sum)
        } else {
            r
        }
    });
    cpu.simd_commit(&mx)?;
    cpu.vwrite(i, 0, r)
}

/// DPPD: the two-lane form of [`dpps`] (imm8[5:4] select products, imm8[1:0] results).
fn dppd(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let a = cpu.vread(i, 0)?;
    let b = cpu.vread(i, 1)?;
    let imm = i.immediate8();
    let mut mx = cpu.mx();
    let p: [u64; 2] = std::array::from_fn(|k| {
        if imm & (0x10 << k) != 0 {
            mx.mul::<Double>(get(a, 8, k), get(b, 8, k))
        } else {
            0
        }
    });
    let sum = mx.add::<Double>(p[0], p[1]);
    let r = (0..2).fold(0, |r, k| {
        if imm & (1 << k) != 0 {
            set(r, 8, k, sum)
        } else {
            r
        }
    });
    cpu.simd_commit(&mx)?;
    cpu.vwrite(i, 0, r)
}
