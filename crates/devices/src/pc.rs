//! [`PcPlatform`]: the PC devices at their standard ports and addresses, behind the
//! engine-facing [`Platform`] trait.
//!
//! | ports           | device                                   | IRQ |
//! |-----------------|------------------------------------------|-----|
//! | 0x20–0x21, 0xA0–0xA1, 0x4D0–0x4D1 | 8259A pair + ELCR ([`Pic`])  |     |
//! | 0x40–0x43       | 8254 PIT ([`Pit`])                       | 0   |
//! | 0x60, 0x64      | 8042 keyboard controller ([`I8042`])     | 1, 12 |
//! | 0x61            | system control port B ([`PortB`])        |     |
//! | 0x70–0x71       | RTC / CMOS ([`Cmos`])                    | 8   |
//! | 0x80            | POST code ([`PostCode`])                 |     |
//! | 0x92            | system control port A ([`Port92`])       |     |
//! | 0xF4            | debug exit ([`DebugExit`])               |     |
//! | 0x3F8–0x3FF     | COM1 16550A ([`Uart`])                   | 4   |
//! | 0xCF8–0xCFF     | PCI configuration, host bridge ([`PciHost`]); a byte at 0xCF9 is the reset control ([`ResetControl`]) | |
//! | 0x600–0x60B     | ACPI PM1a event/control, PM timer ([`AcpiPm`]) | 9 (SCI) |
//!
//! | MMIO            | device                                   |
//! |-----------------|------------------------------------------|
//! | 0xFEC00000 (4 KiB) | I/O APIC ([`IoApic`])                 |
//! | 0xFEE00000 (4 KiB) | local APIC ([`Lapic`])                |
//!
//! Interrupts (`pc/apic.rs`): each ISA IRQ line goes to the 8259 pair and to the IOAPIC (IRQ 0 on
//! pin 2, the MADT's override; the others on the pin of the same number). The CPU takes
//! vectors from the local APIC first, then from the 8259 when its INTR reaches the CPU: the
//! LAPIC is software-disabled (power-on wiring), LINT0 is unmasked in ExtINT mode, or an
//! IOAPIC entry is in ExtINT mode.
//!
//! Ownership: the platform owns every legacy device as a concrete field, so the machine can
//! reach them directly (timers, serial input, snapshots) and the port map is a
//! [`RangeMap`] of small ids resolved by a `match` — no `Rc<RefCell>`, no locks, and the
//! platform is `Send`. Devices added at run time ([`PcPlatform::add_pio_device`],
//! [`PcPlatform::add_mmio_device`]) are boxed trait objects in the same port map (so overlaps
//! with the legacy ports are rejected) or in an [`MmioBus`]. The two APICs are concrete fields
//! decoded before the bus (they take part in interrupt delivery); their ranges are reserved in
//! the bus so a run-time device cannot overlap them.
//!
//! Legacy devices decode byte-wide registers: a 2- or 4-byte access to them is split into byte
//! accesses at consecutive ports (as QEMU's memory API does), so e.g. `outw 0x4D0` writes both
//! ELCRs. The debug-exit port takes the full value of any width, and the PCI and ACPI PM
//! blocks see the access width (a dword CONFIG_ADDRESS, an atomic 32-bit PM timer read).
//!
//! Time: the platform owns the guest [`Clock`]. The machine reports the retired-instruction
//! count with [`PcPlatform::set_retired_instructions`] (icount clocks derive time from it; host
//! clocks ignore it) and calls [`PcPlatform::service`] between engine runs to advance the PIT
//! and RTC, raise their IRQs and move serial input into the UART; it runs the engine until
//! [`PcPlatform::next_deadline_ns`]. Port accesses to the PIT, port 0x61, the RTC, the ACPI
//! PM timer and LAPIC register accesses advance the timers to the current time first; engines
//! report their retired-instruction count before each port/MMIO access and RDTSC
//! ([`Platform::sync_retired_instructions`]), so under icount a polling loop sees time move
//! within one engine run. A port or MMIO write that moves the next timer deadline earlier
//! queues [`PlatformAction::TimerReprogrammed`] so the engine ends its slice and the machine
//! sizes the next one to the new deadline.
//!
//! Machine loop sketch:
//!
//! ```ignore
//! loop {
//!     plat.set_retired_instructions(engine.instructions());
//!     plat.service(plat.now_ns());
//!     let budget = match plat.next_deadline_ns() {
//!         Some(d) => clock_budget(d), // e.g. Clock::instructions_until
//!         None => DEFAULT_SLICE,
//!     };
//!     let exit = engine.run(&mut cpu, &mut mem, &mut plat, budget);
//!     // handle `exit`: take_action() results, halt (sleep until the deadline), …
//! }
//! ```

use crate::acpi_pm::{AcpiPm, AcpiPmState, ACPI_PM_BASE, ACPI_PM_PORTS};
use crate::bus::{
    mmio_ones, pio_ones, BusError, BusRange, MmioBus, MmioDevice, PioDevice, RangeMap, PIO_MAX_PORT,
};
use crate::clock::Clock;
use crate::cmos::{Cmos, CmosState, CMOS_INDEX_PORT};
use crate::i8042::{I8042State, AUX_IRQ, DATA_PORT, I8042, KBD_IRQ};
use crate::ioapic::{IoApic, IoApicState};
use crate::lapic::{Lapic, LapicState};
use crate::misc::{
    DebugExit, MiscState, Port92, PortB, PostCode, ResetControl, DEBUG_EXIT_PORT, PORT92_PORT,
    PORTB_PORT, POST_PORT,
};
use crate::pci::{PciHost, PciState, PCI_CONFIG_ADDRESS_PORT, PCI_PORTS};
use crate::pic::{Pic, PicChip, PicState, ELCR_PORT, MASTER_PORT, SLAVE_PORT};
use crate::pit::{Pit, PitState, PIT_PORT};
use crate::platform::{Platform, PlatformAction};
use crate::uart::{Uart, UartState, COM1_IRQ, COM1_PORT, UART_PORTS};
use crossbeam_channel::{Receiver, TryRecvError};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::Write;

mod apic;

/// IRQ line of PIT channel 0.
pub const PIT_IRQ: u8 = 0;
/// IRQ line of the RTC.
pub const RTC_IRQ: u8 = 8;
/// Where RAM below 4 GiB ends when [`PcConfig::new`] splits a RAM size (the same value as
/// `crane86_memory::phys::LOW_RAM_LIMIT`; pass the split explicitly if the machine differs).
pub const DEFAULT_LOW_RAM_LIMIT: u64 = 0xC000_0000;
/// Serial input moved from the channel into the UART backlog at most up to this many bytes.
const SERIAL_BACKLOG_LIMIT: usize = 4096;

/// What the platform is built from.
pub struct PcConfig {
    /// RAM mapped below 4 GiB in bytes (for the CMOS memory-size bytes).
    pub ram_below_4g: u64,
    /// RAM mapped from 4 GiB up in bytes.
    pub ram_above_4g: u64,
    /// Where COM1 output goes (flushed per byte).
    pub serial_out: Box<dyn Write + Send>,
    /// COM1 input, e.g. from [`crate::uart::spawn_stdin_reader`].
    pub serial_in: Option<Receiver<u8>>,
    /// What the RTC shows at guest time 0, in Unix seconds (UTC).
    pub start_time_unix: i64,
    /// The guest clock.
    pub clock: Clock,
}

impl PcConfig {
    /// `ram_size` bytes split at [`DEFAULT_LOW_RAM_LIMIT`], serial output discarded, no serial
    /// input, the RTC starting at the host's current time, a host clock. Override fields for
    /// deterministic runs (`start_time_unix`, `clock: Clock::icount(..)`).
    pub fn new(ram_size: u64) -> PcConfig {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        PcConfig {
            ram_below_4g: ram_size.min(DEFAULT_LOW_RAM_LIMIT),
            ram_above_4g: ram_size.saturating_sub(DEFAULT_LOW_RAM_LIMIT),
            serial_out: Box::new(std::io::sink()),
            serial_in: None,
            start_time_unix: start,
            clock: Clock::host(),
        }
    }
}

/// The legacy devices' port ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Builtin {
    PicMaster,
    PicSlave,
    Elcr,
    Pit,
    PortB,
    /// The 8042; the value is added to the offset (0x60 → 0, 0x64 → 4).
    I8042(u16),
    Cmos,
    Post,
    Port92,
    DebugExit,
    Com1,
    /// PCI configuration ports 0xCF8–0xCFF (with the reset control byte at 0xCF9).
    Pci,
    AcpiPm,
}

const BUILTIN_PORTS: &[(u16, u16, Builtin)] = &[
    (MASTER_PORT, 2, Builtin::PicMaster),
    (SLAVE_PORT, 2, Builtin::PicSlave),
    (ELCR_PORT, 2, Builtin::Elcr),
    (PIT_PORT, 4, Builtin::Pit),
    (DATA_PORT, 1, Builtin::I8042(0)),
    (PORTB_PORT, 1, Builtin::PortB),
    (DATA_PORT + 4, 1, Builtin::I8042(4)),
    (CMOS_INDEX_PORT, 2, Builtin::Cmos),
    (POST_PORT, 1, Builtin::Post),
    (PORT92_PORT, 1, Builtin::Port92),
    (DEBUG_EXIT_PORT, 1, Builtin::DebugExit),
    (COM1_PORT, UART_PORTS, Builtin::Com1),
    (PCI_CONFIG_ADDRESS_PORT, PCI_PORTS, Builtin::Pci),
    (ACPI_PM_BASE, ACPI_PM_PORTS, Builtin::AcpiPm),
];

enum Slot {
    Builtin(Builtin),
    Device(Box<dyn PioDevice + Send>),
}

/// Snapshot of every legacy device (run-time added devices are not included).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcState {
    pub pic: PicState,
    pub pit: PitState,
    pub cmos: CmosState,
    pub com1: UartState,
    pub i8042: I8042State,
    pub misc: MiscState,
    pub lapic: LapicState,
    pub ioapic: IoApicState,
    pub pci: PciState,
    pub acpi_pm: AcpiPmState,
    pub a20: bool,
    pub now_ns: u64,
}

/// The PC device model.
pub struct PcPlatform {
    pic: Pic,
    pit: Pit,
    port_b: PortB,
    cmos: Cmos,
    com1: Uart,
    i8042: I8042,
    post: PostCode,
    port92: Port92,
    debug_exit: DebugExit,
    reset_control: ResetControl,
    lapic: Lapic,
    ioapic: IoApic,
    pci: PciHost,
    acpi_pm: AcpiPm,
    ports: RangeMap<Slot>,
    mmio: MmioBus,
    serial_in: Option<Receiver<u8>>,
    actions: VecDeque<PlatformAction>,
    clock: Clock,
    retired: u64,
    /// Latest guest time the devices were advanced to.
    last_now_ns: u64,
    /// A20 as last driven by the 8042 or port 0x92.
    a20: bool,
}

impl PcPlatform {
    pub fn new(config: PcConfig) -> PcPlatform {
        let mut ports = RangeMap::new(PIO_MAX_PORT);
        for &(base, len, b) in BUILTIN_PORTS {
            // The table above is fixed and non-overlapping (checked by a unit test).
            let _ = ports.insert(u64::from(base), u64::from(len), Slot::Builtin(b));
        }
        let mut plat = PcPlatform {
            pic: Pic::new(),
            pit: Pit::new(),
            port_b: PortB::new(),
            cmos: Cmos::new_pc(
                config.start_time_unix,
                config.ram_below_4g,
                config.ram_above_4g,
            ),
            com1: Uart::new(config.serial_out),
            i8042: I8042::new(),
            post: PostCode::new(),
            port92: Port92::new(),
            debug_exit: DebugExit::new(),
            reset_control: ResetControl::new(),
            lapic: Lapic::new(),
            ioapic: IoApic::new(),
            pci: PciHost::new(),
            acpi_pm: AcpiPm::new(),
            ports,
            mmio: apic::reserved_mmio_bus(),
            serial_in: config.serial_in,
            actions: VecDeque::new(),
            clock: config.clock,
            retired: 0,
            last_now_ns: 0,
            a20: true,
        };
        let now = plat.now_ns();
        plat.advance_timers(now);
        plat
    }

    // ----- time -----

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Replace the clock (e.g. after restoring a snapshot).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// Tell the platform how many instructions the guest has retired (drives icount clocks).
    pub fn set_retired_instructions(&mut self, retired: u64) {
        self.retired = retired;
    }

    pub fn retired_instructions(&self) -> u64 {
        self.retired
    }

    /// Advance the PIT and RTC to `now_ns` (never backwards), raise their interrupts, and move
    /// waiting serial input into COM1.
    pub fn service(&mut self, now_ns: u64) {
        let now = now_ns.max(self.last_now_ns);
        self.advance_timers(now);
        self.pump_serial_input();
        self.sync_irqs();
    }

    /// Guest time of the next timer event (PIT channel 0 edge, PIT channel 2 change while its
    /// gate is open, RTC interrupt), `None` if no timer is armed. Run the CPU until then and
    /// call [`PcPlatform::service`].
    pub fn next_deadline_ns(&self) -> Option<u64> {
        [
            self.pit.next_deadline_ns(),
            self.cmos.next_deadline_ns(),
            self.lapic.next_deadline_ns(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn advance_timers(&mut self, now: u64) {
        self.last_now_ns = self.last_now_ns.max(now);
        let edges = self.pit.update(now);
        self.cmos.update(now);
        self.lapic.update(now);
        self.sync_pit_irq(edges);
        self.set_irq(RTC_IRQ, self.cmos.irq_level());
    }

    /// Mirror PIT channel 0's OUT on IRQ 0, with a low-high pulse for edges that happened
    /// since the last update (the PIC latches one; further ones are lost, as on hardware when
    /// the CPU does not keep up).
    fn sync_pit_irq(&mut self, edges: u64) {
        if edges > 0 {
            self.set_irq(PIT_IRQ, false);
            self.set_irq(PIT_IRQ, true);
        }
        self.set_irq(PIT_IRQ, self.pit.out(0));
    }

    fn pump_serial_input(&mut self) {
        let Some(rx) = &self.serial_in else {
            return;
        };
        let room = SERIAL_BACKLOG_LIMIT.saturating_sub(self.com1.input_backlog());
        let mut bytes = Vec::new();
        let mut closed = false;
        while bytes.len() < room {
            match rx.try_recv() {
                Ok(b) => bytes.push(b),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            self.serial_in = None;
        }
        if !bytes.is_empty() {
            self.com1.push_input(&bytes);
        }
    }

    /// Queue host input for COM1 (bypassing the channel) and update IRQ 4.
    pub fn push_serial_input(&mut self, bytes: &[u8]) {
        self.com1.push_input(bytes);
        self.set_irq(COM1_IRQ, self.com1.irq_level());
    }

    /// Queue keyboard bytes (scan codes in the guest's set) and update IRQ 1.
    pub fn push_keyboard_input(&mut self, bytes: &[u8]) {
        self.i8042.push_scancodes(bytes);
        self.sync_irqs();
    }

    /// Bring the UART, RTC and 8042 interrupt lines up to date on the PIC. Call it after
    /// changing those devices through the `*_mut` accessors.
    pub fn sync_irqs(&mut self) {
        self.set_irq(COM1_IRQ, self.com1.irq_level());
        self.set_irq(RTC_IRQ, self.cmos.irq_level());
        self.set_irq(KBD_IRQ, self.i8042.kbd_irq_level());
        self.set_irq(AUX_IRQ, self.i8042.aux_irq_level());
    }

    fn collect_actions(&mut self) {
        loop {
            let a = self
                .i8042
                .take_action()
                .or_else(|| self.port92.take_action())
                .or_else(|| self.reset_control.take_action())
                .or_else(|| self.acpi_pm.take_action())
                .or_else(|| self.debug_exit.take_action());
            let Some(a) = a else { break };
            if let PlatformAction::SetA20(on) = a {
                self.a20 = on;
            }
            self.actions.push_back(a);
        }
    }

    /// Queue [`PlatformAction::TimerReprogrammed`] when the next timer deadline moved
    /// earlier than `before`, so the engine ends its slice and the machine re-sizes the next.
    fn note_deadline_change(&mut self, before: Option<u64>) {
        let after = self.next_deadline_ns();
        let earlier = match (before, after) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(b), Some(a)) => a < b,
        };
        if earlier && !self.actions.contains(&PlatformAction::TimerReprogrammed) {
            self.actions.push_back(PlatformAction::TimerReprogrammed);
        }
    }

    // ----- machine-facing accessors -----

    pub fn pic(&self) -> &Pic {
        &self.pic
    }
    pub fn pic_mut(&mut self) -> &mut Pic {
        &mut self.pic
    }
    pub fn pit(&self) -> &Pit {
        &self.pit
    }
    pub fn pit_mut(&mut self) -> &mut Pit {
        &mut self.pit
    }
    pub fn cmos(&self) -> &Cmos {
        &self.cmos
    }
    pub fn cmos_mut(&mut self) -> &mut Cmos {
        &mut self.cmos
    }
    /// COM1.
    pub fn uart(&self) -> &Uart {
        &self.com1
    }
    /// COM1 (e.g. to push input or swap the output sink).
    pub fn uart_mut(&mut self) -> &mut Uart {
        &mut self.com1
    }
    pub fn i8042(&self) -> &I8042 {
        &self.i8042
    }
    pub fn i8042_mut(&mut self) -> &mut I8042 {
        &mut self.i8042
    }
    /// Last value written to port 0x80.
    pub fn post_code(&self) -> u8 {
        self.post.last()
    }
    /// A20 as last set by the guest (initially enabled).
    pub fn a20(&self) -> bool {
        self.a20
    }

    /// Replace the serial input channel.
    pub fn set_serial_input(&mut self, rx: Option<Receiver<u8>>) {
        self.serial_in = rx;
    }

    /// Register a port-I/O device for `len` ports from `base`; fails on overlap with any
    /// registered range, legacy ones included.
    pub fn add_pio_device(
        &mut self,
        base: u16,
        len: u16,
        device: Box<dyn PioDevice + Send>,
    ) -> Result<BusRange, BusError> {
        self.ports
            .insert(u64::from(base), u64::from(len), Slot::Device(device))
    }

    /// Register an MMIO device for `len` bytes from physical address `base`.
    pub fn add_mmio_device(
        &mut self,
        base: u64,
        len: u64,
        device: Box<dyn MmioDevice + Send>,
    ) -> Result<BusRange, BusError> {
        self.mmio.insert(base, len, device)
    }

    pub fn mmio_bus(&self) -> &MmioBus {
        &self.mmio
    }

    /// System reset (after [`PlatformAction::Reset`]): PIC, PIT, 8042, ports 0x61/0x92/0xCF9
    /// and the UART registers return to power-on state; CMOS RAM and the clock keep running
    /// (battery-backed), pending serial input and the output sink are kept.
    pub fn reset(&mut self) {
        let now = self.last_now_ns;
        self.pic = Pic::new();
        self.pit = Pit::new();
        self.pit.update(now);
        // Restart counter 0's power-on period from now rather than guest time 0.
        let mut st = self.pit.state();
        for ch in &mut st.channels {
            ch.start_tick = st.now_tick;
        }
        self.pit = Pit::from_state(&st);
        self.port_b = PortB::new();
        self.i8042 = I8042::new();
        self.port92.reset();
        self.reset_control = ResetControl::new();
        self.lapic = Lapic::new();
        self.ioapic = IoApic::new();
        self.pci = PciHost::new();
        self.acpi_pm = AcpiPm::new();
        self.debug_exit = DebugExit::new();
        let uart = UartState {
            rx_backlog: self.com1.state().rx_backlog,
            ..Default::default()
        };
        self.com1.restore_state(uart);
        self.actions.clear();
        self.a20 = true;
        self.sync_pit_irq(0);
        self.sync_irqs();
    }

    pub fn state(&self) -> PcState {
        PcState {
            pic: self.pic.state(),
            pit: self.pit.state(),
            cmos: self.cmos.state(),
            com1: self.com1.state(),
            i8042: self.i8042.state(),
            misc: MiscState {
                port_b: self.port_b.value(),
                port92: self.port92.read(),
                post_code: self.post.last(),
                post_writes: self.post.writes(),
                reset_control: self.reset_control.read(),
            },
            lapic: self.lapic.state(),
            ioapic: self.ioapic.state(),
            pci: self.pci.state(),
            acpi_pm: self.acpi_pm.state(),
            a20: self.a20,
            now_ns: self.last_now_ns,
        }
    }

    /// Restore the legacy devices (the clock is restored separately with
    /// [`PcPlatform::set_clock`]).
    pub fn restore_state(&mut self, st: &PcState) {
        self.pic = Pic::from_state(&st.pic);
        self.pit = Pit::from_state(&st.pit);
        self.cmos = Cmos::from_state(&st.cmos);
        self.com1.restore_state(st.com1.clone());
        self.i8042 = I8042::from_state(&st.i8042);
        self.port_b.set_value(st.misc.port_b);
        self.port92.set_value(st.misc.port92);
        self.post.set(st.misc.post_code, st.misc.post_writes);
        self.reset_control.set_value(st.misc.reset_control);
        self.lapic = Lapic::from_state(&st.lapic);
        self.ioapic = IoApic::from_state(&st.ioapic);
        self.pci = PciHost::from_state(&st.pci);
        self.acpi_pm = AcpiPm::from_state(&st.acpi_pm);
        self.a20 = st.a20;
        self.last_now_ns = st.now_ns;
        self.actions.clear();
    }

    // ----- port dispatch -----

    fn read_byte(&mut self, port: u16) -> u8 {
        let (b, off) = match self.ports.find_mut(u64::from(port)) {
            None => return 0xFF,
            Some((_, off, Slot::Device(dev))) => return dev.read(off as u16, 1) as u8,
            Some((_, off, Slot::Builtin(b))) => (*b, off as u16),
        };
        self.builtin_read(b, off)
    }

    fn write_byte(&mut self, port: u16, value: u8) {
        let (b, off) = match self.ports.find_mut(u64::from(port)) {
            None => return,
            Some((_, off, Slot::Device(dev))) => return dev.write(off as u16, 1, value.into()),
            Some((_, off, Slot::Builtin(b))) => (*b, off as u16),
        };
        self.builtin_write(b, off, value);
    }

    fn builtin_read(&mut self, b: Builtin, off: u16) -> u8 {
        match b {
            Builtin::PicMaster => self.pic.read(PicChip::Master, off),
            Builtin::PicSlave => self.pic.read(PicChip::Slave, off),
            Builtin::Elcr => self.pic.read_elcr(off),
            Builtin::Pit => {
                let now = self.now_ns();
                self.advance_timers(now);
                self.pit.read(off)
            }
            Builtin::PortB => {
                let now = self.now_ns();
                self.advance_timers(now);
                self.port_b.read(self.pit.out(2), self.last_now_ns)
            }
            Builtin::Cmos => {
                let now = self.now_ns();
                self.advance_timers(now);
                let v = self.cmos.read(off);
                self.set_irq(RTC_IRQ, self.cmos.irq_level());
                v
            }
            Builtin::Com1 => {
                let v = self.com1.read(off);
                self.set_irq(COM1_IRQ, self.com1.irq_level());
                v
            }
            Builtin::I8042(base) => {
                let off = off + base;
                if off == 0 {
                    // Reading the data port drops the IRQ; a following byte raises it again.
                    self.set_irq(KBD_IRQ, false);
                    self.set_irq(AUX_IRQ, false);
                }
                let v = self.i8042.read(off);
                self.sync_irqs();
                v
            }
            Builtin::Post => self.post.read(),
            Builtin::Port92 => self.port92.read(),
            Builtin::DebugExit => 0xFF,
            // Always reached through the width-aware path in `pio_read`.
            Builtin::Pci | Builtin::AcpiPm => 0xFF,
        }
    }

    fn builtin_write(&mut self, b: Builtin, off: u16, value: u8) {
        match b {
            Builtin::PicMaster => self.pic.write(PicChip::Master, off, value),
            Builtin::PicSlave => self.pic.write(PicChip::Slave, off, value),
            Builtin::Elcr => self.pic.write_elcr(off, value),
            Builtin::Pit => {
                let now = self.now_ns();
                self.advance_timers(now);
                let before = self.next_deadline_ns();
                self.pit.write(off, value);
                self.sync_pit_irq(0);
                self.note_deadline_change(before);
            }
            Builtin::PortB => {
                let now = self.now_ns();
                self.advance_timers(now);
                let before = self.next_deadline_ns();
                let gate = self.port_b.write(value);
                self.pit.set_gate(2, gate);
                self.note_deadline_change(before);
            }
            Builtin::Cmos => {
                let now = self.now_ns();
                self.advance_timers(now);
                let before = self.next_deadline_ns();
                self.cmos.write(off, value);
                self.set_irq(RTC_IRQ, self.cmos.irq_level());
                self.note_deadline_change(before);
            }
            Builtin::Com1 => {
                self.com1.write(off, value);
                self.set_irq(COM1_IRQ, self.com1.irq_level());
            }
            Builtin::I8042(base) => {
                self.i8042.write(off + base, value);
                self.sync_irqs();
                self.collect_actions();
            }
            Builtin::Post => self.post.write(value),
            Builtin::Port92 => {
                self.port92.write(value);
                self.collect_actions();
            }
            Builtin::DebugExit => {
                self.debug_exit.write(value.into());
                self.collect_actions();
            }
            Builtin::Pci | Builtin::AcpiPm => {}
        }
    }
}

impl Platform for PcPlatform {
    fn pio_read(&mut self, port: u16, size: u8) -> u32 {
        let size = size.clamp(1, 4);
        match self.ports.find_mut(u64::from(port)) {
            None => return pio_ones(size),
            Some((_, off, Slot::Device(dev))) => {
                return dev.read(off as u16, size) & pio_ones(size)
            }
            Some((_, off, Slot::Builtin(b @ (Builtin::Pci | Builtin::AcpiPm)))) => {
                let (b, off) = (*b, off as u16);
                return self.wide_read(b, off, size) & pio_ones(size);
            }
            Some((_, _, Slot::Builtin(_))) => {}
        }
        (0..size).fold(0u32, |acc, i| {
            acc | u32::from(self.read_byte(port.wrapping_add(u16::from(i)))) << (8 * i)
        })
    }

    fn pio_write(&mut self, port: u16, size: u8, value: u32) {
        let size = size.clamp(1, 4);
        let value = value & pio_ones(size);
        match self.ports.find_mut(u64::from(port)) {
            None => return,
            Some((_, off, Slot::Device(dev))) => return dev.write(off as u16, size, value),
            Some((_, _, Slot::Builtin(Builtin::DebugExit))) => {
                self.debug_exit.write(value);
                self.collect_actions();
                return;
            }
            Some((_, off, Slot::Builtin(b @ (Builtin::Pci | Builtin::AcpiPm)))) => {
                let (b, off) = (*b, off as u16);
                return self.wide_write(b, off, size, value);
            }
            Some((_, _, Slot::Builtin(_))) => {}
        }
        for i in 0..size {
            self.write_byte(port.wrapping_add(u16::from(i)), (value >> (8 * i)) as u8);
        }
    }

    fn mmio_read(&mut self, paddr: u64, size: u8) -> u64 {
        if let Some(v) = self.apic_mmio_read(paddr, size) {
            return v;
        }
        self.mmio
            .try_read(paddr, size)
            .unwrap_or_else(|| mmio_ones(size))
    }

    fn mmio_write(&mut self, paddr: u64, size: u8, value: u64) {
        if self.apic_mmio_write(paddr, size, value) {
            return;
        }
        self.mmio.write(paddr, size, value);
    }

    fn interrupt_pending(&self) -> bool {
        self.cpu_interrupt_pending()
    }

    fn ack_interrupt(&mut self) -> Option<u8> {
        self.cpu_acknowledge()
    }

    fn sync_retired_instructions(&mut self, retired: u64) {
        self.retired = self.retired.max(retired);
    }

    fn read_msr(&mut self, msr: u32) -> Option<u64> {
        self.apic_read_msr(msr)
    }

    fn write_msr(&mut self, msr: u32, value: u64) -> bool {
        self.apic_write_msr(msr, value)
    }

    fn take_action(&mut self) -> Option<PlatformAction> {
        self.actions.pop_front()
    }

    fn now_ns(&self) -> u64 {
        self.clock.now_ns(self.retired).max(self.last_now_ns)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cmos::{REG_B, REG_B_24H, REG_B_PIE, REG_C, REG_SECONDS};
    use crate::pit::ticks_to_ns;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    pub(crate) struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// 128 MiB, RTC at 2024-02-29 23:59:58, icount clock with 1 ns per instruction.
    pub(crate) fn platform() -> (PcPlatform, Capture) {
        let cap = Capture::default();
        let mut cfg = PcConfig::new(128 << 20);
        cfg.serial_out = Box::new(cap.clone());
        cfg.start_time_unix = 1_709_251_198;
        cfg.clock = Clock::icount(0);
        (PcPlatform::new(cfg), cap)
    }

    pub(crate) fn outb(p: &mut PcPlatform, port: u16, v: u8) {
        p.pio_write(port, 1, v.into());
    }

    pub(crate) fn inb(p: &mut PcPlatform, port: u16) -> u8 {
        p.pio_read(port, 1) as u8
    }

    /// Linux's 8259 setup (vectors 0x30/0x38), then unmask `irqs`.
    pub(crate) fn init_pic(p: &mut PcPlatform, unmask: u16) {
        for (port, v) in [
            (0x20, 0x11),
            (0x21, 0x30),
            (0x21, 0x04),
            (0x21, 0x01),
            (0xA0, 0x11),
            (0xA1, 0x38),
            (0xA1, 0x02),
            (0xA1, 0x01),
        ] {
            outb(p, port, v);
        }
        let mask = !(unmask | if unmask & 0xFF00 != 0 { 1 << 2 } else { 0 });
        outb(p, 0x21, mask as u8);
        outb(p, 0xA1, (mask >> 8) as u8);
    }

    fn actions(p: &mut PcPlatform) -> Vec<PlatformAction> {
        std::iter::from_fn(|| p.take_action()).collect()
    }

    #[test]
    fn builtin_port_table_has_no_overlaps() {
        let mut m = RangeMap::new(PIO_MAX_PORT);
        for &(base, len, b) in BUILTIN_PORTS {
            m.insert(u64::from(base), u64::from(len), b)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn platform_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<PcPlatform>();
    }

    #[test]
    fn unclaimed_ports_and_mmio_read_all_ones() {
        let (mut p, _) = platform();
        assert_eq!(p.pio_read(0x2F8, 1), 0xFF);
        assert_eq!(p.pio_read(0x2F8, 2), 0xFFFF);
        assert_eq!(p.pio_read(0x2F8, 4), 0xFFFF_FFFF);
        p.pio_write(0x2F8, 1, 0x55); // dropped
        assert_eq!(p.mmio_read(0xFEB0_0000, 4), 0xFFFF_FFFF);
        assert_eq!(p.mmio_read(0xFEB0_0000, 8), u64::MAX);
        p.mmio_write(0xFEB0_0000, 4, 0);
        assert!(!p.interrupt_pending());
        assert_eq!(p.ack_interrupt(), None);
    }

    #[test]
    fn serial_output() {
        let (mut p, cap) = platform();
        for &b in b"Linux version" {
            while inb(&mut p, 0x3FD) & 0x20 == 0 {}
            outb(&mut p, 0x3F8, b);
        }
        assert_eq!(cap.0.lock().unwrap().as_slice(), b"Linux version");
    }

    #[test]
    fn pit_timer_interrupts_through_the_pic() {
        let (mut p, _) = platform();
        init_pic(&mut p, 1 << 0);
        // HZ=1000 periodic timer.
        outb(&mut p, 0x43, 0x34);
        outb(&mut p, 0x40, (1193 & 0xFF) as u8);
        outb(&mut p, 0x40, (1193 >> 8) as u8);
        let mut last = 0;
        for n in 1..=5u64 {
            let d = p.next_deadline_ns().unwrap();
            assert_eq!(d, ticks_to_ns(n * 1193));
            assert!(d > last);
            last = d;
            p.set_retired_instructions(d - 1);
            p.service(p.now_ns());
            assert!(!p.interrupt_pending(), "not before the deadline");
            p.set_retired_instructions(d);
            p.service(p.now_ns());
            assert!(p.interrupt_pending());
            assert_eq!(p.ack_interrupt(), Some(0x30));
            outb(&mut p, 0x20, 0x20); // EOI
        }
        // ~1 ms period.
        assert!((999_000..1_001_000).contains(&(last / 5)));
        assert_eq!(p.now_ns(), last);
    }

    #[test]
    fn missed_ticks_coalesce_into_one_interrupt() {
        let (mut p, _) = platform();
        init_pic(&mut p, 1);
        p.service(1_000_000_000);
        assert_eq!(p.ack_interrupt(), Some(0x30));
        outb(&mut p, 0x20, 0x20);
        assert!(!p.interrupt_pending());
    }

    #[test]
    fn serial_input_from_channel_raises_irq4() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut cfg = PcConfig::new(64 << 20);
        cfg.serial_in = Some(rx);
        cfg.clock = Clock::icount(0);
        let mut p = PcPlatform::new(cfg);
        p.pio_write(0x21, 1, 0xFF); // keep the PIT quiet until init
        init_pic(&mut p, 1 << 4);
        outb(&mut p, 0x3F9, 0x01); // IER: RX data
        outb(&mut p, 0x3FC, 0x0B); // MCR: DTR RTS OUT2
        assert!(!p.interrupt_pending());
        for &b in b"ok" {
            tx.send(b).unwrap();
        }
        p.service(0);
        assert!(p.interrupt_pending());
        assert_eq!(p.ack_interrupt(), Some(0x34));
        assert_eq!(inb(&mut p, 0x3FA), 0x04, "IIR: RX data");
        assert_eq!(inb(&mut p, 0x3F8), b'o');
        assert_eq!(inb(&mut p, 0x3F8), b'k');
        assert_eq!(inb(&mut p, 0x3FD) & 1, 0);
        outb(&mut p, 0x20, 0x20);
        assert!(!p.interrupt_pending());
        // A closed channel is dropped quietly.
        drop(tx);
        p.service(10);
        p.push_serial_input(b"!");
        assert_eq!(p.ack_interrupt(), Some(0x34));
        assert_eq!(inb(&mut p, 0x3F8), b'!');
    }

    #[test]
    fn cmos_time_through_ports_and_rtc_irq8() {
        let (mut p, _) = platform();
        outb(&mut p, 0x70, REG_SECONDS);
        assert_eq!(inb(&mut p, 0x71), 0x58);
        p.set_retired_instructions(1_000_000_000);
        outb(&mut p, 0x70, REG_SECONDS);
        assert_eq!(
            inb(&mut p, 0x71),
            0x59,
            "time advanced by the port access itself"
        );
        // Memory size bytes for 128 MiB.
        outb(&mut p, 0x70, 0x34);
        assert_eq!(inb(&mut p, 0x71), 0x00);
        outb(&mut p, 0x70, 0x35);
        assert_eq!(inb(&mut p, 0x71), 0x07);
        // Periodic interrupt on IRQ 8 through the slave PIC.
        init_pic(&mut p, 1 << 8);
        outb(&mut p, 0x70, REG_B);
        outb(&mut p, 0x71, REG_B_24H | REG_B_PIE);
        let d = p.next_deadline_ns().unwrap();
        assert!(d - 1_000_000_000 <= 976_563);
        p.service(d);
        assert!(p.interrupt_pending());
        assert_eq!(p.ack_interrupt(), Some(0x38));
        outb(&mut p, 0x70, REG_C);
        assert_eq!(inb(&mut p, 0x71) & 0xC0, 0xC0);
        outb(&mut p, 0xA0, 0x20);
        outb(&mut p, 0x20, 0x20);
        assert!(!p.interrupt_pending());
    }

    #[test]
    fn pit_channel2_calibration_through_port_61() {
        let (mut p, _) = platform();
        // SeaBIOS calibrate_tsc: gate on, speaker off, counter 2 mode 0, count 1000.
        let orig = inb(&mut p, 0x61);
        outb(&mut p, 0x61, (orig & !0x02) | 0x01);
        outb(&mut p, 0x43, 0xB0);
        outb(&mut p, 0x42, (1000 & 0xFF) as u8);
        outb(&mut p, 0x42, (1000 >> 8) as u8);
        let t0 = p.now_ns();
        assert_eq!(inb(&mut p, 0x61) & 0x20, 0);
        // The deadline covers channel 2's terminal count.
        let d = p.next_deadline_ns().unwrap();
        assert_eq!(d, ticks_to_ns(crate::pit::ns_to_ticks(t0) + 1000));
        let mut polls = 0u64;
        while inb(&mut p, 0x61) & 0x20 == 0 {
            polls += 1;
            p.set_retired_instructions(p.retired_instructions() + 1000);
        }
        let elapsed = p.now_ns() - t0;
        assert!(
            (838_000..=839_000).contains(&elapsed),
            "{elapsed} ns after {polls} polls"
        );
        assert_eq!(inb(&mut p, 0x61) & 0x01, 0x01);
    }

    #[test]
    fn refresh_bit_toggles_with_time() {
        let (mut p, _) = platform();
        let a = inb(&mut p, 0x61) & 0x10;
        p.set_retired_instructions(15_085);
        let b = inb(&mut p, 0x61) & 0x10;
        assert_ne!(a, b);
    }

    #[test]
    fn debug_exit_any_width() {
        let (mut p, _) = platform();
        p.pio_write(0xF4, 1, 0x10);
        p.pio_write(0xF4, 4, 0x1234_5678);
        assert_eq!(
            actions(&mut p),
            vec![
                PlatformAction::DebugExit(0x10),
                PlatformAction::DebugExit(0x1234_5678)
            ]
        );
    }

    #[test]
    fn a20_from_port92_and_8042_last_writer_wins() {
        let (mut p, _) = platform();
        assert!(p.a20());
        let v = inb(&mut p, 0x92);
        outb(&mut p, 0x92, v & !0x02);
        assert!(!p.a20());
        // 8042: write output port with A20 set.
        outb(&mut p, 0x64, 0xD1);
        outb(&mut p, 0x60, 0xDF);
        assert!(p.a20());
        outb(&mut p, 0x64, 0xDD);
        assert!(!p.a20());
        assert_eq!(
            actions(&mut p),
            vec![
                PlatformAction::SetA20(false),
                PlatformAction::SetA20(true),
                PlatformAction::SetA20(false)
            ]
        );
    }

    #[test]
    fn resets() {
        let (mut p, _) = platform();
        outb(&mut p, 0xCF9, 0x02);
        assert_eq!(actions(&mut p), vec![]);
        outb(&mut p, 0xCF9, 0x06);
        assert_eq!(actions(&mut p), vec![PlatformAction::Reset]);
        outb(&mut p, 0x64, 0xFE);
        assert_eq!(actions(&mut p), vec![PlatformAction::Reset]);
        outb(&mut p, 0x92, 0x03);
        assert_eq!(
            actions(&mut p),
            vec![PlatformAction::SetA20(true), PlatformAction::Reset]
        );
    }

    #[test]
    fn keyboard_irq1() {
        let (mut p, _) = platform();
        init_pic(&mut p, 1 << 1);
        outb(&mut p, 0x60, 0xFF); // keyboard reset: ACK, BAT
        assert_eq!(p.ack_interrupt(), Some(0x31));
        assert_eq!(inb(&mut p, 0x60), 0xFA);
        outb(&mut p, 0x20, 0x20);
        // The second byte makes a new edge.
        assert_eq!(p.ack_interrupt(), Some(0x31));
        assert_eq!(inb(&mut p, 0x60), 0xAA);
        outb(&mut p, 0x20, 0x20);
        assert!(!p.interrupt_pending());
        p.push_keyboard_input(&[0x1C]);
        assert_eq!(p.ack_interrupt(), Some(0x31));
        assert_eq!(inb(&mut p, 0x60), 0x1C);
    }

    #[test]
    fn post_code() {
        let (mut p, _) = platform();
        outb(&mut p, 0x80, 0x42);
        assert_eq!(p.post_code(), 0x42);
        assert_eq!(inb(&mut p, 0x80), 0x42);
    }

    #[test]
    fn wide_accesses_split_into_bytes() {
        let (mut p, _) = platform();
        p.pio_write(0x4D0, 2, 0x0C20);
        assert_eq!(p.pic().read_elcr(0), 0x20);
        assert_eq!(p.pic().read_elcr(1), 0x0C);
        assert_eq!(p.pio_read(0x4D0, 2), 0x0C20);
        // IRR (0x20) and IMR (0x21) in one word.
        outb(&mut p, 0x21, 0xA5);
        assert_eq!(p.pio_read(0x20, 2) >> 8, 0xA5);
        // A dword from 0x3FE covers MSR, SCR and two unclaimed ports.
        outb(&mut p, 0x3FF, 0x77);
        assert_eq!(p.pio_read(0x3FE, 4) >> 8, 0x00FF_FF77);
    }

    #[test]
    fn run_time_devices() {
        #[derive(Default)]
        struct Dev(Arc<Mutex<Vec<(u16, u8, u32)>>>);
        impl PioDevice for Dev {
            fn read(&mut self, offset: u16, size: u8) -> u32 {
                0x1000 + u32::from(offset) * 0x10 + u32::from(size)
            }
            fn write(&mut self, offset: u16, size: u8, value: u32) {
                self.0.lock().unwrap().push((offset, size, value));
            }
        }
        let (mut p, _) = platform();
        let err = p
            .add_pio_device(0x3F0, 0x10, Box::new(Dev::default()))
            .unwrap_err();
        assert!(err.to_string().contains("[0x3f8..=0x3ff]"), "{err}");
        let log = Arc::new(Mutex::new(Vec::new()));
        p.add_pio_device(0x510, 4, Box::new(Dev(log.clone())))
            .unwrap();
        assert_eq!(p.pio_read(0x512, 2), 0x1022);
        p.pio_write(0x510, 4, 0xDEAD_BEEF);
        assert_eq!(log.lock().unwrap().as_slice(), &[(0, 4, 0xDEAD_BEEF)]);
        assert!(p
            .add_mmio_device(0xFEB0_0000, 0x1000, Box::new(NullMmio))
            .is_ok());
        assert_eq!(p.mmio_read(0xFEB0_0004, 4), 0x42);
        // The two APIC pages are reserved in the bus.
        assert_eq!(p.mmio_bus().ranges().count(), 3);
    }

    struct NullMmio;
    impl MmioDevice for NullMmio {
        fn read(&mut self, _offset: u64, _size: u8) -> u64 {
            0x42
        }
        fn write(&mut self, _offset: u64, _size: u8, _value: u64) {}
    }

    #[test]
    fn system_reset_restores_power_on_devices() {
        let (mut p, _) = platform();
        init_pic(&mut p, 0xFFFF);
        outb(&mut p, 0x92, 0x03);
        p.set_retired_instructions(5_000_000_000);
        p.service(p.now_ns());
        p.reset();
        assert_eq!(p.pic().vector_base(PicChip::Master), 0);
        assert_eq!(inb(&mut p, 0x92), 0x02, "fast-reset bit cleared");
        assert!(p.a20());
        // Counter 0 restarts its 18.2 Hz period from now.
        assert_eq!(
            p.next_deadline_ns().unwrap(),
            ticks_to_ns(crate::pit::ns_to_ticks(5_000_000_000) + 65536)
        );
        // The RTC kept running.
        assert_eq!(p.cmos().unix_time(), 1_709_251_198 + 5);
    }

    #[test]
    fn state_round_trip_through_json() {
        let (mut p, _) = platform();
        init_pic(&mut p, 1);
        outb(&mut p, 0x3F8, b'x');
        p.uart_mut().push_input(b"in");
        p.set_retired_instructions(3_000_000);
        p.service(p.now_ns());
        let st = p.state();
        let json = serde_json::to_string(&st).unwrap();
        let back: PcState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, st);
        let (mut q, _) = platform();
        q.restore_state(&back);
        assert_eq!(q.state(), st);
        assert_eq!(q.interrupt_pending(), p.interrupt_pending());
    }
}
