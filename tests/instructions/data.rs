//! Data movement: MOV (registers, memory, moffs, segment registers, MOV to CS is #UD),
//! MOVZX/MOVSX/MOVSXD, LEA (16-bit wrap, 0x67 in 64-bit mode), XCHG, CMOVcc and SETcc for all
//! 16 conditions against a flag model, XLAT, BSWAP, CBW..CQO, LAHF/SAHF, MOVBE.

use crate::common::*;
use crane86::machine::testkit::{SEL_CODE32, SEL_DATA, SEL_DATA16};
use crane86::x86::SegReg;
use iced_x86::Register;

/// Condition `cc` (Jcc encoding order) evaluated on `f` — the SDM's table, written out.
pub fn condition(cc: u8, f: u64) -> bool {
    let (cf, zf, sf, of, pf) = (
        f & CF != 0,
        f & ZF != 0,
        f & SF != 0,
        f & OF != 0,
        f & PF != 0,
    );
    match cc {
        0 => of,
        1 => !of,
        2 => cf,
        3 => !cf,
        4 => zf,
        5 => !zf,
        6 => cf || zf,
        7 => !cf && !zf,
        8 => sf,
        9 => !sf,
        10 => pf,
        11 => !pf,
        12 => sf != of,
        13 => sf == of,
        14 => zf || sf != of,
        _ => !zf && sf == of,
    }
}

/// Condition suffixes in encoding order, as iced spells them in `Code` names.
pub const CC_NAMES: [&str; 16] = [
    "o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g",
];

/// Every combination of the five flags conditions read.
pub fn flag_combinations() -> Vec<u64> {
    let bits = [CF, PF, ZF, SF, OF];
    (0..32u32)
        .map(|k| (0..5).filter(|b| k >> b & 1 != 0).map(|b| bits[b]).sum())
        .collect()
}

#[test]
fn setcc_all_conditions_for_every_flag_combination() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let d = data(mode);
            let combos = flag_combinations();
            let g = run(engine, mode, &[], 0, |a| {
                for (k, &f) in combos.iter().enumerate() {
                    set_flags(a, f as u32);
                    for (cc, name) in CC_NAMES.iter().enumerate() {
                        let at = d + 16 * k as u64 + cc as u64;
                        // Pre-fill with 0xAA so the store of 0 is visible.
                        a.mov(byte_ptr(at), 0xAAu32).unwrap();
                        emit(
                            a,
                            &format!("Set{name}_rm8"),
                            &[Operand::Mem(Register::None, at as i64)],
                        );
                    }
                }
            });
            assert_no_exception(&g, "setcc");
            for (k, &f) in combos.iter().enumerate() {
                for cc in 0..16u8 {
                    let got = read_u8(&g, d + 16 * k as u64 + u64::from(cc));
                    assert_eq!(
                        got,
                        u8::from(condition(cc, f)),
                        "{engine} {mode:?} set{} flags {f:#x}",
                        CC_NAMES[cc as usize]
                    );
                }
            }
        }
    }
}

/// CMOVcc (16/32/64-bit, register and memory source) for all conditions; a false condition
/// still zero-extends a 32-bit destination in 64-bit mode.
#[test]
fn cmovcc_all_conditions_and_zero_extension() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let d = data(mode);
            let combos = flag_combinations();
            let fm = full_mask(mode);
            let src = d + 0x1000;
            let initial = 0xFFFF_FFFF_1111_1111u64 & fm;
            let moved = 0x7777_7777_2222_2222u64;
            let sizes: &[u32] = if mode == Mode::Long64 {
                &[16, 32, 64]
            } else {
                &[16, 32]
            };
            for &bits in sizes {
                let (rd, rs) = match bits {
                    16 => (Register::AX, Register::BX),
                    32 => (Register::EAX, Register::EBX),
                    _ => (Register::RAX, Register::RBX),
                };
                let g = run(engine, mode, &[], 0, |a| {
                    load(a, RBX, moved);
                    store(a, src, RBX);
                    for (k, &f) in combos.iter().enumerate() {
                        for (cc, name) in CC_NAMES.iter().enumerate() {
                            let slot = d + 16 * (16 * k as u64 + cc as u64);
                            load(a, RAX, initial);
                            set_flags(a, f as u32);
                            // Alternate register and memory sources.
                            let source = if cc % 2 == 0 {
                                Operand::Reg(rs)
                            } else {
                                Operand::Mem(Register::None, src as i64)
                            };
                            emit(
                                a,
                                &format!("Cmov{name}_r{bits}_rm{bits}"),
                                &[Operand::Reg(rd), source],
                            );
                            store(a, slot, RAX);
                        }
                    }
                });
                assert_no_exception(&g, "cmovcc");
                for (k, &f) in combos.iter().enumerate() {
                    for cc in 0..16u8 {
                        let slot = d + 16 * (16 * k as u64 + u64::from(cc));
                        let got = g.read_u64(slot) & fm;
                        let m = width_mask(bits);
                        let want = match (condition(cc, f), bits) {
                            (true, 16) => (initial & !m) | (moved & m),
                            (true, _) => moved & m & fm,
                            // Not moved: a 32-bit destination is still written (zero-extended).
                            (false, 32) => initial & 0xFFFF_FFFF,
                            (false, _) => initial,
                        };
                        assert_eq!(
                            got, want,
                            "{engine} {mode:?} cmov{} {bits}-bit flags {f:#x}",
                            CC_NAMES[cc as usize]
                        );
                    }
                }
            }
        }
    }
}

/// MOV between registers, memory, immediates and the moffs forms (A0..A3, with a 64-bit
/// offset in long mode); 8-bit moves keep the rest of the register.
#[test]
fn mov_forms_including_moffs() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let d = data(mode);
            let moffs = |op: u8| -> Vec<u8> {
                let mut v = match mode {
                    Mode::Long64 => vec![0x48, op],
                    _ => vec![op],
                };
                match mode {
                    Mode::Real => v.extend_from_slice(&(d as u16 + 0x20).to_le_bytes()),
                    Mode::Long64 => v.extend_from_slice(&(d + 0x20).to_le_bytes()),
                    _ => v.extend_from_slice(&(d as u32 + 0x20).to_le_bytes()),
                }
                v
            };
            let g = run(engine, mode, &[], 0, |a| {
                load(a, RAX, 0x8899_AABB_CCDD_EEFF);
                a.db(&moffs(0xA3)).unwrap(); // mov [moffs], rAX (full width)
                a.mov(byte_ptr(d + 0x30), 0x5Au32).unwrap();
                load(a, RCX, 0x1234_5678_9ABC_DEF0);
                a.xor(eax, eax).unwrap();
                let off = moffs(0xA0);
                a.db(&off[off.len()
                    - 1
                    - if mode == Mode::Real {
                        2
                    } else if mode == Mode::Long64 {
                        8
                    } else {
                        4
                    }..])
                    .unwrap(); // mov al, [moffs8]
                a.movzx(edi, al).unwrap();
                a.db(&moffs(0xA1)).unwrap(); // mov rAX, [moffs]
                a.mov(edx, 0xFFFF_FFFFu32).unwrap();
                a.mov(dl, byte_ptr(d + 0x30)).unwrap();
                a.mov(dh, cl).unwrap();
                a.mov(word_ptr(d + 0x40), 0xBEEFu32).unwrap();
                a.mov(si, word_ptr(d + 0x40)).unwrap();
            });
            assert_no_exception(&g, "mov");
            let fm = full_mask(mode);
            let s = &g.cpu;
            let stored = 0x8899_AABB_CCDD_EEFFu64 & fm;
            let width = match mode {
                Mode::Real => 2,
                Mode::Long64 => 8,
                _ => 4,
            };
            assert_eq!(s.gpr[RDI] & fm, 0xFF, "{engine} {mode:?}: mov al, [moffs8]");
            let stored = stored & width_mask(width * 8); // rAX was zeroed before A1
            let mem = g.read_u64(d + 0x20) & width_mask(width * 8);
            assert_eq!(mem, stored, "{engine} {mode:?}: mov [moffs], rAX");
            assert_eq!(
                s.gpr[RAX] & fm,
                stored,
                "{engine} {mode:?}: mov rAX, [moffs]"
            );
            assert_eq!(
                s.gpr[RDX] & 0xFFFF_FFFF,
                0xFFFF_F05A,
                "{mode:?}: mov dl/dh merge"
            );
            assert_eq!(s.gpr[RSI] & 0xFFFF, 0xBEEF, "{mode:?}: mov si, [mem]");
        }
    }
}

/// MOV to and from segment registers: real-mode base = selector * 16, protected-mode loads
/// from the GDT (a 16-bit data segment's limit and size), a null selector in ES, #GP for a
/// code selector in SS, #UD for MOV to CS, and MOV from Sreg to r32 / m16.
#[test]
fn mov_segment_registers() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let d = data(mode);
            let sel = if mode == Mode::Real {
                0x1234u32
            } else {
                u32::from(SEL_DATA16)
            };
            let g = run(engine, mode, &[], 0, |a| {
                a.mov(ax, sel).unwrap();
                a.mov(es, ax).unwrap();
                a.mov(fs, word_ptr(d + 0x10)).unwrap(); // selector from memory
                load(a, RBX, 0xFFFF_FFFF_FFFF_FFFF);
                a.mov(ebx, es).unwrap(); // zero-extends (32-bit register destination)
                a.mov(dword_ptr(d + 0x20), 0xFFFF_FFFFu32).unwrap();
                a.mov(word_ptr(d + 0x20), es).unwrap(); // writes 16 bits only
                if mode != Mode::Real {
                    a.xor(eax, eax).unwrap();
                    a.mov(gs, ax).unwrap(); // null selector is fine outside SS
                }
            });
            // The selector for FS comes from memory; write it before running (fresh guest).
            let code = assemble(mode, |a| {
                a.mov(ax, sel).unwrap();
                a.mov(es, ax).unwrap();
                a.mov(fs, word_ptr(d + 0x10)).unwrap();
                load(a, RBX, 0xFFFF_FFFF_FFFF_FFFF);
                a.mov(ebx, es).unwrap();
                a.mov(dword_ptr(d + 0x20), 0xFFFF_FFFFu32).unwrap();
                a.mov(word_ptr(d + 0x20), es).unwrap();
                if mode != Mode::Real {
                    a.xor(eax, eax).unwrap();
                    a.mov(gs, ax).unwrap();
                }
            });
            drop(g);
            let mut g = guest(engine, mode, &code, &[], 0);
            let fs_sel = if mode == Mode::Real {
                0x2000u16
            } else {
                SEL_DATA
            };
            g.write(d + 0x10, &fs_sel.to_le_bytes());
            g.run_to_halt();
            assert_no_exception(&g, "mov sreg");
            let es_seg = g.cpu.seg[SegReg::Es as usize];
            let fs_seg = g.cpu.seg[SegReg::Fs as usize];
            assert_eq!(
                u32::from(es_seg.selector),
                sel,
                "{engine} {mode:?}: ES selector"
            );
            assert_eq!(fs_seg.selector, fs_sel, "{engine} {mode:?}: FS from memory");
            if mode == Mode::Real {
                assert_eq!(es_seg.base, 0x12340, "{engine}: real-mode ES base");
                assert_eq!(fs_seg.base, 0x20000, "{engine}: real-mode FS base");
            } else {
                assert_eq!(es_seg.limit, 0xFFFF, "{engine} {mode:?}: 16-bit data limit");
                assert!(!es_seg.big(), "{engine} {mode:?}: data16 has B = 0");
                assert_eq!(
                    g.cpu.seg[SegReg::Gs as usize].selector,
                    0,
                    "{mode:?}: null GS"
                );
            }
            assert_eq!(
                g.cpu.gpr[RBX] & full_mask(mode),
                u64::from(sel),
                "{mode:?}: mov ebx, es"
            );
            assert_eq!(
                read_u32(&g, d + 0x20),
                0xFFFF_0000 | sel,
                "{mode:?}: mov m16, es"
            );
        }
    }
}

#[test]
fn mov_to_cs_is_ud_and_code_selector_in_ss_is_gp() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            // mov cs, ax (8E C8).
            let mut g = guest(engine, mode, &[0x8E, 0xC8, 0xF4], &[], 0);
            g.run_to_halt();
            assert_eq!(exception(&g), Some(6), "{engine} {mode:?}: mov cs → #UD");
            if mode == Mode::Real {
                continue;
            }
            let g = run(engine, mode, &[], 0, |a| {
                a.mov(ax, u32::from(SEL_CODE32)).unwrap();
                a.mov(ss, ax).unwrap();
            });
            assert_eq!(
                exception(&g),
                Some(13),
                "{engine} {mode:?}: code selector into SS"
            );
            let error_code = g.read_u64(stack_phys(&g)) & 0xFFFF;
            assert_eq!(error_code, u64::from(SEL_CODE32), "{mode:?}: #GP(selector)");
        }
    }
}

#[test]
fn movzx_movsx_movsxd() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let d = data(mode);
            let g = run(engine, mode, &[], 0, |a| {
                a.mov(dword_ptr(d), 0x8081_F2F3u32).unwrap();
                load(a, RAX, 0xFFFF_FFFF_FFFF_FFFF);
                a.movzx(eax, byte_ptr(d)).unwrap(); // 0xF3
                a.movsx(ebx, byte_ptr(d)).unwrap(); // 0xFFFFFFF3
                a.movzx(ecx, word_ptr(d + 2)).unwrap(); // 0x8081
                a.movsx(edx, word_ptr(d + 2)).unwrap(); // 0xFFFF8081
                a.mov(esi, 0x1234_5678u32).unwrap();
                a.movsx(si, byte_ptr(d + 1)).unwrap(); // SI = 0xFFF2, upper kept
                a.mov(edi, 0x7Fu32).unwrap();
                a.movsx(edi, di).unwrap(); // positive stays
            });
            assert_no_exception(&g, "movzx/movsx");
            let s = &g.cpu;
            let fm = full_mask(mode);
            assert_eq!(s.gpr[RAX] & fm, 0xF3, "{engine} {mode:?}: movzx byte");
            assert_eq!(s.gpr[RBX] & fm, 0xFFFF_FFF3, "{mode:?}: movsx byte");
            assert_eq!(s.gpr[RCX] & fm, 0x8081, "{mode:?}: movzx word");
            assert_eq!(s.gpr[RDX] & fm, 0xFFFF_8081, "{mode:?}: movsx word");
            assert_eq!(s.gpr[RSI] & fm, 0x1234_FFF2, "{mode:?}: movsx r16");
            assert_eq!(s.gpr[RDI] & fm, 0x7F, "{mode:?}: movsx positive");
        }
        let g = run(engine, Mode::Long64, &[], 0, |a| {
            a.mov(eax, 0x8000_0000u32).unwrap();
            a.movsxd(rbx, eax).unwrap();
            a.mov(ecx, 0x7FFF_FFFFu32).unwrap();
            a.movsxd(rdx, ecx).unwrap();
            a.mov(rsi, 0xFFFF_FFFF_FFFF_FF80u64).unwrap();
            a.movsx(rdi, sil).unwrap();
            a.movzx(r8, si).unwrap();
        });
        let s = &g.cpu;
        assert_eq!(
            s.gpr[RBX], 0xFFFF_FFFF_8000_0000,
            "{engine}: movsxd negative"
        );
        assert_eq!(s.gpr[RDX], 0x7FFF_FFFF, "{engine}: movsxd positive");
        assert_eq!(s.gpr[RDI], 0xFFFF_FFFF_FFFF_FF80, "{engine}: movsx r64, r8");
        assert_eq!(s.gpr[8], 0xFF80, "{engine}: movzx r64, r16");
    }
}

/// LEA computes the offset at the address size (16-bit wraps at 64 KiB, 0x67 in 64-bit mode
/// gives a 32-bit address) and truncates to the operand size; no memory is touched.
#[test]
fn lea_address_and_operand_sizes() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let regs = [
                (RBX, 0xFFF0u64),
                (RSI, 0x20),
                (RCX, 0xFFFF_FFFF),
                (RDX, 0x1_0000_0003 & full_mask(mode)),
            ];
            let g = run(engine, mode, &regs, 0, |a| {
                // 16-bit addressing (0x67 outside real mode): (0xFFF0 + 0x20 + 0x10) & 0xFFFF.
                if mode == Mode::Long64 {
                    a.mov(eax, 0x20u32).unwrap(); // no 16-bit addressing in 64-bit mode
                } else {
                    a.lea(eax, ptr(bx + si + 0x10)).unwrap();
                }
                // 32-bit addressing wraps at 4 GiB: 0xFFFFFFFF + 2*... .
                if mode == Mode::Long64 {
                    a.lea(rdi, ptr(ecx + 5)).unwrap(); // 0x67: 32-bit address, zero-extended
                    a.lea(rbp, ptr(rcx + 5)).unwrap(); // 64-bit address
                    a.lea(r8w, ptr(rdx + rdx * 2)).unwrap(); // 16-bit operand
                } else {
                    a.lea(edi, ptr(ecx + 5)).unwrap();
                    a.lea(bp, ptr(ecx + edx * 2)).unwrap(); // 16-bit operand, 32-bit address
                }
            });
            assert_no_exception(&g, "lea");
            let s = &g.cpu;
            assert_eq!(
                s.gpr[RAX] & full_mask(mode),
                0x20,
                "{engine} {mode:?}: 16-bit wrap"
            );
            assert_eq!(s.gpr[RDI], 4, "{engine} {mode:?}: 32-bit address wraps");
            if mode == Mode::Long64 {
                assert_eq!(s.gpr[5], 0x1_0000_0004, "{engine}: 64-bit address");
                assert_eq!(s.gpr[8] & 0xFFFF, 0x0009, "{engine}: 16-bit operand");
            } else {
                // 0xFFFFFFFF + 6 = 0x1_0000_0005 → 32-bit address 5, low 16 bits 5.
                assert_eq!(s.gpr[5] & 0xFFFF, 5, "{engine} {mode:?}: lea bp");
            }
        }
    }
}

#[test]
fn xchg_register_and_memory() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let d = data(mode);
            let g = run(engine, mode, &[], 0, |a| {
                a.mov(eax, 0x1111_1111u32).unwrap();
                a.mov(ebx, 0x2222_2222u32).unwrap();
                a.xchg(eax, ebx).unwrap();
                a.mov(dword_ptr(d), 0x3333_3333u32).unwrap();
                a.mov(ecx, 0x4444_4444u32).unwrap();
                a.xchg(dword_ptr(d), ecx).unwrap();
                a.mov(edx, 0x5566u32).unwrap();
                a.xchg(dl, dh).unwrap();
                a.mov(word_ptr(d + 8), 0x7788u32).unwrap();
                a.mov(esi, 0xAAAA_9999u32).unwrap();
                a.xchg(word_ptr(d + 8), si).unwrap();
            });
            assert_no_exception(&g, "xchg");
            let s = &g.cpu;
            assert_eq!(s.gpr[RAX] & 0xFFFF_FFFF, 0x2222_2222, "{engine} {mode:?}");
            assert_eq!(s.gpr[RBX] & 0xFFFF_FFFF, 0x1111_1111, "{mode:?}");
            assert_eq!(
                s.gpr[RCX] & 0xFFFF_FFFF,
                0x3333_3333,
                "{mode:?}: from memory"
            );
            assert_eq!(read_u32(&g, d), 0x4444_4444, "{mode:?}: to memory");
            assert_eq!(s.gpr[RDX] & 0xFFFF, 0x6655, "{mode:?}: xchg dl, dh");
            assert_eq!(
                s.gpr[RSI] & 0xFFFF_FFFF,
                0xAAAA_7788,
                "{mode:?}: xchg si, m16"
            );
            assert_eq!(read_u16(&g, d + 8), 0x9999, "{mode:?}: m16");
        }
        // 64-bit: 90 is NOP (no zero-extension), 87 C0 (xchg eax, eax) zero-extends.
        let g = run(engine, Mode::Long64, &[], 0, |a| {
            a.mov(rax, 0xFFFF_FFFF_0000_0001u64).unwrap();
            a.db(&[0x90]).unwrap();
            a.mov(rbx, rax).unwrap();
            a.db(&[0x87, 0xC0]).unwrap();
            a.mov(rcx, 0x1111_2222_3333_4444u64).unwrap();
            a.mov(rdx, 0x5555_6666_7777_8888u64).unwrap();
            a.xchg(rcx, rdx).unwrap();
        });
        let s = &g.cpu;
        assert_eq!(s.gpr[RBX], 0xFFFF_FFFF_0000_0001, "{engine}: 90 is a NOP");
        assert_eq!(s.gpr[RAX], 1, "{engine}: xchg eax, eax zero-extends");
        assert_eq!(s.gpr[RCX], 0x5555_6666_7777_8888, "{engine}: xchg r64");
        assert_eq!(s.gpr[RDX], 0x1111_2222_3333_4444, "{engine}: xchg r64");
    }
}

#[test]
fn xlat_bswap_and_sign_extension_of_the_accumulator() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let d = data(mode);
            let table: Vec<u8> = (0..=255u8).map(|k| k.wrapping_mul(7) ^ 0x5C).collect();
            let code = assemble(mode, |a| {
                load(a, RBX, d);
                a.mov(eax, 0x1234_56C8u32).unwrap();
                a.xlatb().unwrap();
                a.mov(edi, eax).unwrap();
                a.mov(ecx, 0x1122_3344u32).unwrap();
                a.bswap(ecx).unwrap();
                a.mov(eax, 0x0000_8080u32).unwrap();
                a.cbw().unwrap(); // AX = 0xFF80
                a.mov(esi, eax).unwrap();
                a.mov(eax, 0x0000_8000u32).unwrap();
                a.cwde().unwrap(); // EAX = 0xFFFF8000
                a.cdq().unwrap(); // EDX = 0xFFFFFFFF
                a.mov(ebp, edx).unwrap();
                a.mov(eax, 0x0000_1234u32).unwrap();
                a.mov(edx, 0xFFFF_FFFFu32).unwrap();
                a.cwd().unwrap(); // DX = 0, upper EDX kept
            });
            let mut g = guest(engine, mode, &code, &[], 0);
            g.write(d, &table);
            g.run_to_halt();
            assert_no_exception(&g, "xlat etc.");
            let s = &g.cpu;
            assert_eq!(
                s.gpr[RDI] & 0xFFFF_FFFF,
                0x1234_5600 | u64::from(table[0xC8]),
                "{engine} {mode:?}: xlat"
            );
            assert_eq!(s.gpr[RCX] & 0xFFFF_FFFF, 0x4433_2211, "{mode:?}: bswap");
            assert_eq!(s.gpr[RSI] & 0xFFFF_FFFF, 0x0000_FF80, "{mode:?}: cbw");
            assert_eq!(s.gpr[5] & 0xFFFF_FFFF, 0xFFFF_FFFF, "{mode:?}: cdq");
            assert_eq!(s.gpr[RAX] & 0xFFFF_FFFF, 0x1234, "{mode:?}");
            assert_eq!(s.gpr[RDX] & 0xFFFF_FFFF, 0xFFFF_0000, "{mode:?}: cwd");
        }
        let g = run(engine, Mode::Long64, &[], 0, |a| {
            a.mov(rax, 0xFFFF_FFFF_8000_0000u64).unwrap();
            a.mov(eax, 0x8000_0000u32).unwrap();
            a.cdqe().unwrap();
            a.cqo().unwrap();
            a.mov(rbx, rdx).unwrap();
            a.mov(rcx, 0x0102_0304_0506_0708u64).unwrap();
            a.bswap(rcx).unwrap();
            a.mov(rsi, 0x1111_1111_8000_0000u64).unwrap();
            a.xchg(rax, rsi).unwrap();
            a.cwde().unwrap(); // EAX = 0, zero-extended
            a.mov(rdi, rax).unwrap();
            a.mov(rax, 0x7FFF_FFFF_FFFF_FFFFu64).unwrap();
            a.cqo().unwrap();
        });
        let s = &g.cpu;
        assert_eq!(s.gpr[RSI], 0xFFFF_FFFF_8000_0000, "{engine}: cdqe");
        assert_eq!(s.gpr[RBX], u64::MAX, "{engine}: cqo negative");
        assert_eq!(s.gpr[RCX], 0x0807_0605_0403_0201, "{engine}: bswap r64");
        assert_eq!(s.gpr[RDI], 0, "{engine}: cwde zero-extends");
        assert_eq!(s.gpr[RDX], 0, "{engine}: cqo positive");
    }
}

/// LAHF/SAHF move SF ZF AF PF CF (bit 1 reads as 1, bits 3 and 5 as 0); SAHF leaves OF.
#[test]
fn lahf_and_sahf() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let g = run(engine, mode, &[], 0, |a| {
                set_flags(a, (ARITH | DF) as u32);
                a.mov(eax, 0u32).unwrap();
                a.lahf().unwrap();
                a.mov(ebx, eax).unwrap();
                a.mov(ah, 0x2Au32).unwrap(); // bits 1, 3, 5: only reserved bits and none
                a.sahf().unwrap();
                save_flags(a, 0);
                a.mov(ah, 0xD5u32).unwrap(); // SF ZF AF PF CF
                a.sahf().unwrap();
            });
            assert_no_exception(&g, "lahf/sahf");
            let s = &g.cpu;
            assert_eq!(s.gpr[RBX] & 0xFF00, 0xD700, "{engine} {mode:?}: lahf");
            assert_eq!(
                s.gpr[RSI] & ARITH,
                OF,
                "{mode:?}: sahf 0x2A clears five, keeps OF"
            );
            assert_eq!(s.gpr[RSI] & 0x28, 0, "{mode:?}: reserved bits 3/5 stay 0");
            assert_eq!(flags(&g, ARITH), ARITH, "{mode:?}: sahf 0xD5");
        }
    }
}

#[test]
fn movbe_swaps_on_load_and_store() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let d = data(mode);
            let g = run(engine, mode, &[], 0, |a| {
                a.mov(dword_ptr(d), 0x1122_3344u32).unwrap();
                a.movbe(eax, dword_ptr(d)).unwrap();
                a.mov(ebx, 0xAABB_CCDDu32).unwrap();
                a.movbe(word_ptr(d + 4), bx).unwrap();
                a.mov(ecx, 0xFFFF_FFFFu32).unwrap();
                a.movbe(cx, word_ptr(d)).unwrap();
            });
            assert_no_exception(&g, "movbe");
            let s = &g.cpu;
            assert_eq!(
                s.gpr[RAX] & 0xFFFF_FFFF,
                0x4433_2211,
                "{engine} {mode:?}: movbe load"
            );
            assert_eq!(read_u16(&g, d + 4), 0xDDCC, "{mode:?}: movbe store 16");
            assert_eq!(
                s.gpr[RCX] & 0xFFFF_FFFF,
                0xFFFF_4433,
                "{mode:?}: movbe r16 merges"
            );
        }
        let g = run(engine, Mode::Long64, &[], 0, |a| {
            a.mov(rax, 0x0102_0304_0506_0708u64).unwrap();
            a.movbe(qword_ptr(DATA_BASE), rax).unwrap();
        });
        assert_eq!(
            g.read_u64(DATA_BASE),
            0x0807_0605_0403_0201,
            "{engine}: movbe m64"
        );
    }
}

/// Protected-mode MOV Sreg faults: a selector beyond the GDT limit or of a system descriptor
/// is #GP(selector), a not-present data segment #NP(selector), a null SS #GP(0) outside
/// 64-bit mode (in 64-bit mode a null SS at CPL 0 is allowed), a DPL-0 segment with RPL 3
/// #GP(selector); the segment register keeps its old value.
#[test]
fn mov_sreg_protected_mode_faults() {
    use crane86::machine::testkit::{segment_descriptor, GDT_BASE, SEL_TSS};
    const NOT_PRESENT: u16 = 0x58;
    for engine in EngineKind::emulators() {
        for mode in [Mode::Protected32, Mode::Paged32, Mode::Pae32, Mode::Long64] {
            // (selector, into SS?, expected vector, expected error code)
            let cases: [(u16, bool, Option<u8>, u64); 6] = [
                (0x68, false, Some(13), 0x68),
                (SEL_TSS, false, Some(13), u64::from(SEL_TSS)),
                (NOT_PRESENT, false, Some(11), u64::from(NOT_PRESENT)),
                (SEL_DATA | 3, false, Some(13), u64::from(SEL_DATA)),
                (
                    0,
                    true,
                    if mode == Mode::Long64 { None } else { Some(13) },
                    0,
                ),
                (NOT_PRESENT, true, Some(12), u64::from(NOT_PRESENT)),
            ];
            for (sel, into_ss, vector, error_code) in cases {
                let code = assemble(mode, |a| {
                    a.mov(ax, u32::from(sel)).unwrap();
                    if into_ss {
                        a.mov(ss, ax).unwrap();
                    } else {
                        a.mov(ds, ax).unwrap();
                    }
                    // Without a fault: restore a usable SS for the final HLT path.
                    a.mov(bx, u32::from(SEL_DATA)).unwrap();
                    a.mov(ss, bx).unwrap();
                });
                let mut g = guest(engine, mode, &code, &[], 0);
                let np = segment_descriptor(0, 0xFFFFF, 0x13, 0xC); // data, not present
                g.write(GDT_BASE + u64::from(NOT_PRESENT), &np.to_le_bytes());
                g.cpu.gdtr.limit = 0x5F; // 0x68 is beyond
                g.run_to_halt();
                let what = format!(
                    "{engine} {mode:?} selector {sel:#x} into {}",
                    if into_ss { "SS" } else { "DS" }
                );
                assert_eq!(exception(&g), vector, "{what}");
                if vector.is_some() {
                    let got = g.read_u64(stack_phys(&g)) & 0xFFFF;
                    assert_eq!(got, error_code, "{what}: error code");
                    let reg = if into_ss { SegReg::Ss } else { SegReg::Ds };
                    assert_eq!(
                        g.cpu.seg[reg as usize].selector, SEL_DATA,
                        "{what}: unchanged"
                    );
                }
            }
        }
    }
}

/// RIP-relative LEA in 64-bit mode gives the address relative to the next instruction.
#[test]
fn rip_relative_lea() {
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            let mut here = a.create_label();
            a.lea(rax, ptr(here)).unwrap(); // 7 bytes: 48 8D 05 00 00 00 00
            a.set_label(&mut here).unwrap();
            a.lea(rbx, ptr(here)).unwrap(); // the label is 7 bytes back
        });
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.run_to_halt();
        assert_no_exception(&g, "lea rip");
        assert_eq!(g.cpu.gpr[RAX], CODE_BASE + 7, "{engine}: lea [rip+0]");
        assert_eq!(g.cpu.gpr[RBX], CODE_BASE + 7, "{engine}: lea [rip-7]");
    }
}
