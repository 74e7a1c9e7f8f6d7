//! Decimal (BCD) and ASCII adjust instructions: DAA DAS AAA AAS AAM AAD. All are invalid in
//! 64-bit mode, which the decoder already turns into #UD. AAM with a zero base raises #DE.
//!
//! Flags the SDM leaves undefined are computed as follows: DAA/DAS clear OF; AAA/AAS set SF
//! ZF PF from the adjusted AL and clear OF; AAM/AAD clear OF AF CF.

use crate::cpu::Cpu;
use crate::exec::Handler;
use crane86_x86::flags::{self, zsp};
use crane86_x86::regs::gpr::RAX;
use crane86_x86::Exception;
use iced_x86::{Instruction, Mnemonic};

pub fn handler(i: &Instruction) -> Option<Handler> {
    Some(match i.mnemonic() {
        Mnemonic::Daa => daa,
        Mnemonic::Das => das,
        Mnemonic::Aaa => aaa,
        Mnemonic::Aas => aas,
        Mnemonic::Aam => aam,
        Mnemonic::Aad => aad,
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

fn al(cpu: &Cpu) -> u8 {
    cpu.s.gpr[RAX] as u8
}

fn af(cpu: &Cpu) -> bool {
    cpu.flags() & flags::AF != 0
}

fn daa(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    let old_al = al(cpu);
    let old_cf = cpu.cf();
    let mut v = old_al;
    let mut cf = false;
    let mut af_out = false;
    if old_al & 0xF > 9 || af(cpu) {
        let (sum, carry) = v.overflowing_add(6);
        v = sum;
        cf = old_cf || carry;
        af_out = true;
    }
    if old_al > 0x99 || old_cf {
        v = v.wrapping_add(0x60);
        cf = true;
    }
    cpu.set_gpr(RAX, 8, u64::from(v));
    let f = zsp(u64::from(v), 8) | flag_if(cf, flags::CF) | flag_if(af_out, flags::AF);
    cpu.set_arith_flags(flags::ARITH, f);
    Ok(())
}

fn das(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    let old_al = al(cpu);
    let old_cf = cpu.cf();
    let mut v = old_al;
    let mut cf = false;
    let mut af_out = false;
    if old_al & 0xF > 9 || af(cpu) {
        let (diff, borrow) = v.overflowing_sub(6);
        v = diff;
        cf = old_cf || borrow;
        af_out = true;
    }
    if old_al > 0x99 || old_cf {
        v = v.wrapping_sub(0x60);
        cf = true;
    }
    cpu.set_gpr(RAX, 8, u64::from(v));
    let f = zsp(u64::from(v), 8) | flag_if(cf, flags::CF) | flag_if(af_out, flags::AF);
    cpu.set_arith_flags(flags::ARITH, f);
    Ok(())
}

/// AAA (`add`) / AAS: adjust AX after an unpacked-BCD addition or subtraction.
fn ascii_adjust(cpu: &mut Cpu, add: bool) {
    let mut ax = cpu.gpr(RAX, 16) as u16;
    let adjust = ax & 0xF > 9 || af(cpu);
    if adjust {
        ax = if add {
            ax.wrapping_add(0x106)
        } else {
            // SDM: AX ← AX - 6 (AL's borrow reaches AH), then AH ← AH - 1; the 80286 does
            // the same (SingleStepTests 3F: AX=1D04, AF=1 gives 1B0E).
            ax.wrapping_sub(6).wrapping_sub(0x100)
        };
    }
    ax &= 0xFF0F;
    cpu.set_gpr(RAX, 16, u64::from(ax));
    let f = zsp(u64::from(ax & 0xFF), 8) | flag_if(adjust, flags::CF) | flag_if(adjust, flags::AF);
    cpu.set_arith_flags(flags::ARITH, f);
}

fn aaa(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    ascii_adjust(cpu, true);
    Ok(())
}

fn aas(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    ascii_adjust(cpu, false);
    Ok(())
}

fn aam(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let base = i.immediate8();
    if base == 0 {
        return Err(Exception::de());
    }
    let a = al(cpu);
    let v = (u16::from(a / base) << 8) | u16::from(a % base);
    cpu.set_gpr(RAX, 16, u64::from(v));
    cpu.set_arith_flags(flags::ARITH, zsp(u64::from(v & 0xFF), 8));
    Ok(())
}

fn aad(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let base = i.immediate8();
    let ax = cpu.gpr(RAX, 16);
    let v = ((ax & 0xFF) + ((ax >> 8) & 0xFF) * u64::from(base)) & 0xFF;
    cpu.set_gpr(RAX, 16, v);
    cpu.set_arith_flags(flags::ARITH, zsp(v, 8));
    Ok(())
}
