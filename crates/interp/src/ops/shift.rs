//! Shifts and rotates: SHL/SAL SHR SAR ROL ROR RCL RCR, and the double-precision shifts
//! SHLD/SHRD. Flags are computed eagerly.
//!
//! Count rules: the count is masked to 5 bits (6 for 64-bit operands); a masked count of 0
//! leaves every flag alone (the destination is still written, so a 32-bit register
//! destination is zero-extended as on hardware). RCL/RCR rotate through CF modulo
//! `size + 1` for 8/16-bit operands.
//!
//! Flags the SDM leaves undefined follow what the host-CPU oracle (an AMD Zen machine)
//! shows, since no Intel reference was available: for counts > 1, OF is the count-1 formula
//! applied to the last single-bit step (SHL: MSB(result) ^ CF; SHR: MSB of the operand before
//! the last step; SHLD/SHRD: sign change in the last step; SAR: 0), AF is set by every
//! non-zero shift (SHL SHR SAR SHLD SHRD), and an RCL/RCR count that is a non-zero multiple
//! of size + 1 leaves the value and CF but still sets OF = MSB(result) ^ CF (RCL) or
//! MSB(result) ^ MSB-1(result) (RCR). Intel CPUs may differ in these undefined cases.

use crate::cpu::{mask, sign_bit, sign_extend, Bits, Cpu};
use crate::exec::Handler;
use crane86_x86::flags::{self, zsp};
use crane86_x86::Exception;
use iced_x86::{Instruction, Mnemonic};

pub fn handler(i: &Instruction) -> Option<Handler> {
    Some(match i.mnemonic() {
        Mnemonic::Shl | Mnemonic::Sal => shl,
        Mnemonic::Shr => shr,
        Mnemonic::Sar => sar,
        Mnemonic::Rol => rol,
        Mnemonic::Ror => ror,
        Mnemonic::Rcl => rcl,
        Mnemonic::Rcr => rcr,
        Mnemonic::Shld => shld,
        Mnemonic::Shrd => shrd,
        _ => return None,
    })
}

const SHIFT_FLAGS: u64 = flags::ARITH;
const ROTATE_FLAGS: u64 = flags::CF | flags::OF;

/// The masked shift count of operand `n` for an operand of `bits` bits.
fn count(cpu: &mut Cpu, i: &Instruction, n: u32, bits: Bits) -> Result<u32, Exception> {
    let raw = cpu.read_op(i, n)?;
    Ok((raw & if bits == 64 { 0x3F } else { 0x1F }) as u32)
}

fn flag_if(on: bool, bit: u64) -> u64 {
    if on {
        bit
    } else {
        0
    }
}

#[inline]
fn msb(v: u64, bits: Bits) -> bool {
    v & sign_bit(bits) != 0
}

/// Common shape of the single-operand shifts and rotates: `f(cpu, value, count, bits)`
/// returns the result and sets the flags; it is called only for a non-zero masked count.
fn shift_op(
    cpu: &mut Cpu,
    i: &Instruction,
    f: fn(&mut Cpu, u64, u32, Bits) -> u64,
) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 0);
    let n = count(cpu, i, 1, bits)?;
    cpu.rmw_op0(i, |cpu, v| {
        let v = v & mask(bits);
        if n == 0 {
            return Ok(Some(v));
        }
        Ok(Some(f(cpu, v, n, bits) & mask(bits)))
    })
}

fn shl(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    shift_op(cpu, i, |cpu, v, n, bits| {
        let res = if n >= 64 { 0 } else { (v << n) & mask(bits) };
        // CF: the last bit shifted out (0 once the count exceeds the width).
        let cf = n <= bits && (v >> (bits - n)) & 1 != 0;
        let of = msb(res, bits) != cf;
        cpu.set_arith_flags(
            SHIFT_FLAGS,
            zsp(res, bits) | flags::AF | flag_if(cf, flags::CF) | flag_if(of, flags::OF),
        );
        res
    })
}

fn shr(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    shift_op(cpu, i, |cpu, v, n, bits| {
        let res = if n >= 64 { 0 } else { v >> n };
        let cf = n <= bits && (v >> (n - 1)) & 1 != 0;
        // OF: the sign of the operand before the last single-bit step (count 1: the
        // original sign, as the SDM defines).
        let before_last = if n > 64 { 0 } else { v >> (n - 1) };
        let of = msb(before_last, bits);
        cpu.set_arith_flags(
            SHIFT_FLAGS,
            zsp(res, bits) | flags::AF | flag_if(cf, flags::CF) | flag_if(of, flags::OF),
        );
        res
    })
}

fn sar(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    shift_op(cpu, i, |cpu, v, n, bits| {
        let s = sign_extend(v, bits);
        let res = (s >> n.min(63)) as u64 & mask(bits);
        let cf = (s >> (n - 1).min(63)) & 1 != 0;
        cpu.set_arith_flags(
            SHIFT_FLAGS,
            zsp(res, bits) | flags::AF | flag_if(cf, flags::CF),
        );
        res
    })
}

fn rotate_left(v: u64, n: u32, bits: Bits) -> u64 {
    if n == 0 {
        v
    } else {
        ((v << n) | (v >> (bits - n))) & mask(bits)
    }
}

fn rol(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    shift_op(cpu, i, |cpu, v, n, bits| {
        let res = rotate_left(v, n % bits, bits);
        let cf = res & 1 != 0;
        let of = msb(res, bits) != cf;
        cpu.set_arith_flags(
            ROTATE_FLAGS,
            flag_if(cf, flags::CF) | flag_if(of, flags::OF),
        );
        res
    })
}

fn ror(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    shift_op(cpu, i, |cpu, v, n, bits| {
        let r = n % bits;
        let res = rotate_left(v, (bits - r) % bits, bits);
        let cf = msb(res, bits);
        let of = cf != (res & (sign_bit(bits) >> 1) != 0);
        cpu.set_arith_flags(
            ROTATE_FLAGS,
            flag_if(cf, flags::CF) | flag_if(of, flags::OF),
        );
        res
    })
}

/// Rotate the `bits + 1`-bit value CF:v left by `n` (already reduced below `bits + 1`).
/// Returns (result, new CF).
fn rcl_value(v: u64, cf: bool, n: u32, bits: Bits) -> (u64, bool) {
    let width = bits + 1;
    let wide = (u128::from(cf) << bits) | u128::from(v);
    let wmask = (1u128 << width) - 1;
    let rot = if n == 0 {
        wide
    } else {
        ((wide << n) | (wide >> (width - n))) & wmask
    };
    ((rot as u64) & mask(bits), (rot >> bits) & 1 != 0)
}

fn rcl(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    shift_op(cpu, i, |cpu, v, n, bits| {
        let n = if bits < 32 { n % (bits + 1) } else { n };
        let (res, cf) = rcl_value(v, cpu.cf(), n, bits);
        let of = msb(res, bits) != cf;
        cpu.set_arith_flags(
            ROTATE_FLAGS,
            flag_if(cf, flags::CF) | flag_if(of, flags::OF),
        );
        res
    })
}

fn rcr(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    shift_op(cpu, i, |cpu, v, n, bits| {
        let n = if bits < 32 { n % (bits + 1) } else { n };
        // A right rotate by n of a (bits+1)-bit value is a left rotate by width - n.
        let (res, cf) = rcl_value(v, cpu.cf(), (bits + 1 - n) % (bits + 1), bits);
        let of = msb(res, bits) != (res & (sign_bit(bits) >> 1) != 0);
        cpu.set_arith_flags(
            ROTATE_FLAGS,
            flag_if(cf, flags::CF) | flag_if(of, flags::OF),
        );
        res
    })
}

/// The SHLD (`left`) / SHRD result of shifting `dst` by `n` (1..=63) with bits from `src`,
/// and the last bit shifted out (CF).
fn double_shift_value(dst: u64, src: u64, n: u32, bits: Bits, left: bool) -> (u64, bool) {
    if bits == 16 {
        // Counts above 16 are undefined; like P6-family CPUs, shift the 48-bit
        // concatenation dst:src:dst, left or right.
        let cat = (u128::from(dst) << 32) | (u128::from(src) << 16) | u128::from(dst);
        if left {
            (
                ((cat << n) >> 32) as u64 & 0xFFFF,
                (cat >> (48 - n)) & 1 != 0,
            )
        } else {
            ((cat >> n) as u64 & 0xFFFF, (cat >> (n - 1)) & 1 != 0)
        }
    } else if left {
        let cat = (u128::from(dst) << bits) | u128::from(src);
        let res = ((cat << n) >> bits) as u64 & mask(bits);
        (res, (cat >> (2 * bits - n)) & 1 != 0)
    } else {
        let cat = (u128::from(src) << bits) | u128::from(dst);
        ((cat >> n) as u64 & mask(bits), (cat >> (n - 1)) & 1 != 0)
    }
}

/// SHLD/SHRD: op0 = destination, op1 = source register, op2 = count (imm8 or CL).
fn double_shift(cpu: &mut Cpu, i: &Instruction, left: bool) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 0);
    let src = cpu.reg(i.op_register(1)) & mask(bits);
    let n = count(cpu, i, 2, bits)?;
    cpu.rmw_op0(i, |cpu, dst| {
        let dst = dst & mask(bits);
        if n == 0 {
            return Ok(Some(dst));
        }
        let (res, cf) = double_shift_value(dst, src, n, bits, left);
        // OF: sign change in the last single-bit step. For SHLD that is MSB ^ CF, where
        // the MSB comes from the destination bits alone (a 16-bit count of 16 gives CF).
        let of = if left {
            let dst_part = if n >= bits { 0 } else { dst << n };
            msb(dst_part, bits) != cf
        } else {
            let before_last = if n == 1 {
                dst
            } else {
                double_shift_value(dst, src, n - 1, bits, left).0
            };
            msb(res, bits) != msb(before_last, bits)
        };
        cpu.set_arith_flags(
            SHIFT_FLAGS,
            zsp(res, bits) | flags::AF | flag_if(cf, flags::CF) | flag_if(of, flags::OF),
        );
        Ok(Some(res))
    })
}

fn shld(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    double_shift(cpu, i, true)
}

fn shrd(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    double_shift(cpu, i, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcl_through_carry() {
        // 8-bit 0x80 with CF=0 rotated left by 1: result 0, CF 1.
        assert_eq!(rcl_value(0x80, false, 1, 8), (0, true));
        // CF=1, rotate by 9 (a full turn of 9 bits) is identity.
        assert_eq!(rcl_value(0x5A, true, 0, 8), (0x5A, true));
        // 64-bit: CF enters bit 0.
        assert_eq!(rcl_value(0, true, 1, 64), (1, false));
    }

    #[test]
    fn rotate_left_wraps() {
        assert_eq!(rotate_left(0x81, 1, 8), 0x03);
        assert_eq!(rotate_left(1 << 63, 1, 64), 1);
    }
}
