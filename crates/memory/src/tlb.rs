//! The per-vCPU software TLB ("shadow page table"): guest-virtual page → host pointer in one
//! step, with separate read / write / fetch tags and one array per privilege (supervisor,
//! user), direct-mapped.
//!
//! A tag equals the page-aligned linear address when the access may take the fast path. Low
//! tag bits mark pages that must take the slow path although the translation is cached:
//! [`TLB_MMIO`] (device memory or ROM writes) and [`TLB_CODE`] (writes to a page holding
//! decoded code must invalidate it). An empty slot holds [`INVALID`].

use crate::PAGE_MASK;

/// Number of entries per privilege level (power of two).
pub const TLB_ENTRIES: usize = 1024;
/// Tag bit: not plain RAM; go through the bus (or drop a ROM write).
pub const TLB_MMIO: u64 = 1 << 0;
/// Tag bit (write tag): page holds decoded code.
pub const TLB_CODE: u64 = 1 << 1;
/// A tag no linear address matches.
pub const INVALID: u64 = u64::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct TlbEntry {
    pub read_tag: u64,
    pub write_tag: u64,
    pub fetch_tag: u64,
    /// `host pointer = addend + linear address` for RAM pages.
    pub addend: u64,
    /// Physical address of the page.
    pub paddr_page: u64,
    pub global: bool,
}

impl TlbEntry {
    pub const EMPTY: TlbEntry = TlbEntry {
        read_tag: INVALID,
        write_tag: INVALID,
        fetch_tag: INVALID,
        addend: 0,
        paddr_page: 0,
        global: false,
    };
}

/// Counters for `--stats`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TlbStats {
    pub misses: u64,
    pub flushes: u64,
}

pub struct SoftTlb {
    /// `[0]`: supervisor accesses, `[1]`: user (CPL 3) accesses.
    entries: Box<[[TlbEntry; TLB_ENTRIES]; 2]>,
    pub stats: TlbStats,
}

impl Default for SoftTlb {
    fn default() -> Self {
        Self::new()
    }
}

impl SoftTlb {
    pub fn new() -> SoftTlb {
        SoftTlb {
            entries: Box::new([[TlbEntry::EMPTY; TLB_ENTRIES]; 2]),
            stats: TlbStats::default(),
        }
    }

    #[inline]
    pub fn index(lin: u64) -> usize {
        ((lin >> 12) as usize) & (TLB_ENTRIES - 1)
    }

    #[inline]
    pub fn entry(&self, user: bool, lin: u64) -> &TlbEntry {
        &self.entries[user as usize][Self::index(lin)]
    }

    #[inline]
    pub fn entry_mut(&mut self, user: bool, lin: u64) -> &mut TlbEntry {
        &mut self.entries[user as usize][Self::index(lin)]
    }

    /// Flush everything (CR0/CR4 paging changes, A20 toggles).
    pub fn flush_all(&mut self) {
        self.stats.flushes += 1;
        for set in self.entries.iter_mut() {
            set.fill(TlbEntry::EMPTY);
        }
    }

    /// Flush all but global entries (CR3 write with CR4.PGE).
    pub fn flush_non_global(&mut self) {
        self.stats.flushes += 1;
        for set in self.entries.iter_mut() {
            for e in set.iter_mut() {
                if !e.global {
                    *e = TlbEntry::EMPTY;
                }
            }
        }
    }

    /// INVLPG: drop the translation of one linear page (global or not), in both sets. Large
    /// pages are cached as 4 KiB pieces, so a guest's INVLPG of a large page drops only the
    /// piece it names; we therefore also drop every entry whose physical page shares the
    /// large-page-aligned range. Simpler and always correct: flush all entries for which the
    /// 2 MiB-aligned linear region matches.
    pub fn flush_page(&mut self, lin: u64) {
        let region = lin & !0x3F_FFFF;
        for set in self.entries.iter_mut() {
            for e in set.iter_mut() {
                let tag = e.read_tag.min(e.write_tag).min(e.fetch_tag);
                if tag != INVALID && tag & !0x3F_FFFF & PAGE_MASK == region {
                    *e = TlbEntry::EMPTY;
                }
            }
        }
    }

    /// Remove the fast write path from every entry that maps physical page `paddr_page`
    /// (it has just become a code page).
    pub fn protect_code_page(&mut self, paddr_page: u64) {
        for set in self.entries.iter_mut() {
            for e in set.iter_mut() {
                if e.paddr_page == paddr_page && e.write_tag != INVALID {
                    e.write_tag |= TLB_CODE;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushes_respect_global_bit() {
        let mut t = SoftTlb::new();
        *t.entry_mut(false, 0x1000) = TlbEntry {
            read_tag: 0x1000,
            global: true,
            ..TlbEntry::EMPTY
        };
        *t.entry_mut(false, 0x2000) = TlbEntry {
            read_tag: 0x2000,
            ..TlbEntry::EMPTY
        };
        t.flush_non_global();
        assert_eq!(t.entry(false, 0x1000).read_tag, 0x1000);
        assert_eq!(t.entry(false, 0x2000).read_tag, INVALID);
        t.flush_page(0x1000);
        assert_eq!(t.entry(false, 0x1000).read_tag, INVALID);
    }
}
