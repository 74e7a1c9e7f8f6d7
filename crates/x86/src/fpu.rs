//! Floating-point and vector register state: the x87 FPU (eight 80-bit data registers, control,
//! status and tag words, last-instruction and last-operand pointers, last opcode) plus MXCSR
//! and the sixteen XMM registers used by SSE. Engines interpret the values; this module only
//! defines the layout, the architectural constants and the RESET / FNINIT values.
//!
//! For MMX and FXSAVE: MMi is the significand of *physical* register Ri (`st[i].signif`, not
//! ST(i)); an MMX write also sets that register's `sign_exp` to 0xFFFF, TOP to 0 and every
//! tag valid, and EMMS sets every tag empty. FXSAVE stores [`FpuState::abridged_tags`];
//! FXRSTOR restores them with [`FpuState::set_abridged_tags`], which retags the non-empty
//! registers from their contents as the full tag word requires.

use serde::{Deserialize, Serialize};

/// One 80-bit extended-precision value: a 64-bit significand with an explicit integer bit
/// (bit 63) and a 16-bit sign (bit 15) + biased exponent (bits 14..0). `#[repr(C)]` with the
/// same 16-byte footprint as an FXSAVE register slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(C)]
pub struct F80 {
    pub signif: u64,
    pub sign_exp: u16,
    pub _pad: [u16; 3],
}

impl F80 {
    pub const EXP_MASK: u16 = 0x7FFF;
    pub const SIGN: u16 = 0x8000;
    pub const INTEGER_BIT: u64 = 1 << 63;
    /// The "real indefinite" QNaN that masked invalid operations produce.
    pub const INDEFINITE: F80 = F80::new(0xFFFF, 0xC000_0000_0000_0000);
    pub const ZERO: F80 = F80::new(0, 0);

    pub const fn new(sign_exp: u16, signif: u64) -> F80 {
        F80 {
            signif,
            sign_exp,
            _pad: [0; 3],
        }
    }

    /// From the 80 low bits of `bits` (significand in bits 63..0, sign/exponent above).
    pub const fn from_bits(bits: u128) -> F80 {
        F80::new((bits >> 64) as u16, bits as u64)
    }

    /// The 80-bit encoding in the low bits of a `u128`.
    pub const fn to_bits(self) -> u128 {
        ((self.sign_exp as u128) << 64) | self.signif as u128
    }

    /// The 10 little-endian bytes as stored in memory.
    pub fn to_le_bytes(self) -> [u8; 10] {
        let mut b = [0u8; 10];
        b[..8].copy_from_slice(&self.signif.to_le_bytes());
        b[8..].copy_from_slice(&self.sign_exp.to_le_bytes());
        b
    }

    pub const fn exponent(self) -> u16 {
        self.sign_exp & F80::EXP_MASK
    }

    pub const fn sign(self) -> bool {
        self.sign_exp & F80::SIGN != 0
    }

    /// The tag this value gets in the full tag word: valid, zero or special.
    pub fn tag(self) -> u16 {
        let exp = self.exponent();
        if exp == 0x7FFF || (exp != 0 && self.signif & F80::INTEGER_BIT == 0) {
            tag::SPECIAL
        } else if exp == 0 {
            if self.signif == 0 {
                tag::ZERO
            } else {
                tag::SPECIAL
            }
        } else {
            tag::VALID
        }
    }
}

/// Two-bit tags of the full tag word (FSTENV/FSAVE format).
pub mod tag {
    pub const VALID: u16 = 0;
    pub const ZERO: u16 = 1;
    pub const SPECIAL: u16 = 2;
    pub const EMPTY: u16 = 3;
}

/// x87 control word bits.
pub mod fcw {
    /// Exception masks IM DM ZM OM UM PM (bits 0..5).
    pub const MASKS: u16 = 0x3F;
    /// Precision control: 00 = 24-bit, 10 = 53-bit, 11 = 64-bit significand.
    pub const PC_SHIFT: u16 = 8;
    pub const PC: u16 = 3 << PC_SHIFT;
    /// Rounding control: 00 nearest, 01 down, 10 up, 11 toward zero.
    pub const RC_SHIFT: u16 = 10;
    pub const RC: u16 = 3 << RC_SHIFT;
    /// Infinity control (287 compatibility; ignored).
    pub const X: u16 = 1 << 12;
    /// FNINIT value: all exceptions masked, 64-bit precision, round to nearest.
    pub const INIT: u16 = 0x037F;
    /// Power-on (RESET) value, SDM Vol. 3 Table 10-1.
    pub const RESET: u16 = 0x0040;
}

/// x87 status word bits.
pub mod fsw {
    pub const IE: u16 = 1 << 0;
    pub const DE: u16 = 1 << 1;
    pub const ZE: u16 = 1 << 2;
    pub const OE: u16 = 1 << 3;
    pub const UE: u16 = 1 << 4;
    pub const PE: u16 = 1 << 5;
    /// Stack fault (with IE; C1 says overflow = 1, underflow = 0).
    pub const SF: u16 = 1 << 6;
    /// Exception summary: an unmasked exception is pending.
    pub const ES: u16 = 1 << 7;
    pub const C0: u16 = 1 << 8;
    pub const C1: u16 = 1 << 9;
    pub const C2: u16 = 1 << 10;
    pub const TOP_SHIFT: u16 = 11;
    pub const TOP: u16 = 7 << TOP_SHIFT;
    pub const C3: u16 = 1 << 14;
    /// Busy (mirrors ES).
    pub const B: u16 = 1 << 15;
    /// The exception flags IE..PE.
    pub const EXCEPTIONS: u16 = 0x3F;
    pub const CC: u16 = C0 | C1 | C2 | C3;
}

/// MXCSR power-on / reset value: all SIMD exceptions masked, round to nearest.
pub const MXCSR_RESET: u32 = 0x1F80;

/// x87 + SSE register state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(C)]
pub struct FpuState {
    /// Physical data registers R0..R7; ST(i) is `st[(TOP + i) & 7]`.
    pub st: [F80; 8],
    /// Control word.
    pub fcw: u16,
    /// Status word, TOP included (bits 13..11).
    pub fsw: u16,
    /// Full tag word (two bits per physical register, 11 = empty).
    pub ftw: u16,
    /// Last non-control instruction opcode (11 bits: low 3 bits of the escape byte, ModR/M).
    pub fop: u16,
    /// Last non-control instruction: CS selector and offset.
    pub fcs: u16,
    /// Last memory operand: data segment selector and offset.
    pub fds: u16,
    pub _pad: [u16; 2],
    pub fip: u64,
    pub fdp: u64,
    pub mxcsr: u32,
    pub _pad2: u32,
    /// XMM0..XMM15.
    pub xmm: [u128; 16],
}

impl FpuState {
    /// The power-on state (SDM Vol. 3 Table 10-1): FCW 0040H, FSW 0, all registers +0.0
    /// tagged zero (FTW 5555H), MXCSR 1F80H, XMM registers zero.
    pub fn reset() -> FpuState {
        FpuState {
            st: [F80::ZERO; 8],
            fcw: fcw::RESET,
            fsw: 0,
            ftw: 0x5555,
            fop: 0,
            fcs: 0,
            fds: 0,
            _pad: [0; 2],
            fip: 0,
            fdp: 0,
            mxcsr: MXCSR_RESET,
            _pad2: 0,
            xmm: [0; 16],
        }
    }

    /// FNINIT: FCW 037FH, FSW 0 (TOP 0), all tags empty, pointers and opcode cleared. Data
    /// registers, MXCSR and XMM registers are unchanged.
    pub fn finit(&mut self) {
        self.fcw = fcw::INIT;
        self.fsw = 0;
        self.ftw = 0xFFFF;
        self.fop = 0;
        self.fcs = 0;
        self.fds = 0;
        self.fip = 0;
        self.fdp = 0;
    }

    pub fn top(&self) -> u8 {
        ((self.fsw & fsw::TOP) >> fsw::TOP_SHIFT) as u8
    }

    pub fn set_top(&mut self, top: u8) {
        self.fsw = (self.fsw & !fsw::TOP) | ((u16::from(top) & 7) << fsw::TOP_SHIFT);
    }

    /// Physical register number of ST(i).
    pub fn phys(&self, i: u8) -> usize {
        usize::from((self.top() + i) & 7)
    }

    /// Tag of physical register `r`.
    pub fn tag_of(&self, r: usize) -> u16 {
        (self.ftw >> (2 * r)) & 3
    }

    pub fn set_tag(&mut self, r: usize, t: u16) {
        self.ftw = (self.ftw & !(3 << (2 * r))) | ((t & 3) << (2 * r));
    }

    /// ST(i) is empty.
    pub fn is_empty(&self, i: u8) -> bool {
        self.tag_of(self.phys(i)) == tag::EMPTY
    }

    pub fn st(&self, i: u8) -> F80 {
        self.st[self.phys(i)]
    }

    /// Write ST(i) and retag it from its contents.
    pub fn set_st(&mut self, i: u8, v: F80) {
        let r = self.phys(i);
        self.st[r] = v;
        self.set_tag(r, v.tag());
    }

    /// Recompute ES and B from the exception flags and masks (after the control word or the
    /// whole environment is loaded).
    pub fn recompute_summary(&mut self) {
        if self.fsw & fsw::EXCEPTIONS & !(self.fcw & fsw::EXCEPTIONS) != 0 {
            self.fsw |= fsw::ES | fsw::B;
        } else {
            self.fsw &= !(fsw::ES | fsw::B);
        }
    }

    /// Load an abridged (FXSAVE) tag byte: registers with a clear bit become empty, the
    /// others are tagged from their contents.
    pub fn set_abridged_tags(&mut self, tags: u8) {
        for r in 0..8 {
            let t = if tags & (1 << r) != 0 {
                self.st[r].tag()
            } else {
                tag::EMPTY
            };
            self.set_tag(r, t);
        }
    }

    /// The full tag word as FSTENV/FSAVE store it: empty registers stay empty, the others
    /// are tagged from their contents (so after an MMX instruction, which marks every
    /// register valid, the registers read back as valid, zero or special as they hold).
    pub fn full_tags(&self) -> u16 {
        (0..8).fold(0u16, |acc, r| {
            let t = if self.tag_of(r) == tag::EMPTY {
                tag::EMPTY
            } else {
                self.st[r].tag()
            };
            acc | (t << (2 * r))
        })
    }

    /// The abridged (FXSAVE) tag byte: bit r set when physical register r is not empty.
    pub fn abridged_tags(&self) -> u8 {
        (0..8).fold(0u8, |acc, r| {
            acc | (u8::from(self.tag_of(r) != tag::EMPTY) << r)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finit_values_and_tags() {
        let mut f = FpuState::reset();
        assert_eq!((f.fcw, f.ftw), (0x0040, 0x5555));
        f.finit();
        assert_eq!((f.fcw, f.fsw, f.ftw), (0x037F, 0, 0xFFFF));
        assert!(f.is_empty(0));
        f.set_top(7);
        f.set_st(0, F80::new(0x3FFF, 1 << 63));
        assert_eq!(f.phys(0), 7);
        assert_eq!(f.tag_of(7), tag::VALID);
        assert_eq!(f.abridged_tags(), 0x80);
        assert_eq!(F80::INDEFINITE.tag(), tag::SPECIAL);
        f.set_abridged_tags(0x81);
        assert_eq!(
            f.ftw, 0x3FFD,
            "R0 = +0.0 tagged zero, R7 = 1.0 valid, others empty"
        );
        assert_eq!(F80::ZERO.tag(), tag::ZERO);
    }
}
