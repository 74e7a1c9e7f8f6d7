//! Descriptor-table access: fetching GDT/LDT/IDT entries by selector, setting the accessed
//! bit, and reading the TSS stack pointers used by privilege changes.

use crate::cpu::Cpu;
use crane86_x86::segment::{attr, Segment};
use crane86_x86::Exception;

/// Selector error code: index and TI bits (the RPL bits replaced by EXT/IDT flags).
#[inline]
pub fn sel_code(sel: u16) -> u32 {
    u32::from(sel & 0xFFFC)
}

impl Cpu<'_> {
    /// Linear address of the 8-byte descriptor for `sel` in the GDT or LDT, or `None` when it
    /// is outside the table limit.
    pub fn descriptor_addr(&self, sel: u16) -> Option<u64> {
        let index = u64::from(sel & 0xFFF8);
        let (base, limit) = if sel & 4 != 0 {
            let l = &self.s.ldtr;
            if l.unusable() {
                return None;
            }
            (l.base, u64::from(l.limit))
        } else {
            (self.s.gdtr.base, u64::from(self.s.gdtr.limit))
        };
        if index + 7 > limit {
            return None;
        }
        Some(base.wrapping_add(index))
    }

    /// Read the legacy descriptor for `sel`; `err` is returned (with the selector code) when
    /// the selector is outside its table.
    pub fn read_descriptor(
        &mut self,
        sel: u16,
        err: fn(u32) -> Exception,
    ) -> Result<u64, Exception> {
        let addr = self.descriptor_addr(sel).ok_or(err(sel_code(sel)))?;
        self.read_sys(addr, 64)
    }

    /// Read the high 8 bytes of a 16-byte system descriptor (long mode).
    pub fn read_descriptor_high(
        &mut self,
        sel: u16,
        err: fn(u32) -> Exception,
    ) -> Result<u64, Exception> {
        let addr = self
            .descriptor_addr(sel.wrapping_add(8))
            .ok_or(err(sel_code(sel)))?;
        self.read_sys(addr, 64)
    }

    /// Set the accessed bit of a code/data descriptor in memory if clear.
    pub fn set_accessed(&mut self, sel: u16, desc: u64) -> Result<(), Exception> {
        if desc & (1 << 40) == 0 {
            if let Some(addr) = self.descriptor_addr(sel) {
                let b = self.read_sys(addr + 5, 8)?;
                self.write_sys(addr + 5, 8, b | 1)?;
            }
        }
        Ok(())
    }

    /// Stack for privilege level `dpl` from the current TSS: (SS, ESP) for 16/32-bit TSSs.
    pub fn tss_stack(&mut self, dpl: u8) -> Result<(u16, u64), Exception> {
        let tr = self.s.tr;
        let ty = tr.seg_type();
        let tss32 = ty & 8 != 0;
        let (off, bits) = if tss32 {
            (4 + 8 * u64::from(dpl), 32)
        } else {
            (2 + 4 * u64::from(dpl), 16)
        };
        let size = if tss32 { 6 } else { 4 };
        if off + size - 1 > u64::from(tr.limit) {
            return Err(Exception::ts(sel_code(tr.selector)));
        }
        let sp = self.read_sys(tr.base + off, bits)?;
        let ss = self.read_sys(tr.base + off + u64::from(bits / 8), 16)? as u16;
        Ok((ss, sp))
    }

    /// RSPn (`n` < 3) or ISTn (`n` = 3 + ist - 1 … expressed as an index into the 64-bit
    /// TSS: offset 4 + 8*n for RSP0..2, 0x24 + 8*(ist-1) for IST1..7).
    pub fn tss64_read(&mut self, offset: u64) -> Result<u64, Exception> {
        let tr = self.s.tr;
        if offset + 7 > u64::from(tr.limit) {
            return Err(Exception::ts(sel_code(tr.selector)));
        }
        self.read_sys(tr.base + offset, 64)
    }
}

/// A code segment descriptor cache from `desc` with selector `sel` (RPL already adjusted).
pub fn segment_from(sel: u16, desc: u64) -> Segment {
    let mut s = Segment::from_descriptor(sel, desc);
    s.attr |= attr::ACCESSED;
    s
}
