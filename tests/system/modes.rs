//! Mode transitions: real → protected → paging → long mode (compatibility, 64-bit) and back
//! down to real mode; V86 entry through IRETD and exit through an interrupt.

use super::*;
use crane86::machine::testkit::TestExit;
use crane86::machine::testkit::{DATA_BASE, RING0_STACK_TOP, SEL_CODE32, SEL_CODE64, SEL_DATA};
use crane86_x86::flags;
use crane86_x86::CpuMode;

/// Long-mode identity tables (2 MiB pages, first 1 GiB) built by the test itself.
const LM_TABLES: u64 = 0x20_0000;
const SEL_CODE16_AT_CODE: u16 = 0x58;
const SEL_DATA16_FLAT: u16 = 0x60;

/// `jmp far ptr16:32` from 16-bit code (o32 EA).
fn far_jmp32_from16(a: &mut CodeAssembler, sel: u16, off: u32) -> Result<(), IcedError> {
    let mut b = vec![0x66, 0xEA];
    b.extend_from_slice(&off.to_le_bytes());
    b.extend_from_slice(&sel.to_le_bytes());
    a.db(&b)
}

#[test]
fn real_to_long_mode_and_back_to_real() {
    for engine in EngineKind::emulators() {
        let chunk_b = CODE_BASE + 0x1000;
        let chunk_c = CODE_BASE + 0x2000;
        let chunk_d = CODE_BASE + 0x3000;
        // A: real mode → protected mode.
        let a_code = build(16, 0, |a| {
            a.cli()?;
            a.lgdt(ptr(0x500))?;
            a.mov(eax, cr0)?;
            a.or(eax, 1)?;
            a.mov(cr0, eax)?;
            far_jmp32_from16(a, SEL_CODE32, chunk_b as u32)?;
            Ok(vec![])
        });
        // B: 32-bit protected mode → PAE + LME + PG (compatibility mode) → 64-bit.
        let b_code = build(32, chunk_b, |a| {
            a.mov(ax, SEL_DATA as u32)?;
            a.mov(ds, ax)?;
            a.mov(es, ax)?;
            a.mov(ss, ax)?;
            a.mov(esp, 0x7_0000u32)?;
            a.mov(dword_ptr(DATA_BASE as u32), 1u32)?;
            a.mov(eax, cr4)?;
            a.or(eax, 0x20)?; // PAE
            a.mov(cr4, eax)?;
            a.mov(eax, LM_TABLES as u32)?;
            a.mov(cr3, eax)?;
            a.mov(ecx, 0xC000_0080u32)?;
            a.rdmsr()?;
            a.or(eax, 0x100)?; // LME
            a.wrmsr()?;
            a.mov(eax, cr0)?;
            a.or(eax, 0x8000_0000u32 as i32)?;
            a.mov(cr0, eax)?;
            a.mov(ecx, 0xC000_0080u32)?;
            a.rdmsr()?;
            a.mov(dword_ptr(DATA_BASE as u32 + 4), eax)?;
            a.jmp_far(SEL_CODE64, chunk_c as u32)?;
            Ok(vec![])
        });
        // C: 64-bit mode → compatibility mode through an indirect far JMP m16:32.
        let c_code = build(64, chunk_c, |a| {
            a.mov(rax, 0x1_2345_6789u64)?;
            a.mov(rbx, DATA_BASE)?;
            a.mov(qword_ptr(rbx + 8), rax)?;
            a.mov(dword_ptr(rbx + 0x100), chunk_d as u32)?;
            a.mov(word_ptr(rbx + 0x104), SEL_CODE32 as u32)?;
            a.jmp(fword_ptr(rbx + 0x100))?;
            Ok(vec![])
        });
        // D: compatibility mode → paging off (LMA clears) → LME off → 16-bit protected mode.
        let d_code = build(32, chunk_d, |a| {
            a.mov(eax, cr0)?;
            a.and(eax, 0x7FFF_FFFF)?;
            a.mov(cr0, eax)?;
            a.mov(ecx, 0xC000_0080u32)?;
            a.rdmsr()?;
            a.mov(dword_ptr(DATA_BASE as u32 + 16), eax)?;
            a.and(eax, !0x100)?;
            a.wrmsr()?;
            a.jmp_far(SEL_CODE16_AT_CODE, 0x4000)?;
            Ok(vec![])
        });
        // E: 16-bit protected mode → real mode.
        let e_code = build(16, 0x4000, |a| {
            a.mov(ax, SEL_DATA16_FLAT as u32)?;
            a.mov(ds, ax)?;
            a.mov(ss, ax)?;
            a.mov(eax, cr0)?;
            a.and(eax, !1)?;
            a.mov(cr0, eax)?;
            a.jmp_far((CODE_BASE >> 4) as u16, 0x5000)?;
            Ok(vec![])
        });
        // F: real mode again.
        let f_code = build(16, 0x5000, |a| {
            a.xor(ax, ax)?;
            a.mov(ds, ax)?;
            a.mov(ax, 0x7000)?;
            a.mov(ss, ax)?;
            a.mov(word_ptr(0x600), 0xBEEFu32)?;
            a.hlt()?;
            Ok(vec![])
        });
        let mut g = TestGuest::new(engine, Mode::Real, &a_code.bytes);
        g.write(chunk_b, &b_code.bytes);
        g.write(chunk_c, &c_code.bytes);
        g.write(chunk_d, &d_code.bytes);
        g.write(CODE_BASE + 0x4000, &e_code.bytes);
        g.write(CODE_BASE + 0x5000, &f_code.bytes);
        // GDTR image at 0x500 (16-bit LGDT: 24-bit base) and the extra descriptors.
        let mut gdtr = vec![0xFF, 0x00];
        gdtr.extend_from_slice(&(GDT_BASE as u32).to_le_bytes());
        g.write(0x500, &gdtr);
        set_gdt_entry(&mut g, 11, seg_desc(CODE_BASE as u32, 0xFFFF, 0x9B, 0));
        set_gdt_entry(&mut g, 12, seg_desc(0, 0xFFFF, 0x93, 0));
        g.mem.write_u64(LM_TABLES, (LM_TABLES + 0x1000) | 3);
        g.mem
            .write_u64(LM_TABLES + 0x1000, (LM_TABLES + 0x2000) | 3);
        for k in 0..512u64 {
            g.mem
                .write_u64(LM_TABLES + 0x2000 + k * 8, (k << 21) | 0x83);
        }
        g.run_to_halt();
        assert_eq!(g.cpu.mode(), CpuMode::Real, "{engine}");
        assert_eq!(g.cpu.seg[1].selector, (CODE_BASE >> 4) as u16);
        assert_eq!(
            g.read_u64(DATA_BASE) & 0xFFFF_FFFF,
            1,
            "protected mode reached"
        );
        let efer_in_compat = (g.read_u64(DATA_BASE) >> 32) & 0xFFFF_FFFF;
        assert_eq!(efer_in_compat & 0x500, 0x500, "EFER.LME|LMA after CR0.PG");
        assert_eq!(g.read_u64(DATA_BASE + 8), 0x1_2345_6789, "64-bit store");
        let efer_after = g.read_u64(DATA_BASE + 16) & 0xFFFF_FFFF;
        assert_eq!(efer_after & 0x400, 0, "LMA clears with CR0.PG");
        assert_eq!(g.read_u64(0x600) & 0xFFFF, 0xBEEF, "real-mode store");
        assert_eq!(g.cpu.efer & 0x500, 0);
    }
}

#[test]
fn long_mode_activation_rules_raise_gp() {
    // Setting CR0.PG with EFER.LME but without CR4.PAE is #GP(0); so is clearing CR4.PAE
    // while long mode is active, and clearing PG from 64-bit code.
    for engine in EngineKind::emulators() {
        for case in 0..3 {
            let mode = if case == 0 {
                Mode::Protected32
            } else {
                Mode::Long64
            };
            let (mut g, labels) = guest(engine, mode, |a| {
                let mut handler = a.create_label();
                let mut fault_at = a.create_label();
                if case == 0 {
                    a.mov(ecx, 0xC000_0080u32)?;
                    a.rdmsr()?;
                    a.or(eax, 0x100)?;
                    a.wrmsr()?;
                    a.mov(eax, cr0)?;
                    a.or(eax, 0x8000_0000u32 as i32)?;
                    a.set_label(&mut fault_at)?;
                    a.mov(cr0, eax)?;
                    a.mov(esi, 1)?;
                    a.hlt()?;
                    a.set_label(&mut handler)?;
                    a.pop(eax)?;
                    a.mov(edi, 13)?;
                    a.hlt()?;
                } else {
                    if case == 1 {
                        a.mov(rax, cr4)?;
                        a.and(rax, !0x20)?;
                        a.set_label(&mut fault_at)?;
                        a.mov(cr4, rax)?;
                    } else {
                        a.mov(rax, cr0)?;
                        a.btr(rax, 31)?;
                        a.set_label(&mut fault_at)?;
                        a.mov(cr0, rax)?;
                    }
                    a.mov(esi, 1)?;
                    a.hlt()?;
                    a.set_label(&mut handler)?;
                    a.pop(rax)?;
                    a.mov(edi, 13)?;
                    a.hlt()?;
                }
                Ok(vec![handler, fault_at])
            });
            g.set_gate(13, labels[0], 0);
            g.run_to_halt();
            assert_eq!(g.cpu.gpr[7], 13, "{engine} case {case}: #GP raised");
            assert_eq!(g.cpu.gpr[0], 0, "error code 0");
            assert_eq!(g.cpu.gpr[6], 0, "faulting instruction did not complete");
        }
    }
}

/// V86 mode: enter with IRETD (VM=1 in the EFLAGS image), run 16-bit code with real-mode
/// segmentation, and leave through an interrupt to a ring-0 handler (IOPL = 3: INT n through
/// a DPL-3 gate; IOPL = 0: INT n raises #GP(0)).
#[test]
fn v86_entry_by_iret_and_exit_by_interrupt() {
    for engine in EngineKind::emulators() {
        for iopl in [0u32, 3] {
            let v86_ip = 0x800u64;
            let v86_code = build(16, v86_ip, |a| {
                a.mov(ax, 0x4000)?;
                a.mov(ds, ax)?;
                a.mov(word_ptr(0x10), 0x5A5Au32)?; // linear 0x40010
                a.mov(ax, 0x1234)?;
                let mut int_at = a.create_label();
                a.set_label(&mut int_at)?;
                a.int(0x21)?;
                a.hlt()?;
                Ok(vec![int_at])
            });
            let (mut g, labels) = guest(engine, Mode::Protected32, |a| {
                let mut handler = a.create_label();
                // IRETD frame for V86: GS FS DS ES SS ESP EFLAGS CS EIP.
                for v in [0u32, 0, 0, 0, 0x5000, 0xFF0] {
                    a.push(v)?;
                }
                a.push(0x2_0002 | (iopl << 12))?;
                a.push((CODE_BASE >> 4) as u32)?;
                a.push(v86_ip as u32)?;
                a.iretd()?;
                a.set_label(&mut handler)?;
                // Ring-0 handler: capture the frame.
                a.mov(esi, esp)?;
                a.hlt()?;
                Ok(vec![handler])
            });
            g.write(CODE_BASE + v86_ip, &v86_code.bytes);
            if iopl == 3 {
                set_gate32(&mut g, 0x21, SEL_CODE32, labels[0], 0xEE);
            } else {
                g.set_gate(13, labels[0], 0);
            }
            g.run_to_halt();
            let tag = format!("{engine} IOPL {iopl}");
            assert_eq!(g.cpu.mode(), CpuMode::Protected, "{tag}");
            assert_eq!(
                g.read_u64(0x4_0010) & 0xFFFF,
                0x5A5A,
                "{tag}: V86 segmentation"
            );
            assert_eq!(g.cpu.gpr[0] & 0xFFFF, 0x1234, "{tag}");
            let frame_sp = g.cpu.gpr[6];
            // #GP pushes an error code first.
            let base = if iopl == 3 { frame_sp } else { frame_sp + 4 };
            if iopl != 3 {
                assert_eq!(g.read_u64(frame_sp) & 0xFFFF_FFFF, 0, "{tag}: #GP(0)");
            }
            let word = |k: u64| g.read_u64(base + 4 * k) & 0xFFFF_FFFF;
            let int_ip = v86_code.labels[0];
            let expected_ip = if iopl == 3 { int_ip + 2 } else { int_ip };
            assert_eq!(word(0), expected_ip, "{tag}: return IP");
            assert_eq!(word(1), CODE_BASE >> 4, "{tag}: CS");
            assert_ne!(word(2) & flags::VM, 0, "{tag}: VM in EFLAGS image");
            assert_eq!(word(3), 0xFF0, "{tag}: ESP");
            assert_eq!(word(4), 0x5000, "{tag}: SS");
            assert_eq!(word(6), 0x4000, "{tag}: DS");
            assert_eq!(
                frame_sp + if iopl == 3 { 36 } else { 40 },
                RING0_STACK_TOP,
                "{tag}"
            );
            assert_eq!(g.cpu.seg[3].selector, 0, "{tag}: DS nulled on exit");
        }
    }
}

#[test]
fn triple_fault_ends_the_run() {
    // An IDT too small for any vector: #UD → #GP → #DF cannot be delivered.
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let (mut g, _) = guest(engine, mode, |a| {
                a.ud2()?;
                Ok(vec![])
            });
            g.cpu.idtr.limit = 0;
            assert_eq!(g.run(1000), TestExit::TripleFault, "{engine} {mode:?}");
        }
    }
}

/// Paging off and on again from 32-bit protected mode (2-level and PAE): translations
/// follow CR0.PG immediately (the TLB is flushed on each change).
#[test]
fn paging_toggles_in_protected_mode() {
    use crane86::machine::testkit::pte_addr;
    const LIN: u64 = 0x4_1000;
    const OTHER: u64 = 0x4_3000;
    for engine in EngineKind::emulators() {
        for mode in [Mode::Paged32, Mode::Pae32] {
            let (mut g, _) = guest(engine, mode, |a| {
                a.mov(ebx, dword_ptr(LIN as u32))?;
                a.mov(eax, cr0)?;
                a.and(eax, 0x7FFF_FFFF)?;
                a.mov(cr0, eax)?;
                a.mov(ecx, dword_ptr(LIN as u32))?;
                a.or(eax, 0x8000_0000u32 as i32)?;
                a.mov(cr0, eax)?;
                a.mov(edx, dword_ptr(LIN as u32))?;
                a.hlt()?;
                Ok(vec![])
            });
            let pte = pte_addr(mode, LIN);
            if mode == Mode::Paged32 {
                g.mem.write_u32(pte, (OTHER | 7) as u32);
            } else {
                g.mem.write_u64(pte, OTHER | 7);
            }
            g.write(LIN, &0xAAu32.to_le_bytes());
            g.write(OTHER, &0xBBu32.to_le_bytes());
            g.run_to_halt();
            let tag = format!("{engine} {mode:?}");
            assert_eq!(g.cpu.gpr[3], 0xBB, "{tag}: paged");
            assert_eq!(g.cpu.gpr[1], 0xAA, "{tag}: paging off = identity");
            assert_eq!(g.cpu.gpr[2], 0xBB, "{tag}: paged again");
        }
    }
}

/// Compatibility mode: an interrupt from 32-bit code in long mode goes through the 64-bit
/// IDT to a 64-bit handler, whose IRETQ (popping SS:RSP) returns to compatibility mode.
#[test]
fn interrupt_from_compatibility_mode_returns_with_iretq() {
    for engine in EngineKind::emulators() {
        let compat_at = CODE_BASE + 0x1000;
        let (mut g, labels) = guest(engine, Mode::Long64, |a| {
            let mut handler = a.create_label();
            a.mov(rbx, DATA_BASE)?;
            a.mov(dword_ptr(rbx), compat_at as u32)?;
            a.mov(word_ptr(rbx + 4), SEL_CODE32 as u32)?;
            a.jmp(fword_ptr(rbx))?;
            a.set_label(&mut handler)?;
            a.add(eax, 1)?;
            a.mov(rdi, rsp)?;
            a.iretq()?;
            Ok(vec![handler])
        });
        let compat = build(32, compat_at, |a| {
            a.mov(eax, 5)?;
            a.int(0x40)?;
            a.mov(esi, 0x600D)?;
            a.hlt()?;
            Ok(vec![])
        });
        g.write(compat_at, &compat.bytes);
        g.set_gate(0x40, labels[0], 0);
        g.run_to_halt();
        let tag = format!("{engine}");
        assert_eq!(g.cpu.mode(), CpuMode::Compatibility, "{tag}");
        assert_eq!(g.cpu.gpr[0], 6, "{tag}: 64-bit handler ran");
        assert_eq!(g.cpu.gpr[6], 0x600D, "{tag}: back in compatibility mode");
        let frame_top = (crane86::machine::testkit::STACK_TOP & !0xF) - 40;
        assert_eq!(g.cpu.gpr[7], frame_top, "{tag}: 64-bit frame, aligned");
        assert_eq!(g.cpu.gpr[4], crane86::machine::testkit::STACK_TOP, "{tag}");
    }
}
