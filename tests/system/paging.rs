//! Paging: accessed/dirty bits set by the walker, CR0.WP, INVLPG after a PTE change, CR3
//! switches, global pages surviving CR3 writes with CR4.PGE, 4 MiB PSE pages and 2 MiB PAE
//! pages.

use super::*;
use crane86::machine::testkit::{pte_addr, PAGE_TABLES};

const PAGE_A: u64 = 0x4_1000;
const PAGE_B: u64 = 0x4_3000;
const VALUE_A: u32 = 0x1111;
const VALUE_B: u32 = 0x3333;
/// Where the second page-table hierarchy lives (a relocated copy of the test kit's).
const ALT_TABLES: u64 = PAGE_TABLES + 0x8_0000;

fn read_pte(g: &TestGuest, mode: Mode, lin: u64) -> u64 {
    let a = pte_addr(mode, lin);
    if mode == Mode::Paged32 {
        g.read_u64(a) & 0xFFFF_FFFF
    } else {
        g.read_u64(a)
    }
}

fn write_pte(g: &mut TestGuest, mode: Mode, lin: u64, v: u64) {
    let a = pte_addr(mode, lin);
    if mode == Mode::Paged32 {
        g.mem.write_u32(a, v as u32);
    } else {
        g.mem.write_u64(a, v);
    }
    g.engine.reset_caches();
}

/// The CR3 value of the test kit's tables and of the relocated copy.
fn cr3_pair(mode: Mode) -> (u64, u64) {
    let root = match mode {
        Mode::Pae32 => PAGE_TABLES + 0x1000,
        _ => PAGE_TABLES,
    };
    (root, root - PAGE_TABLES + ALT_TABLES)
}

/// Copy the four table pages to ALT_TABLES, relocating pointers between them, and map
/// PAGE_A to `alt_target` there.
fn build_alt_tables(g: &mut TestGuest, mode: Mode, alt_target: u64) {
    let entry = if mode == Mode::Paged32 { 4 } else { 8 };
    for off in (0..0x4000u64).step_by(entry) {
        let mut v = if entry == 4 {
            g.read_u64(PAGE_TABLES + off) & 0xFFFF_FFFF
        } else {
            g.read_u64(PAGE_TABLES + off)
        };
        let target = v & 0xF_FFFF_F000;
        let is_pointer = (PAGE_TABLES..PAGE_TABLES + 0x4000).contains(&target) && v & 1 != 0;
        if is_pointer {
            v = v - PAGE_TABLES + ALT_TABLES;
        }
        if entry == 4 {
            g.mem.write_u32(ALT_TABLES + off, v as u32);
        } else {
            g.mem.write_u64(ALT_TABLES + off, v);
        }
    }
    let pte = pte_addr(mode, PAGE_A) - PAGE_TABLES + ALT_TABLES;
    if entry == 4 {
        g.mem.write_u32(pte, (alt_target | 7) as u32);
    } else {
        g.mem.write_u64(pte, alt_target | 7);
    }
    g.engine.reset_caches();
}

fn load_values(g: &mut TestGuest) {
    g.write(PAGE_A, &VALUE_A.to_le_bytes());
    g.write(PAGE_B, &VALUE_B.to_le_bytes());
}

/// Read the dword at PAGE_A into `reg`-numbered GPR: 0 = ebx, 1 = ecx, 2 = edx.
fn read_a(a: &mut CodeAssembler, k: u32) -> Result<(), IcedError> {
    let addr = PAGE_A as u32;
    match k {
        0 => a.mov(ebx, dword_ptr(addr)),
        1 => a.mov(ecx, dword_ptr(addr)),
        _ => a.mov(edx, dword_ptr(addr)),
    }
}

/// `mov eax/rax, crN` as the mode allows.
fn read_cr(a: &mut CodeAssembler, mode: Mode, n: u8) -> Result<(), IcedError> {
    let r = [cr0, cr0, cr2, cr3, cr4][n as usize];
    if mode == Mode::Long64 {
        a.mov(rax, r)
    } else {
        a.mov(eax, r)
    }
}

/// `mov crN, eax/rax` as the mode allows.
fn write_cr(a: &mut CodeAssembler, mode: Mode, n: u8) -> Result<(), IcedError> {
    let r = [cr0, cr0, cr2, cr3, cr4][n as usize];
    if mode == Mode::Long64 {
        a.mov(r, rax)
    } else {
        a.mov(r, eax)
    }
}

#[test]
fn walker_sets_accessed_and_dirty_bits() {
    for engine in EngineKind::emulators() {
        for mode in PAGED {
            let (mut g, _) = guest(engine, mode, |a| {
                a.mov(eax, dword_ptr(PAGE_A as u32))?;
                a.mov(dword_ptr(PAGE_B as u32), eax)?;
                a.hlt()?;
                Ok(vec![])
            });
            let tag = format!("{engine} {mode:?}");
            assert_eq!(read_pte(&g, mode, PAGE_A) & 0x60, 0, "{tag}: starts clean");
            g.run_to_halt();
            assert_eq!(
                read_pte(&g, mode, PAGE_A) & 0x60,
                0x20,
                "{tag}: read sets A only"
            );
            assert_eq!(
                read_pte(&g, mode, PAGE_B) & 0x60,
                0x60,
                "{tag}: write sets A and D"
            );
            let pde = if mode == Mode::Paged32 {
                g.read_u64(PAGE_TABLES)
            } else {
                g.read_u64(PAGE_TABLES + 0x2000)
            };
            assert_ne!(pde & 0x20, 0, "{tag}: PDE accessed");
        }
    }
}

#[test]
fn supervisor_writes_to_read_only_pages_follow_cr0_wp() {
    for engine in EngineKind::emulators() {
        for mode in PAGED {
            let (mut g, _) = guest(engine, mode, |a| {
                read_cr(a, mode, 0)?;
                a.and(eax, !(1 << 16))?;
                write_cr(a, mode, 0)?;
                a.mov(dword_ptr(PAGE_A as u32), 0x77u32)?;
                a.hlt()?;
                Ok(vec![])
            });
            write_pte(&mut g, mode, PAGE_A, PAGE_A | 0x5);
            g.run_to_halt();
            assert_eq!(g.read_u64(PAGE_A) & 0xFFFF_FFFF, 0x77, "{engine} {mode:?}");
            assert_ne!(read_pte(&g, mode, PAGE_A) & 0x40, 0, "dirty set");
        }
    }
}

#[test]
fn invlpg_drops_a_stale_translation() {
    for engine in EngineKind::emulators() {
        for mode in PAGED {
            let pte = pte_addr(mode, PAGE_A) as u32;
            let (mut g, _) = guest(engine, mode, |a| {
                read_a(a, 0)?;
                a.mov(dword_ptr(pte), (PAGE_B | 7) as u32)?;
                a.invlpg(byte_ptr(PAGE_A as u32))?;
                read_a(a, 1)?;
                a.hlt()?;
                Ok(vec![])
            });
            load_values(&mut g);
            g.run_to_halt();
            let tag = format!("{engine} {mode:?}");
            assert_eq!(g.cpu.gpr[3], u64::from(VALUE_A), "{tag}: before");
            assert_eq!(g.cpu.gpr[1], u64::from(VALUE_B), "{tag}: after INVLPG");
        }
    }
}

#[test]
fn cr3_switch_changes_the_address_space() {
    for engine in EngineKind::emulators() {
        for mode in PAGED {
            let (cr3_main, cr3_alt) = cr3_pair(mode);
            let (mut g, _) = guest(engine, mode, |a| {
                read_a(a, 0)?;
                a.mov(eax, cr3_alt as u32)?;
                write_cr(a, mode, 3)?;
                read_a(a, 1)?;
                a.mov(eax, cr3_main as u32)?;
                write_cr(a, mode, 3)?;
                read_a(a, 2)?;
                a.hlt()?;
                Ok(vec![])
            });
            load_values(&mut g);
            build_alt_tables(&mut g, mode, PAGE_B);
            g.run_to_halt();
            let tag = format!("{engine} {mode:?}");
            assert_eq!(g.cpu.gpr[3], u64::from(VALUE_A), "{tag}: first space");
            assert_eq!(g.cpu.gpr[1], u64::from(VALUE_B), "{tag}: second space");
            assert_eq!(g.cpu.gpr[2], u64::from(VALUE_A), "{tag}: back");
        }
    }
}

#[test]
fn global_pages_survive_cr3_writes_until_pge_toggles() {
    for engine in EngineKind::emulators() {
        for mode in PAGED {
            let (_, cr3_alt) = cr3_pair(mode);
            let (mut g, _) = guest(engine, mode, |a| {
                read_cr(a, mode, 4)?;
                a.or(eax, 0x80)?; // PGE
                write_cr(a, mode, 4)?;
                read_a(a, 0)?;
                a.mov(eax, cr3_alt as u32)?;
                write_cr(a, mode, 3)?;
                read_a(a, 1)?;
                read_cr(a, mode, 4)?;
                a.and(eax, !0x80)?;
                write_cr(a, mode, 4)?;
                read_a(a, 2)?;
                a.hlt()?;
                Ok(vec![])
            });
            load_values(&mut g);
            build_alt_tables(&mut g, mode, PAGE_B);
            write_pte(&mut g, mode, PAGE_A, PAGE_A | 0x107); // global
            g.run_to_halt();
            let tag = format!("{engine} {mode:?}");
            assert_eq!(g.cpu.gpr[3], u64::from(VALUE_A), "{tag}: global mapping");
            assert_eq!(
                g.cpu.gpr[1],
                u64::from(VALUE_A),
                "{tag}: the global entry survives the CR3 write"
            );
            assert_eq!(
                g.cpu.gpr[2],
                u64::from(VALUE_B),
                "{tag}: clearing CR4.PGE flushes global entries"
            );
        }
    }
}

#[test]
fn large_pages_map_4m_and_2m() {
    for engine in EngineKind::emulators() {
        for mode in PAGED {
            // Paged32: the PDE for 4 MiB maps a 4 MiB page; PAE/long: the PDE for 2 MiB maps
            // a 2 MiB page. Point it at 8 MiB and read through it.
            let (lin, pde_addr) = if mode == Mode::Paged32 {
                (0x40_0010u64, PAGE_TABLES + 4)
            } else {
                (0x20_0010u64, PAGE_TABLES + 0x2000 + 8)
            };
            let (mut g, _) = guest(engine, mode, |a| {
                a.mov(ebx, dword_ptr(lin as u32))?;
                a.hlt()?;
                Ok(vec![])
            });
            let phys = 0x80_0000u64;
            if mode == Mode::Paged32 {
                g.mem.write_u32(pde_addr, (phys | 0x87) as u32);
            } else {
                g.mem.write_u64(pde_addr, phys | 0x87);
            }
            g.write(phys + (lin & 0xFFF), &0xABCDu32.to_le_bytes());
            g.run_to_halt();
            assert_eq!(g.cpu.gpr[3], 0xABCD, "{engine} {mode:?}");
        }
    }
}
