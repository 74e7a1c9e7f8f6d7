//! Data movement: MOV (incl. segment registers), MOVZX/MOVSX/MOVSXD, LEA, XCHG, CMOVcc,
//! SETcc, XLAT, BSWAP, CBW..CQO, LAHF/SAHF, NOP and hint NOPs, MOVBE.

use crate::cpu::{addr_bits, mask, seg_of, sign_extend, Cpu};
use crate::exec::Handler;
use crane86_x86::flags;
use crane86_x86::regs::gpr::{RAX, RDX};
use crane86_x86::{Exception, SegReg};
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

pub fn handler(i: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match i.mnemonic() {
        Mov if is_seg_op(i, 0) => mov_to_seg,
        Mov if is_seg_op(i, 1) => mov_from_seg,
        Mov if is_special_reg(i) => return None,
        Mov => mov,
        Movzx => movzx,
        Movsx | Movsxd => movsx,
        Lea => lea,
        Xchg => xchg,
        Nop | Pause | Prefetchnta | Prefetcht0 | Prefetcht1 | Prefetcht2 | Prefetchw | Lfence
        | Sfence | Mfence => nop,
        // CET is not advertised: ENDBR32/ENDBR64 execute as the hint NOPs they encode.
        Endbr32 | Endbr64 => nop,
        Cmova | Cmovae | Cmovb | Cmovbe | Cmove | Cmovg | Cmovge | Cmovl | Cmovle | Cmovne
        | Cmovno | Cmovnp | Cmovns | Cmovo | Cmovp | Cmovs => cmovcc,
        Seta | Setae | Setb | Setbe | Sete | Setg | Setge | Setl | Setle | Setne | Setno
        | Setnp | Setns | Seto | Setp | Sets => setcc,
        Xlatb => xlat,
        Bswap => bswap,
        Cbw | Cwde | Cdqe => cbw,
        Cwd | Cdq | Cqo => cwd,
        Lahf => lahf,
        Sahf => sahf,
        Movbe => movbe,
        _ => return None,
    })
}

fn is_seg_op(i: &Instruction, n: u32) -> bool {
    i.op_count() > n && i.op_kind(n) == OpKind::Register && i.op_register(n).is_segment_register()
}

fn is_special_reg(i: &Instruction) -> bool {
    (0..i.op_count()).any(|n| {
        i.op_kind(n) == OpKind::Register && {
            let r = i.op_register(n);
            r.is_cr() || r.is_dr() || r.is_tr()
        }
    })
}

/// Condition code (Jcc encoding order 0..15) of a CMOVcc/SETcc/Jcc instruction.
pub fn cc_of(i: &Instruction) -> u8 {
    use iced_x86::ConditionCode::*;
    match i.condition_code() {
        o => 0,
        no => 1,
        b => 2,
        ae => 3,
        e => 4,
        ne => 5,
        be => 6,
        a => 7,
        s => 8,
        ns => 9,
        p => 10,
        np => 11,
        l => 12,
        ge => 13,
        le => 14,
        g => 15,
        None => unreachable!("instruction without condition code"),
    }
}

fn nop(_cpu: &mut Cpu, _i: &Instruction) -> Result<(), Exception> {
    Ok(())
}

fn mov(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let v = cpu.read_op(i, 1)?;
    cpu.write_op(i, 0, v)
}

fn mov_to_seg(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let seg = seg_of(i.op_register(0));
    if seg == SegReg::Cs {
        return Err(Exception::ud());
    }
    let sel = cpu.read_op(i, 1)? as u16;
    cpu.load_segment(seg, sel)?;
    if seg == SegReg::Ss {
        cpu.step.shadow = true;
        cpu.step.ss_load = true;
    }
    Ok(())
}

fn mov_from_seg(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let sel = u64::from(cpu.s.seg[seg_of(i.op_register(1)) as usize].selector);
    if i.op_kind(0) == OpKind::Register {
        // To a 32/64-bit register the selector is zero-extended.
        let r = i.op_register(0);
        cpu.set_reg(r, sel);
        Ok(())
    } else {
        let off = cpu.ea(i);
        cpu.write_mem(seg_of(i.memory_segment()), off, 16, sel)
    }
}

fn movzx(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let v = cpu.read_op(i, 1)?;
    cpu.write_op(i, 0, v)
}

fn movsx(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let sbits = cpu.op_bits(i, 1);
    let dbits = cpu.op_bits(i, 0);
    let v = sign_extend(cpu.read_op(i, 1)?, sbits) as u64 & mask(dbits);
    cpu.write_op(i, 0, v)
}

fn lea(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let v = cpu.ea(i);
    cpu.write_op(i, 0, v)
}

fn xchg(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let b = cpu.read_op(i, 1)?;
    if i.op_kind(1) == OpKind::Memory {
        // Memory operand may be op 1: do the RMW on it.
        let bits = cpu.op_bits(i, 1);
        let off = cpu.ea(i);
        let lin = cpu.linear(seg_of(i.memory_segment()), off, bits / 8, true)?;
        let a = cpu.reg(i.op_register(0));
        cpu.write_lin(lin, bits, a)?;
        cpu.set_reg(i.op_register(0), b);
        return Ok(());
    }
    cpu.rmw_op0(i, |c, a| {
        if i.op_kind(1) == OpKind::Register {
            c.set_reg(i.op_register(1), a);
        }
        Ok(Some(b))
    })
}

fn cmovcc(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    // The source is read (and may fault) whether or not the condition holds.
    let v = cpu.read_op(i, 1)?;
    if cpu.cond(cc_of(i)) {
        cpu.write_op(i, 0, v)
    } else {
        // A 32-bit destination is zero-extended even when the move does not happen.
        let r = i.op_register(0);
        if r.size() == 4 {
            let cur = cpu.reg(r);
            cpu.set_reg(r, cur);
        }
        Ok(())
    }
}

fn setcc(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let v = u64::from(cpu.cond(cc_of(i)));
    cpu.write_op(i, 0, v)
}

fn xlat(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let ab = addr_bits(i);
    let off = (cpu.reg(i.memory_base()).wrapping_add(cpu.s.gpr[RAX] & 0xFF)) & mask(ab);
    let v = cpu.read_mem(seg_of(i.memory_segment()), off, 8)?;
    cpu.set_gpr(RAX, 8, v);
    Ok(())
}

fn bswap(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let r = i.op_register(0);
    let v = cpu.reg(r);
    let out = match r.size() {
        8 => v.swap_bytes(),
        4 => u64::from((v as u32).swap_bytes()),
        // BSWAP of a 16-bit register is undefined; hardware zeroes it.
        _ => 0,
    };
    cpu.set_reg(r, out);
    Ok(())
}

fn cbw(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let (from, to) = match i.mnemonic() {
        Mnemonic::Cbw => (8, 16),
        Mnemonic::Cwde => (16, 32),
        _ => (32, 64),
    };
    let v = sign_extend(cpu.s.gpr[RAX], from) as u64;
    cpu.set_gpr(RAX, to, v);
    Ok(())
}

fn cwd(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = match i.mnemonic() {
        Mnemonic::Cwd => 16,
        Mnemonic::Cdq => 32,
        _ => 64,
    };
    let neg = cpu.s.gpr[RAX] & (1u64 << (bits - 1)) != 0;
    cpu.set_gpr(RDX, bits, if neg { u64::MAX } else { 0 });
    Ok(())
}

fn lahf(cpu: &mut Cpu, _i: &Instruction) -> Result<(), Exception> {
    if cpu.long64() && cpu.model.ext_ecx & crane86_x86::cpuid::ext1::ECX_LAHF_LM == 0 {
        return Err(Exception::ud());
    }
    let f = cpu.flags() & 0xFF;
    cpu.set_reg(Register::AH, f | flags::RESERVED1);
    Ok(())
}

fn sahf(cpu: &mut Cpu, _i: &Instruction) -> Result<(), Exception> {
    if cpu.long64() && cpu.model.ext_ecx & crane86_x86::cpuid::ext1::ECX_LAHF_LM == 0 {
        return Err(Exception::ud());
    }
    let ah = cpu.reg(Register::AH);
    let which = flags::CF | flags::PF | flags::AF | flags::ZF | flags::SF;
    cpu.set_arith_flags(which, ah);
    Ok(())
}

fn movbe(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 0);
    let v = cpu.read_op(i, 1)?;
    let swapped = match bits {
        16 => u64::from((v as u16).swap_bytes()),
        32 => u64::from((v as u32).swap_bytes()),
        _ => v.swap_bytes(),
    };
    cpu.write_op(i, 0, swapped)
}
