//! Guest physical address space: RAM and firmware ROM in one host mapping, with the PC holes
//! (legacy VGA window, MMIO below 4 GiB) left to the device bus.
//!
//! Layout of the host backing: `[RAM (ram_size bytes) | ROM (rom_size bytes)]`. RAM below
//! 0xA0000 and from 1 MiB up to the PCI hole is identity-mapped; RAM beyond the hole start is
//! placed at 4 GiB. The firmware image is mapped at the top of the 32-bit space and its last
//! 128 KiB at 0xE0000..0x100000.

use memmap2::MmapMut;
use thiserror::Error;

/// Where RAM stops below 4 GiB and the MMIO hole (PCI, IOAPIC, LAPIC, firmware) begins.
pub const LOW_RAM_LIMIT: u64 = 0xC000_0000;
/// Legacy VGA / option-ROM window: 0xA0000..0xE0000 is not RAM.
pub const LEGACY_HOLE: std::ops::Range<u64> = 0xA_0000..0x10_0000;
/// Size of the BIOS shadow just below 1 MiB.
pub const BIOS_SHADOW: u64 = 0x2_0000;

#[derive(Debug, Error)]
pub enum MemoryError {
    #[error(
        "guest RAM size {0:#x} bytes is invalid (must be a multiple of 4 KiB and at least 2 MiB)"
    )]
    BadRamSize(u64),
    #[error("firmware image of {0} bytes is invalid (must be a non-zero multiple of 64 KiB, at most 16 MiB)")]
    BadRomSize(usize),
    #[error("cannot map {size:#x} bytes of guest memory: {source}")]
    Map { size: u64, source: std::io::Error },
    #[error("guest physical range {addr:#x}+{len:#x} is not RAM")]
    NotRam { addr: u64, len: u64 },
}

/// What a guest physical address refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhysTarget {
    /// Offset into the host backing (RAM).
    Ram(u64),
    /// Offset into the host backing (ROM: reads only; writes are dropped).
    Rom(u64),
    /// Not memory: the device bus decides.
    Mmio,
}

/// Guest physical memory.
pub struct PhysMem {
    backing: MmapMut,
    ram_size: u64,
    rom_size: u64,
    /// One bit per backing page that holds decoded/translated code.
    code_pages: Vec<u64>,
    /// Guest physical pages (not backing offsets) written while marked as code, for the
    /// engine to invalidate.
    smc_dirty: Vec<u64>,
}

impl PhysMem {
    /// Allocate `ram_size` bytes of zeroed RAM and map `rom` (possibly empty) as firmware.
    pub fn new(ram_size: u64, rom: &[u8]) -> Result<PhysMem, MemoryError> {
        if ram_size < 2 << 20 || !ram_size.is_multiple_of(4096) || ram_size > (1 << 40) {
            return Err(MemoryError::BadRamSize(ram_size));
        }
        if !rom.is_empty() && (!rom.len().is_multiple_of(0x1_0000) || rom.len() > 16 << 20) {
            return Err(MemoryError::BadRomSize(rom.len()));
        }
        let rom_size = rom.len() as u64;
        let total = ram_size + rom_size;
        let mut backing = MmapMut::map_anon(total as usize).map_err(|source| MemoryError::Map {
            size: total,
            source,
        })?;
        backing[ram_size as usize..].copy_from_slice(rom);
        let pages = total.div_ceil(4096);
        Ok(PhysMem {
            backing,
            ram_size,
            rom_size,
            code_pages: vec![0; pages.div_ceil(64) as usize],
            smc_dirty: Vec::new(),
        })
    }

    pub fn ram_size(&self) -> u64 {
        self.ram_size
    }

    /// RAM mapped below 4 GiB.
    pub fn low_ram(&self) -> u64 {
        self.ram_size.min(LOW_RAM_LIMIT)
    }

    /// RAM mapped at 4 GiB and above.
    pub fn high_ram(&self) -> u64 {
        self.ram_size - self.low_ram()
    }

    /// Classify a guest physical address.
    #[inline]
    pub fn target(&self, paddr: u64) -> PhysTarget {
        let low = self.low_ram();
        if paddr < low {
            if LEGACY_HOLE.contains(&paddr) {
                // The last min(rom, 128 KiB) bytes of the image end at 1 MiB (a 64 KiB image
                // appears at 0xF0000, so F000:FFF0 is its reset vector too).
                let shadow = self.rom_size.min(BIOS_SHADOW);
                if self.rom_size > 0 && paddr >= LEGACY_HOLE.end - shadow {
                    let off = self.rom_size - (LEGACY_HOLE.end - paddr);
                    return PhysTarget::Rom(self.ram_size + off);
                }
                return PhysTarget::Mmio;
            }
            return PhysTarget::Ram(paddr);
        }
        if paddr >= 1 << 32 {
            let off = paddr - (1 << 32);
            if off < self.high_ram() {
                return PhysTarget::Ram(low + off);
            }
            return PhysTarget::Mmio;
        }
        if self.rom_size > 0 && paddr >= (1 << 32) - self.rom_size {
            return PhysTarget::Rom(self.ram_size + paddr - ((1 << 32) - self.rom_size));
        }
        PhysTarget::Mmio
    }

    /// Host pointer of a backing offset.
    #[inline]
    pub fn host_ptr(&self, offset: u64) -> *mut u8 {
        debug_assert!(offset < self.ram_size + self.rom_size);
        // SAFETY: callers pass offsets obtained from `target`, which are within the mapping.
        unsafe { self.backing.as_ptr().add(offset as usize) as *mut u8 }
    }

    /// The whole backing (RAM then ROM), for snapshots and KVM memory slots.
    pub fn backing(&self) -> &[u8] {
        &self.backing
    }

    pub fn backing_mut(&mut self) -> &mut [u8] {
        &mut self.backing
    }

    /// Copy `data` into guest RAM at `paddr` (loaders). Fails unless the range is all RAM.
    pub fn write_ram(&mut self, paddr: u64, data: &[u8]) -> Result<(), MemoryError> {
        let off = self.ram_range(paddr, data.len() as u64)?;
        self.backing[off..off + data.len()].copy_from_slice(data);
        self.note_bulk_write(off as u64, data.len() as u64);
        Ok(())
    }

    /// Read guest RAM at `paddr` into `buf`. Fails unless the range is all RAM.
    pub fn read_ram(&self, paddr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let off = self.ram_range(paddr, buf.len() as u64)?;
        buf.copy_from_slice(&self.backing[off..off + buf.len()]);
        Ok(())
    }

    fn ram_range(&self, paddr: u64, len: u64) -> Result<usize, MemoryError> {
        let err = MemoryError::NotRam { addr: paddr, len };
        let PhysTarget::Ram(start) = self.target(paddr) else {
            return Err(err);
        };
        if len > 0 {
            let last = paddr
                .checked_add(len - 1)
                .ok_or(MemoryError::NotRam { addr: paddr, len })?;
            match self.target(last) {
                PhysTarget::Ram(end) if end - start == len - 1 => {}
                _ => return Err(err),
            }
        }
        Ok(start as usize)
    }

    /// Read a little-endian u64 from RAM (page-table walks). Non-RAM reads as all ones.
    pub fn read_u64(&self, paddr: u64) -> u64 {
        match self.target(paddr) {
            PhysTarget::Ram(o) | PhysTarget::Rom(o) if paddr.is_multiple_of(8) => {
                u64::from_le_bytes(self.backing[o as usize..o as usize + 8].try_into().unwrap())
            }
            _ => {
                let mut b = [0u8; 8];
                if self.read_ram(paddr, &mut b).is_err() {
                    return u64::MAX;
                }
                u64::from_le_bytes(b)
            }
        }
    }

    pub fn read_u32(&self, paddr: u64) -> u32 {
        let mut b = [0u8; 4];
        if self.read_ram(paddr, &mut b).is_err() {
            return u32::MAX;
        }
        u32::from_le_bytes(b)
    }

    /// Write a u64 to RAM (page-table A/D updates). Writes outside RAM are dropped.
    pub fn write_u64(&mut self, paddr: u64, v: u64) {
        let _ = self.write_ram(paddr, &v.to_le_bytes());
    }

    pub fn write_u32(&mut self, paddr: u64, v: u32) {
        let _ = self.write_ram(paddr, &v.to_le_bytes());
    }

    // ---- self-modifying code tracking ----

    /// Mark the backing page containing `offset` as holding decoded code. Returns true when
    /// it did not hold code before (the caller must then protect the TLB entries that map it).
    pub fn mark_code_page(&mut self, offset: u64) -> bool {
        let p = offset >> 12;
        let word = &mut self.code_pages[(p / 64) as usize];
        let bit = 1 << (p % 64);
        let newly = *word & bit == 0;
        *word |= bit;
        newly
    }

    #[inline]
    pub fn is_code_page(&self, offset: u64) -> bool {
        let p = offset >> 12;
        self.code_pages
            .get((p / 64) as usize)
            .is_some_and(|w| w & (1 << (p % 64)) != 0)
    }

    /// Record a write to backing `offset`: if the page holds code, unmark it and queue its
    /// guest physical page for invalidation. Returns true when the page held code.
    #[inline]
    pub fn note_write(&mut self, offset: u64) -> bool {
        if self.is_code_page(offset) {
            let p = offset >> 12;
            self.code_pages[(p / 64) as usize] &= !(1 << (p % 64));
            self.smc_dirty.push(self.guest_page_of_backing(p << 12));
            true
        } else {
            false
        }
    }

    /// Guest physical address of RAM backing offset `offset` (the inverse of
    /// [`Self::target`]: RAM beyond [`LOW_RAM_LIMIT`] lives at 4 GiB). Only RAM pages are
    /// marked as code, so only RAM offsets get here.
    fn guest_page_of_backing(&self, offset: u64) -> u64 {
        debug_assert!(
            offset < self.ram_size,
            "backing offset {offset:#x} is not RAM"
        );
        let low = self.low_ram();
        if offset < low {
            offset
        } else {
            (1 << 32) + (offset - low)
        }
    }

    fn note_bulk_write(&mut self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let mut page = offset & !0xFFF;
        while page < offset + len {
            self.note_write(page);
            page += 4096;
        }
    }

    /// Take the list of backing pages whose code was overwritten since the last call.
    pub fn take_smc_dirty(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.smc_dirty)
    }

    pub fn has_smc_dirty(&self) -> bool {
        !self.smc_dirty.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_has_pc_holes() {
        let rom = vec![0xAAu8; 0x2_0000];
        let m = PhysMem::new(16 << 20, &rom).unwrap();
        assert_eq!(m.target(0x1000), PhysTarget::Ram(0x1000));
        assert_eq!(m.target(0xB8000), PhysTarget::Mmio);
        assert_eq!(m.target(0xF0000), PhysTarget::Rom((16 << 20) + 0x1_0000));
        assert_eq!(
            m.target(0xFFFF_FFF0),
            PhysTarget::Rom((16 << 20) + 0x1_FFF0)
        );
        assert_eq!(m.target(0x100_0000), PhysTarget::Mmio);
        assert_eq!(m.target(0xFEE0_0000), PhysTarget::Mmio);
    }

    #[test]
    fn ram_above_hole_is_at_4g() {
        let m = PhysMem::new(LOW_RAM_LIMIT + (8 << 20), &[]).unwrap();
        assert_eq!(m.target(1 << 32), PhysTarget::Ram(LOW_RAM_LIMIT));
        assert_eq!(m.target((1 << 32) + (8 << 20)), PhysTarget::Mmio);
    }

    #[test]
    fn bad_sizes_are_rejected_with_the_value() {
        let e = PhysMem::new(1000, &[]).err().unwrap();
        assert!(e.to_string().contains("0x3e8"), "{e}");
        let e = PhysMem::new(4 << 20, &[1, 2, 3]).err().unwrap();
        assert!(e.to_string().contains("3 bytes"), "{e}");
    }

    #[test]
    fn writes_to_code_pages_are_reported_once() {
        let mut m = PhysMem::new(4 << 20, &[]).unwrap();
        m.mark_code_page(0x5000);
        assert!(m.note_write(0x5123));
        assert!(!m.note_write(0x5124));
        assert_eq!(m.take_smc_dirty(), vec![0x5000]);
    }

    #[test]
    fn code_writes_above_4g_queue_the_guest_physical_page() {
        let mut m = PhysMem::new(LOW_RAM_LIMIT + (8 << 20), &[]).unwrap();
        let PhysTarget::Ram(off) = m.target((1 << 32) + 0x3456) else {
            panic!("RAM expected at 4 GiB");
        };
        m.mark_code_page(off);
        assert!(m.note_write(off));
        assert_eq!(m.take_smc_dirty(), vec![(1 << 32) + 0x3000]);
        m.mark_code_page(off);
        m.write_ram((1 << 32) + 0x3ff0, &[0x90; 32]).unwrap();
        assert_eq!(
            m.take_smc_dirty(),
            vec![(1 << 32) + 0x3000],
            "a bulk write also queues guest physical pages"
        );
    }
}
