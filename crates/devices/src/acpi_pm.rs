//! ACPI fixed-hardware power-management registers at I/O ports (the FADT points at them):
//!
//! | port                 | register                                   |
//! |----------------------|--------------------------------------------|
//! | [`PM1A_EVT_PORT`]    | PM1a status (word) and, at +2, enable (word) |
//! | [`PM1A_CNT_PORT`]    | PM1a control (word)                        |
//! | [`PM_TMR_PORT`]      | PM timer (dword, 32-bit, 3.579545 MHz)     |
//!
//! The machine boots in ACPI mode (SCI_EN set; the FADT has no SMI command port). Writing
//! SLP_EN with SLP_TYP = [`SLP_TYP_S5`] (the `_S5` value in the DSDT) powers the machine off;
//! other sleep types are not implemented and ignored with a warning. The SCI (IRQ
//! [`SCI_IRQ`]) is asserted while any enabled status bit is set.

use crate::platform::PlatformAction;
use serde::{Deserialize, Serialize};
use tracing::warn;

/// First port of the block.
pub const ACPI_PM_BASE: u16 = 0x600;
/// Ports claimed from [`ACPI_PM_BASE`]: event block (4), control (2, padded to 4), timer (4).
pub const ACPI_PM_PORTS: u16 = 12;
/// PM1a event block: status at +0, enable at +2.
pub const PM1A_EVT_PORT: u16 = ACPI_PM_BASE;
/// Length of the PM1 event block.
pub const PM1_EVT_LEN: u8 = 4;
/// PM1a control block.
pub const PM1A_CNT_PORT: u16 = ACPI_PM_BASE + 4;
/// Length of the PM1 control block.
pub const PM1_CNT_LEN: u8 = 2;
/// PM timer.
pub const PM_TMR_PORT: u16 = ACPI_PM_BASE + 8;
/// Length of the PM timer block.
pub const PM_TMR_LEN: u8 = 4;
/// PM timer frequency.
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// System control interrupt line (ISA IRQ 9, level-triggered, active high in the MADT).
pub const SCI_IRQ: u8 = 9;
/// SLP_TYP value of S5 (soft off), as the DSDT's `_S5` package reports it.
pub const SLP_TYP_S5: u16 = 5;

// PM1 status / enable bits.
/// PM1 status bit 0 / enable bit 0: PM timer carry (bit 31 of the timer toggled).
pub const PM1_TMR: u16 = 1 << 0;
/// PM1 status bit 4: bus master status.
pub const PM1_BM_STS: u16 = 1 << 4;
/// PM1 status / enable bit 5: global (BIOS lock release) event.
pub const PM1_GBL: u16 = 1 << 5;
/// PM1 status / enable bit 8: power button.
pub const PM1_PWRBTN: u16 = 1 << 8;
/// PM1 status / enable bit 9: sleep button.
pub const PM1_SLPBTN: u16 = 1 << 9;
/// PM1 status / enable bit 10: RTC alarm.
pub const PM1_RTC: u16 = 1 << 10;
/// PM1 status bit 15: wake status.
pub const PM1_WAK_STS: u16 = 1 << 15;
const PM1_EN_WRITABLE: u16 = PM1_TMR | PM1_GBL | PM1_PWRBTN | PM1_SLPBTN | PM1_RTC;

// PM1 control bits.
/// PM1 control bit 0: SCI enable (ACPI mode); read-only 1 here.
pub const PM1_CNT_SCI_EN: u16 = 1 << 0;
/// PM1 control bit 1: bus-master reload.
pub const PM1_CNT_BM_RLD: u16 = 1 << 1;
/// PM1 control bit 2: global release (write-only).
pub const PM1_CNT_GBL_RLS: u16 = 1 << 2;
/// PM1 control bits 12:10: sleep type.
pub const PM1_CNT_SLP_TYP_MASK: u16 = 7 << 10;
/// Shift of the sleep type field.
pub const PM1_CNT_SLP_TYP_SHIFT: u16 = 10;
/// PM1 control bit 13: sleep enable (write-only): enter the SLP_TYP state.
pub const PM1_CNT_SLP_EN: u16 = 1 << 13;

/// Convert guest ns to PM timer ticks.
pub fn ns_to_pm_ticks(ns: u64) -> u64 {
    (u128::from(ns) * u128::from(PM_TIMER_HZ) / 1_000_000_000) as u64
}

/// Snapshot of the PM registers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcpiPmState {
    pub status: u16,
    pub enable: u16,
    pub control: u16,
    /// Bit 31 of the PM timer when the carry status was last cleared.
    pub timer_msb_seen: bool,
}

/// The PM1a event/control blocks and the PM timer.
#[derive(Clone, Debug)]
pub struct AcpiPm {
    s: AcpiPmState,
    actions: Vec<PlatformAction>,
}

impl Default for AcpiPm {
    fn default() -> Self {
        AcpiPm::new()
    }
}

impl AcpiPm {
    pub fn new() -> AcpiPm {
        AcpiPm {
            s: AcpiPmState {
                control: PM1_CNT_SCI_EN,
                ..Default::default()
            },
            actions: Vec::new(),
        }
    }

    pub fn state(&self) -> AcpiPmState {
        self.s.clone()
    }

    pub fn from_state(s: &AcpiPmState) -> AcpiPm {
        AcpiPm {
            s: s.clone(),
            actions: Vec::new(),
        }
    }

    /// The PM timer value at guest time `now_ns` (32 bits).
    pub fn timer(now_ns: u64) -> u32 {
        ns_to_pm_ticks(now_ns) as u32
    }

    fn update_timer_status(&mut self, now_ns: u64) {
        let msb = Self::timer(now_ns) & (1 << 31) != 0;
        if msb != self.s.timer_msb_seen {
            self.s.status |= PM1_TMR;
        }
    }

    /// The SCI level: an enabled status bit is set.
    pub fn sci_level(&self) -> bool {
        self.s.status & self.s.enable & PM1_EN_WRITABLE != 0
    }

    /// Raise the power-button event (PWRBTN_STS).
    pub fn press_power_button(&mut self) {
        self.s.status |= PM1_PWRBTN;
    }

    pub fn take_action(&mut self) -> Option<PlatformAction> {
        (!self.actions.is_empty()).then(|| self.actions.remove(0))
    }

    /// Read `size` bytes at `offset` from [`ACPI_PM_BASE`].
    pub fn read(&mut self, offset: u16, size: u8, now_ns: u64) -> u32 {
        self.update_timer_status(now_ns);
        let mut bytes = [0u8; 12];
        bytes[0..2].copy_from_slice(&self.s.status.to_le_bytes());
        bytes[2..4].copy_from_slice(&self.s.enable.to_le_bytes());
        bytes[4..6].copy_from_slice(&self.s.control.to_le_bytes());
        bytes[8..12].copy_from_slice(&Self::timer(now_ns).to_le_bytes());
        (0..usize::from(size)).fold(0u32, |acc, i| {
            let b = bytes.get(usize::from(offset) + i).copied().unwrap_or(0xFF);
            acc | u32::from(b) << (8 * i)
        })
    }

    /// Write `size` bytes at `offset` from [`ACPI_PM_BASE`].
    pub fn write(&mut self, offset: u16, size: u8, value: u32, now_ns: u64) {
        self.update_timer_status(now_ns);
        for i in 0..u16::from(size) {
            let byte = (value >> (8 * i)) as u8;
            match offset + i {
                // Status: write 1 to clear.
                0 | 1 => {
                    let mask = u16::from(byte) << (8 * (offset + i));
                    if mask & PM1_TMR != 0 {
                        self.s.timer_msb_seen = Self::timer(now_ns) & (1 << 31) != 0;
                    }
                    self.s.status &= !mask;
                }
                2 | 3 => {
                    let shift = 8 * (offset + i - 2);
                    let keep = self.s.enable & !(0xFF << shift);
                    self.s.enable = (keep | u16::from(byte) << shift) & PM1_EN_WRITABLE;
                }
                4 | 5 => {
                    let shift = 8 * (offset + i - 4);
                    let keep = self.s.control & !(0xFF << shift);
                    let v = keep | u16::from(byte) << shift;
                    // Only act on the complete register (the high byte holds SLP_EN).
                    if offset + i == 5 || size == 1 {
                        self.write_control(v);
                    } else {
                        self.s.control = v;
                    }
                }
                p => warn!(
                    port = format_args!("{:#x}", ACPI_PM_BASE + p),
                    "ACPI PM: write to a read-only or unimplemented port ignored"
                ),
            }
        }
    }

    fn write_control(&mut self, v: u16) {
        let slp_typ = (v & PM1_CNT_SLP_TYP_MASK) >> PM1_CNT_SLP_TYP_SHIFT;
        self.s.control = (v & (PM1_CNT_BM_RLD | PM1_CNT_SLP_TYP_MASK)) | PM1_CNT_SCI_EN;
        if v & PM1_CNT_SLP_EN != 0 {
            if slp_typ == SLP_TYP_S5 {
                self.actions.push(PlatformAction::PowerOff);
            } else {
                warn!(
                    slp_typ,
                    "ACPI PM: sleep state not implemented; SLP_EN ignored"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pm_timer_runs_at_3_58_mhz() {
        let mut pm = AcpiPm::new();
        assert_eq!(pm.read(8, 4, 0), 0);
        assert_eq!(pm.read(8, 4, 1_000_000_000), 3_579_545);
        let a = pm.read(8, 4, 10_000);
        let b = pm.read(8, 4, 20_000);
        assert_eq!(b - a, 36, "~35.8 ticks per 10 µs");
        // 32-bit wrap after ~1200 s.
        let wrap_ns = (1u64 << 32) * 1_000_000_000 / PM_TIMER_HZ + 1;
        assert!(pm.read(8, 4, wrap_ns) < 10);
    }

    #[test]
    fn sci_en_set_and_power_off_on_s5() {
        let mut pm = AcpiPm::new();
        assert_eq!(pm.read(4, 2, 0), u32::from(PM1_CNT_SCI_EN));
        pm.write(
            4,
            2,
            u32::from(3 << PM1_CNT_SLP_TYP_SHIFT | PM1_CNT_SLP_EN),
            0,
        );
        assert_eq!(pm.take_action(), None, "S3 not implemented");
        pm.write(4, 2, u32::from(SLP_TYP_S5 << 10), 0);
        assert_eq!(pm.take_action(), None, "SLP_TYP alone does not sleep");
        assert_eq!(
            pm.read(4, 2, 0),
            u32::from(SLP_TYP_S5 << 10 | PM1_CNT_SCI_EN)
        );
        pm.write(4, 2, u32::from(SLP_TYP_S5 << 10 | PM1_CNT_SLP_EN), 0);
        assert_eq!(pm.take_action(), Some(PlatformAction::PowerOff));
        assert_eq!(
            pm.read(4, 2, 0) & u32::from(PM1_CNT_SLP_EN),
            0,
            "write-only"
        );
        // Byte writes: low byte then high byte with SLP_EN.
        pm.write(4, 1, 0, 0);
        pm.write(5, 1, u32::from((SLP_TYP_S5 << 10 | PM1_CNT_SLP_EN) >> 8), 0);
        assert_eq!(pm.take_action(), Some(PlatformAction::PowerOff));
    }

    #[test]
    fn status_write_one_to_clear_and_sci() {
        let mut pm = AcpiPm::new();
        pm.press_power_button();
        assert!(!pm.sci_level());
        pm.write(2, 2, u32::from(PM1_PWRBTN), 0);
        assert!(pm.sci_level());
        assert_eq!(pm.read(0, 4, 0), u32::from(PM1_PWRBTN) * 0x1_0001);
        pm.write(0, 2, u32::from(PM1_PWRBTN), 0);
        assert!(!pm.sci_level());
        assert_eq!(pm.read(0, 2, 0), 0);
    }

    #[test]
    fn timer_carry_status() {
        let mut pm = AcpiPm::new();
        let half = (1u64 << 31) * 1_000_000_000 / PM_TIMER_HZ + 1;
        assert_eq!(pm.read(0, 2, half - 1000) & u32::from(PM1_TMR), 0);
        assert_ne!(pm.read(0, 2, half) & u32::from(PM1_TMR), 0);
        pm.write(0, 2, u32::from(PM1_TMR), half);
        assert_eq!(pm.read(0, 2, half + 1) & u32::from(PM1_TMR), 0);
        let s = pm.state();
        assert_eq!(AcpiPm::from_state(&s).state(), s);
    }
}
