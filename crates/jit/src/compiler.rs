//! The translation tier: counts block entries, has a block translated once it is hot
//! ([`HOT_THRESHOLD`] entries), installs the code in the block and runs native blocks.
//!
//! Compilation: by default on a background thread ([`crate::worker`]); the block stays
//! interpreted until its code arrives, which the tier picks up whenever it meets a block
//! without code. [`Compilation::InThread`] compiles at once instead (the guest tests use it
//! with a threshold of 1, so that every block they run is translated code). Translations
//! live in one Cranelift module ([`crate::backend`]) that cannot free single functions, so
//! code of invalidated blocks stays until the whole module is dropped
//! ([`MAX_MODULE_BLOCKS`] translations). That also clears the interpreter's block cache
//! (every `Block::native` pointer into the old module goes with it), and results still
//! arriving for the old module (an older generation) are dropped.
//!
//! Block chaining: a native block of 64-bit code ends by entering its successor itself (a
//! tail call, see `Translator::chain_exit`) when the step helper did not ask for the run
//! loop ([`crate::context::must_leave_chain`]), the successor fits the budget, and one of
//! the block's successor links ([`Block::links`]) has the successor's key under the
//! current TLB mapping. Otherwise it returns here, and [`Compiler::execute`] does the same
//! with the run loop's checks in Rust (budget, deliverable or handed-over interrupt,
//! interrupt shadow, HLT, single-step, overwritten code, and the key from
//! [`cached_block_key`]). Links are made when the run loop hands over the successor of a
//! block whose links missed, and hold plain pointers tagged with the block cache's epoch:
//! any block leaving the cache (SMC invalidation, the clear that comes with a module reset)
//! bumps the epoch and kills every link. Because the successor is found by its full key
//! (physical address, RIP, code size), a link is right for any exit (JMP, Jcc,
//! fall-through, even RET or an indirect jump whose target repeats) and across pages.
//!
//! Patched entries (x86-64 Linux, where the code region stays writable): an exit to a
//! direct successor does not read its link cell but immediates of its own code that `link`
//! writes (the link's epoch, compared with the current one in two 32-bit halves; the
//! successor's physical page for one in another page; its code address), as QEMU patches
//! its `goto_tb` jumps. An epoch change makes every such entry fall back to the run loop,
//! which patches it again. A block whose code is replaced (re-optimized) gets the links it
//! keeps written into the new code, and its old code jumps to the new at its start, for
//! the entries still patched with the old address (see `install`). Measured on the Linux
//! workload: the two dependent loads of the link cell and the successor's block were a
//! quarter of the native samples of fork+exec (mostly cache misses); 100 fork+exec went
//! from 0.59 s to 0.53 s.
//!
//! Spanning translations: a block's translation may go on into the cached blocks after it
//! in the same page ([`superblock`]), with a side exit for each Jcc it passes; the block
//! keeps a copy of those instructions ([`Block::translated`], what the step helper's
//! instruction index refers to) and the installed code's shape ([`Block::shape`]: its
//! longest run and what each link slot is for, from `native_shape`).
//!
//! Exits whose RIP is known only at run time (RET, indirect jumps) often have more
//! successors than a block has links: a RET returns to every caller of its function. Those
//! exits also look in the [`JumpTable`], one per vCPU, indexed by RIP, before they return
//! here: the run loop enters each native block it hands over after such a miss there.

use crate::backend::{Backend, Compiled, Effort, Entry, Job, ModelFeatures};
use crate::context::{must_leave_chain, BlockCtx};
use crate::profile;
use crate::worker::{Request, Worker};
use crane86_interp::block::{
    Block, BlockCache, BlockKey, ChainSite, DecodedInsn, Link, LinkSlot, NativeBlock, BLOCK_LINKS,
    MAX_BLOCK_INSNS,
};
use crane86_interp::cpu::Cpu;
use crane86_interp::{cached_block_key, RunExit, Tier};
use crane86_x86::{flags, CpuState};
use iced_x86::Instruction;
use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::rc::{Rc, Weak};
use std::time::Duration;

/// Block entries before a block is compiled (the default; see [`Compiler::hot_threshold`]).
/// Linux boot + workload wall time on the 2-core dev machine by threshold, compiling on the
/// background thread: 16: 28.1 s, 64: 21.9 s, 128: 20.6 s, 256: 19.8 s, 512: 20.3 s,
/// 1024: 20.3 s, 4096: 23.1 s (translation time 15.1 / 8.9 / 7.1 / 5.7 / 4.8 / 3.6 / 2.0 s:
/// a low threshold floods the queue, and hot blocks wait behind lukewarm ones). With the
/// compile thread taking the newest job first: 64: 17.6 s, 256: 16.4 s. With patched
/// chain entries (2026-12-04, `scripts/linux-bench.py`, ratios to QEMU TCG, two runs each):
/// 256: fork+exec 1.61-1.69, sort 0.93-0.95; 128: fork+exec 1.39-1.48, sort 0.93-1.00;
/// 64: fork+exec 1.32, sort 1.11 (the hot blocks of sort wait behind lukewarm ones);
/// the other steps and the total the same within noise.
pub const HOT_THRESHOLD: u32 = 128;
/// Translations per module before the module is dropped and a fresh one started ...
pub const MAX_MODULE_BLOCKS: u64 = 40_000;
/// ... or host code bytes (half the code region of [`crate::code_memory`]).
pub const MAX_MODULE_BYTES: u64 = 256 << 20;

/// Entries of the [`JumpTable`] (a power of two). The Linux workload's RETs went back to the
/// run loop 5.4 M times when only the two links of each block were looked at.
pub const JUMP_TABLE_ENTRIES: usize = 4096;

/// The native blocks that 64-bit code entered through the run loop after a link miss, as
/// links tagged with the block cache's epoch (so dead with it), at
/// [`jump_table_index`] of their RIP: where native exits with a run-time RIP look after
/// their own links (see `Translator::chain_exit`).
pub struct JumpTable(Box<[Cell<Link>]>);

impl JumpTable {
    fn new() -> JumpTable {
        JumpTable(
            (0..JUMP_TABLE_ENTRIES)
                .map(|_| Cell::new(Link::NONE))
                .collect(),
        )
    }

    fn clear(&self) {
        self.0.iter().for_each(|e| e.set(Link::NONE));
    }

    /// The first entry, for native code (which indexes it with [`jump_table_index`]).
    fn entries(&self) -> *const Link {
        self.0.as_ptr() as *const Link
    }
}

/// The [`JumpTable`] slot of RIP `rip` (what native code computes too).
pub fn jump_table_index(rip: u64) -> usize {
    ((rip ^ (rip >> 12)) as usize) & (JUMP_TABLE_ENTRIES - 1)
}

/// Where blocks are compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compilation {
    /// On a background thread, while the vCPU thread goes on interpreting.
    Background,
    /// At once, in the vCPU thread (deterministic: a block is native from the entry that
    /// made it hot).
    InThread,
}

/// Counters for `--stats`.
#[derive(Clone, Copy, Debug, Default)]
pub struct JitStats {
    pub blocks_translated: u64,
    /// ... of which with [`Effort::Quick`] (while the compile queue had a backlog).
    pub blocks_translated_quick: u64,
    /// Quick translations replaced by optimized ones (which also span the blocks after
    /// theirs where they can), compiled once the queue was empty (see
    /// `worker::second_pass`).
    pub blocks_reoptimized: u64,
    /// Installed translations that go on past their block's own instructions into the
    /// blocks after it (see `superblock`).
    pub spanning_translations: u64,
    /// ... of which go on along the taken path of a Jcc (see `mostly_taken`).
    pub taken_path_translations: u64,
    pub insns_translated: u64,
    pub insns_inlined: u64,
    /// Cranelift time, wherever it was spent.
    pub translation_time: Duration,
    pub background: bool,
    /// Translations that arrived after their block had left the cache.
    pub translations_discarded: u64,
    pub native_block_runs: u64,
    /// Guest instructions retired in native blocks (inline or through the step helper).
    pub native_instructions: u64,
    /// Native block runs entered from the previous native block (block chaining) ...
    pub chained_transitions: u64,
    /// ... of which native code entered by itself (a tail call, no return to Rust) ...
    pub native_chained_transitions: u64,
    /// ... and runs entered from the interpreter's run loop.
    pub dispatcher_transitions: u64,
    /// Links the run loop wrote into a block's code (a patchable entry of a direct
    /// successor, see `ChainSite`), so that the entry reads no link cell.
    pub patched_links: u64,
    pub cache_resets: u64,
    pub translation_failures: u64,
    /// Guest instructions the interpreter ran in blocks past the hot threshold that had no
    /// code yet (waiting in the compile queue, or failed).
    pub waiting_instructions: u64,
    /// Jobs asked for again because their block kept running meanwhile (see
    /// `worker::JobQueue`), and the most jobs that were waiting at once.
    pub compile_boosts: u64,
    pub compile_queue_peak: u64,
    /// Whether native code counted its TLB hits and chained transitions (else the TLB's
    /// access count and the two chained-transition figures leave native code out).
    pub native_counters: bool,
}

enum Translations {
    InThread(Box<Backend>),
    Background(Worker),
}

pub struct Compiler {
    /// The entry trampoline (outlives every translation module).
    entry: Entry,
    translations: Translations,
    /// The translation module's generation (bumped by every reset).
    generation: u64,
    /// Translations made or asked for in this generation, and the code bytes of those
    /// finished.
    module_blocks: u64,
    module_bytes: u64,
    /// Blocks whose translation the background thread has not delivered yet, by job id.
    pending: HashMap<u64, Weak<Block>>,
    /// The job ids of `pending`, by block address (for [`Request::Boost`]). The `Weak` in
    /// `pending` keeps a block's allocation, so no other block gets its address meanwhile.
    job_of: HashMap<usize, u64>,
    /// Blocks running quick code whose optimized translation the background thread will
    /// deliver when it has nothing else to do, by job id.
    reoptimizing: HashMap<u64, Weak<Block>>,
    next_job: u64,
    /// The interpreter's block cache must be cleared before the next run (the module is
    /// full and must be replaced).
    pub needs_block_flush: bool,
    /// Entries after which a block is compiled: [`HOT_THRESHOLD`] by default, 1 to
    /// translate every block on its first run (what the guest tests use, so that they test
    /// translated code).
    pub hot_threshold: u32,
    /// The native block whose successor link missed at the end of the last `execute`, in
    /// that block-cache epoch: the next block the run loop hands over is linked to it.
    unlinked: Option<(*const Block, u64)>,
    /// The block the interpreter ran last, when it ends with a Jcc, in that block-cache
    /// epoch, and the Jcc's target: the next `execute` counts whether it went there
    /// ([`Block::taken`]).
    branch_source: Option<(*const Block, u64, u64)>,
    /// Translated code also counts its TLB hits and the successors it enters itself
    /// ([`JitStats::native_chained_transitions`]), for `--stats`. Off, the code saves two
    /// memory increments per block (about 2% of the Linux workload's run time) and those
    /// figures leave out native code. Set through [`crate::Jit::set_native_counters`].
    pub(crate) native_counters: bool,
    jump_table: JumpTable,
    pub stats: JitStats,
}

impl Default for Compiler {
    fn default() -> Self {
        Compiler::new(HOT_THRESHOLD, Compilation::Background)
    }
}

impl Drop for Compiler {
    fn drop(&mut self) {
        profile::report();
    }
}

impl Compiler {
    /// A tier compiling blocks after `hot_threshold` entries (at least 1), where
    /// `compilation` says. Falls back to compiling in the vCPU thread (with a warning) if
    /// no thread can be started.
    pub fn new(hot_threshold: u32, compilation: Compilation) -> Compiler {
        let translations = match compilation {
            Compilation::InThread => Translations::InThread(Box::default()),
            Compilation::Background => match Worker::spawn() {
                Ok(w) => Translations::Background(w),
                Err(e) => {
                    tracing::warn!(error = %e, "jit: no compile thread; compiling in the vCPU thread");
                    Translations::InThread(Box::default())
                }
            },
        };
        Compiler {
            entry: Entry::new(),
            stats: JitStats {
                background: matches!(translations, Translations::Background(_)),
                ..JitStats::default()
            },
            translations,
            generation: 0,
            module_blocks: 0,
            module_bytes: 0,
            pending: HashMap::new(),
            reoptimizing: HashMap::new(),
            job_of: HashMap::new(),
            next_job: 0,
            needs_block_flush: false,
            hot_threshold: hot_threshold.max(1),
            unlinked: None,
            branch_source: None,
            native_counters: false,
            jump_table: JumpTable::new(),
        }
    }

    /// Drop every translation. The caller clears the interpreter's block cache first, so
    /// that no block holds code of the old module.
    pub fn reset(&mut self) {
        self.generation += 1;
        self.module_blocks = 0;
        self.module_bytes = 0;
        self.pending.clear();
        self.reoptimizing.clear();
        self.job_of.clear();
        self.needs_block_flush = false;
        self.unlinked = None;
        self.branch_source = None;
        self.jump_table.clear();
        match &mut self.translations {
            // SAFETY: the caller cleared the block cache, the only holder of code pointers.
            Translations::InThread(b) => unsafe { b.reset() },
            Translations::Background(w) => {
                if !w.send(Request::Reset {
                    generation: self.generation,
                }) {
                    tracing::warn!("jit: the compile thread is gone; blocks stay interpreted");
                }
            }
        }
    }

    /// Forget the pending link source (at the start of a run: the interpreter's block cache
    /// may have been replaced since).
    pub fn start_run(&mut self) {
        self.unlinked = None;
        self.branch_source = None;
    }

    /// `block` is about to be interpreted: if it ends with a Jcc that a translation may
    /// follow either way, the next `execute` notes which way it went.
    fn note_branch(&mut self, block: &Block, epoch: u64) {
        if block.key.get().is_none_or(|k| k.bits != 64) {
            return;
        }
        let target = block
            .insns
            .last()
            .and_then(|d| crate::translate::inline_jcc_target(&d.insn));
        if let Some(target) = target {
            self.branch_source = Some((block, epoch, target));
        }
    }

    /// `block` just became hot: translate it now, or queue it. Returns the code if it is
    /// ready.
    fn translate(
        &mut self,
        block: &Rc<Block>,
        blocks: &BlockCache,
        cpu: &Cpu,
    ) -> Option<NativeBlock> {
        let bits = cpu.s.code_bits();
        if self.module_blocks >= MAX_MODULE_BLOCKS || self.module_bytes >= MAX_MODULE_BYTES {
            // Full: the next run starts a fresh module with an empty block cache.
            self.needs_block_flush = true;
            return None;
        }
        self.module_blocks += 1;
        let key = block.key.get();

        if let (Some(key), 64, None) = (key, bits, block.second_page) {
            let spanned = superblock(block, key, blocks);
            if spanned.len() > block.insns.len() {
                // A block is translated once (a failed one stays interpreted).
                let _ = block.translated.set(spanned.into_boxed_slice());
            }
        }
        let insns: Vec<Instruction> = block.translated_insns().iter().map(|d| d.insn).collect();
        let job = Job {
            insns,
            own_len: block.insns.len(),
            bits,
            rip: key.map_or(0, |k| k.rip),
            paddr: key.map_or(0, |k| k.paddr),
            linked_block: key.map(|_| &**block as *const Block as usize),
            counters: self.native_counters,
            entry_flags: Some(cpu.s.lazy.op),
            features: ModelFeatures::of(cpu.model),
        };
        match &mut self.translations {
            Translations::InThread(b) => {
                let result = b.compile(&job, Effort::Optimized);
                let done = self.finished(result, false)?;
                let code = done.code;
                install(block, done, blocks.epoch()).count(&mut self.stats);
                Some(code)
            }
            Translations::Background(w) => {
                let id = self.next_job;
                self.next_job += 1;
                let generation = self.generation;
                if w.send(Request::Compile {
                    id,
                    generation,
                    job,
                }) {
                    self.pending.insert(id, Rc::downgrade(block));
                    self.job_of.insert(&**block as *const Block as usize, id);
                    let waiting = self.pending.len() as u64;
                    self.stats.compile_queue_peak = self.stats.compile_queue_peak.max(waiting);
                } else {
                    self.stats.translation_failures += 1;
                }
                None
            }
        }
    }

    /// `block` keeps running interpreted while its job waits: have the compile thread take
    /// it sooner (see `worker::JobQueue`).
    fn boost(&mut self, block: &Block) {
        let Translations::Background(w) = &self.translations else {
            return;
        };
        if let Some(&id) = self.job_of.get(&(block as *const Block as usize)) {
            self.stats.compile_boosts += 1;
            w.send(Request::Boost { id });
        }
    }

    /// Count a finished translation (`again`: a re-optimized one); what to install, if it
    /// succeeded.
    fn finished(&mut self, result: Result<Compiled, String>, again: bool) -> Option<Finished> {
        match result {
            Ok(c) => {
                // A re-optimized block is counted when its code is installed.
                if !again {
                    self.stats.blocks_translated += 1;
                    if c.effort == Effort::Quick {
                        self.stats.blocks_translated_quick += 1;
                    }
                    self.stats.insns_translated += u64::from(c.insns);
                    self.stats.insns_inlined += u64::from(c.inlined);
                }
                self.stats.translation_time += c.time;
                self.module_bytes += u64::from(c.bytes);
                NativeBlock::new(c.code as *mut u8).map(|code| Finished {
                    code,
                    spans: c.insns,
                    chain_sites: c.chain_sites,
                    patchable: c.patchable,
                })
            }
            Err(why) => {
                self.stats.translation_failures += 1;
                tracing::warn!(
                    error = why,
                    "jit: translation failed; the block stays interpreted"
                );
                None
            }
        }
    }

    /// Install the translations the background thread has finished (nothing to ask the
    /// channel while no job is in flight: the run loop calls this for every interpreted
    /// block, and for every block it enters while a re-optimization is due). A block's
    /// re-optimized code replaces its quick code: links read a block's code when they enter
    /// it, so every path enters the new code from then on; the old code stays in the module
    /// (nothing runs it) until the next reset.
    fn collect(&mut self, epoch: u64) {
        let Translations::Background(w) = &self.translations else {
            return;
        };
        if self.pending.is_empty() && self.reoptimizing.is_empty() {
            return;
        }
        let mut done = Vec::new();
        while let Some(d) = w.try_recv() {
            done.push(d);
        }
        for d in done {
            if d.generation != self.generation {
                continue; // code of a module already freed
            }
            let (block, again) = match self.pending.remove(&d.id) {
                Some(b) => {
                    self.job_of.remove(&(b.as_ptr() as usize));
                    (Some(b), false)
                }
                None => (self.reoptimizing.remove(&d.id), true),
            };
            let quick = d.result.as_ref().is_ok_and(|c| c.effort == Effort::Quick);
            if let Some(done) = self.finished(d.result, again) {
                match block.as_ref().and_then(|b| b.upgrade()) {
                    Some(b) => {
                        install(&b, done, epoch).count(&mut self.stats);
                        if again {
                            self.stats.blocks_reoptimized += 1;
                        }
                        // The compile thread translates it again (see `worker`).
                        if quick && !again && crate::worker::second_pass() {
                            self.reoptimizing.insert(d.id, Rc::downgrade(&b));
                        }
                    }
                    None => self.stats.translations_discarded += 1,
                }
            }
        }
    }
}

impl Tier for Compiler {
    fn execute(
        &mut self,
        cpu: &mut Cpu,
        block: &Rc<Block>,
        blocks: &BlockCache,
        remaining: u64,
    ) -> Option<Option<RunExit>> {
        let epoch = blocks.epoch();
        let from = self.unlinked.take();
        if let Some((source, source_epoch, target)) = self.branch_source.take() {
            if source_epoch == epoch && block.key.get().is_some_and(|k| k.rip == target) {
                // SAFETY: `source` was a cached block in this epoch, so the cache still
                // holds it (every removal bumps the epoch).
                let taken = unsafe { &(*source).taken };
                taken.set(taken.get().saturating_add(1));
            }
        }
        if !self.reoptimizing.is_empty() {
            self.collect(epoch);
        }
        // Native code runs whole blocks, and never under single-step (the interpreter owns
        // the #DB trap after each instruction). (The block's own length here: its shape,
        // checked once it has code, is in another cache line.)
        if remaining < block.insns.len() as u64 || cpu.s.rflags & flags::TF != 0 {
            return None;
        }
        let code = match block.native.get() {
            Some(code) => code,
            None => {
                self.collect(epoch);
                match block.native.get() {
                    Some(code) => code,
                    None => {
                        // A block is translated (or queued) once, at the threshold; one
                        // whose translation failed stays interpreted. Past the threshold
                        // the count goes on, and a block still waiting for its code asks
                        // the compile thread again every `hot_threshold` entries.
                        let n = block.entries.get().saturating_add(1);
                        block.entries.set(n);
                        if n < self.hot_threshold {
                            self.note_branch(block, epoch);
                            return None;
                        }
                        let code = if n == self.hot_threshold && !self.needs_block_flush {
                            self.translate(block, blocks, cpu)
                        } else {
                            if n.is_multiple_of(self.hot_threshold) {
                                self.boost(block);
                            }
                            None
                        };
                        let Some(code) = code else {
                            self.stats.waiting_instructions += block.insns.len() as u64;
                            return None;
                        };
                        code
                    }
                }
            }
        };
        // The code may span more than the block's own instructions.
        if remaining < u64::from(block.shape.get().max_insns) {
            return None;
        }
        // No link leads into a block that runs into a second page: only the run loop's
        // lookup checks where that page maps now.
        if let (Some((from, from_epoch)), Some(key)) = (from, block.key.get()) {
            if from_epoch == epoch && block.second_page.is_none() {
                let to = Link {
                    key,
                    target: &**block,
                    epoch,
                };
                // SAFETY: `from` was a cached block in this epoch, so the cache still holds
                // it (every removal bumps the epoch).
                if link(unsafe { &*from }, to) {
                    self.stats.patched_links += 1;
                }
                if key.bits == 64 {
                    self.jump_table.0[jump_table_index(key.rip)].set(to);
                }
            }
        }
        self.stats.dispatcher_transitions += 1;
        let start = cpu.stats.instructions;
        let mut cur: &Block = block;
        let mut code = code;
        loop {
            self.stats.native_block_runs += 1;
            let mut ctx = BlockCtx {
                state: &mut *cpu.s as *mut CpuState,
                retired: cpu.stats.instructions,
                tlb: cpu.tlb.entries_ptr(cpu.s.cpl() == 3),
                tlb_accesses: std::ptr::addr_of_mut!(cpu.tlb.stats.accesses),
                cpu: cpu as *mut Cpu<'_> as *mut c_void,
                block: cur as *const Block,
                bits: cpu.s.code_bits(),
                limit: start + remaining,
                epoch,
                chained: 0,
                exit: None,
                ret: 0,
                jump_table: self.jump_table.entries(),
            };
            let before = cpu.stats.instructions;
            // SAFETY: `code` was compiled for `cur` (with the code size `bits` is now: the
            // block key, which chaining checks, contains it) by this compiler's live module
            // (a reset clears every block's `native` first), and `enter` is that module's
            // trampoline; `cur` is alive (the `Rc` the caller holds, or a cached block of
            // this epoch); `ctx` outlives the call and its pointers are valid and unaliased
            // while the native code runs (`cpu` is not used meanwhile). The native code only
            // enters successors through links of `epoch`, whose blocks the cache still holds,
            // under the same conditions as this loop (see `Translator::chain_exit`).
            unsafe { (self.entry.enter)(&mut ctx as *mut BlockCtx as *mut c_void, code.as_ptr()) };
            cpu.stats.instructions = ctx.retired;
            self.stats.native_instructions += cpu.stats.instructions - before;
            self.stats.chained_transitions += ctx.chained;
            self.stats.native_chained_transitions += ctx.chained;
            self.stats.native_block_runs += ctx.chained;
            // SAFETY: native code stores in `ctx.block` only its own block before it returns,
            // and it runs only as `cur` or as a link target of this epoch.
            cur = unsafe { &*ctx.block };
            if ctx.exit.is_some() {
                return Some(ctx.exit);
            }
            // What the run loop checks before the next block.
            let left = remaining - (cpu.stats.instructions - start).min(remaining);
            if must_leave_chain(cpu) {
                return Some(None);
            }
            let Some(key) = cached_block_key(cpu) else {
                return Some(None);
            };
            let next = cur
                .links
                .iter()
                .map(Cell::get)
                .find(|l| l.epoch == epoch && l.key == key);
            let Some(next) = next else {
                if cur.key.get().is_some() {
                    self.unlinked = Some((cur, epoch));
                }
                return Some(None);
            };
            // SAFETY: a link of this epoch points at a block the cache still holds.
            let target = unsafe { &*next.target };
            let Some(c) = target.native.get() else {
                return Some(None);
            };
            // The target's shape now (its code may have been replaced since the link).
            if left < u64::from(target.shape.get().max_insns) {
                return Some(None);
            }
            self.stats.chained_transitions += 1;
            cur = target;
            code = c;
        }
    }
}

/// A finished translation, to install in its block: its code, the instructions it spans
/// (a prefix of [`Block::translated_insns`]) and its patchable successor entries.
struct Finished {
    code: NativeBlock,
    spans: u32,
    chain_sites: [ChainSite; BLOCK_LINKS],
    /// The module's code may be patched.
    patchable: bool,
}

/// Make `done` the block's code: its shape first, and if that changed (a quick translation
/// of the block's own instructions replaced by one that goes on past them), without the
/// links made for the old one; the links kept are written into the new code's entries
/// while they are of the current `epoch`.
fn install(block: &Block, done: Finished, epoch: u64) -> Installed {
    let insns: Vec<Instruction> = block.translated_insns()[..done.spans as usize]
        .iter()
        .map(|d| d.insn)
        .collect();
    let shape = crate::translate::native_shape(&insns);
    if block.shape.replace(shape) != shape {
        block.links.iter().for_each(|l| l.set(Link::NONE));
    }
    if let (Some(old), true) = (block.native.replace(Some(done.code)), done.patchable) {
        // SAFETY: the block's old code, in the same writable module; no native code runs.
        unsafe { forward(old, done.code) };
    }
    block.chain_sites.set(done.chain_sites);
    for (k, l) in block.links.iter().enumerate() {
        let l = l.get();
        if l.epoch == epoch && matches!(shape.slots[k], LinkSlot::To(_)) {
            // SAFETY: a link of the current epoch targets a cached block with code (see
            // `link`), and no native code runs while the tier installs code.
            unsafe { patch_chain_site(block, k, l) };
        }
    }
    Installed {
        spanning: done.spans as usize > block.insns.len(),
        along_taken: insns
            .windows(2)
            .any(|p| crate::translate::side_exit_of(&p[0], &p[1]).is_some_and(|s| !s.when_taken)),
    }
}

/// What [`install`] made of a block's code.
struct Installed {
    /// It spans more than the block's own instructions ...
    spanning: bool,
    /// ... going on along the taken path of a Jcc.
    along_taken: bool,
}

impl Installed {
    fn count(self, stats: &mut JitStats) {
        stats.spanning_translations += u64::from(self.spanning);
        stats.taken_path_translations += u64::from(self.along_taken);
    }
}

/// Make code `old` jump to `new` at its entry (`jmp rel32`): the patched entries of other
/// blocks that still lead to a block's replaced (quick) code go on into its re-optimized
/// code, until their next link writes the new code there.
///
/// # Safety
/// Both must be code of one writable module (see `code_memory::configure`), less than 2
/// GiB apart, and no native code may run: no frame is inside `old`, so nothing but an
/// entry at its start executes its first five bytes again.
unsafe fn forward(old: NativeBlock, new: NativeBlock) {
    let at = old.as_ptr();
    let distance = new.as_ptr() as i64 - (at as i64 + 5);
    debug_assert!(
        i32::try_from(distance).is_ok(),
        "one module's code is < 2 GiB"
    );
    let rel = distance as i32;
    let mut jmp = [0xE9u8, 0, 0, 0, 0];
    jmp[1..].copy_from_slice(&rel.to_le_bytes());
    // SAFETY: the caller's guarantee; every block's code is longer than five bytes (its
    // prologue alone is), and x86 keeps instruction fetch coherent with the stores.
    unsafe { std::ptr::copy_nonoverlapping(jmp.as_ptr(), at, jmp.len()) };
}

/// Write link `l` into the patchable entry of slot `k` of the block's code, if the code
/// has one (see `ChainSite`): its target's code, its physical address (an entry into
/// another page compares it), its epoch.
///
/// # Safety
/// `l` must be a link of the block cache's current epoch (its target alive, with code) for
/// slot `k`'s target, and no native code may run: the stores go into the block's code.
/// Whether the code had the entry.
unsafe fn patch_chain_site(block: &Block, k: usize, l: Link) -> bool {
    let site = block.chain_sites.get()[k];
    let Some(code) = block.native.get().filter(|_| site.present()) else {
        return false;
    };
    // SAFETY: a live link's target has code (the caller's guarantee).
    let Some(target) = (unsafe { &*l.target }).native.get() else {
        return false;
    };
    let base = code.as_ptr();
    let write = |offset: u32, value: &[u8]| {
        // SAFETY: the offset of an immediate of `value.len()` bytes inside the block's code,
        // which lives in the writable code arena (only such code has sites, see
        // `code_memory::configure`) until the module is dropped; nothing runs the code
        // meanwhile, and x86 keeps instruction fetch coherent with these stores.
        unsafe {
            std::ptr::copy_nonoverlapping(value.as_ptr(), base.add(offset as usize), value.len())
        };
    };
    write(site.target, &(target.as_ptr() as u64).to_le_bytes());
    if site.paddr != 0 {
        write(site.paddr, &l.key.paddr.to_le_bytes());
    }
    write(site.epoch[0], &(l.epoch as u32).to_le_bytes());
    write(site.epoch[1], &((l.epoch >> 32) as u32).to_le_bytes());
    true
}

/// Blocks after each other that the translation of `head` spans: after the last
/// instruction of the last block in, where the translation can go on (`continues_at`: a
/// direct JMP's target; a Jcc's target if that block's runs mostly went there
/// ([`mostly_taken`]), else its fall-through) the cached block there, if it is in the
/// head's page and the whole stays within [`MAX_BLOCK_INSNS`] and the link slots. A side
/// exit per Jcc passed; never back into a block already in (a loop back to the head is the
/// head's own business, see `Translator::loop_header`: a trace that follows the taken
/// paths of a loop's body ends at the branch back).
fn superblock(head: &Block, key: BlockKey, blocks: &BlockCache) -> Vec<DecodedInsn> {
    let mut insns = head.insns.clone();
    let mut starts = vec![key.rip];
    let mut side_exits = 0;
    let mut follow_taken = mostly_taken(head);
    while starts.len() <= MAX_CONTINUED_BLOCKS {
        let Some(last) = insns.last().map(|d| d.insn) else {
            break;
        };
        let Some(next) = crate::translate::continues_at(&last, follow_taken) else {
            break;
        };
        let side = usize::from(last.flow_control() == iced_x86::FlowControl::ConditionalBranch);
        // Two slots stay for the end's targets.
        if next & !0xFFF != key.rip & !0xFFF
            || starts.contains(&next)
            || side_exits + side > BLOCK_LINKS - 2
        {
            break;
        }
        let next_key = BlockKey {
            paddr: (key.paddr & !0xFFF) | (next & 0xFFF),
            rip: next,
            bits: key.bits,
        };
        let Some(b) = blocks.peek(&next_key) else {
            break;
        };
        if b.second_page.is_some() || insns.len() + b.insns.len() > MAX_BLOCK_INSNS {
            break;
        }
        insns.extend_from_slice(&b.insns);
        starts.push(next);
        side_exits += side;
        follow_taken = mostly_taken(b);
    }
    insns
}

/// Whether most of the interpreted runs of `block` (at least [`MIN_BRANCH_SAMPLES`]) went
/// to the target of its last instruction ([`Block::taken`]).
fn mostly_taken(block: &Block) -> bool {
    let (runs, taken) = (block.entries.get(), block.taken.get());
    runs >= MIN_BRANCH_SAMPLES && taken > runs / 2
}

/// Interpreted runs of a block before its branch profile decides which way a translation
/// goes on after it (see [`superblock`]).
const MIN_BRANCH_SAMPLES: u32 = 16;

/// How many blocks after the head one translation may take in (see [`superblock`]).
const MAX_CONTINUED_BLOCKS: usize = 3;

/// Link `from` to `to` (a cached block of `link.epoch`, with native code). Whether the link
/// went into a patchable entry of `from`'s code.
fn link(from: &Block, link: Link) -> bool {
    let (key, epoch) = (link.key, link.epoch);
    // What native chaining relies on (see `Translator::chain_exit`): a link joins blocks of
    // the same code size, and a link into the block's own linear page goes to its own
    // physical page. (Anything else, say after a CR3 write, is left to the run loop.)
    let Some(own) = from.key.get() else {
        return false;
    };
    let page = |a: u64| a & !0xFFF;
    if key.bits != own.bits
        || (page(key.rip) == page(own.rip) && page(key.paddr) != page(own.paddr))
    {
        return false;
    }
    // A known target has its own slot (what `Translator::chain_direct` reads without
    // comparing RIPs); any other successor goes to the slots of the most recently used ones,
    // newest first, if the code has them (an interrupt handler after a JMP is not linked).
    let shape = from.shape.get();
    if let Some(k) = crate::translate::slot_of(&shape, key.rip) {
        from.links[k].set(link);
        // SAFETY: `link` is of the current epoch (the caller's), for slot k's target, and
        // the run loop links blocks only while no native code runs.
        return unsafe { patch_chain_site(from, k, link) };
    }
    let recent = (0..BLOCK_LINKS).filter(|&k| shape.slots[k] == LinkSlot::Recent);
    let mut carry = link;
    for slot in recent.map(|k| &from.links[k]) {
        let old = slot.replace(carry);
        if old.epoch != epoch || std::ptr::eq(old.target, link.target) {
            break;
        }
        carry = old;
    }
    false
}
