//! The I/O APIC (82093AA-style, version 0x11, 24 pins) at [`IOAPIC_BASE`]: the indirect
//! register window (IOREGSEL at 0x00, IOWIN at 0x10), the ID, version and arbitration
//! registers, and 24 redirection entries that turn pin assertions into interrupt messages for
//! the local APIC.
//!
//! Pins are driven by [`IoApic::set_irq`] with the line's logical level (asserted = true);
//! the polarity bit is stored but the platform already presents asserted lines as `true`.
//! Edge-triggered pins send a message on a rising edge while unmasked (an edge while masked
//! is lost, as on the 82093AA). Level-triggered pins send while asserted, unmasked and Remote
//! IRR clear, and set Remote IRR; an EOI broadcast for the vector ([`IoApic::eoi`]) clears
//! it and re-sends if the line is still asserted.

use crate::lapic::InterruptMessage;
use serde::{Deserialize, Serialize};
use tracing::warn;

/// Physical base of the register window.
pub const IOAPIC_BASE: u64 = 0xFEC0_0000;
/// Size of the register window.
pub const IOAPIC_SIZE: u64 = 0x1000;
/// Number of input pins.
pub const IOAPIC_PINS: usize = 24;

/// MMIO offset of IOREGSEL (register index, bits 7:0).
pub const MMIO_IOREGSEL: u64 = 0x00;
/// MMIO offset of IOWIN (data of the selected register).
pub const MMIO_IOWIN: u64 = 0x10;

/// Register index: ID (bits 27:24).
pub const REG_ID: u8 = 0x00;
/// Register index: version (version 7:0, max redirection entry 23:16).
pub const REG_VERSION: u8 = 0x01;
/// Register index: arbitration ID (bits 27:24, read-only).
pub const REG_ARB: u8 = 0x02;
/// Register index of redirection entry 0's low dword; entry n is at 0x10 + 2n (low) and
/// 0x11 + 2n (high).
pub const REG_REDIR_BASE: u8 = 0x10;
/// Version register value: version 0x11, 24 entries (max index 23).
pub const IOAPIC_VERSION: u32 = 0x0017_0011;

// Redirection entry bits.
/// Bits 7:0: vector.
pub const RTE_VECTOR_MASK: u64 = 0xFF;
/// Bits 10:8: delivery mode (0 fixed, 1 lowest priority, 2 SMI, 4 NMI, 5 INIT, 7 ExtINT).
pub const RTE_DELIVERY_MODE_MASK: u64 = 0x700;
/// Bit 11: logical destination mode.
pub const RTE_DEST_LOGICAL: u64 = 1 << 11;
/// Bit 12: delivery status (read-only, always idle here).
pub const RTE_DELIVERY_PENDING: u64 = 1 << 12;
/// Bit 13: input polarity active low.
pub const RTE_POLARITY_LOW: u64 = 1 << 13;
/// Bit 14: Remote IRR (read-only): a level interrupt was accepted and awaits its EOI.
pub const RTE_REMOTE_IRR: u64 = 1 << 14;
/// Bit 15: level-triggered.
pub const RTE_LEVEL: u64 = 1 << 15;
/// Bit 16: masked.
pub const RTE_MASKED: u64 = 1 << 16;
/// Bits 63:56: destination.
pub const RTE_DEST_SHIFT: u32 = 56;
const RTE_WRITABLE: u64 = RTE_VECTOR_MASK
    | RTE_DELIVERY_MODE_MASK
    | RTE_DEST_LOGICAL
    | RTE_POLARITY_LOW
    | RTE_LEVEL
    | RTE_MASKED
    | (0xFF << RTE_DEST_SHIFT);
/// Delivery mode ExtINT (the vector comes from the 8259).
pub const RTE_DM_EXTINT: u64 = 7 << 8;

/// Snapshot of the IOAPIC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoApicState {
    pub id: u8,
    pub ioregsel: u8,
    pub entries: Vec<u64>,
    /// Current level of each pin (bit n = pin n asserted).
    pub levels: u32,
}

/// The I/O APIC.
#[derive(Clone, Debug)]
pub struct IoApic {
    id: u8,
    ioregsel: u8,
    entries: [u64; IOAPIC_PINS],
    levels: u32,
    /// Cached [`IoApic::routes_extint`] (asked on every interrupt-window check).
    extint: bool,
}

impl Default for IoApic {
    fn default() -> Self {
        IoApic::new()
    }
}

impl IoApic {
    /// Power-on state: ID 0, every entry masked.
    pub fn new() -> IoApic {
        IoApic {
            id: 0,
            ioregsel: 0,
            entries: [RTE_MASKED; IOAPIC_PINS],
            levels: 0,
            extint: false,
        }
    }

    pub fn state(&self) -> IoApicState {
        IoApicState {
            id: self.id,
            ioregsel: self.ioregsel,
            entries: self.entries.to_vec(),
            levels: self.levels,
        }
    }

    pub fn from_state(s: &IoApicState) -> IoApic {
        let mut io = IoApic::new();
        io.id = s.id;
        io.ioregsel = s.ioregsel;
        for (dst, src) in io.entries.iter_mut().zip(&s.entries) {
            *dst = *src;
        }
        io.levels = s.levels;
        io.extint = io.compute_extint();
        io
    }

    /// Redirection entry of `pin` (for tests and debugging).
    pub fn entry(&self, pin: usize) -> Option<u64> {
        self.entries.get(pin).copied()
    }

    /// Some unmasked entry is in ExtINT mode: the 8259's INTR reaches the CPU through it.
    pub fn routes_extint(&self) -> bool {
        self.extint
    }

    fn compute_extint(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e & RTE_MASKED == 0 && e & RTE_DELIVERY_MODE_MASK == RTE_DM_EXTINT)
    }

    fn message(&self, pin: usize) -> InterruptMessage {
        let e = self.entries[pin];
        InterruptMessage {
            vector: (e & RTE_VECTOR_MASK) as u8,
            delivery_mode: ((e & RTE_DELIVERY_MODE_MASK) >> 8) as u32,
            logical: e & RTE_DEST_LOGICAL != 0,
            dest: (e >> RTE_DEST_SHIFT) as u8,
            level: e & RTE_LEVEL != 0,
        }
    }

    /// Send `pin`'s message if its state calls for one now (asserted level pin, unmasked,
    /// Remote IRR clear); sets Remote IRR.
    fn service_level(&mut self, pin: usize) -> Option<InterruptMessage> {
        let e = self.entries[pin];
        let asserted = self.levels & (1 << pin) != 0;
        if e & RTE_LEVEL == 0 || !asserted || e & (RTE_MASKED | RTE_REMOTE_IRR) != 0 {
            return None;
        }
        if e & RTE_DELIVERY_MODE_MASK != RTE_DM_EXTINT {
            self.entries[pin] |= RTE_REMOTE_IRR;
        }
        Some(self.message(pin))
    }

    /// Drive input `pin` to `level`; returns the message to deliver, if any. Pins beyond 23
    /// are ignored.
    pub fn set_irq(&mut self, pin: usize, level: bool) -> Option<InterruptMessage> {
        if pin >= IOAPIC_PINS {
            return None;
        }
        let bit = 1u32 << pin;
        let was = self.levels & bit != 0;
        if level {
            self.levels |= bit;
        } else {
            self.levels &= !bit;
        }
        let e = self.entries[pin];
        if e & RTE_LEVEL == 0 {
            (level && !was && e & RTE_MASKED == 0).then(|| self.message(pin))
        } else {
            self.service_level(pin)
        }
    }

    /// EOI broadcast for `vector`: clear Remote IRR of the level entries with that vector and
    /// re-send those whose line is still asserted.
    pub fn eoi(&mut self, vector: u8) -> Vec<InterruptMessage> {
        let mut out = Vec::new();
        for pin in 0..IOAPIC_PINS {
            let e = self.entries[pin];
            if e & RTE_LEVEL != 0 && (e & RTE_VECTOR_MASK) as u8 == vector {
                self.entries[pin] &= !RTE_REMOTE_IRR;
                out.extend(self.service_level(pin));
            }
        }
        out
    }

    /// MMIO read of `size` bytes at `offset` in the window.
    pub fn mmio_read(&mut self, offset: u64, size: u8) -> u64 {
        let v = match offset & !3 {
            MMIO_IOREGSEL => u32::from(self.ioregsel),
            MMIO_IOWIN => self.read_register(self.ioregsel),
            _ => {
                warn!(
                    offset = format_args!("{offset:#x}"),
                    "IOAPIC: read of an unimplemented window offset"
                );
                0
            }
        };
        let shifted = u64::from(v) >> ((offset & 3) * 8);
        if size >= 8 {
            shifted
        } else {
            shifted & ((1u64 << (u32::from(size) * 8)) - 1)
        }
    }

    /// MMIO write at `offset`; returns a message to deliver (unmasking an asserted level pin).
    pub fn mmio_write(&mut self, offset: u64, size: u8, value: u64) -> Option<InterruptMessage> {
        if offset & 3 != 0 {
            warn!(
                offset = format_args!("{offset:#x}"),
                size, "IOAPIC: unaligned write ignored"
            );
            return None;
        }
        match offset {
            MMIO_IOREGSEL => {
                self.ioregsel = value as u8;
                None
            }
            MMIO_IOWIN => self.write_register(self.ioregsel, value as u32),
            _ => {
                warn!(
                    offset = format_args!("{offset:#x}"),
                    value = format_args!("{value:#x}"),
                    "IOAPIC: write to an unimplemented window offset ignored"
                );
                None
            }
        }
    }

    /// Read the indirect register `index`.
    pub fn read_register(&self, index: u8) -> u32 {
        match index {
            REG_ID | REG_ARB => u32::from(self.id) << 24,
            REG_VERSION => IOAPIC_VERSION,
            i if i >= REG_REDIR_BASE && usize::from(i - REG_REDIR_BASE) < 2 * IOAPIC_PINS => {
                let n = usize::from(i - REG_REDIR_BASE);
                let e = self.entries[n / 2];
                if n % 2 == 0 {
                    e as u32
                } else {
                    (e >> 32) as u32
                }
            }
            _ => {
                warn!(index, "IOAPIC: read of an unimplemented register");
                0
            }
        }
    }

    /// Write the indirect register `index`.
    pub fn write_register(&mut self, index: u8, value: u32) -> Option<InterruptMessage> {
        match index {
            REG_ID => {
                self.id = ((value >> 24) & 0x0F) as u8;
                None
            }
            REG_VERSION | REG_ARB => None,
            i if i >= REG_REDIR_BASE && usize::from(i - REG_REDIR_BASE) < 2 * IOAPIC_PINS => {
                let n = usize::from(i - REG_REDIR_BASE);
                let pin = n / 2;
                let old = self.entries[pin];
                let new = if n % 2 == 0 {
                    (old & !0xFFFF_FFFF) | u64::from(value)
                } else {
                    (old & 0xFFFF_FFFF) | (u64::from(value) << 32)
                };
                let mut e = (new & RTE_WRITABLE) | (old & RTE_REMOTE_IRR);
                if e & RTE_LEVEL == 0 {
                    e &= !RTE_REMOTE_IRR;
                }
                self.entries[pin] = e;
                self.extint = self.compute_extint();
                self.service_level(pin)
            }
            _ => {
                warn!(
                    index,
                    value = format_args!("{value:#x}"),
                    "IOAPIC: write to an unimplemented register ignored"
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(io: &mut IoApic, pin: u8, low: u32, high: u32) -> Option<InterruptMessage> {
        io.mmio_write(MMIO_IOREGSEL, 4, u64::from(REG_REDIR_BASE + 2 * pin + 1));
        io.mmio_write(MMIO_IOWIN, 4, u64::from(high));
        io.mmio_write(MMIO_IOREGSEL, 4, u64::from(REG_REDIR_BASE + 2 * pin));
        io.mmio_write(MMIO_IOWIN, 4, u64::from(low))
    }

    fn read(io: &mut IoApic, index: u8) -> u32 {
        io.mmio_write(MMIO_IOREGSEL, 4, u64::from(index));
        io.mmio_read(MMIO_IOWIN, 4) as u32
    }

    #[test]
    fn id_version_and_masked_entries() {
        let mut io = IoApic::new();
        assert_eq!(read(&mut io, REG_VERSION), 0x170011);
        io.mmio_write(MMIO_IOREGSEL, 4, 0);
        io.mmio_write(MMIO_IOWIN, 4, 0x0200_0000);
        assert_eq!(read(&mut io, REG_ID), 0x0200_0000);
        assert_eq!(read(&mut io, REG_ARB), 0x0200_0000);
        for pin in 0..24 {
            assert_eq!(read(&mut io, REG_REDIR_BASE + 2 * pin), RTE_MASKED as u32);
        }
        assert_eq!(
            io.mmio_read(MMIO_IOREGSEL, 4),
            u64::from(REG_REDIR_BASE + 46)
        );
        // Byte read of the version's max-entry field.
        io.mmio_write(MMIO_IOREGSEL, 4, u64::from(REG_VERSION));
        assert_eq!(io.mmio_read(MMIO_IOWIN + 2, 1), 0x17);
    }

    #[test]
    fn edge_pin_sends_on_rising_edge_only_when_unmasked() {
        let mut io = IoApic::new();
        assert_eq!(io.set_irq(2, true), None, "masked");
        io.set_irq(2, false);
        assert_eq!(program(&mut io, 2, 0x30, 0x0100_0000), None);
        let m = io.set_irq(2, true).unwrap();
        assert_eq!(
            m,
            InterruptMessage {
                vector: 0x30,
                delivery_mode: 0,
                logical: false,
                dest: 1,
                level: false
            }
        );
        assert_eq!(io.set_irq(2, true), None, "no edge");
        io.set_irq(2, false);
        assert!(io.set_irq(2, true).is_some());
        assert_eq!(io.set_irq(24, true), None);
    }

    #[test]
    fn level_pin_remote_irr_and_eoi() {
        let mut io = IoApic::new();
        let low = 0x41 | RTE_LEVEL as u32 | RTE_DEST_LOGICAL as u32 | (1 << 8);
        program(&mut io, 9, low, 0xFF00_0000);
        let m = io.set_irq(9, true).unwrap();
        assert!(m.level && m.logical && m.delivery_mode == 1 && m.dest == 0xFF);
        assert_ne!(io.entry(9).unwrap() & RTE_REMOTE_IRR, 0);
        assert_eq!(io.set_irq(9, true), None, "Remote IRR blocks");
        // EOI with the line still high re-sends.
        assert_eq!(io.eoi(0x41).len(), 1);
        io.set_irq(9, false);
        assert_eq!(io.eoi(0x41), vec![]);
        assert_eq!(io.entry(9).unwrap() & RTE_REMOTE_IRR, 0);
        assert_eq!(io.eoi(0x42), vec![]);
    }

    #[test]
    fn unmasking_an_asserted_level_pin_sends() {
        let mut io = IoApic::new();
        program(&mut io, 5, 0x50 | (RTE_LEVEL | RTE_MASKED) as u32, 0);
        assert_eq!(io.set_irq(5, true), None);
        assert!(program(&mut io, 5, 0x50 | RTE_LEVEL as u32, 0).is_some());
        // Remote IRR is read-only.
        program(&mut io, 5, 0x50 | RTE_LEVEL as u32, 0);
        assert_ne!(io.entry(5).unwrap() & RTE_REMOTE_IRR, 0);
    }

    #[test]
    fn extint_routing() {
        let mut io = IoApic::new();
        assert!(!io.routes_extint());
        program(&mut io, 0, RTE_DM_EXTINT as u32, 0);
        assert!(io.routes_extint());
    }

    #[test]
    fn state_round_trip() {
        let mut io = IoApic::new();
        program(&mut io, 3, 0x33, 0);
        io.set_irq(3, true);
        let s = io.state();
        assert_eq!(IoApic::from_state(&s).state(), s);
    }
}
