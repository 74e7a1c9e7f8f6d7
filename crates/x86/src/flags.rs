//! RFLAGS bit definitions and the lazy-flags representation (QEMU's CC_OP, Bochs' lazy flags).
//!
//! A flag-setting instruction records *what* it did (`op`, result, operand, carry-in) instead of
//! computing six flags. The arithmetic flags (CF PF AF ZF SF OF) are derived only when read.
//! When `op == CcOp::Eflags` the arithmetic flags live in `CpuState::rflags` itself.

use serde::{Deserialize, Serialize};

pub const CF: u64 = 1 << 0;
pub const RESERVED1: u64 = 1 << 1;
pub const PF: u64 = 1 << 2;
pub const AF: u64 = 1 << 4;
pub const ZF: u64 = 1 << 6;
pub const SF: u64 = 1 << 7;
pub const TF: u64 = 1 << 8;
pub const IF: u64 = 1 << 9;
pub const DF: u64 = 1 << 10;
pub const OF: u64 = 1 << 11;
pub const IOPL_SHIFT: u64 = 12;
pub const IOPL: u64 = 3 << 12;
pub const NT: u64 = 1 << 14;
pub const RF: u64 = 1 << 16;
pub const VM: u64 = 1 << 17;
pub const AC: u64 = 1 << 18;
pub const VIF: u64 = 1 << 19;
pub const VIP: u64 = 1 << 20;
pub const ID: u64 = 1 << 21;

/// The six arithmetic status flags.
pub const ARITH: u64 = CF | PF | AF | ZF | SF | OF;

/// Operation recorded by the last flag-setting instruction. The low two bits of the value are
/// the operand-size index (0 = 8, 1 = 16, 2 = 32, 3 = 64 bits), so JIT code can compute a
/// `CcOp` as `kind + size_index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[repr(u32)]
pub enum CcOp {
    /// Flags are materialized in `rflags`.
    #[default]
    Eflags = 0,
    Add8 = 4,
    Add16,
    Add32,
    Add64,
    /// Add with carry: `aux` holds the carry-in (0 or 1).
    Adc8,
    Adc16,
    Adc32,
    Adc64,
    Sub8,
    Sub16,
    Sub32,
    Sub64,
    /// Subtract with borrow: `aux` holds the borrow-in.
    Sbb8,
    Sbb16,
    Sbb32,
    Sbb64,
    /// AND/OR/XOR/TEST: CF = OF = 0, AF = 0 (undefined on hardware).
    Logic8,
    Logic16,
    Logic32,
    Logic64,
    /// INC: CF preserved in `aux`.
    Inc8,
    Inc16,
    Inc32,
    Inc64,
    /// DEC: CF preserved in `aux`.
    Dec8,
    Dec16,
    Dec32,
    Dec64,
}

impl CcOp {
    /// The op of `base` kind (e.g. `CcOp::Add8`) for an operand of `bits` bits.
    #[inline]
    pub fn sized(base: CcOp, bits: u32) -> CcOp {
        let idx = match bits {
            8 => 0,
            16 => 1,
            32 => 2,
            _ => 3,
        };
        Self::from_u32(base as u32 + idx).expect("CcOp kinds are groups of four")
    }

    #[inline]
    pub fn from_u32(v: u32) -> Option<CcOp> {
        use CcOp::*;
        const TABLE: [CcOp; 28] = [
            Add8, Add16, Add32, Add64, Adc8, Adc16, Adc32, Adc64, Sub8, Sub16, Sub32, Sub64, Sbb8,
            Sbb16, Sbb32, Sbb64, Logic8, Logic16, Logic32, Logic64, Inc8, Inc16, Inc32, Inc64,
            Dec8, Dec16, Dec32, Dec64,
        ];
        match v {
            0 => Some(Eflags),
            4..=31 => Some(TABLE[(v - 4) as usize]),
            _ => None,
        }
    }
}

/// The recorded last flag-setting operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[repr(C)]
pub struct LazyFlags {
    pub op: CcOp,
    pub _pad: u32,
    /// The result (masked to the operand size).
    pub res: u64,
    /// The second (source) operand.
    pub src: u64,
    /// Carry/borrow-in for ADC/SBB, or the preserved CF for INC/DEC.
    pub aux: u64,
}

/// Parity flag of the low byte: set when it has an even number of one bits.
#[inline]
pub fn parity(v: u64) -> bool {
    (v as u8).count_ones().is_multiple_of(2)
}

#[inline]
fn size_mask(bits: u32) -> u64 {
    if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

#[inline]
fn sign_bit(bits: u32) -> u64 {
    1u64 << (bits - 1)
}

/// ZF, SF, PF of a result of `bits` bits.
#[inline]
pub fn zsp(res: u64, bits: u32) -> u64 {
    let res = res & size_mask(bits);
    let mut f = 0;
    if res == 0 {
        f |= ZF;
    }
    if res & sign_bit(bits) != 0 {
        f |= SF;
    }
    if parity(res) {
        f |= PF;
    }
    f
}

impl LazyFlags {
    /// Compute the six arithmetic flags of the recorded operation. `materialized` supplies
    /// them when `op == Eflags`.
    pub fn arith_flags(&self, materialized: u64) -> u64 {
        let op = self.op as u32;
        if op == 0 {
            return materialized & ARITH;
        }
        let bits = 8u32 << (op & 3);
        let mask = size_mask(bits);
        let sign = sign_bit(bits);
        let res = self.res & mask;
        let b = self.src & mask;
        let c = self.aux & 1;
        let mut f = zsp(res, bits);
        match op & !3 {
            // ADD / ADC
            4 | 8 => {
                let a = res.wrapping_sub(b).wrapping_sub(c) & mask;
                let carry = if c == 0 { res < a } else { res <= a };
                if carry {
                    f |= CF;
                }
                if (a ^ res) & (b ^ res) & sign != 0 {
                    f |= OF;
                }
                f |= (a ^ b ^ res) & AF;
            }
            // SUB / SBB
            12 | 16 => {
                let a = res.wrapping_add(b).wrapping_add(c) & mask;
                let borrow = if c == 0 { a < b } else { a <= b };
                if borrow {
                    f |= CF;
                }
                if (a ^ b) & (a ^ res) & sign != 0 {
                    f |= OF;
                }
                f |= (a ^ b ^ res) & AF;
            }
            // LOGIC
            20 => {}
            // INC
            24 => {
                f |= c; // preserved CF
                if res == sign {
                    f |= OF;
                }
                if res & 0xF == 0 {
                    f |= AF;
                }
            }
            // DEC
            28 => {
                f |= c;
                if res == sign - 1 {
                    f |= OF;
                }
                if res & 0xF == 0xF {
                    f |= AF;
                }
            }
            _ => unreachable!("CcOp values are validated on construction"),
        }
        f
    }

    /// Just CF (cheaper than all six for ADC/SBB/RCL and Jcc on CF).
    pub fn carry(&self, materialized: u64) -> bool {
        self.arith_flags(materialized) & CF != 0
    }

    /// Condition `cc` (0–15, the Jcc/SETcc/CMOVcc encoding order: O, NO, B, AE, E, NE,
    /// BE, A, S, NS, P, NP, L, GE, LE, G). After SUB/CMP (no borrow-in) and the logic ops,
    /// what almost every Jcc follows, it compares the operands directly instead of
    /// computing all six flags; the rest goes through [`Self::arith_flags`].
    #[inline]
    pub fn cond(&self, cc: u8, materialized: u64) -> bool {
        let op = self.op as u32;
        let bits = 8u32 << (op & 3);
        let mask = size_mask(bits);
        let sign = sign_bit(bits);
        let res = self.res & mask;
        // Signed compare of two values of `bits` bits.
        let signed = |v: u64| ((v << (64 - bits)) as i64) >> (64 - bits);
        let sub = op & !3 == 12 && self.aux & 1 == 0;
        let r = match (op & !3, cc >> 1) {
            // SUB / CMP without borrow-in: `a - b`.
            (12, 5) => None,
            (12, k) if sub => {
                let b = self.src & mask;
                let a = res.wrapping_add(b) & mask;
                Some(match k {
                    0 => (a ^ b) & (a ^ res) & sign != 0,
                    1 => a < b,
                    2 => res == 0,
                    3 => a <= b,
                    4 => res & sign != 0,
                    6 => signed(a) < signed(b),
                    _ => signed(a) <= signed(b),
                })
            }
            // AND / OR / XOR / TEST: CF = OF = 0.
            (20, 5) => None,
            (20, k) => Some(match k {
                0 | 1 => false,
                2 | 3 => res == 0,
                4 | 6 => res & sign != 0,
                _ => res == 0 || res & sign != 0,
            }),
            _ => None,
        };
        let r = r.unwrap_or_else(|| {
            let f = self.arith_flags(materialized);
            let (cf, zf) = (f & CF != 0, f & ZF != 0);
            let (sf, of) = (f & SF != 0, f & OF != 0);
            match cc >> 1 {
                0 => of,
                1 => cf,
                2 => zf,
                3 => cf || zf,
                4 => sf,
                5 => f & PF != 0,
                6 => sf != of,
                _ => zf || (sf != of),
            }
        });
        r ^ (cc & 1 != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cond` against the six flags computed in full, for every op and condition over
    /// operands that hit the edges (zero, sign bits, equal, off by one) and random ones.
    #[test]
    fn cond_agrees_with_the_flags_it_tests() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let edges = [
            0u64,
            1,
            0x7F,
            0x80,
            0xFF,
            0x7FFF,
            0x8000,
            0x7FFF_FFFF,
            0x8000_0000,
        ];
        for v in 4..32 {
            let op = CcOp::from_u32(v).expect("an op");
            for n in 0..4000 {
                let (res, src) = if n < edges.len() * edges.len() {
                    (edges[n % edges.len()], edges[n / edges.len()])
                } else {
                    (next(), next())
                };
                let l = LazyFlags {
                    op,
                    _pad: 0,
                    res,
                    src,
                    aux: next() & 1,
                };
                let f = l.arith_flags(0);
                let set = |flag: u64| f & flag != 0;
                let want = [
                    set(OF),
                    set(CF),
                    set(ZF),
                    set(CF) || set(ZF),
                    set(SF),
                    set(PF),
                    set(SF) != set(OF),
                    set(ZF) || (set(SF) != set(OF)),
                ];
                for cc in 0..16u8 {
                    let expect = want[usize::from(cc >> 1)] ^ (cc & 1 != 0);
                    assert_eq!(
                        l.cond(cc, 0),
                        expect,
                        "{op:?} res {res:#x} src {src:#x} cc {cc}"
                    );
                }
            }
        }
    }

    fn lazy(op: CcOp, res: u64, src: u64, aux: u64) -> u64 {
        LazyFlags {
            op,
            _pad: 0,
            res,
            src,
            aux,
        }
        .arith_flags(0)
    }

    #[test]
    fn add_overflow_and_carry() {
        // 0x7F + 1 = 0x80: OF, SF, AF, no CF.
        let f = lazy(CcOp::Add8, 0x80, 1, 0);
        assert_eq!(f & (CF | OF | SF | ZF | AF), OF | SF | AF);
        // 0xFF + 1 = 0: CF, ZF, AF, PF.
        let f = lazy(CcOp::Add8, 0, 1, 0);
        assert_eq!(f, CF | ZF | AF | PF);
        // ADC 0xFF + 0xFF + 1 = 0x1FF -> 0xFF, CF.
        let f = lazy(CcOp::Adc8, 0xFF, 0xFF, 1);
        assert!(f & CF != 0);
    }

    #[test]
    fn sub_borrow() {
        // 0 - 1 = 0xFFFF: CF, SF, AF.
        let f = lazy(CcOp::Sub16, 0xFFFF, 1, 0);
        assert_eq!(f & (CF | SF | OF | AF), CF | SF | AF);
        // SBB 5 - 5 - 1 = -1 with borrow.
        let f = lazy(CcOp::Sbb32, 0xFFFF_FFFF, 5, 1);
        assert!(f & CF != 0);
        // 0x80 - 1 = 0x7F: OF.
        assert!(lazy(CcOp::Sub8, 0x7F, 1, 0) & OF != 0);
    }

    #[test]
    fn sized_ops_round_trip() {
        assert_eq!(CcOp::sized(CcOp::Sub8, 32), CcOp::Sub32);
        assert_eq!(CcOp::from_u32(CcOp::Dec64 as u32), Some(CcOp::Dec64));
        assert_eq!(CcOp::from_u32(3), None);
    }
}
