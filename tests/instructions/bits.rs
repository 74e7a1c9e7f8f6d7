//! BT/BTS/BTR/BTC (register, immediate, memory with signed register offsets), BSF/BSR (zero
//! source keeps the destination), TZCNT/LZCNT/POPCNT, and the BMI1 group, whose CPUID bits
//! must be advertised.

use crate::common::*;

#[test]
fn bit_test_register_and_immediate() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let g = run(engine, mode, &[(RAX, 0x10)], 0, |a| {
                a.bt(eax, 4).unwrap(); // CF = 1
                a.setc(bl).unwrap();
                a.bts(eax, 0).unwrap(); // 0x11, CF = 0
                a.setc(bh).unwrap();
                a.btr(eax, 36).unwrap(); // offset masked to 4: 0x01, CF = 1
                a.setc(cl).unwrap();
                a.mov(edx, 33u32).unwrap();
                a.btc(eax, edx).unwrap(); // register offset masked to 1: 0x03, CF = 0
                a.setc(ch).unwrap();
                a.mov(si, 0x8000u32).unwrap();
                a.mov(di, 31u32).unwrap();
                a.bts(si, di).unwrap(); // 16-bit: offset 31 & 15 = 15, CF = 1
            });
            assert_no_exception(&g, "bt");
            let s = &g.cpu;
            assert_eq!(s.gpr[RAX] & 0xFFFF_FFFF, 0x03, "{engine} {mode:?}");
            assert_eq!(s.gpr[RBX] & 0xFFFF, 0x0001, "{mode:?} bt/bts CF");
            assert_eq!(s.gpr[RCX] & 0xFFFF, 0x0001, "{mode:?} btr/btc CF");
            assert_eq!(s.rflags() & CF, CF, "{mode:?} bts si CF");
        }
    }
}

#[test]
fn bit_test_memory_uses_signed_offsets_beyond_the_operand() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let base = data(mode) + 0x100;
            let g = run(engine, mode, &[], 0, |a| {
                if mode == Mode::Long64 {
                    a.mov(rbx, base).unwrap();
                    a.mov(dword_ptr(rbx + 32), 1u32).unwrap();
                    a.mov(rcx, -1i64).unwrap();
                    a.bts(dword_ptr(rbx + 4), ecx).unwrap(); // bit 31 of the dword at base
                    a.mov(cx, -9i32).unwrap();
                    a.bts(word_ptr(rbx + 4), cx).unwrap(); // bit 7 of the word at base + 2
                    a.mov(rcx, 0x100u64).unwrap();
                    a.bt(dword_ptr(rbx), ecx).unwrap(); // bit 0 of the dword at base + 32
                    a.setc(dl).unwrap();
                    a.mov(rcx, -97i64).unwrap();
                    a.btc(qword_ptr(rbx + 16), rcx).unwrap(); // bit 31 of the qword at base
                    a.setc(dh).unwrap();
                } else {
                    a.mov(ebx, base as u32).unwrap();
                    a.mov(dword_ptr(ebx + 32), 1u32).unwrap();
                    a.mov(ecx, -1i32).unwrap();
                    a.bts(dword_ptr(ebx + 4), ecx).unwrap();
                    a.mov(cx, -9i32).unwrap();
                    a.bts(word_ptr(ebx + 4), cx).unwrap();
                    a.mov(ecx, 0x100u32).unwrap();
                    a.bt(dword_ptr(ebx), ecx).unwrap();
                    a.setc(dl).unwrap();
                    a.mov(dh, 1u32).unwrap();
                }
            });
            assert_no_exception(&g, "bt mem");
            let s = &g.cpu;
            assert_eq!(
                s.gpr[RDX] & 0xFF,
                1,
                "{engine} {mode:?}: bit 256 is bit 0 of base+32"
            );
            assert_eq!((s.gpr[RDX] >> 8) & 0xFF, 1, "{mode:?}: btc saw bit 31 set");
            let expect = if mode == Mode::Long64 {
                0x0080_0000 // BTC cleared bit 31 again
            } else {
                0x8080_0000
            };
            assert_eq!(read_u32(&g, base), expect, "{mode:?} dword at base");
        }
    }
}

#[test]
fn bit_scans_and_counts() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let g = run(engine, mode, &[(RSI, 0x1234_5678)], 0, |a| {
                a.mov(ecx, 0xF0u32).unwrap();
                a.bsf(eax, ecx).unwrap(); // 4
                a.bsr(edx, ecx).unwrap(); // 7
                a.shl(edx, 8).unwrap();
                a.or(eax, edx).unwrap();
                a.xor(ecx, ecx).unwrap();
                a.bsf(esi, ecx).unwrap(); // ZF = 1, ESI unchanged
                save_flags(a, 2);
                a.tzcnt(edi, ecx).unwrap(); // 32, CF = 1
                a.mov(cx, 1u32).unwrap();
                a.lzcnt(bx, cx).unwrap(); // 15
                a.mov(ecx, 0x00FF_00FFu32).unwrap();
                a.popcnt(ecx, ecx).unwrap(); // 16
            });
            assert_no_exception(&g, "bsf/bsr");
            let s = &g.cpu;
            assert_eq!(
                s.gpr[RAX] & 0xFFFF_FFFF,
                0x0704,
                "{engine} {mode:?} bsf/bsr"
            );
            assert_eq!(
                s.gpr[RSI], 0x1234_5678,
                "{mode:?} bsf of 0 keeps the destination"
            );
            assert_eq!(s.gpr[5] & ZF, ZF, "{mode:?} bsf of 0 sets ZF");
            assert_eq!(s.gpr[RDI] & 0xFFFF_FFFF, 32, "{mode:?} tzcnt 0");
            assert_eq!(s.gpr[RBX] & 0xFFFF, 15, "{mode:?} lzcnt");
            assert_eq!(s.gpr[RCX] & 0xFFFF_FFFF, 16, "{mode:?} popcnt");
            assert_eq!(s.rflags() & (ZF | CF), 0, "{mode:?} popcnt flags");
        }
    }
}

#[test]
fn bmi1_outside_real_mode_and_ud_in_real_mode() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let g = run(engine, mode, &[], 0, |a| {
                a.mov(ebx, 0xF0F0u32).unwrap();
                a.mov(ecx, 0xFFFFu32).unwrap();
                a.andn(eax, ebx, ecx).unwrap(); // 0x0F0F
                a.mov(edx, 0x0804u32).unwrap(); // start 4, length 8
                a.bextr(esi, ecx, edx).unwrap(); // 0xFF
                a.mov(ecx, 0x68u32).unwrap();
                a.blsi(edi, ecx).unwrap(); // 0x08
                a.blsr(ebp, ecx).unwrap(); // 0x60
                a.blsmsk(ebx, ecx).unwrap(); // 0x0F
            });
            if mode == Mode::Real {
                assert_eq!(exception(&g), Some(6), "{engine}: VEX is #UD in real mode");
                continue;
            }
            assert_no_exception(&g, "bmi1");
            let s = &g.cpu;
            assert_eq!(s.gpr[RAX] & 0xFFFF_FFFF, 0x0F0F, "{engine} {mode:?} andn");
            assert_eq!(s.gpr[RSI] & 0xFFFF_FFFF, 0xFF, "{mode:?} bextr");
            assert_eq!(s.gpr[RDI] & 0xFFFF_FFFF, 0x08, "{mode:?} blsi");
            assert_eq!(s.gpr[5] & 0xFFFF_FFFF, 0x60, "{mode:?} blsr");
            assert_eq!(s.gpr[RBX] & 0xFFFF_FFFF, 0x0F, "{mode:?} blsmsk");
        }
    }
}

#[test]
fn cpuid_advertises_the_bit_instructions() {
    for engine in EngineKind::emulators() {
        let g = run(engine, Mode::Protected32, &[], 0, |a| {
            a.mov(eax, 1u32).unwrap();
            a.cpuid().unwrap();
            a.mov(esi, ecx).unwrap(); // POPCNT = bit 23
            a.mov(eax, 0x8000_0001u32).unwrap();
            a.cpuid().unwrap();
            a.mov(edi, ecx).unwrap(); // ABM (LZCNT) = bit 5
            a.mov(eax, 7u32).unwrap();
            a.xor(ecx, ecx).unwrap();
            a.cpuid().unwrap(); // EBX: BMI1 = bit 3
        });
        let s = &g.cpu;
        assert_ne!(s.gpr[RSI] & (1 << 23), 0, "{engine}: POPCNT advertised");
        assert_ne!(s.gpr[RDI] & (1 << 5), 0, "{engine}: ABM advertised");
        assert_ne!(s.gpr[RBX] & (1 << 3), 0, "{engine}: BMI1 advertised");
    }
}

/// TZCNT and LZCNT of registers, 16/32/64 bits, of zero, one bit at either end and mixed
/// values (the JIT counts them inline when the model has BMI1/ABM): the counts, what a
/// 16-bit destination keeps, and the flags through SETcc and PUSHF, as the interpreter
/// leaves them.
#[test]
fn zero_counts_match_the_interpreter() {
    let values = [
        0u64,
        1,
        0x8000,
        0x8000_0000,
        0x8000_0000_0000_0000,
        0x0001_0000,
        0x00F0_0F00_0000_0000,
        0xFFFF_FFFF_FFFF_FFFF,
    ];
    let mut results = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            a.mov(rdi, DATA_BASE).unwrap();
            let mut out = 0;
            for v in values {
                for form in 0..6 {
                    a.mov(rcx, v).unwrap();
                    a.mov(rdx, 0x1111_2222_3333_4444u64).unwrap();
                    match form {
                        0 => a.tzcnt(rdx, rcx).unwrap(),
                        1 => a.tzcnt(edx, ecx).unwrap(),
                        2 => a.tzcnt(dx, cx).unwrap(),
                        3 => a.lzcnt(rdx, rcx).unwrap(),
                        4 => a.lzcnt(edx, ecx).unwrap(),
                        _ => a.lzcnt(dx, cx).unwrap(),
                    }
                    a.setb(r8b).unwrap();
                    a.sete(r9b).unwrap();
                    a.mov(qword_ptr(rdi + out), rdx).unwrap();
                    a.mov(byte_ptr(rdi + out + 8), r8b).unwrap();
                    a.mov(byte_ptr(rdi + out + 9), r9b).unwrap();
                    a.pushfq().unwrap();
                    a.pop(qword_ptr(rdi + out + 16)).unwrap();
                    out += 24;
                }
            }
        });
        let (_, stored) = run_long64(engine, &code, DATA_BASE, values.len() as u64 * 6 * 3);
        results.push(stored);
    }
    // The interpreter's TZCNT r16 of 0x8000 (second value, third form): 15, the upper bits
    // kept.
    assert_eq!(results[0][(2 * 6 + 2) * 3], 0x1111_2222_3333_000F);
    let first = first_difference(&results[0], &results[1]);
    assert_eq!(first, None, "first differing result quadword");
}
