//! Bit instructions: BT BTS BTR BTC (register, immediate and memory bit bases with signed
//! bit offsets), BSF BSR, the counting instructions TZCNT LZCNT POPCNT, and the BMI1 group
//! (ANDN BEXTR BLSI BLSMSK BLSR), all advertised by the CPUID model.
//!
//! BSF/BSR with a zero source set ZF and leave the destination untouched (the Intel/AMD
//! behaviour the SDM calls undefined). Without ABM/BMI1 in the CPU model, LZCNT/TZCNT fall
//! back to BSR/BSF as on CPUs that ignore the F3 prefix.

use crate::cpu::{addr_bits, mask, seg_of, sign_bit, sign_extend, Bits, Cpu};
use crate::exec::Handler;
use crane86_x86::cpuid::{ebx7, ecx1, ext1};
use crane86_x86::flags::{self, zsp};
use crane86_x86::Exception;
use iced_x86::{Instruction, Mnemonic, OpKind};

pub fn handler(i: &Instruction) -> Option<Handler> {
    Some(match i.mnemonic() {
        Mnemonic::Bt => bt,
        Mnemonic::Bts => bts,
        Mnemonic::Btr => btr,
        Mnemonic::Btc => btc,
        Mnemonic::Bsf => bsf,
        Mnemonic::Bsr => bsr,
        Mnemonic::Tzcnt => tzcnt,
        Mnemonic::Lzcnt => lzcnt,
        Mnemonic::Popcnt => popcnt,
        Mnemonic::Andn => andn,
        Mnemonic::Bextr => bextr,
        Mnemonic::Blsi => blsi,
        Mnemonic::Blsmsk => blsmsk,
        Mnemonic::Blsr => blsr,
        _ => return None,
    })
}

fn flag_if(on: bool, bit: u64) -> u64 {
    if on {
        bit
    } else {
        0
    }
}

// ------------------------------------------------------------------ BT family

/// What a BT-family instruction does to the selected bit.
#[derive(Clone, Copy)]
enum BitOp {
    Test,
    Set,
    Reset,
    Complement,
}

fn apply(op: BitOp, v: u64, bit: u32) -> Option<u64> {
    let m = 1u64 << bit;
    match op {
        BitOp::Test => None,
        BitOp::Set => Some(v | m),
        BitOp::Reset => Some(v & !m),
        BitOp::Complement => Some(v ^ m),
    }
}

fn bit_op(cpu: &mut Cpu, i: &Instruction, op: BitOp) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 0);
    let offset = cpu.read_op(i, 1)?;
    let reg_offset = i.op_kind(1) == OpKind::Register;
    let cf;
    if i.op_kind(0) == OpKind::Memory && reg_offset {
        // A register bit offset is a signed bit index relative to the operand address and
        // may address memory outside it.
        let off = sign_extend(offset, bits);
        let word = off >> bits.trailing_zeros();
        let bit = (off & i64::from(bits - 1)) as u32;
        let ea = cpu.ea(i).wrapping_add((word * i64::from(bits / 8)) as u64) & mask(addr_bits(i));
        let seg = seg_of(i.memory_segment());
        let v = if matches!(op, BitOp::Test) {
            cpu.read_mem(seg, ea, bits)?
        } else {
            let lin = cpu.linear(seg, ea, bits / 8, true)?;
            let v = cpu.read_lin_for_write(lin, bits)?;
            if let Some(new) = apply(op, v, bit) {
                cpu.write_lin(lin, bits, new)?;
            }
            v
        };
        cf = (v >> bit) & 1 != 0;
    } else {
        let bit = (offset & u64::from(bits - 1)) as u32;
        let mut old = 0;
        if matches!(op, BitOp::Test) {
            old = cpu.read_op(i, 0)?;
        } else {
            cpu.rmw_op0(i, |_, v| {
                old = v;
                Ok(apply(op, v, bit))
            })?;
        }
        cf = (old >> bit) & 1 != 0;
    }
    // Only CF is defined; ZF is unaffected, OF SF AF PF are undefined (left alone).
    cpu.set_flag(flags::CF, cf);
    Ok(())
}

fn bt(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    bit_op(cpu, i, BitOp::Test)
}
fn bts(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    bit_op(cpu, i, BitOp::Set)
}
fn btr(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    bit_op(cpu, i, BitOp::Reset)
}
fn btc(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    bit_op(cpu, i, BitOp::Complement)
}

// ------------------------------------------------------------------ scans and counts

/// BSF (`forward`) / BSR: ZF = source is zero; the destination is written only otherwise.
fn bit_scan(cpu: &mut Cpu, i: &Instruction, forward: bool) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 0);
    let src = cpu.read_op(i, 1)? & mask(bits);
    if src == 0 {
        cpu.set_arith_flags(flags::ARITH, flags::ZF);
        return Ok(());
    }
    let index = if forward {
        src.trailing_zeros()
    } else {
        63 - src.leading_zeros()
    };
    cpu.set_reg(i.op_register(0), u64::from(index));
    // CF OF SF AF PF are undefined: derive SF/PF from the index like a logic result.
    cpu.set_arith_flags(flags::ARITH, zsp(u64::from(index), bits) & !flags::ZF);
    Ok(())
}

fn bsf(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    bit_scan(cpu, i, true)
}
fn bsr(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    bit_scan(cpu, i, false)
}

/// TZCNT/LZCNT: CF = source is zero, ZF = count is zero.
fn count_zeros(cpu: &mut Cpu, i: &Instruction, trailing: bool) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 0);
    let src = cpu.read_op(i, 1)? & mask(bits);
    let n = if trailing {
        if src == 0 {
            bits
        } else {
            src.trailing_zeros()
        }
    } else {
        src.leading_zeros() - (64 - bits)
    };
    cpu.set_reg(i.op_register(0), u64::from(n));
    cpu.set_arith_flags(
        flags::ARITH,
        flag_if(src == 0, flags::CF) | flag_if(n == 0, flags::ZF),
    );
    Ok(())
}

fn tzcnt(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    if cpu.model.ebx7 & ebx7::BMI1 == 0 {
        return bit_scan(cpu, i, true);
    }
    count_zeros(cpu, i, true)
}

fn lzcnt(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    if cpu.model.ext_ecx & ext1::ECX_ABM == 0 {
        return bit_scan(cpu, i, false);
    }
    count_zeros(cpu, i, false)
}

fn popcnt(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    if cpu.model.ecx1 & ecx1::POPCNT == 0 {
        return Err(Exception::ud());
    }
    let bits = cpu.op_bits(i, 0);
    let src = cpu.read_op(i, 1)? & mask(bits);
    cpu.set_reg(i.op_register(0), u64::from(src.count_ones()));
    cpu.set_arith_flags(flags::ARITH, flag_if(src == 0, flags::ZF));
    Ok(())
}

// ------------------------------------------------------------------ BMI1 (VEX-encoded)

/// VEX encodings are #UD in real and virtual-8086 mode and without BMI1 in the model.
fn bmi1_allowed(cpu: &Cpu) -> Result<(), Exception> {
    if !cpu.s.protected() || cpu.s.v86() || cpu.model.ebx7 & ebx7::BMI1 == 0 {
        return Err(Exception::ud());
    }
    Ok(())
}

/// Write the BMI1 result and flags: ZF, SF from the result, CF as given, OF = 0 (AF and
/// PF are undefined and cleared).
fn bmi1_result(cpu: &mut Cpu, i: &Instruction, bits: Bits, res: u64, cf: bool) {
    let res = res & mask(bits);
    cpu.set_reg(i.op_register(0), res);
    let f = flag_if(res == 0, flags::ZF)
        | flag_if(res & sign_bit(bits) != 0, flags::SF)
        | flag_if(cf, flags::CF);
    cpu.set_arith_flags(flags::ARITH, f);
}

fn andn(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    bmi1_allowed(cpu)?;
    let bits = cpu.op_bits(i, 0);
    let a = cpu.read_op(i, 1)?;
    let b = cpu.read_op(i, 2)?;
    bmi1_result(cpu, i, bits, !a & b, false);
    Ok(())
}

fn bextr(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    bmi1_allowed(cpu)?;
    let bits = cpu.op_bits(i, 0);
    let src = cpu.read_op(i, 1)? & mask(bits);
    let ctl = cpu.read_op(i, 2)?;
    let start = (ctl & 0xFF) as u32;
    let len = ((ctl >> 8) & 0xFF) as u32;
    let shifted = if start >= 64 { 0 } else { src >> start };
    let res = if len >= 64 {
        shifted
    } else {
        shifted & ((1u64 << len) - 1)
    };
    bmi1_result(cpu, i, bits, res, false);
    // SF is undefined for BEXTR; keep it cleared like ZF-only implementations.
    cpu.set_flag(flags::SF, false);
    Ok(())
}

fn blsi(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    bmi1_allowed(cpu)?;
    let bits = cpu.op_bits(i, 0);
    let src = cpu.read_op(i, 1)? & mask(bits);
    bmi1_result(cpu, i, bits, src & src.wrapping_neg(), src != 0);
    Ok(())
}

fn blsmsk(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    bmi1_allowed(cpu)?;
    let bits = cpu.op_bits(i, 0);
    let src = cpu.read_op(i, 1)? & mask(bits);
    bmi1_result(cpu, i, bits, src ^ src.wrapping_sub(1), src == 0);
    Ok(())
}

fn blsr(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    bmi1_allowed(cpu)?;
    let bits = cpu.op_bits(i, 0);
    let src = cpu.read_op(i, 1)? & mask(bits);
    bmi1_result(cpu, i, bits, src & src.wrapping_sub(1), src == 0);
    Ok(())
}
