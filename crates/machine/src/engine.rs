//! The one trait every execution engine implements, and the interpreter's and the JIT's
//! adapters to it.
//! The machine (and tests) drive engines only through this trait, so a guest test written
//! once runs on every engine.

use crane86_devices::{Platform, PlatformAction};
use crane86_interp::{Interpreter, RunExit};
use crane86_jit::Jit;
use crane86_memory::PhysMem;
use crane86_x86::{CpuState, Exception};
use std::fmt;

/// Why an engine run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineExit {
    /// The instruction budget is used up.
    Budget,
    /// The guest halted with interrupts unable to wake it right now.
    Halted,
    /// A device asked for a machine-level action (reset, power-off, debug-exit).
    Action(PlatformAction),
    /// Triple fault: the CPU shut down. Carries the exception that could not be delivered.
    TripleFault(Exception),
}

impl From<RunExit> for EngineExit {
    fn from(e: RunExit) -> EngineExit {
        match e {
            RunExit::Budget => EngineExit::Budget,
            RunExit::Halted => EngineExit::Halted,
            RunExit::Action(a) => EngineExit::Action(a),
            RunExit::TripleFault(e) => EngineExit::TripleFault(e),
        }
    }
}

/// Engine names as the CLI spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EngineKind {
    Interp,
    Jit,
}

impl EngineKind {
    /// Every engine this build can run here.
    pub fn available() -> Vec<EngineKind> {
        vec![EngineKind::Interp, EngineKind::Jit]
    }

    pub fn create(self) -> Box<dyn Engine> {
        match self {
            EngineKind::Interp => Box::new(InterpEngine::default()),
            EngineKind::Jit => Box::new(JitEngine::default()),
        }
    }

    /// An engine for small test guests: the JIT translates every block on its first run,
    /// so tests exercise translated code rather than its interpreter tier.
    pub fn create_eager(self) -> Box<dyn Engine> {
        match self {
            EngineKind::Jit => Box::new(JitEngine {
                jit: Jit::with_hot_threshold(1),
            }),
            other => other.create(),
        }
    }
}

impl EngineKind {
    /// Every engine crane86 knows, whether or not this build can run it.
    pub const ALL: [EngineKind; 2] = [EngineKind::Interp, EngineKind::Jit];

    /// The engine's CLI name (`--accel NAME`).
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Interp => "interp",
            EngineKind::Jit => "jit",
        }
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;

    /// Parse a CLI engine name; the error lists the engines available here.
    fn from_str(s: &str) -> Result<EngineKind, String> {
        EngineKind::available()
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = EngineKind::available().iter().map(|k| k.name()).collect();
                format!(
                    "unknown or unavailable engine {s:?} (available: {})",
                    names.join(", ")
                )
            })
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Engine-specific counters for `--stats`, as (name, value) pairs.
pub type EngineStats = Vec<(&'static str, String)>;

pub trait Engine {
    fn kind(&self) -> EngineKind;
    /// Run the guest for up to about `budget` instructions.
    fn run(
        &mut self,
        cpu: &mut CpuState,
        mem: &mut PhysMem,
        plat: &mut dyn Platform,
        budget: u64,
    ) -> EngineExit;
    /// Retired guest instructions so far.
    fn instructions(&self) -> u64;
    /// Drop cached translations (after state was changed from outside the engine).
    fn reset_caches(&mut self);
    fn stats(&self) -> EngineStats;
}

#[derive(Default)]
pub struct InterpEngine {
    pub interp: Interpreter,
}

impl Engine for InterpEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Interp
    }

    fn run(
        &mut self,
        cpu: &mut CpuState,
        mem: &mut PhysMem,
        plat: &mut dyn Platform,
        budget: u64,
    ) -> EngineExit {
        self.interp.run(cpu, mem, plat, budget).into()
    }

    fn instructions(&self) -> u64 {
        self.interp.stats.instructions
    }

    fn reset_caches(&mut self) {
        self.interp.reset_caches();
    }

    fn stats(&self) -> EngineStats {
        interp_stats(&self.interp)
    }
}

/// The interpreter's counters (also the JIT's cold tier).
fn interp_stats(interp: &Interpreter) -> EngineStats {
    let s = &interp.stats;
    let t = interp.tlb().stats;
    let lookups = s.block_cache_hits + s.blocks_decoded;
    vec![
        ("blocks decoded", s.blocks_decoded.to_string()),
        (
            "block cache hit rate",
            format!(
                "{:.2}%",
                100.0 * s.block_cache_hits as f64 / lookups.max(1) as f64
            ),
        ),
        ("TLB hit rate", format!("{:.4}%", 100.0 * t.hit_rate())),
        ("TLB misses (page walks)", t.misses.to_string()),
        ("TLB flushes", t.flushes.to_string()),
        ("SMC invalidations", s.smc_invalidations.to_string()),
        ("exceptions", s.exceptions.to_string()),
        ("interrupts", s.interrupts.to_string()),
    ]
}

/// The Cranelift JIT engine (hot blocks translated, the interpreter for the rest).
#[derive(Default)]
pub struct JitEngine {
    pub jit: Jit,
}

impl Engine for JitEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Jit
    }

    fn run(
        &mut self,
        cpu: &mut CpuState,
        mem: &mut PhysMem,
        plat: &mut dyn Platform,
        budget: u64,
    ) -> EngineExit {
        self.jit.run(cpu, mem, plat, budget).into()
    }

    fn instructions(&self) -> u64 {
        self.jit.interp.stats.instructions
    }

    fn reset_caches(&mut self) {
        self.jit.reset_caches();
    }

    fn stats(&self) -> EngineStats {
        let j = self.jit.stats();
        let mut v = vec![
            ("blocks translated", j.blocks_translated.to_string()),
            (
                "instructions translated (inline)",
                format!("{} ({})", j.insns_translated, j.insns_inlined),
            ),
            (
                "translation time",
                format!("{:.3} s", j.translation_time.as_secs_f64()),
            ),
            ("native block runs", j.native_block_runs.to_string()),
            ("translation cache resets", j.cache_resets.to_string()),
        ];
        if j.translation_failures > 0 {
            v.push(("translation failures", j.translation_failures.to_string()));
        }
        v.extend(interp_stats(&self.jit.interp));
        v
    }
}
