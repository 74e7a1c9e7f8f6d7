//! Exchange-and-compare instructions: XADD, CMPXCHG, CMPXCHG8B, CMPXCHG16B. crane86 runs one
//! vCPU per interpreter, so a LOCK prefix needs no extra work: each handler is one
//! indivisible step. Memory destinations are checked for write access before they are read
//! and are always written back (also when a comparison fails), as on hardware.

use crate::cpu::{mask, seg_of, Bits, Cpu};
use crate::exec::Handler;
use crane86_x86::cpuid::{ecx1, edx1};
use crane86_x86::flags::{self, CcOp};
use crane86_x86::regs::gpr::{RAX, RBX, RCX, RDX};
use crane86_x86::Exception;
use iced_x86::{Instruction, Mnemonic, OpKind};

pub fn handler(i: &Instruction) -> Option<Handler> {
    Some(match i.mnemonic() {
        Mnemonic::Xadd => xadd,
        Mnemonic::Cmpxchg => cmpxchg,
        Mnemonic::Cmpxchg8b => cmpxchg8b,
        Mnemonic::Cmpxchg16b => cmpxchg16b,
        _ => return None,
    })
}

fn xadd(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 0);
    let src_reg = i.op_register(1);
    let src = cpu.reg(src_reg) & mask(bits);
    cpu.rmw_op0(i, |cpu, dst| {
        let dst = dst & mask(bits);
        let sum = dst.wrapping_add(src) & mask(bits);
        cpu.set_lazy(CcOp::Add8, bits, sum, src, 0);
        // SRC <- DEST first, then DEST <- SUM (so `xadd r, r` ends with the sum).
        cpu.set_reg(src_reg, dst);
        Ok(Some(sum))
    })
}

fn cmpxchg(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 0);
    let src = cpu.reg(i.op_register(1)) & mask(bits);
    let acc = cpu.gpr(RAX, bits);
    let mut mismatch = None;
    cpu.rmw_op0(i, |cpu, dst| {
        let dst = dst & mask(bits);
        cpu.set_lazy(CcOp::Sub8, bits, acc.wrapping_sub(dst), dst, 0);
        if acc == dst {
            Ok(Some(src))
        } else {
            mismatch = Some(dst);
            // A memory destination is written back unchanged; a register is left alone.
            Ok((i.op_kind(0) == OpKind::Memory).then_some(dst))
        }
    })?;
    if let Some(dst) = mismatch {
        cpu.set_gpr(RAX, bits, dst);
    }
    Ok(())
}

/// Compare (R/E)DX:(R/E)AX with the `2 * half`-bit memory operand; if equal store
/// (R/E)CX:(R/E)BX there and set ZF, else load it into (R/E)DX:(R/E)AX and clear ZF.
fn compare_exchange_wide(cpu: &mut Cpu, i: &Instruction, half: Bits) -> Result<(), Exception> {
    let off = cpu.ea(i);
    let bytes = 2 * half / 8;
    let lin = cpu.linear(seg_of(i.memory_segment()), off, bytes, true)?;
    if bytes == 16 && lin & 0xF != 0 {
        // CMPXCHG16B needs a 16-byte aligned operand.
        return Err(Exception::gp0());
    }
    let lo = cpu.read_lin_for_write(lin, half)?;
    let hi = cpu.read_lin_for_write(lin + u64::from(half / 8), half)?;
    let equal = lo == cpu.gpr(RAX, half) && hi == cpu.gpr(RDX, half);
    let (new_lo, new_hi) = if equal {
        (cpu.gpr(RBX, half), cpu.gpr(RCX, half))
    } else {
        (lo, hi)
    };
    cpu.write_lin(lin, half, new_lo)?;
    cpu.write_lin(lin + u64::from(half / 8), half, new_hi)?;
    if !equal {
        cpu.set_gpr(RAX, half, lo);
        cpu.set_gpr(RDX, half, hi);
    }
    cpu.set_flag(flags::ZF, equal);
    Ok(())
}

fn cmpxchg8b(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    if cpu.model.edx1 & edx1::CX8 == 0 {
        return Err(Exception::ud());
    }
    compare_exchange_wide(cpu, i, 32)
}

fn cmpxchg16b(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    if cpu.model.ecx1 & ecx1::CX16 == 0 {
        return Err(Exception::ud());
    }
    compare_exchange_wide(cpu, i, 64)
}
