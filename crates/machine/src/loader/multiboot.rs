//! Multiboot v1 kernels: the header search (first 8 KiB, 4-byte aligned), loading through ELF32
//! program headers or the a.out kludge (flags bit 16), modules placed page-aligned after the
//! kernel, the boot information structure (mem_lower/mem_upper, an e820-style memory map,
//! command line, modules, boot loader name) in [`INFO_AREA`], and the entry state the
//! specification requires: 32-bit protected mode, paging off, interrupts off, flat CS/DS,
//! EAX = 0x2BADB002, EBX = the information structure's address.

use super::{
    check_not_boot_area, elf, enter_protected32, write_flat_gdt, write_ram, zero_ram, LoadError,
    BOOT_STACK_TOP, INFO_AREA,
};
use crate::error::MachineError;
use crane86_memory::phys::LOW_RAM_LIMIT;
use crane86_memory::PhysMem;
use crane86_x86::CpuState;

pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// EAX at kernel entry.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The header must lie (4-byte aligned) within this many first bytes.
pub const SEARCH_LEN: usize = 8192;
/// Header flag: the address fields at offsets 12..32 are valid (the a.out kludge).
pub const FLAG_AOUT_KLUDGE: u32 = 1 << 16;
/// Required-feature bits we honour: 0 (page-align modules: always done), 1 (memory info:
/// always given). Bit 2 (video mode) is accepted and ignored: there is no framebuffer.
const SUPPORTED_REQUIRED: u32 = 0x7;

// Boot information flags.
const INFO_MEM: u32 = 1 << 0;
const INFO_CMDLINE: u32 = 1 << 2;
const INFO_MODS: u32 = 1 << 3;
const INFO_MMAP: u32 = 1 << 6;
const INFO_LOADER_NAME: u32 = 1 << 9;
/// Size of the boot information structure (up to and including the VBE fields).
const INFO_SIZE: u64 = 88;
const LOADER_NAME: &str = "crane86";

/// e820 range types.
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// A parsed Multiboot header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// File offset of the magic.
    pub offset: usize,
    pub flags: u32,
    /// header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr.
    pub aout: Option<[u32; 5]>,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

/// Find and check the Multiboot header.
pub fn find_header(image: &[u8]) -> Result<Header, LoadError> {
    let scan = image.len().min(SEARCH_LEN);
    let offset = (0..scan.saturating_sub(11))
        .step_by(4)
        .find(|&o| u32_at(image, o) == HEADER_MAGIC)
        .ok_or(LoadError::NotMultiboot {
            scanned: SEARCH_LEN,
        })?;
    let flags = u32_at(image, offset + 4);
    let sum = HEADER_MAGIC
        .wrapping_add(flags)
        .wrapping_add(u32_at(image, offset + 8));
    if sum != 0 {
        return Err(LoadError::BadChecksum { offset, sum });
    }
    let unsupported = flags & 0xFFFF & !SUPPORTED_REQUIRED;
    if unsupported != 0 {
        return Err(LoadError::UnsupportedFlags {
            offset,
            flags,
            unsupported,
        });
    }
    let aout = if flags & FLAG_AOUT_KLUDGE != 0 {
        if offset + 32 > image.len() {
            return Err(LoadError::BadAoutKludge {
                what: "the header's address fields run past the end of the file",
                header_addr: 0,
                load_addr: 0,
                load_end_addr: 0,
                bss_end_addr: 0,
                file_size: image.len(),
            });
        }
        let f = |k: usize| u32_at(image, offset + 12 + 4 * k);
        Some([f(0), f(1), f(2), f(3), f(4)])
    } else {
        None
    };
    Ok(Header {
        offset,
        flags,
        aout,
    })
}

/// Load the kernel image; returns (entry, end of the highest loaded byte).
fn load_image(mem: &mut PhysMem, image: &[u8], header: &Header) -> Result<(u64, u64), LoadError> {
    if let Some([header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr]) = header.aout {
        let bad = |what| LoadError::BadAoutKludge {
            what,
            header_addr,
            load_addr,
            load_end_addr,
            bss_end_addr,
            file_size: image.len(),
        };
        if header_addr < load_addr || u64::from(header_addr - load_addr) > header.offset as u64 {
            return Err(bad(
                "header_addr - load_addr must be between 0 and the header's file offset",
            ));
        }
        let file_start = header.offset - (header_addr - load_addr) as usize;
        let load_len = if load_end_addr == 0 {
            image.len() - file_start
        } else if load_end_addr < load_addr {
            return Err(bad("load_end_addr is below load_addr"));
        } else {
            (load_end_addr - load_addr) as usize
        };
        if file_start + load_len > image.len() {
            return Err(bad("the load range runs past the end of the file"));
        }
        let load_end = u64::from(load_addr) + load_len as u64;
        let bss_end = if bss_end_addr == 0 {
            load_end
        } else if u64::from(bss_end_addr) < load_end {
            return Err(bad("bss_end_addr is below the end of the loaded data"));
        } else {
            u64::from(bss_end_addr)
        };
        check_not_boot_area(
            "a.out kludge image",
            u64::from(load_addr),
            bss_end - u64::from(load_addr),
        )?;
        write_ram(
            mem,
            "a.out kludge image",
            u64::from(load_addr),
            &image[file_start..file_start + load_len],
        )?;
        zero_ram(mem, "a.out kludge bss", load_end, bss_end - load_end)?;
        return Ok((u64::from(entry_addr), bss_end));
    }
    let elf = elf::parse(image)?;
    let ram = mem.ram_size();
    let mut end = 0;
    for s in &elf.segments {
        let outside = LoadError::SegmentOutsideRam {
            index: s.index,
            paddr: s.paddr,
            memsz: s.memsz,
            ram,
        };
        check_not_boot_area("ELF segment", s.paddr, s.memsz)?;
        let data = &image[s.offset as usize..(s.offset + s.filesz) as usize];
        mem.write_ram(s.paddr, data).map_err(|_| outside.clone())?;
        if s.memsz > s.filesz {
            mem.write_ram(s.paddr + s.filesz, &vec![0; (s.memsz - s.filesz) as usize])
                .map_err(|_| outside.clone())?;
        }
        end = end.max(s.paddr + s.memsz);
    }
    Ok((elf.entry, end))
}

/// The e820-style memory map given to the kernel: (base, length, type).
pub fn memory_map(mem: &PhysMem) -> Vec<(u64, u64, u32)> {
    let low = mem.low_ram();
    let mut map = vec![
        (0, 0x9_FC00, E820_RAM),
        (0x9_FC00, 0x400, E820_RESERVED),
        (0xE_0000, 0x2_0000, E820_RESERVED),
        (0x10_0000, low - 0x10_0000, E820_RAM),
        (0xFEC0_0000, 0x1_0000_0000 - 0xFEC0_0000, E820_RESERVED),
    ];
    if mem.high_ram() > 0 {
        map.push((1 << 32, mem.high_ram(), E820_RAM));
    }
    debug_assert!(low <= LOW_RAM_LIMIT);
    map
}

/// Writes boot information into [`INFO_AREA`], bump-allocating from its start.
struct InfoWriter {
    bytes: Vec<u8>,
}

impl InfoWriter {
    fn addr(&self) -> u64 {
        INFO_AREA.start + self.bytes.len() as u64
    }
    fn push(&mut self, data: &[u8]) -> u32 {
        let a = self.addr() as u32;
        self.bytes.extend_from_slice(data);
        while self.bytes.len() & 3 != 0 {
            self.bytes.push(0);
        }
        a
    }
    fn push_str(&mut self, s: &str) -> u32 {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.push(&b)
    }
    fn set_u32(&mut self, off: u64, v: u32) {
        self.bytes[off as usize..off as usize + 4].copy_from_slice(&v.to_le_bytes());
    }
}

/// Load a Multiboot kernel with its modules and enter it. `append` is the user's command
/// line; the kernel receives `"<name> <append>"` as QEMU passes it.
pub fn load(
    mem: &mut PhysMem,
    cpu: &mut CpuState,
    name: &str,
    image: &[u8],
    append: &str,
    modules: &[(String, Vec<u8>)],
) -> Result<(), MachineError> {
    let kerr = |reason| MachineError::Kernel {
        name: name.to_string(),
        reason,
    };
    let header = find_header(image).map_err(kerr)?;
    let (entry, kernel_end) = load_image(mem, image, &header).map_err(kerr)?;

    let mut info = InfoWriter {
        bytes: vec![0; INFO_SIZE as usize],
    };
    let mut flags = INFO_MEM | INFO_CMDLINE | INFO_MMAP | INFO_LOADER_NAME;
    let low = mem.low_ram();
    info.set_u32(4, 640); // mem_lower (KiB)
    info.set_u32(8, ((low - 0x10_0000) / 1024) as u32); // mem_upper (KiB from 1 MiB)
    let cmdline = if append.is_empty() {
        name.to_string()
    } else {
        format!("{name} {append}")
    };
    let c = info.push_str(&cmdline);
    info.set_u32(16, c);
    let n = info.push_str(LOADER_NAME);
    info.set_u32(64, n);

    let mut mmap = Vec::new();
    for (base, len, ty) in memory_map(mem) {
        mmap.extend_from_slice(&20u32.to_le_bytes());
        mmap.extend_from_slice(&base.to_le_bytes());
        mmap.extend_from_slice(&len.to_le_bytes());
        mmap.extend_from_slice(&ty.to_le_bytes());
    }
    let m = info.push(&mmap);
    info.set_u32(44, mmap.len() as u32);
    info.set_u32(48, m);

    if !modules.is_empty() {
        flags |= INFO_MODS;
        let mut next = kernel_end.next_multiple_of(0x1000).max(0x10_0000);
        let mut list = Vec::new();
        for (mod_name, bytes) in modules {
            let merr = |reason| MachineError::Module {
                name: mod_name.clone(),
                reason,
            };
            write_ram(mem, "module", next, bytes).map_err(merr)?;
            let s = info.push_str(mod_name);
            for v in [next as u32, (next + bytes.len() as u64) as u32, s, 0] {
                list.extend_from_slice(&v.to_le_bytes());
            }
            next = (next + bytes.len() as u64).next_multiple_of(0x1000);
        }
        let l = info.push(&list);
        info.set_u32(20, modules.len() as u32);
        info.set_u32(24, l);
    }
    info.set_u32(0, flags);
    if info.addr() > INFO_AREA.end {
        return Err(kerr(LoadError::InfoTooLarge {
            needed: info.bytes.len() as u64,
        }));
    }
    write_ram(mem, "boot information", INFO_AREA.start, &info.bytes).map_err(kerr)?;
    write_flat_gdt(mem).map_err(kerr)?;
    enter_protected32(cpu, entry, BOOT_STACK_TOP);
    cpu.gpr[0] = u64::from(BOOTLOADER_MAGIC);
    cpu.gpr[3] = INFO_AREA.start;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::images::{elf32, multiboot_aout, multiboot_header, ElfSegment};
    use crane86_x86::CpuMode;

    fn mem() -> PhysMem {
        PhysMem::new(32 << 20, &[]).unwrap()
    }

    fn read(mem: &PhysMem, addr: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0; len];
        mem.read_ram(addr, &mut b).unwrap();
        b
    }

    #[test]
    fn elf_kernel_loads_segments_and_info() {
        let code = [0xF4u8; 8];
        let data = [0xAB; 4];
        let img = elf32(
            0x10_0000,
            &[
                ElfSegment {
                    paddr: 0x10_0000,
                    data: &code,
                    memsz: 8,
                },
                ElfSegment {
                    paddr: 0x20_0000,
                    data: &data,
                    memsz: 0x100,
                },
            ],
        );
        let mut m = mem();
        m.write_ram(0x20_0010, &[0x55; 4]).unwrap();
        let mut cpu = CpuState::reset();
        let mods = vec![("mod-a arg".to_string(), vec![1u8, 2, 3])];
        load(&mut m, &mut cpu, "kernel.elf", &img, "console=ttyS0", &mods).unwrap();
        assert_eq!(cpu.mode(), CpuMode::Protected);
        assert!(!cpu.paging());
        assert_eq!(cpu.rip, 0x10_0000);
        assert_eq!(cpu.gpr[0], 0x2BAD_B002);
        assert_eq!(read(&m, 0x10_0000, 8), code);
        assert_eq!(read(&m, 0x20_0000, 4), data);
        assert_eq!(read(&m, 0x20_0010, 4), [0; 4], "bss is zeroed");
        let info = cpu.gpr[3];
        let w = |o: u64| m.read_u32(info + o);
        assert_eq!(w(0) & 0x24D, 0x24D, "mem, cmdline, mods, mmap, loader name");
        assert_eq!(w(4), 640);
        assert_eq!(u64::from(w(8)), (32 << 20) / 1024 - 1024);
        let cmd = read(&m, u64::from(w(16)), 27);
        assert_eq!(&cmd[..], b"kernel.elf console=ttyS0\0\0\0"[..27].as_ref());
        assert_eq!(w(20), 1);
        let modrec = u64::from(w(24));
        let start = m.read_u32(modrec);
        assert_eq!(
            start, 0x20_1000,
            "page-aligned after the kernel's highest byte"
        );
        assert_eq!(m.read_u32(modrec + 4), start + 3);
        assert_eq!(read(&m, u64::from(start), 3), [1, 2, 3]);
        // mmap: first entry is low RAM.
        let mm = u64::from(w(48));
        assert_eq!(m.read_u32(mm), 20);
        assert_eq!(m.read_u64(mm + 4), 0);
        assert_eq!(m.read_u32(mm + 20), E820_RAM);
        assert_eq!(w(44) % 24, 0);
    }

    #[test]
    fn aout_kludge_loads_with_bss() {
        let code = [0x90u8, 0x90, 0xF4];
        let img = multiboot_aout(0x10_0000, &code, 0x1000, 1);
        let mut m = mem();
        m.write_ram(0x10_0100, &[0x77; 4]).unwrap();
        let mut cpu = CpuState::reset();
        load(&mut m, &mut cpu, "k", &img, "", &[]).unwrap();
        assert_eq!(cpu.rip, 0x10_0021);
        assert_eq!(read(&m, 0x10_0020, 3), code);
        assert_eq!(read(&m, 0x10_0100, 4), [0; 4]);
    }

    #[test]
    fn corrupt_images_give_clear_errors() {
        let mut m = mem();
        let mut cpu = CpuState::reset();
        let e = load(&mut m, &mut cpu, "/path/k", &[0u8; 9000], "", &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "loading kernel /path/k: not a Multiboot image (no header magic in the first 8192 bytes)"
        );
        let mut bad = multiboot_header(0x3, None);
        bad[8] ^= 1;
        let e = find_header(&bad).unwrap_err();
        assert!(matches!(e, LoadError::BadChecksum { offset: 0, .. }), "{e}");
        let e = find_header(&multiboot_header(0x10, None)).unwrap_err();
        assert!(e.to_string().contains("0x10"), "{e}");
        let img = elf32(
            0x10_0000,
            &[
                ElfSegment {
                    paddr: 0x10_0000,
                    data: &[0xF4],
                    memsz: 1,
                },
                ElfSegment {
                    paddr: 0x4000_0000,
                    data: &[1],
                    memsz: 1,
                },
            ],
        );
        let e = load(&mut m, &mut cpu, "k", &img, "", &[]).unwrap_err();
        assert!(
            e.to_string().contains(
                "ELF program header 1 at 0x40000000 (+0x1 bytes) lies outside RAM (size 0x2000000)"
            ),
            "{e}"
        );
        let img = multiboot_aout(0x10_0000, &[0xF4], 0, 0);
        let mut broken = img.clone();
        broken[16..20].copy_from_slice(&0x8_0000u32.to_le_bytes()); // load_addr > header_addr
        let e = load(&mut m, &mut cpu, "k", &broken, "", &[]).unwrap_err();
        assert!(e.to_string().contains("a.out kludge"), "{e}");
    }
}
