//! Stack instructions: PUSH/POP of registers, memory, immediates and segment registers, PUSH
//! SP, POP into rSP-based memory, the POP SS interrupt shadow, PUSHA/POPA, ENTER/LEAVE,
//! PUSHF/POPF privilege rules (CPL 3, V86), and 16-bit stack wrap (SS.B = 0).

use crate::common::*;
use crane86::machine::testkit::{SEL_DATA16, SEL_USER_DATA, STACK_TOP};
use crane86::x86::SegReg;

/// Physical address of the initial stack top in `mode` (real mode: SS:SP = 0x7000:0xFFF0).
fn top(mode: Mode) -> u64 {
    if mode == Mode::Real {
        STACK_TOP - 0x10
    } else {
        STACK_TOP
    }
}

/// The natural stack slot width in bytes.
fn slot(mode: Mode) -> u64 {
    u64::from(mode.bitness() / 8)
}

#[test]
fn push_pop_registers_memory_and_immediates() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let d = data(mode);
            let w = slot(mode);
            let g = run(engine, mode, &[], 0, |a| {
                match mode.bitness() {
                    16 => {
                        a.push(0xFFFF_FF80u32 as i32 & 0xFFFF).unwrap();
                        a.db(&[0x6A, 0x80]).unwrap(); // push imm8 -128
                    }
                    32 => {
                        a.push(0x1234_5678u32).unwrap();
                        a.db(&[0x6A, 0x80]).unwrap();
                    }
                    _ => {
                        a.push(0x1234_5678).unwrap();
                        a.db(&[0x6A, 0x80]).unwrap();
                    }
                }
                load(a, RBX, 0x1111_2222_3333_4444);
                if mode == Mode::Long64 {
                    a.push(rbx).unwrap();
                    a.mov(qword_ptr(d), rbx).unwrap();
                    a.push(qword_ptr(d)).unwrap();
                    a.pop(qword_ptr(d + 8)).unwrap();
                    a.pop(rcx).unwrap();
                    a.push(bx).unwrap(); // 66 53: 2 bytes
                    a.pop(dx).unwrap();
                } else {
                    a.push(ebx).unwrap();
                    a.mov(dword_ptr(d), ebx).unwrap();
                    a.push(dword_ptr(d)).unwrap();
                    a.pop(dword_ptr(d + 8)).unwrap();
                    a.pop(ecx).unwrap();
                    a.push(bx).unwrap(); // 2 bytes (0x66 outside real mode)
                    a.pop(dx).unwrap();
                }
                // ESP/RSP after: the two immediates remain.
            });
            assert_no_exception(&g, "push/pop");
            let s = &g.cpu;
            let t = top(mode);
            let imm8 = 0xFFFF_FFFF_FFFF_FF80u64 & width_mask(8 * w as u32);
            assert_eq!(
                g.read_u64(t - 2 * w) & width_mask(8 * w as u32),
                imm8,
                "{engine} {mode:?}: push imm8 sign-extended"
            );
            let imm = if mode == Mode::Real {
                0xFF80
            } else {
                0x1234_5678
            };
            assert_eq!(
                g.read_u64(t - w) & width_mask(8 * w as u32),
                imm,
                "{mode:?}: push imm"
            );
            let sp_mask = if mode == Mode::Real {
                0xFFFF
            } else {
                full_mask(mode)
            };
            let sp0 = if mode == Mode::Real {
                0xFFF0
            } else {
                STACK_TOP
            };
            assert_eq!(s.gpr[RSP] & sp_mask, sp0 - 2 * w, "{mode:?}: final rSP");
            let full = 0x1111_2222_3333_4444u64 & full_mask(mode);
            let wide = if mode == Mode::Real {
                full & 0xFFFF_FFFF
            } else {
                full
            };
            assert_eq!(
                s.gpr[RCX] & full_mask(mode),
                wide & full_mask(mode),
                "{mode:?}: pop r"
            );
            let mem_w = if mode == Mode::Long64 { 8 } else { 4 };
            assert_eq!(
                g.read_u64(d + 8) & width_mask(mem_w * 8),
                full & width_mask(mem_w * 8),
                "{mode:?}: push m / pop m"
            );
            assert_eq!(s.gpr[RDX] & 0xFFFF, 0x4444, "{mode:?}: push/pop r16");
        }
    }
}

/// PUSH rSP pushes the value before the push; POP [rSP] addresses with the incremented rSP;
/// POP rSP loads the popped value.
#[test]
fn push_sp_and_pop_into_sp_based_memory() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let g = run(engine, mode, &[], 0, |a| match mode.bitness() {
                16 => {
                    a.push(sp).unwrap();
                    a.pop(ax).unwrap();
                    a.push(0x1111).unwrap();
                    a.push(0x2222).unwrap();
                    a.pop(word_ptr(esp)).unwrap(); // 0x67: ESP-based in 16-bit code
                    a.pop(bx).unwrap();
                    a.push(0x3333).unwrap();
                    a.push(0x4444).unwrap();
                    a.pop(word_ptr(esp + 2)).unwrap();
                    a.mov(cx, word_ptr(esp + 2)).unwrap();
                    a.pop(dx).unwrap();
                }
                32 => {
                    a.push(esp).unwrap();
                    a.pop(eax).unwrap();
                    a.push(0x1111u32).unwrap();
                    a.push(0x2222u32).unwrap();
                    a.pop(dword_ptr(esp)).unwrap(); // writes 0x2222 over 0x1111
                    a.pop(ebx).unwrap();
                    a.push(0x3333u32).unwrap();
                    a.push(0x4444u32).unwrap();
                    a.pop(dword_ptr(esp + 4)).unwrap(); // one slot above the new ESP
                    a.mov(ecx, dword_ptr(esp + 4)).unwrap();
                    a.pop(edx).unwrap();
                }
                _ => {
                    a.push(rsp).unwrap();
                    a.pop(rax).unwrap();
                    a.push(0x1111).unwrap();
                    a.push(0x2222).unwrap();
                    a.pop(qword_ptr(rsp)).unwrap();
                    a.pop(rbx).unwrap();
                    a.push(0x3333).unwrap();
                    a.push(0x4444).unwrap();
                    a.pop(qword_ptr(rsp + 8)).unwrap();
                    a.mov(rcx, qword_ptr(rsp + 8)).unwrap();
                    a.pop(rdx).unwrap();
                }
            });
            assert_no_exception(&g, "push sp");
            let s = &g.cpu;
            let sp0 = if mode == Mode::Real {
                0xFFF0
            } else {
                STACK_TOP
            };
            assert_eq!(
                s.gpr[RAX] & 0xFFFF_FFFF,
                sp0,
                "{engine} {mode:?}: push sp pushes the old value"
            );
            let m = full_mask(mode);
            assert_eq!(
                s.gpr[RBX] & m,
                0x2222,
                "{engine} {mode:?}: pop [rsp] uses the incremented rSP"
            );
            assert_eq!(
                s.gpr[RCX] & m,
                0x4444,
                "{mode:?}: pop [rsp+w] one slot above the new rSP"
            );
            assert_eq!(s.gpr[RDX] & m, 0x3333, "{mode:?}: slot below untouched");
            assert_eq!(s.gpr[RSP] & m, sp0, "{mode:?}: balanced");
        }
    }
}

/// PUSH/POP of segment registers (legacy modes: ES/DS/SS/FS/GS; 64-bit mode: FS/GS only,
/// PUSH CS/ES/SS/DS and POP ES/SS/DS are #UD); 0x0F is never POP CS.
#[test]
fn push_pop_segment_registers() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let code = assemble(mode, |a| {
                if mode == Mode::Long64 {
                    a.mov(ax, 0x3Bu32).unwrap();
                    a.mov(fs, ax).unwrap();
                    a.push(fs).unwrap();
                    a.pop(gs).unwrap();
                    a.mov(rax, rsp).unwrap();
                } else {
                    let sel = if mode == Mode::Real {
                        0x0123u32
                    } else {
                        u32::from(SEL_DATA16)
                    };
                    a.mov(ax, sel).unwrap();
                    a.mov(es, ax).unwrap();
                    a.push(es).unwrap();
                    a.pop(fs).unwrap();
                    a.push(cs).unwrap();
                    a.pop(bx).unwrap();
                    a.push(ss).unwrap();
                    a.pop(gs).unwrap();
                    a.push(ds).unwrap();
                    a.pop(ds).unwrap();
                }
            });
            let mut g = guest(engine, mode, &code, &[], 0);
            g.run_to_halt();
            assert_no_exception(&g, "push/pop sreg");
            let seg = |r: SegReg| g.cpu.seg[r as usize].selector;
            if mode == Mode::Long64 {
                assert_eq!(seg(SegReg::Gs), SEL_USER_DATA, "{engine}: push fs / pop gs");
                assert_eq!(g.cpu.gpr[RAX], STACK_TOP, "{engine}: balanced");
                // PUSH ES/CS/SS/DS and POP ES/SS/DS are invalid in 64-bit mode.
                for op in [0x06u8, 0x0E, 0x16, 0x1E, 0x07, 0x17, 0x1F] {
                    let mut g = guest(engine, mode, &[op, 0xF4], &[], 0);
                    g.run_to_halt();
                    assert_eq!(
                        exception(&g),
                        Some(6),
                        "{engine}: opcode {op:#04x} in 64-bit mode"
                    );
                }
            } else {
                assert_eq!(
                    seg(SegReg::Fs),
                    seg(SegReg::Es),
                    "{engine} {mode:?}: push es / pop fs"
                );
                assert_eq!(
                    g.cpu.gpr[RBX] & 0xFFFF,
                    u64::from(seg(SegReg::Cs)),
                    "{mode:?}: push cs"
                );
                assert_eq!(
                    seg(SegReg::Gs),
                    seg(SegReg::Ss),
                    "{mode:?}: push ss / pop gs"
                );
                if mode == Mode::Real {
                    assert_eq!(
                        g.cpu.seg[SegReg::Fs as usize].base,
                        0x1230,
                        "{engine}: real-mode base"
                    );
                } else {
                    assert_eq!(
                        g.cpu.seg[SegReg::Fs as usize].limit,
                        0xFFFF,
                        "{mode:?}: descriptor loaded"
                    );
                }
            }
        }
    }
}

/// POP SS (and MOV SS) inhibit the single-step trap after the next instruction: with TF set
/// by POPF, the #DB after `pop ss; mov eax, 1` reports the instruction after the MOV, whereas
/// without it the trap follows the first instruction.
#[test]
fn pop_ss_inhibits_the_single_step_trap_for_one_instruction() {
    for engine in EngineKind::emulators() {
        for mode in LEGACY_MODES {
            for with_pop_ss in [false, true] {
                let mut after_first = 0;
                let mut after_second = 0;
                let code = assemble(mode, |a| {
                    a.push(ss).unwrap();
                    set_flags(a, 0x100); // TF: the trap follows the next instruction
                    let mut l1 = a.create_label();
                    let mut l2 = a.create_label();
                    if with_pop_ss {
                        a.pop(ss).unwrap();
                    } else {
                        a.pop(eax).unwrap();
                    }
                    a.set_label(&mut l1).unwrap();
                    a.mov(ecx, 1u32).unwrap();
                    a.set_label(&mut l2).unwrap();
                    a.mov(edx, 2u32).unwrap();
                    let _ = (l1, l2);
                });
                // Find the label offsets by decoding: push ss, push imm, popf, pop, mov, mov.
                let mut dec = iced_x86::Decoder::with_ip(mode.bitness(), &code, 0, 0);
                let offs: Vec<u64> = (0..6).map(|_| dec.decode().next_ip()).collect();
                after_first = after_first.max(offs[3]);
                after_second = after_second.max(offs[4]);
                let mut g = guest(engine, mode, &code, &[], 0);
                g.run_to_halt();
                let what = format!("{engine} {mode:?} pop ss={with_pop_ss}");
                assert_eq!(exception(&g), Some(1), "{what}: #DB expected");
                let want = if with_pop_ss {
                    after_second
                } else {
                    after_first
                };
                assert_eq!(faulting_offset(&g, false), want, "{what}: trap point");
            }
        }
    }
}

#[test]
fn pusha_popa_16_and_32() {
    for engine in EngineKind::emulators() {
        for mode in LEGACY_MODES {
            let regs: Vec<(usize, u64)> = (0..8)
                .filter(|&r| r != RSP)
                .map(|r| (r, 0x1010_0101 * (r as u64 + 1)))
                .collect();
            let g = run(engine, mode, &regs, 0, |a| {
                a.pushad().unwrap();
                a.pusha().unwrap();
                // Clobber everything but ESP, then restore from the 16-bit image and
                // the 32-bit image in turn.
                for r in [eax, ecx, edx, ebx, ebp, esi, edi] {
                    a.mov(r, 0xFFFF_FFFFu32).unwrap();
                }
                a.popa().unwrap();
                a.mov(dword_ptr(data(mode)), eax).unwrap();
                a.mov(dword_ptr(data(mode) + 4), ebx).unwrap();
                a.popad().unwrap();
            });
            assert_no_exception(&g, "pusha/popa");
            let t = top(mode);
            let sp0 = if mode == Mode::Real {
                0xFFF0u64
            } else {
                STACK_TOP
            };
            // 32-bit image: EAX ECX EDX EBX ESP(original) EBP ESI EDI from high to low.
            for r in 0..8u64 {
                let want = if r == RSP as u64 {
                    sp0
                } else {
                    0x1010_0101 * (r + 1)
                };
                assert_eq!(
                    read_u32(&g, t - 4 * (r + 1)),
                    want as u32,
                    "{engine} {mode:?}: pushad slot {r}"
                );
                let want16 = if r == RSP as u64 {
                    sp0 - 32
                } else {
                    want & 0xFFFF
                };
                assert_eq!(
                    u64::from(read_u16(&g, t - 32 - 2 * (r + 1))),
                    want16 & 0xFFFF,
                    "{mode:?}: pushaw slot {r}"
                );
            }
            // POPAW restored the low words only.
            assert_eq!(
                read_u32(&g, data(mode)),
                0xFFFF_0101,
                "{mode:?}: popaw AX merge"
            );
            assert_eq!(
                read_u32(&g, data(mode) + 4),
                0xFFFF_0404,
                "{mode:?}: popaw BX merge"
            );
            for &(r, v) in &regs {
                assert_eq!(
                    g.cpu.gpr[r] & 0xFFFF_FFFF,
                    v,
                    "{mode:?}: popad register {r}"
                );
            }
            let sp_mask = if mode == Mode::Real {
                0xFFFF
            } else {
                0xFFFF_FFFF
            };
            assert_eq!(g.cpu.gpr[RSP] & sp_mask, sp0, "{mode:?}: balanced");
        }
    }
}

/// ENTER with nesting levels 0, 1 and 3 (frame pointer, copied display, new frame pointer,
/// allocation), then LEAVE.
#[test]
fn enter_levels_and_leave() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let w = slot(mode);
            for level in [0u8, 1, 3] {
                let d = data(mode);
                // Outer frame pointer with a display below it: [bp - w*k] = 0xD0 + k.
                let outer_bp = d + 0x100;
                let code = assemble(mode, |a| {
                    load(a, 5, outer_bp);
                    a.enter(0x20u32, u32::from(level)).unwrap();
                    store(a, d, 5); // new rBP
                    store(a, d + 8, RSP); // rSP after ENTER
                    a.leave().unwrap();
                });
                let mut g = guest(engine, mode, &code, &[], 0);
                let ss_base = top(mode)
                    - if mode == Mode::Real {
                        0xFFF0
                    } else {
                        STACK_TOP
                    };
                for k in 1..4u64 {
                    g.write(
                        ss_base + outer_bp - w * k,
                        &(0xD0 + k).to_le_bytes()[..w as usize],
                    );
                }
                g.run_to_halt();
                let what = format!("{engine} {mode:?} enter level {level}");
                assert_no_exception(&g, &what);
                let m = width_mask(8 * w as u32);
                let t = top(mode);
                let sp0 = if mode == Mode::Real {
                    0xFFF0
                } else {
                    STACK_TOP
                };
                // Reference model: push rBP; frame = rSP; copy level-1 display entries;
                // push frame (level > 0); rBP = frame; rSP -= size.
                let frame = sp0 - w;
                let mut pushed = vec![outer_bp];
                if level > 0 {
                    for k in 1..u64::from(level) {
                        pushed.push(0xD0 + k);
                    }
                    pushed.push(frame);
                }
                let sp_after = sp0 - w * pushed.len() as u64 - 0x20;
                for (k, v) in pushed.iter().enumerate() {
                    let got = g.read_u64(t - w * (k as u64 + 1)) & m;
                    assert_eq!(got, v & m, "{what}: stack slot {k}");
                }
                let rec_bp = g.read_u64(d) & m;
                let rec_sp = g.read_u64(d + 8) & m;
                assert_eq!(rec_bp, frame, "{what}: new rBP");
                assert_eq!(rec_sp, sp_after, "{what}: rSP after enter");
                // LEAVE: rSP = rBP + w, rBP = old value.
                assert_eq!(g.cpu.gpr[5] & m, outer_bp, "{what}: leave restores rBP");
                assert_eq!(g.cpu.gpr[RSP] & m, sp0, "{what}: leave restores rSP");
            }
        }
    }
}

/// POPF at CPL 3 with IOPL 0 changes the arithmetic flags and DF but neither IF nor IOPL (no
/// fault); with IOPL 3 it may change IF but still not IOPL. PUSHF at CPL 3 works.
#[test]
fn popf_privilege_rules_at_cpl3() {
    for engine in EngineKind::emulators() {
        for mode in [Mode::Protected32, Mode::Paged32, Mode::Pae32, Mode::Long64] {
            for iopl in [0u64, 3] {
                let initial = IF | (iopl << 12);
                let g = run_user(engine, mode, &[], initial, |a| {
                    // Try to clear IF, set IOPL to 1 (or 2), set CF/ZF/DF.
                    let attempt = (CF | ZF | DF | (1 << 12)) as u32 | 2;
                    set_flags(a, attempt);
                    if a.bitness() == 64 {
                        a.pushfq().unwrap();
                        a.pop(rbx).unwrap();
                    } else {
                        a.pushfd().unwrap();
                        a.pop(ebx).unwrap();
                    }
                });
                user_exited(&g, "popf at cpl 3");
                let got = g.cpu.gpr[RBX];
                let what = format!("{engine} {mode:?} iopl {iopl}");
                assert_eq!(
                    got & (CF | ZF | DF),
                    CF | ZF | DF,
                    "{what}: arithmetic flags and DF"
                );
                assert_eq!((got >> 12) & 3, iopl, "{what}: IOPL unchanged at CPL 3");
                let want_if = if iopl == 3 { 0 } else { IF };
                assert_eq!(
                    got & IF,
                    want_if,
                    "{what}: IF changes only when CPL <= IOPL"
                );
            }
        }
    }
}

/// In V86 mode with IOPL < 3, PUSHF and POPF raise #GP(0); with IOPL 3 they work.
#[test]
fn pushf_popf_in_v86_mode_need_iopl3() {
    for engine in EngineKind::emulators() {
        for (iopl, op) in [(0u64, 0x9Cu8), (0, 0x9D), (3, 0x9C)] {
            let v86_ip = 0x800u64;
            let code = assemble(Mode::Protected32, |a| {
                for v in [0u32, 0, 0, 0] {
                    a.push(v).unwrap(); // GS FS DS ES
                }
                a.push(0x7000u32).unwrap(); // SS
                a.push(0xFF00u32).unwrap(); // SP
                a.push(((1 << 17) | (iopl << 12) | 2) as u32).unwrap(); // EFLAGS: VM
                a.push((CODE_BASE >> 4) as u32).unwrap(); // CS
                a.push(v86_ip as u32).unwrap();
                a.iretd().unwrap();
            });
            let mut g = guest(engine, Mode::Protected32, &code, &[], 0);
            // V86 code: pushf or popf, then mov bx, 0x600D, then int 0x3F (→ ring 0 stub).
            let mut v86 = vec![op, 0xBB, 0x0D, 0x60, 0xCD, USER_EXIT];
            if op == 0x9D {
                v86.insert(0, 0x6A);
                v86.insert(1, 0x00); // push 0 so POPF has something to pop
            }
            g.write(CODE_BASE + v86_ip, &v86);
            g.write(
                crane86::machine::testkit::IDT_BASE + u64::from(USER_EXIT) * 8 + 5,
                &[0xEE],
            );
            g.run_to_halt();
            let what = format!("{engine} iopl {iopl} opcode {op:#04x}");
            if iopl == 3 {
                assert_eq!(exception(&g), Some(USER_EXIT), "{what}: allowed");
                assert_eq!(g.cpu.gpr[RBX] & 0xFFFF, 0x600D, "{what}");
            } else {
                assert_eq!(exception(&g), Some(13), "{what}: #GP expected");
                assert_eq!(
                    g.cpu.gpr[RBX] & 0xFFFF,
                    0,
                    "{what}: stopped at the instruction"
                );
                let error_code = g.read_u64(stack_phys(&g)) & 0xFFFF_FFFF;
                assert_eq!(error_code, 0, "{what}: #GP(0)");
            }
        }
    }
}

/// With a 16-bit stack segment (SS.B = 0) in protected mode, PUSH wraps SP from 0 to 0xFFFE
/// inside the segment and leaves ESP[31:16] alone; POP wraps back.
#[test]
fn sixteen_bit_stack_wraps_in_protected_mode() {
    for engine in EngineKind::emulators() {
        for mode in [Mode::Protected32, Mode::Paged32, Mode::Pae32] {
            let g = run(engine, mode, &[], 0, |a| {
                a.mov(ax, u32::from(SEL_DATA16)).unwrap();
                a.mov(ss, ax).unwrap();
                a.mov(esp, 0x1234_0000u32).unwrap();
                a.push(0xA5A5_5A5Au32).unwrap();
                a.mov(ebx, esp).unwrap();
                a.pop(ecx).unwrap();
                a.mov(edx, esp).unwrap();
                a.mov(ax, u32::from(crane86::machine::testkit::SEL_DATA))
                    .unwrap();
                a.mov(ss, ax).unwrap();
                a.mov(esp, STACK_TOP as u32).unwrap();
            });
            assert_no_exception(&g, "16-bit stack");
            let what = format!("{engine} {mode:?}");
            assert_eq!(
                g.cpu.gpr[RBX], 0x1234_FFFC,
                "{what}: SP wrapped, ESP high kept"
            );
            assert_eq!(
                read_u32(&g, 0xFFFC),
                0xA5A5_5A5A,
                "{what}: written at SS.base + 0xFFFC"
            );
            assert_eq!(g.cpu.gpr[RCX], 0xA5A5_5A5A, "{what}: popped");
            assert_eq!(g.cpu.gpr[RDX], 0x1234_0000, "{what}: SP wrapped back");
        }
    }
}

/// PUSH [rSP] reads its operand with the rSP before the push.
#[test]
fn push_rsp_based_memory_uses_the_old_rsp() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let g = run(engine, mode, &[], 0, |a| match mode.bitness() {
                16 => {
                    a.push(0x1234).unwrap();
                    a.push(word_ptr(esp)).unwrap();
                    a.pop(ax).unwrap();
                    a.pop(bx).unwrap();
                }
                32 => {
                    a.push(0x1234_5678u32).unwrap();
                    a.push(dword_ptr(esp)).unwrap();
                    a.pop(eax).unwrap();
                    a.pop(ebx).unwrap();
                }
                _ => {
                    a.push(0x1234_5678).unwrap();
                    a.push(qword_ptr(rsp)).unwrap();
                    a.pop(rax).unwrap();
                    a.pop(rbx).unwrap();
                }
            });
            assert_no_exception(&g, "push [rsp]");
            let want = if mode == Mode::Real {
                0x1234
            } else {
                0x1234_5678
            };
            assert_eq!(g.cpu.gpr[RAX] & 0xFFFF_FFFF, want, "{engine} {mode:?}");
            assert_eq!(g.cpu.gpr[RBX] & 0xFFFF_FFFF, want, "{engine} {mode:?}");
        }
    }
}

/// With a 16-bit stack, a 4-byte push at SP = 2 would straddle offset 0xFFFF: #SS(0) and SP
/// unchanged. Run at CPL 3 (with a DPL-3 16-bit data segment) so the fault switches to the
/// ring-0 stack instead of faulting again on the broken one.
#[test]
fn sixteen_bit_stack_push_straddling_the_limit_is_ss_fault() {
    use crane86::machine::testkit::{segment_descriptor, GDT_BASE};
    const USER_DATA16: u16 = 0x58 | 3;
    for engine in EngineKind::emulators() {
        for mode in [Mode::Protected32, Mode::Paged32, Mode::Pae32] {
            let mut g = user_guest(engine, mode, &[], 0, |a| {
                a.mov(ax, u32::from(USER_DATA16)).unwrap();
                a.mov(ss, ax).unwrap();
                a.mov(esp, 0x0000_0002u32).unwrap();
                a.mov(ebx, 0xC0DEu32).unwrap();
                a.push(0x1111_2222u32).unwrap();
                a.mov(ebx, 0xBADu32).unwrap();
            });
            let d16 = segment_descriptor(0, 0xFFFF, 0xF3, 0x0); // DPL 3, B = 0
            g.write(GDT_BASE + 0x58, &d16.to_le_bytes());
            g.cpu.gdtr.limit = 0x5F;
            g.run_to_halt();
            let what = format!("{engine} {mode:?}");
            assert_eq!(exception(&g), Some(12), "{what}: #SS");
            assert_eq!(
                g.read_u64(stack_phys(&g)) & 0xFFFF_FFFF,
                0,
                "{what}: #SS(0)"
            );
            assert_eq!(g.cpu.gpr[RBX], 0xC0DE, "{what}: faulted at the push");
            // Frame: error code, EIP, CS, EFLAGS, ESP, SS.
            let frame_esp = g.read_u64(stack_phys(&g) + 16) & 0xFFFF_FFFF;
            assert_eq!(frame_esp, 2, "{what}: SP unchanged");
        }
    }
}

/// POPF at CPL 0 may change IOPL and IF; a 16-bit POPF leaves EFLAGS[31:16] (AC, ID) alone.
#[test]
fn popf_at_cpl0_and_16_bit_popf() {
    const AC: u64 = 1 << 18;
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let g = run(engine, mode, &[], AC, |a| {
                if mode.bitness() == 16 {
                    a.push(((3 << 12) | IF | CF) as i32).unwrap();
                    a.popf().unwrap();
                } else {
                    a.db(&[0x66, 0x68]).unwrap(); // push imm16 (16-bit operand)
                    a.db(&(((3 << 12) | IF | CF) as u16).to_le_bytes()).unwrap();
                    a.db(&[0x66, 0x9D]).unwrap(); // popf (16-bit)
                }
                a.cli().unwrap();
            });
            assert_no_exception(&g, "popf cpl 0");
            let what = format!("{engine} {mode:?}");
            let f = g.cpu.rflags();
            assert_eq!((f >> 12) & 3, 3, "{what}: IOPL set at CPL 0");
            assert_eq!(f & CF, CF, "{what}: CF");
            assert_eq!(f & AC, AC, "{what}: 16-bit POPF keeps AC");
        }
    }
}

/// POP into memory that faults (#PF on a read-only page) leaves rSP as it was.
#[test]
fn pop_into_faulting_memory_restores_rsp() {
    for engine in EngineKind::emulators() {
        for mode in PAGED_MODES {
            let ro = DATA_BASE + 0x3000;
            let code = assemble(mode, |a| {
                a.push(0x1234).unwrap();
                if mode == Mode::Long64 {
                    a.pop(qword_ptr(ro)).unwrap();
                } else {
                    a.pop(dword_ptr(ro)).unwrap();
                }
            });
            let mut g = guest(engine, mode, &code, &[], 0);
            g.write(pte_addr(mode, ro), &(ro as u32 | 0x5).to_le_bytes());
            g.run_to_halt();
            let what = format!("{engine} {mode:?}");
            assert_eq!(exception(&g), Some(14), "{what}: #PF");
            let interrupted_rsp = if mode == Mode::Long64 {
                g.read_u64(stack_phys(&g) + 32) // frame: error, RIP, CS, RFLAGS, RSP, SS
            } else {
                g.cpu.gpr[RSP] + 16 // same-privilege frame: error, EIP, CS, EFLAGS
            };
            let w = if mode == Mode::Long64 { 8 } else { 4 };
            assert_eq!(interrupted_rsp, STACK_TOP - w, "{what}: rSP restored");
        }
    }
}

/// ENTER's nesting level is taken modulo 32, and a 16-bit ENTER in 32-bit code pushes 16-bit
/// frame pointers and sets BP only.
#[test]
fn enter_level_is_mod_32_and_16_bit_enter() {
    for engine in EngineKind::emulators() {
        for mode in [Mode::Protected32, Mode::Paged32, Mode::Pae32] {
            // enter 8, 33 (== level 1); then 66 C8 04 00 01: enterw 4, 1.
            let code = assemble(mode, |a| {
                a.mov(ebp, 0xAAAA_0000u32 | 0x1000).unwrap();
                a.db(&[0xC8, 0x08, 0x00, 33]).unwrap();
                a.mov(esi, esp).unwrap();
                a.mov(edi, ebp).unwrap();
                a.db(&[0x66, 0xC8, 0x04, 0x00, 0x01]).unwrap();
            });
            let mut g = guest(engine, mode, &code, &[], 0);
            g.run_to_halt();
            let what = format!("{engine} {mode:?}");
            assert_no_exception(&g, &what);
            let t = STACK_TOP;
            // Level 1 (32-bit): push EBP, push frame; EBP = frame; ESP -= 8.
            assert_eq!(read_u32(&g, t - 4), 0xAAAA_1000, "{what}: old EBP");
            assert_eq!(
                read_u32(&g, t - 8),
                (t - 4) as u32,
                "{what}: frame pointer copy"
            );
            assert_eq!(g.cpu.gpr[RDI], t - 4, "{what}: EBP = frame");
            assert_eq!(g.cpu.gpr[RSI], t - 8 - 8, "{what}: ESP after level-1 enter");
            // 16-bit level 1: push BP (2), push frame (2); BP = frame (low 16), ESP -= 4.
            let sp16 = t - 16;
            assert_eq!(
                read_u16(&g, sp16 - 2),
                (t - 4) as u16,
                "{what}: 16-bit old BP"
            );
            assert_eq!(
                read_u16(&g, sp16 - 4),
                (sp16 - 2) as u16,
                "{what}: 16-bit frame copy"
            );
            assert_eq!(
                g.cpu.gpr[5],
                (t - 4) & 0xFFFF_0000 | (sp16 - 2) & 0xFFFF,
                "{what}: only BP set"
            );
            assert_eq!(
                g.cpu.gpr[RSP],
                sp16 - 4 - 4,
                "{what}: ESP after 16-bit enter"
            );
        }
    }
}

/// LEAVE in 64-bit code, as the JIT runs it inline (RBP's slot through the TLB) and through
/// the interpreter (a slot across a page boundary, and one on a page not yet in the TLB),
/// with other registers live around it: the registers and what was read, as the
/// interpreter leaves them.
#[test]
fn leave_matches_the_interpreter_on_every_path() {
    let cross = DATA_BASE + 0x1FFC; // the 8-byte slot spans two pages
    let fresh = DATA_BASE + 0x5008;
    let mut results = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            a.mov(rdi, DATA_BASE + 0x800).unwrap(); // results
            let mut out = 0;
            for (k, slot) in [DATA_BASE + 0x100, cross, fresh, DATA_BASE + 0x208]
                .into_iter()
                .enumerate()
            {
                a.mov(rax, 0x0102_0304_0506_0700u64 + k as u64).unwrap();
                a.mov(rbp, slot).unwrap();
                a.mov(qword_ptr(rbp), rax).unwrap();
                a.mov(rbx, 0x55u64 + k as u64).unwrap();
                a.leave().unwrap();
                a.add(rbx, rbp).unwrap();
                for r in [rsp, rbp, rbx] {
                    a.mov(qword_ptr(rdi + out), r).unwrap();
                    out += 8;
                }
            }
            // A stack to halt on.
            a.mov(rsp, STACK_TOP).unwrap();
        });
        let (g, stored) = run_long64(engine, &code, DATA_BASE + 0x800, 12);
        results.push((stored, g.cpu.gpr));
    }
    // The page-crossing LEAVE under the interpreter: RSP past the slot, RBP from it.
    assert_eq!(
        (results[0].0[3], results[0].0[4]),
        (cross + 8, 0x0102_0304_0506_0701),
        "LEAVE with RBP across a page boundary, interpreter"
    );
    assert_eq!(results[0], results[1], "interpreter against jit");
}
