//! XADD, CMPXCHG (success and failure), CMPXCHG8B, CMPXCHG16B (incl. #GP on a misaligned
//! operand), with and without LOCK.

use crate::common::*;

#[test]
fn xadd_and_cmpxchg_in_every_mode() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let d = data(mode);
            let g = run(engine, mode, &[], 0, |a| {
                a.mov(eax, 5u32).unwrap();
                a.mov(ebx, 7u32).unwrap();
                a.xadd(eax, ebx).unwrap(); // EAX = 12, EBX = 5
                a.mov(esi, eax).unwrap();
                a.mov(edi, ebx).unwrap();
                // Success: EAX == ECX → ECX = EDX, ZF = 1.
                a.mov(eax, 1u32).unwrap();
                a.mov(ecx, 1u32).unwrap();
                a.mov(edx, 9u32).unwrap();
                a.cmpxchg(ecx, edx).unwrap();
                a.setz(bl).unwrap();
                // Failure: EAX != [mem] → EAX = [mem], ZF = 0, memory unchanged.
                a.mov(dword_ptr(d as u32), 0x77u32).unwrap();
                a.mov(eax, 2u32).unwrap();
                a.lock().cmpxchg(dword_ptr(d as u32), edx).unwrap();
                a.setz(bh).unwrap();
                a.mov(ebp, eax).unwrap();
                a.mov(word_ptr(d as u32 + 4), 0x100u32).unwrap();
                a.mov(ax, 0x23u32).unwrap();
                a.lock().xadd(word_ptr(d as u32 + 4), ax).unwrap();
            });
            assert_no_exception(&g, "xadd/cmpxchg");
            let s = &g.cpu;
            assert_eq!(s.gpr[RSI] & 0xFFFF_FFFF, 12, "{engine} {mode:?} xadd sum");
            assert_eq!(s.gpr[RDI] & 0xFFFF_FFFF, 5, "{mode:?} xadd old");
            assert_eq!(s.gpr[RCX] & 0xFFFF_FFFF, 9, "{mode:?} cmpxchg stored");
            assert_eq!(
                s.gpr[RBX] & 0xFFFF,
                0x0001,
                "{mode:?} cmpxchg ZF success/failure"
            );
            assert_eq!(s.gpr[5] & 0xFFFF_FFFF, 0x77, "{mode:?} cmpxchg loaded EAX");
            assert_eq!(
                read_u32(&g, d),
                0x77,
                "{mode:?} memory unchanged on failure"
            );
            assert_eq!(read_u16(&g, d + 4), 0x123, "{mode:?} xadd memory");
            assert_eq!(s.gpr[RAX] & 0xFFFF, 0x100, "{mode:?} xadd old memory value");
        }
    }
}

#[test]
fn cmpxchg8b_success_and_failure() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let d = data(mode) as u32;
            let g = run(engine, mode, &[], 0, |a| {
                a.mov(dword_ptr(d), 0x2222_2222u32).unwrap();
                a.mov(dword_ptr(d + 4), 0x1111_1111u32).unwrap();
                a.mov(eax, 0x2222_2222u32).unwrap();
                a.mov(edx, 0x1111_1111u32).unwrap();
                a.mov(ebx, 0xBBBB_BBBBu32).unwrap();
                a.mov(ecx, 0xCCCC_CCCCu32).unwrap();
                a.lock().cmpxchg8b(qword_ptr(d)).unwrap(); // equal: store ECX:EBX
                a.setz(dl).unwrap();
                a.mov(esi, edx).unwrap();
                a.xor(eax, eax).unwrap();
                a.xor(edx, edx).unwrap();
                a.cmpxchg8b(qword_ptr(d)).unwrap(); // not equal: load EDX:EAX
            });
            assert_no_exception(&g, "cmpxchg8b");
            let s = &g.cpu;
            assert_eq!(s.gpr[RSI] & 0xFF, 1, "{engine} {mode:?} first ZF");
            assert_eq!(g.read_u64(u64::from(d)), 0xCCCC_CCCC_BBBB_BBBB, "{mode:?}");
            assert_eq!(s.gpr[RAX] & 0xFFFF_FFFF, 0xBBBB_BBBB, "{mode:?} loaded low");
            assert_eq!(
                s.gpr[RDX] & 0xFFFF_FFFF,
                0xCCCC_CCCC,
                "{mode:?} loaded high"
            );
            assert_eq!(s.rflags() & ZF, 0, "{mode:?} second ZF");
        }
    }
}

#[test]
fn cmpxchg16b_needs_alignment() {
    for engine in EngineKind::emulators() {
        let d = DATA_BASE;
        let g = run(engine, Mode::Long64, &[], 0, |a| {
            a.mov(rdi, d).unwrap();
            a.mov(rax, 1u64).unwrap();
            a.mov(qword_ptr(rdi), rax).unwrap();
            a.mov(rdx, 2u64).unwrap();
            a.mov(qword_ptr(rdi + 8), rdx).unwrap();
            a.mov(rbx, 0xBBu64).unwrap();
            a.mov(rcx, 0xCCu64).unwrap();
            a.lock().cmpxchg16b(xmmword_ptr(rdi)).unwrap();
        });
        assert_no_exception(&g, "cmpxchg16b");
        assert_eq!(g.read_u64(d), 0xBB, "{engine}: low quadword stored");
        assert_eq!(g.read_u64(d + 8), 0xCC, "{engine}: high quadword stored");
        assert_eq!(g.cpu.rflags() & ZF, ZF, "{engine}: ZF");

        let g = run(engine, Mode::Long64, &[], 0, |a| {
            a.mov(rdi, d + 8).unwrap();
            a.cmpxchg16b(xmmword_ptr(rdi)).unwrap();
        });
        assert_eq!(
            exception(&g),
            Some(13),
            "{engine}: misaligned CMPXCHG16B → #GP"
        );
    }
}

#[test]
fn lock_prefix_needs_a_memory_destination() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            // LOCK ADD EAX, EBX / LOCK XADD EAX, EBX / LOCK CMPXCHG EAX, EBX: #UD.
            let encodings: [&[u8]; 3] = [
                &[0xF0, 0x01, 0xD8],
                &[0xF0, 0x0F, 0xC1, 0xD8],
                &[0xF0, 0x0F, 0xB1, 0xD8],
            ];
            for bytes in encodings {
                let mut code = bytes.to_vec();
                code.push(0xF4);
                let mut g = guest(engine, mode, &code, &[], 0);
                g.run_to_halt();
                assert_eq!(exception(&g), Some(6), "{engine} {mode:?} {bytes:02x?}");
            }
        }
    }
}
