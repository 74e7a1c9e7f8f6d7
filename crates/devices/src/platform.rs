//! The engine ↔ machine boundary. Engines (interp, jit, kvm) execute guest code; whenever the
//! guest touches a port, device memory or needs an interrupt vector they call a `Platform`.

/// A machine-level event a device asked for. Engines poll it after port/MMIO writes with
/// [`Platform::take_action`] and end their run for anything but A20 changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformAction {
    /// The A20 gate changed (port 0x92 or the 8042 output port).
    SetA20(bool),
    /// System reset requested (port 0x92 bit 0, 8042 pulse, port 0xCF9).
    Reset,
    /// Power off (ACPI S5).
    PowerOff,
    /// The guest wrote `value` to the debug-exit port: exit with status `(value << 1) | 1`.
    DebugExit(u32),
    /// A timer was programmed to expire earlier than the platform's previous next deadline:
    /// end the engine run so the machine services devices and sizes the next slice to it.
    TimerReprogrammed,
}

pub trait Platform {
    /// Port input of `size` bytes (1, 2 or 4). Unclaimed ports read as all ones.
    fn pio_read(&mut self, port: u16, size: u8) -> u32;
    /// Port output. Writes to unclaimed ports are ignored.
    fn pio_write(&mut self, port: u16, size: u8, value: u32);
    /// Read `size` bytes (1, 2, 4 or 8) of device memory at physical `paddr`. Unclaimed
    /// addresses read as all ones.
    fn mmio_read(&mut self, paddr: u64, size: u8) -> u64;
    fn mmio_write(&mut self, paddr: u64, size: u8, value: u64);
    /// True when a maskable interrupt is waiting for the CPU (INTR line high). The answer
    /// may change only through the CPU's calls into the platform (port and device-memory
    /// accesses, MSR writes, acknowledges) or between engine runs: engines ask at the start
    /// of a run and at a block boundary after such a call, not after every block.
    fn interrupt_pending(&self) -> bool;
    /// The INTA cycle: the vector of the highest-priority pending interrupt, now in service.
    fn ack_interrupt(&mut self) -> Option<u8>;
    /// Take the oldest pending machine-level action.
    fn take_action(&mut self) -> Option<PlatformAction>;
    /// Guest time in nanoseconds (drives RDTSC).
    fn now_ns(&self) -> u64;
    /// The engine's retired-instruction count, reported before port I/O, MMIO and RDTSC
    /// within a run so that deterministic (icount) clocks advance while a guest polls a timer
    /// (PIT channel 2 through port 0x61, the PM timer, the LAPIC current count). Platforms
    /// whose time does not depend on it ignore it.
    fn sync_retired_instructions(&mut self, _retired: u64) {}
    /// RDMSR of an MSR the CPU does not model itself: `Some(value)` if the platform claims
    /// it (the LAPIC's IA32_TSC_DEADLINE, in guest ns), `None` otherwise (#GP).
    fn read_msr(&mut self, _msr: u32) -> Option<u64> {
        None
    }
    /// WRMSR of an MSR the CPU does not model itself: true if the platform claimed it.
    fn write_msr(&mut self, _msr: u32, _value: u64) -> bool {
        false
    }
}

/// A platform with no devices: every port and MMIO address is unclaimed, no interrupts.
/// Useful for instruction tests and the conformance runner.
#[derive(Debug, Default)]
pub struct NullPlatform {
    pub actions: Vec<PlatformAction>,
    /// Writes seen, for tests: (port, size, value).
    pub pio_writes: Vec<(u16, u8, u32)>,
}

impl Platform for NullPlatform {
    fn pio_read(&mut self, _port: u16, size: u8) -> u32 {
        if size >= 4 {
            u32::MAX
        } else {
            (1u32 << (size * 8)) - 1
        }
    }
    fn pio_write(&mut self, port: u16, size: u8, value: u32) {
        self.pio_writes.push((port, size, value));
        if port == 0xF4 {
            self.actions.push(PlatformAction::DebugExit(value));
        }
    }
    fn mmio_read(&mut self, _paddr: u64, size: u8) -> u64 {
        if size >= 8 {
            u64::MAX
        } else {
            (1u64 << (size * 8)) - 1
        }
    }
    fn mmio_write(&mut self, _paddr: u64, _size: u8, _value: u64) {}
    fn interrupt_pending(&self) -> bool {
        false
    }
    fn ack_interrupt(&mut self) -> Option<u8> {
        None
    }
    fn take_action(&mut self) -> Option<PlatformAction> {
        if self.actions.is_empty() {
            None
        } else {
            Some(self.actions.remove(0))
        }
    }
    fn now_ns(&self) -> u64 {
        0
    }
}
