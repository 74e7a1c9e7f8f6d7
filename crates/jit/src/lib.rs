//! The JIT engine: the interpreter's run loop with a translation tier in front of it. Cold
//! blocks are interpreted; a block entered [`compiler::HOT_THRESHOLD`] times is translated
//! with Cranelift into host code ([`translate`]), on a background thread by default, that
//! keeps guest registers in SSA values, emits the common instructions inline (register
//! forms, memory accesses through the TLB, branches) and calls the interpreter's
//! per-instruction step for everything else, so every instruction the interpreter supports
//! works here with the same semantics, faults and platform exits. Native blocks enter their
//! successors themselves (tail calls) while nothing needs the run loop (block chaining, see
//! [`compiler`]).
//!
//! | module        | what lives there |
//! |---------------|------------------|
//! | [`compiler`]  | the tier: hotness, installing translations, running and chaining native blocks, module resets |
//! | [`context`]   | what native code and Rust share: the block context, the step helper, when to leave a chain |
//! | [`translate`] | block → Cranelift IR: inline forms, register variables, lazy-flags write-back, the chaining exit |
//! | [`backend`]   | the Cranelift module, the host ISA settings, the entry trampoline, compiling a job |
//! | [`code_memory`] | the region translated code is written to |
//! | [`worker`]    | the background compile thread |
//! | [`profile`], [`perf_map`], [`corpus`] | diagnostics: helper calls by instruction form; a perf map of translated code; the compiled blocks, for offline compile benchmarks |

pub mod backend;
pub mod code_memory;
pub mod compiler;
pub mod context;
pub mod corpus;
pub mod perf_map;
pub mod profile;
pub mod translate;
pub mod worker;

pub use compiler::Compilation;
use compiler::{Compiler, JitStats};
use crane86_devices::Platform;
use crane86_interp::{Interpreter, RunExit};
use crane86_memory::PhysMem;
use crane86_x86::CpuState;
use std::sync::atomic::{AtomicU8, Ordering};

/// A diagnostic switched on by an environment variable set to `1` (read on first use).
pub(crate) struct EnvSwitch {
    var: &'static str,
    /// 0: not read yet, 1: off, 2: on.
    state: AtomicU8,
}

impl EnvSwitch {
    pub(crate) const fn new(var: &'static str) -> EnvSwitch {
        EnvSwitch {
            var,
            state: AtomicU8::new(0),
        }
    }

    pub(crate) fn on(&self) -> bool {
        match self.state.load(Ordering::Relaxed) {
            0 => {
                let on = std::env::var(self.var).is_ok_and(|v| v == "1");
                self.state.store(if on { 2 } else { 1 }, Ordering::Relaxed);
                on
            }
            s => s == 2,
        }
    }

    /// Off from now on (the diagnostic cannot work).
    pub(crate) fn turn_off(&self) {
        self.state.store(1, Ordering::Relaxed);
    }
}

/// One vCPU's JIT engine.
#[derive(Default)]
pub struct Jit {
    pub interp: Interpreter,
    compiler: Compiler,
}

impl Jit {
    /// Execute at most `budget` instructions, like [`Interpreter::run`].
    pub fn run(
        &mut self,
        state: &mut CpuState,
        mem: &mut PhysMem,
        plat: &mut dyn Platform,
        budget: u64,
    ) -> RunExit {
        if self.compiler.needs_block_flush {
            // Every block holding a pointer into the old module goes first.
            self.interp.clear_blocks();
            self.compiler.reset();
            self.compiler.stats.cache_resets += 1;
        }
        self.compiler.start_run();
        self.interp
            .run_tiered(state, mem, plat, budget, Some(&mut self.compiler))
    }

    /// Drop decoded blocks, translations and the TLB.
    pub fn reset_caches(&mut self) {
        self.interp.reset_caches();
        self.compiler.reset();
    }

    /// A JIT that translates a block after `entries` runs of it (1: on its first run),
    /// compiling where `compilation` says.
    pub fn new(entries: u32, compilation: Compilation) -> Jit {
        Jit {
            interp: Interpreter::default(),
            compiler: Compiler::new(entries, compilation),
        }
    }

    /// A JIT that translates a block after `entries` runs of it (1: on its first run), in
    /// the vCPU thread, so that exactly the blocks run that often are native.
    pub fn with_hot_threshold(entries: u32) -> Jit {
        Jit::new(entries, Compilation::InThread)
    }

    pub fn stats(&self) -> JitStats {
        JitStats {
            native_counters: self.compiler.native_counters,
            ..self.compiler.stats
        }
    }

    /// Make translated code count its TLB hits and chained transitions (`--stats`), or
    /// not (the default: it runs faster). A change drops the translations made so far,
    /// which were made for the other setting.
    pub fn set_native_counters(&mut self, on: bool) {
        if self.compiler.native_counters != on {
            self.compiler.native_counters = on;
            self.reset_caches();
        }
    }
}
