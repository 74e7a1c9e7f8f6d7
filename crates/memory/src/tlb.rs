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
    /// Which slots of each set hold entries, so that flushes touch only the slots they may
    /// clear (a guest's working set is a small part of the sets, and a flush per
    /// address-space switch would otherwise clear all of them).
    slots: [UsedSlots; 2],
    pub stats: TlbStats,
}

/// Membership bits of [`UsedSlots::listed`], one per list.
const IN_LOCAL: u8 = 1 << 0;
const IN_GLOBAL: u8 = 1 << 1;
const IN_LARGE: u8 = 1 << 2;

/// The filled slots of one set, in three lists: non-global entries (all that a CR3 write
/// clears), global entries, and pieces of large pages (all that INVLPG must look at beyond
/// the slot of its address). Invariant: every filled slot is in the list of its entry's
/// kind, at most once. A list may also hold slots whose entry has since gone or changed
/// kind; a scan of the list drops them.
struct UsedSlots {
    local: Vec<u16>,
    global: Vec<u16>,
    large: Vec<u16>,
    /// Per slot, the lists (`IN_*` bits) it is in.
    listed: Box<[u8; TLB_ENTRIES]>,
    /// The linear range `[lo, hi]` the large-page pieces in `large` may cover, so that
    /// INVLPG of an address outside it skips the list.
    large_span: (u64, u64),
}

impl UsedSlots {
    const NO_SPAN: (u64, u64) = (u64::MAX, 0);

    fn new() -> UsedSlots {
        UsedSlots {
            local: Vec::new(),
            global: Vec::new(),
            large: Vec::new(),
            listed: Box::new([0; TLB_ENTRIES]),
            large_span: Self::NO_SPAN,
        }
    }

    fn list(&mut self, k: usize, which: u8) {
        if self.listed[k] & which == 0 {
            self.listed[k] |= which;
            match which {
                IN_LOCAL => self.local.push(k as u16),
                IN_GLOBAL => self.global.push(k as u16),
                _ => self.large.push(k as u16),
            }
        }
    }

    /// Visit the entries of list `which` that are of its kind with `f`, which may clear
    /// them. A slot leaves the list when its entry is gone or is no longer of the kind.
    fn sweep(
        &mut self,
        set: &mut [TlbEntry; TLB_ENTRIES],
        which: u8,
        mut f: impl FnMut(&mut TlbEntry),
    ) {
        let of_kind = |e: &TlbEntry| {
            e.mapping_base != INVALID
                && match which {
                    IN_LOCAL => !e.global,
                    IN_GLOBAL => e.global,
                    _ => e.mapping_mask > PAGE_OFFSET_MASK,
                }
        };
        let listed = &mut self.listed;
        let list = match which {
            IN_LOCAL => &mut self.local,
            IN_GLOBAL => &mut self.global,
            _ => &mut self.large,
        };
        list.retain(|&k| {
            let e = &mut set[k as usize];
            if of_kind(e) {
                f(e);
            }
            let keep = of_kind(e);
            if !keep {
                listed[k as usize] &= !which;
            }
            keep
        });
        if which == IN_LARGE && self.large.is_empty() {
            self.large_span = Self::NO_SPAN;
        }
    }

    fn clear(&mut self, set: &mut [TlbEntry; TLB_ENTRIES]) {
        for &k in self.local.iter().chain(&self.global) {
            set[k as usize] = TlbEntry::EMPTY;
        }
        self.local.clear();
        self.global.clear();
        self.large.clear();
        self.listed.fill(0);
        self.large_span = Self::NO_SPAN;
    }
}

/// The offset bits of a 4 KiB page: a `mapping_mask` above this is a large page's.
const PAGE_OFFSET_MASK: u64 = 0xFFF;

impl Default for SoftTlb {
    fn default() -> Self {
        Self::new()
    }
}

impl SoftTlb {
    pub fn new() -> SoftTlb {
        SoftTlb {
            entries: Box::new([[TlbEntry::EMPTY; TLB_ENTRIES]; 2]),
            slots: [UsedSlots::new(), UsedSlots::new()],
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
        self.entries[user as usize][k] = entry;
        if entry.mapping_base == INVALID {
            return;
        }
        let slots = &mut self.slots[user as usize];
        slots.list(k, if entry.global { IN_GLOBAL } else { IN_LOCAL });
        if entry.mapping_mask > PAGE_OFFSET_MASK {
            slots.list(k, IN_LARGE);
            let (lo, hi) = slots.large_span;
            slots.large_span = (
                lo.min(entry.mapping_base),
                hi.max(entry.mapping_base | entry.mapping_mask),
            );
        }
    }

    /// Flush everything (CR0/CR4 paging changes, A20 toggles).
    pub fn flush_all(&mut self) {
        self.stats.flushes += 1;
        for (set, slots) in self.entries.iter_mut().zip(&mut self.slots) {
            slots.clear(set);
        }
    }

    /// Flush all but global entries (CR3 write with CR4.PGE).
    pub fn flush_non_global(&mut self) {
        self.stats.flushes += 1;
        for (set, slots) in self.entries.iter_mut().zip(&mut self.slots) {
            slots.sweep(set, IN_LOCAL, |e| *e = TlbEntry::EMPTY);
        }
    }

    /// INVLPG: drop the translation of the guest page containing `lin` (global or not), in
    /// both privilege sets. The TLB caches large pages as 4 KiB pieces, so every piece of the
    /// mapping that contains `lin` goes.
    pub fn flush_page(&mut self, lin: u64) {
        let covers = |e: &TlbEntry| lin & !e.mapping_mask == e.mapping_base;
        for (set, slots) in self.entries.iter_mut().zip(&mut self.slots) {
            let e = &mut set[Self::index(lin)];
            if e.mapping_base != INVALID && covers(e) {
                *e = TlbEntry::EMPTY;
            }
            let (lo, hi) = slots.large_span;
            if (lo..=hi).contains(&lin) {
                slots.sweep(set, IN_LARGE, |e| {
                    if covers(e) {
                        *e = TlbEntry::EMPTY;
                    }
                });
            }
        }
    }

    /// Remove the fast write path from every entry that maps physical page `paddr_page`
    /// (it has just become a code page).
    pub fn protect_code_page(&mut self, paddr_page: u64) {
        let protect = |e: &mut TlbEntry| {
            if e.paddr_page == paddr_page && e.write_tag != INVALID {
                e.write_tag |= TLB_CODE;
            }
        };
        for (set, slots) in self.entries.iter_mut().zip(&mut self.slots) {
            slots.sweep(set, IN_LOCAL, protect);
            slots.sweep(set, IN_GLOBAL, protect);
        }
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
                let slots = &t.slots[user as usize];
                assert!(slots.local.is_empty() && slots.global.is_empty());
                assert!(slots.large.is_empty() && slots.listed.iter().all(|&b| b == 0));
            }
        }
    }

    /// The flushes give what scanning every slot would, over random fills (4 KiB and large
    /// pieces, global or not, slots changing kind) and flushes. The reference clears by
    /// visiting all slots of both sets.
    #[test]
    fn flushes_match_a_scan_of_every_slot() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut t = SoftTlb::new();
        let mut reference = Box::new([[TlbEntry::EMPTY; TLB_ENTRIES]; 2]);
        for step in 0..20_000 {
            let user = next(2) == 1;
            // Pages from a range a few times the set's size, so slots alias.
            let lin = next(4 * TLB_ENTRIES as u64) << 12;
            match next(40) {
                0 => {
                    t.flush_all();
                    reference.iter_mut().for_each(|s| s.fill(TlbEntry::EMPTY));
                }
                1 | 2 => {
                    t.flush_non_global();
                    for e in reference.iter_mut().flatten() {
                        if !e.global {
                            *e = TlbEntry::EMPTY;
                        }
                    }
                }
                3..=6 => {
                    let lin = lin | next(0x1000);
                    t.flush_page(lin);
                    for e in reference.iter_mut().flatten() {
                        if e.mapping_base != INVALID && lin & !e.mapping_mask == e.mapping_base {
                            *e = TlbEntry::EMPTY;
                        }
                    }
                }
                7 => {
                    t.protect_code_page(lin);
                    for e in reference.iter_mut().flatten() {
                        if e.paddr_page == lin && e.write_tag != INVALID {
                            e.write_tag |= TLB_CODE;
                        }
                    }
                }
                _ => {
                    let mapping_mask = if next(4) == 0 { 0x1F_FFFF } else { 0xFFF };
                    let entry = TlbEntry {
                        read_tag: lin,
                        write_tag: lin,
                        paddr_page: lin,
                        mapping_base: lin & !mapping_mask,
                        mapping_mask,
                        global: next(2) == 1,
                        ..TlbEntry::EMPTY
                    };
                    t.fill(user, lin, entry);
                    reference[user as usize][SoftTlb::index(lin)] = entry;
                }
            }
            for user in [false, true] {
                let (got, want) = (&t.entries[user as usize], &reference[user as usize]);
                if let Some(k) = (0..TLB_ENTRIES).find(|&k| got[k] != want[k]) {
                    panic!(
                        "step {step}, set {user}, slot {k}: {:?} != {:?}",
                        got[k], want[k]
                    );
                }
            }
        }
    }
}
