//! SSE/MMX system behaviour the host-CPU oracle (64-bit user mode, exceptions masked) cannot
//! show: the CR0/CR4 availability rules (#UD, #NM), the 16-byte alignment rule (#GP),
//! unmasked SIMD exceptions (#XM, or #UD without CR4.OSXMMEXCPT) leaving the destination
//! unchanged, FXSAVE/FXRSTOR and XSAVE/XRSTOR images, XGETBV/XSETBV, MMX aliasing of the x87
//! registers with EMMS, and the same SSE arithmetic in real, 32-bit protected and 64-bit mode.
//! Every engine.

use crate::common::*;

const MODES: [Mode; 3] = [Mode::Real, Mode::Protected32, Mode::Long64];

const CR0_EM: u64 = 1 << 2;
const CR0_TS: u64 = 1 << 3;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_OSXSAVE: u64 = 1 << 18;

const UD: u8 = 6;
const NM: u8 = 7;
const GP: u8 = 13;
const XM: u8 = 19;

/// A guest running `f` with `cr4_bits` added to the mode's CR4 and `cr0_bits` to its CR0; the
/// bytes `mem` at `data(mode)` and XMM registers `xmm` preset.
fn sse_guest(
    engine: EngineKind,
    mode: Mode,
    cr0_bits: u64,
    cr4_bits: u64,
    mem: &[u8],
    xmm: &[(usize, u128)],
    f: impl FnOnce(&mut CodeAssembler, u32),
) -> TestGuest {
    let d = data(mode) as u32;
    let code = assemble(mode, |a| f(a, d));
    let mut g = guest(engine, mode, &code, &[], 0);
    g.cpu.cr0 |= cr0_bits;
    g.cpu.cr4 |= cr4_bits;
    for &(r, v) in xmm {
        g.cpu.fpu.xmm[r] = v;
    }
    g.write(data(mode), mem);
    g.run_to_halt();
    g
}

fn read_u128(g: &TestGuest, addr: u64) -> u128 {
    u128::from(g.read_u64(addr)) | (u128::from(g.read_u64(addr + 8)) << 64)
}

/// Four singles as the bits of an XMM register.
fn ps(v: [f32; 4]) -> u128 {
    v.iter()
        .enumerate()
        .fold(0, |r, (k, x)| r | (u128::from(x.to_bits()) << (32 * k)))
}

#[test]
fn availability_follows_cr0_and_cr4() {
    for engine in EngineKind::emulators() {
        for mode in MODES {
            let add = |a: &mut CodeAssembler, _| a.addps(xmm0, xmm1).unwrap();
            let g = sse_guest(engine, mode, 0, 0, &[], &[], add);
            assert_eq!(
                exception(&g),
                Some(UD),
                "{engine} {mode:?}: CR4.OSFXSR clear"
            );
            let g = sse_guest(engine, mode, CR0_TS, CR4_OSFXSR, &[], &[], add);
            assert_eq!(exception(&g), Some(NM), "{engine} {mode:?}: CR0.TS");
            let g = sse_guest(engine, mode, CR0_EM, CR4_OSFXSR, &[], &[], add);
            assert_eq!(exception(&g), Some(UD), "{engine} {mode:?}: CR0.EM");
            // MMX follows the x87 rules: CR0.TS gives #NM even without CR4.OSFXSR.
            let g = sse_guest(engine, mode, CR0_TS, 0, &[], &[], |a, _| {
                a.paddb(mm0, mm1).unwrap()
            });
            assert_eq!(
                exception(&g),
                Some(NM),
                "{engine} {mode:?}: MMX with CR0.TS"
            );
            let g = sse_guest(engine, mode, 0, CR4_OSFXSR, &[], &[], add);
            assert_no_exception(&g, "addps with OSFXSR");
        }
    }
}

#[test]
fn sixteen_byte_operands_must_be_aligned_except_the_unaligned_forms() {
    let bytes: Vec<u8> = (0u8..48).collect();
    for engine in EngineKind::emulators() {
        for mode in MODES {
            let g = sse_guest(engine, mode, 0, CR4_OSFXSR, &bytes, &[], |a, d| {
                a.movaps(xmm0, xmmword_ptr(d + 8)).unwrap()
            });
            assert_eq!(exception(&g), Some(GP), "{engine} {mode:?}: movaps [+8]");
            let g = sse_guest(engine, mode, 0, CR4_OSFXSR, &bytes, &[], |a, d| {
                a.movups(xmm0, xmmword_ptr(d + 8)).unwrap();
                a.paddb(xmm0, xmmword_ptr(d + 16)).unwrap();
                a.movdqu(xmmword_ptr(d + 33), xmm0).unwrap();
            });
            assert_no_exception(&g, "movups/movdqu");
            let expect = (0u8..16).fold(0u128, |r, k| r | (u128::from(8 + k + 16 + k) << (8 * k)));
            assert_eq!(g.cpu.fpu.xmm[0], expect, "{engine} {mode:?}: loaded sum");
            assert_eq!(read_u128(&g, data(mode) + 33), expect, "{mode:?}: stored");
        }
    }
}

#[test]
fn unmasked_simd_exception_raises_xm_and_keeps_the_destination() {
    // MXCSR with the divide-by-zero exception unmasked.
    let mxcsr = (0x1F80u32 & !(1 << 9)).to_le_bytes();
    let one_by_zero = [(0, ps([1.0, 2.0, 3.0, 4.0])), (1, ps([0.0, 1.0, 1.0, 1.0]))];
    for engine in EngineKind::emulators() {
        for mode in MODES {
            let div = |a: &mut CodeAssembler, d: u32| {
                a.ldmxcsr(dword_ptr(d)).unwrap();
                a.divps(xmm0, xmm1).unwrap();
            };
            let with_xm = CR4_OSFXSR | CR4_OSXMMEXCPT;
            let g = sse_guest(engine, mode, 0, with_xm, &mxcsr, &one_by_zero, div);
            assert_eq!(exception(&g), Some(XM), "{engine} {mode:?}: unmasked ZE");
            assert_eq!(
                g.cpu.fpu.xmm[0], one_by_zero[0].1,
                "{mode:?}: destination kept"
            );
            assert_ne!(g.cpu.fpu.mxcsr & 4, 0, "{mode:?}: MXCSR.ZE set");
            let g = sse_guest(engine, mode, 0, CR4_OSFXSR, &mxcsr, &one_by_zero, div);
            assert_eq!(exception(&g), Some(UD), "{engine} {mode:?}: no OSXMMEXCPT");
            // Masked (the default MXCSR): infinity in lane 0, the flag, no exception.
            let g = sse_guest(engine, mode, 0, with_xm, &[], &one_by_zero, |a, _| {
                a.divps(xmm0, xmm1).unwrap()
            });
            assert_no_exception(&g, "masked divps");
            assert_eq!(
                g.cpu.fpu.xmm[0],
                ps([f32::INFINITY, 2.0, 3.0, 4.0]),
                "{mode:?}"
            );
            assert_eq!(g.cpu.fpu.mxcsr, 0x1F80 | 4, "{mode:?}: sticky ZE");
        }
    }
}

#[test]
fn the_same_arithmetic_in_every_mode() {
    let x = [
        (1, ps([1.5, -2.0, 1e30, 0.25])),
        (2, ps([2.0, 8.0, 1e10, 3.0])),
    ];
    for engine in EngineKind::emulators() {
        for mode in MODES {
            let g = sse_guest(engine, mode, 0, CR4_OSFXSR, &[], &x, |a, _| {
                a.movaps(xmm0, xmm1).unwrap();
                a.mulps(xmm0, xmm2).unwrap();
                a.sqrtps(xmm3, xmm2).unwrap();
                a.cvttps2dq(xmm4, xmm2).unwrap();
                a.pshufd(xmm5, xmm4, 0x1B).unwrap();
                a.cvtsi2sd(xmm6, eax).unwrap();
            });
            assert_no_exception(&g, "arithmetic");
            let f = &g.cpu.fpu;
            assert_eq!(f.xmm[0], ps([3.0, -16.0, 1e40f64 as f32, 0.75]), "{mode:?}");
            assert_eq!(f.xmm[3], ps([2f32.sqrt(), 8f32.sqrt(), 1e5, 3f32.sqrt()]));
            let ints = [2u32, 8, 0x8000_0000, 3]; // 1e10 is out of range: indefinite
            let pack = |v: [u32; 4]| {
                v.iter()
                    .enumerate()
                    .fold(0u128, |r, (k, &x)| r | (u128::from(x) << (32 * k)))
            };
            assert_eq!(f.xmm[4], pack(ints), "{engine} {mode:?} cvttps2dq");
            assert_eq!(f.xmm[5], pack([3, 0x8000_0000, 8, 2]), "{mode:?} pshufd");
            // IE: 1e10 to int32; OE and PE: 1e30 * 1e10; PE: inexact roots.
            assert_eq!(f.mxcsr & 0x3F, 0x29, "{engine} {mode:?}: MXCSR flags");
        }
    }
}

#[test]
fn fxsave_and_fxrstor_round_trip() {
    for engine in EngineKind::emulators() {
        for mode in MODES {
            let x = [(0, 0x0011_2233_4455_6677_8899_AABB_CCDD_EEFFu128), (7, 7)];
            let g = sse_guest(engine, mode, 0, CR4_OSFXSR, &[], &x, |a, d| {
                a.fninit().unwrap();
                a.fld1().unwrap();
                a.fldpi().unwrap();
                a.fxsave(ptr(d)).unwrap();
                a.pxor(xmm0, xmm0).unwrap();
                a.pxor(xmm7, xmm7).unwrap();
                a.fninit().unwrap();
                a.fxrstor(ptr(d)).unwrap();
                a.fstp(tword_ptr(d + 0x300)).unwrap();
            });
            assert_no_exception(&g, "fxsave");
            let img = data(mode);
            assert_eq!(read_u16(&g, img), 0x037F, "{engine} {mode:?}: FCW");
            assert_eq!(read_u16(&g, img + 2) >> 11 & 7, 6, "{mode:?}: TOP in FSW");
            assert_eq!(read_u8(&g, img + 4), 0xC0, "{mode:?}: abridged tags R6, R7");
            assert_eq!(read_u32(&g, img + 24), 0x1F80, "{mode:?}: MXCSR");
            assert_eq!(read_u32(&g, img + 28), 0xFFFF, "{mode:?}: MXCSR_MASK");
            // ST(0) = pi at byte 32, ST(1) = 1.0 at byte 48.
            assert_eq!(g.read_u64(img + 32), 0xC90F_DAA2_2168_C235, "{mode:?}: ST0");
            assert_eq!(g.read_u64(img + 48), 1 << 63, "{mode:?}: ST1");
            assert_eq!(read_u128(&g, img + 160), x[0].1, "{mode:?}: XMM0 image");
            assert_eq!(g.cpu.fpu.xmm[0], x[0].1, "{mode:?}: XMM0 restored");
            assert_eq!(g.cpu.fpu.xmm[7], 7, "{mode:?}: XMM7 restored");
            assert_eq!(
                g.read_u64(img + 0x300),
                0xC90F_DAA2_2168_C235,
                "{mode:?}: pi"
            );
            // FXSAVE needs a 16-byte-aligned image.
            let g = sse_guest(engine, mode, 0, CR4_OSFXSR, &[], &[], |a, d| {
                a.fxsave(ptr(d + 8)).unwrap()
            });
            assert_eq!(
                exception(&g),
                Some(GP),
                "{engine} {mode:?}: misaligned FXSAVE"
            );
        }
    }
}

#[test]
fn xsave_xrstor_and_xcr0() {
    let with_xsave = CR4_OSFXSR | CR4_OSXSAVE;
    for engine in EngineKind::emulators() {
        for mode in [Mode::Protected32, Mode::Long64] {
            let g = sse_guest(
                engine,
                mode,
                0,
                with_xsave,
                &[0; 1024],
                &[(3, 0x33)],
                |a, d| {
                    a.xor(ecx, ecx).unwrap();
                    a.xgetbv().unwrap();
                    a.mov(dword_ptr(d + 0x400), eax).unwrap();
                    a.mov(eax, 3).unwrap();
                    a.xor(edx, edx).unwrap();
                    a.xsetbv().unwrap();
                    a.xsave(ptr(d)).unwrap();
                    a.pxor(xmm3, xmm3).unwrap();
                    a.xrstor(ptr(d)).unwrap();
                    a.movdqa(xmmword_ptr(d + 0x440), xmm3).unwrap();
                    // XSTATE_BV = x87 only: XRSTOR puts the SSE registers in their initial state.
                    a.mov(dword_ptr(d + 512), 1).unwrap();
                    a.xrstor(ptr(d)).unwrap();
                },
            );
            assert_no_exception(&g, "xsave");
            let img = data(mode);
            assert_eq!(
                read_u32(&g, img + 0x400),
                1,
                "{engine} {mode:?}: XCR0 at reset"
            );
            assert_eq!(g.cpu.xcr0, 3, "{mode:?}: XSETBV");
            assert_eq!(
                read_u128(&g, img + 160 + 3 * 16),
                0x33,
                "{mode:?}: XMM3 image"
            );
            assert_eq!(read_u128(&g, img + 0x440), 0x33, "{mode:?}: XMM3 restored");
            assert_eq!(g.cpu.fpu.xmm[3], 0, "{mode:?}: SSE initialised");
            // XSETBV without the x87 bit, and XSAVE without CR4.OSXSAVE.
            let g = sse_guest(engine, mode, 0, with_xsave, &[], &[], |a, _| {
                a.mov(eax, 2).unwrap();
                a.xor(edx, edx).unwrap();
                a.xor(ecx, ecx).unwrap();
                a.xsetbv().unwrap();
            });
            assert_eq!(exception(&g), Some(GP), "{engine} {mode:?}: XCR0 = 2");
            let g = sse_guest(engine, mode, 0, CR4_OSFXSR, &[], &[], |a, d| {
                a.xsave(ptr(d)).unwrap()
            });
            assert_eq!(
                exception(&g),
                Some(UD),
                "{engine} {mode:?}: XSAVE, no OSXSAVE"
            );
        }
    }
}

#[test]
fn mmx_registers_alias_the_x87_stack_and_emms_frees_it() {
    let value = 0x0102_0304_0506_0708u64;
    for engine in EngineKind::emulators() {
        for mode in MODES {
            let g = sse_guest(engine, mode, 0, 0, &value.to_le_bytes(), &[], |a, d| {
                a.fninit().unwrap();
                a.movq(mm3, qword_ptr(d)).unwrap();
                a.paddw(mm3, mm3).unwrap();
                a.movq(qword_ptr(d + 8), mm3).unwrap();
                a.fnstsw(word_ptr(d + 16)).unwrap();
                a.fnstenv(ptr(d + 32)).unwrap();
                a.emms().unwrap();
                a.fnstenv(ptr(d + 64)).unwrap();
            });
            assert_no_exception(&g, "mmx");
            let f = &g.cpu.fpu;
            assert_eq!(
                g.read_u64(data(mode) + 8),
                value * 2,
                "{engine} {mode:?}: paddw"
            );
            assert_eq!(
                f.st[3].signif,
                value * 2,
                "{mode:?}: MM3 is R3's significand"
            );
            assert_eq!(f.st[3].sign_exp, 0xFFFF, "{mode:?}: exponent all ones");
            assert_eq!(
                read_u16(&g, data(mode) + 16) >> 11 & 7,
                0,
                "{mode:?}: TOP = 0"
            );
            // FNSTENV tags non-empty registers from their contents: MM3 (exponent all ones)
            // is special, the others hold +0.0 (zero) after reset.
            let ftw_at = if mode.bitness() == 16 { 4 } else { 8 };
            let tags = read_u16(&g, data(mode) + 32 + ftw_at);
            assert_eq!(
                tags,
                0x5555 & !(3 << 6) | (2 << 6),
                "{mode:?}: tags after MMX"
            );
            let tags = read_u16(&g, data(mode) + 64 + ftw_at);
            assert_eq!(tags, 0xFFFF, "{mode:?}: tags after EMMS");
            assert_eq!(f.ftw, 0xFFFF, "{mode:?}: EMMS empties the stack");
        }
    }
}

#[test]
fn cpuid_reports_the_simd_extensions_and_the_xsave_area() {
    for engine in EngineKind::emulators() {
        let g = sse_guest(engine, Mode::Long64, 0, 0, &[], &[], |a, d| {
            a.mov(eax, 1).unwrap();
            a.cpuid().unwrap();
            a.mov(dword_ptr(d), ecx).unwrap();
            a.mov(dword_ptr(d + 4), edx).unwrap();
            a.mov(eax, 0xD).unwrap();
            a.xor(ecx, ecx).unwrap();
            a.cpuid().unwrap();
            a.mov(dword_ptr(d + 8), eax).unwrap();
            a.mov(dword_ptr(d + 12), ecx).unwrap();
        });
        assert_no_exception(&g, "cpuid");
        let feat_ecx = read_u32(&g, DATA_BASE);
        let feat_edx = read_u32(&g, DATA_BASE + 4);
        for (bit, name) in [
            (0, "SSE3"),
            (9, "SSSE3"),
            (19, "SSE4.1"),
            (20, "SSE4.2"),
            (26, "XSAVE"),
        ] {
            assert_ne!(feat_ecx & (1 << bit), 0, "{engine}: CPUID.1:ECX.{name}");
        }
        assert_eq!(feat_ecx & (1 << 28), 0, "{engine}: no AVX");
        for (bit, name) in [(23, "MMX"), (24, "FXSR"), (25, "SSE"), (26, "SSE2")] {
            assert_ne!(feat_edx & (1 << bit), 0, "{engine}: CPUID.1:EDX.{name}");
        }
        assert_eq!(
            read_u32(&g, DATA_BASE + 8),
            3,
            "{engine}: XCR0 x87|SSE supported"
        );
        assert_eq!(
            read_u32(&g, DATA_BASE + 12),
            576,
            "{engine}: XSAVE area size"
        );
    }
}
