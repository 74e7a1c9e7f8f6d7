//! The decoded-block cache: guest code decoded once by iced-x86 into blocks of instructions
//! with their handlers resolved, keyed by physical address, RIP and code size, invalidated per
//! physical page when guest code is overwritten. Every removal of a block from the cache
//! bumps the cache's epoch ([`BlockCache::epoch`]), which is what makes the tier's
//! block-to-block links ([`Block::links`]) safe to follow: a link is valid only in the epoch
//! it was made in, so it can never point at a dropped block.

use crate::exec::{resolve, Handler};
use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction};
use std::cell::{Cell, OnceCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

/// Longest block (instructions).
pub const MAX_BLOCK_INSNS: usize = 64;

#[derive(Clone, Copy)]
pub struct DecodedInsn {
    pub insn: Instruction,
    pub handler: Handler,
}

/// The entry of native code a tier above the interpreter (the JIT) installed for a block. The
/// code uses the tier's own calling convention (the JIT's blocks tail-call each other), so
/// only the tier that made it may call it.
pub type NativeBlock = std::ptr::NonNull<u8>;

/// A tier's link from one block to a successor (block chaining): `target` is a block of the
/// cache that was current in epoch `epoch`, with its key copied here so that checking a
/// link reads only the block it starts from; its code and shape are read from the target
/// ([`Block::native`], [`Block::shape`]) when it is entered, so code a tier replaces (a
/// re-optimized translation) is what every link enters from then on (the JIT's patched
/// entries, [`ChainSite`], hold the code address instead). It may be used only while the
/// cache's epoch still equals `epoch` (no block has left the cache since, so `target` is
/// alive and has native code of the module).
#[derive(Clone, Copy, Debug)]
pub struct Link {
    pub key: BlockKey,
    pub target: *const Block,
    pub epoch: u64,
}

impl Link {
    pub const NONE: Link = Link {
        key: BlockKey {
            paddr: 0,
            rip: 0,
            bits: 0,
        },
        target: std::ptr::null(),
        epoch: u64::MAX,
    };
}

/// Successor links per block: a JMP or fall-through needs one, a Jcc two, and a tier's
/// translation that continues past the block's end (into the blocks after it) one more for
/// each conditional branch it passes.
pub const BLOCK_LINKS: usize = 4;

/// What one of a block's link slots holds (see [`NativeShape`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkSlot {
    /// Nothing: the native code never reads it.
    Unused,
    /// Only a link to this RIP (the native code reads it without comparing RIPs).
    To(u64),
    /// The most recently used successors of an exit whose RIP is known only at run time
    /// (a RET's), newest first among the block's `Recent` slots.
    Recent,
}

/// How a tier's native code for a block runs, set when the tier translates it: the most
/// instructions one run retires (more than the block's own when the translation goes on
/// into the blocks after it in the same page) and what each link slot is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NativeShape {
    pub max_insns: u32,
    pub slots: [LinkSlot; BLOCK_LINKS],
}

/// Where a tier's native code holds the immediates of one direct successor's chained
/// entry, as byte offsets into the code (0: none; code never starts with an immediate). The
/// tier writes a link into them (the link's epoch, the successor's physical address when it
/// lies in another page, the successor's code) so that the entry reads nothing but the
/// current epoch: QEMU's patched `goto_tb` jumps, with the epoch compare standing in for
/// unpatching (see the JIT's `link`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainSite {
    /// The epoch's low and high 32 bits.
    pub epoch: [u32; 2],
    pub paddr: u32,
    pub target: u32,
}

impl ChainSite {
    /// Whether the code has this site (its epoch and target immediates).
    pub fn present(&self) -> bool {
        self.epoch[0] != 0 && self.target != 0
    }
}

/// Laid out for the run loop: what it reads for every block (native code, instructions,
/// the tier's instruction copy, hotness count) in the first cache line of the `Rc`, the
/// key and second page next, the tier's links last.
#[repr(C)]
pub struct Block {
    /// The block's native code, if a tier compiled it. Valid as long as the tier keeps the
    /// code alive; a tier that frees code clears the whole block cache first. A tier may
    /// replace it (with code of the same block) while no native code runs.
    pub native: Cell<Option<NativeBlock>>,
    pub insns: Vec<DecodedInsn>,
    /// The instructions the tier's translation spans when it goes on past the block's own
    /// (a copy: the blocks after this one may leave the cache first). What a translation's
    /// instruction index refers to; `insns` when unset.
    pub translated: OnceCell<Box<[DecodedInsn]>>,
    /// Times the block was entered without native code (the JIT's hotness counter).
    pub entries: Cell<u32>,
    /// Of those entries, the runs that ended at the target of the block's last instruction,
    /// a Jcc (the JIT's branch profile: which way a translation spanning the block goes on
    /// after it).
    pub taken: Cell<u32>,
    /// For a block whose first instruction crosses into the next linear page: the physical
    /// page (address) that page mapped to when the block was decoded. The key holds only the
    /// first page, so the block is valid only while the second page still maps there: the
    /// run loop checks it on every lookup, and no tier link may lead into such a block
    /// (links are followed without a lookup).
    pub second_page: Option<u64>,
    /// The block's cache key, set when it is inserted into the cache (`None` for the
    /// uncached one-instruction blocks of code running from device memory or crossing into
    /// a page it cannot fetch from: no link may point at them).
    pub key: Cell<Option<BlockKey>>,
    /// What the tier's native code runs (set with the translation; before it, the block's
    /// own length and no link slot in use).
    pub shape: Cell<NativeShape>,
    /// The tier's successor links (see [`Link`]), slot by slot as [`Block::shape`] says.
    pub links: [Cell<Link>; BLOCK_LINKS],
    /// The patchable entries of the direct successors in [`Block::native`], slot by slot
    /// (set with the code).
    pub chain_sites: Cell<[ChainSite; BLOCK_LINKS]>,
}

impl Block {
    pub fn new(insns: Vec<DecodedInsn>) -> Block {
        let max_insns = insns.len() as u32;
        Block {
            insns,
            key: Cell::new(None),
            links: [const { Cell::new(Link::NONE) }; BLOCK_LINKS],
            chain_sites: Cell::new([ChainSite::default(); BLOCK_LINKS]),
            shape: Cell::new(NativeShape {
                max_insns,
                slots: [LinkSlot::Unused; BLOCK_LINKS],
            }),
            translated: OnceCell::new(),
            entries: Cell::new(0),
            taken: Cell::new(0),
            native: Cell::new(None),
            second_page: None,
        }
    }

    /// The instructions of the tier's translation, by index (see [`Block::translated`]).
    #[inline]
    pub fn translated_insns(&self) -> &[DecodedInsn] {
        self.translated.get().map_or(&self.insns, |t| t)
    }

    /// A block that runs from its first page into the one at physical `second_page`.
    pub fn spanning(insns: Vec<DecodedInsn>, second_page: u64) -> Block {
        Block {
            second_page: Some(second_page & !0xFFF),
            ..Block::new(insns)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockKey {
    pub paddr: u64,
    pub rip: u64,
    pub bits: u32,
}

/// Multiply-rotate hasher for block keys: the keys are guest addresses the guest cannot
/// choose adversarially against us in a way that matters (a collision only costs time), and
/// SipHash showed up at 27% of interpreter time in a profile of the demo guest.
#[derive(Default)]
pub struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517C_C1B7_2722_0A95);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
}

type AddrMap<K, V> = HashMap<K, V, BuildHasherDefault<AddrHasher>>;

/// Entries of the direct-mapped jump cache in front of the block map (512 KiB). On the
/// Linux workload under the JIT, 4096 entries left the block map's probes (cache misses)
/// the hottest part of the run loop; 16384 took about 0.5 s off an 11 s run, and 32768
/// were no better.
const JUMP_CACHE_SIZE: usize = 16384;

pub struct BlockCache {
    blocks: AddrMap<BlockKey, Rc<Block>>,
    /// Physical page → keys of the blocks that start in it or run into it.
    by_page: AddrMap<u64, Vec<BlockKey>>,
    /// Direct-mapped cache of recent lookups (QEMU's tb_jmp_cache idea): most block
    /// transitions hit here without hashing.
    jump_cache: Vec<Option<(BlockKey, Rc<Block>)>>,
    /// Bumped whenever a block leaves the cache (see [`Link`]).
    epoch: u64,
}

impl Default for BlockCache {
    fn default() -> Self {
        BlockCache {
            blocks: AddrMap::default(),
            by_page: AddrMap::default(),
            jump_cache: vec![None; JUMP_CACHE_SIZE],
            epoch: 0,
        }
    }
}

#[inline]
fn jump_index(key: &BlockKey) -> usize {
    // Not `paddr ^ rip`: under identity mapping they are equal and would cancel out.
    ((key.paddr ^ (key.paddr >> 12)) as usize) & (JUMP_CACHE_SIZE - 1)
}

impl BlockCache {
    #[inline]
    pub fn get(&mut self, key: &BlockKey) -> Option<Rc<Block>> {
        let idx = jump_index(key);
        if let Some((k, b)) = &self.jump_cache[idx] {
            if k == key {
                return Some(b.clone());
            }
        }
        let b = self.blocks.get(key)?.clone();
        self.jump_cache[idx] = Some((*key, b.clone()));
        Some(b)
    }

    /// The cached block of `key`, without touching the jump cache (for a tier reading the
    /// blocks around one it translates).
    pub fn peek(&self, key: &BlockKey) -> Option<&Rc<Block>> {
        self.blocks.get(key)
    }

    pub fn insert(&mut self, key: BlockKey, block: Rc<Block>) {
        block.key.set(Some(key));
        self.by_page.entry(key.paddr >> 12).or_default().push(key);
        if let Some(page) = block.second_page {
            self.by_page.entry(page >> 12).or_default().push(key);
        }
        self.jump_cache[jump_index(&key)] = Some((key, block.clone()));
        if self.blocks.insert(key, block).is_some() {
            // A replaced block left the cache.
            self.epoch += 1;
        }
    }

    /// Drop every block of physical page `paddr_page`. Returns how many were dropped.
    pub fn invalidate_page(&mut self, paddr_page: u64) -> usize {
        let Some(keys) = self.by_page.remove(&(paddr_page >> 12)) else {
            return 0;
        };
        self.epoch += 1;
        for k in &keys {
            self.blocks.remove(k);
            let slot = &mut self.jump_cache[jump_index(k)];
            if slot.as_ref().is_some_and(|(sk, _)| sk == k) {
                *slot = None;
            }
        }
        keys.len()
    }

    pub fn clear(&mut self) {
        self.epoch += 1;
        self.blocks.clear();
        self.by_page.clear();
        self.jump_cache.fill(None);
    }

    /// The current epoch: links made in an older one are dead.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

/// Decode a block from `bytes` (the code from `rip` to the end of its page). Stops after a
/// control-flow instruction, at `MAX_BLOCK_INSNS`, or before an instruction that does not fit
/// in `bytes` (it crosses the page and starts a block of its own, decoded from both pages). An invalid encoding is kept as
/// the block's last instruction so executing it raises #UD.
pub fn decode_block(bytes: &[u8], rip: u64, bits: u32) -> Vec<DecodedInsn> {
    let mut dec = Decoder::with_ip(bits, bytes, rip, DecoderOptions::NONE);
    let mut out = Vec::new();
    let mut insn = Instruction::default();
    while dec.can_decode() && out.len() < MAX_BLOCK_INSNS {
        let pos = dec.position();
        dec.decode_out(&mut insn);
        if insn.is_invalid() {
            if dec.last_error() == iced_x86::DecoderError::NoMoreBytes {
                // Runs past the page: leave it for the page-crossing path.
                let _ = pos;
                break;
            }
            out.push(DecodedInsn {
                insn,
                handler: crate::exec::invalid_opcode,
            });
            break;
        }
        let flow = insn.flow_control();
        out.push(DecodedInsn {
            handler: resolve(&insn),
            insn,
        });
        if flow != FlowControl::Next {
            break;
        }
    }
    out
}
