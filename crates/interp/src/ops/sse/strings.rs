//! SSE4.2: the packed string compares PCMPESTRI/PCMPESTRM/PCMPISTRI/PCMPISTRM (SDM Vol. 2
//! 4.1, imm8-controlled source format, aggregation, polarity and output selection) and CRC32
//! (the Castagnoli polynomial, bit-reflected).

use super::lanes::{get, ones, set, sget};
use crate::cpu::Cpu;
use crate::exec::Handler;
use crane86_x86::{flags, Exception};
use iced_x86::{Instruction, Mnemonic, OpKind};

pub fn handler(i: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match i.mnemonic() {
        Pcmpestri | Pcmpestri64 => pcmpstr::<true, false>,
        Pcmpestrm | Pcmpestrm64 => pcmpstr::<true, true>,
        Pcmpistri => pcmpstr::<false, false>,
        Pcmpistrm => pcmpstr::<false, true>,
        Crc32 => crc32,
        _ => return None,
    })
}

/// The decoded imm8 of a string compare.
struct Control {
    /// Element width in bytes (1 or 2).
    w: usize,
    signed: bool,
    aggregation: u8,
    polarity: u8,
    /// STRI: most significant index; STRM: element mask instead of bit mask.
    bit6: bool,
}

impl Control {
    fn new(imm: u8) -> Control {
        Control {
            w: if imm & 1 != 0 { 2 } else { 1 },
            signed: imm & 2 != 0,
            aggregation: (imm >> 2) & 3,
            polarity: (imm >> 4) & 3,
            bit6: imm & 0x40 != 0,
        }
    }

    fn count(&self) -> usize {
        16 / self.w
    }

    fn elem(&self, v: u128, k: usize) -> i64 {
        if self.signed {
            sget(v, self.w, k)
        } else {
            get(v, self.w, k) as i64
        }
    }
}

/// Length of an implicit (NUL-terminated) string: the index of its first zero element.
fn implicit_len(c: &Control, v: u128) -> usize {
    (0..c.count())
        .find(|&k| get(v, c.w, k) == 0)
        .unwrap_or(c.count())
}

/// Length of an explicit string from a register: its absolute value, at most the element
/// count.
fn explicit_len(c: &Control, reg: u64, wide: bool) -> usize {
    let v = if wide {
        (reg as i64).unsigned_abs()
    } else {
        u64::from((reg as i32).unsigned_abs())
    };
    v.min(c.count() as u64) as usize
}

/// IntRes2 of the comparison of `a` (length `la`) with `b` (length `lb`).
fn compare(c: &Control, a: u128, la: usize, b: u128, lb: usize) -> u32 {
    let n = c.count();
    let eq = |i: usize, j: usize| get(a, c.w, i) == get(b, c.w, j);
    let mut res1 = 0u32;
    for j in 0..n {
        let bit = match c.aggregation {
            // Equal any: b[j] is one of the valid elements of a.
            0 => j < lb && (0..la).any(|i| eq(i, j)),
            // Ranges: b[j] lies in one of the [a[i], a[i+1]] pairs.
            1 => {
                j < lb
                    && (0..la.saturating_sub(1)).step_by(2).any(|i| {
                        let x = c.elem(b, j);
                        c.elem(a, i) <= x && x <= c.elem(a, i + 1)
                    })
            }
            // Equal each: element-wise equality; two invalid elements compare equal.
            2 => match (j < la, j < lb) {
                (true, true) => eq(j, j),
                (false, false) => true,
                _ => false,
            },
            // Equal ordered: a occurs in b starting at j (an invalid a element matches).
            _ => (0..n - j).all(|i| {
                if i >= la {
                    true
                } else if j + i >= lb {
                    false
                } else {
                    eq(i, j + i)
                }
            }),
        };
        res1 |= u32::from(bit) << j;
    }
    let all = (1u32 << n) - 1;
    match c.polarity {
        1 => !res1 & all,
        3 => (res1 ^ ((1u32 << lb) - 1)) & all,
        _ => res1,
    }
}

fn pcmpstr<const EXPLICIT: bool, const MASK: bool>(
    cpu: &mut Cpu,
    i: &Instruction,
) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let c = Control::new(i.immediate8());
    let a = cpu.vread(i, 0)?;
    let b = cpu.vread(i, 1)?;
    let (la, lb) = if EXPLICIT {
        let wide = matches!(i.mnemonic(), Mnemonic::Pcmpestri64 | Mnemonic::Pcmpestrm64);
        (
            explicit_len(&c, cpu.s.gpr[0], wide),
            explicit_len(&c, cpu.s.gpr[2], wide),
        )
    } else {
        (implicit_len(&c, a), implicit_len(&c, b))
    };
    let res = compare(&c, a, la, b, lb);
    let n = c.count();
    if MASK {
        cpu.s.fpu.xmm[0] = if c.bit6 {
            (0..n).fold(0, |r, k| {
                if res & (1 << k) != 0 {
                    set(r, c.w, k, ones(c.w))
                } else {
                    r
                }
            })
        } else {
            u128::from(res)
        };
    } else {
        let index = if res == 0 {
            n as u32
        } else if c.bit6 {
            31 - res.leading_zeros()
        } else {
            res.trailing_zeros()
        };
        cpu.s.gpr[1] = u64::from(index);
    }
    let mut f = 0;
    if res != 0 {
        f |= flags::CF;
    }
    if lb < n {
        f |= flags::ZF;
    }
    if la < n {
        f |= flags::SF;
    }
    if res & 1 != 0 {
        f |= flags::OF;
    }
    cpu.set_arith_flags(flags::ARITH, f);
    Ok(())
}

/// The reflected CRC-32C polynomial.
const CRC32C_POLY: u32 = 0x82F6_3B78;

fn crc32_bytes(mut crc: u32, v: u64, bytes: usize) -> u32 {
    for k in 0..bytes {
        crc ^= (v >> (8 * k)) as u8 as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ CRC32C_POLY
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// CRC32 r32/r64, r/m8/16/32/64: accumulate the source bytes into the low 32 bits of the
/// destination (a 64-bit destination's high half is cleared).
fn crc32(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bytes = match i.op_kind(1) {
        OpKind::Register => i.op_register(1).size(),
        _ => i.memory_size().size(),
    };
    let src = cpu.read_op(i, 1)?;
    let acc = cpu.reg(i.op_register(0)) as u32;
    let r = crc32_bytes(acc, src, bytes);
    cpu.set_reg(i.op_register(0).full_register(), u64::from(r));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // CRC-32C("123456789") = 0xE3069283 (initial and final XOR with all ones).
        let crc = b"123456789"
            .iter()
            .fold(!0u32, |c, &b| crc32_bytes(c, u64::from(b), 1));
        assert_eq!(!crc, 0xE306_9283);
    }

    #[test]
    fn equal_ordered_finds_a_substring() {
        let c = Control::new(0x0C); // unsigned bytes, equal ordered
        let hay = u128::from_le_bytes(*b"hello world\0\0\0\0\0");
        let needle = u128::from_le_bytes(*b"wor\0\0\0\0\0\0\0\0\0\0\0\0\0");
        let res = compare(&c, needle, 3, hay, 11);
        assert_eq!(res.trailing_zeros(), 6);
    }
}
