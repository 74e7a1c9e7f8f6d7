//! Stack instructions: PUSH/POP (registers, memory, immediates, segment registers),
//! PUSHF/POPF with the IOPL and V86 rules, PUSHA/POPA, ENTER/LEAVE.

use crate::cpu::{mask, seg_of, Cpu};
use crate::exec::Handler;
use crane86_x86::flags;
use crane86_x86::regs::gpr::{RBP, RSP};
use crane86_x86::{Exception, SegReg};
use iced_x86::{Instruction, Mnemonic, OpKind};

pub fn handler(i: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match i.mnemonic() {
        Push => push,
        Pop => pop,
        Pushf | Pushfd | Pushfq => pushf,
        Popf | Popfd | Popfq => popf,
        Pusha | Pushad => pusha,
        Popa | Popad => popa,
        Enter => enter,
        Leave => leave,
        _ => return None,
    })
}

/// Bytes pushed/popped by a PUSH/POP-like instruction.
fn size_bits(i: &Instruction) -> u32 {
    (i.stack_pointer_increment().unsigned_abs()) * 8
}

fn push(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = size_bits(i);
    let v = cpu.read_op(i, 0)? & mask(bits);
    cpu.push(v, bits)
}

fn pop(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = size_bits(i);
    match i.op0_kind() {
        OpKind::Register if i.op0_register().is_segment_register() => {
            let seg = seg_of(i.op0_register());
            let v = cpu.peek(0, bits)? as u16;
            cpu.load_segment(seg, v)?;
            cpu.adjust_sp(u64::from(bits / 8));
            if seg == SegReg::Ss {
                cpu.step.shadow = true;
                cpu.step.ss_load = true;
            }
            Ok(())
        }
        OpKind::Register => {
            let v = cpu.pop(bits)?;
            cpu.set_reg(i.op0_register(), v);
            Ok(())
        }
        _ => {
            // POP m: the address is computed with the incremented rSP.
            let v = cpu.peek(0, bits)?;
            let old = cpu.s.gpr[RSP];
            cpu.adjust_sp(u64::from(bits / 8));
            let r = cpu.write_op(i, 0, v);
            if r.is_err() {
                cpu.s.gpr[RSP] = old;
            }
            r
        }
    }
}

fn pushf(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    if cpu.s.v86() && cpu.s.iopl() < 3 {
        return Err(Exception::gp0());
    }
    let bits = size_bits(i);
    let f = cpu.flags() & !(flags::VM | flags::RF);
    cpu.push(f & mask(bits), bits)
}

fn popf(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    if cpu.s.v86() && cpu.s.iopl() < 3 {
        return Err(Exception::gp0());
    }
    let bits = size_bits(i);
    let v = cpu.pop(bits)?;
    cpu.write_flags_checked(v, bits);
    Ok(())
}

impl Cpu<'_> {
    /// Load RFLAGS from a POPF/IRET-style image of `bits` width with the privilege rules of
    /// POPF: IOPL changes only at CPL 0, IF only when CPL <= IOPL; VM, RF, VIF, VIP never.
    pub fn write_flags_checked(&mut self, v: u64, bits: u32) {
        let cur = self.flags();
        let mut writable = flags::ARITH | flags::TF | flags::DF | flags::NT | flags::AC | flags::ID;
        let cpl = self.cpl();
        if !self.s.protected() || cpl == 0 {
            writable |= flags::IOPL | flags::IF;
        } else if cpl <= self.s.iopl() {
            writable |= flags::IF;
        }
        if self.s.v86() {
            // IOPL = 3 here (checked by the caller): IF writable, IOPL not.
            writable = (writable | flags::IF) & !flags::IOPL;
        }
        writable &= mask(bits);
        let nf = (cur & !writable) | (v & writable);
        if nf & flags::IF != 0 && cur & flags::IF == 0 {
            // Enabling interrupts: leave the block so pending interrupts are seen.
            self.step.end_block = true;
        }
        self.s.set_rflags(nf);
    }
}

fn pusha(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = if i.mnemonic() == Mnemonic::Pushad {
        32
    } else {
        16
    };
    let sp = cpu.s.gpr[RSP];
    let sb = cpu.stack_bits();
    // Check every slot before writing anything; a 16-bit SP wraps within the segment, so
    // only a slot straddling offset 0xFFFF (SP odd and < 16) faults, as on hardware.
    for k in 1..=8u64 {
        let slot = sp.wrapping_sub(u64::from(bits / 8) * k) & mask(sb);
        cpu.linear(SegReg::Ss, slot, bits / 8, true)?;
    }
    for r in 0..8 {
        let v = if r == RSP { sp } else { cpu.s.gpr[r] };
        cpu.push(v & mask(bits), bits)?;
    }
    Ok(())
}

fn popa(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = if i.mnemonic() == Mnemonic::Popad {
        32
    } else {
        16
    };
    let mut vals = [0u64; 8];
    for (k, v) in vals.iter_mut().enumerate() {
        *v = cpu.peek(u64::from(bits / 8) * k as u64, bits)?;
    }
    for (k, v) in vals.iter().enumerate() {
        let r = 7 - k;
        if r != RSP {
            cpu.set_gpr(r, bits, *v);
        }
    }
    cpu.adjust_sp(u64::from(bits / 8) * 8);
    Ok(())
}

fn enter(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = match i.code() {
        iced_x86::Code::Enterw_imm16_imm8 => 16,
        iced_x86::Code::Enterd_imm16_imm8 => 32,
        _ => 64,
    };
    let size = u64::from(i.immediate16());
    let level = u64::from(i.immediate8_2nd() & 31);
    let sb = cpu.stack_bits();
    let bytes = u64::from(bits / 8);
    let old_sp = cpu.s.gpr[RSP];
    let old_bp = cpu.s.gpr[RBP];
    let r = (|| {
        cpu.push(old_bp & mask(bits), bits)?;
        let frame = cpu.s.gpr[RSP] & mask(sb);
        if level > 0 {
            let mut bp = old_bp;
            for _ in 1..level {
                bp = bp.wrapping_sub(bytes) & mask(sb);
                let v = cpu.read_mem(SegReg::Ss, bp, bits)?;
                cpu.push(v, bits)?;
            }
            cpu.push(frame, bits)?;
        }
        let new_sp = cpu.s.gpr[RSP].wrapping_sub(size) & mask(sb);
        // The final stack pointer must be valid (checked as a write of one slot).
        cpu.linear(SegReg::Ss, new_sp, 1, true)
            .or_else(|e| if size == 0 { Ok(0) } else { Err(e) })?;
        cpu.set_gpr(RBP, bits, frame);
        cpu.set_gpr(RSP, sb, new_sp);
        Ok(())
    })();
    if r.is_err() {
        cpu.s.gpr[RSP] = old_sp;
        cpu.s.gpr[RBP] = old_bp;
    }
    r
}

fn leave(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = match i.code() {
        iced_x86::Code::Leavew => 16,
        iced_x86::Code::Leaved => 32,
        _ => 64,
    };
    let sb = cpu.stack_bits();
    let bp = cpu.s.gpr[RBP] & mask(sb);
    let v = cpu.read_mem(SegReg::Ss, bp, bits)?;
    cpu.set_gpr(RSP, sb, bp.wrapping_add(u64::from(bits / 8)));
    cpu.set_gpr(RBP, bits, v);
    Ok(())
}
