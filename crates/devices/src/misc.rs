//! Small system ports of a PC:
//!
//! * 0x61 — system control port B ([`PortB`]): PIT channel 2 gate and speaker enable
//!   (read/write), the DRAM refresh toggle and channel 2's OUT (read-only);
//! * 0x80 — the POST-code register ([`PostCode`]): remembers the last value written;
//! * 0x92 — system control port A ([`Port92`]): fast A20 gate and fast CPU reset;
//! * 0xF4 — QEMU's `isa-debug-exit` ([`DebugExit`]): a write of `v` ends the emulator with
//!   status `(v << 1) | 1`;
//! * 0xCF9 — the PIIX/ICH reset control register ([`ResetControl`]).
//!
//! Devices that request machine-level actions queue them; the platform drains the queues with
//! `take_action` right after the port write, so actions come out in the order they happened.

use crate::platform::PlatformAction;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use tracing::trace;

/// System control port B.
pub const PORTB_PORT: u16 = 0x61;
/// POST code port.
pub const POST_PORT: u16 = 0x80;
/// System control port A.
pub const PORT92_PORT: u16 = 0x92;
/// QEMU-compatible debug-exit port (QEMU's default `iobase`).
pub const DEBUG_EXIT_PORT: u16 = 0xF4;
/// Reset control register.
pub const RESET_CONTROL_PORT: u16 = 0xCF9;

// Port 0x61.
/// Port B: PIT channel 2 gate (read/write).
pub const PORTB_T2_GATE: u8 = 1 << 0;
/// Port B: speaker data enable: channel 2 OUT drives the speaker (read/write).
pub const PORTB_SPEAKER: u8 = 1 << 1;
/// Port B: disable RAM parity check (read/write, no effect).
pub const PORTB_PARITY_DISABLE: u8 = 1 << 2;
/// Port B: disable I/O channel check (read/write, no effect).
pub const PORTB_IOCHK_DISABLE: u8 = 1 << 3;
/// Port B: refresh request, toggles every 15.085 µs (read-only).
pub const PORTB_REFRESH: u8 = 1 << 4;
/// Port B: PIT channel 2 OUT (read-only).
pub const PORTB_T2_OUT: u8 = 1 << 5;
/// Port B: I/O channel check (read-only, always 0).
pub const PORTB_IOCHK: u8 = 1 << 6;
/// Port B: RAM parity error (read-only, always 0).
pub const PORTB_PARITY_ERROR: u8 = 1 << 7;
const PORTB_WRITABLE: u8 = 0x0F;
/// Half period of the refresh toggle in ns.
pub const REFRESH_TOGGLE_NS: u64 = 15_085;

// Port 0x92.
/// Port A: fast reset; a 0 → 1 transition resets the CPU.
pub const P92_FAST_RESET: u8 = 1 << 0;
/// Port A: A20 gate.
pub const P92_A20: u8 = 1 << 1;
/// Port A: CMOS security lock (no effect).
pub const P92_LOCK: u8 = 1 << 3;
/// Port A: watchdog timeout status (always 0).
pub const P92_WATCHDOG: u8 = 1 << 4;
/// Port A bits 7:6: hard disk activity LEDs (no effect).
pub const P92_HDD_LEDS: u8 = 0xC0;

// Port 0xCF9.
/// Reset control: system reset type: 1 = hard (platform) reset, 0 = soft (CPU INIT).
pub const RCR_SYS_RST: u8 = 1 << 1;
/// Reset control: writing 1 starts the reset selected by SYS_RST.
pub const RCR_RST_CPU: u8 = 1 << 2;
/// Reset control: full reset (power-cycle; treated as a hard reset).
pub const RCR_FULL_RST: u8 = 1 << 3;

/// Snapshot of the small ports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MiscState {
    pub port_b: u8,
    pub port92: u8,
    pub post_code: u8,
    pub post_writes: u64,
    pub reset_control: u8,
}

/// System control port B (0x61). The platform supplies channel 2's OUT and the time.
#[derive(Clone, Debug, Default)]
pub struct PortB {
    value: u8,
}

impl PortB {
    pub fn new() -> PortB {
        PortB::default()
    }

    /// The register as read at guest time `now_ns` with PIT channel 2's OUT at `t2_out`.
    pub fn read(&self, t2_out: bool, now_ns: u64) -> u8 {
        let mut v = self.value & PORTB_WRITABLE;
        if (now_ns / REFRESH_TOGGLE_NS) & 1 != 0 {
            v |= PORTB_REFRESH;
        }
        if t2_out {
            v |= PORTB_T2_OUT;
        }
        v
    }

    /// Store the writable bits; returns the new channel 2 gate level.
    pub fn write(&mut self, value: u8) -> bool {
        self.value = value & PORTB_WRITABLE;
        self.gate()
    }

    pub fn gate(&self) -> bool {
        self.value & PORTB_T2_GATE != 0
    }

    pub fn speaker_enabled(&self) -> bool {
        self.value & PORTB_SPEAKER != 0
    }

    /// Raw writable bits.
    pub fn value(&self) -> u8 {
        self.value
    }

    pub fn set_value(&mut self, value: u8) {
        self.value = value & PORTB_WRITABLE;
    }
}

/// System control port A (0x92).
#[derive(Clone, Debug)]
pub struct Port92 {
    value: u8,
    actions: VecDeque<PlatformAction>,
}

impl Default for Port92 {
    fn default() -> Self {
        Port92::new()
    }
}

impl Port92 {
    /// Power-on: A20 bit set (the machine starts with A20 enabled), no reset pending.
    pub fn new() -> Port92 {
        Port92 {
            value: P92_A20,
            actions: VecDeque::new(),
        }
    }

    pub fn read(&self) -> u8 {
        self.value
    }

    /// Every write drives A20 (last writer wins, as the 8042 does); a rising edge of bit 0
    /// resets the CPU.
    pub fn write(&mut self, value: u8) {
        let old = self.value;
        self.value = value & !P92_WATCHDOG;
        self.actions
            .push_back(PlatformAction::SetA20(value & P92_A20 != 0));
        if value & P92_FAST_RESET != 0 && old & P92_FAST_RESET == 0 {
            self.actions.push_back(PlatformAction::Reset);
        }
    }

    /// The A20 bit as last written.
    pub fn a20(&self) -> bool {
        self.value & P92_A20 != 0
    }

    /// After a system reset the fast-reset bit reads 0 again.
    pub fn reset(&mut self) {
        self.value &= !P92_FAST_RESET;
        self.actions.clear();
    }

    pub fn take_action(&mut self) -> Option<PlatformAction> {
        self.actions.pop_front()
    }

    pub fn set_value(&mut self, value: u8) {
        self.value = value;
    }
}

/// The POST-code register at 0x80 (also a common I/O delay port).
#[derive(Clone, Debug, Default)]
pub struct PostCode {
    last: u8,
    writes: u64,
}

impl PostCode {
    pub fn new() -> PostCode {
        PostCode::default()
    }

    /// Reads return the last code written (as on boards with a POST display latch).
    pub fn read(&self) -> u8 {
        self.last
    }

    pub fn write(&mut self, value: u8) {
        trace!(code = value, "POST code");
        self.last = value;
        self.writes += 1;
    }

    /// The last value written.
    pub fn last(&self) -> u8 {
        self.last
    }

    /// How many writes were seen (port 0x80 doubles as an I/O delay).
    pub fn writes(&self) -> u64 {
        self.writes
    }

    pub fn set(&mut self, last: u8, writes: u64) {
        self.last = last;
        self.writes = writes;
    }
}

/// QEMU's `isa-debug-exit`: a write of `v` (any width) requests exit status `(v << 1) | 1`.
#[derive(Clone, Debug, Default)]
pub struct DebugExit {
    actions: VecDeque<PlatformAction>,
}

impl DebugExit {
    pub fn new() -> DebugExit {
        DebugExit::default()
    }

    pub fn write(&mut self, value: u32) {
        self.actions.push_back(PlatformAction::DebugExit(value));
    }

    pub fn take_action(&mut self) -> Option<PlatformAction> {
        self.actions.pop_front()
    }

    /// The exit status QEMU uses for a written value.
    pub fn exit_status(value: u32) -> i32 {
        ((value << 1) | 1) as i32
    }
}

/// The reset control register at 0xCF9.
#[derive(Clone, Debug, Default)]
pub struct ResetControl {
    value: u8,
    actions: VecDeque<PlatformAction>,
}

impl ResetControl {
    pub fn new() -> ResetControl {
        ResetControl::default()
    }

    /// RST_CPU is self-clearing and reads 0.
    pub fn read(&self) -> u8 {
        self.value
    }

    /// Writing RST_CPU resets: Linux's `reboot=pci` writes SYS_RST, then SYS_RST | RST_CPU.
    /// A soft reset (RST_CPU without SYS_RST, a CPU INIT on real chipsets) is also modelled as
    /// a full reset, as QEMU does.
    pub fn write(&mut self, value: u8) {
        if value & RCR_RST_CPU != 0 {
            self.actions.push_back(PlatformAction::Reset);
        }
        self.value = value & (RCR_SYS_RST | RCR_FULL_RST);
    }

    pub fn take_action(&mut self) -> Option<PlatformAction> {
        self.actions.pop_front()
    }

    pub fn set_value(&mut self, value: u8) {
        self.value = value & (RCR_SYS_RST | RCR_FULL_RST);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_b_bits() {
        let mut b = PortB::new();
        assert!(b.write(!PORTB_SPEAKER));
        assert_eq!(b.value(), 0x0D);
        assert!(!b.speaker_enabled());
        // Read-only bits come from the PIT and the clock.
        assert_eq!(b.read(false, 0), 0x0D);
        assert_eq!(b.read(true, 0), 0x0D | PORTB_T2_OUT);
        assert_eq!(b.read(false, REFRESH_TOGGLE_NS), 0x0D | PORTB_REFRESH);
        assert_eq!(b.read(false, 2 * REFRESH_TOGGLE_NS), 0x0D);
        assert!(!b.write(PORTB_SPEAKER));
        assert!(b.speaker_enabled());
    }

    #[test]
    fn port92_a20_and_fast_reset() {
        let mut p = Port92::new();
        assert!(p.a20());
        assert_eq!(p.read(), P92_A20);
        p.write(0x00);
        assert_eq!(p.take_action(), Some(PlatformAction::SetA20(false)));
        assert_eq!(p.take_action(), None);
        p.write(P92_A20);
        assert_eq!(p.take_action(), Some(PlatformAction::SetA20(true)));
        p.write(P92_A20 | P92_FAST_RESET);
        assert_eq!(p.take_action(), Some(PlatformAction::SetA20(true)));
        assert_eq!(p.take_action(), Some(PlatformAction::Reset));
        // Bit 0 still set: writing it again is no new edge.
        p.write(P92_A20 | P92_FAST_RESET);
        assert_eq!(p.take_action(), Some(PlatformAction::SetA20(true)));
        assert_eq!(p.take_action(), None);
        p.reset();
        assert_eq!(p.read(), P92_A20);
    }

    #[test]
    fn post_code_remembers_last() {
        let mut p = PostCode::new();
        p.write(0x12);
        p.write(0x34);
        assert_eq!(p.last(), 0x34);
        assert_eq!(p.read(), 0x34);
        assert_eq!(p.writes(), 2);
    }

    #[test]
    fn debug_exit() {
        let mut d = DebugExit::new();
        d.write(0x10);
        assert_eq!(d.take_action(), Some(PlatformAction::DebugExit(0x10)));
        assert_eq!(DebugExit::exit_status(0x10), 0x21);
        assert_eq!(DebugExit::exit_status(0), 1);
    }

    #[test]
    fn reset_control_linux_sequence() {
        let mut r = ResetControl::new();
        r.write(RCR_SYS_RST);
        assert_eq!(r.take_action(), None);
        assert_eq!(r.read(), RCR_SYS_RST);
        r.write(RCR_SYS_RST | RCR_RST_CPU);
        assert_eq!(r.take_action(), Some(PlatformAction::Reset));
        assert_eq!(r.read(), RCR_SYS_RST, "RST_CPU self-clears");
        r.write(RCR_FULL_RST | RCR_SYS_RST | RCR_RST_CPU);
        assert_eq!(r.take_action(), Some(PlatformAction::Reset));
    }
}
