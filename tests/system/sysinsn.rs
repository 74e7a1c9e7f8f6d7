//! System instructions: SGDT/SIDT/LGDT operand sizes, LAR/LSL/VERR/VERW, LTR (busy bit) and
//! STR, LLDT/SLDT with an LDT selector, ARPL, SMSW/LMSW/CLTS, MOV CR4/DR rules, RDMSR/WRMSR
//! (round trips, reserved bits, unknown MSRs), SWAPGS, and CPL checks.

use super::exceptions::{check, expect_fault};
use super::*;
use crane86::machine::testkit::{DATA_BASE, SEL_CODE32, SEL_DATA};
use crane86_x86::flags;

#[test]
fn sgdt_sidt_store_and_lgdt_16_bit_masks_the_base() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let data: u64 = if mode == Mode::Real { 0x800 } else { DATA_BASE };
            let (mut g, _) = guest(engine, mode, |a| {
                if mode == Mode::Long64 {
                    a.mov(rbx, data)?;
                    a.sgdt(ptr(rbx))?;
                    a.sidt(ptr(rbx + 16))?;
                } else if mode == Mode::Real {
                    a.sgdt(ptr(0x800))?;
                    a.sidt(ptr(0x810))?;
                    // LGDT with a 16-bit operand keeps 24 bits of the base.
                    a.lgdt(ptr(0x820))?;
                } else {
                    a.sgdt(ptr(data as u32))?;
                    a.sidt(ptr(data as u32 + 16))?;
                }
                a.hlt()?;
                Ok(vec![])
            });
            let mut img = vec![0x34, 0x12];
            img.extend_from_slice(&0x9876_5432u32.to_le_bytes());
            g.write(0x820, &img);
            let (gdtr, idtr) = (g.cpu.gdtr, g.cpu.idtr);
            g.run_to_halt();
            let tag = format!("{engine} {mode:?}");
            let limit = |a: u64| g.read_u64(a) & 0xFFFF;
            let base = |a: u64| {
                let v = g.read_u64(a + 2);
                if mode == Mode::Long64 {
                    v
                } else {
                    v & 0xFFFF_FFFF
                }
            };
            assert_eq!(limit(data), u64::from(gdtr.limit), "{tag}: SGDT limit");
            assert_eq!(base(data), gdtr.base, "{tag}: SGDT base");
            assert_eq!(limit(data + 16), u64::from(idtr.limit), "{tag}: SIDT limit");
            assert_eq!(base(data + 16), idtr.base, "{tag}: SIDT base");
            if mode == Mode::Real {
                assert_eq!(g.cpu.gdtr.limit, 0x1234, "{tag}");
                assert_eq!(g.cpu.gdtr.base, 0x76_5432, "{tag}: 24-bit base");
            }
        }
    }
}

#[test]
fn lar_lsl_verr_verw() {
    for engine in EngineKind::emulators() {
        for mode in [Mode::Protected32, Mode::Long64] {
            let (mut g, _) = guest(engine, mode, |a| {
                let code_sel = if mode == Mode::Long64 {
                    0x28
                } else {
                    SEL_CODE32
                };
                a.mov(ecx, u32::from(code_sel))?;
                a.lar(eax, ecx)?;
                a.setz(byte_ptr(DATA_BASE as u32))?;
                a.lsl(edx, ecx)?;
                a.setz(byte_ptr(DATA_BASE as u32 + 1))?;
                a.verr(cx)?;
                a.setz(byte_ptr(DATA_BASE as u32 + 2))?;
                a.verw(cx)?;
                a.setz(byte_ptr(DATA_BASE as u32 + 3))?;
                a.mov(ecx, u32::from(SEL_DATA))?;
                a.verw(cx)?;
                a.setz(byte_ptr(DATA_BASE as u32 + 4))?;
                a.xor(ecx, ecx)?;
                a.mov(ebx, 0x5A5A)?;
                a.lar(ebx, ecx)?;
                a.setz(byte_ptr(DATA_BASE as u32 + 5))?;
                a.mov(ecx, 0x400)?; // beyond the GDT limit
                a.lsl(ebx, ecx)?;
                a.setz(byte_ptr(DATA_BASE as u32 + 6))?;
                a.hlt()?;
                Ok(vec![])
            });
            g.run_to_halt();
            let tag = format!("{engine} {mode:?}");
            let z = |k: u64| g.read_u64(DATA_BASE + k) & 0xFF;
            let expected_ar = if mode == Mode::Long64 {
                0x00AF_9B00
            } else {
                0x00CF_9B00
            };
            assert_eq!(g.cpu.gpr[0], expected_ar, "{tag}: LAR");
            assert_eq!(z(0), 1, "{tag}: LAR ZF");
            assert_eq!(g.cpu.gpr[2], 0xFFFF_FFFF, "{tag}: LSL");
            assert_eq!(z(1), 1, "{tag}: LSL ZF");
            assert_eq!(z(2), 1, "{tag}: VERR on readable code");
            assert_eq!(z(3), 0, "{tag}: VERW on code");
            assert_eq!(z(4), 1, "{tag}: VERW on writable data");
            assert_eq!(z(5), 0, "{tag}: LAR null selector");
            assert_eq!(
                g.cpu.gpr[3], 0x5A5A,
                "{tag}: LAR failure leaves the register"
            );
            assert_eq!(z(6), 0, "{tag}: LSL beyond the table");
        }
    }
}

#[test]
fn ltr_marks_the_tss_busy_and_lldt_loads_an_ldt() {
    for engine in EngineKind::emulators() {
        for mode in [Mode::Protected32, Mode::Long64] {
            // GDT 0x58: an available TSS (16 bytes in long mode); 0x68: an LDT whose entry 1
            // is a flat data segment.
            let ldt_base = DATA_BASE + 0x800;
            let (mut g, _) = guest(engine, mode, |a| {
                a.mov(ax, 0x58)?;
                a.ltr(ax)?;
                a.str(ecx)?;
                a.mov(ax, 0x68)?;
                a.lldt(ax)?;
                a.sldt(edx)?;
                a.mov(ax, 0x0C)?; // LDT entry 1, TI = 1
                a.mov(es, ax)?;
                a.hlt()?;
                Ok(vec![])
            });
            set_gdt_entry(&mut g, 11, seg_desc(0x3000, 0x67, 0x89, 0));
            set_gdt_entry(&mut g, 12, 0);
            set_gdt_entry(&mut g, 13, seg_desc(ldt_base as u32, 0xF, 0x82, 0));
            set_gdt_entry(&mut g, 14, 0);
            g.write(ldt_base + 8, &seg_desc(0, 0xFFFFF, 0x93, 0xC).to_le_bytes());
            g.run_to_halt();
            let tag = format!("{engine} {mode:?}");
            let access = (g.read_u64(GDT_BASE + 0x58) >> 40) & 0xFF;
            assert_eq!(access, 0x8B, "{tag}: busy bit set in memory");
            assert_eq!(g.cpu.tr.selector, 0x58, "{tag}");
            assert_eq!(g.cpu.tr.seg_type(), 0xB, "{tag}: busy TSS cached");
            assert_eq!(g.cpu.gpr[1], 0x58, "{tag}: STR");
            assert_eq!(g.cpu.gpr[2], 0x68, "{tag}: SLDT");
            assert_eq!(g.cpu.ldtr.base, ldt_base, "{tag}");
            assert_eq!(g.cpu.seg[0].selector, 0x0C, "{tag}: ES from the LDT");
            assert!(g.cpu.seg[0].present(), "{tag}");
        }
    }
}

#[test]
fn ltr_of_a_busy_tss_faults() {
    for engine in EngineKind::emulators() {
        let f = expect_fault(
            engine,
            Mode::Protected32,
            13,
            true,
            |g| set_gdt_entry(g, 11, seg_desc(0x3000, 0x67, 0x8B, 0)),
            |a, at| {
                a.mov(ax, 0x58)?;
                a.set_label(at)?;
                a.ltr(ax)
            },
        );
        check(&f, 13, Some(0x58), &format!("{engine} LTR busy"));
    }
}

#[test]
fn arpl_smsw_lmsw_clts() {
    for engine in EngineKind::emulators() {
        let (mut g, _) = guest(engine, Mode::Protected32, |a| {
            a.mov(eax, 0x08)?;
            a.mov(ebx, 0x03)?;
            a.arpl(ax, bx)?;
            a.setz(cl)?;
            a.arpl(ax, bx)?;
            a.setz(ch)?;
            a.lmsw(ax)?; // TS (bit 3) from AX = 0x0B; PE stays set
            a.smsw(edx)?;
            a.clts()?;
            a.smsw(esi)?;
            a.hlt()?;
            Ok(vec![])
        });
        g.run_to_halt();
        assert_eq!(g.cpu.gpr[0] & 0xFFFF, 0x0B, "{engine}: ARPL raised the RPL");
        assert_eq!(
            g.cpu.gpr[1] & 0xFFFF,
            0x0001,
            "{engine}: ZF set, then clear"
        );
        assert_eq!(g.cpu.gpr[2] & 0xF, 0xB, "{engine}: LMSW loaded PE|MP|TS");
        assert_eq!(g.cpu.gpr[6] & 0x8, 0, "{engine}: CLTS");
        assert_ne!(g.cpu.cr0 & 1, 0, "{engine}: PE still set");
    }
}

#[test]
fn control_and_debug_register_rules() {
    for engine in EngineKind::emulators() {
        for mode in [Mode::Protected32, Mode::Long64] {
            // A reserved CR4 bit (bit 30) is #GP(0).
            let f = expect_fault(
                engine,
                mode,
                13,
                true,
                |_| {},
                |a, at| {
                    if mode == Mode::Long64 {
                        a.mov(rax, cr4)?;
                        a.bts(rax, 30)?;
                        a.set_label(at)?;
                        a.mov(cr4, rax)
                    } else {
                        a.mov(eax, cr4)?;
                        a.bts(eax, 30)?;
                        a.set_label(at)?;
                        a.mov(cr4, eax)
                    }
                },
            );
            check(&f, 13, Some(0), &format!("{engine} {mode:?} CR4 reserved"));
            // DR4 aliases DR6 while CR4.DE = 0; with CR4.DE = 1 it is #UD.
            let f = expect_fault(
                engine,
                mode,
                6,
                false,
                |_| {},
                |a, at| {
                    if mode == Mode::Long64 {
                        a.mov(rbx, dr6)?;
                        a.mov(rbp, dr4)?;
                        a.mov(rax, cr4)?;
                        a.or(eax, 8)?;
                        a.mov(cr4, rax)?;
                        a.set_label(at)?;
                        a.mov(rax, dr4)
                    } else {
                        a.mov(ebx, dr6)?;
                        a.mov(ebp, dr4)?;
                        a.mov(eax, cr4)?;
                        a.or(eax, 8)?;
                        a.mov(cr4, eax)?;
                        a.set_label(at)?;
                        a.mov(eax, dr4)
                    }
                },
            );
            check(&f, 6, None, &format!("{engine} {mode:?} DR4 with CR4.DE"));
        }
    }
}

fn wrmsr_imm(a: &mut CodeAssembler, msr: u32, v: u64) -> Result<(), IcedError> {
    a.mov(ecx, msr)?;
    a.mov(eax, v as u32)?;
    a.mov(edx, (v >> 32) as u32)?;
    a.wrmsr()
}

#[test]
fn msr_round_trips() {
    for engine in EngineKind::emulators() {
        for mode in [Mode::Protected32, Mode::Long64] {
            let (mut g, _) = guest(engine, mode, |a| {
                let out = DATA_BASE as u32;
                let mut k = 0;
                let mut save = |a: &mut CodeAssembler| -> Result<(), IcedError> {
                    a.mov(dword_ptr(out + k), eax)?;
                    a.mov(dword_ptr(out + k + 4), edx)?;
                    k += 8;
                    Ok(())
                };
                wrmsr_imm(a, 0xC000_0081, 0x0023_0010_1234_5678)?; // STAR
                a.rdmsr()?;
                save(a)?;
                wrmsr_imm(a, 0x277, 0x0007_0406_0007_0401)?; // PAT
                a.rdmsr()?;
                save(a)?;
                a.mov(ecx, 0xFE)?; // MTRRCAP
                a.rdmsr()?;
                save(a)?;
                wrmsr_imm(a, 0x10, 0x10_0000_0000)?; // TSC
                a.rdmsr()?;
                save(a)?;
                wrmsr_imm(a, 0x200, 0x8_0006)?; // MTRR PHYSBASE0: 512 KiB, WB
                a.rdmsr()?;
                save(a)?;
                wrmsr_imm(a, 0x174, 0x08)?; // SYSENTER_CS
                a.rdmsr()?;
                save(a)?;
                a.mov(ecx, 0x10A)?; // ARCH_CAPABILITIES
                a.rdmsr()?;
                save(a)?;
                a.hlt()?;
                Ok(vec![])
            });
            g.run_to_halt();
            let tag = format!("{engine} {mode:?}");
            let r = |k: u64| g.read_u64(DATA_BASE + 8 * k);
            assert_eq!(r(0), 0x0023_0010_1234_5678, "{tag}: STAR");
            assert_eq!(r(1), 0x0007_0406_0007_0401, "{tag}: PAT");
            assert_eq!(r(2), 0x508, "{tag}: MTRRCAP");
            assert!(
                r(3) >= 0x10_0000_0000 && r(3) < 0x10_1000_0000,
                "{tag}: TSC"
            );
            assert_eq!(r(4), 0x8_0006, "{tag}: MTRR");
            assert_eq!(r(5), 8, "{tag}: SYSENTER_CS");
            // RDCL_NO, SSB_NO, MDS_NO, PSCHANGE_MC_NO, TAA_NO, SBDR_SSDP_NO, FBSDP_NO,
            // PSDP_NO, BHI_NO, PBRSB_NO, GDS_NO, RFDS_NO, ITS_NO; not IBRS_ALL or RSBA.
            assert_eq!(r(6), 0x4000_0000_0D10_E171, "{tag}: ARCH_CAPABILITIES");
            assert_eq!(g.cpu.msr.star, 0x0023_0010_1234_5678, "{tag}");
        }
    }
}

#[test]
fn msr_faults() {
    for engine in EngineKind::emulators() {
        // (MSR, value, mode): unknown MSR, reserved EFER bit, invalid PAT type, MTRRCAP
        // write, ARCH_CAPABILITIES write, non-canonical LSTAR, LME change with paging on.
        let cases: [(u32, u64, Mode); 7] = [
            (0x1234, 0, Mode::Protected32),
            (0xC000_0080, 1 << 3, Mode::Protected32),
            (0x277, 0x02, Mode::Protected32),
            (0xFE, 0, Mode::Protected32),
            (0x10A, 0, Mode::Protected32),
            (0xC000_0082, 0x8000_0000_0000, Mode::Long64),
            (0xC000_0080, 0, Mode::Long64),
        ];
        for (msr, v, mode) in cases {
            let f = expect_fault(
                engine,
                mode,
                13,
                true,
                |_| {},
                |a, at| {
                    a.mov(ecx, msr)?;
                    a.mov(eax, v as u32)?;
                    a.mov(edx, (v >> 32) as u32)?;
                    a.set_label(at)?;
                    a.wrmsr()
                },
            );
            check(
                &f,
                13,
                Some(0),
                &format!("{engine} WRMSR {msr:#x} = {v:#x}"),
            );
        }
        let f = expect_fault(
            engine,
            Mode::Protected32,
            13,
            true,
            |_| {},
            |a, at| {
                a.mov(ecx, 0x1234)?;
                a.set_label(at)?;
                a.rdmsr()
            },
        );
        check(&f, 13, Some(0), &format!("{engine} RDMSR unknown"));
    }
}

#[test]
fn swapgs_exchanges_gs_base_with_kernel_gs_base() {
    for engine in EngineKind::emulators() {
        let (mut g, _) = guest(engine, Mode::Long64, |a| {
            wrmsr_imm(a, 0xC000_0101, 0x1111_0000)?; // GS_BASE
            wrmsr_imm(a, 0xC000_0102, 0x2222_0000)?; // KERNEL_GS_BASE
            a.swapgs()?;
            a.mov(ecx, 0xC000_0101u32)?;
            a.rdmsr()?;
            a.mov(ebx, eax)?;
            a.mov(ecx, 0xC000_0102u32)?;
            a.rdmsr()?;
            a.mov(esi, eax)?;
            a.hlt()?;
            Ok(vec![])
        });
        g.run_to_halt();
        assert_eq!(g.cpu.gpr[3], 0x2222_0000, "{engine}: GS base after SWAPGS");
        assert_eq!(
            g.cpu.gpr[6], 0x1111_0000,
            "{engine}: KERNEL_GS_BASE after SWAPGS"
        );
        assert_eq!(g.cpu.seg[5].base, 0x2222_0000);
    }
}

#[test]
fn privileged_instructions_fault_at_cpl3() {
    for engine in EngineKind::emulators() {
        for mode in [Mode::Protected32, Mode::Long64] {
            for which in 0..4 {
                let f = expect_fault(
                    engine,
                    mode,
                    13,
                    true,
                    |_| {},
                    |a, at| {
                        let mut user = a.create_label();
                        if mode == Mode::Long64 {
                            a.push(0x3B)?;
                            a.push(0x7_0000)?;
                            a.push(2)?;
                            a.push(0x43)?;
                            a.lea(rax, ptr(user))?;
                            a.push(rax)?;
                            a.iretq()?;
                        } else {
                            a.push(0x3Bu32)?;
                            a.push(0x7_0000u32)?;
                            a.push(2u32)?;
                            a.push(0x33u32)?;
                            let mut here = a.create_label();
                            a.call(here)?;
                            a.set_label(&mut here)?;
                            a.pop(eax)?;
                            a.db(&[0x83, 0xC0, 0x06])?; // add eax, 6
                            a.push(eax)?;
                            a.iretd()?;
                        }
                        a.set_label(&mut user)?;
                        a.nop()?;
                        a.set_label(at)?;
                        match (which, mode) {
                            (0, Mode::Long64) => a.mov(rax, cr0),
                            (0, _) => a.mov(eax, cr0),
                            (1, _) => a.wrmsr(),
                            (2, _) => a.lgdt(ptr(0)),
                            _ => a.hlt(),
                        }
                    },
                );
                check(&f, 13, Some(0), &format!("{engine} {mode:?} case {which}"));
            }
        }
    }
}

#[test]
fn iret_restores_flags_by_privilege() {
    // IRET at CPL 0 may change IOPL and IF; the popped image is applied.
    for engine in EngineKind::emulators() {
        let (mut g, _) = guest(engine, Mode::Protected32, |a| {
            let mut next = a.create_label();
            a.push(0x3002u32)?; // IOPL 3
            a.push(u32::from(SEL_CODE32))?;
            a.call(next)?; // pushes the address of `next`
            a.set_label(&mut next)?;
            a.pop(eax)?;
            a.db(&[0x83, 0xC0, 0x06])?; // add eax, 6: skip to after IRETD
            a.push(eax)?;
            a.iretd()?;
            a.pushfd()?;
            a.pop(ebx)?;
            a.hlt()?;
            Ok(vec![])
        });
        g.run_to_halt();
        assert_eq!(g.cpu.gpr[3] & flags::IOPL, flags::IOPL, "{engine}");
    }
}
