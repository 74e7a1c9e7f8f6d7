//! Segment registers, descriptor caches and descriptor-table registers.

use serde::{Deserialize, Serialize};

/// The six segment registers in hardware encoding order (index into `CpuState::seg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SegReg {
    Es = 0,
    Cs = 1,
    Ss = 2,
    Ds = 3,
    Fs = 4,
    Gs = 5,
}

impl SegReg {
    pub const ALL: [SegReg; 6] = [
        SegReg::Es,
        SegReg::Cs,
        SegReg::Ss,
        SegReg::Ds,
        SegReg::Fs,
        SegReg::Gs,
    ];

    pub fn name(self) -> &'static str {
        ["es", "cs", "ss", "ds", "fs", "gs"][self as usize]
    }
}

/// Access-rights bits of a descriptor cache, laid out as in the VMX "access rights" field:
/// bits 0-7 are descriptor byte 5 (type, S, DPL, P), bits 12-15 are AVL, L, D/B, G.
pub mod attr {
    /// Type field (4 bits).
    pub const TYPE_MASK: u16 = 0xF;
    /// Data: accessed. Code: accessed.
    pub const ACCESSED: u16 = 1 << 0;
    /// Data: writable. Code: readable.
    pub const RW: u16 = 1 << 1;
    /// Data: expand-down. Code: conforming.
    pub const DC: u16 = 1 << 2;
    /// Code (1) or data (0) segment.
    pub const CODE: u16 = 1 << 3;
    /// Descriptor type: 1 = code/data, 0 = system.
    pub const S: u16 = 1 << 4;
    pub const DPL_SHIFT: u16 = 5;
    pub const DPL_MASK: u16 = 3 << 5;
    pub const PRESENT: u16 = 1 << 7;
    pub const AVL: u16 = 1 << 12;
    /// 64-bit code segment.
    pub const L: u16 = 1 << 13;
    /// Default operand size / big.
    pub const DB: u16 = 1 << 14;
    pub const G: u16 = 1 << 15;
    /// Attribute bits of a real-mode / V86 data segment: present, S, writable, accessed.
    pub const REAL_MODE_DATA: u16 = PRESENT | S | RW | ACCESSED;
    /// Attribute bits of a real-mode code segment: present, S, code, readable, accessed.
    pub const REAL_MODE_CODE: u16 = PRESENT | S | CODE | RW | ACCESSED;
}

/// System-descriptor types (S = 0).
pub mod sys_type {
    pub const TSS16_AVAIL: u8 = 1;
    pub const LDT: u8 = 2;
    pub const TSS16_BUSY: u8 = 3;
    pub const CALL_GATE16: u8 = 4;
    pub const TASK_GATE: u8 = 5;
    pub const INT_GATE16: u8 = 6;
    pub const TRAP_GATE16: u8 = 7;
    pub const TSS32_AVAIL: u8 = 9;
    pub const TSS32_BUSY: u8 = 11;
    pub const CALL_GATE32: u8 = 12;
    pub const INT_GATE32: u8 = 14;
    pub const TRAP_GATE32: u8 = 15;
}

/// A segment register with its hidden descriptor cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[repr(C)]
pub struct Segment {
    pub base: u64,
    /// Expanded (byte-granular) limit.
    pub limit: u32,
    pub selector: u16,
    /// Access rights, see [`attr`].
    pub attr: u16,
}

impl Segment {
    /// A segment as loaded in real mode (or V86 mode): base = selector * 16, limit 64 KiB.
    pub fn real_mode(selector: u16, code: bool) -> Segment {
        Segment {
            base: u64::from(selector) << 4,
            limit: 0xFFFF,
            selector,
            attr: if code {
                attr::REAL_MODE_CODE
            } else {
                attr::REAL_MODE_DATA
            },
        }
    }

    /// Decode an 8-byte legacy descriptor into a cache (base bits 32-63 are zero).
    pub fn from_descriptor(selector: u16, desc: u64) -> Segment {
        let limit_raw = (desc & 0xFFFF) as u32 | (((desc >> 48) & 0xF) as u32) << 16;
        let base = ((desc >> 16) & 0xFF_FFFF) | (((desc >> 56) & 0xFF) << 24);
        let attr = (((desc >> 40) & 0xFF) | (((desc >> 52) & 0xF) << 12)) as u16;
        let limit = if attr & attr::G != 0 {
            (limit_raw << 12) | 0xFFF
        } else {
            limit_raw
        };
        Segment {
            base,
            limit,
            selector,
            attr,
        }
    }

    pub fn dpl(&self) -> u8 {
        ((self.attr & attr::DPL_MASK) >> attr::DPL_SHIFT) as u8
    }
    pub fn present(&self) -> bool {
        self.attr & attr::PRESENT != 0
    }
    pub fn is_code(&self) -> bool {
        self.attr & attr::S != 0 && self.attr & attr::CODE != 0
    }
    pub fn is_system(&self) -> bool {
        self.attr & attr::S == 0
    }
    pub fn seg_type(&self) -> u8 {
        (self.attr & attr::TYPE_MASK) as u8
    }
    pub fn long(&self) -> bool {
        self.attr & attr::L != 0
    }
    pub fn big(&self) -> bool {
        self.attr & attr::DB != 0
    }
    /// A null/unusable segment: loaded with a null selector in protected mode.
    pub fn unusable(&self) -> bool {
        !self.present()
    }
}

/// GDTR / IDTR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[repr(C)]
pub struct TableReg {
    pub base: u64,
    pub limit: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_code_descriptor_decodes() {
        // Base 0, limit 0xFFFFF pages, 32-bit code, DPL 0, present.
        let s = Segment::from_descriptor(0x08, 0x00CF_9A00_0000_FFFF);
        assert_eq!(s.base, 0);
        assert_eq!(s.limit, 0xFFFF_FFFF);
        assert!(s.is_code() && s.big() && s.present());
        assert_eq!(s.dpl(), 0);
        let l = Segment::from_descriptor(0x10, 0x0020_9B00_0000_0000);
        assert!(l.long());
    }
}
