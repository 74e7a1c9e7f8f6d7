//! Exception delivery: #PF error codes and CR2 (not present, write, user, NX, reserved bit),
//! #GP from segment limits, #SS, #DE, #UD, #NP, #BR, #NM, #DB single-step, IST stack
//! switching, and double faults; in every mode where each exists.

use super::*;
use crane86::machine::testkit::{pte_addr, IST1_TOP, STACK_TOP};
use crane86_x86::exception::pf_err;

/// What the test handler recorded.
#[derive(Debug)]
pub(crate) struct Fault {
    pub(crate) vector: u64,
    pub(crate) code: u64,
    pub(crate) cr2: u64,
    pub(crate) ip: u64,
    pub(crate) expected_ip: u64,
    /// rSP inside the handler after the error code was popped.
    pub(crate) handler_sp: u64,
}

/// Run `body` (which sets `fault_at` right before the instruction expected to fault) in
/// `mode` with a handler on `vector` that records the error code, CR2 and return IP.
pub(crate) fn expect_fault(
    engine: EngineKind,
    mode: Mode,
    vector: u8,
    has_code: bool,
    setup: impl FnOnce(&mut TestGuest),
    body: impl FnOnce(&mut CodeAssembler, &mut CodeLabel) -> Result<(), IcedError>,
) -> Fault {
    let (mut g, labels) = guest(engine, mode, |a| {
        let mut fault_at = a.create_label();
        let mut handler = a.create_label();
        body(a, &mut fault_at)?;
        a.mov(esi, 0xBAD)?;
        a.hlt()?;
        a.set_label(&mut handler)?;
        match mode.bitness() {
            16 => {
                a.pop(dx)?;
                a.mov(cx, u32::from(vector))?;
            }
            32 => {
                if has_code {
                    a.pop(eax)?;
                }
                if mode != Mode::Protected32 {
                    a.mov(ebx, cr2)?;
                }
                a.mov(edx, dword_ptr(esp))?;
                a.mov(ecx, u32::from(vector))?;
                a.mov(edi, esp)?;
            }
            _ => {
                if has_code {
                    a.pop(rax)?;
                }
                a.mov(rbx, cr2)?;
                a.mov(rdx, qword_ptr(rsp))?;
                a.mov(ecx, u32::from(vector))?;
                a.mov(rdi, rsp)?;
            }
        }
        a.hlt()?;
        Ok(vec![fault_at, handler])
    });
    g.cpu.gpr = [0; 16];
    g.cpu.gpr[4] = if mode == Mode::Real {
        0xFFF0
    } else {
        STACK_TOP
    };
    g.set_gate(vector, labels[1], 0);
    setup(&mut g);
    g.run_to_halt();
    assert_ne!(g.cpu.gpr[6], 0xBAD, "{engine} {mode:?}: no fault");
    let origin = code_origin(mode);
    let ip_base = if mode == Mode::Real { CODE_BASE } else { 0 };
    Fault {
        vector: g.cpu.gpr[1],
        code: g.cpu.gpr[0],
        cr2: g.cpu.gpr[3],
        ip: g.cpu.gpr[2] + ip_base
            - if mode == Mode::Real {
                0
            } else {
                origin - CODE_BASE
            },
        expected_ip: labels[0],
        handler_sp: g.cpu.gpr[7],
    }
}

pub(crate) fn check(f: &Fault, vector: u8, code: Option<u64>, tag: &str) {
    assert_eq!(f.vector, u64::from(vector), "{tag}: vector ({f:x?})");
    assert_eq!(f.ip, f.expected_ip, "{tag}: faulting IP ({f:x?})");
    if let Some(c) = code {
        assert_eq!(f.code, c, "{tag}: error code ({f:x?})");
    }
}

const PF_LIN: u64 = 0x4_1234;

#[test]
fn page_fault_error_codes_and_cr2() {
    for engine in EngineKind::emulators() {
        for mode in PAGED {
            // (name, PTE flags for the page, access, expected error code, needs PAE/long)
            let nx = 1u64 << 63;
            let cases: [(&str, u64, u8, u32, bool); 5] = [
                ("not present", 0, b'r', 0, false),
                (
                    "write to read-only (WP)",
                    0x5,
                    b'w',
                    pf_err::PRESENT | pf_err::WRITE,
                    false,
                ),
                ("not-present write", 0, b'w', pf_err::WRITE, false),
                (
                    "NX fetch",
                    0x7 | nx,
                    b'x',
                    pf_err::PRESENT | pf_err::FETCH,
                    true,
                ),
                (
                    "reserved bit",
                    0x7 | (1 << 51),
                    b'r',
                    pf_err::PRESENT | pf_err::RSVD,
                    true,
                ),
            ];
            for (name, pte_flags, access, code, wide) in cases {
                if wide && mode == Mode::Paged32 {
                    continue;
                }
                let page = PF_LIN & !0xFFF;
                let f = expect_fault(
                    engine,
                    mode,
                    14,
                    true,
                    |g| {
                        let pte = pte_addr(mode, page);
                        let v = if pte_flags == 0 { 0 } else { page | pte_flags };
                        if mode == Mode::Paged32 {
                            g.mem.write_u32(pte, v as u32);
                        } else {
                            g.mem.write_u64(pte, v);
                        }
                        g.write(page, &[0xF4]);
                    },
                    |a, at| {
                        a.mov(esi, PF_LIN as u32)?;
                        a.set_label(at)?;
                        match (access, mode) {
                            (b'r', Mode::Long64) => a.mov(rax, qword_ptr(rsi))?,
                            (b'r', _) => a.mov(eax, dword_ptr(esi))?,
                            (b'w', Mode::Long64) => a.mov(qword_ptr(rsi), rax)?,
                            (b'w', _) => a.mov(dword_ptr(esi), eax)?,
                            (_, Mode::Long64) => {
                                a.mov(esi, page as u32)?;
                                a.call(rsi)?
                            }
                            _ => {
                                a.mov(esi, page as u32)?;
                                a.call(esi)?
                            }
                        }
                        Ok(())
                    },
                );
                let tag = format!("{engine} {mode:?} {name}");
                assert_eq!(f.vector, 14, "{tag}");
                assert_eq!(f.code, u64::from(code), "{tag}: error code");
                let expected_cr2 = if access == b'x' { page } else { PF_LIN };
                assert_eq!(f.cr2, expected_cr2, "{tag}: CR2");
                if access != b'x' {
                    assert_eq!(f.ip, f.expected_ip, "{tag}: faulting IP");
                } else {
                    assert_eq!(f.ip, page, "{tag}: the fetch fault reports the target");
                }
            }
        }
    }
}

#[test]
fn page_fault_from_user_mode_sets_the_user_bit() {
    for engine in EngineKind::emulators() {
        for mode in PAGED {
            let page = PF_LIN & !0xFFF;
            let f = expect_fault(
                engine,
                mode,
                14,
                true,
                |g| {
                    let pte = pte_addr(mode, page);
                    // Present, writable, supervisor-only.
                    if mode == Mode::Paged32 {
                        g.mem.write_u32(pte, (page | 3) as u32);
                    } else {
                        g.mem.write_u64(pte, page | 3);
                    }
                },
                |a, at| {
                    let mut user = a.create_label();
                    // IRET to ring 3 (same flat layout; user segments from the test GDT).
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
                        // EIP of `user`: the address after this CALL plus the 6 bytes of
                        // pop/add/push/iretd that follow it.
                        let mut here = a.create_label();
                        a.call(here)?;
                        a.set_label(&mut here)?;
                        a.pop(eax)?;
                        a.db(&[0x83, 0xC0, 0x06])?; // add eax, 6 (imm8 form)
                        a.push(eax)?;
                        a.iretd()?;
                    }
                    a.set_label(&mut user)?;
                    // DS (DPL 0) was nulled by the IRET to ring 3.
                    a.mov(ax, 0x3B)?;
                    a.mov(ds, ax)?;
                    a.mov(esi, PF_LIN as u32)?;
                    a.set_label(at)?;
                    if mode == Mode::Long64 {
                        a.mov(eax, dword_ptr(rsi))?;
                    } else {
                        a.mov(eax, dword_ptr(esi))?;
                    }
                    Ok(())
                },
            );
            let tag = format!("{engine} {mode:?}");
            check(
                &f,
                14,
                Some(u64::from(pf_err::PRESENT | pf_err::USER)),
                &tag,
            );
            assert_eq!(f.cr2, PF_LIN, "{tag}");
        }
    }
}

#[test]
fn divide_error_and_invalid_opcode_in_every_mode() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let f = expect_fault(
                engine,
                mode,
                0,
                false,
                |_| {},
                |a, at| {
                    a.xor(ecx, ecx)?;
                    a.set_label(at)?;
                    a.div(ecx)
                },
            );
            check(&f, 0, None, &format!("{engine} {mode:?} #DE"));
            let f = expect_fault(
                engine,
                mode,
                6,
                false,
                |_| {},
                |a, at| {
                    a.set_label(at)?;
                    a.ud2()
                },
            );
            check(&f, 6, None, &format!("{engine} {mode:?} #UD"));
        }
    }
}

#[test]
fn segment_limit_violations_raise_gp_and_ss() {
    for engine in EngineKind::emulators() {
        // Real mode: a word at offset 0xFFFF runs past the 64 KiB limit.
        let f = expect_fault(
            engine,
            Mode::Real,
            13,
            false,
            |_| {},
            |a, at| {
                a.set_label(at)?;
                a.mov(ax, word_ptr(0xFFFF))
            },
        );
        check(&f, 13, None, &format!("{engine} real #GP"));
        // Protected mode: DS with a 256-byte limit.
        let f = expect_fault(
            engine,
            Mode::Protected32,
            13,
            true,
            |g| set_gdt_entry(g, 11, seg_desc(0, 0xFF, 0x93, 0x4)),
            |a, at| {
                a.mov(ax, 0x58)?;
                a.mov(ds, ax)?;
                a.mov(eax, dword_ptr(0xFC))?;
                a.set_label(at)?;
                a.mov(eax, dword_ptr(0xFD))
            },
        );
        check(&f, 13, Some(0), &format!("{engine} protected #GP"));
        // A stack-segment reference beyond SS's limit is #SS(0); the frame still fits.
        let f = expect_fault(
            engine,
            Mode::Protected32,
            12,
            true,
            |g| set_gdt_entry(g, 11, seg_desc(0x6_0000, 0xFFFF, 0x93, 0x4)),
            |a, at| {
                a.mov(ax, 0x58)?;
                a.mov(ss, ax)?;
                a.mov(esp, 0x8000)?;
                a.xor(ebp, ebp)?;
                a.set_label(at)?;
                a.mov(eax, dword_ptr(ebp + 0x2_0000))
            },
        );
        check(&f, 12, Some(0), &format!("{engine} #SS"));
        // Long mode: a non-canonical address is #GP(0).
        let f = expect_fault(
            engine,
            Mode::Long64,
            13,
            true,
            |_| {},
            |a, at| {
                a.mov(rsi, 0x8000_0000_0000u64)?;
                a.set_label(at)?;
                a.mov(rax, qword_ptr(rsi))
            },
        );
        check(&f, 13, Some(0), &format!("{engine} non-canonical #GP"));
    }
}

#[test]
fn segment_not_present_raises_np_with_selector() {
    for engine in EngineKind::emulators() {
        for mode in [Mode::Protected32, Mode::Long64] {
            let f = expect_fault(
                engine,
                mode,
                11,
                true,
                |g| set_gdt_entry(g, 11, seg_desc(0, 0xFFFFF, 0x13, 0xC)),
                |a, at| {
                    a.mov(ax, 0x58)?;
                    a.set_label(at)?;
                    a.mov(ds, ax)
                },
            );
            check(&f, 11, Some(0x58), &format!("{engine} {mode:?} #NP"));
        }
    }
}

#[test]
fn bound_raises_br() {
    for engine in EngineKind::emulators() {
        for mode in [Mode::Real, Mode::Protected32] {
            let bounds = crane86::machine::testkit::DATA_BASE;
            let f = expect_fault(
                engine,
                mode,
                5,
                false,
                |g| {
                    let at = if mode == Mode::Real { 0x800 } else { bounds };
                    g.write(at, &[0, 0, 0, 0, 3, 0, 0, 0]);
                },
                |a, at| {
                    a.mov(eax, 2)?;
                    if mode == Mode::Real {
                        a.bound(eax, qword_ptr(0x800))?;
                    } else {
                        a.bound(eax, qword_ptr(bounds))?;
                    }
                    a.mov(eax, 4)?;
                    a.set_label(at)?;
                    if mode == Mode::Real {
                        a.bound(eax, qword_ptr(0x800))
                    } else {
                        a.bound(eax, qword_ptr(bounds))
                    }
                },
            );
            check(&f, 5, None, &format!("{engine} {mode:?} #BR"));
        }
    }
}

#[test]
fn x87_with_cr0_ts_raises_nm() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let f = expect_fault(
                engine,
                mode,
                7,
                false,
                |g| g.cpu.cr0 |= 1 << 3,
                |a, at| {
                    a.set_label(at)?;
                    a.fld1()
                },
            );
            check(&f, 7, None, &format!("{engine} {mode:?} #NM"));
            let f = expect_fault(
                engine,
                mode,
                7,
                false,
                |g| g.cpu.cr0 |= (1 << 3) | (1 << 1),
                |a, at| {
                    a.set_label(at)?;
                    a.wait()
                },
            );
            check(&f, 7, None, &format!("{engine} {mode:?} WAIT #NM"));
        }
    }
}

#[test]
fn single_step_traps_after_one_instruction() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let f = expect_fault(
                engine,
                mode,
                1,
                false,
                |_| {},
                |a, at| {
                    match mode.bitness() {
                        16 => {
                            a.pushf()?;
                            a.mov(bp, sp)?;
                            a.or(word_ptr(bp), 0x100)?;
                            a.popf()?;
                        }
                        32 => {
                            a.pushfd()?;
                            a.or(dword_ptr(esp), 0x100)?;
                            a.popfd()?;
                        }
                        _ => {
                            a.pushfq()?;
                            a.or(qword_ptr(rsp), 0x100)?;
                            a.popfq()?;
                        }
                    }
                    a.mov(esi, 1)?;
                    a.set_label(at)?;
                    a.mov(esi, 2)
                },
            );
            // The trap is taken after `mov esi, 1`: the return IP is the next instruction.
            check(&f, 1, None, &format!("{engine} {mode:?} #DB"));
        }
    }
}

#[test]
fn ist_switches_to_the_interrupt_stack() {
    for engine in EngineKind::emulators() {
        let (mut g, labels) = guest(engine, Mode::Long64, |a| {
            let mut handler = a.create_label();
            a.ud2()?;
            a.set_label(&mut handler)?;
            a.mov(rbx, rsp)?;
            a.hlt()?;
            Ok(vec![handler])
        });
        g.set_gate(6, labels[0], 1);
        g.run_to_halt();
        assert_eq!(g.cpu.gpr[3], IST1_TOP - 40, "{engine}: frame on IST1");
        assert_eq!(
            g.read_u64(IST1_TOP - 16),
            STACK_TOP,
            "{engine}: old RSP saved"
        );
    }
}

#[test]
fn fault_while_delivering_becomes_a_double_fault() {
    // #GP with an empty IDT slot 13: delivering it raises #GP again (contributory twice) →
    // #DF with error code 0.
    for engine in EngineKind::emulators() {
        for mode in [Mode::Protected32, Mode::Long64] {
            let f = expect_fault(
                engine,
                mode,
                8,
                true,
                |_| {},
                |a, at| {
                    a.mov(ax, 0x400)?;
                    a.set_label(at)?;
                    a.mov(ds, ax)
                },
            );
            check(&f, 8, Some(0), &format!("{engine} {mode:?} #DF"));
            let expected_sp = if mode == Mode::Long64 {
                (STACK_TOP & !0xF) - 40
            } else {
                STACK_TOP - 12
            };
            assert_eq!(
                f.handler_sp, expected_sp,
                "{engine} {mode:?}: one frame only"
            );
        }
    }
}

#[test]
fn page_fault_on_the_fault_stack_double_faults_onto_ist() {
    // The stack is unmapped: delivering the #PF faults again (#PF + #PF = #DF); the #DF gate
    // uses IST1, so the double fault is delivered.
    for engine in EngineKind::emulators() {
        let stack_page = 0x4_1000u64;
        let (mut g, labels) = guest(engine, Mode::Long64, |a| {
            let mut df = a.create_label();
            let mut pf = a.create_label();
            a.mov(rsp, stack_page + 0x800)?;
            a.mov(rax, qword_ptr(rsp))?;
            a.hlt()?;
            a.set_label(&mut df)?;
            a.pop(rax)?;
            a.mov(rbx, rsp)?;
            a.mov(rcx, cr2)?;
            a.hlt()?;
            a.set_label(&mut pf)?;
            a.mov(esi, 0xBAD)?;
            a.hlt()?;
            Ok(vec![df, pf])
        });
        g.set_gate(8, labels[0], 1);
        g.set_gate(14, labels[1], 0);
        g.mem.write_u64(pte_addr(Mode::Long64, stack_page), 0);
        g.run_to_halt();
        assert_ne!(g.cpu.gpr[6], 0xBAD, "{engine}: the #PF handler never ran");
        assert_eq!(g.cpu.gpr[0], 0, "{engine}: #DF error code");
        assert_eq!(g.cpu.gpr[3], IST1_TOP - 40, "{engine}: #DF on IST1");
        assert_eq!(
            g.cpu.gpr[1] & !0xFFF,
            stack_page,
            "{engine}: CR2 names the stack"
        );
    }
}

#[test]
fn not_present_idt_gate_raises_np_with_idt_and_ext_bits() {
    // #UD through a not-present gate: #NP(vector * 8 + IDT bit + EXT bit) = #NP(0x33).
    for engine in EngineKind::emulators() {
        for mode in [Mode::Protected32, Mode::Long64] {
            let f = expect_fault(
                engine,
                mode,
                11,
                true,
                |g| {
                    if mode == Mode::Long64 {
                        set_gate64(g, 6, 0x28, CODE_BASE, 0x0E, 0);
                    } else {
                        set_gate32(g, 6, 0x08, CODE_BASE, 0x0E);
                    }
                },
                |a, at| {
                    a.set_label(at)?;
                    a.ud2()
                },
            );
            check(&f, 11, Some(0x33), &format!("{engine} {mode:?}"));
        }
    }
}

#[test]
fn breakpoint_and_overflow_are_traps() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let f = expect_fault(
                engine,
                mode,
                3,
                false,
                |_| {},
                |a, at| {
                    a.int3()?;
                    a.set_label(at)?;
                    a.nop()
                },
            );
            check(&f, 3, None, &format!("{engine} {mode:?} #BP"));
            if mode == Mode::Long64 {
                continue; // INTO does not exist in 64-bit mode
            }
            let f = expect_fault(
                engine,
                mode,
                4,
                false,
                |_| {},
                |a, at| {
                    a.mov(al, 0x7F)?;
                    a.into()?; // OF clear: no trap
                    a.add(al, 1)?;
                    a.into()?;
                    a.set_label(at)?;
                    a.nop()
                },
            );
            check(&f, 4, None, &format!("{engine} {mode:?} #OF"));
        }
    }
}

#[test]
fn single_step_does_not_trap_into_a_software_interrupt() {
    // With TF set, INT n clears TF on entry to its handler and no #DB is taken before the
    // handler runs (SDM Vol. 3 17.3.1.4); the trap comes after the first instruction that
    // runs with TF set again, i.e. after the one following the handler's IRET.
    for engine in EngineKind::emulators() {
        for mode in [Mode::Protected32, Mode::Long64] {
            let (mut g, labels) = guest(engine, mode, |a| {
                let mut int_handler = a.create_label();
                let mut db_handler = a.create_label();
                if mode == Mode::Long64 {
                    a.pushfq()?;
                    a.or(qword_ptr(rsp), 0x100)?;
                    a.popfq()?;
                } else {
                    a.pushfd()?;
                    a.or(dword_ptr(esp), 0x100)?;
                    a.popfd()?;
                }
                a.int(0x30)?;
                a.mov(ecx, 5)?;
                a.mov(ecx, 6)?;
                a.hlt()?;
                a.set_label(&mut int_handler)?;
                a.add(ebx, 1)?;
                if mode == Mode::Long64 {
                    a.iretq()?;
                } else {
                    a.iretd()?;
                }
                a.set_label(&mut db_handler)?;
                a.mov(edx, ebx)?;
                a.hlt()?;
                Ok(vec![int_handler, db_handler])
            });
            g.set_gate(0x30, labels[0], 0);
            g.set_gate(1, labels[1], 0);
            g.run_to_halt();
            let tag = format!("{engine} {mode:?}");
            assert_eq!(g.cpu.gpr[2], 1, "{tag}: #DB came after the INT handler ran");
            assert_eq!(g.cpu.gpr[1], 5, "{tag}: #DB came after `mov ecx, 5`");
        }
    }
}
