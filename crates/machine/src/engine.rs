//! The one trait every execution engine implements, and the interpreter's adapter to it.
//! The machine (and tests) drive engines only through this trait, so a guest test written
//! once runs on every engine.

use crane86_devices::{Platform, PlatformAction};
use crane86_interp::{Interpreter, RunExit};
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

/// Engine names as the CLI spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EngineKind {
    Interp,
}

impl EngineKind {
    /// Every engine this build can run here.
    pub fn available() -> Vec<EngineKind> {
        vec![EngineKind::Interp]
    }

    pub fn create(self) -> Box<dyn Engine> {
        match self {
            EngineKind::Interp => Box::new(InterpEngine::default()),
        }
    }
}

impl EngineKind {
    /// Every engine crane86 knows, whether or not this build can run it.
    pub const ALL: [EngineKind; 1] = [EngineKind::Interp];

    /// The engine's CLI name (`--accel NAME`).
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Interp => "interp",
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
        match self.interp.run(cpu, mem, plat, budget) {
            RunExit::Budget => EngineExit::Budget,
            RunExit::Halted => EngineExit::Halted,
            RunExit::Action(a) => EngineExit::Action(a),
            RunExit::TripleFault(e) => EngineExit::TripleFault(e),
        }
    }

    fn instructions(&self) -> u64 {
        self.interp.stats.instructions
    }

    fn reset_caches(&mut self) {
        self.interp.reset_caches();
    }

    fn stats(&self) -> EngineStats {
        let s = &self.interp.stats;
        let t = self.interp.tlb().stats;
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
}
