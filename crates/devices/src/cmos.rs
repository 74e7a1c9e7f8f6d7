//! The MC146818 real-time clock and its 128 bytes of CMOS RAM at ports 0x70 (index; bit 7 of
//! a write masks NMI) and 0x71 (data).
//!
//! The clock registers (0x00–0x09 and the century byte 0x32) are the source of truth, as on
//! the chip: they are set from a Unix start time at construction and advanced once per guest
//! second by [`Cmos::update`], in BCD or binary per register B, 12- or 24-hour. Guest time comes
//! in as nanoseconds from the machine; the device never reads host time.
//!
//! Implemented: registers A–D, the divider chain (DV bits; `11x` holds it in reset and the
//! first update follows 500 ms after release), rate select for the periodic interrupt
//! (2 Hz – 8192 Hz, rates 1 and 2 being 256 and 128 Hz as on the chip), the update-in-progress
//! bit during the last 244 µs before each update, the SET bit (updates inhibited, UIE cleared),
//! alarm registers with "don't care" values (0xC0–0xFF), periodic / alarm / update-ended flags
//! in register C with IRQF, and IRQ 8 as a level that stays high until register C is read.
//!
//! Deviations: changing the data mode or 12/24-hour bit in register B re-encodes the clock and
//! alarm registers in the new format (the chip would leave them garbled until rewritten; QEMU
//! keeps them readable too). Daylight-saving (B.DSE) and the square-wave pin (B.SQWE) are
//! accepted and ignored. The divider is assumed to run from a 32.768 kHz crystal whatever the DV
//! bits say.

use serde::{Deserialize, Serialize};

/// Index port; bit 7 of a write disables NMI.
pub const CMOS_INDEX_PORT: u16 = 0x70;
/// Data port.
pub const CMOS_DATA_PORT: u16 = 0x71;
/// Bit 7 of an index write: NMI disabled.
pub const NMI_DISABLE: u8 = 0x80;
/// Size of the CMOS RAM including the clock registers.
pub const CMOS_SIZE: usize = 128;

// Clock registers.
pub const REG_SECONDS: u8 = 0x00;
pub const REG_SECONDS_ALARM: u8 = 0x01;
pub const REG_MINUTES: u8 = 0x02;
pub const REG_MINUTES_ALARM: u8 = 0x03;
pub const REG_HOURS: u8 = 0x04;
pub const REG_HOURS_ALARM: u8 = 0x05;
/// Day of week, 1 = Sunday.
pub const REG_DAY_OF_WEEK: u8 = 0x06;
pub const REG_DAY_OF_MONTH: u8 = 0x07;
pub const REG_MONTH: u8 = 0x08;
/// Year within the century (0–99).
pub const REG_YEAR: u8 = 0x09;
pub const REG_A: u8 = 0x0A;
pub const REG_B: u8 = 0x0B;
pub const REG_C: u8 = 0x0C;
pub const REG_D: u8 = 0x0D;

// PC BIOS CMOS layout (as QEMU fills it for SeaBIOS).
/// Shutdown status byte (why the BIOS was re-entered after a reset).
pub const REG_SHUTDOWN_STATUS: u8 = 0x0F;
/// Floppy drive types (high nibble drive A, low nibble drive B; 0 = none).
pub const REG_FLOPPY_TYPES: u8 = 0x10;
/// Hard disk types (0 = none).
pub const REG_HARD_DISK_TYPES: u8 = 0x12;
/// Equipment byte: bit 0 floppy present, bit 1 FPU, bit 2 PS/2 mouse, bits 5:4 display
/// (00 = EGA/VGA), bits 7:6 floppy count − 1.
pub const REG_EQUIPMENT: u8 = 0x14;
/// Equipment: math coprocessor present.
pub const EQUIPMENT_FPU: u8 = 1 << 1;
/// Equipment: PS/2 mouse port present (QEMU sets it).
pub const EQUIPMENT_PS2_MOUSE: u8 = 1 << 2;
/// Base memory in KiB, low byte (high byte at +1).
pub const REG_BASE_MEM: u8 = 0x15;
/// Extended memory above 1 MiB in KiB (capped at 0xFFFF), low byte (high byte at +1).
pub const REG_EXT_MEM: u8 = 0x17;
/// Start of the bytes covered by the standard checksum.
pub const CHECKSUM_START: u8 = 0x10;
/// Big-endian sum of bytes 0x10..=0x2D.
pub const REG_CHECKSUM: u8 = 0x2E;
/// Extended memory again (as the POST measured it), same format as [`REG_EXT_MEM`].
pub const REG_EXT_MEM2: u8 = 0x30;
/// Century (BCD or binary per register B).
pub const REG_CENTURY: u8 = 0x32;
/// Memory between 16 MiB and 4 GiB in 64 KiB units (capped at 0xFFFF), low byte first.
pub const REG_MEM_ABOVE_16M: u8 = 0x34;
/// Memory above 4 GiB in 64 KiB units, three bytes, low byte first.
pub const REG_MEM_ABOVE_4G: u8 = 0x5B;
/// Number of CPUs minus one (SeaBIOS reads it when fw_cfg is absent).
pub const REG_SMP_COUNT: u8 = 0x5F;

// Register A.
/// Register A bits 3:0: rate select for the periodic interrupt (0 = off).
pub const REG_A_RS_MASK: u8 = 0x0F;
/// Register A bits 6:4: divider control (010 = normal operation from 32.768 kHz).
pub const REG_A_DV_MASK: u8 = 0x70;
/// Register A: DV2:DV1 both set hold the divider chain in reset.
pub const REG_A_DV_RESET: u8 = 0x60;
/// Register A: normal divider setting.
pub const REG_A_DV_NORMAL: u8 = 0x20;
/// Register A bit 7 (read-only): an update cycle is in progress or imminent.
pub const REG_A_UIP: u8 = 0x80;

// Register B.
/// Register B: daylight-saving enable (ignored).
pub const REG_B_DSE: u8 = 1 << 0;
/// Register B: 24-hour mode (12-hour with bit 7 of the hour = PM when clear).
pub const REG_B_24H: u8 = 1 << 1;
/// Register B: data mode binary (BCD when clear).
pub const REG_B_DM_BINARY: u8 = 1 << 2;
/// Register B: square-wave output enable (no pin here).
pub const REG_B_SQWE: u8 = 1 << 3;
/// Register B: update-ended interrupt enable.
pub const REG_B_UIE: u8 = 1 << 4;
/// Register B: alarm interrupt enable.
pub const REG_B_AIE: u8 = 1 << 5;
/// Register B: periodic interrupt enable.
pub const REG_B_PIE: u8 = 1 << 6;
/// Register B: SET, updates inhibited so software can write the clock.
pub const REG_B_SET: u8 = 1 << 7;

// Register C (read-only, cleared by reading).
/// Register C: update-ended flag.
pub const REG_C_UF: u8 = 1 << 4;
/// Register C: alarm flag.
pub const REG_C_AF: u8 = 1 << 5;
/// Register C: periodic flag.
pub const REG_C_PF: u8 = 1 << 6;
/// Register C: interrupt request flag (some enabled flag is set; the IRQ line is asserted).
pub const REG_C_IRQF: u8 = 1 << 7;

// Register D.
/// Register D: valid RAM and time (battery good).
pub const REG_D_VRT: u8 = 1 << 7;

/// Alarm registers at or above this value match every value.
pub const ALARM_DONT_CARE: u8 = 0xC0;
/// Hour register bit 7 in 12-hour mode: PM.
pub const HOUR_PM: u8 = 0x80;

const NS_PER_SEC: i128 = 1_000_000_000;
/// The divider chain's time base.
const RTC_HZ: i128 = 32_768;
/// UIP is set this many 32.768 kHz ticks (244 µs) before each update.
const UIP_TICKS: i128 = 8;
const SECS_PER_DAY: i64 = 86_400;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9).rem_euclid(12);
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A calendar time as the clock registers hold it (24-hour, binary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtcTime {
    pub year: i64,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    /// 1 = Sunday … 7 = Saturday.
    pub weekday: u8,
}

impl RtcTime {
    pub fn from_unix(secs: i64) -> RtcTime {
        let days = secs.div_euclid(SECS_PER_DAY);
        let sod = secs.rem_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        RtcTime {
            year,
            month: month as u8,
            day: day as u8,
            hour: (sod / 3600) as u8,
            minute: (sod / 60 % 60) as u8,
            second: (sod % 60) as u8,
            // 1970-01-01 was a Thursday (5).
            weekday: ((days + 4).rem_euclid(7) + 1) as u8,
        }
    }

    /// Seconds since the Unix epoch. Out-of-range fields (a guest can write anything) are
    /// carried arithmetically instead of rejected.
    pub fn to_unix(&self) -> i64 {
        days_from_civil(self.year, i64::from(self.month), i64::from(self.day)) * SECS_PER_DAY
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }
}

/// Snapshot of the RTC / CMOS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmosState {
    /// The 128 bytes, clock registers included (register C holds the pending flags).
    pub ram: Vec<u8>,
    /// Selected register (index port bits 6:0).
    pub index: u8,
    /// Index port bit 7.
    pub nmi_disabled: bool,
    /// Guest ns at which the divider chain started: updates happen at `epoch + k s`.
    pub divider_epoch_ns: i64,
    /// Guest ns of the last [`Cmos::update`].
    pub now_ns: u64,
}

/// The RTC with its CMOS RAM.
#[derive(Clone, Debug)]
pub struct Cmos {
    s: CmosState,
}

impl Cmos {
    /// A clock showing `start_unix` (UTC seconds) at guest time 0, in BCD 24-hour mode with
    /// the divider running (register A = 0x26, B = 0x02), all other RAM zero.
    pub fn new(start_unix: i64) -> Cmos {
        let mut ram = vec![0u8; CMOS_SIZE];
        ram[usize::from(REG_A)] = REG_A_DV_NORMAL | 0x06;
        ram[usize::from(REG_B)] = REG_B_24H;
        ram[usize::from(REG_D)] = REG_D_VRT;
        let mut cmos = Cmos {
            s: CmosState {
                ram,
                index: 0,
                nmi_disabled: false,
                divider_epoch_ns: 0,
                now_ns: 0,
            },
        };
        cmos.set_time(&RtcTime::from_unix(start_unix));
        cmos
    }

    /// A PC CMOS as QEMU fills it for SeaBIOS: clock at `start_unix`, no floppies, FPU and
    /// PS/2 mouse in the equipment byte, one CPU, and the memory-size bytes for
    /// `ram_below_4g` bytes of RAM under 4 GiB and `ram_above_4g` bytes from 4 GiB up.
    pub fn new_pc(start_unix: i64, ram_below_4g: u64, ram_above_4g: u64) -> Cmos {
        let mut cmos = Cmos::new(start_unix);
        cmos.set_byte(REG_FLOPPY_TYPES, 0);
        cmos.set_byte(REG_HARD_DISK_TYPES, 0);
        cmos.set_byte(REG_EQUIPMENT, EQUIPMENT_FPU | EQUIPMENT_PS2_MOUSE);
        cmos.set_byte(REG_SMP_COUNT, 0);
        cmos.set_memory_size(ram_below_4g, ram_above_4g);
        cmos
    }

    /// Fill the memory-size bytes and the standard checksum.
    pub fn set_memory_size(&mut self, ram_below_4g: u64, ram_above_4g: u64) {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        let set16 = |c: &mut Cmos, reg: u8, v: u64| {
            c.set_byte(reg, v as u8);
            c.set_byte(reg + 1, (v >> 8) as u8);
        };
        set16(self, REG_BASE_MEM, 640);
        let ext_kib = (ram_below_4g / KIB).saturating_sub(1024).min(0xFFFF);
        set16(self, REG_EXT_MEM, ext_kib);
        set16(self, REG_EXT_MEM2, ext_kib);
        let above_16m = (ram_below_4g.saturating_sub(16 * MIB) / (64 * KIB)).min(0xFFFF);
        set16(self, REG_MEM_ABOVE_16M, above_16m);
        let above_4g = (ram_above_4g / (64 * KIB)).min(0xFF_FFFF);
        for i in 0..3u8 {
            self.set_byte(REG_MEM_ABOVE_4G + i, (above_4g >> (8 * i)) as u8);
        }
        self.update_checksum();
    }

    /// Recompute the checksum over 0x10..=0x2D into 0x2E (high) / 0x2F (low).
    pub fn update_checksum(&mut self) {
        let sum: u16 = self.s.ram[usize::from(CHECKSUM_START)..usize::from(REG_CHECKSUM)]
            .iter()
            .map(|&b| u16::from(b))
            .sum();
        self.set_byte(REG_CHECKSUM, (sum >> 8) as u8);
        self.set_byte(REG_CHECKSUM + 1, sum as u8);
    }

    /// Raw CMOS byte (no side effects; for the machine and tests).
    pub fn byte(&self, index: u8) -> u8 {
        self.s.ram[usize::from(index & 0x7F)]
    }

    /// Set a raw CMOS byte (no side effects).
    pub fn set_byte(&mut self, index: u8, value: u8) {
        self.s.ram[usize::from(index & 0x7F)] = value;
    }

    fn reg(&self, r: u8) -> u8 {
        self.s.ram[usize::from(r)]
    }

    fn reg_mut(&mut self, r: u8) -> &mut u8 {
        &mut self.s.ram[usize::from(r)]
    }

    fn running(&self) -> bool {
        self.reg(REG_A) & REG_A_DV_RESET != REG_A_DV_RESET
    }

    fn encode(b: u8, v: u8) -> u8 {
        if b & REG_B_DM_BINARY != 0 {
            v
        } else {
            (v / 10) << 4 | (v % 10)
        }
    }

    fn decode(b: u8, v: u8) -> u8 {
        if b & REG_B_DM_BINARY != 0 {
            v
        } else {
            (v >> 4) * 10 + (v & 0x0F)
        }
    }

    fn encode_hour(b: u8, h: u8) -> u8 {
        if b & REG_B_24H != 0 {
            Self::encode(b, h)
        } else {
            let h12 = if h.is_multiple_of(12) { 12 } else { h % 12 };
            Self::encode(b, h12) | if h >= 12 { HOUR_PM } else { 0 }
        }
    }

    fn decode_hour(b: u8, v: u8) -> u8 {
        if b & REG_B_24H != 0 {
            Self::decode(b, v)
        } else {
            Self::decode(b, v & !HOUR_PM) % 12 + if v & HOUR_PM != 0 { 12 } else { 0 }
        }
    }

    fn time_with(&self, b: u8) -> RtcTime {
        let dec = |r| Self::decode(b, self.reg(r));
        RtcTime {
            year: i64::from(Self::decode(b, self.reg(REG_CENTURY))) * 100
                + i64::from(dec(REG_YEAR)),
            month: dec(REG_MONTH),
            day: dec(REG_DAY_OF_MONTH),
            hour: Self::decode_hour(b, self.reg(REG_HOURS)),
            minute: dec(REG_MINUTES),
            second: dec(REG_SECONDS),
            weekday: dec(REG_DAY_OF_WEEK),
        }
    }

    fn set_time_with(&mut self, b: u8, t: &RtcTime) {
        let year = t.year.rem_euclid(10_000);
        *self.reg_mut(REG_SECONDS) = Self::encode(b, t.second);
        *self.reg_mut(REG_MINUTES) = Self::encode(b, t.minute);
        *self.reg_mut(REG_HOURS) = Self::encode_hour(b, t.hour);
        *self.reg_mut(REG_DAY_OF_WEEK) = Self::encode(b, t.weekday);
        *self.reg_mut(REG_DAY_OF_MONTH) = Self::encode(b, t.day);
        *self.reg_mut(REG_MONTH) = Self::encode(b, t.month);
        *self.reg_mut(REG_YEAR) = Self::encode(b, (year % 100) as u8);
        *self.reg_mut(REG_CENTURY) = Self::encode(b, (year / 100) as u8);
    }

    /// The calendar time the clock registers show.
    pub fn time(&self) -> RtcTime {
        self.time_with(self.reg(REG_B))
    }

    /// Set the clock registers (in the current data/hour mode).
    pub fn set_time(&mut self, t: &RtcTime) {
        self.set_time_with(self.reg(REG_B), t);
    }

    /// The clock registers as Unix seconds.
    pub fn unix_time(&self) -> i64 {
        self.time().to_unix()
    }

    fn alarm_matches(&self) -> bool {
        [
            (REG_SECONDS_ALARM, REG_SECONDS),
            (REG_MINUTES_ALARM, REG_MINUTES),
            (REG_HOURS_ALARM, REG_HOURS),
        ]
        .into_iter()
        .all(|(a, r)| self.reg(a) >= ALARM_DONT_CARE || self.reg(a) == self.reg(r))
    }

    /// Run `n` update cycles: advance the clock by `n` seconds, setting UF and (on a match) AF.
    fn update_cycles(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        // Alarm matches repeat at most daily: only the last day's cycles can set a new flag
        // that the previous ones would not.
        let replay = n.min(SECS_PER_DAY as u64 + 1);
        let mut t = self.unix_time() + (n - replay) as i64;
        for _ in 0..replay {
            t += 1;
            self.set_time(&RtcTime::from_unix(t));
            *self.reg_mut(REG_C) |= REG_C_UF;
            if self.alarm_matches() {
                *self.reg_mut(REG_C) |= REG_C_AF;
            }
        }
    }

    /// 32.768 kHz ticks since the divider epoch at guest time `ns`.
    fn ticks(&self, ns: u64) -> i128 {
        ((i128::from(ns) - i128::from(self.s.divider_epoch_ns)) * RTC_HZ / NS_PER_SEC).max(0)
    }

    fn tick_to_ns(&self, tick: i128) -> u64 {
        let ns = i128::from(self.s.divider_epoch_ns) + (tick * NS_PER_SEC + RTC_HZ - 1) / RTC_HZ;
        u64::try_from(ns.max(0)).unwrap_or(u64::MAX)
    }

    /// Periodic interrupt period in 32.768 kHz ticks, `None` when rate select is 0.
    fn periodic_ticks(&self) -> Option<i128> {
        match self.reg(REG_A) & REG_A_RS_MASK {
            0 => None,
            rs @ 1..=2 => Some(1 << (rs + 6)),
            rs => Some(1 << (rs - 1)),
        }
    }

    /// Advance the clock to guest time `now_ns` (earlier times are ignored).
    pub fn update(&mut self, now_ns: u64) {
        if now_ns <= self.s.now_ns {
            return;
        }
        if self.running() {
            let t0 = self.ticks(self.s.now_ns);
            let t1 = self.ticks(now_ns);
            if let Some(p) = self.periodic_ticks() {
                if t1.div_euclid(p) > t0.div_euclid(p) {
                    *self.reg_mut(REG_C) |= REG_C_PF;
                }
            }
            let seconds = t1.div_euclid(RTC_HZ) - t0.div_euclid(RTC_HZ);
            if self.reg(REG_B) & REG_B_SET == 0 && seconds > 0 {
                self.update_cycles(seconds as u64);
            }
        }
        self.s.now_ns = now_ns;
    }

    /// Guest time of the next event that raises IRQ 8 (a periodic tick with PIE, an update
    /// with UIE or AIE), `None` when no interrupt is enabled.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        if !self.running() {
            return None;
        }
        let b = self.reg(REG_B);
        let t = self.ticks(self.s.now_ns);
        let periodic = self
            .periodic_ticks()
            .filter(|_| b & REG_B_PIE != 0)
            .map(|p| (t.div_euclid(p) + 1) * p);
        let update = (b & (REG_B_UIE | REG_B_AIE) != 0 && b & REG_B_SET == 0)
            .then(|| (t.div_euclid(RTC_HZ) + 1) * RTC_HZ);
        [periodic, update]
            .into_iter()
            .flatten()
            .min()
            .map(|tick| self.tick_to_ns(tick))
    }

    /// Register C as a read would return it (flags plus IRQF).
    fn reg_c(&self) -> u8 {
        let flags = self.reg(REG_C) & (REG_C_UF | REG_C_AF | REG_C_PF);
        let enabled = self.reg(REG_B) & (REG_B_UIE | REG_B_AIE | REG_B_PIE);
        if flags & enabled != 0 {
            flags | REG_C_IRQF
        } else {
            flags
        }
    }

    /// The IRQ 8 line (active while IRQF is set).
    pub fn irq_level(&self) -> bool {
        self.reg_c() & REG_C_IRQF != 0
    }

    /// True while NMI is masked through the index port.
    pub fn nmi_disabled(&self) -> bool {
        self.s.nmi_disabled
    }

    /// Port read at `offset` (0 = index, write-only, reads 0xFF; 1 = data), at the time of the
    /// last update.
    pub fn read(&mut self, offset: u16) -> u8 {
        if offset & 1 == 0 {
            return 0xFF;
        }
        match self.s.index {
            REG_A => {
                let mut a = self.reg(REG_A) & !REG_A_UIP;
                if self.running() && self.reg(REG_B) & REG_B_SET == 0 {
                    let t = self.ticks(self.s.now_ns);
                    if t.rem_euclid(RTC_HZ) >= RTC_HZ - UIP_TICKS {
                        a |= REG_A_UIP;
                    }
                }
                a
            }
            REG_C => {
                let c = self.reg_c();
                *self.reg_mut(REG_C) = 0;
                c
            }
            REG_D => self.reg(REG_D) | REG_D_VRT,
            i => self.reg(i),
        }
    }

    /// Port write at `offset` (0 = index and NMI mask, 1 = data), at the time of the last
    /// update.
    pub fn write(&mut self, offset: u16, value: u8) {
        if offset & 1 == 0 {
            self.s.index = value & 0x7F;
            self.s.nmi_disabled = value & NMI_DISABLE != 0;
            return;
        }
        match self.s.index {
            REG_A => {
                let was_running = self.running();
                *self.reg_mut(REG_A) = value & !REG_A_UIP;
                if !was_running && self.running() {
                    // The first update comes 500 ms after the divider leaves reset.
                    self.s.divider_epoch_ns = i64::try_from(self.s.now_ns)
                        .unwrap_or(i64::MAX)
                        .saturating_sub(500_000_000);
                }
            }
            REG_B => {
                let old = self.reg(REG_B);
                let mut new = value;
                if new & REG_B_SET != 0 {
                    new &= !REG_B_UIE;
                }
                if (old ^ new) & (REG_B_DM_BINARY | REG_B_24H) != 0 {
                    self.reencode(old, new);
                }
                *self.reg_mut(REG_B) = new;
            }
            REG_C | REG_D => {} // read-only
            i => *self.reg_mut(i) = value,
        }
    }

    /// Convert the clock and alarm registers from the format of register B `old` to `new`.
    fn reencode(&mut self, old: u8, new: u8) {
        let t = self.time_with(old);
        self.set_time_with(new, &t);
        for (reg, hour) in [
            (REG_SECONDS_ALARM, false),
            (REG_MINUTES_ALARM, false),
            (REG_HOURS_ALARM, true),
        ] {
            let v = self.reg(reg);
            if v >= ALARM_DONT_CARE {
                continue;
            }
            *self.reg_mut(reg) = if hour {
                Self::encode_hour(new, Self::decode_hour(old, v))
            } else {
                Self::encode(new, Self::decode(old, v))
            };
        }
    }

    pub fn state(&self) -> CmosState {
        self.s.clone()
    }

    pub fn from_state(state: &CmosState) -> Cmos {
        let mut s = state.clone();
        s.ram.resize(CMOS_SIZE, 0);
        Cmos { s }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn rd(c: &mut Cmos, reg: u8) -> u8 {
        c.write(0, reg);
        c.read(1)
    }

    fn wr(c: &mut Cmos, reg: u8, v: u8) {
        c.write(0, reg);
        c.write(1, v);
    }

    #[test]
    fn calendar_conversions() {
        for (secs, date) in [
            (0, (1970, 1, 1, 0, 0, 0, 5)),
            (1_709_251_198, (2024, 2, 29, 23, 59, 58, 5)),
            (946_684_799, (1999, 12, 31, 23, 59, 59, 6)),
            (946_684_800, (2000, 1, 1, 0, 0, 0, 7)),
            (1_749_995_130, (2025, 6, 15, 13, 45, 30, 1)),
        ] {
            let t = RtcTime::from_unix(secs);
            assert_eq!(
                (t.year, t.month, t.day, t.hour, t.minute, t.second, t.weekday),
                date
            );
            assert_eq!(t.to_unix(), secs);
        }
    }

    #[test]
    fn bcd_time_registers_from_start_time() {
        let mut c = Cmos::new(1_709_251_198); // 2024-02-29 23:59:58 UTC, Thursday
        assert_eq!(rd(&mut c, REG_A), 0x26);
        assert_eq!(rd(&mut c, REG_B), 0x02);
        assert_eq!(rd(&mut c, REG_D), 0x80);
        assert_eq!(rd(&mut c, REG_SECONDS), 0x58);
        assert_eq!(rd(&mut c, REG_MINUTES), 0x59);
        assert_eq!(rd(&mut c, REG_HOURS), 0x23);
        assert_eq!(rd(&mut c, REG_DAY_OF_WEEK), 0x05);
        assert_eq!(rd(&mut c, REG_DAY_OF_MONTH), 0x29);
        assert_eq!(rd(&mut c, REG_MONTH), 0x02);
        assert_eq!(rd(&mut c, REG_YEAR), 0x24);
        assert_eq!(rd(&mut c, REG_CENTURY), 0x20);
        // Two guest seconds later: leap-day rollover to 2024-03-01 00:00:00, Friday.
        c.update(SEC - 1);
        assert_eq!(rd(&mut c, REG_SECONDS), 0x58);
        c.update(2 * SEC);
        assert_eq!(rd(&mut c, REG_SECONDS), 0x00);
        assert_eq!(rd(&mut c, REG_MINUTES), 0x00);
        assert_eq!(rd(&mut c, REG_HOURS), 0x00);
        assert_eq!(rd(&mut c, REG_DAY_OF_MONTH), 0x01);
        assert_eq!(rd(&mut c, REG_MONTH), 0x03);
        assert_eq!(rd(&mut c, REG_DAY_OF_WEEK), 0x06);
        assert_eq!(c.unix_time(), 1_709_251_200);
        // A long jump (one year of guest time) lands on the right second.
        c.update(2 * SEC + 365 * 86_400 * SEC + 5 * SEC);
        assert_eq!(c.unix_time(), 1_709_251_200 + 365 * 86_400 + 5);
    }

    #[test]
    fn binary_and_12_hour_modes() {
        let mut c = Cmos::new(1_749_995_130); // 2025-06-15 13:45:30
        wr(&mut c, REG_B, REG_B_DM_BINARY); // binary, 12-hour
        assert_eq!(rd(&mut c, REG_SECONDS), 30);
        assert_eq!(rd(&mut c, REG_HOURS), HOUR_PM | 1);
        assert_eq!(rd(&mut c, REG_YEAR), 25);
        assert_eq!(rd(&mut c, REG_CENTURY), 20);
        wr(&mut c, REG_B, 0); // BCD, 12-hour
        assert_eq!(rd(&mut c, REG_HOURS), HOUR_PM | 0x01);
        assert_eq!(rd(&mut c, REG_MINUTES), 0x45);
        // Midnight and noon in 12-hour mode.
        c.set_time(&RtcTime::from_unix(946_684_800));
        assert_eq!(rd(&mut c, REG_HOURS), 0x12);
        c.set_time(&RtcTime::from_unix(946_684_800 + 12 * 3600));
        assert_eq!(rd(&mut c, REG_HOURS), HOUR_PM | 0x12);
        assert_eq!(c.time().hour, 12);
        wr(&mut c, REG_B, REG_B_24H | REG_B_DM_BINARY);
        assert_eq!(rd(&mut c, REG_HOURS), 12);
    }

    #[test]
    fn set_bit_inhibits_updates_and_guest_can_set_the_clock() {
        let mut c = Cmos::new(0);
        wr(&mut c, REG_B, REG_B_24H | REG_B_SET | REG_B_UIE);
        assert_eq!(rd(&mut c, REG_B), REG_B_24H | REG_B_SET, "SET clears UIE");
        wr(&mut c, REG_SECONDS, 0x10);
        wr(&mut c, REG_MINUTES, 0x20);
        wr(&mut c, REG_HOURS, 0x08);
        c.update(5 * SEC);
        assert_eq!(rd(&mut c, REG_SECONDS), 0x10, "frozen while SET");
        wr(&mut c, REG_B, REG_B_24H);
        c.update(7 * SEC);
        assert_eq!(rd(&mut c, REG_SECONDS), 0x12);
        assert_eq!(rd(&mut c, REG_MINUTES), 0x20);
        assert_eq!(rd(&mut c, REG_HOURS), 0x08);
    }

    #[test]
    fn update_in_progress_bit() {
        let mut c = Cmos::new(0);
        c.update(SEC / 2);
        assert_eq!(rd(&mut c, REG_A) & REG_A_UIP, 0);
        c.update(SEC - 300_000);
        assert_eq!(rd(&mut c, REG_A) & REG_A_UIP, 0);
        c.update(SEC - 200_000);
        assert_eq!(rd(&mut c, REG_A) & REG_A_UIP, REG_A_UIP);
        c.update(SEC);
        assert_eq!(rd(&mut c, REG_A) & REG_A_UIP, 0);
    }

    #[test]
    fn periodic_interrupt_at_1024_hz() {
        let mut c = Cmos::new(0);
        assert_eq!(c.next_deadline_ns(), None);
        // Linux rtc-cmos style: rate 6 (1024 Hz), PIE.
        wr(&mut c, REG_B, REG_B_24H | REG_B_PIE);
        let d = c.next_deadline_ns().unwrap();
        assert_eq!(d, 976_563, "1/1024 s, rounded up");
        c.update(d - 1);
        assert!(!c.irq_level());
        c.update(d);
        assert!(c.irq_level());
        assert_eq!(rd(&mut c, REG_C), REG_C_IRQF | REG_C_PF);
        assert!(!c.irq_level(), "reading C clears it");
        assert_eq!(rd(&mut c, REG_C), 0);
        assert_eq!(c.next_deadline_ns(), Some(1_953_125));
        // Rate 15: 2 Hz.
        wr(&mut c, REG_A, 0x2F);
        assert_eq!(c.next_deadline_ns(), Some(500_000_000));
        // PF is set even with PIE clear, but IRQF/IRQ stay low.
        wr(&mut c, REG_B, REG_B_24H);
        c.update(600_000_000);
        assert!(!c.irq_level());
        assert_eq!(rd(&mut c, REG_C), REG_C_PF);
    }

    #[test]
    fn update_ended_interrupt() {
        let mut c = Cmos::new(100);
        wr(&mut c, REG_A, REG_A_DV_NORMAL); // no periodic flag in the way
        wr(&mut c, REG_B, REG_B_24H | REG_B_UIE);
        assert_eq!(c.next_deadline_ns(), Some(SEC));
        c.update(SEC);
        assert!(c.irq_level());
        assert_eq!(rd(&mut c, REG_C), REG_C_IRQF | REG_C_UF);
        assert_eq!(c.unix_time(), 101);
    }

    #[test]
    fn alarm_interrupt() {
        let mut c = Cmos::new(1_709_251_198); // 23:59:58
        wr(&mut c, REG_A, REG_A_DV_NORMAL);
        wr(&mut c, REG_SECONDS_ALARM, 0x05);
        wr(&mut c, REG_MINUTES_ALARM, ALARM_DONT_CARE);
        wr(&mut c, REG_HOURS_ALARM, 0x00);
        wr(&mut c, REG_B, REG_B_24H | REG_B_AIE);
        c.update(6 * SEC); // 00:00:04
        assert!(!c.irq_level());
        assert_eq!(rd(&mut c, REG_C), REG_C_UF, "UF without UIE sets no IRQF");
        c.update(7 * SEC); // 00:00:05
        assert!(c.irq_level());
        assert_eq!(rd(&mut c, REG_C), REG_C_IRQF | REG_C_AF | REG_C_UF);
        c.update(8 * SEC);
        assert!(!c.irq_level());
        // The alarm also fires when it was passed inside a long jump.
        c.update(8 * SEC + 86_400 * SEC);
        assert_eq!(rd(&mut c, REG_C) & REG_C_AF, REG_C_AF);
    }

    #[test]
    fn divider_reset_holds_the_clock() {
        let mut c = Cmos::new(0);
        wr(&mut c, REG_A, 0x70 | 0x06); // divider in reset
        c.update(10 * SEC);
        assert_eq!(c.unix_time(), 0);
        wr(&mut c, REG_A, 0x26);
        c.update(10 * SEC + 499_000_000);
        assert_eq!(c.unix_time(), 0);
        c.update(10 * SEC + 500_000_000);
        assert_eq!(c.unix_time(), 1, "first update 500 ms after release");
    }

    #[test]
    fn index_port_nmi_mask_and_ram() {
        let mut c = Cmos::new(0);
        c.write(0, NMI_DISABLE | 0x40);
        assert!(c.nmi_disabled());
        c.write(1, 0xAB);
        c.write(0, 0x40);
        assert!(!c.nmi_disabled());
        assert_eq!(c.read(1), 0xAB);
        assert_eq!(c.read(0), 0xFF);
        // C and D are read-only.
        wr(&mut c, REG_D, 0);
        assert_eq!(rd(&mut c, REG_D), REG_D_VRT);
    }

    #[test]
    fn memory_size_bytes_small() {
        let c = Cmos::new_pc(0, 32 << 20, 0);
        let w = |r: u8| u16::from(c.byte(r)) | u16::from(c.byte(r + 1)) << 8;
        assert_eq!(c.byte(REG_FLOPPY_TYPES), 0);
        assert_eq!(c.byte(REG_EQUIPMENT), 0x06);
        assert_eq!(w(REG_BASE_MEM), 640);
        assert_eq!(w(REG_EXT_MEM), 31 * 1024);
        assert_eq!(w(REG_EXT_MEM2), 31 * 1024);
        assert_eq!(w(REG_MEM_ABOVE_16M), 256, "16 MiB in 64 KiB units");
        assert_eq!(c.byte(REG_MEM_ABOVE_4G), 0);
        assert_eq!(c.byte(REG_SMP_COUNT), 0);
        assert_eq!(c.byte(REG_CENTURY), 0x19);
        let sum: u16 = (0x10..0x2E).map(|i| u16::from(c.byte(i))).sum();
        assert_eq!(w(REG_CHECKSUM).swap_bytes(), sum);
    }

    #[test]
    fn memory_size_bytes_large() {
        // 128 MiB: extended memory (127 MiB in KiB) no longer fits and is capped.
        let c = Cmos::new_pc(0, 128 << 20, 0);
        let w = |r: u8| u16::from(c.byte(r)) | u16::from(c.byte(r + 1)) << 8;
        assert_eq!(w(REG_EXT_MEM), 0xFFFF);
        assert_eq!(w(REG_MEM_ABOVE_16M), 112 * 16);
        // 3 GiB below 4 GiB, 5 GiB above.
        let c = Cmos::new_pc(0, 3 << 30, 5 << 30);
        let w = |r: u8| u16::from(c.byte(r)) | u16::from(c.byte(r + 1)) << 8;
        assert_eq!(w(REG_EXT_MEM), 0xFFFF, "capped");
        assert_eq!(w(REG_EXT_MEM2), 0xFFFF);
        assert_eq!(w(REG_MEM_ABOVE_16M), (3072 - 16) * 16);
        let above =
            u32::from(c.byte(0x5B)) | u32::from(c.byte(0x5C)) << 8 | u32::from(c.byte(0x5D)) << 16;
        assert_eq!(u64::from(above), (5u64 << 30) / 65536);
        // Tiny RAM: nothing above 16 MiB.
        let c = Cmos::new_pc(0, 8 << 20, 0);
        assert_eq!(c.byte(REG_MEM_ABOVE_16M), 0);
        assert_eq!(c.byte(REG_EXT_MEM), ((7 * 1024) & 0xFF) as u8);
    }

    #[test]
    fn state_round_trip() {
        let mut c = Cmos::new(12345);
        c.update(3 * SEC);
        let copy = Cmos::from_state(&c.state());
        assert_eq!(copy.state(), c.state());
        assert_eq!(copy.unix_time(), 12348);
    }
}
