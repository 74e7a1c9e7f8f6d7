//! Guest image loaders: firmware at the reset vector ([`firmware`]), flat binaries
//! ([`flat`]), and Multiboot v1 kernels ([`multiboot`], ELF32 via [`elf`] or the a.out
//! kludge). Each loader writes RAM and sets the CPU's entry state; [`boot_kernel`] picks the
//! loader for a [`KernelConfig`]. Linux bzImages ([`bzimage`]) are recognised by their `HdrS`
//! magic before the Multiboot header search; an x86-64 ELF without a Multiboot header is a
//! Linux `vmlinux` ([`vmlinux`]).
//!
//! Low-memory layout used by the direct-kernel loaders (no firmware runs):
//! - [`GDT_ADDR`]: a flat GDT (null, 0x08 32-bit code, 0x10 data, 0x18 64-bit code)
//! - [`INFO_AREA`]: boot information (Multiboot info, strings, memory map, module list)
//! - [`BOOT_STACK_TOP`]: the initial stack pointer

pub mod bzimage;
pub mod elf;
pub mod firmware;
pub mod flat;
pub mod images;
pub mod multiboot;
pub mod vmlinux;

use crate::config::{KernelConfig, KernelFormat};
use crate::error::MachineError;
use crane86_memory::PhysMem;
use crane86_x86::regs::cr0;
use crane86_x86::segment::{Segment, TableReg};
use crane86_x86::{CpuState, SegReg};
use thiserror::Error;

/// Where the loaders put the flat GDT.
pub const GDT_ADDR: u64 = 0x500;
/// Boot information area `[start, end)`.
pub const INFO_AREA: std::ops::Range<u64> = 0x1000..0x9000;
/// Initial stack pointer of directly booted kernels (protected mode).
pub const BOOT_STACK_TOP: u64 = 0x9_0000;
pub const SEL_CODE32: u16 = 0x08;
pub const SEL_DATA: u16 = 0x10;
pub const SEL_CODE64: u16 = 0x18;

/// Why an image could not be loaded.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum LoadError {
    #[error("not a Multiboot image (no header magic in the first {scanned} bytes)")]
    NotMultiboot { scanned: usize },
    #[error("Multiboot header at offset {offset:#x} has a bad checksum (magic + flags + checksum = {sum:#x}, must be 0)")]
    BadChecksum { offset: usize, sum: u32 },
    #[error("Multiboot header at offset {offset:#x} requires unsupported features (flags {flags:#x}: required bits {unsupported:#x} unknown)")]
    UnsupportedFlags {
        offset: usize,
        flags: u32,
        unsupported: u32,
    },
    #[error("Multiboot a.out kludge: {what} (header_addr {header_addr:#x}, load_addr {load_addr:#x}, load_end_addr {load_end_addr:#x}, bss_end_addr {bss_end_addr:#x}, file size {file_size:#x})")]
    BadAoutKludge {
        what: &'static str,
        header_addr: u32,
        load_addr: u32,
        load_end_addr: u32,
        bss_end_addr: u32,
        file_size: usize,
    },
    #[error("not an ELF32 image: {0}")]
    BadElf(String),
    #[error("ELF program header {index} at {paddr:#x} (+{memsz:#x} bytes) lies outside RAM (size {ram:#x})")]
    SegmentOutsideRam {
        index: usize,
        paddr: u64,
        memsz: u64,
        ram: u64,
    },
    #[error("ELF program header {index}: file range {offset:#x}+{filesz:#x} lies outside the {file_size}-byte file")]
    SegmentOutsideFile {
        index: usize,
        offset: u64,
        filesz: u64,
        file_size: usize,
    },
    #[error("{what} at {addr:#x} (+{len:#x} bytes) lies outside RAM (size {ram:#x})")]
    OutsideRam {
        what: &'static str,
        addr: u64,
        len: u64,
        ram: u64,
    },
    #[error("{what} at {addr:#x} (+{len:#x} bytes) overlaps the boot information area {:#x}..{:#x}", INFO_AREA.start, INFO_AREA.end)]
    OverlapsBootArea {
        what: &'static str,
        addr: u64,
        len: u64,
    },
    #[error("boot information ({needed} bytes: command line, memory map, modules) does not fit in {:#x}..{:#x}", INFO_AREA.start, INFO_AREA.end)]
    InfoTooLarge { needed: u64 },
    #[error("real-mode entry point {entry:#x} must lie below 1 MiB")]
    RealModeEntryTooHigh { entry: u64 },
    #[error("the image is empty")]
    Empty,
    #[error(transparent)]
    BzImage(#[from] bzimage::BzImageError),
}

/// Copy `data` into RAM at `addr`, or say which range is not RAM.
pub(crate) fn write_ram(
    mem: &mut PhysMem,
    what: &'static str,
    addr: u64,
    data: &[u8],
) -> Result<(), LoadError> {
    mem.write_ram(addr, data)
        .map_err(|_| LoadError::OutsideRam {
            what,
            addr,
            len: data.len() as u64,
            ram: mem.ram_size(),
        })
}

/// Zero `len` bytes of RAM at `addr`.
pub(crate) fn zero_ram(
    mem: &mut PhysMem,
    what: &'static str,
    addr: u64,
    len: u64,
) -> Result<(), LoadError> {
    if len == 0 {
        return Ok(());
    }
    write_ram(mem, what, addr, &vec![0; len as usize])
}

/// Reject an image range that would clobber the loader's own low-memory structures.
pub(crate) fn check_not_boot_area(
    what: &'static str,
    addr: u64,
    len: u64,
) -> Result<(), LoadError> {
    let end = addr.saturating_add(len);
    if addr < INFO_AREA.end && end > GDT_ADDR {
        return Err(LoadError::OverlapsBootArea { what, addr, len });
    }
    Ok(())
}

/// A GDT descriptor with a 4 GiB limit (4 KiB granularity).
fn flat_descriptor(access: u8, flags: u8) -> u64 {
    0xFFFF | (0xF << 48) | u64::from(access) << 40 | u64::from(flags) << 52
}

/// Write the flat GDT at [`GDT_ADDR`].
pub(crate) fn write_flat_gdt(mem: &mut PhysMem) -> Result<(), LoadError> {
    let gdt = [
        0u64,
        flat_descriptor(0x9B, 0xC),
        flat_descriptor(0x93, 0xC),
        flat_descriptor(0x9B, 0xA),
    ];
    let bytes: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();
    write_ram(mem, "GDT", GDT_ADDR, &bytes)
}

/// Put the CPU in 32-bit protected mode with flat segments from the loader GDT, paging off,
/// interrupts off, at `entry` with ESP = `stack`.
pub(crate) fn enter_protected32(cpu: &mut CpuState, entry: u64, stack: u64) {
    *cpu = CpuState::reset();
    cpu.gpr = [0; 16];
    cpu.cr0 = cr0::PE | cr0::ET;
    cpu.gdtr = TableReg {
        base: GDT_ADDR,
        limit: 4 * 8 - 1,
    };
    cpu.idtr = TableReg { base: 0, limit: 0 };
    cpu.seg[SegReg::Cs as usize] = Segment::from_descriptor(SEL_CODE32, flat_descriptor(0x9B, 0xC));
    let data = Segment::from_descriptor(SEL_DATA, flat_descriptor(0x93, 0xC));
    for s in [SegReg::Ds, SegReg::Es, SegReg::Fs, SegReg::Gs, SegReg::Ss] {
        cpu.seg[s as usize] = data;
    }
    cpu.rip = entry;
    cpu.gpr[4] = stack;
    cpu.a20 = true;
}

/// Load the kernel described by `k` into `mem` and set `cpu` to its entry state.
pub fn boot_kernel(
    mem: &mut PhysMem,
    cpu: &mut CpuState,
    k: &KernelConfig,
) -> Result<(), MachineError> {
    boot_kernel_with_acpi(mem, cpu, k, None)
}

/// [`boot_kernel`] for a platform with ACPI tables: a Linux kernel is told the RSDP address
/// `acpi_rsdp_addr` in its zero page.
pub fn boot_kernel_with_acpi(
    mem: &mut PhysMem,
    cpu: &mut CpuState,
    k: &KernelConfig,
    acpi_rsdp_addr: Option<u64>,
) -> Result<(), MachineError> {
    let name = k.image.name();
    let image = k.image.read()?;
    let wrap = |reason| MachineError::Kernel {
        name: name.clone(),
        reason,
    };
    match k.format {
        KernelFormat::Flat {
            load_addr,
            entry,
            mode,
        } => flat::load(
            mem,
            cpu,
            &image,
            load_addr,
            entry.unwrap_or(load_addr),
            mode,
        )
        .map_err(wrap),
        KernelFormat::Multiboot
            if bzimage::is_bzimage(&image)
                || (vmlinux::is_vmlinux(&image) && multiboot::find_header(&image).is_err()) =>
        {
            let mut initrd = Vec::new();
            for m in &k.modules {
                // Linux unpacks concatenated cpio archives (each 4-byte aligned).
                initrd.resize(initrd.len().next_multiple_of(4), 0);
                initrd.extend_from_slice(&m.read()?);
            }
            let layout = if bzimage::is_bzimage(&image) {
                bzimage::load(mem, cpu, &image, &k.cmdline, &initrd, acpi_rsdp_addr)
            } else {
                let args = bzimage::BootArgs {
                    cmdline: &k.cmdline,
                    initrd: &initrd,
                    acpi_rsdp_addr,
                };
                vmlinux::load(mem, cpu, &image, args)
            }
            .map_err(wrap)?;
            tracing::info!(?layout, "Linux kernel loaded");
            Ok(())
        }
        KernelFormat::Multiboot => {
            let mut modules = Vec::with_capacity(k.modules.len());
            for m in &k.modules {
                modules.push((m.name(), m.read()?));
            }
            multiboot::load(mem, cpu, &name, &image, &k.cmdline, &modules)
        }
    }
}
