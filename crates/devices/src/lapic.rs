//! The local APIC of the single vCPU in xAPIC mode (MMIO at [`LAPIC_BASE`], 4 KiB): ID,
//! version, task/processor priority, EOI, logical destination, spurious-vector register,
//! the 256-bit ISR/TMR/IRR, the error status register, the local vector table, the
//! interrupt command register (self-IPIs), and the timer (one-shot and periodic).
//!
//! Interrupts accepted from the IOAPIC, self-IPIs, the timer and the error LVT land in IRR;
//! [`Lapic::deliverable`] gives the highest-priority vector whose priority class is above the
//! processor priority, [`Lapic::acknowledge`] moves it to ISR (the INTA cycle), and an EOI
//! clears the highest ISR bit and reports a level-triggered vector so the platform can
//! broadcast the EOI to the IOAPIC.
//!
//! The timer counts at [`TIMER_BASE_HZ`] (1 tick per guest ns before the divider) from the
//! platform's virtual clock: the current count is derived from `now_ns`, never stored. In
//! TSC-deadline mode the IA32_TSC_DEADLINE MSR ([`IA32_TSC_DEADLINE`], reached through
//! `Platform::write_msr`) arms it with an absolute deadline in guest ns (the interpreter
//! removes the guest's TSC offset; the TSC runs at 1 GHz).

use serde::{Deserialize, Serialize};
use tracing::warn;

/// Physical base of the xAPIC register page.
pub const LAPIC_BASE: u64 = 0xFEE0_0000;
/// Size of the register page.
pub const LAPIC_SIZE: u64 = 0x1000;
/// Timer input frequency before the divider: 1 GHz, one tick per guest nanosecond.
pub const TIMER_BASE_HZ: u64 = 1_000_000_000;

// Register offsets.
/// Local APIC ID (bits 31:24).
pub const REG_ID: u64 = 0x20;
/// Version register: version in bits 7:0, max LVT entry in 23:16.
pub const REG_VERSION: u64 = 0x30;
/// Task priority register (bits 7:0).
pub const REG_TPR: u64 = 0x80;
/// Arbitration priority register (read-only; reads as the PPR here).
pub const REG_APR: u64 = 0x90;
/// Processor priority register (read-only).
pub const REG_PPR: u64 = 0xA0;
/// End of interrupt (write-only).
pub const REG_EOI: u64 = 0xB0;
/// Remote read register (read-only, 0).
pub const REG_RRD: u64 = 0xC0;
/// Logical destination register (bits 31:24).
pub const REG_LDR: u64 = 0xD0;
/// Destination format register (model in bits 31:28, others read as ones).
pub const REG_DFR: u64 = 0xE0;
/// Spurious-interrupt vector register.
pub const REG_SVR: u64 = 0xF0;
/// In-service register, 8 dwords at 0x100..0x170.
pub const REG_ISR: u64 = 0x100;
/// Trigger-mode register, 8 dwords at 0x180..0x1F0.
pub const REG_TMR: u64 = 0x180;
/// Interrupt request register, 8 dwords at 0x200..0x270.
pub const REG_IRR: u64 = 0x200;
/// Error status register (write latches the accumulated errors).
pub const REG_ESR: u64 = 0x280;
/// LVT corrected machine-check interrupt.
pub const REG_LVT_CMCI: u64 = 0x2F0;
/// Interrupt command register, low dword (a write sends the IPI).
pub const REG_ICR_LOW: u64 = 0x300;
/// Interrupt command register, high dword (destination in bits 31:24).
pub const REG_ICR_HIGH: u64 = 0x310;
/// LVT timer.
pub const REG_LVT_TIMER: u64 = 0x320;
/// LVT thermal sensor.
pub const REG_LVT_THERMAL: u64 = 0x330;
/// LVT performance-monitoring counters.
pub const REG_LVT_PERF: u64 = 0x340;
/// LVT LINT0 (the 8259 INTR in virtual-wire mode).
pub const REG_LVT_LINT0: u64 = 0x350;
/// LVT LINT1 (NMI).
pub const REG_LVT_LINT1: u64 = 0x360;
/// LVT error.
pub const REG_LVT_ERROR: u64 = 0x370;
/// Timer initial count.
pub const REG_TIMER_INITIAL: u64 = 0x380;
/// Timer current count (read-only).
pub const REG_TIMER_CURRENT: u64 = 0x390;
/// Timer divide configuration (bits 0, 1 and 3).
pub const REG_TIMER_DIVIDE: u64 = 0x3E0;

/// The TSC-deadline MSR.
pub const IA32_TSC_DEADLINE: u32 = 0x6E0;

/// Version register value: integrated APIC version 0x14, 6 LVT entries (max index 5).
pub const LAPIC_VERSION: u32 = 0x0005_0014;

// Spurious-vector register bits.
/// SVR bits 7:0: the spurious vector.
pub const SVR_VECTOR_MASK: u32 = 0xFF;
/// SVR bit 8: APIC software enable.
pub const SVR_APIC_ENABLED: u32 = 1 << 8;
/// SVR bit 9: focus processor checking disabled.
pub const SVR_FOCUS_DISABLED: u32 = 1 << 9;
/// SVR bit 12: suppress EOI broadcast (not supported: version bit 24 is clear).
pub const SVR_SUPPRESS_EOI_BROADCAST: u32 = 1 << 12;
const SVR_WRITABLE: u32 = SVR_VECTOR_MASK | SVR_APIC_ENABLED | SVR_FOCUS_DISABLED;

// LVT bits.
/// LVT bits 7:0: vector.
pub const LVT_VECTOR_MASK: u32 = 0xFF;
/// LVT bits 10:8: delivery mode (not in the timer and error entries).
pub const LVT_DELIVERY_MODE_MASK: u32 = 0x700;
/// LVT bit 12: delivery status (read-only, always idle here).
pub const LVT_DELIVERY_PENDING: u32 = 1 << 12;
/// LVT bit 13: input pin polarity (LINT0/LINT1).
pub const LVT_POLARITY_LOW: u32 = 1 << 13;
/// LVT bit 14: remote IRR (LINT0/LINT1, read-only).
pub const LVT_REMOTE_IRR: u32 = 1 << 14;
/// LVT bit 15: trigger mode level (LINT0/LINT1).
pub const LVT_LEVEL: u32 = 1 << 15;
/// LVT bit 16: masked.
pub const LVT_MASKED: u32 = 1 << 16;
/// LVT timer bits 18:17: timer mode.
pub const LVT_TIMER_MODE_MASK: u32 = 3 << 17;
/// Timer mode: one-shot.
pub const TIMER_MODE_ONESHOT: u32 = 0;
/// Timer mode: periodic.
pub const TIMER_MODE_PERIODIC: u32 = 1 << 17;
/// Timer mode: TSC-deadline (armed through [`IA32_TSC_DEADLINE`]).
pub const TIMER_MODE_TSC_DEADLINE: u32 = 2 << 17;

// Delivery modes (LVT bits 10:8, ICR bits 10:8, IOAPIC redirection bits 10:8).
/// Fixed delivery.
pub const DM_FIXED: u32 = 0;
/// Lowest-priority delivery.
pub const DM_LOWEST: u32 = 1;
/// SMI.
pub const DM_SMI: u32 = 2;
/// NMI.
pub const DM_NMI: u32 = 4;
/// INIT.
pub const DM_INIT: u32 = 5;
/// Start-up IPI.
pub const DM_STARTUP: u32 = 6;
/// External interrupt: the vector comes from the 8259.
pub const DM_EXTINT: u32 = 7;

// ICR low bits.
/// ICR bit 11: logical destination mode.
pub const ICR_DEST_LOGICAL: u32 = 1 << 11;
/// ICR bit 12: delivery status (send pending; always idle here).
pub const ICR_SEND_PENDING: u32 = 1 << 12;
/// ICR bit 14: level assert (vs. de-assert).
pub const ICR_LEVEL_ASSERT: u32 = 1 << 14;
/// ICR bit 15: level-triggered.
pub const ICR_TRIGGER_LEVEL: u32 = 1 << 15;
/// ICR bits 19:18: destination shorthand.
pub const ICR_SHORTHAND_MASK: u32 = 3 << 18;
/// Shorthand: none (use the destination field).
pub const SHORTHAND_NONE: u32 = 0;
/// Shorthand: self.
pub const SHORTHAND_SELF: u32 = 1 << 18;
/// Shorthand: all including self.
pub const SHORTHAND_ALL: u32 = 2 << 18;
/// Shorthand: all excluding self.
pub const SHORTHAND_OTHERS: u32 = 3 << 18;
const ICR_LOW_WRITABLE: u32 = 0x000C_CFFF;

// ESR bits.
/// ESR bit 5: send illegal vector.
pub const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
/// ESR bit 6: receive illegal vector.
pub const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
/// ESR bit 7: illegal register address.
pub const ESR_ILLEGAL_REGISTER: u32 = 1 << 7;

/// DFR model bits 31:28 = 0xF: flat model.
pub const DFR_FLAT: u32 = 0xF000_0000;
/// Broadcast destination (physical 0xFF, or logical 0xFF in the flat model).
pub const BROADCAST_DEST: u8 = 0xFF;

/// Number of LVT entries: CMCI, timer, thermal, perf, LINT0, LINT1, error.
const LVT_COUNT: usize = 7;
const LVT_REGS: [u64; LVT_COUNT] = [
    REG_LVT_CMCI,
    REG_LVT_TIMER,
    REG_LVT_THERMAL,
    REG_LVT_PERF,
    REG_LVT_LINT0,
    REG_LVT_LINT1,
    REG_LVT_ERROR,
];
const LVT_TIMER: usize = 1;
const LVT_LINT0: usize = 4;
const LVT_ERROR: usize = 6;

/// A 256-bit vector register (ISR, TMR, IRR).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bits256(pub [u32; 8]);

impl Bits256 {
    pub fn get(&self, v: u8) -> bool {
        self.0[usize::from(v >> 5)] & (1 << (v & 31)) != 0
    }
    pub fn set(&mut self, v: u8, on: bool) {
        let w = &mut self.0[usize::from(v >> 5)];
        if on {
            *w |= 1 << (v & 31);
        } else {
            *w &= !(1 << (v & 31));
        }
    }
    /// The highest set vector.
    pub fn highest(&self) -> Option<u8> {
        (0..8).rev().find_map(|i| {
            let w = self.0[i];
            (w != 0).then(|| (i as u8) * 32 + (31 - w.leading_zeros() as u8))
        })
    }
}

/// An interrupt message for the local APIC (from the IOAPIC or an IPI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptMessage {
    pub vector: u8,
    /// One of the `DM_*` delivery modes.
    pub delivery_mode: u32,
    /// Logical (true) or physical destination mode.
    pub logical: bool,
    pub dest: u8,
    /// Level-triggered: the vector's TMR bit is set and its EOI is broadcast.
    pub level: bool,
}

/// Snapshot of the local APIC.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LapicState {
    pub id: u8,
    pub tpr: u8,
    pub ldr: u32,
    pub dfr: u32,
    pub svr: u32,
    pub isr: Bits256,
    pub tmr: Bits256,
    pub irr: Bits256,
    pub esr: u32,
    pub esr_pending: u32,
    pub lvt: [u32; LVT_COUNT],
    pub icr_low: u32,
    pub icr_high: u32,
    pub timer_initial: u32,
    pub timer_divide: u32,
    /// Guest time the current timer period started.
    pub timer_start_ns: u64,
    /// The timer is counting (initial count loaded and not yet expired in one-shot mode).
    pub timer_armed: bool,
    /// TSC-deadline mode: the armed deadline in guest ns (0 = disarmed).
    #[serde(default)]
    pub tsc_deadline_ns: u64,
}

/// The local APIC.
#[derive(Clone, Debug)]
pub struct Lapic {
    s: LapicState,
}

impl Default for Lapic {
    fn default() -> Self {
        Lapic::new()
    }
}

/// The divider selected by the divide configuration register (1..=128).
pub fn timer_divisor(dcr: u32) -> u64 {
    let code = (dcr & 3) | ((dcr & 8) >> 1);
    1u64 << ((code + 1) & 7)
}

impl Lapic {
    /// Power-on state: ID 0, software-disabled (SVR 0xFF), every LVT masked.
    pub fn new() -> Lapic {
        Lapic {
            s: LapicState {
                dfr: 0xFFFF_FFFF,
                svr: 0xFF,
                lvt: [LVT_MASKED; LVT_COUNT],
                ..Default::default()
            },
        }
    }

    pub fn from_state(s: &LapicState) -> Lapic {
        Lapic { s: s.clone() }
    }

    pub fn state(&self) -> LapicState {
        self.s.clone()
    }

    pub fn id(&self) -> u8 {
        self.s.id
    }

    /// SVR bit 8: the APIC is software-enabled.
    pub fn software_enabled(&self) -> bool {
        self.s.svr & SVR_APIC_ENABLED != 0
    }

    /// The 8259's INTR reaches the CPU: the APIC is software-disabled (the power-on wiring,
    /// as QEMU models it), or LINT0 is unmasked in ExtINT mode (virtual wire).
    pub fn accepts_pic_interrupts(&self) -> bool {
        let lint0 = self.s.lvt[LVT_LINT0];
        !self.software_enabled()
            || (lint0 & LVT_MASKED == 0 && (lint0 & LVT_DELIVERY_MODE_MASK) >> 8 == DM_EXTINT)
    }

    /// Processor priority: the higher of the TPR and the in-service class.
    pub fn ppr(&self) -> u8 {
        let isrv = self.s.isr.highest().unwrap_or(0);
        if self.s.tpr >> 4 >= isrv >> 4 {
            self.s.tpr
        } else {
            isrv & 0xF0
        }
    }

    /// The vector the APIC would hand the CPU now: the highest IRR vector whose class is
    /// above the processor priority class.
    pub fn deliverable(&self) -> Option<u8> {
        if !self.software_enabled() {
            return None;
        }
        let v = self.s.irr.highest()?;
        (v >> 4 > self.ppr() >> 4).then_some(v)
    }

    /// INTA: move the deliverable vector from IRR to ISR and return it.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let v = self.deliverable()?;
        self.s.irr.set(v, false);
        self.s.isr.set(v, true);
        Some(v)
    }

    pub fn irr(&self) -> &Bits256 {
        &self.s.irr
    }

    pub fn isr(&self) -> &Bits256 {
        &self.s.isr
    }

    pub fn tmr(&self) -> &Bits256 {
        &self.s.tmr
    }

    /// Does a message with this destination address this APIC?
    pub fn matches_destination(&self, logical: bool, dest: u8) -> bool {
        if dest == BROADCAST_DEST {
            return true;
        }
        if !logical {
            return dest == self.s.id;
        }
        let ldr = (self.s.ldr >> 24) as u8;
        if self.s.dfr & DFR_FLAT == DFR_FLAT {
            dest & ldr != 0
        } else {
            // Cluster model: cluster in bits 7:4, member bitmap in 3:0.
            dest >> 4 == ldr >> 4 && dest & ldr & 0x0F != 0
        }
    }

    /// Accept an interrupt message addressed to this APIC (the caller checked the destination).
    pub fn accept(&mut self, msg: InterruptMessage) {
        match msg.delivery_mode {
            DM_FIXED | DM_LOWEST => self.set_irr(msg.vector, msg.level),
            DM_EXTINT => {
                // The platform routes ExtINT through the PIC path directly.
            }
            DM_INIT | DM_STARTUP => {
                warn!(
                    mode = msg.delivery_mode,
                    vector = msg.vector,
                    "LAPIC: INIT/SIPI to the only vCPU ignored"
                );
            }
            mode => warn!(
                mode,
                vector = msg.vector,
                "LAPIC: SMI/NMI delivery not implemented; interrupt dropped"
            ),
        }
    }

    /// Latch `vector` in IRR (TMR records the trigger mode). Vectors 0-15 are illegal.
    fn set_irr(&mut self, vector: u8, level: bool) {
        if vector < 16 {
            self.error(ESR_RECEIVE_ILLEGAL_VECTOR);
            return;
        }
        self.s.irr.set(vector, true);
        self.s.tmr.set(vector, level);
    }

    fn error(&mut self, bits: u32) {
        self.s.esr_pending |= bits;
        let lvt = self.s.lvt[LVT_ERROR];
        if lvt & LVT_MASKED == 0 && (lvt & LVT_VECTOR_MASK) >= 16 {
            self.s.irr.set((lvt & LVT_VECTOR_MASK) as u8, true);
        }
    }

    // ----- timer -----

    fn timer_mode(&self) -> u32 {
        self.s.lvt[LVT_TIMER] & LVT_TIMER_MODE_MASK
    }

    fn timer_tick_ns(&self) -> u64 {
        timer_divisor(self.s.timer_divide) * 1_000_000_000 / TIMER_BASE_HZ
    }

    /// Length of one full count in ns.
    fn timer_period_ns(&self) -> u64 {
        u64::from(self.s.timer_initial).saturating_mul(self.timer_tick_ns())
    }

    /// The timer's current count at guest time `now_ns`.
    pub fn timer_current(&self, now_ns: u64) -> u32 {
        if !self.s.timer_armed || self.s.timer_initial == 0 {
            return 0;
        }
        let elapsed_ticks = now_ns.saturating_sub(self.s.timer_start_ns) / self.timer_tick_ns();
        let initial = u64::from(self.s.timer_initial);
        if self.timer_mode() == TIMER_MODE_PERIODIC {
            (initial - elapsed_ticks % initial) as u32
        } else {
            initial.saturating_sub(elapsed_ticks) as u32
        }
    }

    /// Guest time of the next timer expiry, if the timer is counting.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        if self.timer_mode() == TIMER_MODE_TSC_DEADLINE {
            return (self.s.tsc_deadline_ns != 0).then_some(self.s.tsc_deadline_ns);
        }
        if !self.s.timer_armed || self.s.timer_initial == 0 {
            return None;
        }
        Some(self.s.timer_start_ns.saturating_add(self.timer_period_ns()))
    }

    /// Advance the timer to `now_ns`: an expiry latches the timer vector (unless masked);
    /// periodic timers restart from the last expiry (missed periods coalesce).
    pub fn update(&mut self, now_ns: u64) {
        let Some(deadline) = self.next_deadline_ns() else {
            return;
        };
        if now_ns < deadline {
            return;
        }
        if self.timer_mode() == TIMER_MODE_TSC_DEADLINE {
            self.s.tsc_deadline_ns = 0;
            self.fire_timer();
            return;
        }
        let period = self.timer_period_ns().max(1);
        if self.timer_mode() == TIMER_MODE_PERIODIC {
            let periods = (now_ns - self.s.timer_start_ns) / period;
            self.s.timer_start_ns += periods * period;
        } else {
            self.s.timer_armed = false;
        }
        self.fire_timer();
    }

    /// Latch the timer vector unless the LVT entry is masked.
    fn fire_timer(&mut self) {
        let lvt = self.s.lvt[LVT_TIMER];
        if lvt & LVT_MASKED == 0 {
            self.set_irr((lvt & LVT_VECTOR_MASK) as u8, false);
        }
    }

    /// IA32_TSC_DEADLINE read: the armed deadline in guest ns, 0 when disarmed.
    pub fn tsc_deadline(&self) -> u64 {
        if self.timer_mode() == TIMER_MODE_TSC_DEADLINE {
            self.s.tsc_deadline_ns
        } else {
            0
        }
    }

    /// IA32_TSC_DEADLINE write (guest ns; 0 disarms). Ignored outside TSC-deadline mode, as
    /// on hardware. A deadline already past fires at the next [`Lapic::update`].
    pub fn set_tsc_deadline(&mut self, deadline_ns: u64) {
        if self.timer_mode() == TIMER_MODE_TSC_DEADLINE {
            self.s.tsc_deadline_ns = deadline_ns;
        }
    }

    // ----- registers -----

    /// Read the 32-bit register at `offset` (16-byte aligned) at guest time `now_ns`.
    pub fn read(&mut self, offset: u64, now_ns: u64) -> u32 {
        let offset = offset & 0xFF0;
        match offset {
            REG_ID => u32::from(self.s.id) << 24,
            REG_VERSION => LAPIC_VERSION,
            REG_TPR => self.s.tpr.into(),
            REG_APR | REG_PPR => self.ppr().into(),
            REG_EOI | REG_RRD => 0,
            REG_LDR => self.s.ldr,
            REG_DFR => self.s.dfr,
            REG_SVR => self.s.svr,
            0x100..=0x170 => self.s.isr.0[((offset - REG_ISR) >> 4) as usize],
            0x180..=0x1F0 => self.s.tmr.0[((offset - REG_TMR) >> 4) as usize],
            0x200..=0x270 => self.s.irr.0[((offset - REG_IRR) >> 4) as usize],
            REG_ESR => self.s.esr,
            REG_ICR_LOW => self.s.icr_low,
            REG_ICR_HIGH => self.s.icr_high,
            REG_TIMER_INITIAL => self.s.timer_initial,
            REG_TIMER_CURRENT => self.timer_current(now_ns),
            REG_TIMER_DIVIDE => self.s.timer_divide,
            _ => {
                if let Some(i) = LVT_REGS.iter().position(|&r| r == offset) {
                    return self.s.lvt[i];
                }
                warn!(
                    offset = format_args!("{offset:#x}"),
                    "LAPIC: read of an unimplemented register"
                );
                0
            }
        }
    }

    /// Write the 32-bit register at `offset`. Returns the vector of a level-triggered
    /// interrupt whose EOI must be broadcast to the IOAPIC.
    pub fn write(&mut self, offset: u64, value: u32, now_ns: u64) -> Option<u8> {
        let offset = offset & 0xFF0;
        match offset {
            REG_ID => self.s.id = (value >> 24) as u8,
            REG_TPR => self.s.tpr = value as u8,
            REG_EOI => return self.eoi(),
            REG_LDR => self.s.ldr = value & 0xFF00_0000,
            REG_DFR => self.s.dfr = value | 0x0FFF_FFFF,
            REG_SVR => {
                if value & SVR_SUPPRESS_EOI_BROADCAST != 0 {
                    warn!("LAPIC: EOI-broadcast suppression requested but not supported");
                }
                self.s.svr = value & SVR_WRITABLE;
                if !self.software_enabled() {
                    for lvt in &mut self.s.lvt {
                        *lvt |= LVT_MASKED;
                    }
                }
            }
            REG_ESR => {
                self.s.esr = self.s.esr_pending;
                self.s.esr_pending = 0;
            }
            REG_ICR_LOW => {
                self.s.icr_low = value & ICR_LOW_WRITABLE;
                self.send_ipi();
            }
            REG_ICR_HIGH => self.s.icr_high = value & 0xFF00_0000,
            REG_TIMER_INITIAL => {
                // Ignored in TSC-deadline (and the reserved) mode.
                if matches!(self.timer_mode(), TIMER_MODE_ONESHOT | TIMER_MODE_PERIODIC) {
                    self.s.timer_initial = value;
                    self.s.timer_start_ns = now_ns;
                    self.s.timer_armed = value != 0;
                }
            }
            REG_TIMER_DIVIDE => {
                // Keep the current count: continue from it at the new rate.
                let current = self.timer_current(now_ns);
                self.s.timer_divide = value & 0xB;
                self.continue_from(current, now_ns);
            }
            REG_VERSION | REG_APR | REG_PPR | REG_RRD | REG_TIMER_CURRENT => {}
            0x100..=0x270 => {}
            _ => {
                if let Some(i) = LVT_REGS.iter().position(|&r| r == offset) {
                    self.write_lvt(i, value, now_ns);
                } else {
                    warn!(
                        offset = format_args!("{offset:#x}"),
                        value = format_args!("{value:#x}"),
                        "LAPIC: write to an unimplemented register ignored"
                    );
                    self.error(ESR_ILLEGAL_REGISTER);
                }
            }
        }
        None
    }

    fn write_lvt(&mut self, i: usize, value: u32, now_ns: u64) {
        let mut writable = LVT_VECTOR_MASK | LVT_MASKED;
        match i {
            LVT_TIMER => writable |= LVT_TIMER_MODE_MASK,
            LVT_ERROR => {}
            _ => writable |= LVT_DELIVERY_MODE_MASK | LVT_POLARITY_LOW | LVT_LEVEL,
        }
        let mut value = value & writable;
        if !self.software_enabled() {
            value |= LVT_MASKED;
        }
        if i == LVT_TIMER {
            let old_mode = self.timer_mode();
            let new_mode = value & LVT_TIMER_MODE_MASK;
            if new_mode == LVT_TIMER_MODE_MASK {
                warn!(
                    lvt = format_args!("{value:#x}"),
                    "LAPIC: reserved timer mode 3; timer stopped"
                );
                self.s.timer_armed = false;
            } else if (old_mode == TIMER_MODE_TSC_DEADLINE) != (new_mode == TIMER_MODE_TSC_DEADLINE)
            {
                // Entering or leaving TSC-deadline mode disarms the timer (SDM 10.5.4.1).
                self.s.timer_armed = false;
                self.s.timer_initial = 0;
                self.s.tsc_deadline_ns = 0;
            } else if old_mode != new_mode {
                // Switching modes keeps counting from the current position.
                let current = self.timer_current(now_ns);
                self.s.lvt[i] = value;
                self.continue_from(current, now_ns);
                return;
            }
        }
        self.s.lvt[i] = value;
    }

    /// Re-base the running timer so that it reads `current` at `now_ns`.
    fn continue_from(&mut self, current: u32, now_ns: u64) {
        if self.s.timer_armed {
            let consumed = u64::from(self.s.timer_initial.saturating_sub(current));
            self.s.timer_start_ns = now_ns.saturating_sub(consumed * self.timer_tick_ns());
        }
    }

    /// Send the IPI described by the ICR. Only this vCPU exists: fixed IPIs to self are
    /// latched; IPIs to others go nowhere; INIT/SIPI to self are ignored with a warning.
    fn send_ipi(&mut self) {
        let low = self.s.icr_low;
        let vector = (low & 0xFF) as u8;
        let mode = (low & LVT_DELIVERY_MODE_MASK) >> 8;
        let to_self = match low & ICR_SHORTHAND_MASK {
            SHORTHAND_SELF | SHORTHAND_ALL => true,
            SHORTHAND_OTHERS => false,
            _ => {
                self.matches_destination(low & ICR_DEST_LOGICAL != 0, (self.s.icr_high >> 24) as u8)
            }
        };
        if !to_self {
            return;
        }
        if matches!(mode, DM_FIXED | DM_LOWEST) && vector < 16 {
            self.error(ESR_SEND_ILLEGAL_VECTOR);
            return;
        }
        self.accept(InterruptMessage {
            vector,
            delivery_mode: mode,
            logical: false,
            dest: self.s.id,
            level: false,
        });
    }

    /// EOI: retire the highest in-service vector; report it if it was level-triggered.
    fn eoi(&mut self) -> Option<u8> {
        let v = self.s.isr.highest()?;
        self.s.isr.set(v, false);
        self.s.tmr.get(v).then_some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> Lapic {
        let mut l = Lapic::new();
        l.write(REG_SVR, SVR_APIC_ENABLED | 0xFF, 0);
        l
    }

    fn fixed(vector: u8, level: bool) -> InterruptMessage {
        InterruptMessage {
            vector,
            delivery_mode: DM_FIXED,
            logical: false,
            dest: 0,
            level,
        }
    }

    #[test]
    fn id_version_and_power_on_state() {
        let mut l = Lapic::new();
        assert_eq!(l.read(REG_VERSION, 0), 0x50014);
        assert_eq!(l.read(REG_ID, 0), 0);
        assert_eq!(l.read(REG_SVR, 0), 0xFF);
        assert_eq!(l.read(REG_LVT_LINT0, 0), LVT_MASKED);
        assert!(!l.software_enabled());
        assert!(l.accepts_pic_interrupts());
        l.write(REG_ID, 0x0300_0000, 0);
        assert_eq!(l.read(REG_ID, 0), 0x0300_0000);
    }

    #[test]
    fn software_disabled_holds_interrupts_and_masks_lvts() {
        let mut l = Lapic::new();
        l.accept(fixed(0x40, false));
        assert_eq!(l.deliverable(), None);
        l.write(REG_LVT_TIMER, 0x30, 0);
        assert_eq!(l.read(REG_LVT_TIMER, 0) & LVT_MASKED, LVT_MASKED);
        l.write(REG_SVR, SVR_APIC_ENABLED | 0xFF, 0);
        assert_eq!(l.deliverable(), Some(0x40));
    }

    #[test]
    fn priority_classes_tpr_and_eoi() {
        let mut l = enabled();
        l.accept(fixed(0x41, false));
        l.accept(fixed(0x35, false));
        l.accept(fixed(0x52, false));
        assert_eq!(l.acknowledge(), Some(0x52));
        assert_eq!(l.read(REG_PPR, 0), 0x50);
        // 0x41 is in a lower class than the in-service 0x52.
        assert_eq!(l.deliverable(), None);
        assert_eq!(l.write(REG_EOI, 0, 0), None);
        assert_eq!(l.read(REG_PPR, 0), 0);
        l.write(REG_TPR, 0x40, 0);
        assert_eq!(l.deliverable(), None, "class 4 not above TPR class 4");
        l.write(REG_TPR, 0x3F, 0);
        assert_eq!(l.acknowledge(), Some(0x41));
        // Same class as in service: blocked.
        assert_eq!(l.deliverable(), None);
        l.write(REG_EOI, 0, 0);
        l.write(REG_TPR, 0, 0);
        assert_eq!(l.acknowledge(), Some(0x35));
        assert!(l.irr().highest().is_none());
        assert_eq!(l.isr().highest(), Some(0x35));
        assert_eq!(l.read(REG_ISR + 0x10, 0), 1 << (0x35 - 32));
    }

    #[test]
    fn level_triggered_eoi_is_reported_for_broadcast() {
        let mut l = enabled();
        l.accept(fixed(0x61, true));
        assert!(l.tmr().get(0x61));
        assert_eq!(l.acknowledge(), Some(0x61));
        assert_eq!(l.write(REG_EOI, 0, 0), Some(0x61));
    }

    #[test]
    fn illegal_vectors_set_esr_after_write() {
        let mut l = enabled();
        l.accept(fixed(5, false));
        assert_eq!(l.deliverable(), None);
        assert_eq!(l.read(REG_ESR, 0), 0, "ESR latches on write");
        l.write(REG_ESR, 0, 0);
        assert_eq!(l.read(REG_ESR, 0), ESR_RECEIVE_ILLEGAL_VECTOR);
        l.write(REG_ESR, 0, 0);
        assert_eq!(l.read(REG_ESR, 0), 0);
    }

    #[test]
    fn error_lvt_raises_its_vector() {
        let mut l = enabled();
        l.write(REG_LVT_ERROR, 0xFE, 0);
        l.write(REG_ICR_LOW, SHORTHAND_SELF | 3, 0);
        assert_eq!(l.deliverable(), Some(0xFE));
        l.write(REG_ESR, 0, 0);
        assert_eq!(l.read(REG_ESR, 0), ESR_SEND_ILLEGAL_VECTOR);
    }

    #[test]
    fn self_ipis() {
        let mut l = enabled();
        l.write(REG_ICR_LOW, SHORTHAND_SELF | 0x80, 0);
        assert_eq!(l.acknowledge(), Some(0x80));
        l.write(REG_EOI, 0, 0);
        // Physical destination = own ID.
        l.write(REG_ICR_HIGH, 0, 0);
        l.write(REG_ICR_LOW, 0x81, 0);
        assert_eq!(l.acknowledge(), Some(0x81));
        l.write(REG_EOI, 0, 0);
        // To another APIC: nothing.
        l.write(REG_ICR_HIGH, 0x0100_0000, 0);
        l.write(REG_ICR_LOW, 0x82, 0);
        l.write(REG_ICR_LOW, SHORTHAND_OTHERS | 0x83, 0);
        assert_eq!(l.deliverable(), None);
        // INIT and SIPI to self are ignored.
        l.write(REG_ICR_LOW, SHORTHAND_SELF | (DM_INIT << 8), 0);
        l.write(REG_ICR_LOW, SHORTHAND_SELF | (DM_STARTUP << 8) | 0x9F, 0);
        assert_eq!(l.deliverable(), None);
        assert_eq!(l.read(REG_ICR_LOW, 0) & ICR_SEND_PENDING, 0);
    }

    #[test]
    fn logical_destinations_flat_and_cluster() {
        let mut l = enabled();
        l.write(REG_LDR, 0x0100_0000, 0);
        assert!(l.matches_destination(true, 0x01));
        assert!(l.matches_destination(true, 0x03));
        assert!(!l.matches_destination(true, 0x02));
        assert!(l.matches_destination(true, 0xFF));
        l.write(REG_DFR, 0x0FFF_FFFF, 0);
        assert_eq!(l.read(REG_DFR, 0), 0x0FFF_FFFF);
        l.write(REG_LDR, 0x2100_0000, 0);
        assert!(l.matches_destination(true, 0x21));
        assert!(!l.matches_destination(true, 0x11));
        assert!(!l.matches_destination(false, 0x21));
        assert!(l.matches_destination(false, 0));
    }

    #[test]
    fn lint0_extint_virtual_wire() {
        let mut l = enabled();
        assert!(!l.accepts_pic_interrupts(), "enabled APIC, LINT0 masked");
        l.write(REG_LVT_LINT0, DM_EXTINT << 8, 0);
        assert!(l.accepts_pic_interrupts());
        l.write(REG_LVT_LINT0, LVT_MASKED | (DM_EXTINT << 8), 0);
        assert!(!l.accepts_pic_interrupts());
    }

    #[test]
    fn divide_configuration() {
        assert_eq!(timer_divisor(0b0000), 2);
        assert_eq!(timer_divisor(0b0001), 4);
        assert_eq!(timer_divisor(0b0010), 8);
        assert_eq!(timer_divisor(0b0011), 16);
        assert_eq!(timer_divisor(0b1000), 32);
        assert_eq!(timer_divisor(0b1001), 64);
        assert_eq!(timer_divisor(0b1010), 128);
        assert_eq!(timer_divisor(0b1011), 1);
    }

    #[test]
    fn one_shot_timer() {
        let mut l = enabled();
        l.write(REG_TIMER_DIVIDE, 0b0001, 0); // /4
        l.write(REG_LVT_TIMER, 0x30, 0);
        l.write(REG_TIMER_INITIAL, 1000, 100);
        assert_eq!(l.next_deadline_ns(), Some(4100));
        assert_eq!(l.read(REG_TIMER_CURRENT, 100), 1000);
        assert_eq!(l.read(REG_TIMER_CURRENT, 500), 900);
        l.update(4099);
        assert_eq!(l.deliverable(), None);
        l.update(4100);
        assert_eq!(l.deliverable(), Some(0x30));
        assert_eq!(l.read(REG_TIMER_CURRENT, 5000), 0);
        assert_eq!(l.next_deadline_ns(), None);
        l.acknowledge();
        l.write(REG_EOI, 0, 0);
        l.update(100_000);
        assert_eq!(l.deliverable(), None, "one-shot fires once");
    }

    #[test]
    fn periodic_timer_and_masking() {
        let mut l = enabled();
        l.write(REG_TIMER_DIVIDE, 0b1011, 0); // /1
        l.write(REG_LVT_TIMER, TIMER_MODE_PERIODIC | 0xEC, 0);
        l.write(REG_TIMER_INITIAL, 1_000_000, 0);
        for n in 1..=3u64 {
            let d = l.next_deadline_ns().unwrap();
            assert_eq!(d, n * 1_000_000);
            l.update(d);
            assert_eq!(l.acknowledge(), Some(0xEC));
            l.write(REG_EOI, 0, 0);
        }
        assert_eq!(l.read(REG_TIMER_CURRENT, 3_250_000), 750_000);
        // Missed periods coalesce; the phase is kept.
        l.update(7_500_000);
        assert_eq!(l.next_deadline_ns(), Some(8_000_000));
        assert_eq!(l.acknowledge(), Some(0xEC));
        l.write(REG_EOI, 0, 0);
        // Masked: keeps counting, no interrupt.
        l.write(
            REG_LVT_TIMER,
            TIMER_MODE_PERIODIC | LVT_MASKED | 0xEC,
            7_600_000,
        );
        l.update(8_000_000);
        assert_eq!(l.deliverable(), None);
        assert_eq!(l.next_deadline_ns(), Some(9_000_000));
        // Initial count 0 stops the timer.
        l.write(REG_TIMER_INITIAL, 0, 8_100_000);
        assert_eq!(l.next_deadline_ns(), None);
    }

    #[test]
    fn tsc_deadline_mode() {
        let mut l = enabled();
        l.write(REG_TIMER_INITIAL, 100, 0);
        l.set_tsc_deadline(5_000); // ignored outside TSC-deadline mode
        assert_eq!(l.tsc_deadline(), 0);
        l.write(REG_LVT_TIMER, TIMER_MODE_TSC_DEADLINE | 0x30, 0);
        assert_eq!(l.next_deadline_ns(), None, "entering the mode disarms");
        assert_eq!(l.read(REG_TIMER_CURRENT, 0), 0);
        l.write(REG_TIMER_INITIAL, 100, 0);
        assert_eq!(l.next_deadline_ns(), None, "initial count ignored");
        l.set_tsc_deadline(5_000);
        assert_eq!(
            (l.tsc_deadline(), l.next_deadline_ns()),
            (5_000, Some(5_000))
        );
        l.update(4_999);
        assert_eq!(l.deliverable(), None);
        l.update(5_000);
        assert_eq!(l.acknowledge(), Some(0x30));
        assert_eq!(l.tsc_deadline(), 0, "disarmed after firing");
        l.write(REG_EOI, 0, 0);
        // Leaving the mode disarms too.
        l.set_tsc_deadline(9_000);
        l.write(REG_LVT_TIMER, 0x30, 0);
        assert_eq!(l.next_deadline_ns(), None);
        // Reserved mode 3 stops the timer.
        l.write(REG_TIMER_INITIAL, 100, 0);
        l.write(REG_LVT_TIMER, LVT_TIMER_MODE_MASK | 0x30, 0);
        assert_eq!(l.next_deadline_ns(), None);
    }

    #[test]
    fn state_round_trip() {
        let mut l = enabled();
        l.write(REG_LVT_TIMER, TIMER_MODE_PERIODIC | 0x30, 0);
        l.write(REG_TIMER_INITIAL, 500, 10);
        l.accept(fixed(0x90, true));
        let s = l.state();
        let m = Lapic::from_state(&s);
        assert_eq!(m.state(), s);
        assert_eq!(m.next_deadline_ns(), l.next_deadline_ns());
    }
}
