//! PCI configuration mechanism #1 (ports 0xCF8–0xCFF) with one function on bus 0: an Intel
//! 440FX host bridge (8086:1237, class 0x060000) at device 0; every other slot is empty
//! (vendor ID reads 0xFFFF). The platform sends a byte access to 0xCF9 to the PIIX reset
//! control register instead (see [`crate::misc::ResetControl`]).

use serde::{Deserialize, Serialize};
use tracing::warn;

/// CONFIG_ADDRESS port (dword access only).
pub const PCI_CONFIG_ADDRESS_PORT: u16 = 0xCF8;
/// CONFIG_DATA port (byte/word/dword at 0xCFC–0xCFF).
pub const PCI_CONFIG_DATA_PORT: u16 = 0xCFC;
/// Ports of the mechanism: 0xCF8..=0xCFF.
pub const PCI_PORTS: u16 = 8;

/// CONFIG_ADDRESS bit 31: enable configuration cycles.
pub const ADDR_ENABLE: u32 = 1 << 31;
/// CONFIG_ADDRESS bits 23:16: bus.
pub const ADDR_BUS_SHIFT: u32 = 16;
/// CONFIG_ADDRESS bits 15:11: device.
pub const ADDR_DEVICE_SHIFT: u32 = 11;
/// CONFIG_ADDRESS bits 10:8: function.
pub const ADDR_FUNCTION_SHIFT: u32 = 8;
/// CONFIG_ADDRESS bits 7:2: dword register number.
pub const ADDR_REGISTER_MASK: u32 = 0xFC;
const ADDR_WRITABLE: u32 = 0x80FF_FFFC;

// Configuration-space offsets of the type-0 header.
/// Vendor ID (word).
pub const CFG_VENDOR_ID: usize = 0x00;
/// Device ID (word).
pub const CFG_DEVICE_ID: usize = 0x02;
/// Command register (word).
pub const CFG_COMMAND: usize = 0x04;
/// Status register (word).
pub const CFG_STATUS: usize = 0x06;
/// Revision ID (byte).
pub const CFG_REVISION: usize = 0x08;
/// Class code: programming interface, subclass, base class (bytes 0x09..0x0B).
pub const CFG_CLASS: usize = 0x09;
/// Header type (byte).
pub const CFG_HEADER_TYPE: usize = 0x0E;
/// First device-specific register (0x40..0xFF are read/write storage on the host bridge:
/// PAM, SMRAM and DRAM registers have no effect here).
pub const CFG_DEVICE_SPECIFIC: usize = 0x40;

/// Intel.
pub const VENDOR_INTEL: u16 = 0x8086;
/// 82441FX (440FX) PCI and memory controller.
pub const DEVICE_440FX: u16 = 0x1237;
/// Class 06 (bridge), subclass 00 (host bridge), interface 00.
pub const CLASS_HOST_BRIDGE: u32 = 0x06_0000;
/// Command bits the host bridge implements: I/O space, memory space, bus master.
const COMMAND_WRITABLE: u16 = 0x0007;

/// Snapshot of the host bridge and the address register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciState {
    pub address: u32,
    pub host_bridge_config: Vec<u8>,
}

/// The configuration mechanism and the host bridge behind it.
#[derive(Clone, Debug)]
pub struct PciHost {
    address: u32,
    config: [u8; 256],
}

impl Default for PciHost {
    fn default() -> Self {
        PciHost::new()
    }
}

impl PciHost {
    pub fn new() -> PciHost {
        let mut config = [0u8; 256];
        config[CFG_VENDOR_ID..CFG_VENDOR_ID + 2].copy_from_slice(&VENDOR_INTEL.to_le_bytes());
        config[CFG_DEVICE_ID..CFG_DEVICE_ID + 2].copy_from_slice(&DEVICE_440FX.to_le_bytes());
        config[CFG_COMMAND..CFG_COMMAND + 2].copy_from_slice(&0x0006u16.to_le_bytes());
        // Status: fast back-to-back capable, medium DEVSEL timing.
        config[CFG_STATUS..CFG_STATUS + 2].copy_from_slice(&0x0280u16.to_le_bytes());
        config[CFG_REVISION] = 0x02;
        config[CFG_CLASS..CFG_CLASS + 3].copy_from_slice(&CLASS_HOST_BRIDGE.to_le_bytes()[..3]);
        config[CFG_HEADER_TYPE] = 0x00;
        PciHost { address: 0, config }
    }

    pub fn state(&self) -> PciState {
        PciState {
            address: self.address,
            host_bridge_config: self.config.to_vec(),
        }
    }

    pub fn from_state(s: &PciState) -> PciHost {
        let mut p = PciHost::new();
        p.address = s.address;
        if s.host_bridge_config.len() == 256 {
            p.config.copy_from_slice(&s.host_bridge_config);
        }
        p
    }

    /// The CONFIG_ADDRESS register.
    pub fn address(&self) -> u32 {
        self.address
    }

    /// Offset of the addressed register in the host bridge's space, or `None` when the
    /// address selects an empty slot or configuration cycles are disabled.
    fn target(&self, port_offset: u16) -> Option<usize> {
        let a = self.address;
        if a & ADDR_ENABLE == 0 {
            return None;
        }
        let bus = (a >> ADDR_BUS_SHIFT) & 0xFF;
        let devfn = (a >> ADDR_FUNCTION_SHIFT) & 0xFF;
        if bus != 0 || devfn != 0 {
            return None;
        }
        Some((a & ADDR_REGISTER_MASK) as usize + usize::from(port_offset & 3))
    }

    /// Port read at `offset` from 0xCF8 (0..8), `size` 1, 2 or 4 bytes. Empty slots and
    /// partial reads of CONFIG_ADDRESS read as all ones.
    pub fn read(&self, offset: u16, size: u8) -> u32 {
        let ones = if size >= 4 {
            u32::MAX
        } else {
            (1u32 << (u32::from(size) * 8)) - 1
        };
        match offset {
            0 if size == 4 => self.address,
            4..=7 => match self.target(offset) {
                Some(reg) => (0..usize::from(size)).fold(0u32, |acc, i| {
                    let b = self.config.get(reg + i).copied().unwrap_or(0xFF);
                    acc | u32::from(b) << (8 * i)
                }),
                None => ones,
            },
            _ => ones,
        }
    }

    /// Port write at `offset` from 0xCF8.
    pub fn write(&mut self, offset: u16, size: u8, value: u32) {
        match offset {
            0 if size == 4 => self.address = value & ADDR_WRITABLE,
            4..=7 => {
                let Some(reg) = self.target(offset) else {
                    return;
                };
                for i in 0..usize::from(size) {
                    self.write_config_byte(reg + i, (value >> (8 * i)) as u8);
                }
            }
            _ => warn!(
                port = format_args!("{:#x}", PCI_CONFIG_ADDRESS_PORT + offset),
                size,
                value = format_args!("{value:#x}"),
                "PCI: non-dword write to CONFIG_ADDRESS ignored"
            ),
        }
    }

    fn write_config_byte(&mut self, reg: usize, value: u8) {
        match reg {
            r if r == CFG_COMMAND => {
                self.config[r] = value & COMMAND_WRITABLE as u8;
            }
            r if (CFG_DEVICE_SPECIFIC..256).contains(&r) => self.config[r] = value,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(p: &mut PciHost, bus: u32, dev: u32, func: u32, reg: u32) {
        p.write(
            0,
            4,
            ADDR_ENABLE | bus << 16 | dev << 11 | func << 8 | (reg & 0xFC),
        );
    }

    #[test]
    fn host_bridge_identity() {
        let mut p = PciHost::new();
        select(&mut p, 0, 0, 0, 0);
        assert_eq!(p.read(4, 4), 0x1237_8086);
        assert_eq!(p.read(6, 2), 0x1237);
        select(&mut p, 0, 0, 0, 8);
        assert_eq!(p.read(4, 4) >> 8, 0x06_0000);
        assert_eq!(p.read(6, 2), 0x0600, "class word at 0x0A");
        select(&mut p, 0, 0, 0, 0x0C);
        assert_eq!(p.read(6, 1), 0, "header type 0");
    }

    #[test]
    fn empty_slots_and_disabled_cycles_read_ones() {
        let mut p = PciHost::new();
        select(&mut p, 0, 1, 0, 0);
        assert_eq!(p.read(4, 2), 0xFFFF);
        select(&mut p, 0, 0, 1, 0);
        assert_eq!(p.read(4, 4), 0xFFFF_FFFF);
        select(&mut p, 1, 0, 0, 0);
        assert_eq!(p.read(4, 4), 0xFFFF_FFFF);
        p.write(0, 4, 0);
        assert_eq!(p.read(4, 4), 0xFFFF_FFFF);
        p.write(4, 4, 0x1234); // dropped
    }

    #[test]
    fn address_register_is_dword_only() {
        let mut p = PciHost::new();
        p.write(0, 4, 0x8000_0003);
        assert_eq!(p.read(0, 4), 0x8000_0000, "low two bits read as 0");
        p.write(3, 1, 0x01);
        assert_eq!(p.address(), 0x8000_0000);
        assert_eq!(p.read(0, 2), 0xFFFF);
    }

    #[test]
    fn writable_registers() {
        let mut p = PciHost::new();
        select(&mut p, 0, 0, 0, 0);
        p.write(4, 4, 0); // vendor/device are read-only
        assert_eq!(p.read(4, 4), 0x1237_8086);
        select(&mut p, 0, 0, 0, CFG_COMMAND as u32);
        p.write(4, 2, 0xFFFF);
        assert_eq!(p.read(4, 2), 0x0007);
        select(&mut p, 0, 0, 0, 0x58);
        p.write(5, 1, 0x30); // PAM0 at 0x59
        assert_eq!(p.read(4, 4), 0x3000);
        let s = p.state();
        assert_eq!(PciHost::from_state(&s).state(), s);
    }
}
