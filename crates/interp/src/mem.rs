//! Guest memory access from instructions: segmentation (limits, types, canonical checks) to a
//! linear address, then the softmmu TLB fast path to a host pointer, or the slow path (page
//! walk, TLB refill, MMIO dispatch, ROM write drop, self-modifying-code detection).

use crate::cpu::{Bits, Cpu};
use crane86_memory::paging::PagingRegs;
use crane86_memory::tlb::{TlbEntry, INVALID, TLB_CODE, TLB_MMIO};
use crane86_memory::{walk, Access, PhysTarget, PAGE_MASK};
use crane86_x86::segment::attr;
use crane86_x86::{Exception, SegReg};

#[inline]
fn canonical(lin: u64) -> bool {
    ((lin as i64) << 16 >> 16) as u64 == lin
}

#[inline]
fn seg_fault(seg: SegReg) -> Exception {
    if seg == SegReg::Ss {
        Exception::ss(0)
    } else {
        Exception::gp0()
    }
}

impl Cpu<'_> {
    // ------------------------------------------------------------ segmentation

    /// Linear address of `bytes` bytes at `seg:off`, with the checks of the current mode.
    #[inline]
    pub fn linear(&self, seg: SegReg, off: u64, bytes: u32, write: bool) -> Result<u64, Exception> {
        let s = &self.s.seg[seg as usize];
        if self.long64() {
            let lin = if matches!(seg, SegReg::Fs | SegReg::Gs) {
                s.base.wrapping_add(off)
            } else {
                off
            };
            if !canonical(lin) || !canonical(lin.wrapping_add(u64::from(bytes) - 1)) {
                return Err(seg_fault(seg));
            }
            return Ok(lin);
        }
        let last = off.wrapping_add(u64::from(bytes) - 1);
        if self.s.protected() && !self.s.v86() {
            if s.unusable() {
                return Err(seg_fault(seg));
            }
            let ty = s.attr;
            if write {
                if ty & attr::CODE != 0 || ty & attr::RW == 0 {
                    return Err(seg_fault(seg));
                }
            } else if ty & attr::CODE != 0 && ty & attr::RW == 0 {
                return Err(seg_fault(seg));
            }
            if ty & attr::CODE == 0 && ty & attr::DC != 0 {
                // Expand-down: valid offsets are limit+1 ..= 0xFFFF or 0xFFFFFFFF.
                let upper: u64 = if s.big() { 0xFFFF_FFFF } else { 0xFFFF };
                if off <= u64::from(s.limit) || last > upper || last < off {
                    return Err(seg_fault(seg));
                }
                return Ok(s.base.wrapping_add(off) & 0xFFFF_FFFF);
            }
        }
        if last > u64::from(s.limit) || last < off {
            return Err(seg_fault(seg));
        }
        Ok(s.base.wrapping_add(off) & 0xFFFF_FFFF)
    }

    /// Read `bits` at `seg:off` with the current privilege.
    #[inline]
    pub fn read_mem(&mut self, seg: SegReg, off: u64, bits: Bits) -> Result<u64, Exception> {
        let lin = self.linear(seg, off, bits / 8, false)?;
        self.read_lin(lin, bits)
    }

    #[inline]
    pub fn write_mem(
        &mut self,
        seg: SegReg,
        off: u64,
        bits: Bits,
        v: u64,
    ) -> Result<(), Exception> {
        let lin = self.linear(seg, off, bits / 8, true)?;
        self.write_lin(lin, bits, v)
    }

    // ------------------------------------------------------------ linear access

    #[inline]
    fn user_access(&self) -> bool {
        self.s.cpl() == 3
    }

    /// Read `bits` (8..64) at linear `lin` with the current privilege.
    #[inline]
    pub fn read_lin(&mut self, lin: u64, bits: Bits) -> Result<u64, Exception> {
        let user = self.user_access();
        self.read_lin_as(lin, bits, user)
    }

    /// Read with an explicit privilege (`user = false` for implicit supervisor accesses such
    /// as descriptor-table and TSS reads).
    #[inline]
    pub fn read_lin_as(&mut self, lin: u64, bits: Bits, user: bool) -> Result<u64, Exception> {
        let bytes = bits / 8;
        self.tlb.stats.accesses += 1;
        let e = self.tlb.entry(user, lin);
        if e.read_tag == lin & PAGE_MASK && (lin & 0xFFF) + u64::from(bytes) <= 0x1000 {
            let p = e.addend.wrapping_add(lin) as *const u8;
            // SAFETY: a read tag without flag bits is only installed for RAM/ROM pages; the
            // addend maps this page into the live host backing and the access stays inside it.
            return Ok(unsafe { load(p, bytes) });
        }
        self.read_slow(lin, bytes, user, Access::Read)
    }

    /// Read for a read-modify-write: translates for write (so a read-only page faults with
    /// the W bit), then reads.
    #[inline]
    pub fn read_lin_for_write(&mut self, lin: u64, bits: Bits) -> Result<u64, Exception> {
        let user = self.user_access();
        let bytes = bits / 8;
        self.tlb.stats.accesses += 1;
        let e = self.tlb.entry(user, lin);
        if e.write_tag == lin & PAGE_MASK && (lin & 0xFFF) + u64::from(bytes) <= 0x1000 {
            let p = e.addend.wrapping_add(lin) as *const u8;
            // SAFETY: a write tag without flag bits is only installed for RAM pages.
            return Ok(unsafe { load(p, bytes) });
        }
        self.read_slow(lin, bytes, user, Access::Write)
    }

    #[inline]
    pub fn write_lin(&mut self, lin: u64, bits: Bits, v: u64) -> Result<(), Exception> {
        let user = self.user_access();
        self.write_lin_as(lin, bits, v, user)
    }

    #[inline]
    pub fn write_lin_as(
        &mut self,
        lin: u64,
        bits: Bits,
        v: u64,
        user: bool,
    ) -> Result<(), Exception> {
        let bytes = bits / 8;
        self.tlb.stats.accesses += 1;
        let e = self.tlb.entry(user, lin);
        if e.write_tag == lin & PAGE_MASK && (lin & 0xFFF) + u64::from(bytes) <= 0x1000 {
            let p = e.addend.wrapping_add(lin) as *mut u8;
            // SAFETY: a write tag without flag bits is only installed for plain RAM pages
            // (not code, not ROM, not MMIO) that are writable at this privilege.
            unsafe { store(p, bytes, v) };
            return Ok(());
        }
        self.write_slow(lin, bytes, v, user)
    }

    // ------------------------------------------------------------ slow paths

    fn paging_regs(&self) -> PagingRegs {
        PagingRegs {
            cr0: self.s.cr0,
            cr3: self.s.cr3,
            cr4: self.s.cr4,
            efer: self.s.efer,
        }
    }

    /// Translate `lin` for `access`, refilling the TLB. Returns the physical address.
    pub fn translate(&mut self, lin: u64, access: Access, user: bool) -> Result<u64, Exception> {
        let page = lin & PAGE_MASK;
        let e = *self.tlb.entry(user, lin);
        let tag = match access {
            Access::Read => e.read_tag,
            Access::Write => e.write_tag,
            Access::Fetch => e.fetch_tag,
        };
        if tag != INVALID && tag & PAGE_MASK == page {
            return Ok(e.paddr_page | (lin & 0xFFF));
        }
        self.tlb.stats.misses += 1;
        let t = walk(self.mem, self.paging_regs(), lin, access, user).map_err(|code| {
            self.s.cr2 = lin;
            Exception::pf(code)
        })?;
        let mut paddr = t.paddr;
        if !self.s.a20 {
            paddr &= !(1 << 20);
        }
        let ppage = paddr & PAGE_MASK;
        let target = self.mem.target(ppage);
        let (host, ram, rom) = match target {
            PhysTarget::Ram(off) => (Some(off), true, false),
            PhysTarget::Rom(off) => (Some(off), false, true),
            PhysTarget::Mmio => (None, false, false),
        };
        let addend = host
            .map(|off| (self.mem.host_ptr(off) as u64).wrapping_sub(page))
            .unwrap_or(0);
        let mmio_flag = if host.is_some() { 0 } else { TLB_MMIO };
        let write_tag = if t.writable && t.dirty {
            if rom || !ram {
                page | TLB_MMIO
            } else if host.is_some_and(|off| self.mem.is_code_page(off)) {
                page | TLB_CODE
            } else {
                page
            }
        } else {
            INVALID
        };
        if !canonical(lin) {
            // Callers check first (#GP); never cache such a walk: the JIT's inline lookup
            // relies on every tag being a canonical page.
            return Ok(paddr);
        }
        let entry = TlbEntry {
            read_tag: page | mmio_flag,
            write_tag,
            fetch_tag: if t.executable {
                page | mmio_flag
            } else {
                INVALID
            },
            addend,
            paddr_page: ppage,
            mapping_base: lin & !(t.page_size - 1),
            mapping_mask: t.page_size - 1,
            global: t.global,
        };
        self.tlb.fill(user, lin, entry);
        Ok(paddr)
    }

    fn read_slow(
        &mut self,
        lin: u64,
        bytes: u32,
        user: bool,
        access: Access,
    ) -> Result<u64, Exception> {
        if (lin & 0xFFF) + u64::from(bytes) > 0x1000 {
            // Page-crossing: translate both pages first so a fault leaves nothing done.
            let first = 0x1000 - (lin & 0xFFF) as u32;
            let p0 = self.translate(lin, access, user)?;
            let p1 = self.translate(lin.wrapping_add(u64::from(first)), access, user)?;
            let mut v = 0u64;
            for k in 0..bytes {
                let pa = if k < first {
                    p0 + u64::from(k)
                } else {
                    p1 + u64::from(k - first)
                };
                v |= self.phys_read(pa, 1) << (8 * k);
            }
            return Ok(v);
        }
        let pa = self.translate(lin, access, user)?;
        Ok(self.phys_read(pa, bytes))
    }

    fn write_slow(&mut self, lin: u64, bytes: u32, v: u64, user: bool) -> Result<(), Exception> {
        if (lin & 0xFFF) + u64::from(bytes) > 0x1000 {
            let first = 0x1000 - (lin & 0xFFF) as u32;
            let p0 = self.translate(lin, Access::Write, user)?;
            let p1 = self.translate(lin.wrapping_add(u64::from(first)), Access::Write, user)?;
            for k in 0..bytes {
                let pa = if k < first {
                    p0 + u64::from(k)
                } else {
                    p1 + u64::from(k - first)
                };
                self.phys_write(pa, 1, v >> (8 * k));
            }
            return Ok(());
        }
        let pa = self.translate(lin, Access::Write, user)?;
        self.phys_write(pa, bytes, v);
        Ok(())
    }

    /// Read guest-physical memory (RAM, ROM or MMIO) of `bytes` within one page.
    pub fn phys_read(&mut self, pa: u64, bytes: u32) -> u64 {
        match self.mem.target(pa) {
            PhysTarget::Ram(off) | PhysTarget::Rom(off) => {
                // SAFETY: `target` returned an in-bounds backing offset and callers keep the
                // access within one page, which lies entirely within the backing.
                unsafe { load(self.mem.host_ptr(off), bytes) }
            }
            PhysTarget::Mmio => {
                self.sync_platform_time();
                let v = self.plat.mmio_read(pa, bytes as u8);
                self.step.action |= false;
                v
            }
        }
    }

    /// Write guest-physical memory; ROM writes are dropped, MMIO goes to the platform, RAM
    /// writes to a code page queue its invalidation and end the current block.
    pub fn phys_write(&mut self, pa: u64, bytes: u32, v: u64) {
        match self.mem.target(pa) {
            PhysTarget::Ram(off) => {
                if self.mem.note_write(off) {
                    self.step.end_block = true;
                    self.stats.smc_invalidations += 1;
                }
                // SAFETY: in-bounds backing offset, access within one page (see phys_read).
                unsafe { store(self.mem.host_ptr(off), bytes, v) };
            }
            PhysTarget::Rom(_) => {}
            PhysTarget::Mmio => {
                self.sync_platform_time();
                self.plat.mmio_write(pa, bytes as u8, v);
                self.step.action = true;
            }
        }
    }

    // ------------------------------------------------------------ supervisor helpers

    /// Implicit supervisor read (descriptor tables, IDT, TSS).
    pub fn read_sys(&mut self, lin: u64, bits: Bits) -> Result<u64, Exception> {
        self.read_lin_as(lin, bits, false)
    }

    pub fn write_sys(&mut self, lin: u64, bits: Bits, v: u64) -> Result<(), Exception> {
        self.write_lin_as(lin, bits, v, false)
    }
}

/// Load `bytes` (1, 2, 4, 8) little-endian from `p`.
///
/// # Safety
/// `p..p+bytes` must be readable.
#[inline]
unsafe fn load(p: *const u8, bytes: u32) -> u64 {
    // SAFETY: the caller guarantees `p..p+bytes` is readable; unaligned reads are allowed.
    unsafe {
        match bytes {
            1 => u64::from(*p),
            2 => u64::from(u16::from_le((p as *const u16).read_unaligned())),
            4 => u64::from(u32::from_le((p as *const u32).read_unaligned())),
            _ => u64::from_le((p as *const u64).read_unaligned()),
        }
    }
}

/// Store the low `bytes` of `v` little-endian at `p`.
///
/// # Safety
/// `p..p+bytes` must be writable.
#[inline]
unsafe fn store(p: *mut u8, bytes: u32, v: u64) {
    // SAFETY: the caller guarantees `p..p+bytes` is writable; unaligned writes are allowed.
    unsafe {
        match bytes {
            1 => *p = v as u8,
            2 => (p as *mut u16).write_unaligned((v as u16).to_le()),
            4 => (p as *mut u32).write_unaligned((v as u32).to_le()),
            _ => (p as *mut u64).write_unaligned(v.to_le()),
        }
    }
}
