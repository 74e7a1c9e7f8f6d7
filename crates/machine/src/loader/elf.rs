//! A minimal ELF32 reader for Multiboot kernels: the header checks and the `PT_LOAD` program
//! headers (loaded at their physical address `p_paddr`, as GRUB does).

use super::LoadError;

pub const ELF_MAGIC: [u8; 4] = [0x7F, b'E', b'L', b'F'];
pub const PT_LOAD: u32 = 1;
const EM_386: u16 = 3;
const ET_EXEC: u16 = 2;
const EHDR_SIZE: usize = 52;
const PHDR_SIZE: usize = 32;

/// One `PT_LOAD` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    /// Index of the program header in the table.
    pub index: usize,
    pub offset: u64,
    pub filesz: u64,
    pub paddr: u64,
    pub memsz: u64,
}

/// The parts of an ELF32 executable a loader needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Elf32 {
    pub entry: u64,
    pub segments: Vec<LoadSegment>,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

/// Parse an ELF32 little-endian i386 executable.
pub fn parse(image: &[u8]) -> Result<Elf32, LoadError> {
    let bad = |why: String| LoadError::BadElf(why);
    if image.len() < EHDR_SIZE || image[..4] != ELF_MAGIC {
        return Err(bad("no ELF magic at offset 0".into()));
    }
    if image[4] != 1 {
        return Err(bad(format!(
            "ELF class {} (only 1 = 32-bit is supported by Multiboot v1)",
            image[4]
        )));
    }
    if image[5] != 1 {
        return Err(bad(format!(
            "data encoding {} (only 1 = little-endian)",
            image[5]
        )));
    }
    let e_type = u16_at(image, 16);
    let machine = u16_at(image, 18);
    if e_type != ET_EXEC {
        return Err(bad(format!("e_type {e_type} (must be 2 = executable)")));
    }
    if machine != EM_386 {
        return Err(bad(format!("e_machine {machine} (must be 3 = i386)")));
    }
    let entry = u64::from(u32_at(image, 24));
    let phoff = u32_at(image, 28) as usize;
    let phentsize = usize::from(u16_at(image, 42));
    let phnum = usize::from(u16_at(image, 44));
    if phnum > 0 && phentsize < PHDR_SIZE {
        return Err(bad(format!(
            "e_phentsize {phentsize} (must be at least {PHDR_SIZE})"
        )));
    }
    let table_end = phoff
        .checked_add(phnum * phentsize)
        .filter(|&e| e <= image.len())
        .ok_or_else(|| {
            bad(format!(
                "program header table at {phoff:#x} ({phnum} x {phentsize} bytes) runs past the {}-byte file",
                image.len()
            ))
        })?;
    let _ = table_end;
    let mut segments = Vec::new();
    for index in 0..phnum {
        let h = phoff + index * phentsize;
        if u32_at(image, h) != PT_LOAD {
            continue;
        }
        let seg = LoadSegment {
            index,
            offset: u64::from(u32_at(image, h + 4)),
            paddr: u64::from(u32_at(image, h + 12)),
            filesz: u64::from(u32_at(image, h + 16)),
            memsz: u64::from(u32_at(image, h + 20)),
        };
        if seg.offset + seg.filesz > image.len() as u64 {
            return Err(LoadError::SegmentOutsideFile {
                index,
                offset: seg.offset,
                filesz: seg.filesz,
                file_size: image.len(),
            });
        }
        if seg.filesz > seg.memsz {
            return Err(bad(format!(
                "program header {index}: p_filesz {:#x} exceeds p_memsz {:#x}",
                seg.filesz, seg.memsz
            )));
        }
        segments.push(seg);
    }
    if segments.is_empty() {
        return Err(bad("no PT_LOAD program headers".into()));
    }
    Ok(Elf32 { entry, segments })
}
