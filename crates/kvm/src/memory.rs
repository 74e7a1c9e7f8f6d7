//! Guest RAM and firmware as KVM memory slots: the same host mapping the other engines use
//! (`PhysMem`'s backing), cut along the PC layout, so all engines see one RAM and nothing is
//! copied when the guest moves between them. Holes (the legacy VGA window, the MMIO range
//! below 4 GiB with the IOAPIC and LAPIC) have no slot: KVM exits to the device bus for them.
//! Firmware is read-only where KVM supports that (writes then reach the bus, which drops
//! them, as the other engines do).

use crane86_memory::phys::{BIOS_SHADOW, LEGACY_HOLE};
use crane86_memory::PhysMem;
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_READONLY};

/// One memory slot: guest physical range → offset in the backing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub guest_phys: u64,
    pub size: u64,
    pub backing_offset: u64,
    pub read_only: bool,
}

/// The slots for `mem`'s layout (see `crane86_memory::phys`).
pub fn slots(mem: &PhysMem) -> Vec<Slot> {
    let low = mem.low_ram();
    let ram = mem.ram_size();
    let rom = mem.backing().len() as u64 - ram;
    let mut v = Vec::new();
    let mut push = |guest_phys: u64, size: u64, backing_offset: u64, read_only: bool| {
        if size > 0 {
            v.push(Slot {
                guest_phys,
                size,
                backing_offset,
                read_only,
            });
        }
    };
    push(0, low.min(LEGACY_HOLE.start), 0, false);
    push(
        LEGACY_HOLE.end,
        low.saturating_sub(LEGACY_HOLE.end),
        LEGACY_HOLE.end,
        false,
    );
    push(1 << 32, mem.high_ram(), low, false);
    if rom > 0 {
        push((1 << 32) - rom, rom, ram, true);
        let shadow = rom.min(BIOS_SHADOW);
        push(LEGACY_HOLE.end - shadow, shadow, ram + rom - shadow, true);
    }
    v
}

/// The ioctl argument for slot number `index`; `read_only` is dropped when KVM cannot do it.
pub fn region(
    mem: &PhysMem,
    index: u32,
    slot: &Slot,
    readonly_supported: bool,
) -> kvm_userspace_memory_region {
    kvm_userspace_memory_region {
        slot: index,
        flags: if slot.read_only && readonly_supported {
            KVM_MEM_READONLY
        } else {
            0
        },
        guest_phys_addr: slot.guest_phys,
        memory_size: slot.size,
        userspace_addr: mem.host_ptr(slot.backing_offset) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_pc_layout() {
        let mem = PhysMem::new(64 << 20, &vec![0u8; 256 << 10]).unwrap();
        let s = slots(&mem);
        assert_eq!(
            s[0],
            Slot {
                guest_phys: 0,
                size: 0xA0000,
                backing_offset: 0,
                read_only: false
            }
        );
        assert_eq!(
            s[1],
            Slot {
                guest_phys: 0x10_0000,
                size: (64 << 20) - 0x10_0000,
                backing_offset: 0x10_0000,
                read_only: false
            }
        );
        assert_eq!(
            s[2],
            Slot {
                guest_phys: 0xFFFC_0000,
                size: 256 << 10,
                backing_offset: 64 << 20,
                read_only: true
            }
        );
        assert_eq!(
            s[3],
            Slot {
                guest_phys: 0xE_0000,
                size: 128 << 10,
                backing_offset: (64 << 20) + (128 << 10),
                read_only: true
            }
        );
        assert_eq!(s.len(), 4, "no RAM above 4 GiB for 64 MiB");
    }
}
