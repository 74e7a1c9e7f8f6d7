//! Interrupt routing of [`PcPlatform`] (ISA lines to the 8259 pair and the IOAPIC, IOAPIC
//! messages to the local APIC, the CPU's INTR from the LAPIC or the 8259), the APICs' MMIO
//! decoding, and the width-aware port blocks (PCI configuration, ACPI PM).

use super::{Builtin, PcPlatform};
use crate::acpi_pm::SCI_IRQ;
use crate::bus::{mmio_ones, MmioBus, MmioDevice};
use crate::ioapic::{IoApic, IOAPIC_BASE, IOAPIC_SIZE};
use crate::lapic::{InterruptMessage, Lapic, DM_EXTINT, IA32_TSC_DEADLINE, LAPIC_BASE, LAPIC_SIZE};
use crate::misc::RESET_CONTROL_PORT;
use crate::pci::PCI_CONFIG_ADDRESS_PORT;
use crate::platform::Platform;
use tracing::warn;

/// IOAPIC pin that ISA IRQ 0 (the PIT) is wired to (the MADT's interrupt source override).
pub const PIT_IOAPIC_PIN: usize = 2;

/// Placeholder in the MMIO bus for the APIC pages, which the platform decodes itself.
struct ReservedByPlatform;

impl MmioDevice for ReservedByPlatform {
    fn read(&mut self, _offset: u64, size: u8) -> u64 {
        mmio_ones(size)
    }
    fn write(&mut self, _offset: u64, _size: u8, _value: u64) {}
}

/// An MMIO bus with the LAPIC and IOAPIC pages reserved.
pub(super) fn reserved_mmio_bus() -> MmioBus {
    let mut bus = MmioBus::new();
    for (base, len) in [(IOAPIC_BASE, IOAPIC_SIZE), (LAPIC_BASE, LAPIC_SIZE)] {
        // Two fixed, disjoint pages in an empty bus.
        let _ = bus.insert(base, len, Box::new(ReservedByPlatform));
    }
    bus
}

/// The IOAPIC pin an ISA IRQ line drives.
pub fn isa_irq_to_gsi(line: u8) -> usize {
    if line == 0 {
        PIT_IOAPIC_PIN
    } else {
        usize::from(line)
    }
}

impl PcPlatform {
    /// Drive ISA interrupt line `line` (0-15): it reaches the 8259 pair and the IOAPIC.
    /// Also for devices the machine adds.
    pub fn set_irq(&mut self, line: u8, level: bool) {
        self.pic.set_irq(line, level);
        if let Some(msg) = self.ioapic.set_irq(isa_irq_to_gsi(line), level) {
            self.deliver(msg);
        }
    }

    /// Hand an interrupt message to the local APIC if it is addressed to it. ExtINT
    /// messages need nothing here: the 8259's INTR is routed while the entry is unmasked.
    fn deliver(&mut self, msg: InterruptMessage) {
        if msg.delivery_mode == DM_EXTINT {
            return;
        }
        if self.lapic.matches_destination(msg.logical, msg.dest) {
            self.lapic.accept(msg);
        }
    }

    /// The 8259's INTR reaches the CPU.
    fn pic_routed(&self) -> bool {
        self.lapic.accepts_pic_interrupts() || self.ioapic.routes_extint()
    }

    pub(super) fn cpu_interrupt_pending(&self) -> bool {
        self.lapic.deliverable().is_some() || (self.pic_routed() && self.pic.interrupt_pending())
    }

    /// INTA: the local APIC's vector first, then the 8259's.
    pub(super) fn cpu_acknowledge(&mut self) -> Option<u8> {
        if let Some(v) = self.lapic.acknowledge() {
            return Some(v);
        }
        if self.pic_routed() && self.pic.interrupt_pending() {
            self.pic.acknowledge()
        } else {
            None
        }
    }

    pub fn lapic(&self) -> &Lapic {
        &self.lapic
    }

    pub fn ioapic(&self) -> &IoApic {
        &self.ioapic
    }

    /// MMIO read of the APIC pages; `None` for other addresses.
    pub(super) fn apic_mmio_read(&mut self, paddr: u64, size: u8) -> Option<u64> {
        if paddr.wrapping_sub(LAPIC_BASE) < LAPIC_SIZE {
            let offset = paddr - LAPIC_BASE;
            let now = self.now_for_io();
            let within = offset & 0xF;
            if within >= 4 {
                return Some(0);
            }
            let v = u64::from(self.lapic.read(offset, now)) >> (within * 8);
            return Some(if size >= 8 { v } else { v & mmio_ones(size) });
        }
        if paddr.wrapping_sub(IOAPIC_BASE) < IOAPIC_SIZE {
            return Some(self.ioapic.mmio_read(paddr - IOAPIC_BASE, size));
        }
        None
    }

    /// MMIO write to the APIC pages; false for other addresses.
    pub(super) fn apic_mmio_write(&mut self, paddr: u64, size: u8, value: u64) -> bool {
        if paddr.wrapping_sub(LAPIC_BASE) < LAPIC_SIZE {
            let offset = paddr - LAPIC_BASE;
            if offset & 0xF != 0 || size < 4 {
                warn!(
                    offset = format_args!("{offset:#x}"),
                    size, "LAPIC: partial or unaligned register write ignored"
                );
                return true;
            }
            let now = self.now_for_io();
            let before = self.next_deadline_ns();
            if let Some(vector) = self.lapic.write(offset, value as u32, now) {
                for msg in self.ioapic.eoi(vector) {
                    self.deliver(msg);
                }
            }
            self.note_deadline_change(before);
            return true;
        }
        if paddr.wrapping_sub(IOAPIC_BASE) < IOAPIC_SIZE {
            if let Some(msg) = self.ioapic.mmio_write(paddr - IOAPIC_BASE, size, value) {
                self.deliver(msg);
            }
            return true;
        }
        false
    }

    /// IA32_TSC_DEADLINE read (guest ns).
    pub(super) fn apic_read_msr(&mut self, msr: u32) -> Option<u64> {
        (msr == IA32_TSC_DEADLINE).then(|| self.lapic.tsc_deadline())
    }

    /// IA32_TSC_DEADLINE write (guest ns): arm the LAPIC timer; a past deadline fires now.
    pub(super) fn apic_write_msr(&mut self, msr: u32, value: u64) -> bool {
        if msr != IA32_TSC_DEADLINE {
            return false;
        }
        let now = self.now_for_io();
        let before = self.next_deadline_ns();
        self.lapic.set_tsc_deadline(value);
        self.lapic.update(now);
        self.note_deadline_change(before);
        true
    }

    /// Bring the timers to the current guest time before a timer-visible access.
    fn now_for_io(&mut self) -> u64 {
        let now = self.now_ns();
        self.advance_timers(now);
        self.last_now_ns
    }

    /// Width-aware read of the PCI configuration or ACPI PM block at `off` from its base.
    pub(super) fn wide_read(&mut self, b: Builtin, off: u16, size: u8) -> u32 {
        match b {
            Builtin::Pci if off == RESET_CONTROL_PORT - PCI_CONFIG_ADDRESS_PORT && size == 1 => {
                self.reset_control.read().into()
            }
            Builtin::Pci => self.pci.read(off, size),
            _ => {
                let now = self.now_for_io();
                let v = self.acpi_pm.read(off, size, now);
                self.set_irq(SCI_IRQ, self.acpi_pm.sci_level());
                v
            }
        }
    }

    /// Width-aware write of the PCI configuration or ACPI PM block.
    pub(super) fn wide_write(&mut self, b: Builtin, off: u16, size: u8, value: u32) {
        match b {
            Builtin::Pci if off == RESET_CONTROL_PORT - PCI_CONFIG_ADDRESS_PORT && size == 1 => {
                self.reset_control.write(value as u8);
                self.collect_actions();
            }
            Builtin::Pci => self.pci.write(off, size, value),
            _ => {
                let now = self.now_for_io();
                self.acpi_pm.write(off, size, value, now);
                self.set_irq(SCI_IRQ, self.acpi_pm.sci_level());
                self.collect_actions();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::ioapic::{MMIO_IOREGSEL, MMIO_IOWIN, REG_REDIR_BASE, RTE_LEVEL};
    use crate::lapic::{
        REG_EOI, REG_LVT_LINT0, REG_LVT_TIMER, REG_SVR, REG_TIMER_CURRENT, REG_TIMER_DIVIDE,
        REG_TIMER_INITIAL, REG_TPR, SVR_APIC_ENABLED, TIMER_MODE_PERIODIC,
    };
    use crate::pc::tests::{inb, init_pic, outb, platform};
    use crate::pc::PcPlatform;
    use crate::platform::{Platform, PlatformAction};

    fn lapic_write(p: &mut PcPlatform, reg: u64, v: u32) {
        p.mmio_write(LAPIC_BASE + reg, 4, v.into());
    }

    fn lapic_read(p: &mut PcPlatform, reg: u64) -> u32 {
        p.mmio_read(LAPIC_BASE + reg, 4) as u32
    }

    fn redirect(p: &mut PcPlatform, pin: u8, low: u32) {
        p.mmio_write(
            IOAPIC_BASE + MMIO_IOREGSEL,
            4,
            u64::from(REG_REDIR_BASE + 2 * pin + 1),
        );
        p.mmio_write(IOAPIC_BASE + MMIO_IOWIN, 4, 0);
        p.mmio_write(
            IOAPIC_BASE + MMIO_IOREGSEL,
            4,
            u64::from(REG_REDIR_BASE + 2 * pin),
        );
        p.mmio_write(IOAPIC_BASE + MMIO_IOWIN, 4, u64::from(low));
    }

    use super::*;

    #[test]
    fn apic_pages_are_decoded_and_reserved() {
        let (mut p, _) = platform();
        assert_eq!(lapic_read(&mut p, 0x30), 0x50014);
        assert_eq!(p.mmio_read(LAPIC_BASE + 0x32, 2), 0x5);
        p.mmio_write(IOAPIC_BASE, 4, 1);
        assert_eq!(p.mmio_read(IOAPIC_BASE + 0x10, 4), 0x170011);
        assert!(p
            .add_mmio_device(LAPIC_BASE, 0x100, Box::new(ReservedByPlatform))
            .is_err());
    }

    #[test]
    fn pit_through_ioapic_pin2_to_lapic() {
        let (mut p, _) = platform();
        init_pic(&mut p, 0); // every 8259 line masked
        lapic_write(&mut p, REG_SVR, SVR_APIC_ENABLED | 0xFF);
        redirect(&mut p, 2, 0x30);
        // HZ=1000 periodic PIT.
        outb(&mut p, 0x43, 0x34);
        outb(&mut p, 0x40, (1193 & 0xFF) as u8);
        outb(&mut p, 0x40, (1193 >> 8) as u8);
        for _ in 0..3 {
            let d = p.next_deadline_ns().unwrap();
            p.service(d);
            assert!(p.interrupt_pending());
            assert_eq!(p.ack_interrupt(), Some(0x30));
            assert!(!p.interrupt_pending());
            lapic_write(&mut p, REG_EOI, 0);
        }
    }

    #[test]
    fn legacy_pic_path_while_lapic_is_disabled_or_virtual_wire() {
        let (mut p, _) = platform();
        init_pic(&mut p, 1 << 1);
        outb(&mut p, 0x60, 0xFF); // keyboard reset → IRQ 1
        assert_eq!(p.ack_interrupt(), Some(0x31));
        inb(&mut p, 0x60);
        outb(&mut p, 0x20, 0x20);
        // Enabling the LAPIC with LINT0 masked cuts the 8259 off…
        lapic_write(&mut p, REG_SVR, SVR_APIC_ENABLED | 0xFF);
        assert!(
            p.pic().interrupt_pending(),
            "second keyboard byte raised IRQ 1"
        );
        assert!(!p.interrupt_pending());
        assert_eq!(p.ack_interrupt(), None);
        // …until LINT0 is set to ExtINT (virtual wire).
        lapic_write(&mut p, REG_LVT_LINT0, DM_EXTINT << 8);
        assert!(p.interrupt_pending());
        assert_eq!(p.ack_interrupt(), Some(0x31));
    }

    #[test]
    fn level_sci_remote_irr_and_eoi_broadcast() {
        let (mut p, _) = platform();
        lapic_write(&mut p, REG_SVR, SVR_APIC_ENABLED | 0xFF);
        redirect(&mut p, 9, 0x49 | RTE_LEVEL as u32);
        // Enable and raise the power button event: SCI asserted.
        p.pio_write(0x602, 2, u32::from(crate::acpi_pm::PM1_PWRBTN));
        p.acpi_pm.press_power_button();
        p.pio_read(0x600, 2);
        assert_eq!(p.ack_interrupt(), Some(0x49));
        assert!(p.lapic().tmr().get(0x49));
        // EOI while still asserted: Remote IRR cleared and the message re-sent.
        lapic_write(&mut p, REG_EOI, 0);
        assert_eq!(p.ack_interrupt(), Some(0x49));
        // Clear the status, then EOI: nothing more.
        p.pio_write(0x600, 2, u32::from(crate::acpi_pm::PM1_PWRBTN));
        lapic_write(&mut p, REG_EOI, 0);
        assert!(!p.interrupt_pending());
    }

    #[test]
    fn lapic_timer_deadline_and_current_count_follow_the_clock() {
        let (mut p, _) = platform();
        lapic_write(&mut p, REG_SVR, SVR_APIC_ENABLED | 0xFF);
        lapic_write(&mut p, REG_TIMER_DIVIDE, 0xB);
        lapic_write(&mut p, REG_LVT_TIMER, TIMER_MODE_PERIODIC | 0xEF);
        lapic_write(&mut p, REG_TIMER_INITIAL, 100_000);
        assert_eq!(p.next_deadline_ns(), Some(100_000));
        p.sync_retired_instructions(40_000);
        assert_eq!(lapic_read(&mut p, REG_TIMER_CURRENT), 60_000);
        p.set_retired_instructions(100_000);
        p.service(p.now_ns());
        assert_eq!(p.ack_interrupt(), Some(0xEF));
        // TPR blocks the class, EOI re-opens.
        lapic_write(&mut p, REG_EOI, 0);
        lapic_write(&mut p, REG_TPR, 0xF0);
        p.service(200_000);
        assert!(!p.interrupt_pending());
        lapic_write(&mut p, REG_TPR, 0);
        assert_eq!(p.ack_interrupt(), Some(0xEF));
    }

    #[test]
    fn tsc_deadline_msr_arms_the_lapic_timer() {
        let (mut p, _) = platform();
        lapic_write(&mut p, REG_SVR, SVR_APIC_ENABLED | 0xFF);
        assert_eq!(p.read_msr(0x10), None, "not a platform MSR");
        assert!(!p.write_msr(0x10, 0));
        lapic_write(
            &mut p,
            REG_LVT_TIMER,
            crate::lapic::TIMER_MODE_TSC_DEADLINE | 0xEE,
        );
        assert!(p.write_msr(IA32_TSC_DEADLINE, 50_000));
        assert_eq!(p.read_msr(IA32_TSC_DEADLINE), Some(50_000));
        assert_eq!(p.take_action(), Some(PlatformAction::TimerReprogrammed));
        assert_eq!(p.next_deadline_ns(), Some(50_000));
        p.service(50_000);
        assert_eq!(p.ack_interrupt(), Some(0xEE));
        assert_eq!(p.read_msr(IA32_TSC_DEADLINE), Some(0));
        lapic_write(&mut p, REG_EOI, 0);
        // A deadline in the past fires at once.
        assert!(p.write_msr(IA32_TSC_DEADLINE, 1));
        assert_eq!(p.ack_interrupt(), Some(0xEE));
    }

    #[test]
    fn pci_config_and_reset_control_share_0xcf8() {
        let (mut p, _) = platform();
        p.pio_write(0xCF8, 4, 0x8000_0000);
        assert_eq!(p.pio_read(0xCF8, 4), 0x8000_0000);
        assert_eq!(p.pio_read(0xCFC, 4), 0x1237_8086);
        assert_eq!(p.pio_read(0xCFE, 2), 0x1237);
        p.pio_write(0xCF8, 4, 0x8000_0800); // device 1
        assert_eq!(p.pio_read(0xCFC, 2), 0xFFFF);
        p.pio_write(0xCF9, 1, 0x02);
        assert_eq!(p.pio_read(0xCF9, 1), 0x02);
        assert_eq!(p.take_action(), None);
        p.pio_write(0xCF9, 1, 0x06);
        assert_eq!(p.take_action(), Some(PlatformAction::Reset));
        assert_eq!(
            p.pci.address(),
            0x8000_0800,
            "byte at 0xCF9 leaves the address"
        );
    }

    #[test]
    fn acpi_pm_ports_power_off() {
        let (mut p, _) = platform();
        let t0 = p.pio_read(0x608, 4);
        p.sync_retired_instructions(1_000_000);
        let t1 = p.pio_read(0x608, 4);
        assert_eq!(t1 - t0, 3579, "1 ms of PM timer ticks within one run");
        p.pio_write(0x604, 2, 5 << 10 | 1 << 13);
        assert_eq!(p.take_action(), Some(PlatformAction::PowerOff));
    }
}
