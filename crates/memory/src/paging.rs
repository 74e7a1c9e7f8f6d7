//! The guest page-table walker: no paging, 32-bit (4 KiB and 4 MiB PSE pages), PAE and
//! 4-level long-mode paging, with U/S, R/W, NX, WP and the accessed/dirty bits.

use crate::phys::PhysMem;
use crane86_x86::exception::pf_err;
use crane86_x86::regs::{cr0, cr4, efer};

/// Kind of a memory access, for permission checks and #PF error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Fetch,
}

/// The paging structure format in force, from CR0/CR4/EFER.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    None,
    Legacy32,
    Pae,
    Long4,
}

impl PagingMode {
    pub fn from_regs(cr0_v: u64, cr4_v: u64, efer_v: u64) -> PagingMode {
        if cr0_v & cr0::PG == 0 {
            PagingMode::None
        } else if efer_v & efer::LMA != 0 {
            PagingMode::Long4
        } else if cr4_v & cr4::PAE != 0 {
            PagingMode::Pae
        } else {
            PagingMode::Legacy32
        }
    }
}

/// Control-register view the walker needs.
#[derive(Clone, Copy, Debug)]
pub struct PagingRegs {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

/// A successful translation of one page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// Physical address of the accessed byte.
    pub paddr: u64,
    /// Writable at the privilege the walk was done for (R/W and WP already applied).
    pub writable: bool,
    /// User-accessible.
    pub user: bool,
    /// Executable (NX clear, or NX not enabled).
    pub executable: bool,
    pub global: bool,
    /// The dirty bit is set (so a later write needs no walk).
    pub dirty: bool,
    /// Size of the mapping page in bytes (4 KiB, 2 MiB, 4 MiB or 1 GiB; 4 GiB-wide
    /// "page" when paging is off).
    pub page_size: u64,
}

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const ACCESSED: u64 = 1 << 5;
const DIRTY: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const G: u64 = 1 << 8;
const NX: u64 = 1 << 63;
/// Physical-address bits 12..=39 (crane86 reports 40 physical address bits).
const ADDR_MASK: u64 = 0x0000_00FF_FFFF_F000;
/// Bits that must be zero in PAE / long-mode entries (above MAXPHYADDR, excluding NX).
const RSVD_HIGH: u64 = 0x7FF0_0000_0000_0000 | 0x000F_FF00_0000_0000;

/// Walk the page tables for `lin`. `user` is true for CPL-3 accesses (not for implicit
/// supervisor accesses such as descriptor-table reads). On a fault returns the #PF error code.
pub fn walk(
    mem: &mut PhysMem,
    regs: PagingRegs,
    lin: u64,
    access: Access,
    user: bool,
) -> Result<Translation, u32> {
    let mode = PagingMode::from_regs(regs.cr0, regs.cr4, regs.efer);
    let nxe = regs.efer & efer::NXE != 0;
    let mut err = match access {
        Access::Write => pf_err::WRITE,
        // The I/D bit is reported only where NX exists and is enabled (SDM 4.7).
        Access::Fetch if nxe && matches!(mode, PagingMode::Pae | PagingMode::Long4) => {
            pf_err::FETCH
        }
        _ => 0,
    };
    if user {
        err |= pf_err::USER;
    }

    // Collect the entries from the top level down: (entry physical address, value).
    let mut chain: [(u64, u64); 4] = [(0, 0); 4];
    let mut depth = 0usize;
    // Non-canonical addresses are a #GP, checked by the caller before the walk.
    let (leaf_base, offset_mask): (u64, u64);
    match mode {
        PagingMode::None => {
            return Ok(Translation {
                paddr: lin & 0xFFFF_FFFF,
                writable: true,
                user: true,
                executable: true,
                global: false,
                dirty: true,
                page_size: 1 << 32,
            })
        }
        PagingMode::Legacy32 => {
            let lin = lin & 0xFFFF_FFFF;
            let pde_addr = (regs.cr3 & 0xFFFF_F000) | ((lin >> 22) << 2);
            let pde = u64::from(mem.read_u32(pde_addr));
            if pde & P == 0 {
                return Err(err);
            }
            chain[depth] = (pde_addr, pde);
            depth += 1;
            if pde & PS != 0 && regs.cr4 & cr4::PSE != 0 {
                // 4 MiB page; PSE-36 bits 13..=20 give physical bits 32..=39.
                leaf_base = (pde & 0xFFC0_0000) | ((pde >> 13) & 0xFF) << 32;
                offset_mask = 0x3F_FFFF;
            } else {
                let pte_addr = (pde & 0xFFFF_F000) | (((lin >> 12) & 0x3FF) << 2);
                let pte = u64::from(mem.read_u32(pte_addr));
                if pte & P == 0 {
                    return Err(err);
                }
                chain[depth] = (pte_addr, pte);
                depth += 1;
                leaf_base = pte & 0xFFFF_F000;
                offset_mask = 0xFFF;
            }
        }
        PagingMode::Pae | PagingMode::Long4 => {
            let levels: &[u32] = if mode == PagingMode::Long4 {
                &[39, 30, 21, 12]
            } else {
                &[30, 21, 12]
            };
            let mut table = if mode == PagingMode::Pae {
                regs.cr3 & 0xFFFF_FFE0
            } else {
                regs.cr3 & ADDR_MASK
            };
            let mut base = 0;
            let mut omask = 0;
            for (i, &shift) in levels.iter().enumerate() {
                let idx_bits = if mode == PagingMode::Pae && i == 0 {
                    0x3
                } else {
                    0x1FF
                };
                let entry_addr = table + (((lin >> shift) & idx_bits) << 3);
                let e = mem.read_u64(entry_addr);
                if e & P == 0 {
                    return Err(err);
                }
                let is_pdpte_pae = mode == PagingMode::Pae && i == 0;
                let mut rsvd = e & RSVD_HIGH != 0 || (!nxe && e & NX != 0);
                if is_pdpte_pae {
                    // PAE PDPTEs: bits 1,2,5..8 and NX are reserved.
                    rsvd |= e & 0x1E6 != 0 || e & NX != 0;
                }
                if mode == PagingMode::Long4 && i == 0 && e & PS != 0 {
                    rsvd = true;
                }
                if rsvd {
                    return Err(err | pf_err::PRESENT | pf_err::RSVD);
                }
                if !is_pdpte_pae {
                    chain[depth] = (entry_addr, e);
                    depth += 1;
                }
                let large = shift > 12 && !is_pdpte_pae && e & PS != 0;
                if shift == 12 || large {
                    let page_mask = (1u64 << shift) - 1;
                    if large && (e & ADDR_MASK & page_mask) >> 13 != 0 {
                        // Reserved bits in a large-page address field (bit 12 is PAT).
                        return Err(err | pf_err::PRESENT | pf_err::RSVD);
                    }
                    base = e & ADDR_MASK & !page_mask;
                    omask = page_mask;
                    break;
                }
                table = e & ADDR_MASK;
            }
            leaf_base = base;
            offset_mask = omask;
        }
    }
    debug_assert!(depth > 0);

    // Combine permissions over all levels.
    let entries = &chain[..depth];
    let all_rw = entries.iter().all(|&(_, e)| e & RW != 0);
    let all_us = entries.iter().all(|&(_, e)| e & US != 0);
    let any_nx = nxe && entries.iter().any(|&(_, e)| e & NX != 0);
    let leaf = entries[depth - 1].1;
    let wp = regs.cr0 & cr0::WP != 0;

    let writable = all_rw || (!user && !wp);
    let executable = !any_nx;
    let denied = match access {
        Access::Read => user && !all_us,
        Access::Write => (user && !all_us) || !writable,
        Access::Fetch => (user && !all_us) || !executable,
    };
    if denied {
        return Err(err | pf_err::PRESENT);
    }

    // Set accessed bits on every level and the dirty bit on the leaf for writes.
    let legacy = mode == PagingMode::Legacy32;
    for (i, &(addr, e)) in entries.iter().enumerate() {
        let mut ne = e | ACCESSED;
        if i == depth - 1 && access == Access::Write {
            ne |= DIRTY;
        }
        if ne != e {
            if legacy {
                mem.write_u32(addr, ne as u32);
            } else {
                mem.write_u64(addr, ne);
            }
        }
    }
    let dirty = leaf & DIRTY != 0 || access == Access::Write;
    Ok(Translation {
        paddr: leaf_base | (lin & offset_mask),
        writable,
        user: all_us,
        executable,
        global: leaf & G != 0 && regs.cr4 & cr4::PGE != 0,
        dirty,
        page_size: offset_mask + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(cr0_v: u64, cr3: u64, cr4_v: u64, efer_v: u64) -> PagingRegs {
        PagingRegs {
            cr0: cr0_v,
            cr3,
            cr4: cr4_v,
            efer: efer_v,
        }
    }

    #[test]
    fn legacy_two_level_sets_accessed_and_dirty() {
        let mut m = PhysMem::new(4 << 20, &[]).unwrap();
        m.write_u32(0x1000 + 4, 0x2000 | 0x7); // PDE for 0x400000
        m.write_u32(0x2000 + 4 * 5, 0x9000 | 0x7); // PTE for 0x405000
        let r = regs(cr0::PE | cr0::PG, 0x1000, 0, 0);
        let t = walk(&mut m, r, 0x405123, Access::Write, true).unwrap();
        assert_eq!(t.paddr, 0x9123);
        assert_eq!(m.read_u32(0x2000 + 20) & 0x60, 0x60);
        assert_eq!(m.read_u32(0x1004) & 0x20, 0x20);
    }

    #[test]
    fn user_write_to_read_only_page_faults_with_code() {
        let mut m = PhysMem::new(4 << 20, &[]).unwrap();
        m.write_u32(0x1000, 0x2000 | 0x7);
        m.write_u32(0x2000, 0x9000 | 0x5); // present, user, read-only
        let r = regs(cr0::PE | cr0::PG, 0x1000, 0, 0);
        let e = walk(&mut m, r, 0x10, Access::Write, true).unwrap_err();
        assert_eq!(e, pf_err::PRESENT | pf_err::WRITE | pf_err::USER);
        // Supervisor write succeeds without CR0.WP, faults with it.
        assert!(walk(&mut m, r, 0x10, Access::Write, false).is_ok());
        let r = regs(cr0::PE | cr0::PG | cr0::WP, 0x1000, 0, 0);
        assert!(walk(&mut m, r, 0x10, Access::Write, false).is_err());
    }

    #[test]
    fn long_mode_2m_page_and_nx() {
        let mut m = PhysMem::new(8 << 20, &[]).unwrap();
        m.write_u64(0x1000, 0x2000 | 3);
        m.write_u64(0x2000, 0x3000 | 3);
        m.write_u64(0x3000 + 8, 0x20_0000 | 0x83 | NX); // 2 MiB page at 2 MiB, NX
        let r = regs(
            cr0::PE | cr0::PG,
            0x1000,
            cr4::PAE,
            efer::LMA | efer::LME | efer::NXE,
        );
        let t = walk(&mut m, r, 0x20_1234, Access::Read, false).unwrap();
        assert_eq!(t.paddr, 0x20_1234);
        let e = walk(&mut m, r, 0x20_1234, Access::Fetch, false).unwrap_err();
        assert_eq!(e, pf_err::PRESENT | pf_err::FETCH);
        // NX set without EFER.NXE is a reserved-bit violation.
        let r = regs(cr0::PE | cr0::PG, 0x1000, cr4::PAE, efer::LMA | efer::LME);
        let e = walk(&mut m, r, 0x20_1234, Access::Read, false).unwrap_err();
        assert_eq!(e & pf_err::RSVD, pf_err::RSVD);
    }

    #[test]
    fn not_present_fault() {
        let mut m = PhysMem::new(4 << 20, &[]).unwrap();
        let r = regs(cr0::PE | cr0::PG, 0x1000, 0, 0);
        assert_eq!(walk(&mut m, r, 0x1234, Access::Read, false), Err(0));
    }
}
