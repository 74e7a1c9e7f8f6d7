//! x87 comparisons and classification: FCOM/FCOMP/FCOMPP, FUCOM/FUCOMP/FUCOMPP (quiet: only
//! SNaNs are invalid), FICOM/FICOMP (integer memory), FCOMI/FCOMIP/FUCOMI/FUCOMIP (result in
//! ZF/PF/CF), FTST and FXAM.

use super::softfloat::{self, Res};
use super::{has_mem, st_op, UNDERFLOW};
use crate::cpu::Cpu;
use crate::exec::Handler;
use crane86_x86::fpu::fsw;
use crane86_x86::{flags, Exception, F80};
use iced_x86::{Instruction, Mnemonic};
use std::cmp::Ordering;

pub fn handler(i: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match i.mnemonic() {
        Fcom | Ficom => fcom::<false, 0>,
        Fcomp | Ficomp => fcom::<false, 1>,
        Fcompp => fcom::<false, 2>,
        Fucom => fcom::<true, 0>,
        Fucomp => fcom::<true, 1>,
        Fucompp => fcom::<true, 2>,
        Fcomi => fcomi::<false, false>,
        Fcomip => fcomi::<false, true>,
        Fucomi => fcomi::<true, false>,
        Fucomip => fcomi::<true, true>,
        Ftst => ftst,
        Fxam => fxam,
        _ => return None,
    })
}

/// Compare `a` with `b`: `None` is unordered. `quiet` compares raise IE only for SNaNs.
fn compare(a: F80, b: F80, quiet: bool) -> (Option<Ordering>, u16) {
    if softfloat::is_unsupported(a) || softfloat::is_unsupported(b) {
        return (None, fsw::IE);
    }
    if softfloat::is_nan(a) || softfloat::is_nan(b) {
        let signaling = softfloat::is_snan(a) || softfloat::is_snan(b);
        return (None, if quiet && !signaling { 0 } else { fsw::IE });
    }
    let de = if softfloat::is_denormal(a) || softfloat::is_denormal(b) {
        fsw::DE
    } else {
        0
    };
    (
        softfloat::to_quad(a).partial_cmp(&softfloat::to_quad(b)),
        de,
    )
}

/// Condition codes C3/C2/C0 of a comparison (C1 cleared).
fn condition_codes(order: Option<Ordering>) -> u16 {
    match order {
        Some(Ordering::Greater) => 0,
        Some(Ordering::Less) => fsw::C0,
        Some(Ordering::Equal) => fsw::C3,
        None => fsw::C3 | fsw::C2 | fsw::C0,
    }
}

fn set_condition_codes(cpu: &mut Cpu, cc: u16) {
    let f = &mut cpu.s.fpu.fsw;
    *f = (*f & !fsw::CC) | cc;
}

/// The operands of a compare: ST(0) and ST(1), ST(i) or the memory operand.
fn operands(cpu: &mut Cpu, i: &Instruction) -> Result<(Option<F80>, Option<Res>), Exception> {
    let st0 = cpu.x87_get(0);
    let other = if has_mem(i) {
        Some(cpu.x87_load_mem(i)?)
    } else if i.op_count() >= 2 {
        cpu.x87_get(st_op(i, 1)).map(Res::ok)
    } else if i.op_count() == 1 {
        cpu.x87_get(st_op(i, 0)).map(Res::ok)
    } else {
        cpu.x87_get(1).map(Res::ok)
    };
    Ok((st0, other))
}

fn fcom<const QUIET: bool, const POPS: u8>(
    cpu: &mut Cpu,
    i: &Instruction,
) -> Result<(), Exception> {
    cpu.x87_begin(i)?;
    let (order, flags) = match operands(cpu, i)? {
        (Some(a), Some(b)) => {
            // A memory SNaN was quieted on load; the compare still sees it as invalid.
            let (o, f) = compare(a, b.value, QUIET);
            (o, f | (b.flags & (fsw::IE | fsw::DE)))
        }
        _ => (None, UNDERFLOW.flags),
    };
    // The condition codes are set even when the exception is unmasked (observed on
    // hardware: unordered for invalid operands, the comparison for denormals); the pops
    // happen only without an unmasked exception.
    let no_fault = cpu.x87_flags(flags);
    set_condition_codes(cpu, condition_codes(order));
    if no_fault {
        for _ in 0..POPS {
            cpu.x87_pop();
        }
    }
    Ok(())
}

fn fcomi<const QUIET: bool, const POP: bool>(
    cpu: &mut Cpu,
    i: &Instruction,
) -> Result<(), Exception> {
    cpu.x87_begin(i)?;
    let (order, fl) = match operands(cpu, i)? {
        (Some(a), Some(b)) => compare(a, b.value, QUIET),
        _ => (None, UNDERFLOW.flags),
    };
    // EFLAGS are set even with an unmasked exception (as FCOM's condition codes); the pop
    // happens only without one.
    let no_fault = cpu.x87_flags(fl);
    let bits = match order {
        Some(Ordering::Greater) => 0,
        Some(Ordering::Less) => flags::CF,
        Some(Ordering::Equal) => flags::ZF,
        None => flags::ZF | flags::PF | flags::CF,
    };
    cpu.set_arith_flags(
        flags::ZF | flags::PF | flags::CF | flags::OF | flags::SF | flags::AF,
        bits,
    );
    if POP && no_fault {
        cpu.x87_pop();
    }
    Ok(())
}

fn ftst(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_begin(i)?;
    let (order, flags) = match cpu.x87_get(0) {
        Some(a) => compare(a, F80::ZERO, false),
        None => (None, UNDERFLOW.flags),
    };
    // As for FCOM, the condition codes are set even with an unmasked exception.
    cpu.x87_flags(flags);
    set_condition_codes(cpu, condition_codes(order));
    Ok(())
}

/// FXAM class codes (C3, C2, C0) and C1 = sign; empty registers are classified too.
fn fxam(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_begin(i)?;
    let v = cpu.s.fpu.st(0);
    let class = if cpu.s.fpu.is_empty(0) {
        fsw::C3 | fsw::C0
    } else if softfloat::is_unsupported(v) {
        0
    } else if softfloat::is_nan(v) {
        fsw::C0
    } else if softfloat::is_inf(v) {
        fsw::C2 | fsw::C0
    } else if softfloat::is_zero(v) {
        fsw::C3
    } else if softfloat::is_denormal(v) {
        fsw::C3 | fsw::C2
    } else {
        fsw::C2
    };
    let sign = if v.sign() { fsw::C1 } else { 0 };
    set_condition_codes(cpu, class | sign);
    Ok(())
}
