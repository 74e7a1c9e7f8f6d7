//! Linux bzImage kernels, booted the way `Documentation/arch/x86/boot.rst` describes for a
//! boot loader that skips the real-mode setup code: the protected-mode kernel is copied to
//! 1 MiB, a zero page (`boot_params`, the `linux-loader` crate's layout) is built from the
//! image's setup header with the command line, the initrd and an e820 map, and the CPU enters
//! the kernel through the **64-bit boot protocol** (long mode, identity-mapped page tables,
//! `__BOOT_CS` = 0x10, `__BOOT_DS` = 0x18, RSI = zero page, RIP = load address + 0x200).
//! Kernels that do not advertise a 64-bit entry (`XLF_KERNEL_64`, protocol < 2.12) are
//! entered through the 32-bit protocol at `code32_start` (flat protected mode, paging off,
//! ESI = zero page).
//!
//! Low-memory layout (all below the 0x9FC00 end of conventional RAM):
//! - [`GDT_ADDR`]: null, null, `__BOOT_CS` (0x10), `__BOOT_DS` (0x18)
//! - [`STACK_TOP`]: the initial stack pointer (grows down, below the zero page)
//! - [`BOOT_PARAMS_ADDR`]: the zero page
//! - [`PAGE_TABLES_ADDR`]: PML4, PDPT and four page directories identity-mapping 0..4 GiB
//!   with 2 MiB pages (64-bit entry only)
//! - [`CMDLINE_ADDR`]: the NUL-terminated command line
//! - [`KERNEL_LOAD_ADDR`]: the protected-mode kernel; the initrd sits as high as the RAM below
//!   4 GiB and the kernel's `initrd_addr_max` allow.

use super::{flat_descriptor, write_ram, zero_ram, LoadError};
use crane86_memory::PhysMem;
use crane86_x86::regs::{cr0, cr4, efer};
use crane86_x86::segment::{Segment, TableReg};
use crane86_x86::{CpuState, SegReg};
use linux_loader::loader::bootparam::{
    boot_e820_entry, boot_params, setup_header, CAN_USE_HEAP, XLF_KERNEL_64,
};
use std::mem::size_of;
use thiserror::Error;
use vm_memory::ByteValued;

/// `"HdrS"`, little-endian, at image offset [`MAGIC_OFFSET`].
pub const HDRS_MAGIC: u32 = 0x5372_6448;
pub const MAGIC_OFFSET: usize = 0x202;
/// The setup header starts here in the image and in the zero page.
pub const SETUP_HEADER_OFFSET: usize = 0x1F1;
/// Oldest boot protocol accepted: 2.06 (`cmdline_size`, 32-bit entry without real-mode code).
pub const MIN_PROTOCOL: u16 = 0x0206;
/// First protocol with `xloadflags` (and so a declared 64-bit entry point).
const XLOADFLAGS_PROTOCOL: u16 = 0x020C;
/// First protocol with `pref_address` and `init_size`.
const PREF_ADDRESS_PROTOCOL: u16 = 0x020A;
/// The 64-bit entry point is this far into the protected-mode kernel.
pub const ENTRY64_OFFSET: u64 = 0x200;

pub const GDT_ADDR: u64 = 0x500;
pub const STACK_TOP: u64 = 0x7000;
pub const BOOT_PARAMS_ADDR: u64 = 0x7000;
pub const PAGE_TABLES_ADDR: u64 = 0x9000;
/// PML4 + PDPT + 4 page directories.
const PAGE_TABLE_PAGES: u64 = 6;
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Longest command line we place (the window up to the next structure).
pub const CMDLINE_WINDOW: u64 = 0x1_0000;
pub const KERNEL_LOAD_ADDR: u64 = 0x10_0000;
/// `__BOOT_CS` and `__BOOT_DS` of the boot protocol.
pub const BOOT_CS: u16 = 0x10;
pub const BOOT_DS: u16 = 0x18;
/// `type_of_loader`: 0xFF = "undefined" boot loader.
const LOADER_TYPE_UNDEFINED: u8 = 0xFF;
/// Default `initrd_addr_max` of protocols < 2.03, and a default `pref_address`.
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37FF_FFFF;
const DEFAULT_PREF_ADDRESS: u64 = 0x100_0000;

/// End of conventional memory (the EBDA is reserved from here to 640 KiB).
pub const CONVENTIONAL_END: u64 = 0x9_FC00;
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;
/// Entries in the zero page's e820 table.
const E820_MAX: usize = 128;

/// Why a bzImage could not be booted.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum BzImageError {
    #[error("not a bzImage (no HdrS magic at 0x202)")]
    NoMagic,
    #[error("not a bzImage: {len} bytes is too short for the setup header")]
    TooShort { len: usize },
    #[error("boot protocol {}.{:02} is too old (need 2.06 or later)", version >> 8, version & 0xFF)]
    OldProtocol { version: u16 },
    #[error("setup_sects = {setup_sects} puts the protected-mode kernel at {offset:#x}, past the end of the {len}-byte image")]
    NoKernel {
        setup_sects: u8,
        offset: usize,
        len: usize,
    },
    #[error("command line is {len} bytes; the kernel accepts at most {max} (cmdline_size)")]
    CmdlineTooLong { len: usize, max: u64 },
    #[error("the kernel needs {init_size:#x} bytes at {runtime_addr:#x} to decompress into, but RAM below 4 GiB ends at {ram_end:#x} (give more memory with -m)")]
    KernelTooLarge {
        init_size: u64,
        runtime_addr: u64,
        ram_end: u64,
    },
    #[error("initrd of {size} bytes ({} MiB) does not fit in RAM: it must lie between the kernel's end {lowest:#x} and {highest_end:#x} (min of RAM end {ram_end:#x} and initrd_addr_max + 1); give more memory with -m", size >> 20)]
    InitrdTooLarge {
        size: u64,
        lowest: u64,
        highest_end: u64,
        ram_end: u64,
    },
}

/// Does `image` carry the bzImage `HdrS` magic?
pub fn is_bzimage(image: &[u8]) -> bool {
    image
        .get(MAGIC_OFFSET..MAGIC_OFFSET + 4)
        .is_some_and(|m| u32::from_le_bytes(m.try_into().unwrap()) == HDRS_MAGIC)
}

/// The image's setup header, checked for the magic and protocol version.
pub fn parse_header(image: &[u8]) -> Result<setup_header, BzImageError> {
    let end = SETUP_HEADER_OFFSET + size_of::<setup_header>();
    if !is_bzimage(image) {
        return Err(BzImageError::NoMagic);
    }
    let bytes = image
        .get(SETUP_HEADER_OFFSET..end)
        .ok_or(BzImageError::TooShort { len: image.len() })?;
    let hdr = *setup_header::from_slice(bytes).expect("slice has the header's size");
    let version = hdr.version;
    if version < MIN_PROTOCOL {
        return Err(BzImageError::OldProtocol { version });
    }
    Ok(hdr)
}

/// How the kernel is entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryProtocol {
    /// Long mode at load address + 0x200.
    Bits64,
    /// Flat 32-bit protected mode at `code32_start`.
    Bits32,
}

/// Where everything went (for tests, logs and the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootLayout {
    pub protocol: EntryProtocol,
    pub entry: u64,
    pub kernel_addr: u64,
    pub kernel_size: u64,
    /// Where the kernel decompresses itself (`max(pref_address, aligned load address)`).
    pub runtime_addr: u64,
    pub init_size: u64,
    /// Initrd (address, size), if one was given.
    pub initrd: Option<(u64, u64)>,
}

/// The e820 map for `mem`: conventional RAM, the EBDA/legacy hole reserved, RAM from 1 MiB to
/// the end of low RAM, and RAM above 4 GiB. The MMIO hole between low RAM and 4 GiB is left
/// out (not reserved) so the kernel may allocate PCI windows there.
pub fn e820_map(mem: &PhysMem) -> Vec<boot_e820_entry> {
    let entry = |addr: u64, end: u64, kind: u32| boot_e820_entry {
        addr,
        size: end - addr,
        r#type: kind,
    };
    let mut map = vec![
        entry(0, CONVENTIONAL_END, E820_RAM),
        entry(CONVENTIONAL_END, KERNEL_LOAD_ADDR, E820_RESERVED),
    ];
    if mem.low_ram() > KERNEL_LOAD_ADDR {
        map.push(entry(KERNEL_LOAD_ADDR, mem.low_ram(), E820_RAM));
    }
    if mem.high_ram() > 0 {
        map.push(entry(1 << 32, (1 << 32) + mem.high_ram(), E820_RAM));
    }
    map
}

/// Load the bzImage `image` with command line `cmdline` and the (possibly empty) initrd,
/// build the zero page, and set `cpu` to the kernel's entry state. `acpi_rsdp_addr` is passed
/// to the kernel in `boot_params.acpi_rsdp_addr` when the platform has ACPI tables.
pub fn load(
    mem: &mut PhysMem,
    cpu: &mut CpuState,
    image: &[u8],
    cmdline: &str,
    initrd: &[u8],
    acpi_rsdp_addr: Option<u64>,
) -> Result<BootLayout, LoadError> {
    let hdr = parse_header(image)?;
    let version = hdr.version;
    let setup_sects = if hdr.setup_sects == 0 {
        4
    } else {
        hdr.setup_sects
    };
    let kernel_offset = (usize::from(setup_sects) + 1) * 512;
    if kernel_offset >= image.len() {
        return Err(LoadError::BzImage(BzImageError::NoKernel {
            setup_sects,
            offset: kernel_offset,
            len: image.len(),
        }));
    }
    let kernel = &image[kernel_offset..];
    let kernel_size = kernel.len() as u64;
    let ram_end = mem.low_ram();

    // Where the kernel will decompress itself: the relocatable kernel aligns its load address
    // up to kernel_alignment but never goes below pref_address (LOAD_PHYSICAL_ADDR).
    let (pref_address, init_size) = if version >= PREF_ADDRESS_PROTOCOL {
        (hdr.pref_address, u64::from(hdr.init_size))
    } else {
        (DEFAULT_PREF_ADDRESS, 0)
    };
    let runtime_addr = if hdr.relocatable_kernel != 0 {
        let align = u64::from(hdr.kernel_alignment).max(1);
        KERNEL_LOAD_ADDR.next_multiple_of(align).max(pref_address)
    } else {
        pref_address
    };
    let kernel_end = (KERNEL_LOAD_ADDR + kernel_size).max(runtime_addr + init_size);
    if kernel_end > ram_end {
        return Err(LoadError::BzImage(BzImageError::KernelTooLarge {
            init_size: init_size.max(kernel_size),
            runtime_addr,
            ram_end,
        }));
    }

    let xloadflags = hdr.xloadflags;
    let protocol = if version >= XLOADFLAGS_PROTOCOL && xloadflags & XLF_KERNEL_64 != 0 {
        EntryProtocol::Bits64
    } else {
        EntryProtocol::Bits32
    };
    let entry = match protocol {
        EntryProtocol::Bits64 => KERNEL_LOAD_ADDR + ENTRY64_OFFSET,
        EntryProtocol::Bits32 => KERNEL_LOAD_ADDR,
    };
    let initrd_placed = finish_boot(
        mem,
        cpu,
        hdr,
        kernel_end,
        BootArgs {
            cmdline,
            initrd,
            acpi_rsdp_addr,
        },
        protocol,
        entry,
    )?;
    write_ram(mem, "kernel", KERNEL_LOAD_ADDR, kernel)?;
    Ok(BootLayout {
        protocol,
        entry,
        kernel_addr: KERNEL_LOAD_ADDR,
        kernel_size,
        runtime_addr,
        init_size,
        initrd: initrd_placed.map(|a| (a, initrd.len() as u64)),
    })
}

/// What the boot loader passes to the kernel besides the kernel itself.
#[derive(Clone, Copy, Debug)]
pub struct BootArgs<'a> {
    pub cmdline: &'a str,
    /// The initramfs (empty: none).
    pub initrd: &'a [u8],
    /// The ACPI RSDP's address, when the platform has ACPI tables.
    pub acpi_rsdp_addr: Option<u64>,
}

/// The part of a Linux boot shared by the bzImage and vmlinux loaders: check the command line,
/// place the initrd above `kernel_end`, write the command line, initrd and zero page (from
/// `hdr`), the page tables (64-bit entry) and the GDT, and set the CPU's entry state at
/// `entry`. Returns the initrd's address.
pub(crate) fn finish_boot(
    mem: &mut PhysMem,
    cpu: &mut CpuState,
    hdr: setup_header,
    kernel_end: u64,
    args: BootArgs<'_>,
    protocol: EntryProtocol,
    entry: u64,
) -> Result<Option<u64>, LoadError> {
    let BootArgs {
        cmdline,
        initrd,
        acpi_rsdp_addr,
    } = args;
    let ram_end = mem.low_ram();
    let cmdline_max = u64::from(hdr.cmdline_size).min(CMDLINE_WINDOW - 1);
    if cmdline.len() as u64 > cmdline_max {
        return Err(LoadError::BzImage(BzImageError::CmdlineTooLong {
            len: cmdline.len(),
            max: cmdline_max,
        }));
    }

    let initrd_placed = if initrd.is_empty() {
        None
    } else {
        Some(place_initrd(
            &hdr,
            initrd.len() as u64,
            kernel_end,
            ram_end,
        )?)
    };

    // Copy the pieces into RAM.
    let mut cmd = cmdline.as_bytes().to_vec();
    cmd.push(0);
    write_ram(mem, "command line", CMDLINE_ADDR, &cmd)?;
    if let Some(addr) = initrd_placed {
        write_ram(mem, "initrd", addr, initrd)?;
    }

    // The zero page.
    let mut params = boot_params {
        hdr,
        ..boot_params::default()
    };
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.loadflags |= CAN_USE_HEAP;
    params.hdr.heap_end_ptr = 0xFE00;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.code32_start = KERNEL_LOAD_ADDR as u32;
    if let Some(addr) = initrd_placed {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = initrd.len() as u32;
    }
    params.acpi_rsdp_addr = acpi_rsdp_addr.unwrap_or(0);
    let map = e820_map(mem);
    for (slot, e) in params.e820_table.iter_mut().zip(map.iter().take(E820_MAX)) {
        *slot = *e;
    }
    params.e820_entries = map.len().min(E820_MAX) as u8;
    // alt_mem_k: KiB of memory above 1 MiB (the pre-e820 interface).
    params.alt_mem_k = (ram_end.saturating_sub(KERNEL_LOAD_ADDR) >> 10) as u32;
    write_ram(mem, "boot_params", BOOT_PARAMS_ADDR, params.as_slice())?;

    if protocol == EntryProtocol::Bits64 {
        write_identity_page_tables(mem)?;
    }
    write_boot_gdt(mem, protocol)?;
    enter(cpu, protocol, entry);
    Ok(initrd_placed)
}

/// The initrd's address: page-aligned, as high as possible below both the end of low RAM and
/// `initrd_addr_max`, and above the kernel's decompression area.
fn place_initrd(
    hdr: &setup_header,
    size: u64,
    lowest: u64,
    ram_end: u64,
) -> Result<u64, BzImageError> {
    let addr_max = if hdr.version >= 0x0203 {
        u64::from(hdr.initrd_addr_max)
    } else {
        DEFAULT_INITRD_ADDR_MAX
    };
    let highest_end = ram_end.min(addr_max + 1);
    let too_large = BzImageError::InitrdTooLarge {
        size,
        lowest,
        highest_end,
        ram_end,
    };
    let start = highest_end.checked_sub(size).ok_or(too_large.clone())? & !0xFFF;
    if start < lowest {
        return Err(too_large);
    }
    Ok(start)
}

/// Identity-map 0..4 GiB with 2 MiB pages at [`PAGE_TABLES_ADDR`].
fn write_identity_page_tables(mem: &mut PhysMem) -> Result<(), LoadError> {
    const PRESENT_WRITABLE: u64 = 0x3;
    const LARGE: u64 = 0x80;
    let pml4 = PAGE_TABLES_ADDR;
    let pdpt = pml4 + 0x1000;
    let pds = pdpt + 0x1000;
    zero_ram(mem, "page tables", pml4, PAGE_TABLE_PAGES * 0x1000)?;
    write_ram(
        mem,
        "page tables",
        pml4,
        &(pdpt | PRESENT_WRITABLE).to_le_bytes(),
    )?;
    for gib in 0..4u64 {
        let pd = pds + gib * 0x1000;
        write_ram(
            mem,
            "page tables",
            pdpt + gib * 8,
            &(pd | PRESENT_WRITABLE).to_le_bytes(),
        )?;
        let entries: Vec<u8> = (0..512u64)
            .flat_map(|i| (((gib << 30) + (i << 21)) | PRESENT_WRITABLE | LARGE).to_le_bytes())
            .collect();
        write_ram(mem, "page tables", pd, &entries)?;
    }
    Ok(())
}

/// The `__BOOT_CS` descriptor for the protocol: 64-bit code (L=1) or 32-bit code (D=1).
fn boot_cs_descriptor(protocol: EntryProtocol) -> u64 {
    match protocol {
        EntryProtocol::Bits64 => flat_descriptor(0x9B, 0xA),
        EntryProtocol::Bits32 => flat_descriptor(0x9B, 0xC),
    }
}

fn boot_ds_descriptor() -> u64 {
    flat_descriptor(0x93, 0xC)
}

fn write_boot_gdt(mem: &mut PhysMem, protocol: EntryProtocol) -> Result<(), LoadError> {
    let gdt = [0, 0, boot_cs_descriptor(protocol), boot_ds_descriptor()];
    let bytes: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();
    write_ram(mem, "GDT", GDT_ADDR, &bytes)
}

/// The CPU state the boot protocol requires at the kernel's entry.
fn enter(cpu: &mut CpuState, protocol: EntryProtocol, entry: u64) {
    *cpu = CpuState::reset();
    cpu.gpr = [0; 16];
    cpu.cr0 = cr0::PE | cr0::ET;
    cpu.gdtr = TableReg {
        base: GDT_ADDR,
        limit: 4 * 8 - 1,
    };
    cpu.idtr = TableReg { base: 0, limit: 0 };
    cpu.seg[SegReg::Cs as usize] = Segment::from_descriptor(BOOT_CS, boot_cs_descriptor(protocol));
    let data = Segment::from_descriptor(BOOT_DS, boot_ds_descriptor());
    for s in [SegReg::Ds, SegReg::Es, SegReg::Fs, SegReg::Gs, SegReg::Ss] {
        cpu.seg[s as usize] = data;
    }
    if protocol == EntryProtocol::Bits64 {
        cpu.cr0 |= cr0::PG;
        cpu.cr3 = PAGE_TABLES_ADDR;
        cpu.cr4 = cr4::PAE;
        cpu.efer = efer::LME | efer::LMA;
    }
    cpu.rip = entry;
    cpu.gpr[4] = STACK_TOP; // RSP
    cpu.gpr[6] = BOOT_PARAMS_ADDR; // RSI / ESI
    cpu.a20 = true;
}
