//! Far transfers: IRET to an outer privilege (data-segment nulling), call gates with a
//! privilege change and parameter copy (32-bit) and 64-bit call gates, RETF to an outer
//! privilege, far JMP/CALL/RETF in real mode, and LDS/LSS.

use super::*;
use crane86::machine::testkit::{
    DATA_BASE, RING0_STACK_TOP, SEL_CODE32, SEL_CODE64, SEL_USER_CODE32, SEL_USER_CODE64,
    SEL_USER_DATA,
};

const GATE_SEL: u16 = 0x58;
const USER_STACK: u32 = 0x7_0000;

/// 32-bit: IRETD to ring 3 (DS/ES are DPL 0 and become null), push two parameters, CALL FAR
/// through a DPL-3 call gate with a parameter count of 2 to a ring-0 handler that records
/// its stack, RETF 8 back to ring 3, then INT 0x80 (DPL-3 gate) ends the test.
#[test]
fn call_gate_32_with_privilege_change_and_parameter_copy() {
    for engine in EngineKind::emulators() {
        let user_at = CODE_BASE + 0x1000;
        let handler_at = CODE_BASE + 0x2000;
        let done_at = CODE_BASE + 0x3000;
        let user_code = build(32, user_at, |a| {
            let mut ret = a.create_label();
            a.mov(ebp, ds)?; // null after the privilege drop
            a.mov(ax, SEL_USER_DATA as u32)?;
            a.mov(ds, ax)?;
            a.push(0x1111u32)?;
            a.push(0x2222u32)?;
            a.call_far(GATE_SEL | 3, 0)?;
            a.set_label(&mut ret)?;
            a.mov(esi, esp)?;
            a.mov(edi, 0x600D)?;
            a.int(0x80)?;
            Ok(vec![ret])
        });
        let handler_code = build(32, handler_at, |a| {
            a.mov(ebx, DATA_BASE as u32)?;
            for k in 0..6u32 {
                a.mov(eax, dword_ptr(esp + 4 * k))?;
                a.mov(dword_ptr(ebx + 4 * k), eax)?;
            }
            a.mov(dword_ptr(ebx + 24), esp)?;
            a.mov(eax, cs)?;
            a.mov(dword_ptr(ebx + 28), eax)?;
            a.retf_1(8u32)?;
            Ok(vec![])
        });
        let done_code = build(32, done_at, |a| {
            a.hlt()?;
            Ok(vec![])
        });
        let start = build(32, CODE_BASE, |a| {
            a.push(SEL_USER_DATA as u32)?;
            a.push(USER_STACK)?;
            a.push(0x2u32)?;
            a.push(SEL_USER_CODE32 as u32)?;
            a.push(user_at as u32)?;
            a.iretd()?;
            Ok(vec![])
        });
        let mut g = TestGuest::new(engine, Mode::Protected32, &start.bytes);
        g.write(user_at, &user_code.bytes);
        g.write(handler_at, &handler_code.bytes);
        g.write(done_at, &done_code.bytes);
        // Call gate: 32-bit (type 0xC), DPL 3, 2 parameters, target SEL_CODE32:handler.
        let gate = (handler_at & 0xFFFF)
            | u64::from(SEL_CODE32) << 16
            | 2u64 << 32
            | 0xECu64 << 40
            | ((handler_at >> 16) & 0xFFFF) << 48;
        set_gdt_entry(&mut g, 11, gate);
        set_gate32(&mut g, 0x80, SEL_CODE32, done_at, 0xEE);
        g.run_to_halt();
        let rec = |k: u64| g.read_u64(DATA_BASE + 4 * k) & 0xFFFF_FFFF;
        assert_eq!(rec(0), user_code.labels[0], "{engine}: return EIP");
        assert_eq!(rec(1), u64::from(SEL_USER_CODE32), "{engine}: return CS");
        assert_eq!(rec(2), 0x2222, "{engine}: first parameter copied");
        assert_eq!(rec(3), 0x1111, "{engine}: second parameter copied");
        assert_eq!(rec(4), u64::from(USER_STACK) - 8, "{engine}: caller ESP");
        assert_eq!(rec(5), u64::from(SEL_USER_DATA), "{engine}: caller SS");
        assert_eq!(
            rec(6),
            RING0_STACK_TOP - 24,
            "{engine}: ring-0 stack from the TSS"
        );
        assert_eq!(
            rec(7),
            u64::from(SEL_CODE32),
            "{engine}: CPL 0 in the gate target"
        );
        assert_eq!(
            g.cpu.gpr[5] & 0xFFFF,
            0,
            "{engine}: DS nulled by IRET to ring 3"
        );
        assert_eq!(g.cpu.gpr[7], 0x600D, "{engine}");
        assert_eq!(
            g.cpu.gpr[6],
            u64::from(USER_STACK),
            "{engine}: RETF 8 released the parameters"
        );
    }
}

/// 64-bit: IRETQ to ring 3, CALL FAR through a 64-bit call gate (16-byte descriptor) to
/// ring 0 (SS becomes null, RSP0 from the TSS), RETFQ back to ring 3.
#[test]
fn call_gate_64_and_retf_to_outer_privilege() {
    for engine in EngineKind::emulators() {
        let user_at = CODE_BASE + 0x1000;
        let handler_at = CODE_BASE + 0x2000;
        let done_at = CODE_BASE + 0x3000;
        let start = build(64, CODE_BASE, |a| {
            a.push(SEL_USER_DATA as i32)?;
            a.push(USER_STACK as i32)?;
            a.push(0x2)?;
            a.push(SEL_USER_CODE64 as i32)?;
            a.mov(rax, user_at)?;
            a.push(rax)?;
            a.iretq()?;
            Ok(vec![])
        });
        let user_code = build(64, user_at, |a| {
            let mut ret = a.create_label();
            a.mov(rbx, DATA_BASE + 0x100)?;
            a.mov(dword_ptr(rbx), 0u32)?;
            a.mov(word_ptr(rbx + 4), (GATE_SEL | 3) as u32)?;
            a.call(fword_ptr(rbx))?;
            a.set_label(&mut ret)?;
            a.mov(rsi, rsp)?;
            a.mov(edi, 0x600D)?;
            a.int(0x80)?;
            Ok(vec![ret])
        });
        let handler_code = build(64, handler_at, |a| {
            a.mov(rbx, DATA_BASE)?;
            for k in 0..4u32 {
                a.mov(rax, qword_ptr(rsp + 8 * k))?;
                a.mov(qword_ptr(rbx + 8 * k), rax)?;
            }
            a.mov(qword_ptr(rbx + 32), rsp)?;
            a.mov(eax, ss)?;
            a.mov(qword_ptr(rbx + 40), rax)?;
            a.retf()?; // RETFQ: the 64-bit gate pushed 8-byte slots
            Ok(vec![])
        });
        let mut g = TestGuest::new(engine, Mode::Long64, &start.bytes);
        g.write(user_at, &user_code.bytes);
        g.write(handler_at, &handler_code.bytes);
        g.write(
            done_at,
            &build(64, done_at, |a| {
                a.hlt()?;
                Ok(vec![])
            })
            .bytes,
        );
        let lo = (handler_at & 0xFFFF)
            | u64::from(SEL_CODE64) << 16
            | 0xECu64 << 40
            | ((handler_at >> 16) & 0xFFFF) << 48;
        set_gdt_entry(&mut g, 11, lo);
        set_gdt_entry(&mut g, 12, handler_at >> 32);
        set_gate64(&mut g, 0x80, SEL_CODE64, done_at, 0xEE, 0);
        g.run_to_halt();
        let rec = |k: u64| g.read_u64(DATA_BASE + 8 * k);
        assert_eq!(rec(0), user_code.labels[0], "{engine}: return RIP");
        assert_eq!(rec(1), u64::from(SEL_USER_CODE64), "{engine}: return CS");
        assert_eq!(rec(2), u64::from(USER_STACK), "{engine}: caller RSP");
        assert_eq!(rec(3), u64::from(SEL_USER_DATA), "{engine}: caller SS");
        assert_eq!(rec(4), RING0_STACK_TOP - 32, "{engine}: RSP0 from the TSS");
        assert_eq!(rec(5), 0, "{engine}: SS is null in the inner ring");
        assert_eq!(g.cpu.gpr[7], 0x600D, "{engine}");
        assert_eq!(
            g.cpu.gpr[6],
            u64::from(USER_STACK),
            "{engine}: RETFQ restored RSP"
        );
    }
}

/// Real mode: CALL FAR / RETF and JMP FAR m16:16; LDS and LSS load segment:offset pairs.
#[test]
fn real_mode_far_call_jmp_and_far_pointer_loads() {
    for engine in EngineKind::emulators() {
        let code_seg = (CODE_BASE >> 4) as u16;
        let (mut g, _) = guest(engine, Mode::Real, |a| {
            a.call_far(code_seg, 0x100)?;
            a.mov(word_ptr(0x700), 0x300u32)?;
            a.mov(word_ptr(0x702), u32::from(code_seg))?;
            a.jmp(dword_ptr(0x700))?;
            a.hlt()?;
            Ok(vec![])
        });
        let func = build(16, 0x100, |a| {
            a.mov(bx, 0x77)?;
            a.mov(dx, sp)?;
            a.retf()?;
            Ok(vec![])
        });
        let target = build(16, 0x300, |a| {
            a.mov(word_ptr(0x720), 0x0800u32)?;
            a.mov(word_ptr(0x722), 0x6000u32)?;
            a.lss(sp, dword_ptr(0x720))?;
            a.mov(word_ptr(0x710), 0x1234u32)?;
            a.mov(word_ptr(0x712), 0x0050u32)?;
            a.lds(si, dword_ptr(0x710))?;
            a.hlt()?;
            Ok(vec![])
        });
        g.write(CODE_BASE + 0x100, &func.bytes);
        g.write(CODE_BASE + 0x300, &target.bytes);
        g.run_to_halt();
        assert_eq!(g.cpu.gpr[3] & 0xFFFF, 0x77, "{engine}: far call reached");
        assert_eq!(g.cpu.gpr[2] & 0xFFFF, 0xFFF0 - 4, "{engine}: CS:IP pushed");
        assert_eq!(g.cpu.gpr[6] & 0xFFFF, 0x1234, "{engine}: LDS offset");
        assert_eq!(g.cpu.seg[3].selector, 0x50, "{engine}: LDS segment");
        assert_eq!(g.cpu.seg[3].base, 0x500);
        assert_eq!(g.cpu.seg[2].selector, 0x6000, "{engine}: LSS segment");
        assert_eq!(g.cpu.gpr[4] & 0xFFFF, 0x800, "{engine}: LSS offset");
    }
}

/// Protected-mode far JMP/CALL checks: a null selector is #GP(0), a data segment is
/// #GP(selector), a not-present code segment is #NP(selector).
#[test]
fn far_jmp_faults_carry_the_right_error_codes() {
    for engine in EngineKind::emulators() {
        for (sel, vector, code) in [(0u16, 13u64, 0u64), (0x10, 13, 0x10), (0x58, 11, 0x58)] {
            let (mut g, labels) = guest(engine, Mode::Protected32, |a| {
                let mut handler = a.create_label();
                a.call_far(sel, 0)?;
                a.hlt()?;
                a.set_label(&mut handler)?;
                a.pop(eax)?;
                a.hlt()?;
                Ok(vec![handler])
            });
            set_gdt_entry(&mut g, 11, seg_desc(0, 0xFFFFF, 0x1B, 0xC)); // code, not present
            g.set_gate(vector as u8, labels[0], 0);
            g.run_to_halt();
            assert_eq!(g.cpu.gpr[0], code, "{engine} selector {sel:#x}");
            assert_eq!(g.cpu.gpr[4], crane86::machine::testkit::STACK_TOP - 12);
        }
    }
}

/// Hardware task switch: CALL FAR to a TSS selector, or INT n through an IDT task gate,
/// runs task 2 (its own registers and stack, NT set, back link = old TR); its IRETD returns
/// to task 1 with task 1's registers restored and the busy bits updated.
#[test]
fn task_switch_by_call_and_task_gate_and_back_by_iret() {
    const TSS2: u64 = DATA_BASE + 0x1000;
    const TSS2_SEL: u16 = 0x58;
    const OUT: u32 = DATA_BASE as u32;
    for engine in EngineKind::emulators() {
        for via_gate in [false, true] {
            let task2_at = CODE_BASE + 0x1000;
            let (mut g, labels) = guest(engine, Mode::Protected32, |a| {
                let mut back = a.create_label();
                a.mov(esi, 0x5151)?;
                if via_gate {
                    a.int(0x30)?;
                } else {
                    a.call_far(TSS2_SEL, 0)?;
                }
                a.set_label(&mut back)?;
                a.pushfd()?;
                a.pop(edi)?;
                a.hlt()?;
                Ok(vec![back])
            });
            let task2 = build(32, task2_at, |a| {
                a.mov(dword_ptr(OUT), esi)?;
                a.str(eax)?;
                a.mov(dword_ptr(OUT + 4), eax)?;
                a.pushfd()?;
                a.pop(dword_ptr(OUT + 8))?;
                a.mov(dword_ptr(OUT + 12), esp)?;
                a.mov(esi, 0x2222)?;
                a.iretd()?;
                Ok(vec![])
            });
            g.write(task2_at, &task2.bytes);
            // Task 1's TSS descriptor is busy (as after LTR).
            set_gdt_entry(&mut g, 9, seg_desc(0x3000, 0x2067, 0x8B, 0));
            set_gdt_entry(&mut g, 11, seg_desc(TSS2 as u32, 0x67, 0x89, 0));
            let mut tss = vec![0u8; 0x68];
            let mut put = |off: usize, v: u32| tss[off..off + 4].copy_from_slice(&v.to_le_bytes());
            put(0x20, task2_at as u32); // EIP
            put(0x24, 0x2); // EFLAGS
            put(0x38, 0x6_0000); // ESP
            put(0x4C, u32::from(SEL_CODE32)); // CS
            for off in [0x48, 0x50, 0x54, 0x58, 0x5C] {
                put(off, 0x10); // ES SS DS FS GS
            }
            g.write(TSS2, &tss);
            if via_gate {
                set_gate32(&mut g, 0x30, TSS2_SEL, 0, 0x85);
            }
            g.run_to_halt();
            let tag = format!("{engine} via_gate={via_gate}");
            let out = |k: u64| g.read_u64(DATA_BASE + 4 * k) & 0xFFFF_FFFF;
            assert_eq!(out(0), 0, "{tag}: task 2 starts with its own registers");
            assert_eq!(out(1), u64::from(TSS2_SEL), "{tag}: STR in task 2");
            assert_ne!(out(2) & 0x4000, 0, "{tag}: NT set in the nested task");
            assert_eq!(out(3), 0x6_0000, "{tag}: task 2 stack");
            assert_eq!(g.cpu.gpr[6], 0x5151, "{tag}: task 1 registers restored");
            assert_eq!(g.cpu.gpr[7] & 0x4000, 0, "{tag}: NT clear in task 1");
            assert_eq!(g.cpu.rip, labels[0] + 3, "{tag}: resumed after the switch");
            assert_eq!(g.cpu.tr.selector, 0x48, "{tag}: TR back to task 1");
            let back_link = g.read_u64(TSS2) & 0xFFFF;
            assert_eq!(back_link, 0x48, "{tag}: back link");
            let tss2_access = (g.read_u64(GDT_BASE + 0x58) >> 40) & 0xFF;
            assert_eq!(tss2_access, 0x89, "{tag}: task 2 no longer busy");
            assert_ne!(g.cpu.cr0 & 8, 0, "{tag}: CR0.TS set by the switch");
        }
    }
}

/// A far CALL from ring 3 into a conforming DPL-0 code segment keeps CPL 3 (CS.RPL = 3);
/// into a non-conforming DPL-0 segment it is #GP(selector).
#[test]
fn conforming_code_keeps_the_callers_privilege() {
    for engine in EngineKind::emulators() {
        for conforming in [true, false] {
            let user_at = CODE_BASE + 0x1000;
            let target_at = CODE_BASE + 0x2000;
            let done_at = CODE_BASE + 0x3000;
            let start = build(32, CODE_BASE, |a| {
                a.push(SEL_USER_DATA as u32)?;
                a.push(USER_STACK)?;
                a.push(0x2u32)?;
                a.push(SEL_USER_CODE32 as u32)?;
                a.push(user_at as u32)?;
                a.iretd()?;
                Ok(vec![])
            });
            let user = build(32, user_at, |a| {
                a.call_far(0x58, target_at as u32)?;
                a.hlt()?;
                Ok(vec![])
            });
            let target = build(32, target_at, |a| {
                a.mov(ebx, cs)?;
                a.int(0x80)?;
                Ok(vec![])
            });
            let done = build(32, done_at, |a| {
                a.pop(ecx)?; // EIP (no error code) for int 0x80; the error code for #GP
                a.hlt()?;
                Ok(vec![])
            });
            let mut g = TestGuest::new(engine, Mode::Protected32, &start.bytes);
            g.write(user_at, &user.bytes);
            g.write(target_at, &target.bytes);
            g.write(done_at, &done.bytes);
            let access = if conforming { 0x9F } else { 0x9B };
            set_gdt_entry(&mut g, 11, seg_desc(0, 0xFFFFF, access, 0xC));
            set_gate32(&mut g, 0x80, SEL_CODE32, done_at, 0xEE);
            g.set_gate(13, done_at, 0);
            g.run_to_halt();
            let tag = format!("{engine} conforming={conforming}");
            if conforming {
                assert_eq!(g.cpu.gpr[3], 0x5B, "{tag}: CS.RPL = CPL 3");
            } else {
                assert_eq!(g.cpu.gpr[1], 0x58, "{tag}: #GP(selector)");
            }
        }
    }
}

/// INT n / IRET round trip at the same privilege in every mode (64-bit IRETQ always pops
/// SS:RSP); the handler's flag changes are undone by IRET.
#[test]
fn int_and_iret_round_trip_in_every_mode() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let (mut g, labels) = guest(engine, mode, |a| {
                let mut handler = a.create_label();
                a.mov(eax, 0x10)?;
                a.sti()?;
                a.int(0x40)?;
                a.mov(esi, 0x600D)?;
                a.hlt()?;
                a.set_label(&mut handler)?;
                a.add(eax, 1)?;
                match mode.bitness() {
                    16 => {
                        a.pushf()?;
                        a.pop(dx)?;
                        a.iret()?;
                    }
                    32 => {
                        a.pushfd()?;
                        a.pop(edx)?;
                        a.iretd()?;
                    }
                    _ => {
                        a.pushfq()?;
                        a.pop(rdx)?;
                        a.iretq()?;
                    }
                }
                Ok(vec![handler])
            });
            g.set_gate(0x40, labels[0], 0);
            g.run_to_halt();
            let tag = format!("{engine} {mode:?}");
            assert_eq!(g.cpu.gpr[0], 0x11, "{tag}: handler ran");
            assert_eq!(g.cpu.gpr[6], 0x600D, "{tag}: returned");
            assert_eq!(g.cpu.gpr[2] & 0x200, 0, "{tag}: IF clear in the handler");
            assert_ne!(g.cpu.rflags & 0x200, 0, "{tag}: IF restored by IRET");
            let top = if mode == Mode::Real {
                0xFFF0
            } else {
                crane86::machine::testkit::STACK_TOP
            };
            assert_eq!(g.cpu.gpr[4], top, "{tag}: stack balanced");
        }
    }
}

/// A double fault through an IDT task gate (what 32-bit Linux does): the switch saves the
/// faulting task, and the error code (0) is pushed on the new task's stack.
#[test]
fn double_fault_through_a_task_gate() {
    const TSS2: u64 = DATA_BASE + 0x1000;
    const STACK2: u32 = 0x6_0000;
    for engine in EngineKind::emulators() {
        let task2_at = CODE_BASE + 0x1000;
        let (mut g, labels) = guest(engine, Mode::Protected32, |a| {
            let mut fault = a.create_label();
            a.mov(ax, 0x400)?;
            a.set_label(&mut fault)?;
            a.mov(ds, ax)?; // #GP(0x400); IDT[13] is empty → #DF
            a.hlt()?;
            Ok(vec![fault])
        });
        let task2 = build(32, task2_at, |a| {
            a.pop(eax)?;
            a.mov(ebx, esp)?;
            a.str(ecx)?;
            a.hlt()?;
            Ok(vec![])
        });
        g.write(task2_at, &task2.bytes);
        set_gdt_entry(&mut g, 9, seg_desc(0x3000, 0x2067, 0x8B, 0));
        set_gdt_entry(&mut g, 11, seg_desc(TSS2 as u32, 0x67, 0x89, 0));
        let mut tss = vec![0u8; 0x68];
        let mut put = |off: usize, v: u32| tss[off..off + 4].copy_from_slice(&v.to_le_bytes());
        put(0x20, task2_at as u32);
        put(0x24, 0x2);
        put(0x38, STACK2);
        put(0x4C, u32::from(SEL_CODE32));
        for off in [0x48, 0x50, 0x54, 0x58, 0x5C] {
            put(off, 0x10);
        }
        g.write(TSS2, &tss);
        set_gate32(&mut g, 8, 0x58, 0, 0x85);
        g.run_to_halt();
        assert_eq!(g.cpu.gpr[0], 0, "{engine}: #DF error code on the new stack");
        assert_eq!(g.cpu.gpr[3], u64::from(STACK2), "{engine}: new task stack");
        assert_eq!(g.cpu.gpr[1], 0x58, "{engine}: running in the #DF task");
        let saved_eip = g.read_u64(0x3000 + 0x20) & 0xFFFF_FFFF;
        assert_eq!(
            saved_eip, labels[0],
            "{engine}: faulting EIP saved in the old TSS"
        );
        assert_eq!(g.read_u64(TSS2) & 0xFFFF, 0x48, "{engine}: back link");
    }
}

/// Protected mode: LFS loads a descriptor through the GDT; LSS with a DPL-3 stack segment at
/// CPL 0 is #GP(selector) and leaves the destination register unchanged.
#[test]
fn protected_mode_far_pointer_loads_check_descriptors() {
    for engine in EngineKind::emulators() {
        for mode in [Mode::Protected32, Mode::Long64] {
            let ptr_at = DATA_BASE as u32 + 0x100;
            let (mut g, labels) = guest(engine, mode, |a| {
                let mut handler = a.create_label();
                a.mov(dword_ptr(ptr_at), 0x1234_5678u32)?;
                a.mov(word_ptr(ptr_at + 4), 0x10u32)?;
                a.lfs(esi, fword_ptr(ptr_at))?;
                a.mov(word_ptr(ptr_at + 4), u32::from(SEL_USER_DATA))?;
                a.mov(edi, 0x77)?;
                a.lss(edi, fword_ptr(ptr_at))?;
                a.hlt()?;
                a.set_label(&mut handler)?;
                if mode == Mode::Long64 {
                    a.pop(rax)?;
                } else {
                    a.pop(eax)?;
                }
                a.hlt()?;
                Ok(vec![handler])
            });
            g.set_gate(13, labels[0], 0);
            g.run_to_halt();
            let tag = format!("{engine} {mode:?}");
            assert_eq!(g.cpu.gpr[6], 0x1234_5678, "{tag}: LFS offset");
            assert_eq!(g.cpu.seg[4].selector, 0x10, "{tag}: LFS selector");
            assert_eq!(
                g.cpu.gpr[0],
                u64::from(SEL_USER_DATA & !3),
                "{tag}: #GP(selector)"
            );
            assert_eq!(g.cpu.gpr[7], 0x77, "{tag}: LSS left EDI alone");
        }
    }
}
