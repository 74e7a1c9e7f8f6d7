//! Flag-control and miscellaneous instructions: CLC/STC/CMC/SALC/CLD/STD, CLI/STI (IOPL rules,
//! interrupt shadow), HLT, CPUID, IN/OUT (IOPL and the TSS I/O permission bitmap), INT n,
//! INT3, INTO, INT1, UD0/UD1/UD2, RDTSC/RDTSCP.

use crate::cpu::Cpu;
use crate::exec::Handler;
use crane86_x86::flags;
use crane86_x86::regs::cr4;
use crane86_x86::regs::gpr::{RAX, RBX, RCX, RDX};
use crane86_x86::{Exception, Vector};
use iced_x86::{Instruction, Mnemonic, OpKind};

pub fn handler(i: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match i.mnemonic() {
        Clc => clc,
        Stc => stc,
        Cmc => cmc,
        Salc => salc,
        Cld => cld,
        Std => std_,
        Cli => cli,
        Sti => sti,
        Hlt => hlt,
        Cpuid => cpuid,
        In => in_,
        Out => out,
        Int => int_n,
        Int3 => int3,
        Into => into,
        Int1 => int1,
        Ud0 | Ud1 | Ud2 => ud,
        Rdtsc => rdtsc,
        Rdtscp => rdtscp,
        _ => return None,
    })
}

fn clc(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    cpu.set_flag(flags::CF, false);
    Ok(())
}
fn stc(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    cpu.set_flag(flags::CF, true);
    Ok(())
}
fn cmc(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    let c = cpu.cf();
    cpu.set_flag(flags::CF, !c);
    Ok(())
}
/// SALC (undocumented D6, outside 64-bit mode): AL = CF ? 0xFF : 0; flags unchanged.
fn salc(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    let al = if cpu.cf() { 0xFF } else { 0 };
    cpu.set_gpr(RAX, 8, al);
    Ok(())
}
fn cld(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    cpu.s.rflags &= !flags::DF;
    Ok(())
}
fn std_(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    cpu.s.rflags |= flags::DF;
    Ok(())
}

/// IOPL-sensitive instructions (CLI/STI) are allowed when CPL <= IOPL (and always in real
/// mode); in V86 mode they need IOPL = 3.
fn iopl_ok(cpu: &Cpu) -> bool {
    !cpu.s.protected()
        || (if cpu.s.v86() {
            cpu.s.iopl() == 3
        } else {
            cpu.cpl() <= cpu.s.iopl()
        })
}

fn cli(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    if !iopl_ok(cpu) {
        return Err(Exception::gp0());
    }
    cpu.s.rflags &= !flags::IF;
    Ok(())
}

fn sti(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    if !iopl_ok(cpu) {
        return Err(Exception::gp0());
    }
    if cpu.s.rflags & flags::IF == 0 {
        cpu.s.rflags |= flags::IF;
        cpu.step.shadow = true;
    }
    Ok(())
}

fn hlt(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    if cpu.cpl() != 0 {
        return Err(Exception::gp0());
    }
    cpu.step.halt = true;
    Ok(())
}

fn cpuid(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    let leaf = cpu.s.gpr[RAX] as u32;
    let sub = cpu.s.gpr[RCX] as u32;
    let apic_id = 0;
    let r = crane86_x86::cpuid::cpuid(cpu.model, leaf, sub, apic_id, cpu.s.cr4 & cr4::OSXSAVE != 0);
    cpu.s.gpr[RAX] = u64::from(r[0]);
    cpu.s.gpr[RBX] = u64::from(r[1]);
    cpu.s.gpr[RCX] = u64::from(r[2]);
    cpu.s.gpr[RDX] = u64::from(r[3]);
    Ok(())
}

impl Cpu<'_> {
    /// Check I/O permission for `bytes` at `port`: allowed when not protected, or CPL <= IOPL
    /// outside V86 mode; otherwise every bit of the TSS I/O bitmap must be clear.
    pub fn check_io(&mut self, port: u16, bytes: u32) -> Result<(), Exception> {
        if !self.s.protected() || (!self.s.v86() && self.cpl() <= self.s.iopl()) {
            return Ok(());
        }
        let tr = self.s.tr;
        // Only a 32/64-bit TSS has an I/O bitmap.
        if tr.seg_type() & 8 == 0 || tr.limit < 0x67 {
            return Err(Exception::gp0());
        }
        let base = self.read_sys(tr.base + 0x66, 16)?;
        let first = base + u64::from(port / 8);
        if first + 1 > u64::from(tr.limit) {
            return Err(Exception::gp0());
        }
        let bitmap = self.read_sys(tr.base + first, 16)?;
        let bits = ((1u64 << bytes) - 1) << (port % 8);
        if bitmap & bits != 0 {
            return Err(Exception::gp0());
        }
        Ok(())
    }
}

fn port_of(cpu: &Cpu, i: &Instruction, n: u32) -> u16 {
    if i.op_kind(n) == OpKind::Register {
        cpu.s.gpr[RDX] as u16
    } else {
        i.immediate8() as u16
    }
}

fn in_(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 0);
    let port = port_of(cpu, i, 1);
    cpu.check_io(port, bits / 8)?;
    cpu.sync_platform_time();
    let v = cpu.plat.pio_read(port, (bits / 8) as u8);
    cpu.set_reg(i.op0_register(), u64::from(v));
    Ok(())
}

fn out(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 1);
    let port = port_of(cpu, i, 0);
    cpu.check_io(port, bits / 8)?;
    let v = cpu.reg(i.op1_register()) as u32;
    cpu.sync_platform_time();
    cpu.plat.pio_write(port, (bits / 8) as u8, v);
    cpu.step.action = true;
    Ok(())
}

fn int_n(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.software_interrupt(i.immediate8())
}

fn int3(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    cpu.software_interrupt(Vector::Breakpoint as u8)
}

fn into(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    if cpu.flags() & flags::OF != 0 {
        cpu.software_interrupt(Vector::Overflow as u8)?;
    }
    Ok(())
}

fn int1(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    // ICEBP: a #DB trap delivered like a hardware exception (no DPL check).
    cpu.s.rip = cpu.next_rip;
    cpu.deliver_trap(Vector::Debug as u8);
    cpu.next_rip = cpu.s.rip;
    cpu.step.delivered = true;
    Ok(())
}

fn ud(_: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    Err(Exception::ud())
}

impl Cpu<'_> {
    /// The guest TSC: 1 GHz nominal (one tick per guest nanosecond) plus the TSC offset.
    pub fn tsc(&self) -> u64 {
        self.plat.now_ns().wrapping_add(self.s.msr.tsc_offset)
    }

    /// Report the retired-instruction count to the platform before a time-visible access
    /// (port I/O, MMIO, RDTSC), so icount time advances within a run.
    pub fn sync_platform_time(&mut self) {
        self.plat.sync_retired_instructions(self.stats.instructions);
    }
}

fn rdtsc(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    if cpu.s.cr4 & cr4::TSD != 0 && cpu.cpl() != 0 && cpu.s.protected() {
        return Err(Exception::gp0());
    }
    cpu.sync_platform_time();
    let t = cpu.tsc();
    cpu.s.gpr[RAX] = t & 0xFFFF_FFFF;
    cpu.s.gpr[RDX] = t >> 32;
    Ok(())
}

fn rdtscp(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    rdtsc(cpu, i)?;
    cpu.s.gpr[RCX] = cpu.s.msr.tsc_aux & 0xFFFF_FFFF;
    Ok(())
}
