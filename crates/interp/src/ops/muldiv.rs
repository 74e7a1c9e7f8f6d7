//! Multiply and divide: MUL, IMUL (one-, two- and three-operand forms), DIV, IDIV with #DE
//! on a zero divisor or a quotient that does not fit.
//!
//! MUL/IMUL define only CF and OF (set when the high half is significant); SF ZF PF are set
//! from the low half of the result and AF cleared, as most implementations do. DIV/IDIV
//! leave every flag unchanged (all six are undefined).

use crate::cpu::{mask, sign_extend, Bits, Cpu};
use crate::exec::Handler;
use crane86_x86::flags::{self, zsp};
use crane86_x86::regs::gpr::{RAX, RDX};
use crane86_x86::Exception;
use iced_x86::{Instruction, Mnemonic, Register};

pub fn handler(i: &Instruction) -> Option<Handler> {
    Some(match i.mnemonic() {
        Mnemonic::Mul => mul,
        Mnemonic::Imul if i.op_count() == 1 => imul1,
        Mnemonic::Imul => imul_n,
        Mnemonic::Div => div,
        Mnemonic::Idiv => idiv,
        _ => return None,
    })
}

/// Set CF = OF = `overflow`, SF ZF PF from `low`, AF = 0.
fn mul_flags(cpu: &mut Cpu, low: u64, bits: Bits, overflow: bool) {
    let mut f = zsp(low, bits);
    if overflow {
        f |= flags::CF | flags::OF;
    }
    cpu.set_arith_flags(flags::ARITH, f);
}

/// Store a double-width result: AX for 8-bit operands, DX:AX / EDX:EAX / RDX:RAX otherwise.
fn store_wide(cpu: &mut Cpu, bits: Bits, low: u64, high: u64) {
    if bits == 8 {
        cpu.set_gpr(RAX, 16, (high << 8) | (low & 0xFF));
    } else {
        cpu.set_gpr(RAX, bits, low);
        cpu.set_gpr(RDX, bits, high);
    }
}

fn mul(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 0);
    let src = cpu.read_op(i, 0)? & mask(bits);
    let acc = cpu.gpr(RAX, bits);
    let product = u128::from(acc) * u128::from(src);
    let low = product as u64 & mask(bits);
    let high = (product >> bits) as u64 & mask(bits);
    store_wide(cpu, bits, low, high);
    mul_flags(cpu, low, bits, high != 0);
    Ok(())
}

fn imul1(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 0);
    let src = sign_extend(cpu.read_op(i, 0)?, bits);
    let acc = sign_extend(cpu.gpr(RAX, bits), bits);
    let product = i128::from(acc) * i128::from(src);
    let low = product as u64 & mask(bits);
    let high = (product >> bits) as u64 & mask(bits);
    store_wide(cpu, bits, low, high);
    let overflow = i128::from(sign_extend(low, bits)) != product;
    mul_flags(cpu, low, bits, overflow);
    Ok(())
}

/// IMUL r, r/m (dest = dest * src) and IMUL r, r/m, imm (dest = src * imm).
fn imul_n(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 0);
    let (a, b) = if i.op_count() == 3 {
        (cpu.read_op(i, 1)?, cpu.read_op(i, 2)?)
    } else {
        (cpu.read_op(i, 0)?, cpu.read_op(i, 1)?)
    };
    let product = i128::from(sign_extend(a, bits)) * i128::from(sign_extend(b, bits));
    let low = product as u64 & mask(bits);
    let overflow = i128::from(sign_extend(low, bits)) != product;
    let dest: Register = i.op_register(0);
    cpu.set_reg(dest, low);
    mul_flags(cpu, low, bits, overflow);
    Ok(())
}

/// The double-width dividend: AX for 8-bit divisors, DX:AX / EDX:EAX / RDX:RAX otherwise.
fn dividend(cpu: &Cpu, bits: Bits) -> u128 {
    if bits == 8 {
        u128::from(cpu.gpr(RAX, 16))
    } else {
        (u128::from(cpu.gpr(RDX, bits)) << bits) | u128::from(cpu.gpr(RAX, bits))
    }
}

/// Store quotient and remainder: AL/AH for 8-bit, (E/R)AX and (E/R)DX otherwise.
fn store_div(cpu: &mut Cpu, bits: Bits, quotient: u64, remainder: u64) {
    if bits == 8 {
        cpu.set_gpr(RAX, 16, ((remainder & 0xFF) << 8) | (quotient & 0xFF));
    } else {
        cpu.set_gpr(RAX, bits, quotient);
        cpu.set_gpr(RDX, bits, remainder);
    }
}

fn div(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 0);
    let divisor = u128::from(cpu.read_op(i, 0)? & mask(bits));
    if divisor == 0 {
        return Err(Exception::de());
    }
    let n = dividend(cpu, bits);
    let q = n / divisor;
    if q > u128::from(mask(bits)) {
        return Err(Exception::de());
    }
    store_div(cpu, bits, q as u64, (n % divisor) as u64);
    Ok(())
}

fn idiv(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 0);
    let divisor = i128::from(sign_extend(cpu.read_op(i, 0)?, bits));
    if divisor == 0 {
        return Err(Exception::de());
    }
    // Sign-extend the 2*bits-wide dividend to i128.
    let wide = 2 * bits;
    let raw = dividend(cpu, bits);
    let n = if wide == 128 {
        raw as i128
    } else {
        ((raw << (128 - wide)) as i128) >> (128 - wide)
    };
    // checked_div catches i128::MIN / -1 (a 64-bit IDIV whose quotient overflows).
    let Some(q) = n.checked_div(divisor) else {
        return Err(Exception::de());
    };
    let r = n - q * divisor;
    let lo = -(1i128 << (bits - 1));
    let hi = (1i128 << (bits - 1)) - 1;
    if q < lo || q > hi {
        return Err(Exception::de());
    }
    store_div(cpu, bits, q as u64 & mask(bits), r as u64 & mask(bits));
    Ok(())
}
