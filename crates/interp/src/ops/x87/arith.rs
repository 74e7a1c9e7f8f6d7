//! x87 basic arithmetic: FADD/FSUB/FSUBR/FMUL/FDIV/FDIVR in their register, popping, real
//! memory and integer memory (FIxxx) forms, FSQRT, FABS, FCHS and FRNDINT. Results are
//! rounded to the precision-control width (FRNDINT, FABS, FCHS are not affected by PC).

use super::softfloat::{self, Op};
use super::{has_mem, st_op, UNDERFLOW};
use crate::cpu::Cpu;
use crate::exec::Handler;
use crane86_x86::Exception;
use iced_x86::{Instruction, Mnemonic};

const ADD: u8 = 0;
const SUB: u8 = 1;
const MUL: u8 = 2;
const DIV: u8 = 3;

pub fn handler(i: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match i.mnemonic() {
        Fadd | Fiadd => binary::<ADD, false, false>,
        Faddp => binary::<ADD, false, true>,
        Fsub | Fisub => binary::<SUB, false, false>,
        Fsubp => binary::<SUB, false, true>,
        Fsubr | Fisubr => binary::<SUB, true, false>,
        Fsubrp => binary::<SUB, true, true>,
        Fmul | Fimul => binary::<MUL, false, false>,
        Fmulp => binary::<MUL, false, true>,
        Fdiv | Fidiv => binary::<DIV, false, false>,
        Fdivp => binary::<DIV, false, true>,
        Fdivr | Fidivr => binary::<DIV, true, false>,
        Fdivrp => binary::<DIV, true, true>,
        Fsqrt => fsqrt,
        Fabs => fabs,
        Fchs => fchs,
        Frndint => frndint,
        _ => return None,
    })
}

/// `dst = dst op src` (or `src op dst` when `REVERSE`), popping after when `POP`. Memory
/// forms have ST(0) as destination and the memory value as source.
fn binary<const OP: u8, const REVERSE: bool, const POP: bool>(
    cpu: &mut Cpu,
    i: &Instruction,
) -> Result<(), Exception> {
    cpu.x87_begin(i)?;
    let (dst, dst_value, src) = if has_mem(i) {
        let loaded = cpu.x87_load_mem(i)?;
        (0, cpu.x87_get(0), Some(loaded))
    } else {
        let (d, s) = if i.op_count() >= 2 {
            (st_op(i, 0), st_op(i, 1))
        } else {
            (1, 0)
        };
        (d, cpu.x87_get(d), cpu.x87_get(s).map(softfloat::Res::ok))
    };
    let result = match (dst_value, src) {
        (Some(d), Some(s)) => {
            let (a, b) = if REVERSE { (s.value, d) } else { (d, s.value) };
            let op = match OP {
                ADD => Op::Add,
                SUB => Op::Sub,
                MUL => Op::Mul,
                _ => Op::Div,
            };
            let mut r = softfloat::arith(op, a, b, cpu.x87_env(true));
            // The memory operand's own conversion flags (SNaN, denormal).
            r.flags |= s.flags;
            r
        }
        _ => UNDERFLOW,
    };
    let stored = cpu.x87_store(dst, result);
    if POP && stored {
        cpu.x87_pop();
    }
    Ok(())
}

/// Apply a one-operand function to ST(0).
fn unary(
    cpu: &mut Cpu,
    i: &Instruction,
    f: impl FnOnce(&Cpu, crane86_x86::F80) -> softfloat::Res,
) -> Result<(), Exception> {
    cpu.x87_begin(i)?;
    let r = match cpu.x87_get(0) {
        Some(v) => f(cpu, v),
        None => UNDERFLOW,
    };
    cpu.x87_store(0, r);
    Ok(())
}

fn fsqrt(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    unary(cpu, i, |cpu, v| softfloat::sqrt(v, cpu.x87_env(true)))
}

fn fabs(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    unary(cpu, i, |_, v| softfloat::Res::ok(softfloat::abs(v)))
}

fn fchs(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    unary(cpu, i, |_, v| softfloat::Res::ok(softfloat::negate(v)))
}

fn frndint(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    unary(cpu, i, |cpu, v| {
        softfloat::round_to_integral(v, cpu.x87_env(false))
    })
}
