//! Near control transfer: JMP, Jcc, CALL, RET (near), LOOP/LOOPE/LOOPNE, JCXZ/JECXZ/JRCXZ.
//! Far transfers live in `ops::far`.

use crate::cpu::{mask, Cpu};
use crate::exec::Handler;
use crate::ops::data::cc_of;
use crane86_x86::regs::gpr::RCX;
use crane86_x86::{Exception, SegReg};
use iced_x86::{Instruction, Mnemonic, OpKind};

pub fn handler(i: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    let far = crate::ops::far::is_far_branch(i);
    Some(match i.mnemonic() {
        Jmp if !far => jmp,
        Ja | Jae | Jb | Jbe | Je | Jg | Jge | Jl | Jle | Jne | Jno | Jnp | Jns | Jo | Jp | Js => {
            jcc
        }
        Call if !far => call,
        Ret => ret,
        Loop | Loope | Loopne => loop_,
        Jcxz | Jecxz | Jrcxz => jcxz,
        _ => return None,
    })
}

/// Operand size in bits of a near branch: from the branch op kind or the r/m operand.
fn branch_bits(cpu: &Cpu, i: &Instruction) -> u32 {
    match i.op0_kind() {
        OpKind::NearBranch16 => 16,
        OpKind::NearBranch32 => 32,
        OpKind::NearBranch64 => 64,
        _ => cpu.op_bits(i, 0),
    }
}

impl Cpu<'_> {
    /// Set the next RIP to `target` after the CS-limit (legacy) or canonical (64-bit) check.
    #[inline]
    pub fn branch_to(&mut self, target: u64) -> Result<(), Exception> {
        if self.long64() {
            if ((target as i64) << 16 >> 16) as u64 != target {
                return Err(Exception::gp0());
            }
        } else if target > u64::from(self.s.seg[SegReg::Cs as usize].limit) {
            return Err(Exception::gp0());
        }
        self.next_rip = target;
        Ok(())
    }
}

fn target_of(cpu: &mut Cpu, i: &Instruction) -> Result<u64, Exception> {
    let bits = branch_bits(cpu, i);
    let t = match i.op0_kind() {
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
            i.near_branch_target()
        }
        _ => cpu.read_op(i, 0)?,
    };
    Ok(t & mask(bits))
}

fn jmp(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let t = target_of(cpu, i)?;
    cpu.branch_to(t)
}

fn jcc(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    if cpu.cond(cc_of(i)) {
        let t = target_of(cpu, i)?;
        cpu.branch_to(t)?;
    }
    Ok(())
}

fn call(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = branch_bits(cpu, i);
    let t = target_of(cpu, i)?;
    let ret = cpu.next_rip;
    cpu.branch_to(t)?;
    cpu.push(ret, bits)
}

fn ret(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let imm = if i.op_count() == 1 {
        i.immediate16()
    } else {
        0
    };
    let bits = ((i.stack_pointer_increment() as u32).wrapping_sub(u32::from(imm))) * 8;
    let t = cpu.peek(0, bits)?;
    cpu.branch_to(t)?;
    cpu.adjust_sp(u64::from(bits / 8) + u64::from(imm));
    Ok(())
}

/// Counter register width of LOOP/JCXZ (the address size).
fn counter_bits(i: &Instruction) -> u32 {
    match i.mnemonic() {
        Mnemonic::Jcxz => 16,
        Mnemonic::Jecxz => 32,
        Mnemonic::Jrcxz => 64,
        _ => {
            let name = format!("{:?}", i.code());
            if name.ends_with("_RCX") {
                64
            } else if name.ends_with("_ECX") {
                32
            } else {
                16
            }
        }
    }
}

fn loop_(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let cb = counter_bits(i);
    let c = cpu.gpr(RCX, cb).wrapping_sub(1) & mask(cb);
    let zf = cpu.cond(4);
    let take = c != 0
        && match i.mnemonic() {
            Mnemonic::Loope => zf,
            Mnemonic::Loopne => !zf,
            _ => true,
        };
    if take {
        let t = target_of(cpu, i)?;
        cpu.branch_to(t)?;
    }
    cpu.set_gpr(RCX, cb, c);
    Ok(())
}

fn jcxz(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    if cpu.gpr(RCX, counter_bits(i)) == 0 {
        let t = target_of(cpu, i)?;
        cpu.branch_to(t)?;
    }
    Ok(())
}
