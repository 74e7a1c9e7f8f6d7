//! Shifts and rotates: results and defined flags for 8/16/32-bit operands in every mode and
//! 64-bit operands in long mode, count masking, count 0, RCL/RCR through CF, SHLD/SHRD.

use crate::common::*;

const ALL_FLAGS: u64 = CF | PF | AF | ZF | SF | OF;

#[test]
fn shifts_and_rotates_in_every_mode() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let g = run(engine, mode, &[], 0, |a| {
                // SHL AL by 1: 0x81 -> 0x02, CF=1, OF = MSB ^ CF = 1.
                a.mov(al, 0x81u32).unwrap();
                a.shl(al, 1).unwrap();
                a.mov(bl, al).unwrap();
                save_flags(a, 0);
                // SAR AX by 15: 0x8000 -> 0xFFFF, CF = bit 14 = 0.
                a.mov(cx, 0x8000u32).unwrap();
                a.sar(cx, 15).unwrap();
                save_flags(a, 1);
                // ROR EAX by 1: 0x80000001 -> 0xC0000000, CF = 1, OF = 0.
                a.mov(edx, 0x8000_0001u32).unwrap();
                a.ror(edx, 1).unwrap();
                save_flags(a, 2);
            });
            assert_no_exception(&g, "shift");
            let s = &g.cpu;
            assert_eq!(s.gpr[RBX] & 0xFF, 0x02, "{engine} {mode:?} shl al");
            assert_eq!(
                s.gpr[RSI] & (CF | OF | ZF | SF),
                CF | OF,
                "{mode:?} shl flags"
            );
            assert_eq!(s.gpr[RCX] & 0xFFFF, 0xFFFF, "{mode:?} sar");
            assert_eq!(s.gpr[RDI] & (CF | ZF | SF), SF, "{mode:?} sar flags");
            assert_eq!(s.gpr[RDX] & 0xFFFF_FFFF, 0xC000_0000, "{mode:?} ror");
            assert_eq!(s.gpr[5] & (CF | OF), CF, "{mode:?} ror flags");
        }
    }
}

#[test]
fn rotate_through_carry() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let g = run(engine, mode, &[], 0, |a| {
                a.stc().unwrap();
                a.mov(al, 0x80u32).unwrap();
                a.rcl(al, 1).unwrap(); // AL = 0x01, CF = 1, OF = 0 ^ 1 = 1
                save_flags(a, 0);
                a.clc().unwrap();
                a.mov(bl, 1u32).unwrap();
                a.rcr(bl, 1).unwrap(); // BL = 0, CF = 1, OF = 0
                save_flags(a, 1);
                // 9-bit rotate by 9 of an 8-bit operand is the identity, flags untouched.
                a.clc().unwrap();
                a.mov(cl, 0x5Au32).unwrap();
                a.rcl(cl, 9).unwrap();
                save_flags(a, 2);
                // 16-bit RCR by 17 (mod 17 = 0) likewise.
                a.stc().unwrap();
                a.mov(dx, 0x1234u32).unwrap();
                a.rcr(dx, 17).unwrap();
            });
            assert_no_exception(&g, "rcl/rcr");
            let s = &g.cpu;
            assert_eq!(s.gpr[RAX] & 0xFF, 0x01, "{engine} {mode:?} rcl");
            assert_eq!(s.gpr[RSI] & (CF | OF), CF | OF, "{mode:?} rcl flags");
            assert_eq!(s.gpr[RBX] & 0xFF, 0, "{mode:?} rcr");
            assert_eq!(s.gpr[RDI] & (CF | OF), CF, "{mode:?} rcr flags");
            assert_eq!(s.gpr[RCX] & 0xFF, 0x5A, "{mode:?} rcl by 9");
            assert_eq!(s.gpr[5] & CF, 0, "{mode:?} rcl by 9 keeps CF");
            assert_eq!(s.gpr[RDX] & 0xFFFF, 0x1234, "{mode:?} rcr by 17");
            assert_eq!(s.rflags() & CF, CF, "{mode:?} rcr by 17 keeps CF");
        }
    }
}

#[test]
fn count_zero_and_count_masking_leave_flags() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            // Start with every arithmetic flag set; counts that mask to zero change nothing.
            let g = run(engine, mode, &[(RAX, 0x1234_5678)], ALL_FLAGS, |a| {
                a.mov(cl, 0x20u32).unwrap(); // masked to 0 for 8/16/32-bit operands
                a.shl(eax, cl).unwrap();
                a.shr(ax, cl).unwrap();
                a.rol(al, cl).unwrap();
                a.sar(eax, 32).unwrap();
            });
            assert_no_exception(&g, "count 0");
            assert_eq!(
                g.cpu.gpr[RAX] & 0xFFFF_FFFF,
                0x1234_5678,
                "{engine} {mode:?}"
            );
            assert_eq!(
                flags(&g, ALL_FLAGS),
                ALL_FLAGS,
                "{engine} {mode:?} flags kept"
            );
        }
    }
}

#[test]
fn double_precision_shifts() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let g = run(engine, mode, &[], 0, |a| {
                a.mov(ax, 0x1234u32).unwrap();
                a.mov(dx, 0xABCDu32).unwrap();
                a.shld(ax, dx, 4).unwrap(); // 0x234A, CF = bit 12 of 0x1234 = 1
                save_flags(a, 0);
                a.mov(ebx, 0x1234_5678u32).unwrap();
                a.mov(ecx, 0x9ABC_DEF0u32).unwrap();
                a.shrd(ebx, ecx, 8).unwrap(); // 0xF0123456, CF = bit 7 of 0x78 = 0
                save_flags(a, 1);
            });
            assert_no_exception(&g, "shld/shrd");
            let s = &g.cpu;
            assert_eq!(s.gpr[RAX] & 0xFFFF, 0x234A, "{engine} {mode:?} shld");
            assert_eq!(s.gpr[RSI] & (CF | ZF), CF, "{mode:?} shld flags");
            assert_eq!(s.gpr[RBX] & 0xFFFF_FFFF, 0xF012_3456, "{mode:?} shrd");
            assert_eq!(s.gpr[RDI] & (CF | ZF | SF), SF, "{mode:?} shrd flags");
        }
    }
}

#[test]
fn sixty_four_bit_shifts_use_six_count_bits() {
    for engine in EngineKind::emulators() {
        let g = run(engine, Mode::Long64, &[], 0, |a| {
            a.mov(rax, 1u64).unwrap();
            a.shl(rax, 63).unwrap(); // 1 << 63
            a.mov(rbx, 0x8000_0000_0000_0000u64).unwrap();
            a.mov(cl, 0x7Fu32).unwrap(); // masked to 63
            a.sar(rbx, cl).unwrap(); // all ones, CF = bit 62 = 0
            a.mov(rdx, 0x0123_4567_89AB_CDEFu64).unwrap();
            a.rol(rdx, 32).unwrap();
            a.mov(rsi, 0x1122_3344_5566_7788u64).unwrap();
            a.mov(rdi, 0xFFFF_FFFF_FFFF_FFFFu64).unwrap();
            a.shld(rsi, rdi, 40).unwrap();
            // A 32-bit shift by 0 still zero-extends its register.
            a.mov(r8, 0xFFFF_FFFF_0000_0001u64).unwrap();
            a.xor(ecx, ecx).unwrap();
            a.shl(r8d, cl).unwrap();
        });
        assert_no_exception(&g, "64-bit shifts");
        let s = &g.cpu;
        assert_eq!(s.gpr[RAX], 1 << 63, "{engine} shl");
        assert_eq!(s.gpr[RBX], u64::MAX, "{engine} sar by 63");
        assert_eq!(s.gpr[RDX], 0x89AB_CDEF_0123_4567, "{engine} rol 32");
        assert_eq!(s.gpr[RSI], 0x6677_88FF_FFFF_FFFF, "{engine} shld 40");
        assert_eq!(s.gpr[8], 1, "{engine} shl r32 by 0 zero-extends");
    }
}
