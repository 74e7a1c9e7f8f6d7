//! ACPI tables for directly booted kernels, built with the `acpi_tables` crate and placed in
//! the EBDA, the 1 KiB below 640 KiB: RSDP (revision 2), XSDT, FADT (PM1a event/control blocks and
//! the PM timer of `crane86_devices::acpi_pm`, SCI on IRQ 9, no SMI command port so the
//! machine is already in ACPI mode, reset register 0xCF9), FACS, MADT (LAPIC 0, IOAPIC 0 at
//! 0xFEC00000 with GSI base 0, ISA overrides IRQ0 → GSI 2 and IRQ 9 level/active-high, a LINT1
//! NMI entry, PCAT_COMPAT) and a DSDT with the PCI root bridge and `_S5`.
//!
//! Where Linux finds them: [`RSDP_ADDR`] is the start of the EBDA, and the BIOS data area's
//! EBDA pointer (0x40E) and base-memory size (0x413) are set to match, so Linux's RSDP scan
//! of the EBDA finds it even when `boot_params.acpi_rsdp_addr` is 0 (a bzImage loader should
//! still set it to [`RSDP_ADDR`]). The e820 map must not report [`ACPI_AREA`] as usable RAM
//! (the bzImage loader ends conventional RAM at 0x9FC00); Linux also reserves 0x9F000–1 MiB
//! from the BIOS data area values (`reserve_bios_regions`).

use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, Device, EISAName, Name, Package, Path, ResourceTemplate,
    IO,
};
use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace as GasSpace, GAS};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use crane86_devices::acpi_pm::{
    PM1A_CNT_PORT, PM1A_EVT_PORT, PM1_CNT_LEN, PM1_EVT_LEN, PM_TMR_LEN, PM_TMR_PORT, SCI_IRQ,
    SLP_TYP_S5,
};
use crane86_devices::ioapic::IOAPIC_BASE;
use crane86_devices::lapic::LAPIC_BASE;
use crane86_devices::pci::{PCI_CONFIG_ADDRESS_PORT, PCI_PORTS};
use crane86_memory::PhysMem;
use thiserror::Error;

/// The EBDA (1 KiB below 640 KiB) holding every table.
pub const ACPI_AREA: std::ops::Range<u64> = 0x9_FC00..0xA_0000;
/// Physical address of the RSDP (start of the EBDA, 16-byte aligned).
pub const RSDP_ADDR: u64 = ACPI_AREA.start;
/// BIOS data area word: EBDA segment.
pub const BDA_EBDA_SEGMENT: u64 = 0x40E;
/// BIOS data area word: conventional memory size in KiB.
pub const BDA_BASE_MEMORY_KB: u64 = 0x413;

/// The 32-bit PCI memory window: from the end of low RAM's maximum to below the IOAPIC.
pub const PCI_HOLE: std::ops::Range<u64> = crane86_memory::phys::LOW_RAM_LIMIT..0xFEC0_0000;
/// OEM ID in every table header.
pub const OEM_ID: [u8; 6] = *b"CRANE8";
/// OEM table ID in every table header.
pub const OEM_TABLE_ID: [u8; 8] = *b"CRANE86 ";
const OEM_REVISION: u32 = 1;

/// MADT flags bit 0: the machine also has dual 8259s.
pub const MADT_PCAT_COMPAT: u32 = 1;
/// MPS INTI flags: active-high polarity.
pub const MPS_ACTIVE_HIGH: u16 = 0b01;
/// MPS INTI flags: level-triggered.
pub const MPS_LEVEL: u16 = 0b11 << 2;
/// FADT IA-PC boot architecture flags: legacy devices (bit 0), 8042 present (bit 1).
pub const IAPC_BOOT_ARCH: u16 = 0b11;
/// FADT reset register value for port 0xCF9 (SYS_RST | RST_CPU).
pub const RESET_VALUE: u8 = 0x06;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum AcpiError {
    #[error("ACPI tables need RAM up to {needed:#x} (the EBDA), but RAM is only {ram:#x} bytes")]
    RamTooSmall { needed: u64, ram: u64 },
    #[error("ACPI tables ({size} bytes) do not fit in the EBDA {start:#x}..{end:#x}")]
    TooLarge { size: u64, start: u64, end: u64 },
}

fn to_bytes(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

fn io_gas(port: u16, bits: u8) -> GAS {
    let size = match bits {
        8 => AccessSize::ByteAccess,
        16 => AccessSize::WordAccess,
        _ => AccessSize::DwordAccess,
    };
    GAS::new(GasSpace::SystemIo, bits, 0, size, port.into())
}

/// The DSDT: the PCI root bridge `\_SB.PCI0` (PNP0A03: bus 0-255, the configuration ports,
/// the remaining I/O space and the 32-bit PCI hole as windows) and
/// `_S5` = Package { SLP_TYP a, SLP_TYP b, 0, 0 }.
pub fn dsdt() -> Vec<u8> {
    let mut sdt = Sdt::new(*b"DSDT", 36, 2, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let hid = EISAName::new("PNP0A03");
    let zero = 0u8;
    let bus = AddressSpace::new_bus_number(0u16, 0xFFu16);
    let cfg = IO::new(
        PCI_CONFIG_ADDRESS_PORT,
        PCI_CONFIG_ADDRESS_PORT,
        1,
        PCI_PORTS as u8,
    );
    let io_low = AddressSpace::new_io(0u16, PCI_CONFIG_ADDRESS_PORT - 1, None);
    let io_high = AddressSpace::new_io(PCI_CONFIG_ADDRESS_PORT + PCI_PORTS, 0xFFFFu16, None);
    let mem = AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        PCI_HOLE.start as u32,
        (PCI_HOLE.end - 1) as u32,
        None,
    );
    let crs = ResourceTemplate::new(vec![&bus, &cfg, &io_low, &io_high, &mem]);
    let names = [
        Name::new(Path::new("_HID"), &hid),
        Name::new(Path::new("_ADR"), &zero),
        Name::new(Path::new("_SEG"), &zero),
        Name::new(Path::new("_UID"), &zero),
        Name::new(Path::new("_BBN"), &zero),
        Name::new(Path::new("_CRS"), &crs),
    ];
    let children: Vec<&dyn Aml> = names.iter().map(|n| n as &dyn Aml).collect();
    let pci0 = Device::new(Path::new("_SB_.PCI0"), children);
    sdt.append_slice(&to_bytes(&pci0));
    let typ = SLP_TYP_S5 as u8;
    let s5 = Name::new(
        Path::new("_S5_"),
        &Package::new(vec![&typ, &typ, &0u8, &0u8]),
    );
    sdt.append_slice(&to_bytes(&s5));
    sdt.as_slice().to_vec()
}

/// The MADT: LAPIC 0, IOAPIC 0, the two ISA overrides, LINT1 as NMI, PCAT_COMPAT.
pub fn madt() -> Vec<u8> {
    let mut sdt = Sdt::new(*b"APIC", 44, 4, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    sdt.write_u32(36, LAPIC_BASE as u32);
    sdt.write_u32(40, MADT_PCAT_COMPAT);
    // Processor local APIC: type 0, UID 0, APIC ID 0, enabled.
    sdt.append_slice(&[0, 8, 0, 0, 1, 0, 0, 0]);
    // I/O APIC: type 1, ID 0, address, GSI base 0.
    let mut ioapic = vec![1, 12, 0, 0];
    ioapic.extend_from_slice(&(IOAPIC_BASE as u32).to_le_bytes());
    ioapic.extend_from_slice(&0u32.to_le_bytes());
    sdt.append_slice(&ioapic);
    // Interrupt source overrides: type 2, bus 0 (ISA), source IRQ, GSI, MPS INTI flags.
    for (irq, gsi, flags) in [
        (0u8, 2u32, 0u16),
        (SCI_IRQ, u32::from(SCI_IRQ), MPS_ACTIVE_HIGH | MPS_LEVEL),
    ] {
        let mut iso = vec![2, 10, 0, irq];
        iso.extend_from_slice(&gsi.to_le_bytes());
        iso.extend_from_slice(&flags.to_le_bytes());
        sdt.append_slice(&iso);
    }
    // Local APIC NMI: type 4, all processors (0xFF), flags 0 (conforming), LINT1.
    sdt.append_slice(&[4, 6, 0xFF, 0, 0, 1]);
    sdt.as_slice().to_vec()
}

/// The FADT (revision 6.5) pointing at `dsdt` and `facs`.
pub fn fadt(dsdt: u64, facs: u64) -> Vec<u8> {
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt)
        .firmware_ctrl_64(facs)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        .flag(Flags::SlpButton)
        .flag(Flags::TmrValExt)
        .flag(Flags::ResetRegSup);
    f.sci_int = u16::from(SCI_IRQ).into();
    f.pm1a_evt_blk = u32::from(PM1A_EVT_PORT).into();
    f.pm1a_cnt_blk = u32::from(PM1A_CNT_PORT).into();
    f.pm_tmr_blk = u32::from(PM_TMR_PORT).into();
    f.pm1_evt_len = PM1_EVT_LEN;
    f.pm1_cnt_len = PM1_CNT_LEN;
    f.pm_tmr_len = PM_TMR_LEN;
    f.x_pm1a_evt_blk = io_gas(PM1A_EVT_PORT, PM1_EVT_LEN * 8);
    f.x_pm1a_cnt_blk = io_gas(PM1A_CNT_PORT, PM1_CNT_LEN * 8);
    f.x_pm_tmr_blk = io_gas(PM_TMR_PORT, PM_TMR_LEN * 8);
    f.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    f.reset_reg = io_gas(0xCF9, 8);
    f.reset_value = RESET_VALUE;
    // C2/C3 not supported.
    f.p_lvl2_lat = 101u16.into();
    f.p_lvl3_lat = 1001u16.into();
    to_bytes(&f.finalize())
}

fn align(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// Build every table in [`ACPI_AREA`] of `mem`, point the BIOS data area at the EBDA, and
/// return the RSDP's physical address ([`RSDP_ADDR`]) for `boot_params.acpi_rsdp_addr`.
pub fn build_tables(mem: &mut PhysMem) -> Result<u64, AcpiError> {
    if mem.low_ram() < ACPI_AREA.end {
        return Err(AcpiError::RamTooSmall {
            needed: ACPI_AREA.end,
            ram: mem.low_ram(),
        });
    }
    let facs_addr = align(RSDP_ADDR + acpi_tables::rsdp::Rsdp::len() as u64, 64);
    let facs = to_bytes(&FACS::new());
    let dsdt_addr = align(facs_addr + facs.len() as u64, 16);
    let dsdt = dsdt();
    let fadt_addr = align(dsdt_addr + dsdt.len() as u64, 16);
    let fadt = fadt(dsdt_addr, facs_addr);
    let madt_addr = align(fadt_addr + fadt.len() as u64, 16);
    let madt = madt();
    let xsdt_addr = align(madt_addr + madt.len() as u64, 16);
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt = to_bytes(&xsdt);
    let end = xsdt_addr + xsdt.len() as u64;
    if end > ACPI_AREA.end {
        return Err(AcpiError::TooLarge {
            size: end - ACPI_AREA.start,
            start: ACPI_AREA.start,
            end: ACPI_AREA.end,
        });
    }
    let rsdp = to_bytes(&Rsdp::new(OEM_ID, xsdt_addr));
    let mut page = vec![0u8; (ACPI_AREA.end - ACPI_AREA.start) as usize];
    for (addr, bytes) in [
        (RSDP_ADDR, &rsdp),
        (facs_addr, &facs),
        (dsdt_addr, &dsdt),
        (fadt_addr, &fadt),
        (madt_addr, &madt),
        (xsdt_addr, &xsdt),
    ] {
        let at = (addr - ACPI_AREA.start) as usize;
        page[at..at + bytes.len()].copy_from_slice(bytes);
    }
    let ram_err = |_| AcpiError::RamTooSmall {
        needed: ACPI_AREA.end,
        ram: 0,
    };
    mem.write_ram(ACPI_AREA.start, &page).map_err(ram_err)?;
    let ebda_segment = (ACPI_AREA.start >> 4) as u16;
    let base_kb = (ACPI_AREA.start >> 10) as u16;
    mem.write_ram(BDA_EBDA_SEGMENT, &ebda_segment.to_le_bytes())
        .map_err(ram_err)?;
    mem.write_ram(BDA_BASE_MEMORY_KB, &base_kb.to_le_bytes())
        .map_err(ram_err)?;
    Ok(RSDP_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(mem: &PhysMem, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        mem.read_ram(addr, &mut buf).unwrap();
        buf
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
    }

    /// A whole table at `addr`, checked: signature and a zero byte sum over its length.
    fn table(mem: &PhysMem, addr: u64, sig: &[u8; 4]) -> Vec<u8> {
        let header = read(mem, addr, 36);
        assert_eq!(&header[0..4], sig, "signature at {addr:#x}");
        let t = read(mem, addr, u32_at(&header, 4) as usize);
        assert_eq!(sum(&t), 0, "{} checksum", String::from_utf8_lossy(sig));
        assert_eq!(&t[10..16], &OEM_ID);
        t
    }

    fn built() -> PhysMem {
        let mut mem = PhysMem::new(16 << 20, &[]).unwrap();
        assert_eq!(build_tables(&mut mem), Ok(RSDP_ADDR));
        mem
    }

    #[test]
    fn rsdp_checksums_and_ebda_pointer() {
        let mem = built();
        let rsdp = read(&mem, RSDP_ADDR, 36);
        assert_eq!(&rsdp[0..8], b"RSD PTR ");
        assert_eq!(rsdp[15], 2, "revision");
        assert_eq!(sum(&rsdp[0..20]), 0, "ACPI 1.0 checksum");
        assert_eq!(sum(&rsdp), 0, "extended checksum");
        assert_eq!(u32_at(&rsdp, 20), 36);
        let bda = read(&mem, BDA_EBDA_SEGMENT, 2);
        assert_eq!(
            u64::from(u16::from_le_bytes([bda[0], bda[1]])) << 4,
            RSDP_ADDR
        );
        let kb = read(&mem, BDA_BASE_MEMORY_KB, 2);
        assert_eq!(u16::from_le_bytes([kb[0], kb[1]]), 639);
    }

    #[test]
    fn xsdt_fadt_madt_dsdt_chain() {
        let mem = built();
        let rsdp = read(&mem, RSDP_ADDR, 36);
        let xsdt = table(&mem, u64_at(&rsdp, 24), b"XSDT");
        assert_eq!(xsdt.len(), 36 + 16);
        let fadt = table(&mem, u64_at(&xsdt, 36), b"FACP");
        let madt = table(&mem, u64_at(&xsdt, 44), b"APIC");
        // FADT: SCI, the PM blocks, no SMI command port, 32-bit PM timer, not HW-reduced.
        assert!(fadt.len() >= 244, "FADT revision 5+ length");
        assert_eq!(u16::from_le_bytes([fadt[46], fadt[47]]), 9);
        assert_eq!(u32_at(&fadt, 48), 0, "SMI_CMD");
        assert_eq!(u32_at(&fadt, 56), 0x600);
        assert_eq!(u32_at(&fadt, 64), 0x604);
        assert_eq!(u32_at(&fadt, 76), 0x608);
        let flags = u32_at(&fadt, 112);
        assert_ne!(flags & (1 << 8), 0, "TMR_VAL_EXT");
        assert_eq!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        // X_PM1a_CNT_BLK: system I/O, 16 bits, at 0x604.
        assert_eq!((fadt[172], fadt[173]), (1, 16));
        assert_eq!(u64_at(&fadt, 176), 0x604);
        let facs_addr = u64_at(&fadt, 132);
        assert_eq!(&read(&mem, facs_addr, 4)[..], b"FACS");
        assert_eq!(facs_addr % 64, 0, "FACS alignment");
        let dsdt = table(&mem, u64_at(&fadt, 140), b"DSDT");
        // \_SB.PCI0 with _HID PNP0A03 (EISA ID 0x030AD041).
        assert!(dsdt.windows(4).any(|w| w == b"PCI0"));
        assert!(dsdt.windows(5).any(|w| w == [0x0C, 0x41, 0xD0, 0x0A, 0x03]));
        // _S5_ = Package(4) { 5, 5, 0, 0 }.
        let at = dsdt.windows(4).position(|w| w == b"_S5_").unwrap();
        assert_eq!(
            &dsdt[at + 4..at + 12],
            &[0x12, 0x08, 0x04, 0x0A, 5, 0x0A, 5, 0x00]
        );
        // MADT: LAPIC address, PCAT_COMPAT, entries.
        assert_eq!(u32_at(&madt, 36), 0xFEE0_0000);
        assert_eq!(u32_at(&madt, 40), 1);
        let mut entries = Vec::new();
        let mut off = 44;
        while off < madt.len() {
            entries.push(madt[off..off + madt[off + 1] as usize].to_vec());
            off += madt[off + 1] as usize;
        }
        assert_eq!(off, madt.len());
        assert_eq!(entries[0], vec![0, 8, 0, 0, 1, 0, 0, 0]);
        assert_eq!(entries[1][0], 1);
        assert_eq!(u32_at(&entries[1], 4), 0xFEC0_0000);
        assert_eq!(u32_at(&entries[1], 8), 0);
        assert_eq!(entries[2], vec![2, 10, 0, 0, 2, 0, 0, 0, 0, 0]);
        assert_eq!(entries[3], vec![2, 10, 0, 9, 9, 0, 0, 0, 0x0D, 0]);
        assert_eq!(entries[4][0], 4);
    }
}
