//! String instructions: MOVS/CMPS/SCAS/LODS/STOS/INS/OUTS with REP/REPE/REPNE in every mode,
//! DF, segment override on the source only, 16-bit address size inside 32-bit code, a page
//! fault in the middle of a REP restarting precisely, long REPs running in chunks, and a REP
//! yielding to a pending interrupt.

use crate::common::*;
use crane86::machine::testkit::STACK_TOP;
use std::sync::{Arc, Mutex};

fn pattern(n: usize) -> Vec<u8> {
    (0..n)
        .map(|k| (k as u8).wrapping_mul(7).wrapping_add(3))
        .collect()
}

#[test]
fn rep_string_operations_in_every_mode() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let d = data(mode);
            let (src, dst, fill, cmp) = (d, d + 0x100, d + 0x200, d + 0x300);
            let code = assemble(mode, |a| {
                // The same 32-bit register setup works in every mode (16-bit code uses SI/DI/CX).
                a.cld().unwrap();
                a.mov(esi, src as u32).unwrap();
                a.mov(edi, dst as u32).unwrap();
                a.mov(ecx, 16u32).unwrap();
                a.rep().movsb().unwrap();
                a.mov(edi, fill as u32).unwrap();
                a.mov(ax, 0xBEEFu32).unwrap();
                a.mov(ecx, 5u32).unwrap();
                a.rep().stosw().unwrap();
                // REPE CMPSB over 16 bytes that differ at index 9: stops after 10 elements.
                a.mov(esi, src as u32).unwrap();
                a.mov(edi, cmp as u32).unwrap();
                a.mov(ecx, 16u32).unwrap();
                a.repe().cmpsb().unwrap();
                a.mov(ebp, ecx).unwrap();
                a.mov(ebx, esi).unwrap();
                // REPNE SCASB for byte value pattern[12] in the copy.
                a.mov(edi, dst as u32).unwrap();
                a.mov(al, u32::from(pattern(16)[12])).unwrap();
                a.mov(ecx, 16u32).unwrap();
                a.repne().scasb().unwrap();
                a.mov(edx, ecx).unwrap();
                // LODSD backwards (DF = 1): loads the dword at src + 4, ESI -= 4.
                a.std().unwrap();
                a.mov(esi, src as u32 + 4).unwrap();
                a.lodsd().unwrap();
                a.cld().unwrap();
            });
            let mut g = guest(engine, mode, &code, &[], 0);
            let p = pattern(16);
            g.write(src, &p);
            let mut differing = p.clone();
            differing[9] ^= 0xFF;
            g.write(cmp, &differing);
            g.run_to_halt();
            assert_no_exception(&g, "rep string ops");
            let s = &g.cpu;
            for (k, &b) in p.iter().enumerate() {
                assert_eq!(
                    read_u8(&g, dst + k as u64),
                    b,
                    "{engine} {mode:?} movsb byte {k}"
                );
            }
            for k in 0..5 {
                assert_eq!(read_u16(&g, fill + 2 * k), 0xBEEF, "{mode:?} stosw {k}");
            }
            assert_eq!(read_u16(&g, fill + 10), 0, "{mode:?} stosw stopped");
            assert_eq!(s.gpr[5] & 0xFFFF, 6, "{mode:?} repe cmpsb count left");
            assert_eq!(
                s.gpr[RBX] & 0xFFFF,
                (src + 10) & 0xFFFF,
                "{mode:?} cmpsb SI"
            );
            assert_eq!(s.gpr[RDX] & 0xFFFF, 3, "{mode:?} repne scasb count left");
            let dword = u32::from_le_bytes(p[4..8].try_into().unwrap());
            assert_eq!(s.gpr[RAX] & 0xFFFF_FFFF, u64::from(dword), "{mode:?} lodsd");
            assert_eq!(s.gpr[RSI] & 0xFFFF, src & 0xFFFF, "{mode:?} lodsd DF=1");
        }
    }
}

#[test]
fn segment_override_applies_to_the_source_only() {
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Real, |a| {
            a.mov(ax, 0x0800u32).unwrap(); // FS base 0x8000
            a.mov(fs, ax).unwrap();
            a.mov(si, 0x100u32).unwrap();
            a.mov(di, 0x9200u32).unwrap();
            a.db(&[0x64, 0xA4]).unwrap(); // FS: MOVSB  (source FS:SI, destination ES:DI)
            a.mov(al, 0x5Au32).unwrap();
            a.db(&[0x64, 0xAA]).unwrap(); // FS: STOSB  (the override does not apply)
        });
        let mut g = guest(engine, Mode::Real, &code, &[], 0);
        g.write(0x8100, &[0xC3]);
        g.write(0x100, &[0x11]);
        g.run_to_halt();
        assert_no_exception(&g, "segment override");
        assert_eq!(read_u8(&g, 0x9200), 0xC3, "{engine}: MOVSB read FS:SI");
        assert_eq!(read_u8(&g, 0x9201), 0x5A, "{engine}: STOSB wrote ES:DI");
        assert_eq!(
            read_u8(&g, 0x8000 + 0x9201),
            0,
            "{engine}: nothing at FS:DI"
        );
    }
}

#[test]
fn address_size_override_uses_and_wraps_16_bit_pointers() {
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Protected32, |a| {
            a.mov(esi, 0x1234_FFFFu32).unwrap();
            a.mov(edi, 0x0005_9000u32).unwrap();
            a.mov(ecx, 0xABCD_0001u32).unwrap();
            a.db(&[0x67, 0xF3, 0xA4]).unwrap(); // A16 REP MOVSB: SI, DI, CX
        });
        let mut g = guest(engine, Mode::Protected32, &code, &[], 0);
        g.write(0xFFFF, &[0x99]);
        g.run_to_halt();
        assert_no_exception(&g, "a16 movsb");
        let s = &g.cpu;
        assert_eq!(
            read_u8(&g, 0x9000),
            0x99,
            "{engine}: copied from DS:SI to ES:DI"
        );
        assert_eq!(
            s.gpr[RSI], 0x1234_0000,
            "{engine}: SI wrapped, upper ESI kept"
        );
        assert_eq!(
            s.gpr[RDI], 0x0005_9001,
            "{engine}: DI advanced, upper EDI kept"
        );
        assert_eq!(
            s.gpr[RCX], 0xABCD_0000,
            "{engine}: CX counted, upper ECX kept"
        );
    }
}

#[test]
fn page_fault_in_the_middle_of_rep_movs_restarts_precisely() {
    const SRC: u64 = 0x40000;
    const HOLE: u64 = 0x42000; // this page is made not-present
    const DST: u64 = HOLE - 0x10;
    for engine in EngineKind::emulators() {
        for mode in PAGED_MODES {
            let code = assemble(mode, |a| {
                a.cld().unwrap();
                a.mov(esi, SRC as u32).unwrap();
                a.mov(edi, DST as u32).unwrap();
                a.mov(ecx, 0x20u32).unwrap();
                a.rep().movsb().unwrap();
            });
            let rep_offset = code.len() as u64 - 3; // F3 A4, then HLT
            let mut g = guest(engine, mode, &code, &[], 0);
            g.write(SRC, &pattern(0x20));
            let pte = pte_addr(mode, HOLE);
            let pte_size = if mode == Mode::Paged32 { 4 } else { 8 };
            let original = g.read_u64(pte).to_le_bytes();
            g.write(pte, &vec![0u8; pte_size]);

            g.run_to_halt();
            assert_eq!(exception(&g), Some(14), "{engine} {mode:?}: expected #PF");
            assert_eq!(g.cpu.cr2, HOLE, "{mode:?}: CR2");
            assert_eq!(
                faulting_offset(&g, true),
                rep_offset,
                "{mode:?}: #PF at the REP"
            );
            assert_eq!(
                g.cpu.gpr[RCX], 0x10,
                "{mode:?}: RCX at the faulting iteration"
            );
            assert_eq!(
                g.cpu.gpr[RSI],
                SRC + 0x10,
                "{mode:?}: RSI at the faulting iteration"
            );
            assert_eq!(
                g.cpu.gpr[RDI], HOLE,
                "{mode:?}: RDI at the faulting iteration"
            );
            for k in 0..0x10 {
                assert_eq!(
                    read_u8(&g, DST + k),
                    pattern(0x20)[k as usize],
                    "{mode:?} byte {k}"
                );
            }

            // Map the page again and resume at the REP, as a #PF handler's IRET would.
            g.write(pte, &original[..pte_size]);
            g.cpu.rip = CODE_BASE + rep_offset;
            g.cpu.gpr[RSP] = STACK_TOP;
            g.cpu.halted = false;
            g.run_to_halt();
            assert_no_exception(&g, "resumed rep movsb");
            assert_eq!(g.cpu.gpr[RCX], 0, "{mode:?}: finished");
            for (k, &b) in pattern(0x20).iter().enumerate() {
                assert_eq!(read_u8(&g, DST + k as u64), b, "{mode:?} final byte {k}");
            }
        }
    }
}

#[test]
fn long_rep_runs_in_chunks_to_completion() {
    const COUNT: u64 = 20_000;
    for engine in EngineKind::emulators() {
        let g = run(engine, Mode::Long64, &[], 0, |a| {
            a.cld().unwrap();
            a.mov(rdi, DATA_BASE).unwrap();
            a.mov(rcx, COUNT).unwrap();
            a.mov(al, 0xA5u32).unwrap();
            a.rep().stosb().unwrap();
        });
        assert_no_exception(&g, "long rep stosb");
        assert_eq!(g.cpu.gpr[RCX], 0, "{engine}");
        assert_eq!(g.cpu.gpr[RDI], DATA_BASE + COUNT, "{engine}");
        for off in [0, COUNT / 2, COUNT - 1] {
            assert_eq!(read_u8(&g, DATA_BASE + off), 0xA5, "{engine} byte {off}");
        }
        assert_eq!(
            read_u8(&g, DATA_BASE + COUNT),
            0,
            "{engine}: one past the end"
        );
    }
}

#[test]
fn rep_ins_yields_to_a_pending_interrupt_and_resumes() {
    const COUNT: u32 = 1000;
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Protected32, |a| {
            a.cld().unwrap();
            a.mov(edi, DATA_BASE as u32).unwrap();
            a.mov(ecx, COUNT).unwrap();
            a.mov(dx, 0x1F0u32).unwrap();
            a.rep().insb().unwrap();
        });
        let rep_offset = code.len() as u64 - 3;
        let mut g = guest(engine, Mode::Protected32, &code, &[], IF);
        let log = Arc::new(Mutex::new(PortLog {
            irq_after_reads: Some(300),
            ..PortLog::default()
        }));
        g.plat = Box::new(RecordingPlatform(log.clone()));
        g.run_to_halt();
        assert_eq!(exception(&g), Some(IRQ_VECTOR), "{engine}: interrupt taken");
        assert_eq!(
            faulting_offset(&g, false),
            rep_offset,
            "{engine}: frame points at REP"
        );
        let left = g.cpu.gpr[RCX];
        assert!(
            left > 0 && left < u64::from(COUNT - 300),
            "{engine}: interrupted mid-way (RCX = {left})"
        );
        assert_eq!(
            u64::from(log.lock().unwrap().reads),
            u64::from(COUNT) - left,
            "{engine}: one port read per completed iteration"
        );

        g.cpu.rip = CODE_BASE + rep_offset;
        g.cpu.gpr[RSP] = STACK_TOP;
        g.cpu.halted = false;
        g.run_to_halt();
        assert_no_exception(&g, "resumed rep insb");
        assert_eq!(g.cpu.gpr[RCX], 0, "{engine}");
        for k in [0u64, 299, 700, 999] {
            assert_eq!(
                read_u8(&g, DATA_BASE + k),
                0x10u8.wrapping_add(k as u8),
                "byte {k}"
            );
        }
    }
}

#[test]
fn outs_writes_each_element_to_the_port() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let d = data(mode);
            let code = assemble(mode, |a| {
                a.cld().unwrap();
                a.mov(esi, d as u32).unwrap();
                a.mov(ecx, 3u32).unwrap();
                a.mov(dx, 0x80u32).unwrap();
                a.rep().outsw().unwrap();
            });
            let mut g = guest(engine, mode, &code, &[], 0);
            g.write(d, &[0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08]);
            let log = Arc::new(Mutex::new(PortLog::default()));
            g.plat = Box::new(RecordingPlatform(log.clone()));
            g.run_to_halt();
            assert_no_exception(&g, "rep outsw");
            assert_eq!(
                log.lock().unwrap().writes,
                vec![(0x80, 2, 0x0201), (0x80, 2, 0x0403), (0x80, 2, 0x0605)],
                "{engine} {mode:?}"
            );
            assert_eq!(g.cpu.gpr[RSI] & 0xFFFF, (d + 6) & 0xFFFF, "{mode:?}");
        }
    }
}

#[test]
fn bulk_copies_match_element_semantics() {
    for engine in EngineKind::emulators() {
        for mode in [Mode::Protected32, Mode::Long64] {
            let d = DATA_BASE as u32;
            let code = assemble(mode, |a| {
                a.cld().unwrap();
                // Large copy across several pages.
                a.mov(esi, d).unwrap();
                a.mov(edi, d + 0x4000 + 3).unwrap();
                a.mov(ecx, 0x2800u32).unwrap();
                a.rep().movsb().unwrap();
                // Fill idiom: destination one byte after the source replicates byte 0.
                a.mov(esi, d + 0x9000).unwrap();
                a.mov(edi, d + 0x9001).unwrap();
                a.mov(ecx, 300u32).unwrap();
                a.rep().movsb().unwrap();
                // Backward-overlapping dword copy (destination below the source).
                a.mov(esi, d + 0xA008).unwrap();
                a.mov(edi, d + 0xA000).unwrap();
                a.mov(ecx, 64u32).unwrap();
                a.rep().movsd().unwrap();
                // Dword fill across a page boundary.
                a.mov(edi, d + 0xBFF0).unwrap();
                a.mov(eax, 0xA1B2_C3D4u32).unwrap();
                a.mov(ecx, 100u32).unwrap();
                a.rep().stosd().unwrap();
            });
            let mut g = guest(engine, mode, &code, &[], 0);
            let src = pattern(0x2800);
            g.write(DATA_BASE, &src);
            g.write(DATA_BASE + 0x9000, &[0x77]);
            let words: Vec<u8> = (0..80u32).flat_map(|k| k.to_le_bytes()).collect();
            g.write(DATA_BASE + 0xA000, &words);
            g.run_to_halt();
            assert_no_exception(&g, "bulk string ops");
            let base = DATA_BASE;
            for k in [0u64, 1, 0xFFC, 0xFFD, 0x1000, 0x27FF] {
                assert_eq!(
                    read_u8(&g, base + 0x4003 + k),
                    src[k as usize],
                    "{engine} {mode:?} copy {k:#x}"
                );
            }
            assert_eq!(
                read_u8(&g, base + 0x4003 + 0x2800),
                0,
                "{mode:?}: copy stops"
            );
            for k in [1u64, 100, 300] {
                assert_eq!(
                    read_u8(&g, base + 0x9000 + k),
                    0x77,
                    "{mode:?}: fill idiom byte {k}"
                );
            }
            assert_eq!(
                read_u8(&g, base + 0x9000 + 301),
                0,
                "{mode:?}: fill idiom stops"
            );
            for k in 0..64u64 {
                assert_eq!(
                    read_u32(&g, base + 0xA000 + 4 * k),
                    k as u32 + 2,
                    "{mode:?}: movsd {k}"
                );
            }
            for k in [0u64, 3, 4, 99] {
                assert_eq!(
                    read_u32(&g, base + 0xBFF0 + 4 * k),
                    0xA1B2_C3D4,
                    "{mode:?}: stosd {k}"
                );
            }
            assert_eq!(
                read_u32(&g, base + 0xBFF0 + 400),
                0,
                "{mode:?}: stosd stops"
            );
            assert_eq!(
                g.cpu.gpr[RDI] & 0xFFFF_FFFF,
                u64::from(d) + 0xBFF0 + 400,
                "{mode:?}"
            );
        }
    }
}

#[test]
fn rep_stos_over_following_code_is_seen_by_the_cpu() {
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            let mut patched = a.create_label();
            a.xor(eax, eax).unwrap();
            a.lea(rdi, ptr(patched)).unwrap();
            a.mov(ecx, 5u32).unwrap();
            a.mov(al, 0x90u32).unwrap(); // NOP over the 5-byte MOV below
            a.rep().stosb().unwrap();
            a.set_label(&mut patched).unwrap();
            a.mov(ebx, 0x1234_5678u32).unwrap();
        });
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.run_to_halt();
        assert_no_exception(&g, "self-modifying rep stosb");
        assert_eq!(
            g.cpu.gpr[RBX], 0,
            "{engine}: the overwritten MOV must not run"
        );
        assert_eq!(g.cpu.gpr[RCX], 0, "{engine}");
    }
}

#[test]
fn bulk_rep_stos_yields_to_a_pending_interrupt() {
    const COUNT: u64 = 10_000;
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            a.cld().unwrap();
            a.mov(rdi, DATA_BASE).unwrap();
            a.mov(rcx, COUNT).unwrap();
            a.xor(eax, eax).unwrap();
            a.dec(rax).unwrap();
            a.sti().unwrap(); // the interrupt shadow lets the REP start
            a.rep().stosq().unwrap();
        });
        let rep_offset = code.len() as u64 - 4; // F3 48 AB, then HLT
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        let log = Arc::new(Mutex::new(PortLog {
            irq_after_reads: Some(0),
            ..PortLog::default()
        }));
        g.plat = Box::new(RecordingPlatform(log));
        g.run_to_halt();
        assert_eq!(exception(&g), Some(IRQ_VECTOR), "{engine}: interrupt taken");
        assert_eq!(
            faulting_offset(&g, false),
            rep_offset,
            "{engine}: frame at the REP"
        );
        let left = g.cpu.gpr[RCX];
        assert!(
            (COUNT - 1024..COUNT).contains(&left),
            "{engine}: REP yielded within two pages (RCX = {left})"
        );
        let written = COUNT - left;
        assert_eq!(
            g.cpu.gpr[RDI],
            DATA_BASE + 8 * written,
            "{engine}: RDI matches RCX"
        );
        assert_eq!(
            g.read_u64(DATA_BASE + 8 * (written - 1)),
            u64::MAX,
            "{engine}"
        );
        assert_eq!(
            g.read_u64(DATA_BASE + 8 * written),
            0,
            "{engine}: nothing beyond"
        );
    }
}
