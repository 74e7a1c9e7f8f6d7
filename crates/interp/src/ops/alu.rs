//! Two-operand and one-operand integer ALU instructions: ADD ADC SUB SBB AND OR XOR CMP TEST
//! INC DEC NEG NOT, with lazily evaluated flags.

use crate::cpu::{mask, Cpu};
use crate::exec::Handler;
use crane86_x86::{flags::CcOp, Exception};
use iced_x86::{Instruction, Mnemonic};

pub fn handler(i: &Instruction) -> Option<Handler> {
    Some(match i.mnemonic() {
        Mnemonic::Add => add,
        Mnemonic::Adc => adc,
        Mnemonic::Sub => sub,
        Mnemonic::Sbb => sbb,
        Mnemonic::And => and,
        Mnemonic::Or => or,
        Mnemonic::Xor => xor,
        Mnemonic::Cmp => cmp,
        Mnemonic::Test => test,
        Mnemonic::Inc => inc,
        Mnemonic::Dec => dec,
        Mnemonic::Neg => neg,
        Mnemonic::Not => not,
        _ => return None,
    })
}

/// Common shape: op0 = op0 <op> op1, flags recorded lazily.
#[inline]
fn binop(
    cpu: &mut Cpu,
    i: &Instruction,
    write: bool,
    f: impl FnOnce(&mut Cpu, u64, u64, u32) -> u64,
) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 0);
    let src = cpu.read_op(i, 1)? & mask(bits);
    cpu.rmw_op0(i, |cpu, dst| {
        let r = f(cpu, dst, src, bits) & mask(bits);
        Ok(write.then_some(r))
    })
}

fn add(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binop(cpu, i, true, |c, a, b, bits| {
        let r = a.wrapping_add(b);
        c.set_lazy(CcOp::Add8, bits, r, b, 0);
        r
    })
}

fn adc(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binop(cpu, i, true, |c, a, b, bits| {
        let carry = u64::from(c.cf());
        let r = a.wrapping_add(b).wrapping_add(carry);
        c.set_lazy(CcOp::Adc8, bits, r, b, carry);
        r
    })
}

fn sub(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binop(cpu, i, true, |c, a, b, bits| {
        let r = a.wrapping_sub(b);
        c.set_lazy(CcOp::Sub8, bits, r, b, 0);
        r
    })
}

fn sbb(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    binop(cpu, i, true, |c, a, b, bits| {
        let borrow = u64::from(c.cf());
        let r = a.wrapping_sub(b).wrapping_sub(borrow);
        c.set_lazy(CcOp::Sbb8, bits, r, b, borrow);
        r
    })
}

fn cmp(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 0);
    let a = cpu.read_op(i, 0)? & mask(bits);
    let b = cpu.read_op(i, 1)? & mask(bits);
    cpu.set_lazy(CcOp::Sub8, bits, a.wrapping_sub(b), b, 0);
    Ok(())
}

fn test(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 0);
    let a = cpu.read_op(i, 0)?;
    let b = cpu.read_op(i, 1)?;
    cpu.set_lazy(CcOp::Logic8, bits, a & b, 0, 0);
    Ok(())
}

fn logic(cpu: &mut Cpu, i: &Instruction, f: fn(u64, u64) -> u64) -> Result<(), Exception> {
    binop(cpu, i, true, |c, a, b, bits| {
        let r = f(a, b);
        c.set_lazy(CcOp::Logic8, bits, r, 0, 0);
        r
    })
}

fn and(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    logic(cpu, i, |a, b| a & b)
}
fn or(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    logic(cpu, i, |a, b| a | b)
}
fn xor(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    logic(cpu, i, |a, b| a ^ b)
}

fn inc(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 0);
    cpu.rmw_op0(i, |c, a| {
        let r = a.wrapping_add(1) & mask(bits);
        let carry = u64::from(c.cf());
        c.set_lazy(CcOp::Inc8, bits, r, 1, carry);
        Ok(Some(r))
    })
}

fn dec(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 0);
    cpu.rmw_op0(i, |c, a| {
        let r = a.wrapping_sub(1) & mask(bits);
        let carry = u64::from(c.cf());
        c.set_lazy(CcOp::Dec8, bits, r, 1, carry);
        Ok(Some(r))
    })
}

fn neg(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 0);
    cpu.rmw_op0(i, |c, a| {
        let r = 0u64.wrapping_sub(a) & mask(bits);
        c.set_lazy(CcOp::Sub8, bits, r, a, 0);
        Ok(Some(r))
    })
}

fn not(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 0);
    cpu.rmw_op0(i, |_, a| Ok(Some(!a & mask(bits))))
}
