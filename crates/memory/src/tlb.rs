//! The per-vCPU software TLB ("shadow page table"): guest-virtual page → host pointer in one
//! step, with separate read / write / fetch tags and one array per privilege (supervisor,
//! user), direct-mapped.
//!
//! A tag equals the page-aligned linear address when the access may take the fast path. Low
//! tag bits mark pages that must take the slow path although the translation is cached:
//! [`TLB_MMIO`] (device memory or ROM writes) and [`TLB_CODE`] (writes to a page holding
//! decoded code must invalidate it). An empty slot holds [`INVALID`].

/// Number of entries per privilege level (power of two). Linux boot + workload: 1024 entries
/// took 8.2 M page walks (conflicts between the kernel's and the programs' pages), 2048 took
/// 0.77 M and 4096 0.55 M, with wall times equal within noise from 2048 up.
pub const TLB_ENTRIES: usize = 2048;
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
    /// Linear base of the guest mapping this 4 KiB piece belongs to (differs from the tag's
    /// page for 2 MiB / 4 MiB / 1 GiB pages), so INVLPG can drop every cached piece of it.
    pub mapping_base: u64,
    /// `mapping size - 1`.
    pub mapping_mask: u64,
    pub global: bool,
}

impl TlbEntry {
    pub const EMPTY: TlbEntry = TlbEntry {
        read_tag: INVALID,
        write_tag: INVALID,
        fetch_tag: INVALID,
        addend: 0,
        paddr_page: 0,
        mapping_base: INVALID,
        mapping_mask: 0,
        global: false,
    };
}

/// Counters for `--stats`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TlbStats {
    /// Lookups: every data access, and one instruction fetch per executed block.
    pub accesses: u64,
    /// Lookups that needed a page walk.
    pub misses: u64,
    pub flushes: u64,
}

impl TlbStats {
    /// Fraction of lookups that needed no page walk.
    pub fn hit_rate(&self) -> f64 {
        if self.accesses == 0 {
            return 1.0;
        }
        1.0 - self.misses.min(self.accesses) as f64 / self.accesses as f64
    }
}

pub struct SoftTlb {
    /// `[0]`: supervisor accesses, `[1]`: user (CPL 3) accesses.
    entries: Box<[[TlbEntry; TLB_ENTRIES]; 2]>,
    /// The slots of each set that hold an entry, so that flushes and scans touch only those
    /// (a guest's working set is a small part of the sets, and a flush per address-space
    /// switch would otherwise clear all of them).
    used: [Vec<u16>; 2],
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
            used: [Vec::new(), Vec::new()],
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

    /// The first entry of the supervisor or user set, for JIT code that indexes the set
    /// itself ([`TLB_ENTRIES`] entries of `size_of::<TlbEntry>()` bytes). JIT code only
    /// reads it: entries change through [`SoftTlb::fill`] and the flushes.
    pub fn entries_ptr(&mut self, user: bool) -> *mut TlbEntry {
        self.entries[user as usize].as_mut_ptr()
    }

    /// Cache `entry` (a translation of `lin`'s page) in its slot of the set.
    #[inline]
    pub fn fill(&mut self, user: bool, lin: u64, entry: TlbEntry) {
        let k = Self::index(lin);
        let slot = &mut self.entries[user as usize][k];
        if slot.mapping_base == INVALID && entry.mapping_base != INVALID {
            self.used[user as usize].push(k as u16);
        }
        *slot = entry;
    }

    /// Apply `f` to every entry of both sets that holds a translation; entries `f` leaves
    /// empty leave the used lists.
    fn for_each_used(&mut self, mut f: impl FnMut(&mut TlbEntry)) {
        for (set, used) in self.entries.iter_mut().zip(self.used.iter_mut()) {
            used.retain(|&k| {
                let e = &mut set[k as usize];
                f(e);
                e.mapping_base != INVALID
            });
        }
    }

    /// Flush everything (CR0/CR4 paging changes, A20 toggles).
    pub fn flush_all(&mut self) {
        self.stats.flushes += 1;
        self.for_each_used(|e| *e = TlbEntry::EMPTY);
    }

    /// Flush all but global entries (CR3 write with CR4.PGE).
    pub fn flush_non_global(&mut self) {
        self.stats.flushes += 1;
        self.for_each_used(|e| {
            if !e.global {
                *e = TlbEntry::EMPTY;
            }
        });
    }

    /// INVLPG: drop the translation of the guest page containing `lin` (global or not), in
    /// both privilege sets. The TLB caches large pages as 4 KiB pieces, so every piece of the
    /// mapping that contains `lin` goes.
    pub fn flush_page(&mut self, lin: u64) {
        self.for_each_used(|e| {
            if lin & !e.mapping_mask == e.mapping_base {
                *e = TlbEntry::EMPTY;
            }
        });
    }

    /// Remove the fast write path from every entry that maps physical page `paddr_page`
    /// (it has just become a code page).
    pub fn protect_code_page(&mut self, paddr_page: u64) {
        self.for_each_used(|e| {
            if e.paddr_page == paddr_page && e.write_tag != INVALID {
                e.write_tag |= TLB_CODE;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(lin: u64, global: bool) -> TlbEntry {
        TlbEntry {
            read_tag: lin,
            mapping_base: lin,
            mapping_mask: 0xFFF,
            global,
            ..TlbEntry::EMPTY
        }
    }

    #[test]
    fn flushes_respect_global_bit() {
        let mut t = SoftTlb::new();
        t.fill(false, 0x1000, page(0x1000, true));
        t.fill(false, 0x2000, page(0x2000, false));
        t.flush_non_global();
        assert_eq!(t.entry(false, 0x1000).read_tag, 0x1000);
        assert_eq!(t.entry(false, 0x2000).read_tag, INVALID);
        t.flush_page(0x1000);
        assert_eq!(t.entry(false, 0x1000).read_tag, INVALID);
    }

    #[test]
    fn invlpg_drops_every_piece_of_a_large_page() {
        let mut t = SoftTlb::new();
        for piece in [0x40_0000u64, 0x40_1000, 0x5F_F000] {
            let e = TlbEntry {
                read_tag: piece,
                mapping_base: 0x40_0000,
                mapping_mask: 0x1F_FFFF,
                ..TlbEntry::EMPTY
            };
            t.fill(true, piece, e);
        }
        t.flush_page(0x5A_1234);
        for piece in [0x40_0000u64, 0x40_1000, 0x5F_F000] {
            assert_eq!(t.entry(true, piece).read_tag, INVALID);
        }
    }

    /// Flushes reach every filled slot, also slots refilled after a flush and slots whose
    /// entry was replaced by another page's (the used lists neither lose nor pile up slots).
    #[test]
    fn flushes_reach_every_filled_slot() {
        let mut t = SoftTlb::new();
        let pages: Vec<u64> = (0..300u64).map(|k| k * 0x7000).collect();
        for round in 0..3 {
            for &lin in &pages {
                t.fill(round % 2 == 1, lin, page(lin, lin % 3 == 0));
                // Another page in the same slot replaces it.
                let alias = lin + (TLB_ENTRIES as u64) * 0x1000;
                t.fill(round % 2 == 1, alias, page(alias, lin % 3 == 0));
            }
            t.flush_page(pages[9] + (TLB_ENTRIES as u64) * 0x1000);
            t.flush_non_global();
            for &lin in &pages {
                let alias = lin + (TLB_ENTRIES as u64) * 0x1000;
                let e = t.entry(round % 2 == 1, alias);
                let kept = lin % 3 == 0 && lin != pages[9];
                assert_eq!(e.read_tag != INVALID, kept, "round {round} page {alias:#x}");
            }
            t.flush_all();
            for user in [false, true] {
                assert!(t.entries[user as usize]
                    .iter()
                    .all(|e| *e == TlbEntry::EMPTY));
                assert!(t.used[user as usize].is_empty());
            }
        }
    }
}
