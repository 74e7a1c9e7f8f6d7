//! DAA DAS AAA AAS AAM AAD in the modes that have them, AAM 0 → #DE, and #UD in 64-bit mode.

use crate::common::*;

#[test]
fn decimal_adjust_after_add_and_subtract() {
    for engine in EngineKind::emulators() {
        for mode in LEGACY_MODES {
            let g = run(engine, mode, &[], 0, |a| {
                a.mov(al, 0x79u32).unwrap();
                a.add(al, 0x35).unwrap();
                a.daa().unwrap(); // 79 + 35 = 114: AL = 0x14, CF = 1
                a.mov(bl, al).unwrap();
                save_flags(a, 0);
                a.mov(al, 0x35u32).unwrap();
                a.sub(al, 0x47).unwrap();
                a.das().unwrap(); // 35 - 47 = -12: AL = 0x88, CF = 1
                a.mov(bh, al).unwrap();
                save_flags(a, 1);
                a.mov(al, 0x12u32).unwrap();
                a.add(al, 0x34).unwrap();
                a.daa().unwrap(); // 12 + 34 = 46: no adjustment, CF = 0
                a.mov(cl, al).unwrap();
                save_flags(a, 2);
            });
            assert_no_exception(&g, "daa/das");
            let s = &g.cpu;
            assert_eq!(s.gpr[RBX] & 0xFFFF, 0x8814, "{engine} {mode:?}");
            assert_eq!(s.gpr[RSI] & (CF | AF), CF | AF, "{mode:?} daa flags");
            assert_eq!(
                s.gpr[RDI] & (CF | AF | SF),
                CF | AF | SF,
                "{mode:?} das flags"
            );
            assert_eq!(s.gpr[RCX] & 0xFF, 0x46, "{mode:?} daa no-op");
            assert_eq!(s.gpr[5] & (CF | AF | ZF), 0, "{mode:?} daa no-op flags");
        }
    }
}

#[test]
fn ascii_adjust_instructions() {
    for engine in EngineKind::emulators() {
        for mode in LEGACY_MODES {
            let g = run(engine, mode, &[], 0, |a| {
                a.mov(ax, 0x0009u32).unwrap();
                a.add(al, 0x08).unwrap();
                a.aaa().unwrap(); // 9 + 8 = 17: AX = 0x0107, CF = AF = 1
                a.mov(bx, ax).unwrap();
                save_flags(a, 0);
                a.mov(ax, 0x0103u32).unwrap();
                a.sub(al, 0x05).unwrap();
                a.aas().unwrap(); // 13 - 5 = 8: AX = 0x0008, CF = AF = 1
                a.mov(cx, ax).unwrap();
                save_flags(a, 1);
                a.mov(al, 79u32).unwrap();
                a.aam(10).unwrap(); // AH = 7, AL = 9
                a.mov(dx, ax).unwrap();
                a.mov(al, 0x5Au32).unwrap();
                a.aam(16).unwrap(); // AH = 5, AL = 0xA
                a.mov(bp, ax).unwrap();
                a.mov(ax, 0x0709u32).unwrap();
                a.aad(10).unwrap(); // AL = 79, AH = 0
            });
            assert_no_exception(&g, "aaa/aas/aam/aad");
            let s = &g.cpu;
            assert_eq!(s.gpr[RBX] & 0xFFFF, 0x0107, "{engine} {mode:?} aaa");
            assert_eq!(s.gpr[RSI] & (CF | AF), CF | AF, "{mode:?} aaa flags");
            assert_eq!(s.gpr[RCX] & 0xFFFF, 0x0008, "{mode:?} aas");
            assert_eq!(s.gpr[RDI] & (CF | AF), CF | AF, "{mode:?} aas flags");
            assert_eq!(s.gpr[RDX] & 0xFFFF, 0x0709, "{mode:?} aam");
            assert_eq!(s.gpr[5] & 0xFFFF, 0x050A, "{mode:?} aam 16");
            assert_eq!(s.gpr[RAX] & 0xFFFF, 79, "{mode:?} aad");
            assert_eq!(s.rflags() & (ZF | SF), 0, "{mode:?} aad flags");
        }
    }
}

#[test]
fn aam_zero_raises_de() {
    for engine in EngineKind::emulators() {
        for mode in LEGACY_MODES {
            let g = run(engine, mode, &[(RAX, 0x1234)], 0, |a| {
                a.aam(0).unwrap();
            });
            assert_eq!(
                exception(&g),
                Some(0),
                "{engine} {mode:?}: AAM 0 must raise #DE"
            );
            assert_eq!(
                faulting_offset(&g, false),
                0,
                "{mode:?}: #DE points at the AAM"
            );
            assert_eq!(g.cpu.gpr[RAX] & 0xFFFF, 0x1234, "{mode:?}: AX unchanged");
        }
    }
}

#[test]
fn bcd_instructions_are_invalid_in_64_bit_mode() {
    for engine in EngineKind::emulators() {
        // DAA, DAS, AAA, AAS, AAM 10, AAD 10 encodings.
        let encodings: [&[u8]; 6] = [
            &[0x27],
            &[0x2F],
            &[0x37],
            &[0x3F],
            &[0xD4, 0x0A],
            &[0xD5, 0x0A],
        ];
        for bytes in encodings {
            let mut code = bytes.to_vec();
            code.push(0xF4);
            let mut g = guest(engine, Mode::Long64, &code, &[], 0);
            g.run_to_halt();
            assert_eq!(
                exception(&g),
                Some(6),
                "{engine}: {bytes:02x?} must raise #UD"
            );
        }
    }
}
