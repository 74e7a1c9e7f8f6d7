//! SIMD data movement: register/memory moves (full, sized with zero extension, scalar
//! merges, low/high halves, duplicates, non-temporal forms), sign-mask extraction, lane
//! inserts and extracts, unpacks, shuffles (PSHUF*, SHUFPS/PD, PSHUFB, PALIGNR), blends,
//! PMOVSX/PMOVZX and the byte-masked stores MASKMOVQ/MASKMOVDQU.

use super::lanes::{get, set, sget, trunc};
use super::{binary, binary_imm, unary, xmm_op};
use crate::cpu::{seg_of, Cpu};
use crate::exec::Handler;
use crane86_x86::Exception;
use iced_x86::{Instruction, Mnemonic, OpKind};

pub fn handler(i: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match i.mnemonic() {
        Movaps | Movapd | Movups | Movupd | Movdqa | Movdqu | Lddqu | Movntps | Movntpd
        | Movntdq | Movntdqa | Movntq => mov_full,
        Movnti => mov_gpr_nt,
        Movq | Movq2dq | Movdq2q => mov_sized::<8>,
        Movd => mov_sized::<4>,
        Movss => movss,
        Movsd => movsd,
        Movlps | Movlpd => movlp,
        Movhps | Movhpd => movhp,
        Movhlps => movhlps,
        Movlhps => movlhps,
        Movddup => movddup,
        Movshdup => movshdup,
        Movsldup => movsldup,
        Movmskps => movmskps,
        Movmskpd => movmskpd,
        Pmovmskb => pmovmskb,
        Pextrb => pextr::<1>,
        Pextrw => pextr::<2>,
        Pextrd | Extractps => pextr::<4>,
        Pextrq => pextr::<8>,
        Pinsrb => pinsr::<1>,
        Pinsrw => pinsr::<2>,
        Pinsrd => pinsr::<4>,
        Pinsrq => pinsr::<8>,
        Insertps => insertps,
        Punpcklbw => unpack_low::<1>,
        Punpcklwd => unpack_low::<2>,
        Punpckldq | Unpcklps => unpack_low::<4>,
        Punpcklqdq | Unpcklpd => unpack_low::<8>,
        Punpckhbw => unpack_high::<1>,
        Punpckhwd => unpack_high::<2>,
        Punpckhdq | Unpckhps => unpack_high::<4>,
        Punpckhqdq | Unpckhpd => unpack_high::<8>,
        Pshufd => pshufd,
        Pshufw => pshufw,
        Pshuflw => pshuflw,
        Pshufhw => pshufhw,
        Shufps => shufps,
        Shufpd => shufpd,
        Pshufb => pshufb,
        Palignr => palignr,
        Blendps => blend_imm::<4>,
        Blendpd => blend_imm::<8>,
        Pblendw => blend_imm::<2>,
        Blendvps => blend_var::<4>,
        Blendvpd => blend_var::<8>,
        Pblendvb => blend_var::<1>,
        Pmovsxbw => pmovx::<1, 2, true>,
        Pmovsxbd => pmovx::<1, 4, true>,
        Pmovsxbq => pmovx::<1, 8, true>,
        Pmovsxwd => pmovx::<2, 4, true>,
        Pmovsxwq => pmovx::<2, 8, true>,
        Pmovsxdq => pmovx::<4, 8, true>,
        Pmovzxbw => pmovx::<1, 2, false>,
        Pmovzxbd => pmovx::<1, 4, false>,
        Pmovzxbq => pmovx::<1, 8, false>,
        Pmovzxwd => pmovx::<2, 4, false>,
        Pmovzxwq => pmovx::<2, 8, false>,
        Pmovzxdq => pmovx::<4, 8, false>,
        Maskmovq | Maskmovdqu => maskmov,
        _ => return None,
    })
}

/// MOVAPS/MOVDQA/MOVUPS/…: the whole source to the destination.
fn mov_full(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    unary(cpu, i, |b, _| b)
}

/// MOVNTI m32/m64, r: a plain integer store (the non-temporal hint is not modelled).
fn mov_gpr_nt(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let v = cpu.read_op(i, 1)?;
    cpu.write_op(i, 0, v)
}

/// MOVD/MOVQ (and MOVQ2DQ/MOVDQ2Q): the low `N` bytes of the source, zero-extended into a
/// register destination. With a GPR operand the GPR's width decides (MOVD/MOVQ r/m, xmm).
fn mov_sized<const N: usize>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let gpr_bytes = (0..2)
        .find(|&n| i.op_kind(n) == OpKind::Register && i.op_register(n).is_gpr())
        .map(|n| i.op_register(n).size());
    let bytes = gpr_bytes.unwrap_or(N);
    let v = trunc(cpu.vread(i, 1)?, bytes);
    cpu.vwrite(i, 0, v)
}

/// Replace the low `w` bytes of `dst` by those of `src`.
fn merge_low(dst: u128, src: u128, w: usize) -> u128 {
    set(dst, w, 0, get(src, w, 0))
}

/// MOVSS/MOVSD: a load from memory zero-extends; register to register merges the low lane;
/// a store writes the low lane.
fn scalar_move(cpu: &mut Cpu, i: &Instruction, w: usize) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let src = cpu.vread(i, 1)?;
    let v = if i.op_kind(0) == OpKind::Register && i.op_kind(1) == OpKind::Register {
        merge_low(cpu.s.fpu.xmm[xmm_op(i, 0)], src, w)
    } else {
        trunc(src, w)
    };
    cpu.vwrite(i, 0, v)
}

fn movss(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    scalar_move(cpu, i, 4)
}

fn movsd(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    scalar_move(cpu, i, 8)
}

/// MOVLPS/MOVLPD: load the low quadword (high kept), or store it.
fn movlp(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let src = cpu.vread(i, 1)?;
    let v = if i.op_kind(0) == OpKind::Register {
        merge_low(cpu.s.fpu.xmm[xmm_op(i, 0)], src, 8)
    } else {
        trunc(src, 8)
    };
    cpu.vwrite(i, 0, v)
}

/// MOVHPS/MOVHPD: load the high quadword (low kept), or store it.
fn movhp(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let src = cpu.vread(i, 1)?;
    let v = if i.op_kind(0) == OpKind::Register {
        set(cpu.s.fpu.xmm[xmm_op(i, 0)], 8, 1, src as u64)
    } else {
        src >> 64
    };
    cpu.vwrite(i, 0, v)
}

fn movhlps(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary(cpu, i, |a, b, _| set(a, 8, 0, get(b, 8, 1)))
}

fn movlhps(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary(cpu, i, |a, b, _| set(a, 8, 1, get(b, 8, 0)))
}

/// Gather 32-bit lanes of `b` by index.
fn dwords(b: u128, idx: [usize; 4]) -> u128 {
    idx.iter()
        .enumerate()
        .fold(0, |r, (k, &j)| set(r, 4, k, get(b, 4, j)))
}

fn movddup(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    unary(cpu, i, |b, _| {
        let lo = get(b, 8, 0);
        set(u128::from(lo), 8, 1, lo)
    })
}

fn movshdup(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    unary(cpu, i, |b, _| dwords(b, [1, 1, 3, 3]))
}

fn movsldup(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    unary(cpu, i, |b, _| dwords(b, [0, 0, 2, 2]))
}

/// The sign bits of the `w`-byte lanes of `v` (over `bytes` bytes) as an integer.
fn sign_mask(v: u128, bytes: usize, w: usize) -> u64 {
    (0..bytes / w).fold(0, |m, k| m | ((get(v, w, k) >> (8 * w - 1)) << k))
}

/// MOVMSKPS/MOVMSKPD/PMOVMSKB r, xmm|mm: the lane sign bits, zero-extended into the GPR.
fn movmsk(cpu: &mut Cpu, i: &Instruction, w: usize) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let bytes = if i.op_register(1).is_mm() { 8 } else { 16 };
    let v = cpu.vread(i, 1)?;
    // The mask is zero-extended into the whole 64-bit register.
    cpu.set_reg(i.op_register(0).full_register(), sign_mask(v, bytes, w));
    Ok(())
}

fn movmskps(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    movmsk(cpu, i, 4)
}

fn movmskpd(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    movmsk(cpu, i, 8)
}

fn pmovmskb(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    movmsk(cpu, i, 1)
}

/// PEXTRB/W/D/Q and EXTRACTPS: lane imm8 (modulo the lane count) of the source vector to a
/// GPR (zero-extended to its full width for 32-bit destinations) or memory.
fn pextr<const W: usize>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let bytes = if i.op_register(1).is_mm() { 8 } else { 16 };
    let k = usize::from(i.immediate8()) % (bytes / W);
    let v = get(cpu.vread(i, 1)?, W, k);
    if i.op_kind(0) == OpKind::Register {
        cpu.set_reg(i.op_register(0).full_register(), v);
        Ok(())
    } else {
        cpu.vwrite(i, 0, v.into())
    }
}

/// PINSRB/W/D/Q: a GPR or memory value into lane imm8 of the destination.
fn pinsr<const W: usize>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary_imm(cpu, i, |a, b, imm, bytes| {
        let k = usize::from(imm) % (bytes / W);
        set(a, W, k, b as u64)
    })
}

/// INSERTPS: source dword imm8[7:6] (register form; memory gives a dword) into destination
/// lane imm8[5:4], then zero the lanes set in imm8[3:0].
fn insertps(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let from_reg = i.op_kind(1) == OpKind::Register;
    binary_imm(cpu, i, |a, b, imm, _| {
        let src = if from_reg {
            get(b, 4, usize::from(imm >> 6))
        } else {
            get(b, 4, 0)
        };
        let mut r = set(a, 4, usize::from((imm >> 4) & 3), src);
        for k in 0..4 {
            if imm & (1 << k) != 0 {
                r = set(r, 4, k, 0);
            }
        }
        r
    })
}

/// Interleave lanes of `a` and `b` starting at lane `first`.
fn interleave(a: u128, b: u128, bytes: usize, w: usize, first: usize) -> u128 {
    let mut r = 0;
    for k in 0..bytes / w / 2 {
        r = set(r, w, 2 * k, get(a, w, first + k));
        r = set(r, w, 2 * k + 1, get(b, w, first + k));
    }
    r
}

fn unpack_low<const W: usize>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary(cpu, i, |a, b, bytes| interleave(a, b, bytes, W, 0))
}

fn unpack_high<const W: usize>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary(cpu, i, |a, b, bytes| {
        interleave(a, b, bytes, W, bytes / W / 2)
    })
}

/// Four 2-bit selectors of imm8 over `n`-lane groups: `out[k] = src[sel_k]`.
fn select4(src: u128, w: usize, base: usize, imm: u8) -> [u64; 4] {
    std::array::from_fn(|k| get(src, w, base + usize::from((imm >> (2 * k)) & 3)))
}

fn pshufd(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary_imm(cpu, i, |_, b, imm, _| {
        let d = select4(b, 4, 0, imm);
        (0..4).fold(0, |r, k| set(r, 4, k, d[k]))
    })
}

fn pshufw(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary_imm(cpu, i, |_, b, imm, _| {
        let d = select4(b, 2, 0, imm);
        (0..4).fold(0, |r, k| set(r, 2, k, d[k]))
    })
}

fn pshuflw(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary_imm(cpu, i, |_, b, imm, _| {
        let d = select4(b, 2, 0, imm);
        (0..4).fold(b, |r, k| set(r, 2, k, d[k]))
    })
}

fn pshufhw(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary_imm(cpu, i, |_, b, imm, _| {
        let d = select4(b, 2, 4, imm);
        (0..4).fold(b, |r, k| set(r, 2, 4 + k, d[k]))
    })
}

/// SHUFPS: lanes 0-1 from the destination, 2-3 from the source, by imm8 selectors.
fn shufps(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary_imm(cpu, i, |a, b, imm, _| {
        let lo = select4(a, 4, 0, imm);
        let hi = select4(b, 4, 0, imm);
        let r = set(set(0, 4, 0, lo[0]), 4, 1, lo[1]);
        set(set(r, 4, 2, hi[2]), 4, 3, hi[3])
    })
}

fn shufpd(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary_imm(cpu, i, |a, b, imm, _| {
        let lo = get(a, 8, usize::from(imm & 1));
        let hi = get(b, 8, usize::from((imm >> 1) & 1));
        set(u128::from(lo), 8, 1, hi)
    })
}

/// PSHUFB: each destination byte from the byte its selector names, or zero when the
/// selector's top bit is set.
fn pshufb(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary(cpu, i, |a, b, bytes| {
        let mut r = 0;
        for k in 0..bytes {
            let sel = get(b, 1, k);
            if sel & 0x80 == 0 {
                r = set(r, 1, k, get(a, 1, (sel as usize) & (bytes - 1)));
            }
        }
        r
    })
}

/// PALIGNR: the concatenation destination:source shifted right by imm8 bytes.
fn palignr(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary_imm(cpu, i, |a, b, imm, bytes| {
        let n = usize::from(imm);
        let mut r = 0;
        for k in 0..bytes {
            let j = k + n;
            let byte = if j < bytes {
                get(b, 1, j)
            } else if j < 2 * bytes {
                get(a, 1, j - bytes)
            } else {
                0
            };
            r = set(r, 1, k, byte);
        }
        r
    })
}

/// BLENDPS/BLENDPD/PBLENDW: lane k from the source when imm8 bit k is set.
fn blend_imm<const W: usize>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binary_imm(cpu, i, |a, b, imm, bytes| {
        (0..bytes / W).fold(a, |r, k| {
            if imm & (1 << k) != 0 {
                set(r, W, k, get(b, W, k))
            } else {
                r
            }
        })
    })
}

/// BLENDVPS/BLENDVPD/PBLENDVB: lane k from the source when the top bit of XMM0's lane k is
/// set.
fn blend_var<const W: usize>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let sel = cpu.s.fpu.xmm[0];
    binary(cpu, i, |a, b, bytes| {
        (0..bytes / W).fold(a, |r, k| {
            if get(sel, W, k) >> (8 * W - 1) != 0 {
                set(r, W, k, get(b, W, k))
            } else {
                r
            }
        })
    })
}

/// PMOVSX/PMOVZX: the low lanes of `F` bytes widened to `T` bytes.
fn pmovx<const F: usize, const T: usize, const SIGNED: bool>(
    cpu: &mut Cpu,
    i: &Instruction,
) -> Result<(), Exception> {
    unary(cpu, i, |b, _| {
        (0..16 / T).fold(0, |r, k| {
            let v = if SIGNED {
                sget(b, F, k) as u64
            } else {
                get(b, F, k)
            };
            set(r, T, k, v)
        })
    })
}

/// MASKMOVQ/MASKMOVDQU: store the bytes of operand 1 whose mask byte (operand 2) has its top
/// bit set, at DS:rDI (segment override allowed), byte by byte.
fn maskmov(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let bytes = if i.op_register(1).is_mm() { 8 } else { 16 };
    let data = cpu.vread(i, 1)?;
    let mask = cpu.vread(i, 2)?;
    let abits = match i.op_kind(0) {
        OpKind::MemorySegDI => 16,
        OpKind::MemorySegEDI => 32,
        _ => 64,
    };
    let di = cpu.s.gpr[7];
    let seg = seg_of(i.memory_segment());
    for k in 0..bytes {
        if get(mask, 1, k) & 0x80 != 0 {
            let off = di.wrapping_add(k as u64) & crate::cpu::mask(abits);
            cpu.write_mem(seg, off, 8, get(data, 1, k))?;
        }
    }
    Ok(())
}
