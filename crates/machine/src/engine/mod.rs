//! The one trait every execution engine implements ([`Engine`]), the engine names
//! ([`EngineKind`]), and `--accel auto`'s choice ([`choose_auto`]). The machine (and tests)
//! drive engines only through the trait, so a guest test written once runs on every engine.
//!
//! - [`software`] — the interpreter's and the JIT's adapters
//! - `kvm` — the KVM engine's adapter (Linux x86-64 with the `kvm` feature)

#[cfg(all(feature = "kvm", target_os = "linux", target_arch = "x86_64"))]
pub mod kvm;
pub mod software;

pub use software::{InterpEngine, JitEngine};

use crate::error::MachineError;
use crane86_devices::{Platform, PlatformAction};
use crane86_interp::RunExit;
use crane86_memory::PhysMem;
use crane86_x86::{CpuState, Exception};
use std::fmt;

/// Guest instructions per host microsecond assumed when a budget must become host time:
/// the machine sizes host-clock slices to a timer deadline with it, and engines that cannot
/// count instructions (kvm) run `budget / HOST_INSNS_PER_US` µs. An under-estimate only
/// costs extra device servicing.
pub const HOST_INSNS_PER_US: u64 = 100;

/// Why an engine run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineExit {
    /// The instruction budget (or time slice) is used up.
    Budget,
    /// The guest halted with interrupts unable to wake it right now.
    Halted,
    /// A device asked for a machine-level action (reset, power-off, debug-exit).
    Action(PlatformAction),
    /// Triple fault: the CPU shut down. Carries the exception that could not be delivered.
    TripleFault(Exception),
    /// The engine itself failed (a KVM ioctl error, an entry failure); the reason is in
    /// [`Engine::take_failure`].
    Failed,
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
    Kvm,
}

impl EngineKind {
    /// Every engine crane86 knows, whether or not this build can run it.
    pub const ALL: [EngineKind; 3] = [EngineKind::Interp, EngineKind::Jit, EngineKind::Kvm];

    /// Every engine this build can run here (kvm when built in and `/dev/kvm` can create a
    /// VM, whether or not it is hardware-accelerated).
    pub fn available() -> Vec<EngineKind> {
        let mut v = Self::emulators();
        if kvm_usable().is_ok() {
            v.push(EngineKind::Kvm);
        }
        v
    }

    /// The engines that execute guest instructions themselves: they count instructions, run
    /// under deterministic (icount) clocks and implement crane86's CPU model exactly. Tests
    /// of instruction semantics run on these; kvm runs the host CPU's.
    pub fn emulators() -> Vec<EngineKind> {
        vec![EngineKind::Interp, EngineKind::Jit]
    }

    /// The engine's CLI name (`--accel NAME`).
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Interp => "interp",
            EngineKind::Jit => "jit",
            EngineKind::Kvm => "kvm",
        }
    }

    /// This engine counts retired guest instructions (kvm cannot).
    pub fn counts_instructions(self) -> bool {
        self != EngineKind::Kvm
    }

    pub fn create(self) -> Result<Box<dyn Engine>, MachineError> {
        Ok(match self {
            EngineKind::Interp => Box::new(InterpEngine::default()),
            EngineKind::Jit => Box::new(JitEngine::default()),
            EngineKind::Kvm => create_kvm()?,
        })
    }

    /// An engine for small test guests: the JIT translates every block on its first run,
    /// so tests exercise translated code rather than its interpreter tier, and collects
    /// every counter.
    pub fn create_eager(self) -> Result<Box<dyn Engine>, MachineError> {
        match self {
            EngineKind::Jit => Ok(Box::new(JitEngine::with_hot_threshold(1))),
            other => other.create(),
        }
    }
}

#[cfg(all(feature = "kvm", target_os = "linux", target_arch = "x86_64"))]
fn create_kvm() -> Result<Box<dyn Engine>, MachineError> {
    Ok(Box::new(kvm::KvmEngine::new()?))
}

#[cfg(not(all(feature = "kvm", target_os = "linux", target_arch = "x86_64")))]
fn create_kvm() -> Result<Box<dyn Engine>, MachineError> {
    Err(MachineError::EngineUnavailable {
        engine: EngineKind::Kvm,
        reason: kvm_usable().unwrap_err(),
    })
}

/// `Ok` when the kvm engine can run here, else why not.
pub fn kvm_usable() -> Result<(), String> {
    #[cfg(all(feature = "kvm", target_os = "linux", target_arch = "x86_64"))]
    {
        crane86_kvm::probe().usable.clone()
    }
    #[cfg(not(all(feature = "kvm", target_os = "linux", target_arch = "x86_64")))]
    {
        Err("this build has no KVM support (Linux x86-64 hosts, cargo feature `kvm`)".into())
    }
}

/// True when the host CPU reports hardware virtualization (vmx/svm).
pub fn hardware_virtualization() -> bool {
    #[cfg(all(feature = "kvm", target_os = "linux", target_arch = "x86_64"))]
    {
        crane86_kvm::probe().hardware_virtualization
    }
    #[cfg(not(all(feature = "kvm", target_os = "linux", target_arch = "x86_64")))]
    {
        false
    }
}

/// `--accel auto`'s pick and the reason, for the log and `--stats`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineChoice {
    pub engine: EngineKind,
    pub reason: String,
}

/// `--accel auto`: kvm when `/dev/kvm` creates VMs and the host CPU has hardware
/// virtualization (vmx/svm); otherwise jit. A `/dev/kvm` without vmx/svm is a software
/// implementation, slower than the JIT, so it is not chosen automatically.
pub fn choose_auto() -> EngineChoice {
    let (engine, reason) = match kvm_usable() {
        Err(why) => (EngineKind::Jit, format!("kvm is not usable ({why})")),
        Ok(()) if !hardware_virtualization() => (
            EngineKind::Jit,
            "/dev/kvm works but the host CPU reports no hardware virtualization (no vmx/svm \
             flag), so it is a software KVM slower than the JIT"
                .to_string(),
        ),
        Ok(()) => (
            EngineKind::Kvm,
            "/dev/kvm works and the host CPU has hardware virtualization".to_string(),
        ),
    };
    EngineChoice { engine, reason }
}

impl std::str::FromStr for EngineKind {
    type Err = String;

    /// Parse an engine name; the error lists the engines available here.
    fn from_str(s: &str) -> Result<EngineKind, String> {
        EngineKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = EngineKind::available().iter().map(|k| k.name()).collect();
                format!(
                    "unknown engine {s:?} (available here: {})",
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
    /// Run the guest for up to about `budget` instructions (engines that cannot count
    /// instructions: `budget / HOST_INSNS_PER_US` µs). On return `cpu` holds the guest's
    /// complete state, so another engine can continue from it.
    fn run(
        &mut self,
        cpu: &mut CpuState,
        mem: &mut PhysMem,
        plat: &mut dyn Platform,
        budget: u64,
    ) -> EngineExit;
    /// Retired guest instructions so far (0 for engines that cannot count them).
    fn instructions(&self) -> u64;
    /// Count on from `retired` (the guest continues from another engine), so the counts the
    /// engine reports to the platform within a run — icount time — continue too. Engines
    /// that cannot count ignore it.
    fn continue_count_from(&mut self, _retired: u64) {}
    /// Drop cached translations (after state was changed from outside the engine).
    fn reset_caches(&mut self);
    fn stats(&self) -> EngineStats;
    /// Also collect the counters that cost run time ([`crate::MachineConfig::detailed_stats`]).
    /// Engines without such counters ignore it.
    fn set_detailed_stats(&mut self, _on: bool) {}
    /// After [`EngineExit::Failed`]: what failed.
    fn take_failure(&mut self) -> Option<String> {
        None
    }
}
