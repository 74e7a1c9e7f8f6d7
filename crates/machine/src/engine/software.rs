//! The interpreter's and the JIT's adapters to the [`Engine`] trait.

use super::{Engine, EngineExit, EngineKind, EngineStats};
use crane86_devices::Platform;
use crane86_interp::Interpreter;
use crane86_jit::Jit;
use crane86_memory::PhysMem;
use crane86_x86::CpuState;

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

    fn continue_count_from(&mut self, retired: u64) {
        self.interp.stats.instructions = retired;
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

impl JitEngine {
    /// A JIT for tests: it translates a block after `entries` runs, in the vCPU thread, and
    /// its code counts every `--stats` figure (see `Jit::set_native_counters`).
    pub fn with_hot_threshold(entries: u32) -> JitEngine {
        let mut jit = Jit::with_hot_threshold(entries);
        jit.set_native_counters(true);
        JitEngine { jit }
    }
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

    fn continue_count_from(&mut self, retired: u64) {
        self.jit.interp.stats.instructions = retired;
    }

    fn reset_caches(&mut self) {
        self.jit.reset_caches();
    }

    fn set_detailed_stats(&mut self, on: bool) {
        self.jit.set_native_counters(on);
    }

    fn stats(&self) -> EngineStats {
        let j = self.jit.stats();
        let mut v = vec![
            ("blocks translated", j.blocks_translated.to_string()),
            (
                "blocks translated quick (unoptimized)",
                j.blocks_translated_quick.to_string(),
            ),
            (
                "blocks re-translated optimized",
                j.blocks_reoptimized.to_string(),
            ),
            (
                "translations spanning later blocks",
                j.spanning_translations.to_string(),
            ),
            (
                "translations along taken branches",
                j.taken_path_translations.to_string(),
            ),
            (
                "instructions translated (inline)",
                format!("{} ({})", j.insns_translated, j.insns_inlined),
            ),
            (
                "translation time",
                format!(
                    "{:.3} s ({})",
                    j.translation_time.as_secs_f64(),
                    if j.background {
                        "background thread"
                    } else {
                        "vCPU thread"
                    }
                ),
            ),
            ("native block runs", j.native_block_runs.to_string()),
            (
                "instructions in native blocks",
                j.native_instructions.to_string(),
            ),
            ("chained transitions", j.chained_transitions.to_string()),
            (
                "chained transitions (native)",
                j.native_chained_transitions.to_string(),
            ),
            (
                "dispatcher transitions",
                j.dispatcher_transitions.to_string(),
            ),
            ("links patched into code", j.patched_links.to_string()),
            ("translation cache resets", j.cache_resets.to_string()),
            (
                "insns interpreted awaiting code",
                j.waiting_instructions.to_string(),
            ),
        ];
        if j.background {
            v.push((
                "compile queue (peak jobs, boosts)",
                format!("{}, {}", j.compile_queue_peak, j.compile_boosts),
            ));
        }
        if j.translations_discarded > 0 {
            v.push((
                "translations discarded (block gone)",
                j.translations_discarded.to_string(),
            ));
        }
        if j.translation_failures > 0 {
            v.push(("translation failures", j.translation_failures.to_string()));
        }
        v.extend(interp_stats(&self.jit.interp));
        if !j.native_counters {
            // Native code did not count these (see `set_detailed_stats`).
            for (name, value) in &mut v {
                if matches!(
                    *name,
                    "chained transitions" | "chained transitions (native)" | "TLB hit rate"
                ) {
                    *value = "not counted in native code (see --stats)".to_string();
                }
            }
        }
        v
    }
}
