//! The PC device model. [`platform::Platform`] is the boundary every engine talks to (port I/O,
//! MMIO, interrupt acknowledge, machine-level actions such as reset or A20); [`pc::PcPlatform`]
//! implements it with the legacy PC devices at their standard ports, the local APIC and
//! IOAPIC ([`lapic`], [`ioapic`]), the PCI host bridge ([`pci`]) and the ACPI power-management
//! registers ([`acpi_pm`]).
//!
//! Every device keeps its logic apart from the I/O plumbing, documents each register bit with
//! a constant, and has a serde `State` struct so it can be snapshotted. Devices never read host
//! time: guest nanoseconds come from the [`clock::Clock`] through the platform.

pub mod acpi_pm;
pub mod bus;
pub mod clock;
pub mod cmos;
pub mod i8042;
pub mod ioapic;
pub mod lapic;
pub mod misc;
pub mod pc;
pub mod pci;
pub mod pic;
pub mod pit;
pub mod platform;
pub mod uart;

pub use bus::{BusError, BusRange, MmioBus, MmioDevice, PioBus, PioDevice, RangeMap};
pub use clock::{Clock, ClockMode, ClockState};
pub use pc::{PcConfig, PcPlatform, PcState};
pub use platform::{Platform, PlatformAction};
pub use uart::{spawn_input_reader, spawn_stdin_reader};
