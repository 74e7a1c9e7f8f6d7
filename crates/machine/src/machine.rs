//! `PcMachine`: builds guest RAM (with the firmware image at the reset vector), the device
//! platform, the CPU and the engine from a [`MachineConfig`], loads the kernel, and runs the
//! vCPU loop: engine slices sized to the next device deadline, device servicing between
//! slices, HLT handling (sleep on the host clock, or jump ahead in icount mode), the
//! machine-level exits (debug-exit, power-off, reset, triple fault), and engine switches
//! (`--switch-engine`: the guest continues under another engine at an instruction boundary,
//! with the same CPU state, devices and RAM).

use crate::config::{
    check_switches, ClockMode, EngineSwitch, MachineConfig, SerialSink, SwitchPoint,
    TripleFaultPolicy,
};
use crate::dump::format_cpu;
use crate::engine::{Engine, EngineExit, EngineKind, EngineStats, HOST_INSNS_PER_US};
use crate::error::MachineError;
use crate::loader;
use crate::platform::{pc_platform, MachinePlatform};
use crane86_devices::PlatformAction;
use crane86_memory::phys::LOW_RAM_LIMIT;
use crane86_memory::PhysMem;
use crane86_x86::{flags, CpuState};
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Longest engine slice, in instructions (bounds the latency of serial input and timers).
pub const MAX_SLICE: u64 = 200_000;
/// Shortest slice when a deadline is close.
pub const MIN_SLICE: u64 = 500;
/// Longest host sleep while halted, so serial input and Ctrl-C stay responsive.
const MAX_HALT_SLEEP: Duration = Duration::from_millis(10);
/// Resets less than this many instructions apart count as a reset loop
/// (`MachineConfig::max_resets` of them in a row stop the machine).
pub const RESET_LOOP_WINDOW: u64 = 10_000_000;
/// The same window in host time, for engines that cannot count instructions (kvm).
pub const RESET_LOOP_TIME: Duration = Duration::from_secs(1);
/// Status of a run stopped by `MachineConfig::max_instructions`.
pub const INSTRUCTION_LIMIT_STATUS: i32 = 124;

/// Why the machine stopped (the non-error endings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest wrote `value` to the debug-exit port (0xF4).
    DebugExit(u32),
    /// The guest powered the machine off.
    PowerOff,
    /// `max_instructions` were retired.
    InstructionLimit,
}

/// The outcome of [`PcMachine::run`].
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub reason: ExitReason,
    /// Process exit status: `((value << 1) | 1) & 0xFF` for a debug-exit (QEMU isa-debug-exit), 0 for
    /// power-off, [`INSTRUCTION_LIMIT_STATUS`] for the instruction limit.
    pub status: i32,
    pub instructions: u64,
    pub wall: Duration,
    /// Guest time at exit, in ns.
    pub guest_ns: u64,
    pub engine: EngineKind,
    /// Why `--accel auto` chose the first engine (None when it was named).
    pub engine_reason: Option<String>,
    /// Engine switches made: (engine switched to, instructions retired at that point).
    pub switches: Vec<(EngineKind, u64)>,
    /// Every engine that ran counted its instructions (kvm cannot).
    pub instructions_counted: bool,
    pub engine_stats: EngineStats,
    pub resets: u32,
}

impl RunSummary {
    /// Guest instructions per host microsecond of wall time.
    pub fn mips(&self) -> f64 {
        self.instructions as f64 / self.wall.as_secs_f64().max(1e-9) / 1e6
    }
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "crane86 stats")?;
        writeln!(
            f,
            "  {:<36} {:?} (status {})",
            "exit", self.reason, self.status
        )?;
        writeln!(f, "  {:<36} {}", "engine", self.engine)?;
        if let Some(why) = &self.engine_reason {
            writeln!(f, "  {:<36} {why}", "engine choice (--accel auto)")?;
        }
        for (engine, at) in &self.switches {
            writeln!(
                f,
                "  {:<36} to {engine} at {at} instructions",
                "engine switch"
            )?;
        }
        if self.instructions_counted {
            writeln!(f, "  {:<36} {}", "retired instructions", self.instructions)?;
        } else {
            writeln!(
                f,
                "  {:<36} {} (kvm does not count its own)",
                "retired instructions", self.instructions
            )?;
        }
        writeln!(f, "  {:<36} {:.3} s", "wall time", self.wall.as_secs_f64())?;
        writeln!(
            f,
            "  {:<36} {:.3} s",
            "guest time",
            self.guest_ns as f64 / 1e9
        )?;
        if self.instructions_counted {
            writeln!(f, "  {:<36} {:.1}", "guest MIPS", self.mips())?;
        }
        writeln!(f, "  {:<36} {}", "resets", self.resets)?;
        for (name, value) in &self.engine_stats {
            writeln!(f, "  {name:<36} {value}")?;
        }
        Ok(())
    }
}

/// A runnable PC.
pub struct PcMachine {
    pub cpu: CpuState,
    pub mem: PhysMem,
    platform: Box<dyn MachinePlatform>,
    engine: Box<dyn Engine>,
    config: MachineConfig,
    resets: u32,
    /// Resets in quick succession (each within [`RESET_LOOP_WINDOW`] instructions of the
    /// previous one): the reset-loop detector.
    rapid_resets: u32,
    /// Retired-instruction count at the last reset.
    last_reset_at: u64,
    /// Host time of the last reset (the window when an engine cannot count instructions).
    last_reset_time: Instant,
    /// The platform can receive input (stdin), so a halted guest may be woken by it.
    has_input: bool,
    /// Instructions retired by the engines that ran before the current one.
    retired_before: u64,
    /// Switches still to make, in order.
    pending_switches: VecDeque<EngineSwitch>,
    /// Switches made: (engine, instructions at the switch).
    switches_made: Vec<(EngineKind, u64)>,
    /// Every engine so far counted its instructions.
    instructions_counted: bool,
    /// When the current engine started running (for time switch points).
    engine_since: Instant,
}

/// Set by SIGUSR1 when a `--switch-engine ENGINE@signal` is configured.
static SWITCH_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_switch_signal(_: libc::c_int) {
    SWITCH_REQUESTED.store(true, Ordering::SeqCst);
}

fn install_switch_signal() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe); SA_RESTART keeps
    // interrupted host syscalls transparent.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_switch_signal as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "cannot install the SIGUSR1 handler: signal engine switches will not happen"
            );
        }
    }
}

impl PcMachine {
    /// Build the machine: RAM + firmware, the platform with the configured serial sink, the
    /// CPU at RESET (or at the kernel's entry), the engine.
    pub fn new(config: MachineConfig) -> Result<PcMachine, MachineError> {
        let low = config.ram_size.min(LOW_RAM_LIMIT);
        let high = config.ram_size - low;
        let platform = Box::new(pc_platform(&config, low, high)?);
        Self::with_platform(config, platform)
    }

    /// Build the machine around a caller-supplied platform (embedders, tests). The platform
    /// brings its own serial plumbing and clock; `config.serial`/`serial_input`/`clock` are
    /// not used to build it.
    pub fn with_platform(
        config: MachineConfig,
        platform: Box<dyn MachinePlatform>,
    ) -> Result<PcMachine, MachineError> {
        if config.firmware.is_none() && config.kernel.is_none() {
            return Err(MachineError::NothingToBoot);
        }
        let rom = match &config.firmware {
            Some(src) => {
                let image = src.read()?;
                loader::firmware::check_image(&src.name(), &image)?;
                image
            }
            None => Vec::new(),
        };
        let mem = PhysMem::new(config.ram_size, &rom)?;
        let has_input = config.serial_input.is_some() || matches!(config.serial, SerialSink::Stdio);
        check_switches(config.engine, &config.switches)?;
        let uncounted = std::iter::once(config.engine)
            .chain(config.switches.iter().map(|s| s.engine))
            .find(|e| !e.counts_instructions());
        if let Some(engine) = uncounted {
            if matches!(config.clock, ClockMode::Icount { .. }) {
                return Err(MachineError::NeedsInstructionCount {
                    engine,
                    feature: "--icount (guest time derived from instructions)",
                });
            }
            if config.max_instructions.is_some() {
                return Err(MachineError::NeedsInstructionCount {
                    engine,
                    feature: "--max-insns",
                });
            }
        }
        if config.switches.iter().any(|s| s.engine == EngineKind::Kvm) {
            // Refuse now, not when the guest reaches the switch point.
            crate::engine::kvm_usable().map_err(|reason| MachineError::EngineUnavailable {
                engine: EngineKind::Kvm,
                reason,
            })?;
        }
        if config.switches.iter().any(|s| s.at == SwitchPoint::Signal) {
            install_switch_signal();
        }
        let mut engine = config.engine.create()?;
        engine.set_detailed_stats(config.detailed_stats);
        let mut m = PcMachine {
            cpu: CpuState::reset(),
            mem,
            platform,
            engine,
            pending_switches: config.switches.iter().copied().collect(),
            instructions_counted: config.engine.counts_instructions(),
            config,
            resets: 0,
            rapid_resets: 0,
            last_reset_at: 0,
            last_reset_time: Instant::now(),
            has_input,
            retired_before: 0,
            switches_made: Vec::new(),
            engine_since: Instant::now(),
        };
        m.boot()?;
        Ok(m)
    }

    /// Put the CPU at its starting point: the kernel entry (the kernel is (re)loaded), or
    /// RESET in the firmware.
    fn boot(&mut self) -> Result<(), MachineError> {
        self.cpu = CpuState::reset();
        if let Some(k) = &self.config.kernel {
            // No firmware runs: provide the ACPI tables; a Linux zero page points at the RSDP.
            let rsdp = crate::acpi::build_tables(&mut self.mem)
                .map_err(|e| tracing::warn!(error = %e, "no ACPI tables"))
                .ok();
            loader::boot_kernel_with_acpi(&mut self.mem, &mut self.cpu, k, rsdp)?;
        }
        self.engine.reset_caches();
        Ok(())
    }

    /// The execution engine (retired instructions, statistics).
    pub fn engine(&self) -> &dyn Engine {
        self.engine.as_ref()
    }

    /// Guest instructions retired so far by every engine that ran (kvm counts none).
    pub fn instructions(&self) -> u64 {
        self.retired_before + self.engine.instructions()
    }

    /// Continue the guest under `kind` from here: the CPU state, devices and RAM carry over;
    /// the new engine starts with empty caches.
    pub fn switch_engine(&mut self, kind: EngineKind) -> Result<(), MachineError> {
        let mut next = kind.create()?;
        next.set_detailed_stats(self.config.detailed_stats);
        let at = self.instructions();
        tracing::info!(from = %self.engine.kind(), to = %kind, instructions = at, "switching engine");
        if kind.counts_instructions() {
            next.continue_count_from(at);
            self.retired_before = 0;
        } else {
            self.retired_before = at;
        }
        self.engine = next;
        self.engine_since = Instant::now();
        self.instructions_counted &= kind.counts_instructions();
        self.switches_made.push((kind, at));
        Ok(())
    }

    /// Make the next configured switch if its point is reached.
    fn switch_if_due(&mut self) -> Result<(), MachineError> {
        let Some(next) = self.pending_switches.front().copied() else {
            return Ok(());
        };
        let due = match next.at {
            SwitchPoint::Instructions(n) => self.instructions() >= n,
            SwitchPoint::AfterTime(t) => self.engine_since.elapsed() >= t,
            SwitchPoint::Signal => SWITCH_REQUESTED.swap(false, Ordering::SeqCst),
        };
        if due {
            self.pending_switches.pop_front();
            self.switch_engine(next.engine)?;
        }
        Ok(())
    }

    /// The device model.
    pub fn platform(&mut self) -> &mut dyn MachinePlatform {
        self.platform.as_mut()
    }

    /// System reset: devices to power-on state, the CPU to RESET (or the kernel reloaded and
    /// re-entered); RAM is kept. Stops with [`MachineError::ResetLoop`] after too many resets
    /// in quick succession.
    fn reset(&mut self) -> Result<(), MachineError> {
        self.resets += 1;
        let now = self.instructions();
        let quick = if self.instructions_counted {
            now - self.last_reset_at <= RESET_LOOP_WINDOW
        } else {
            self.last_reset_time.elapsed() <= RESET_LOOP_TIME
        };
        if !quick {
            self.rapid_resets = 0;
        }
        self.last_reset_at = now;
        self.last_reset_time = Instant::now();
        self.rapid_resets += 1;
        if self.rapid_resets > self.config.max_resets {
            return Err(MachineError::ResetLoop {
                resets: self.rapid_resets,
                limit: self.config.max_resets,
            });
        }
        tracing::info!(resets = self.resets, "machine reset");
        self.platform.reset();
        self.boot()
    }

    fn summary(&mut self, reason: ExitReason, start: Instant) -> RunSummary {
        let status = match reason {
            // As QEMU's isa-debug-exit: exit((v << 1) | 1), of which the OS keeps 8 bits
            // (always odd, so never a success status).
            ExitReason::DebugExit(v) => ((u64::from(v) << 1 | 1) & 0xFF) as i32,
            ExitReason::PowerOff => 0,
            ExitReason::InstructionLimit => INSTRUCTION_LIMIT_STATUS,
        };
        let instructions = self.instructions();
        RunSummary {
            reason,
            status,
            instructions,
            wall: start.elapsed(),
            guest_ns: {
                self.platform.set_retired_instructions(instructions);
                self.platform.now_ns()
            },
            engine: self.engine.kind(),
            engine_reason: self.config.engine_reason.clone(),
            switches: self.switches_made.clone(),
            instructions_counted: self.instructions_counted,
            engine_stats: self.engine.stats(),
            resets: self.resets,
        }
    }

    /// Instruction budget of the next slice: up to the next device deadline (exact for icount
    /// clocks, estimated for host clocks), at most [`MAX_SLICE`], within the instruction limit.
    fn slice(&self, now: u64) -> u64 {
        let mut budget = match self.platform.next_deadline_ns() {
            None => MAX_SLICE,
            Some(d) if d <= now => MIN_SLICE,
            Some(d) => self
                .platform
                .instructions_until(d)
                .unwrap_or_else(|| ((d - now) / 1000 * HOST_INSNS_PER_US).max(MIN_SLICE))
                .min(MAX_SLICE),
        };
        if let Some(limit) = self.config.max_instructions {
            budget = budget.min(limit.saturating_sub(self.instructions()));
        }
        if let Some(SwitchPoint::Instructions(n)) = self.pending_switches.front().map(|s| s.at) {
            // Stop exactly at the switch point.
            budget = budget.min(n.saturating_sub(self.instructions()).max(1));
        }
        budget
    }

    /// Run until the guest exits (debug-exit, power-off), the instruction limit, or an error
    /// (triple fault under the shutdown policy, a dead halt, a reset loop).
    pub fn run(&mut self) -> Result<RunSummary, MachineError> {
        let start = Instant::now();
        self.engine_since = start;
        loop {
            self.switch_if_due()?;
            self.platform.set_retired_instructions(self.instructions());
            let now = self.platform.now_ns();
            self.platform.service(now);
            if let Some(limit) = self.config.max_instructions {
                if self.instructions() >= limit {
                    return Ok(self.summary(ExitReason::InstructionLimit, start));
                }
            }
            let budget = self.slice(now);
            let exit =
                self.engine
                    .run(&mut self.cpu, &mut self.mem, self.platform.as_mut(), budget);
            match exit {
                EngineExit::Budget => {}
                EngineExit::Halted => self.halted(now)?,
                EngineExit::Action(PlatformAction::DebugExit(v)) => {
                    return Ok(self.summary(ExitReason::DebugExit(v), start));
                }
                EngineExit::Action(PlatformAction::PowerOff) => {
                    return Ok(self.summary(ExitReason::PowerOff, start));
                }
                EngineExit::Action(PlatformAction::Reset) => self.reset()?,
                EngineExit::Action(PlatformAction::TimerReprogrammed) => {}
                EngineExit::Action(PlatformAction::SetA20(on)) => {
                    self.cpu.a20 = on;
                    self.engine.reset_caches();
                }
                EngineExit::Failed => {
                    return Err(MachineError::EngineFailed {
                        engine: self.engine.kind(),
                        message: self
                            .engine
                            .take_failure()
                            .unwrap_or_else(|| "no reason given".into()),
                        instructions: self.instructions(),
                        dump: format_cpu(&self.cpu),
                    });
                }
                EngineExit::TripleFault(exception) => match self.config.triple_fault {
                    TripleFaultPolicy::Reset => {
                        tracing::warn!(%exception, "triple fault: resetting");
                        self.reset()?;
                    }
                    TripleFaultPolicy::Shutdown => {
                        return Err(MachineError::TripleFault {
                            exception,
                            instructions: self.instructions(),
                            dump: format_cpu(&self.cpu),
                        });
                    }
                },
            }
        }
    }

    /// The guest executed HLT with interrupts enabled: wait for the next event — jump guest
    /// time to the next deadline (icount), or sleep on the host clock until it (at most
    /// [`MAX_HALT_SLEEP`], so serial input is noticed). A halt nothing can end is an error.
    fn halted(&mut self, now: u64) -> Result<(), MachineError> {
        let deadline = self.platform.next_deadline_ns();
        if self.cpu.rflags & flags::IF == 0 || (deadline.is_none() && !self.has_input) {
            return Err(MachineError::HaltedForever {
                instructions: self.instructions(),
                dump: format_cpu(&self.cpu),
            });
        }
        if let Some(d) = deadline {
            if self.platform.instructions_until(d).is_some() {
                // Icount: the time skip starts from the instructions retired up to the HLT
                // (not from the platform's last sync), so guest time does not depend on how
                // the run was sliced.
                self.platform.set_retired_instructions(self.instructions());
                self.platform.skip_time_to(d);
                return Ok(());
            }
        }
        let wait = deadline
            .map(|d| Duration::from_nanos(d.saturating_sub(now)))
            .unwrap_or(MAX_HALT_SLEEP)
            .min(MAX_HALT_SLEEP);
        std::thread::sleep(wait);
        Ok(())
    }
}
