//! Linux `vmlinux` ELF64 kernels (the bzImage's payload, decompressed on the host — e.g. by
//! `scripts/linux-guest.sh`, which writes `target/guest/vmlinux`). Firecracker's habit: the
//! PT_LOAD segments go to their physical addresses, and the CPU enters the ELF entry point
//! (`phys_startup_64`, the kernel's own 64-bit entry) in long mode with RSI = a zero page, as
//! the bzImage decompressor would. This skips the decompressor, which is several billion
//! guest instructions of XZ decoding on the interpreter. The zero page's setup header is
//! synthesized (`HdrS`, protocol 2.15, `cmdline_size` 2047, `initrd_addr_max` 2 GiB − 1);
//! the rest — command line, initrd, e820, page tables, GDT — is [`bzimage::finish_boot`].

use super::bzimage::{self, BootArgs, BootLayout, EntryProtocol};
use super::{write_ram, zero_ram, LoadError};
use crane86_memory::PhysMem;
use crane86_x86::CpuState;
use linux_loader::loader::bootparam::setup_header;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
/// Protocol version written into the synthesized header.
const SYNTH_PROTOCOL: u16 = 0x020F;
const SYNTH_CMDLINE_SIZE: u32 = 2047;
const SYNTH_INITRD_ADDR_MAX: u32 = 0x7FFF_FFFF;

/// Is `image` an x86-64 ELF file?
pub fn is_vmlinux(image: &[u8]) -> bool {
    image.len() >= 64
        && &image[..4] == ELF_MAGIC
        && image[4] == ELFCLASS64
        && u16::from_le_bytes([image[18], image[19]]) == EM_X86_64
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// Load the vmlinux `image`, build the zero page, and enter the kernel in 64-bit mode.
pub fn load(
    mem: &mut PhysMem,
    cpu: &mut CpuState,
    image: &[u8],
    args: BootArgs<'_>,
) -> Result<BootLayout, LoadError> {
    if !is_vmlinux(image) {
        return Err(LoadError::BadElf("not an x86-64 ELF64 vmlinux".into()));
    }
    let entry = u64_at(image, 24);
    let phoff = u64_at(image, 32) as usize;
    let phentsize = usize::from(u16_at(image, 54));
    let phnum = usize::from(u16_at(image, 56));
    let ram = mem.ram_size();
    let mut kernel_start = u64::MAX;
    let mut kernel_end = 0u64;
    let mut segments = Vec::new();
    for index in 0..phnum {
        let ph = phoff + index * phentsize;
        if phentsize < 56 || ph + 56 > image.len() {
            return Err(LoadError::BadElf(format!(
                "program header {index} at {ph:#x} runs past the {}-byte file",
                image.len()
            )));
        }
        if u32_at(image, ph) != PT_LOAD {
            continue;
        }
        let offset = u64_at(image, ph + 8);
        let paddr = u64_at(image, ph + 24);
        let filesz = u64_at(image, ph + 32);
        let memsz = u64_at(image, ph + 40);
        if offset.saturating_add(filesz) > image.len() as u64 || filesz > memsz {
            return Err(LoadError::SegmentOutsideFile {
                index,
                offset,
                filesz,
                file_size: image.len(),
            });
        }
        if paddr.saturating_add(memsz) > mem.low_ram() {
            return Err(LoadError::SegmentOutsideRam {
                index,
                paddr,
                memsz,
                ram,
            });
        }
        kernel_start = kernel_start.min(paddr);
        kernel_end = kernel_end.max(paddr + memsz);
        segments.push((paddr, offset as usize, filesz as usize, memsz));
    }
    if segments.is_empty() {
        return Err(LoadError::BadElf("no PT_LOAD program headers".into()));
    }
    let hdr = setup_header {
        boot_flag: 0xAA55,
        header: bzimage::HDRS_MAGIC,
        version: SYNTH_PROTOCOL,
        loadflags: 0x01, // LOADED_HIGH
        kernel_alignment: 0x20_0000,
        cmdline_size: SYNTH_CMDLINE_SIZE,
        initrd_addr_max: SYNTH_INITRD_ADDR_MAX,
        pref_address: kernel_start,
        init_size: (kernel_end - kernel_start) as u32,
        ..setup_header::default()
    };
    let initrd = bzimage::finish_boot(
        mem,
        cpu,
        hdr,
        kernel_end,
        args,
        EntryProtocol::Bits64,
        entry,
    )?;
    for (paddr, offset, filesz, memsz) in segments {
        write_ram(
            mem,
            "kernel segment",
            paddr,
            &image[offset..offset + filesz],
        )?;
        zero_ram(
            mem,
            "kernel bss",
            paddr + filesz as u64,
            memsz - filesz as u64,
        )?;
    }
    Ok(BootLayout {
        protocol: EntryProtocol::Bits64,
        entry,
        kernel_addr: kernel_start,
        kernel_size: kernel_end - kernel_start,
        runtime_addr: kernel_start,
        init_size: kernel_end - kernel_start,
        initrd: initrd.map(|a| (a, args.initrd.len() as u64)),
    })
}
