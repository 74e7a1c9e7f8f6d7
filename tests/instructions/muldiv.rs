//! MUL, IMUL (all three forms), DIV, IDIV: results, CF/OF, and #DE for a zero divisor and for
//! quotients that do not fit, with the faulting instruction's state left untouched.

use crate::common::*;

#[test]
fn multiply_in_every_mode() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let g = run(engine, mode, &[], 0, |a| {
                a.mov(al, 200u32).unwrap();
                a.mov(bl, 3u32).unwrap();
                a.mul(bl).unwrap(); // AX = 600, CF = OF = 1
                save_flags(a, 0);
                a.mov(cx, 0xFFFFu32).unwrap();
                a.mov(dx, 0xFFFFu32).unwrap();
                a.mov(bp, ax).unwrap();
                a.mov(ax, 0xFFFFu32).unwrap();
                a.mul(cx).unwrap(); // DX:AX = 0xFFFE0001
                a.mov(cx, ax).unwrap();
                a.mov(ebx, 0xFFFF_FFFDu32).unwrap(); // -3
                a.mov(eax, 5u32).unwrap();
                a.imul(ebx).unwrap(); // EDX:EAX = -15, CF = OF = 0
                save_flags(a, 1);
            });
            assert_no_exception(&g, "mul");
            let s = &g.cpu;
            assert_eq!(s.gpr[5] & 0xFFFF, 600, "{engine} {mode:?} mul r8");
            assert_eq!(s.gpr[RSI] & (CF | OF), CF | OF, "{mode:?} mul r8 flags");
            assert_eq!(s.gpr[RCX] & 0xFFFF, 0x0001, "{mode:?} mul r16 low");
            assert_eq!(
                s.gpr[RAX] & 0xFFFF_FFFF,
                0xFFFF_FFF1,
                "{mode:?} imul r32 low"
            );
            assert_eq!(
                s.gpr[RDX] & 0xFFFF_FFFF,
                0xFFFF_FFFF,
                "{mode:?} imul r32 high"
            );
            assert_eq!(s.gpr[RDI] & (CF | OF), 0, "{mode:?} imul r32 flags");
        }
    }
}

#[test]
fn imul_two_and_three_operand_forms() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let g = run(engine, mode, &[], 0, |a| {
                a.mov(eax, 0x10000u32).unwrap();
                a.imul_2(eax, eax).unwrap(); // truncated to 0: CF = OF = 1
                save_flags(a, 0);
                a.mov(ebx, 7u32).unwrap();
                a.imul_3(ecx, ebx, -2).unwrap(); // -14, no overflow
                save_flags(a, 1);
                a.mov(dx, 0x4000u32).unwrap();
                a.imul_3(dx, dx, 2).unwrap(); // 0x8000 overflows a signed 16-bit result
                save_flags(a, 2);
            });
            assert_no_exception(&g, "imul");
            let s = &g.cpu;
            assert_eq!(s.gpr[RAX] & 0xFFFF_FFFF, 0, "{engine} {mode:?} imul r,r");
            assert_eq!(s.gpr[RSI] & (CF | OF), CF | OF, "{mode:?}");
            assert_eq!(s.gpr[RCX] & 0xFFFF_FFFF, (-14i32) as u32 as u64, "{mode:?}");
            assert_eq!(s.gpr[RDI] & (CF | OF), 0, "{mode:?}");
            assert_eq!(s.gpr[RDX] & 0xFFFF, 0x8000, "{mode:?}");
            assert_eq!(s.gpr[5] & (CF | OF), CF | OF, "{mode:?}");
        }
    }
}

#[test]
fn divide_in_every_mode() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let g = run(engine, mode, &[], 0, |a| {
                a.mov(ax, 100u32).unwrap();
                a.mov(bl, 7u32).unwrap();
                a.div(bl).unwrap(); // AL = 14, AH = 2
                a.mov(si, ax).unwrap();
                a.mov(ax, 0xFFF9u32).unwrap(); // -7
                a.cwd().unwrap();
                a.mov(bx, 2u32).unwrap();
                a.idiv(bx).unwrap(); // AX = -3, DX = -1 (truncation toward zero)
                a.mov(di, ax).unwrap();
                a.mov(bp, dx).unwrap();
                a.mov(edx, 1u32).unwrap();
                a.xor(eax, eax).unwrap();
                a.mov(ecx, 3u32).unwrap();
                a.div(ecx).unwrap(); // 2^32 / 3
            });
            assert_no_exception(&g, "div");
            let s = &g.cpu;
            assert_eq!(s.gpr[RSI] & 0xFFFF, 0x020E, "{engine} {mode:?} div r8");
            assert_eq!(s.gpr[RDI] & 0xFFFF, 0xFFFD, "{mode:?} idiv quotient");
            assert_eq!(s.gpr[5] & 0xFFFF, 0xFFFF, "{mode:?} idiv remainder");
            assert_eq!(s.gpr[RAX] & 0xFFFF_FFFF, 0x5555_5555, "{mode:?} div r32");
            assert_eq!(s.gpr[RDX] & 0xFFFF_FFFF, 1, "{mode:?} div r32 remainder");
        }
    }
}

/// Each snippet must raise #DE at its last instruction (`DIV`/`IDIV`), with the registers the
/// divide would write still holding their old values.
#[test]
fn divide_errors_raise_de_with_precise_state() {
    type Snippet = fn(&mut CodeAssembler);
    let cases: [(&str, Snippet); 4] = [
        ("div by zero", |a| {
            a.mov(ax, 0x1234u32).unwrap();
            a.xor(bl, bl).unwrap();
            a.div(bl).unwrap();
        }),
        ("div r8 quotient overflow", |a| {
            a.mov(ax, 0x1234u32).unwrap();
            a.mov(bl, 2u32).unwrap();
            a.div(bl).unwrap();
        }),
        ("idiv r8 -32768 / -1", |a| {
            a.mov(ax, 0x8000u32).unwrap();
            a.mov(bl, 0xFFu32).unwrap();
            a.idiv(bl).unwrap();
        }),
        ("idiv r32 overflow", |a| {
            a.mov(eax, 0x1234u32).unwrap();
            a.mov(edx, 0x4000_0000u32).unwrap();
            a.mov(ebx, 2u32).unwrap();
            a.idiv(ebx).unwrap();
        }),
    ];
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            for (name, snippet) in cases {
                let code = assemble(mode, snippet);
                // The DIV/IDIV is the instruction before the final HLT (2 bytes + prefix).
                let hlt_at = code.len() as u64 - 1;
                let mut g = guest(engine, mode, &code, &[], 0);
                g.run_to_halt();
                assert_eq!(
                    exception(&g),
                    Some(0),
                    "{engine} {mode:?} {name}: expected #DE"
                );
                let fault = faulting_offset(&g, false);
                assert!(
                    fault < hlt_at && hlt_at - fault <= 3,
                    "{mode:?} {name}: #DE frame points at {fault:#x}, not at the divide"
                );
                assert_eq!(
                    g.cpu.gpr[RAX] & 0xFFFF,
                    if name.contains("-32768") {
                        0x8000
                    } else {
                        0x1234
                    },
                    "{mode:?} {name}: AX changed"
                );
            }
        }
    }
}

#[test]
fn sixty_four_bit_multiply_and_divide() {
    for engine in EngineKind::emulators() {
        let g = run(engine, Mode::Long64, &[], 0, |a| {
            a.mov(rax, 0xFFFF_FFFF_FFFF_FFFFu64).unwrap();
            a.mov(rbx, 0xFFFF_FFFF_FFFF_FFFFu64).unwrap();
            a.mul(rbx).unwrap(); // RDX:RAX = 2^128 - 2^65 + 1
            a.mov(r8, rax).unwrap();
            a.mov(r9, rdx).unwrap();
            a.mov(rax, 0x8000_0000_0000_0000u64).unwrap();
            a.cqo().unwrap();
            a.mov(rcx, 2u64).unwrap();
            a.idiv(rcx).unwrap(); // -2^62
            a.mov(r10, rax).unwrap();
            a.mov(rax, 3u64).unwrap();
            a.imul_3(r11, rax, -5).unwrap();
        });
        assert_no_exception(&g, "64-bit mul/div");
        let s = &g.cpu;
        assert_eq!(s.gpr[8], 1, "{engine} mul low");
        assert_eq!(s.gpr[9], 0xFFFF_FFFF_FFFF_FFFE, "{engine} mul high");
        assert_eq!(s.gpr[10], (-(1i64 << 62)) as u64, "{engine} idiv");
        assert_eq!(s.gpr[11], (-15i64) as u64, "{engine} imul3");

        // IDIV of i64::MIN by -1 overflows.
        let g = run(engine, Mode::Long64, &[], 0, |a| {
            a.mov(rax, 0x8000_0000_0000_0000u64).unwrap();
            a.cqo().unwrap();
            a.mov(rcx, 0xFFFF_FFFF_FFFF_FFFFu64).unwrap();
            a.idiv(rcx).unwrap();
        });
        assert_eq!(
            exception(&g),
            Some(0),
            "{engine}: i64::MIN / -1 must raise #DE"
        );
        assert_eq!(g.cpu.gpr[RAX], 0x8000_0000_0000_0000, "{engine}: RAX kept");
    }
}

/// 64-bit DIV of RDX:RAX with RDX not zero (below the divisor, so the quotient fits): random
/// dividends and divisors of every magnitude, and the edge cases of the long division the
/// JIT uses (a divisor with its top bit set or only its lowest, RDX = divisor - 1, digit
/// estimates that need corrections), from a register and from memory. Quotients and
/// remainders must be the 128-bit arithmetic's, under every engine.
#[test]
fn wide_unsigned_divide_matches_128_bit_arithmetic() {
    let mut r = Rng(0x000D_1FF1_C017_u64);
    let mut cases: Vec<(u64, u64, u64)> = vec![
        (1, 0, 2),
        (1, u64::MAX, 2),
        (u64::MAX - 1, u64::MAX, u64::MAX),
        (0x7FFF_FFFF, 0xFFFF_FFFF_0000_0000, 0x8000_0000),
        (0x8000_0000_0000_0000, 0, 0x8000_0000_0000_0001),
        (0xFFFF_FFFE, 0xFFFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF),
        (0x1_0000_0000, 1, 0x1_0000_0001),
        (0x7FFF_FFFF_FFFF_FFFF, 0x1234, 0x8000_0000_0000_0000),
        (0x0000_8000_0000_0000, 0, 0x0000_8000_0000_0001),
        (0xFFFF_FFFF_0000_0000, 0xFFFF_FFFF, 0xFFFF_FFFF_0000_0001),
    ];
    for _ in 0..150 {
        // A divisor of random magnitude, a high half below it.
        let d = r.next() >> r.below(64);
        let d = d.max(2);
        let high = r.next() % d;
        cases.push((high.max(1), r.next(), d));
    }
    let out = DATA_BASE + 0x1000;
    let code = assemble(Mode::Long64, |a| {
        a.mov(rdi, out).unwrap();
        for (k, &(high, low, d)) in cases.iter().enumerate() {
            a.mov(rdx, high).unwrap();
            a.mov(rax, low).unwrap();
            a.mov(rcx, d).unwrap();
            if k % 2 == 0 {
                a.div(rcx).unwrap();
            } else {
                a.mov(qword_ptr(rdi + 16 * k as i32 + 8), rcx).unwrap();
                a.div(qword_ptr(rdi + 16 * k as i32 + 8)).unwrap();
            }
            a.mov(qword_ptr(rdi + 16 * k as i32), rax).unwrap();
            a.mov(qword_ptr(rdi + 16 * k as i32 + 8), rdx).unwrap();
        }
    });
    for engine in EngineKind::emulators() {
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.run_to_halt();
        assert_no_exception(&g, &format!("{engine}"));
        for (k, &(high, low, d)) in cases.iter().enumerate() {
            let n = (u128::from(high) << 64) | u128::from(low);
            let want = ((n / u128::from(d)) as u64, (n % u128::from(d)) as u64);
            let got = (
                g.read_u64(out + 16 * k as u64),
                g.read_u64(out + 16 * k as u64 + 8),
            );
            assert_eq!(got, want, "{engine}: {high:#x}:{low:#x} / {d:#x}");
        }
    }
}
