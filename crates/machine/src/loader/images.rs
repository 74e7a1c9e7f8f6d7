//! Builders of small kernel images in memory — ELF32 executables, Multiboot headers, the
//! a.out kludge — for tests and examples (no binary files are committed).

use super::elf::{ELF_MAGIC, PT_LOAD};
use super::multiboot::{FLAG_AOUT_KLUDGE, HEADER_MAGIC};

/// A Multiboot v1 header with `flags` (the checksum is computed). With
/// [`FLAG_AOUT_KLUDGE`], pass the address fields `[header_addr, load_addr, load_end_addr,
/// bss_end_addr, entry_addr]`.
pub fn multiboot_header(flags: u32, aout: Option<[u32; 5]>) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&HEADER_MAGIC.to_le_bytes());
    h.extend_from_slice(&flags.to_le_bytes());
    h.extend_from_slice(&(0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags)).to_le_bytes());
    if let Some(fields) = aout {
        for f in fields {
            h.extend_from_slice(&f.to_le_bytes());
        }
    }
    h
}

/// A Multiboot a.out-kludge image: header at file offset 0 describing `code` loaded at
/// `load_addr` (right after the 32-byte header), `bss` zeroed bytes after it, entry at
/// `load_addr + 32 + entry_offset`. `code` must be assembled for address `load_addr + 32`.
pub fn multiboot_aout(load_addr: u32, code: &[u8], bss: u32, entry_offset: u32) -> Vec<u8> {
    let header_len = 32u32;
    let load_end = load_addr + header_len + code.len() as u32;
    let mut img = multiboot_header(
        FLAG_AOUT_KLUDGE | 0x3,
        Some([
            load_addr,
            load_addr,
            load_end,
            load_end + bss,
            load_addr + header_len + entry_offset,
        ]),
    );
    img.extend_from_slice(code);
    img
}

/// A segment of [`elf32`]: bytes placed at `paddr`, `memsz >= data.len()` (the rest is bss).
pub struct ElfSegment<'a> {
    pub paddr: u32,
    pub data: &'a [u8],
    pub memsz: u32,
}

/// An ELF32 i386 executable with one `PT_LOAD` program header per segment, entered at
/// `entry`. The file data of the segments follows the headers; a Multiboot header (flags 3)
/// is placed right after the program headers so the loader finds it in the first 8 KiB.
pub fn elf32(entry: u32, segments: &[ElfSegment]) -> Vec<u8> {
    let ehdr = 52usize;
    let phdr = 32usize;
    let mb = multiboot_header(0x3, None);
    let mut data_off = ehdr + phdr * segments.len() + mb.len();
    let mut img = vec![0u8; ehdr];
    img[..4].copy_from_slice(&ELF_MAGIC);
    img[4] = 1; // ELFCLASS32
    img[5] = 1; // little-endian
    img[6] = 1; // EV_CURRENT
    img[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    img[18..20].copy_from_slice(&3u16.to_le_bytes()); // EM_386
    img[20..24].copy_from_slice(&1u32.to_le_bytes());
    img[24..28].copy_from_slice(&entry.to_le_bytes());
    img[28..32].copy_from_slice(&(ehdr as u32).to_le_bytes()); // e_phoff
    img[40..42].copy_from_slice(&(ehdr as u16).to_le_bytes()); // e_ehsize
    img[42..44].copy_from_slice(&(phdr as u16).to_le_bytes());
    img[44..46].copy_from_slice(&(segments.len() as u16).to_le_bytes());
    for s in segments {
        let mut h = Vec::with_capacity(phdr);
        for v in [
            PT_LOAD,
            data_off as u32,
            s.paddr,
            s.paddr,
            s.data.len() as u32,
            s.memsz,
            0x7, // RWX
            0x1000,
        ] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        img.extend_from_slice(&h);
        data_off += s.data.len();
    }
    img.extend_from_slice(&mb);
    for s in segments {
        img.extend_from_slice(s.data);
    }
    img
}
