//! x87 control instructions: FNINIT/FINIT, FLDCW, FNSTCW/FSTCW, FNSTSW/FSTSW (m16 and AX),
//! FNCLEX/FCLEX, FFREE/FFREEP, FINCSTP/FDECSTP, FNOP (and the 8087/287 FENI/FDISI/FSETPM,
//! which are no-ops from the 387 on), and WAIT/FWAIT, the point where pending unmasked
//! exceptions are delivered as #MF.

use super::st_op;
use crate::cpu::Cpu;
use crate::exec::Handler;
use crane86_x86::fpu::{fsw, tag};
use crane86_x86::regs::cr0;
use crane86_x86::{Exception, Vector};
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

pub fn handler(i: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match i.mnemonic() {
        Fninit => finit::<false>,
        Finit => finit::<true>,
        Fldcw => fldcw,
        Fnstcw => fstcw::<false>,
        Fstcw => fstcw::<true>,
        Fnstsw => fstsw::<false>,
        Fstsw => fstsw::<true>,
        Fnclex => fclex::<false>,
        Fclex => fclex::<true>,
        Ffree => ffree::<false>,
        Ffreep => ffree::<true>,
        Fincstp => fincstp::<1>,
        Fdecstp => fincstp::<7>,
        Fnop | Fneni | Fndisi | Fnsetpm | Feni | Fdisi | Fsetpm => fnop,
        Wait => fwait,
        _ => return None,
    })
}

/// Recompute ES and B from the exception flags and masks (after the control word or the
/// whole environment is loaded).
pub(crate) fn recompute_summary(cpu: &mut Cpu) {
    cpu.s.fpu.recompute_summary();
}

fn finit<const WAIT: bool>(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    cpu.x87_check(WAIT)?;
    cpu.s.fpu.finit();
    Ok(())
}

fn fldcw(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_check(true)?;
    let lin = cpu.x87_mem_lin(i, 2, false)?;
    let cw = cpu.read_lin(lin, 16)? as u16;
    // Bits 6 and 13..15 are reserved; bit 6 reads as 1 on the 387 and later.
    cpu.s.fpu.fcw = (cw & 0x1F3F) | 0x40;
    recompute_summary(cpu);
    Ok(())
}

fn fstcw<const WAIT: bool>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_check(WAIT)?;
    let cw = cpu.s.fpu.fcw;
    cpu.write_op(i, 0, u64::from(cw))
}

fn fstsw<const WAIT: bool>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_check(WAIT)?;
    let sw = cpu.s.fpu.fsw;
    if i.op_kind(0) == OpKind::Register {
        cpu.set_reg(Register::AX, u64::from(sw));
        Ok(())
    } else {
        cpu.write_op(i, 0, u64::from(sw))
    }
}

fn fclex<const WAIT: bool>(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    cpu.x87_check(WAIT)?;
    cpu.s.fpu.fsw &= !(fsw::EXCEPTIONS | fsw::SF | fsw::ES | fsw::B);
    Ok(())
}

fn ffree<const POP: bool>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_begin(i)?;
    let r = cpu.s.fpu.phys(st_op(i, 0));
    cpu.s.fpu.set_tag(r, tag::EMPTY);
    if POP {
        cpu.x87_pop();
    }
    Ok(())
}

/// FINCSTP (`DELTA` = 1) / FDECSTP (`DELTA` = 7): rotate TOP without touching tags; C1 = 0.
fn fincstp<const DELTA: u8>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_begin(i)?;
    let top = cpu.s.fpu.top().wrapping_add(DELTA) & 7;
    cpu.s.fpu.set_top(top);
    cpu.s.fpu.fsw &= !fsw::C1;
    Ok(())
}

fn fnop(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_begin(i)
}

/// WAIT/FWAIT: #NM when CR0.TS and CR0.MP are both set, then #MF if an unmasked x87
/// exception is pending (CR0.NE = 1 behaviour in every case).
fn fwait(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    if cpu.s.cr0 & (cr0::TS | cr0::MP) == (cr0::TS | cr0::MP) {
        return Err(Exception::nm());
    }
    if cpu.s.fpu.fsw & fsw::ES != 0 {
        return Err(Exception::new(Vector::X87Fpu));
    }
    Ok(())
}
