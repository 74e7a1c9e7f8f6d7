//! The 8254 programmable interval timer at ports 0x40–0x43, on a virtual clock.
//!
//! The counters run at 1.193182 MHz derived from guest nanoseconds handed in by the machine
//! ([`Pit::update`]); the device never reads host time. Counter values and OUT levels are
//! computed in closed form from the tick at which counting started, so no per-tick work is
//! done and the machine can run the CPU until [`Pit::next_deadline_ns`], then call
//! [`Pit::update`] which reports the rising edges of channel 0's OUT (IRQ 0).
//!
//! Implemented: modes 0–5 (6 and 7 alias 2 and 3), binary and BCD counting, lobyte / hibyte /
//! lobyte-then-hibyte access, the counter latch command, the read-back command with status
//! byte (OUT, null count, programmed mode), and the gate input (channels 0 and 1 are wired
//! high; channel 2's gate is port 0x61 bit 0, driven through [`Pit::set_gate`]).
//!
//! Simplifications (documented deviations from the datasheet):
//! * a count is loaded into the counting element immediately, not on the next CLK edge, so
//!   mode 0 OUT rises after N ticks instead of N + 1;
//! * writing a new count in modes 2/3 restarts the period at once instead of at the end of the
//!   current one; in modes 1/5 it waits for the next gate trigger;
//! * the first byte of a two-byte count does not stop a mode-0 counter;
//! * mode 3 with an odd count reads back like QEMU's model (`N - (2d mod N)`); its OUT is high
//!   for `(N + 1) / 2` ticks and low for `N / 2`;
//! * counts below 2 in modes 2 and 3 (illegal on hardware) are treated as 2.

use serde::{Deserialize, Serialize};
use tracing::warn;

/// First PIT port (counter 0); counters 1 and 2 follow, the control word register is +3.
pub const PIT_PORT: u16 = 0x40;
/// Offset of the control word register.
pub const PIT_CONTROL: u16 = 3;
/// Input clock of every counter, in Hz.
pub const PIT_FREQ_HZ: u64 = 1_193_182;
const NS_PER_SEC: u128 = 1_000_000_000;

// Control word (port 0x43).
/// Control word: BCD counting (binary when clear).
pub const CW_BCD: u8 = 1 << 0;
/// Control word bits 3:1: counter mode (0–5; 6 and 7 alias 2 and 3).
pub const CW_MODE_MASK: u8 = 0b0000_1110;
pub const CW_MODE_SHIFT: u8 = 1;
/// Control word bits 5:4: access mode (see `ACCESS_*`).
pub const CW_ACCESS_MASK: u8 = 0b0011_0000;
pub const CW_ACCESS_SHIFT: u8 = 4;
/// Control word bits 7:6: counter select (3 = read-back command).
pub const CW_SELECT_SHIFT: u8 = 6;
/// Access mode 0: counter latch command.
pub const ACCESS_LATCH: u8 = 0;
/// Access mode 1: low byte only.
pub const ACCESS_LO: u8 = 1;
/// Access mode 2: high byte only.
pub const ACCESS_HI: u8 = 2;
/// Access mode 3: low byte then high byte.
pub const ACCESS_WORD: u8 = 3;

// Read-back command (control word with select = 3).
/// Read-back: include counter 0.
pub const RB_COUNTER0: u8 = 1 << 1;
/// Read-back: include counter 1.
pub const RB_COUNTER1: u8 = 1 << 2;
/// Read-back: include counter 2.
pub const RB_COUNTER2: u8 = 1 << 3;
/// Read-back: do NOT latch the status (active low).
pub const RB_NO_STATUS: u8 = 1 << 4;
/// Read-back: do NOT latch the count (active low).
pub const RB_NO_COUNT: u8 = 1 << 5;

// Status byte (returned after a read-back with status latched).
/// Status: bits 5:0 repeat the control word (access, mode, BCD).
pub const STATUS_CONTROL_MASK: u8 = 0x3F;
/// Status: the last written count has not been loaded into the counting element yet.
pub const STATUS_NULL_COUNT: u8 = 1 << 6;
/// Status: current level of OUT.
pub const STATUS_OUT: u8 = 1 << 7;

/// Whole PIT ticks elapsed at guest time `ns`.
#[inline]
pub fn ns_to_ticks(ns: u64) -> u64 {
    (u128::from(ns) * u128::from(PIT_FREQ_HZ) / NS_PER_SEC) as u64
}

/// The first guest nanosecond at which [`ns_to_ticks`] reaches `ticks`.
#[inline]
pub fn ticks_to_ns(ticks: u64) -> u64 {
    let ns = (u128::from(ticks) * NS_PER_SEC).div_ceil(u128::from(PIT_FREQ_HZ));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

fn from_bcd16(v: u16) -> u32 {
    let d = |shift: u16| u32::from((v >> shift) & 0xF);
    d(12) * 1000 + d(8) * 100 + d(4) * 10 + d(0)
}

fn to_bcd16(v: u32) -> u16 {
    let v = v % 10_000;
    ((v / 1000) << 12 | (v / 100 % 10) << 8 | (v / 10 % 10) << 4 | (v % 10)) as u16
}

/// Snapshot of one counter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitChannelState {
    /// Control word bits 5:0 as programmed (reported in the status byte).
    pub control: u8,
    /// Counter mode 0–5.
    pub mode: u8,
    pub bcd: bool,
    /// `ACCESS_LO`, `ACCESS_HI` or `ACCESS_WORD`.
    pub access: u8,
    /// Raw count register as written.
    pub count_reg: u16,
    /// Effective initial count N (1..=65536 binary, 1..=10000 BCD).
    pub reload: u32,
    /// A count has been written since the control word.
    pub armed: bool,
    /// The counting element runs (modes 1/5: triggered; modes 2/3: gate high).
    pub counting: bool,
    /// PIT tick at which the elapsed count is 0.
    pub start_tick: u64,
    /// Modes 0/4 with the gate low: elapsed ticks frozen at this value.
    pub paused_elapsed: Option<u64>,
    pub gate: bool,
    pub null_count: bool,
    /// Word access: the next data write is the high byte.
    pub write_hi_next: bool,
    pub write_lo: u8,
    /// Word access: the next data read is the high byte.
    pub read_hi_next: bool,
    pub latched_count: Option<u16>,
    pub latched_status: Option<u8>,
}

impl PitChannelState {
    /// Power-on state as QEMU sets it: mode 3, count 65536, gate high except on counter 2,
    /// counting from tick 0.
    fn power_on(gate: bool) -> PitChannelState {
        PitChannelState {
            control: ACCESS_WORD << CW_ACCESS_SHIFT | 3 << CW_MODE_SHIFT,
            mode: 3,
            bcd: false,
            access: ACCESS_WORD,
            count_reg: 0,
            reload: 0x1_0000,
            armed: true,
            counting: gate,
            start_tick: 0,
            paused_elapsed: None,
            gate,
            null_count: false,
            write_hi_next: false,
            write_lo: 0,
            read_hi_next: false,
            latched_count: None,
            latched_status: None,
        }
    }
}

/// One 8254 counter.
#[derive(Clone, Debug)]
struct Channel {
    s: PitChannelState,
}

impl Channel {
    fn modulus(&self) -> u32 {
        if self.s.bcd {
            10_000
        } else {
            0x1_0000
        }
    }

    /// Ticks counted so far, `None` when the counting element is stopped.
    fn elapsed(&self, now: u64) -> Option<u64> {
        if !self.s.counting {
            return None;
        }
        Some(
            self.s
                .paused_elapsed
                .unwrap_or_else(|| now.saturating_sub(self.s.start_tick)),
        )
    }

    /// OUT after `d` counted ticks.
    fn out_at(&self, d: u64) -> bool {
        let n = u64::from(self.s.reload);
        match self.s.mode {
            0 | 1 => d >= n,
            2 => d % n != n - 1,
            3 => d % n < n.div_ceil(2),
            _ => d != n,
        }
    }

    fn out(&self, now: u64) -> bool {
        match self.elapsed(now) {
            Some(d) => self.out_at(d),
            // Mode 0 OUT is low from the control word until terminal count; every other mode
            // idles high (waiting for a count, a trigger, or held by a low gate).
            None => self.s.mode != 0,
        }
    }

    /// Rising edges of OUT in `(d0, d1]`.
    fn rises_between(&self, d0: u64, d1: u64) -> u64 {
        if d1 <= d0 {
            return 0;
        }
        let n = u64::from(self.s.reload);
        let once = |e: u64| u64::from(d0 < e && e <= d1);
        match self.s.mode {
            0 | 1 => once(n),
            2 | 3 => d1 / n - d0 / n,
            _ => once(n + 1),
        }
    }

    /// First rising edge of OUT after `d`.
    fn next_rise(&self, d: u64) -> Option<u64> {
        let n = u64::from(self.s.reload);
        match self.s.mode {
            0 | 1 => (d < n).then_some(n),
            2 | 3 => Some((d / n + 1) * n),
            _ => (d < n + 1).then_some(n + 1),
        }
    }

    /// First change of OUT (either direction) after `d`.
    fn next_transition(&self, d: u64) -> Option<u64> {
        let n = u64::from(self.s.reload);
        let base = d - d % n;
        match self.s.mode {
            0 | 1 => (d < n).then_some(n),
            2 => Some(if d % n < n - 1 {
                base + n - 1
            } else {
                base + n
            }),
            3 => {
                let high = n.div_ceil(2);
                Some(if d % n < high { base + high } else { base + n })
            }
            _ => {
                if d < n {
                    Some(n)
                } else {
                    (d < n + 1).then_some(n + 1)
                }
            }
        }
    }

    /// The value the counting element holds now, encoded as the guest reads it.
    fn counter(&self, now: u64) -> u16 {
        let n = self.s.reload;
        let m = self.modulus();
        let value = match self.elapsed(now) {
            None => n % m,
            Some(d) => {
                let v = match self.s.mode {
                    2 => n - (d % u64::from(n)) as u32,
                    3 => n - ((2 * u128::from(d)) % u128::from(n)) as u32,
                    _ => {
                        let d = (d % u64::from(m)) as u32;
                        n + m - d
                    }
                };
                v % m
            }
        };
        if self.s.bcd {
            to_bcd16(value)
        } else {
            value as u16
        }
    }

    fn status(&self, now: u64) -> u8 {
        let mut st = self.s.control & STATUS_CONTROL_MASK;
        if self.out(now) {
            st |= STATUS_OUT;
        }
        if self.s.null_count {
            st |= STATUS_NULL_COUNT;
        }
        st
    }

    fn latch_count(&mut self, now: u64) {
        if self.s.latched_count.is_none() {
            self.s.latched_count = Some(self.counter(now));
            self.s.read_hi_next = false;
        }
    }

    fn latch_status(&mut self, now: u64) {
        if self.s.latched_status.is_none() {
            self.s.latched_status = Some(self.status(now));
        }
    }

    fn set_control(&mut self, cw: u8) {
        let mut mode = (cw & CW_MODE_MASK) >> CW_MODE_SHIFT;
        if mode >= 6 {
            mode -= 4;
        }
        let s = &mut self.s;
        s.control = cw & STATUS_CONTROL_MASK;
        s.mode = mode;
        s.bcd = cw & CW_BCD != 0;
        s.access = (cw & CW_ACCESS_MASK) >> CW_ACCESS_SHIFT;
        s.armed = false;
        s.counting = false;
        s.paused_elapsed = None;
        s.null_count = true;
        s.write_hi_next = false;
        s.read_hi_next = false;
        s.latched_count = None;
        s.latched_status = None;
    }

    /// A complete count was written.
    fn load(&mut self, raw: u16, now: u64) {
        let s = &mut self.s;
        s.count_reg = raw;
        let mut n = if s.bcd {
            from_bcd16(raw)
        } else {
            u32::from(raw)
        };
        if n == 0 {
            n = if s.bcd { 10_000 } else { 0x1_0000 };
        }
        if matches!(s.mode, 2 | 3) && n < 2 {
            warn!(
                count = n,
                mode = s.mode,
                "8254: count below 2 in mode 2/3, using 2"
            );
            n = 2;
        }
        s.reload = n;
        s.armed = true;
        match s.mode {
            0 | 4 => {
                s.counting = true;
                s.start_tick = now;
                s.paused_elapsed = (!s.gate).then_some(0);
                s.null_count = false;
            }
            1 | 5 => {
                // Waits for a rising edge of the gate.
                s.counting = false;
                s.paused_elapsed = None;
                s.null_count = true;
            }
            _ => {
                s.counting = s.gate;
                s.start_tick = now;
                s.paused_elapsed = None;
                s.null_count = !s.gate;
            }
        }
    }

    fn set_gate(&mut self, level: bool, now: u64) {
        if level == self.s.gate {
            return;
        }
        let elapsed = self.elapsed(now);
        let s = &mut self.s;
        s.gate = level;
        if !s.armed {
            return;
        }
        match s.mode {
            0 | 4 => {
                if !level {
                    s.paused_elapsed = elapsed;
                } else if let Some(e) = s.paused_elapsed.take() {
                    s.start_tick = now - e.min(now);
                }
            }
            1 | 5 => {
                if level {
                    s.counting = true;
                    s.start_tick = now;
                    s.null_count = false;
                }
            }
            _ => {
                s.counting = level;
                if level {
                    s.start_tick = now;
                    s.null_count = false;
                }
            }
        }
    }

    fn read(&mut self, now: u64) -> u8 {
        if let Some(st) = self.s.latched_status.take() {
            return st;
        }
        let (value, latched) = match self.s.latched_count {
            Some(c) => (c, true),
            None => (self.counter(now), false),
        };
        let (byte, done) = match self.s.access {
            ACCESS_LO => (value as u8, true),
            ACCESS_HI => ((value >> 8) as u8, true),
            _ => {
                let hi = self.s.read_hi_next;
                self.s.read_hi_next = !hi;
                (if hi { (value >> 8) as u8 } else { value as u8 }, hi)
            }
        };
        if latched && done {
            self.s.latched_count = None;
        }
        byte
    }

    fn write(&mut self, value: u8, now: u64) {
        match self.s.access {
            ACCESS_LO => self.load(u16::from(value), now),
            ACCESS_HI => self.load(u16::from(value) << 8, now),
            _ => {
                if self.s.write_hi_next {
                    self.s.write_hi_next = false;
                    let raw = u16::from(self.s.write_lo) | u16::from(value) << 8;
                    self.load(raw, now);
                } else {
                    self.s.write_lo = value;
                    self.s.write_hi_next = true;
                }
            }
        }
    }
}

/// Snapshot of the PIT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitState {
    pub channels: [PitChannelState; 3],
    /// PIT tick of the last [`Pit::update`].
    pub now_tick: u64,
}

/// The 8254.
#[derive(Clone, Debug)]
pub struct Pit {
    ch: [Channel; 3],
    /// Time of the last update, in PIT ticks. All port accesses happen at this time.
    now: u64,
}

impl Default for Pit {
    fn default() -> Self {
        Pit::new()
    }
}

impl Pit {
    /// The PIT at power-on (guest time 0): every counter in mode 3 with count 65536, counter 0
    /// already running (IRQ 0 at 18.2 Hz), counter 2's gate low.
    pub fn new() -> Pit {
        Pit {
            ch: [
                Channel {
                    s: PitChannelState::power_on(true),
                },
                Channel {
                    s: PitChannelState::power_on(true),
                },
                Channel {
                    s: PitChannelState::power_on(false),
                },
            ],
            now: 0,
        }
    }

    /// Advance to guest time `now_ns` (earlier times are ignored) and return how many rising
    /// edges channel 0's OUT (IRQ 0) made since the last update.
    pub fn update(&mut self, now_ns: u64) -> u64 {
        let now = ns_to_ticks(now_ns);
        if now <= self.now {
            return 0;
        }
        let ch0 = &self.ch[0];
        let edges = match (ch0.elapsed(self.now), ch0.elapsed(now)) {
            (Some(d0), Some(d1)) => ch0.rises_between(d0, d1),
            _ => 0,
        };
        self.now = now;
        edges
    }

    /// Guest time of the next event the machine should wake up for: a rising edge of
    /// channel 0 (IRQ 0), or any OUT change of channel 2 while its gate is open (so a guest
    /// polling port 0x61 bit 5 sees progress even if the engine does not report time inside a
    /// run). `None` when nothing is scheduled.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        let ch0 = &self.ch[0];
        let irq = ch0
            .elapsed(self.now)
            .filter(|_| ch0.s.paused_elapsed.is_none())
            .and_then(|d| ch0.next_rise(d))
            .map(|e| ch0.s.start_tick.saturating_add(e));
        let ch2 = &self.ch[2];
        let out2 = ch2
            .elapsed(self.now)
            .filter(|_| ch2.s.paused_elapsed.is_none())
            .and_then(|d| ch2.next_transition(d))
            .map(|e| ch2.s.start_tick.saturating_add(e));
        [irq, out2].into_iter().flatten().min().map(ticks_to_ns)
    }

    /// OUT of `channel` (0–2) at the time of the last update.
    pub fn out(&self, channel: usize) -> bool {
        self.ch[channel].out(self.now)
    }

    /// Drive the gate input of `channel` (only counter 2's is wired on a PC: port 0x61 bit 0).
    pub fn set_gate(&mut self, channel: usize, level: bool) {
        self.ch[channel].set_gate(level, self.now);
    }

    pub fn gate(&self, channel: usize) -> bool {
        self.ch[channel].s.gate
    }

    /// Port read at `offset` 0–3 from [`PIT_PORT`], at the time of the last update.
    pub fn read(&mut self, offset: u16) -> u8 {
        match offset {
            0..=2 => self.ch[usize::from(offset)].read(self.now),
            _ => 0xFF, // the control word register is write-only
        }
    }

    /// Port write at `offset` 0–3 from [`PIT_PORT`], at the time of the last update.
    pub fn write(&mut self, offset: u16, value: u8) {
        let now = self.now;
        match offset {
            0..=2 => self.ch[usize::from(offset)].write(value, now),
            _ => {
                let select = value >> CW_SELECT_SHIFT;
                if select == 3 {
                    for (i, bit) in [RB_COUNTER0, RB_COUNTER1, RB_COUNTER2]
                        .into_iter()
                        .enumerate()
                    {
                        if value & bit == 0 {
                            continue;
                        }
                        if value & RB_NO_COUNT == 0 {
                            self.ch[i].latch_count(now);
                        }
                        if value & RB_NO_STATUS == 0 {
                            self.ch[i].latch_status(now);
                        }
                    }
                } else {
                    let ch = &mut self.ch[usize::from(select)];
                    if (value & CW_ACCESS_MASK) >> CW_ACCESS_SHIFT == ACCESS_LATCH {
                        ch.latch_count(now);
                    } else {
                        ch.set_control(value);
                    }
                }
            }
        }
    }

    pub fn state(&self) -> PitState {
        PitState {
            channels: [
                self.ch[0].s.clone(),
                self.ch[1].s.clone(),
                self.ch[2].s.clone(),
            ],
            now_tick: self.now,
        }
    }

    pub fn from_state(state: &PitState) -> Pit {
        let ch = |i: usize| Channel {
            s: state.channels[i].clone(),
        };
        Pit {
            ch: [ch(0), ch(1), ch(2)],
            now: state.now_tick,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CH0: u16 = 0;
    const CH2: u16 = 2;
    const CTRL: u16 = PIT_CONTROL;

    fn program(pit: &mut Pit, cw: u8, count: u16) {
        let ch = u16::from(cw >> 6);
        pit.write(CTRL, cw);
        match (cw & CW_ACCESS_MASK) >> CW_ACCESS_SHIFT {
            ACCESS_LO => pit.write(ch, count as u8),
            ACCESS_HI => pit.write(ch, (count >> 8) as u8),
            _ => {
                pit.write(ch, count as u8);
                pit.write(ch, (count >> 8) as u8);
            }
        }
    }

    fn read_word(pit: &mut Pit, ch: u16) -> u16 {
        let lo = pit.read(ch);
        let hi = pit.read(ch);
        u16::from(lo) | u16::from(hi) << 8
    }

    /// Advance to PIT tick `t` exactly.
    fn at_tick(pit: &mut Pit, t: u64) -> u64 {
        pit.update(ticks_to_ns(t))
    }

    #[test]
    fn tick_conversion_round_trips() {
        for t in [0, 1, 2, 1193, 65536, 1_193_182, 123_456_789_012] {
            let ns = ticks_to_ns(t);
            assert_eq!(ns_to_ticks(ns), t);
            if ns > 0 {
                assert_eq!(ns_to_ticks(ns - 1), t - 1, "tick {t} starts at {ns} ns");
            }
        }
        assert_eq!(ns_to_ticks(1_000_000_000), PIT_FREQ_HZ);
    }

    #[test]
    fn power_on_channel0_runs_at_18_2_hz() {
        let mut pit = Pit::new();
        // First edge after 65536 ticks: 54.925 ms.
        let first = pit.next_deadline_ns().unwrap();
        assert_eq!(first, ticks_to_ns(65536));
        assert!((54_925_000..54_926_000).contains(&first), "{first}");
        assert_eq!(pit.update(first - 1), 0);
        assert_eq!(pit.update(first), 1);
        assert_eq!(pit.next_deadline_ns(), Some(ticks_to_ns(2 * 65536)));
        // One second of guest time: 18 edges in total.
        assert_eq!(1 + pit.update(1_000_000_000), 18);
        assert!(!pit.gate(2));
    }

    #[test]
    fn mode2_rate_generator_period() {
        let mut pit = Pit::new();
        pit.update(5_000); // program at a non-zero time
        let t0 = pit.state().now_tick;
        // Linux's periodic PIT: mode 2, LATCH = 1193 for HZ=1000.
        program(&mut pit, 0x34, 1193);
        assert_eq!(pit.next_deadline_ns(), Some(ticks_to_ns(t0 + 1193)));
        assert!(pit.out(0));
        assert_eq!(at_tick(&mut pit, t0 + 1192), 0);
        // OUT is low during the last tick of each period.
        assert!(!pit.out(0));
        assert_eq!(at_tick(&mut pit, t0 + 1193), 1);
        assert!(pit.out(0));
        assert_eq!(pit.next_deadline_ns(), Some(ticks_to_ns(t0 + 2 * 1193)));
        // 10 more periods in one go.
        assert_eq!(at_tick(&mut pit, t0 + 11 * 1193 + 5), 10);
        // Counter reads count down from 1193 to 1 within the period.
        at_tick(&mut pit, t0 + 12 * 1193 + 100);
        assert_eq!(read_word(&mut pit, CH0), 1193 - 100);
    }

    #[test]
    fn counter_latch_freezes_the_read_value() {
        let mut pit = Pit::new();
        program(&mut pit, 0x34, 10_000);
        at_tick(&mut pit, 250);
        pit.write(CTRL, 0x00); // latch counter 0
        at_tick(&mut pit, 400);
        pit.write(CTRL, 0x00); // ignored: a latch is pending
        assert_eq!(read_word(&mut pit, CH0), 10_000 - 250);
        // Unlatched again: live value.
        assert_eq!(read_word(&mut pit, CH0), 10_000 - 400);
    }

    #[test]
    fn read_back_status_and_count() {
        let mut pit = Pit::new();
        pit.write(CTRL, 0x34);
        // Control word written, no count yet: null count set, OUT high (mode 2).
        pit.write(CTRL, 0xC0 | RB_NO_COUNT | RB_COUNTER0);
        assert_eq!(pit.read(CH0), STATUS_OUT | STATUS_NULL_COUNT | 0x34);
        pit.write(CH0, 0x00);
        pit.write(CH0, 0x10); // 0x1000
        at_tick(&mut pit, 0x10);
        // Latch status and count of counters 0 and 2.
        pit.write(CTRL, 0xC0 | RB_COUNTER0 | RB_COUNTER2);
        assert_eq!(pit.read(CH0), STATUS_OUT | 0x34, "status first");
        assert_eq!(read_word(&mut pit, CH0), 0x1000 - 0x10);
        // Counter 2 is still in its power-on mode 3 with the gate low.
        assert_eq!(pit.read(CH2), STATUS_OUT | 0x36);
        assert_eq!(read_word(&mut pit, CH2), 0);
    }

    #[test]
    fn mode0_on_channel2_with_gate() {
        let mut pit = Pit::new();
        // SeaBIOS / Linux TSC calibration: counter 2, mode 0, gate through port 0x61.
        program(&mut pit, 0xB0, 1000);
        assert!(!pit.out(2), "mode 0 OUT low after programming");
        at_tick(&mut pit, 5000);
        assert!(!pit.out(2), "gate low: not counting");
        assert_eq!(read_word(&mut pit, CH2), 1000);
        assert_eq!(
            pit.next_deadline_ns(),
            Some(ticks_to_ns(65536)),
            "only IRQ 0"
        );
        pit.set_gate(2, true);
        assert_eq!(pit.next_deadline_ns(), Some(ticks_to_ns(6000)));
        at_tick(&mut pit, 5600);
        assert_eq!(read_word(&mut pit, CH2), 400);
        pit.set_gate(2, false); // suspend
        at_tick(&mut pit, 9000);
        assert_eq!(read_word(&mut pit, CH2), 400);
        pit.set_gate(2, true);
        at_tick(&mut pit, 9399);
        assert!(!pit.out(2));
        at_tick(&mut pit, 9400);
        assert!(pit.out(2), "terminal count");
        // The counter keeps decrementing and wraps; OUT stays high.
        at_tick(&mut pit, 9401);
        assert_eq!(read_word(&mut pit, CH2), 0xFFFF);
        assert!(pit.out(2));
    }

    #[test]
    fn mode0_irq_edge_once() {
        let mut pit = Pit::new();
        program(&mut pit, 0x30, 500);
        assert_eq!(pit.next_deadline_ns(), Some(ticks_to_ns(500)));
        assert_eq!(at_tick(&mut pit, 10_000), 1);
        assert_eq!(pit.next_deadline_ns(), None);
        assert_eq!(at_tick(&mut pit, 20_000_000), 0);
    }

    #[test]
    fn lobyte_and_hibyte_access() {
        let mut pit = Pit::new();
        program(&mut pit, 0x14, 0x50); // counter 0, lobyte only, mode 2
        assert_eq!(pit.state().channels[0].reload, 0x50);
        at_tick(&mut pit, 0x10);
        assert_eq!(pit.read(CH0), 0x40);
        assert_eq!(pit.read(CH0), 0x40, "no flip-flop in lobyte mode");
        program(&mut pit, 0x24, 0x0200); // hibyte only
        assert_eq!(pit.state().channels[0].reload, 0x200);
        assert_eq!(pit.read(CH0), 0x02);
    }

    #[test]
    fn bcd_counting() {
        let mut pit = Pit::new();
        program(&mut pit, 0x35, 0x0100); // mode 2, BCD, count 100
        assert_eq!(pit.state().channels[0].reload, 100);
        at_tick(&mut pit, 1);
        assert_eq!(read_word(&mut pit, CH0), 0x0099);
        assert_eq!(at_tick(&mut pit, 300), 3);
        // BCD count 0 means 10000.
        program(&mut pit, 0x31, 0x0000);
        assert_eq!(pit.state().channels[0].reload, 10_000);
        let t = pit.state().now_tick;
        at_tick(&mut pit, t + 1);
        assert_eq!(read_word(&mut pit, CH0), 0x9999);
    }

    #[test]
    fn mode3_square_wave_duty() {
        let mut pit = Pit::new();
        program(&mut pit, 0x36, 10);
        for t in 0..5 {
            at_tick(&mut pit, t);
            assert!(pit.out(0), "tick {t}");
        }
        for t in 5..10 {
            at_tick(&mut pit, t);
            assert!(!pit.out(0), "tick {t}");
        }
        assert_eq!(at_tick(&mut pit, 10), 1);
        assert!(pit.out(0));
        // Odd count: high 4, low 3.
        program(&mut pit, 0x36, 7);
        let t0 = pit.state().now_tick;
        at_tick(&mut pit, t0 + 3);
        assert!(pit.out(0));
        at_tick(&mut pit, t0 + 4);
        assert!(!pit.out(0));
    }

    #[test]
    fn mode4_software_strobe() {
        let mut pit = Pit::new();
        // Linux's one-shot clockevent programs mode 4 (0x38).
        program(&mut pit, 0x38, 100);
        at_tick(&mut pit, 99);
        assert!(pit.out(0));
        at_tick(&mut pit, 100);
        assert!(!pit.out(0), "one-tick strobe at terminal count");
        assert_eq!(pit.next_deadline_ns(), Some(ticks_to_ns(101)));
        assert_eq!(at_tick(&mut pit, 101), 1);
        assert!(pit.out(0));
        assert_eq!(pit.next_deadline_ns(), None);
    }

    #[test]
    fn mode1_hardware_one_shot_on_gate() {
        let mut pit = Pit::new();
        program(&mut pit, 0xB2, 10);
        assert!(pit.out(2));
        at_tick(&mut pit, 50);
        assert!(pit.out(2), "waits for a trigger");
        pit.set_gate(2, true);
        at_tick(&mut pit, 51);
        assert!(!pit.out(2));
        at_tick(&mut pit, 60);
        assert!(pit.out(2));
        // Retrigger.
        pit.set_gate(2, false);
        pit.set_gate(2, true);
        assert!(!pit.out(2));
    }

    #[test]
    fn mode2_gate_low_holds_out_high_and_reloads() {
        let mut pit = Pit::new();
        pit.set_gate(2, true);
        program(&mut pit, 0xB4, 100);
        at_tick(&mut pit, 99);
        assert!(!pit.out(2));
        pit.set_gate(2, false);
        assert!(pit.out(2), "gate low forces OUT high");
        at_tick(&mut pit, 500);
        pit.set_gate(2, true);
        at_tick(&mut pit, 550);
        assert_eq!(
            read_word(&mut pit, CH2),
            50,
            "restarted from the full count"
        );
    }

    #[test]
    fn time_does_not_go_backwards() {
        let mut pit = Pit::new();
        pit.update(1_000_000);
        assert_eq!(pit.update(500), 0);
        assert_eq!(pit.state().now_tick, ns_to_ticks(1_000_000));
    }

    #[test]
    fn state_round_trip() {
        let mut pit = Pit::new();
        program(&mut pit, 0x34, 1193);
        at_tick(&mut pit, 777);
        let mut copy = Pit::from_state(&pit.state());
        assert_eq!(copy.state(), pit.state());
        assert_eq!(read_word(&mut copy, CH0), read_word(&mut pit, CH0));
    }
}
