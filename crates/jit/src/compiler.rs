//! The translation tier: counts block entries, compiles a block once it is hot
//! ([`HOT_THRESHOLD`] entries), keeps the code in a Cranelift `JITModule`, and runs it. The
//! module cannot free single functions, so code of invalidated blocks stays until the whole
//! module is dropped ([`MAX_MODULE_BLOCKS`] translations), which also clears the
//! interpreter's block cache (every `Block::native` pointer into the old module goes with
//! it).
//!
//! Block chaining: [`Compiler::execute`] does not return to the interpreter's run loop after
//! a native block when the next block is native too. It does the run loop's checks itself
//! (budget, deliverable or handed-over interrupt, interrupt shadow, HLT, single-step,
//! overwritten code), computes the next block's cache key from the TLB
//! ([`cached_block_key`]) and follows the finished block's successor link ([`Block::links`])
//! with that key. Links are made when the run loop hands over the
//! successor of a block whose links missed, and hold plain pointers tagged with the block
//! cache's epoch: any block leaving the cache (SMC invalidation, the clear that comes with a
//! module reset) bumps the epoch and kills every link. Because the successor is found by its
//! full key (physical address, RIP, code size) under the current TLB mapping, a link is
//! right for any exit (JMP, Jcc, fall-through, even RET or an indirect jump whose target
//! repeats) and across pages. (A loop in Rust rather than native tail calls between blocks:
//! the checks need the platform, and after this step the Linux profile is dominated by the
//! interpreter helpers rather than by block transitions.)
//!
//! `CRANE86_JIT_PROFILE=1` counts the instructions native code hands to the interpreter
//! (by iced `Code`, weighted by execution) and prints the most frequent at exit
//! ([`profile`]): the measurement that picks the next inline forms.

use crate::translate::Translator;
use crane86_interp::block::{Block, BlockKey, Link, NativeBlock};
use crane86_interp::cpu::Cpu;
use crane86_interp::{cached_block_key, step_insn, RunExit, Step, Tier};
use crane86_memory::tlb::TlbEntry;
use crane86_x86::{flags, CpuState};
use cranelift_codegen::ir::{AbiParam, UserFuncName};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Module};
use std::cell::Cell;
use std::ffi::c_void;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Block entries before a block is compiled (the default; see [`Compiler::hot_threshold`]).
/// Linux boot + workload wall time on the 2-core dev machine by threshold: 16: 82.3 s,
/// 64: 80.3 s, 256: 77.2 s, 1024: 76.4 s (translation time 8.4 / 6.5 / 3.7 / 2.1 s); 256
/// keeps most of the gain without delaying short-lived programs much.
pub const HOT_THRESHOLD: u32 = 256;
/// Translations per module before the module is dropped and a fresh one started.
pub const MAX_MODULE_BLOCKS: u64 = 40_000;

/// What native code and the step helper share for one block execution.
#[repr(C)]
pub struct BlockCtx {
    /// The architectural state; inline code addresses its fields by offset.
    pub state: *mut CpuState,
    /// The retired-instruction counter (`InterpStats::instructions`).
    pub retired: *mut u64,
    /// The TLB set of the current privilege (CPL 3 or not; constant for a block run, since
    /// every privilege change leaves the block) and its access counter.
    pub tlb: *const TlbEntry,
    pub tlb_accesses: *mut u64,
    /// The interpreter context (`*mut Cpu`), for helper calls.
    cpu: *mut c_void,
    block: *const Block,
    bits: u32,
    /// Set by the helper when the run must end.
    exit: Option<RunExit>,
}

/// Run instruction `index` of the block through the interpreter. Returns nonzero when the
/// native code must return (the block is left, the run ends, or RFLAGS.TF became set so the
/// interpreter must take over single-stepping).
///
/// # Safety
/// `ctx` points at the live [`BlockCtx`] of the running block, whose `cpu` and `block`
/// pointers are valid and not otherwise borrowed while the native code runs.
pub unsafe extern "C" fn step_helper(ctx: *mut BlockCtx, index: u32) -> u32 {
    // SAFETY: guaranteed by the caller (the native block, called from `Compiler::execute`).
    let ctx = unsafe { &mut *ctx };
    // SAFETY: `cpu` was made from the `&mut Cpu` that `execute` holds unused meanwhile.
    let cpu = unsafe { &mut *(ctx.cpu as *mut Cpu<'_>) };
    // SAFETY: `block` is an `Rc<Block>` that `execute` keeps alive.
    let block = unsafe { &*ctx.block };
    if profile::enabled() {
        profile::count(&block.insns[index as usize].insn);
    }
    match step_insn(cpu, &block.insns[index as usize], ctx.bits) {
        Step::Next => u32::from(cpu.s.rflags & flags::TF != 0),
        Step::Leave => 1,
        Step::Exit(e) => {
            ctx.exit = Some(e);
            1
        }
    }
}

/// `CRANE86_JIT_PROFILE=1`: count the instructions native code hands to the step helper (by
/// iced `Code`, weighted by execution) and print the most frequent ones to stderr when the
/// compiler is dropped. Used to choose what to inline next.
pub mod profile {
    use iced_x86::{Code, Formatter, Instruction, NasmFormatter};
    use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
    use std::sync::Mutex;

    const CODES: usize = 8192;
    static STATE: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 off, 2 on
    static COUNTS: [AtomicU64; CODES] = [const { AtomicU64::new(0) }; CODES];
    /// One decoded example of each code (for the printout).
    static EXAMPLES: Mutex<Vec<Option<Instruction>>> = Mutex::new(Vec::new());

    pub fn enabled() -> bool {
        match STATE.load(Ordering::Relaxed) {
            0 => {
                let on = std::env::var("CRANE86_JIT_PROFILE").is_ok_and(|v| v == "1");
                STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
                on
            }
            s => s == 2,
        }
    }

    pub fn count(i: &Instruction) {
        let c = i.code() as usize;
        if c < CODES && COUNTS[c].fetch_add(1, Ordering::Relaxed) == 0 {
            if let Ok(mut ex) = EXAMPLES.lock() {
                if ex.len() < CODES {
                    ex.resize(CODES, None);
                }
                ex[c] = Some(*i);
            }
        }
    }

    /// Print the top 60 helper-called codes (if profiling is on).
    pub fn report() {
        if !enabled() {
            return;
        }
        let mut v: Vec<(u64, usize)> = (0..CODES)
            .map(|c| (COUNTS[c].load(Ordering::Relaxed), c))
            .filter(|&(n, _)| n > 0)
            .collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        let total: u64 = v.iter().map(|x| x.0).sum();
        eprintln!("jit profile: {total} helper calls");
        let ex = EXAMPLES.lock().map(|e| e.clone()).unwrap_or_default();
        let mut f = NasmFormatter::new();
        for &(n, c) in v.iter().take(60) {
            let mut text = String::new();
            if let Some(Some(i)) = ex.get(c) {
                f.format(i, &mut text);
            }
            let code: Option<Code> = ex.get(c).and_then(|i| i.map(|i| i.code()));
            eprintln!(
                "{:>12} {:5.2}% {:?}  e.g. {}",
                n,
                100.0 * n as f64 / total.max(1) as f64,
                code,
                text
            );
        }
    }
}

/// Counters for `--stats`.
#[derive(Clone, Copy, Debug, Default)]
pub struct JitStats {
    pub blocks_translated: u64,
    pub insns_translated: u64,
    pub insns_inlined: u64,
    pub translation_time: Duration,
    pub native_block_runs: u64,
    /// Native block runs entered from the previous native block (block chaining) ...
    pub chained_transitions: u64,
    /// ... and from the interpreter's run loop.
    pub dispatcher_transitions: u64,
    pub cache_resets: u64,
    pub translation_failures: u64,
}

pub struct Compiler {
    module: Option<JITModule>,
    ctx: Context,
    builder_ctx: FunctionBuilderContext,
    module_blocks: u64,
    /// The interpreter's block cache must be cleared before the next run (the module was
    /// replaced).
    pub needs_block_flush: bool,
    /// Entries after which a block is compiled: [`HOT_THRESHOLD`] by default, 1 to
    /// translate every block on its first run (what the guest tests use, so that they test
    /// translated code).
    pub hot_threshold: u32,
    /// The native block whose successor link missed at the end of the last `execute`, in
    /// that block-cache epoch: the next block the run loop hands over is linked to it.
    unlinked: Option<(*const Block, u64)>,
    pub stats: JitStats,
}

fn host_isa() -> OwnedTargetIsa {
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").expect("opt_level");
    flags.set("is_pic", "false").expect("is_pic");
    // The IR is generated, not hand-written: skip the verifier (it showed up in profiles).
    flags
        .set("enable_verifier", "false")
        .expect("enable_verifier");
    let isa = cranelift_native::builder()
        .unwrap_or_else(|e| panic!("crane86 jit: Cranelift has no backend for this host ({e})"));
    isa.finish(settings::Flags::new(flags))
        .expect("crane86 jit: host ISA flags")
}

fn new_module() -> JITModule {
    JITModule::new(JITBuilder::with_isa(host_isa(), default_libcall_names()))
}

impl Default for Compiler {
    fn default() -> Self {
        let module = new_module();
        let ctx = module.make_context();
        Compiler {
            module: Some(module),
            ctx,
            builder_ctx: FunctionBuilderContext::new(),
            module_blocks: 0,
            needs_block_flush: false,
            hot_threshold: HOT_THRESHOLD,
            unlinked: None,
            stats: JitStats::default(),
        }
    }
}

impl Drop for Compiler {
    fn drop(&mut self) {
        profile::report();
        if let Some(m) = self.module.take() {
            // SAFETY: the compiler is going away with the engine; no block outlives it with
            // a pointer into this module (the interpreter's cache is dropped with it).
            unsafe { m.free_memory() };
        }
    }
}

impl Compiler {
    /// Drop every translation (the caller clears the interpreter's block cache).
    pub fn reset(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: called only after (or right before, with no native code running in
            // between) the block cache holding pointers into it is cleared.
            unsafe { m.free_memory() };
        }
        self.module = Some(new_module());
        self.module_blocks = 0;
        self.needs_block_flush = false;
        self.unlinked = None;
    }

    /// Forget the pending link source (at the start of a run: the interpreter's block cache
    /// may have been replaced since).
    pub fn start_run(&mut self) {
        self.unlinked = None;
    }

    fn compile(&mut self, block: &Block, bits: u32) -> Option<NativeBlock> {
        let start = Instant::now();
        let module = self.module.as_mut()?;
        let ptr = module.target_config().pointer_type();
        let call_conv = module.target_config().default_call_conv;
        self.ctx.func.signature.params.clear();
        self.ctx.func.signature.params.push(AbiParam::new(ptr));
        self.ctx.func.signature.call_conv = call_conv;
        self.ctx.func.name = UserFuncName::user(0, self.module_blocks as u32);
        let frontend = module.target_config();
        let inlined = {
            let mut b = FunctionBuilder::new(&mut self.ctx.func, &mut self.builder_ctx);
            let mut t = Translator::new(
                &mut b,
                ptr,
                call_conv,
                step_helper as *const () as usize,
                crate::translate::cond_helper as *const () as usize,
            );
            t.block(block, bits);
            let n = t.inlined;
            b.finalize(frontend);
            n
        };
        let id = match module.declare_anonymous_function(&self.ctx.func.signature) {
            Ok(id) => id,
            Err(e) => return self.failed(&e.to_string()),
        };
        if let Err(e) = module.define_function(id, &mut self.ctx) {
            return self.failed(&format!("{e:?}"));
        }
        module.clear_context(&mut self.ctx);
        if let Err(e) = module.finalize_definitions() {
            return self.failed(&e.to_string());
        }
        let code = module.get_finalized_function(id);
        self.module_blocks += 1;
        self.stats.blocks_translated += 1;
        self.stats.insns_translated += block.insns.len() as u64;
        self.stats.insns_inlined += u64::from(inlined);
        self.stats.translation_time += start.elapsed();
        // SAFETY: `code` is the finalized function just defined with the `NativeBlock`
        // signature (one pointer argument, no result) in the host's default convention.
        Some(unsafe { std::mem::transmute::<*const u8, NativeBlock>(code) })
    }

    fn failed(&mut self, why: &str) -> Option<NativeBlock> {
        self.stats.translation_failures += 1;
        tracing::warn!(
            error = why,
            "jit: translation failed; the block stays interpreted"
        );
        if let Some(m) = self.module.as_mut() {
            m.clear_context(&mut self.ctx);
        }
        None
    }
}

impl Tier for Compiler {
    fn execute(
        &mut self,
        cpu: &mut Cpu,
        block: &Rc<Block>,
        epoch: u64,
        remaining: u64,
    ) -> Option<Option<RunExit>> {
        let from = self.unlinked.take();
        // Native code runs whole blocks, and never under single-step (the interpreter owns
        // the #DB trap after each instruction).
        if remaining < block.insns.len() as u64 || cpu.s.rflags & flags::TF != 0 {
            return None;
        }
        let code = match block.native.get() {
            Some(code) => code,
            None => {
                let n = block.entries.get() + 1;
                block.entries.set(n);
                if n < self.hot_threshold || self.needs_block_flush {
                    return None;
                }
                if self.module_blocks >= MAX_MODULE_BLOCKS {
                    // Full: the next run starts a fresh module with an empty block cache.
                    self.needs_block_flush = true;
                    return None;
                }
                let code = self.compile(block, cpu.s.code_bits())?;
                block.native.set(Some(code));
                code
            }
        };
        if let (Some((from, from_epoch)), Some(key)) = (from, block.key.get()) {
            if from_epoch == epoch {
                // SAFETY: `from` was a cached block in this epoch, so the cache still holds
                // it (every removal bumps the epoch).
                link(unsafe { &*from }, block, key, code, epoch);
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
                retired: std::ptr::addr_of_mut!(cpu.stats.instructions),
                tlb: cpu.tlb.entries_ptr(cpu.s.cpl() == 3),
                tlb_accesses: std::ptr::addr_of_mut!(cpu.tlb.stats.accesses),
                cpu: cpu as *mut Cpu<'_> as *mut c_void,
                block: cur as *const Block,
                bits: cpu.s.code_bits(),
                exit: None,
            };
            // SAFETY: `code` was compiled for `cur` (with the code size `bits` is now: the
            // block key, which chaining checks, contains it) by this compiler's live module
            // (a reset clears every block's `native` first); `cur` is alive (the `Rc` the
            // caller holds, or a cached block of this epoch); `ctx` outlives the call and
            // its pointers are valid and unaliased while the native code runs (`cpu` is not
            // used meanwhile).
            unsafe { code(&mut ctx as *mut BlockCtx as *mut c_void) };
            if ctx.exit.is_some() {
                return Some(ctx.exit);
            }
            // What the run loop checks before the next block.
            let left = remaining - (cpu.stats.instructions - start).min(remaining);
            let s = &*cpu.s;
            if s.interrupt_shadow
                || s.pending_external.is_some()
                || s.halted
                || s.rflags & flags::TF != 0
                || (s.rflags & flags::IF != 0 && cpu.plat.interrupt_pending())
                || cpu.mem.has_smc_dirty()
            {
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
            let Some(c) = next.code else {
                return Some(None);
            };
            if left < u64::from(next.len) {
                return Some(None);
            }
            self.stats.chained_transitions += 1;
            // SAFETY: a link of this epoch points at a block the cache still holds.
            cur = unsafe { &*next.target };
            code = c;
        }
    }
}

/// Make `to` (key `key`, native code `code`) the most recently used successor link of
/// `from` (both cached blocks of `epoch`).
fn link(from: &Block, to: &Block, key: BlockKey, code: NativeBlock, epoch: u64) {
    let mut carry = Link {
        key,
        code: Some(code),
        len: to.insns.len() as u32,
        target: to,
        epoch,
    };
    for slot in &from.links {
        let old = slot.replace(carry);
        if old.epoch != epoch || std::ptr::eq(old.target, to) {
            return;
        }
        carry = old;
    }
}
