//! Guest time. Every timer (PIT, RTC, later the LAPIC timer and the TSC) derives from one
//! [`Clock`] that gives guest nanoseconds in one of two ways:
//!
//! * [`Clock::host`]: the host's monotonic clock since the clock was made (plus an offset),
//!   so the guest sees wall-clock speed;
//! * [`Clock::icount`]: from the number of retired guest instructions,
//!   `ns = instructions << shift` (QEMU's `-icount shift=N`), so a run is deterministic and
//!   replayable: the same guest with the same input sees the same times.
//!
//! The machine calls [`Clock::now_ns`] with its retired-instruction count. For icount runs,
//! [`Clock::instructions_until`] turns the platform's next timer deadline into an instruction
//! budget for the engine.

use serde::{Deserialize, Serialize};
use std::time::Instant;

/// How a clock counts (the serializable part of a [`Clock`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClockMode {
    /// Host monotonic time.
    Host,
    /// `ns = retired instructions << shift`.
    Icount { shift: u8 },
}

/// A clock snapshot: the mode and the guest time when it was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockState {
    pub mode: ClockMode,
    pub now_ns: u64,
}

#[derive(Clone, Debug)]
enum Source {
    Host { start: Instant },
    Icount { shift: u32 },
}

/// Guest nanoseconds from host time or from retired instructions.
#[derive(Clone, Debug)]
pub struct Clock {
    source: Source,
    /// Guest time at `base_insns` (icount) or at `start` (host).
    base_ns: u64,
    base_insns: u64,
}

/// Largest accepted icount shift (1 instruction = 2^30 ns ≈ 1 s).
pub const MAX_ICOUNT_SHIFT: u8 = 30;

impl Clock {
    /// Host monotonic time, starting at guest time 0 now.
    pub fn host() -> Clock {
        Clock::host_from(0)
    }

    /// Host monotonic time, starting at guest time `offset_ns` now.
    pub fn host_from(offset_ns: u64) -> Clock {
        Clock {
            source: Source::Host {
                start: Instant::now(),
            },
            base_ns: offset_ns,
            base_insns: 0,
        }
    }

    /// Deterministic time: each retired instruction advances the guest clock by `2^shift` ns
    /// (`shift` is clamped to [`MAX_ICOUNT_SHIFT`]). Instruction count 0 is guest time 0.
    pub fn icount(shift: u8) -> Clock {
        Clock {
            source: Source::Icount {
                shift: u32::from(shift.min(MAX_ICOUNT_SHIFT)),
            },
            base_ns: 0,
            base_insns: 0,
        }
    }

    pub fn mode(&self) -> ClockMode {
        match self.source {
            Source::Host { .. } => ClockMode::Host,
            Source::Icount { shift } => ClockMode::Icount { shift: shift as u8 },
        }
    }

    /// True for icount clocks (time depends only on the instruction count).
    pub fn is_deterministic(&self) -> bool {
        matches!(self.source, Source::Icount { .. })
    }

    /// Guest time in ns after `retired` instructions (ignored by host clocks).
    pub fn now_ns(&self, retired: u64) -> u64 {
        match self.source {
            Source::Host { start } => {
                let elapsed = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.base_ns.saturating_add(elapsed)
            }
            Source::Icount { shift } => {
                let insns = retired.saturating_sub(self.base_insns);
                let ns = u128::from(insns) << shift;
                self.base_ns
                    .saturating_add(u64::try_from(ns).unwrap_or(u64::MAX))
            }
        }
    }

    /// For icount clocks: how many more instructions (at least 1) until guest time reaches
    /// `deadline_ns`, given `retired` so far. `None` for host clocks, whose instruction rate is
    /// unknown.
    pub fn instructions_until(&self, retired: u64, deadline_ns: u64) -> Option<u64> {
        match self.source {
            Source::Host { .. } => None,
            Source::Icount { shift } => {
                let now = self.now_ns(retired);
                let delta = deadline_ns.saturating_sub(now);
                let step = 1u64 << shift;
                Some(delta.div_ceil(step).max(1))
            }
        }
    }

    /// Snapshot at `retired` instructions.
    pub fn state(&self, retired: u64) -> ClockState {
        ClockState {
            mode: self.mode(),
            now_ns: self.now_ns(retired),
        }
    }

    /// A clock that continues from `state`, with `retired` instructions counted so far (the
    /// engine's counter after the restore). Host clocks resume from the saved time now.
    pub fn restore(state: &ClockState, retired: u64) -> Clock {
        match state.mode {
            ClockMode::Host => Clock::host_from(state.now_ns),
            ClockMode::Icount { shift } => {
                let mut c = Clock::icount(shift);
                c.base_ns = state.now_ns;
                c.base_insns = retired;
                c
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icount_is_deterministic() {
        let c = Clock::icount(0);
        assert!(c.is_deterministic());
        assert_eq!(c.now_ns(0), 0);
        assert_eq!(c.now_ns(12_345), 12_345);
        let c = Clock::icount(3);
        assert_eq!(c.now_ns(1000), 8000);
        assert_eq!(c.mode(), ClockMode::Icount { shift: 3 });
        // Saturates instead of overflowing.
        let c = Clock::icount(30);
        assert_eq!(c.now_ns(u64::MAX), u64::MAX);
    }

    #[test]
    fn icount_budget_to_deadline() {
        let c = Clock::icount(2); // 4 ns per instruction
        assert_eq!(c.instructions_until(0, 100), Some(25));
        assert_eq!(c.instructions_until(0, 101), Some(26));
        assert_eq!(
            c.instructions_until(10, 40),
            Some(1),
            "deadline now: at least one"
        );
        assert_eq!(c.instructions_until(100, 40), Some(1), "deadline passed");
        assert_eq!(Clock::host().instructions_until(0, 100), None);
    }

    #[test]
    fn host_clock_is_monotonic_and_offset() {
        let c = Clock::host_from(5_000_000_000);
        assert!(!c.is_deterministic());
        let a = c.now_ns(0);
        let b = c.now_ns(999);
        assert!(a >= 5_000_000_000);
        assert!(b >= a);
        assert_eq!(c.mode(), ClockMode::Host);
    }

    #[test]
    fn snapshot_and_restore() {
        let c = Clock::icount(1);
        let st = c.state(500);
        assert_eq!(st.now_ns, 1000);
        // Restored with the engine's counter reset to 0: time continues from 1000.
        let r = Clock::restore(&st, 0);
        assert_eq!(r.now_ns(0), 1000);
        assert_eq!(r.now_ns(10), 1020);
        let h = Clock::restore(
            &ClockState {
                mode: ClockMode::Host,
                now_ns: 7_000,
            },
            0,
        );
        assert!(h.now_ns(0) >= 7_000);
    }
}
