//! x87 FPU: exact 80-bit arithmetic under every precision-control and rounding mode
//! (expected values computed independently with `rustc_apfloat`), stores to every memory
//! format, stack overflow/underflow, masked and unmasked exceptions with #MF delivery at the
//! next waiting instruction, compare flags, FXAM classes, FPREM/FPREM1 quotient bits,
//! FBSTP/FBLD, FSAVE/FRSTOR and FSTENV images, constants, transcendental sanity values and
//! #NM. Every engine, in real, 32-bit protected and 64-bit mode.

use crate::common::*;
use rustc_apfloat::ieee::{Double, Single, X87DoubleExtended};
use rustc_apfloat::{Float, FloatConvert, Round};

mod host_oracle;

const MODES: [Mode; 3] = [Mode::Real, Mode::Protected32, Mode::Long64];

/// FSW bits.
const IE: u64 = 1;
const DE: u64 = 2;
const ZE: u64 = 4;
const PE: u64 = 0x20;
const SF_FPU: u64 = 0x40;
const ES: u64 = 0x80;
const C0: u64 = 0x100;
const C1: u64 = 0x200;
const C2: u64 = 0x400;
const C3: u64 = 0x4000;
const INDEFINITE: u128 = 0xFFFF_C000_0000_0000_0000;

/// Run `f` after FNINIT with `words` (16-bit values) stored at `data(mode)` first.
fn run_fpu(
    engine: EngineKind,
    mode: Mode,
    words: &[u16],
    f: impl FnOnce(&mut CodeAssembler, u32),
) -> TestGuest {
    let d = data(mode) as u32;
    let code = assemble(mode, |a| {
        a.fninit().unwrap();
        f(a, d)
    });
    let mut g = guest(engine, mode, &code, &[], 0);
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    g.write(data(mode), &bytes);
    g.run_to_halt();
    g
}

/// The 10-byte value at `addr`.
fn read_f80(g: &TestGuest, addr: u64) -> u128 {
    u128::from(g.read_u64(addr)) | (u128::from(read_u16(g, addr + 8)) << 64)
}

fn words_of(bits: u128, n: usize) -> Vec<u16> {
    (0..n).map(|k| (bits >> (16 * k)) as u16).collect()
}

fn apfloat_round(rc: u16) -> Round {
    match rc {
        0 => Round::NearestTiesToEven,
        1 => Round::TowardNegative,
        2 => Round::TowardPositive,
        _ => Round::TowardZero,
    }
}

/// 1/3 rounded to `pc` (0 = 24, 2 = 53, 3 = 64 bits) in rounding mode `rc`, as 80-bit bits.
fn expected_third(pc: u16, rc: u16) -> u128 {
    let round = apfloat_round(rc);
    let mut loses = false;
    match pc {
        0 => {
            let v = Single::from_u128(1)
                .value
                .div_r(Single::from_u128(3).value, round)
                .value;
            FloatConvert::<X87DoubleExtended>::convert(v, &mut loses)
                .value
                .to_bits()
        }
        2 => {
            let v = Double::from_u128(1)
                .value
                .div_r(Double::from_u128(3).value, round)
                .value;
            FloatConvert::<X87DoubleExtended>::convert(v, &mut loses)
                .value
                .to_bits()
        }
        _ => {
            let one = X87DoubleExtended::from_u128(1).value;
            one.div_r(X87DoubleExtended::from_u128(3).value, round)
                .value
                .to_bits()
        }
    }
}

#[test]
fn one_third_in_every_precision_and_rounding_mode() {
    for engine in EngineKind::emulators() {
        for mode in MODES {
            for pc in [0u16, 2, 3] {
                for rc in 0u16..4 {
                    let cw = 0x7F | (pc << 8) | (rc << 10);
                    let g = run_fpu(engine, mode, &[cw, 3, 1], |a, d| {
                        a.fldcw(word_ptr(d)).unwrap();
                        a.fild(word_ptr(d + 4)).unwrap();
                        a.fidiv(word_ptr(d + 2)).unwrap();
                        a.fnstsw(ax).unwrap();
                        a.fstp(tword_ptr(d + 16)).unwrap();
                    });
                    assert_no_exception(&g, "1/3");
                    let got = read_f80(&g, data(mode) + 16);
                    let want = expected_third(pc, rc);
                    assert_eq!(got, want, "{engine} {mode:?} PC={pc} RC={rc}: {got:#x}");
                    let sw = g.cpu.gpr[RAX] & 0xFFFF;
                    assert_ne!(sw & PE, 0, "{mode:?} PC={pc} RC={rc}: PE");
                    // C1 says the result was rounded up in magnitude (differs from chop).
                    let rounded_up = want != expected_third(pc, 3);
                    assert_eq!(sw & C1 != 0, rounded_up, "{mode:?} PC={pc} RC={rc}: C1");
                }
            }
        }
    }
}

#[test]
fn add_sub_mul_div_sqrt_exact_results() {
    let x87 = |v: f64| -> u128 {
        let mut loses = false;
        let d = Double::from_bits(u128::from(v.to_bits()));
        FloatConvert::<X87DoubleExtended>::convert(d, &mut loses)
            .value
            .to_bits()
    };
    for engine in EngineKind::emulators() {
        for mode in MODES {
            // 2.5 as m64 at d, 0.1 as m32 at d+8, -7 as m32 int at d+12.
            let mut words = words_of(u128::from(2.5f64.to_bits()), 4);
            words.extend(words_of(u128::from(0.1f32.to_bits()), 2));
            words.extend(words_of(u128::from((-7i32) as u32), 2));
            let g = run_fpu(engine, mode, &words, |a, d| {
                a.fld(qword_ptr(d)).unwrap(); // 2.5
                a.fadd(dword_ptr(d + 8)).unwrap(); // 2.5 + 0.1f
                a.fstp(tword_ptr(d + 32)).unwrap();
                a.fld(qword_ptr(d)).unwrap();
                a.fimul(dword_ptr(d + 12)).unwrap(); // -17.5
                a.fstp(tword_ptr(d + 48)).unwrap();
                a.fld(qword_ptr(d)).unwrap();
                a.fld(qword_ptr(d)).unwrap();
                a.fmulp(st1, st0).unwrap(); // 6.25
                a.fsqrt().unwrap(); // 2.5
                a.fsubr(qword_ptr(d)).unwrap(); // 2.5 - 2.5 = +0
                a.fstp(tword_ptr(d + 64)).unwrap();
                a.fld1().unwrap();
                a.fadd_2(st0, st0).unwrap();
                a.fsqrt().unwrap(); // sqrt 2
                a.fstp(tword_ptr(d + 80)).unwrap();
                a.fild(dword_ptr(d + 12)).unwrap();
                a.fld1().unwrap();
                a.fdivrp(st1, st0).unwrap(); // 1 / -7
                a.fstp(tword_ptr(d + 96)).unwrap();
            });
            assert_no_exception(&g, "arith");
            let base = data(mode);
            let sum = X87DoubleExtended::from_bits(x87(2.5))
                .add_r(
                    X87DoubleExtended::from_bits(x87(f64::from(0.1f32))),
                    Round::NearestTiesToEven,
                )
                .value
                .to_bits();
            assert_eq!(read_f80(&g, base + 32), sum, "{engine} {mode:?} 2.5+0.1f");
            assert_eq!(read_f80(&g, base + 48), x87(-17.5), "{mode:?} 2.5*-7");
            assert_eq!(read_f80(&g, base + 64), 0, "{mode:?} +0");
            assert_eq!(
                read_f80(&g, base + 80),
                0x3FFF_B504_F333_F9DE_6484,
                "{mode:?} sqrt 2"
            );
            let seventh = X87DoubleExtended::from_u128(1)
                .value
                .div_r(
                    -X87DoubleExtended::from_u128(7).value,
                    Round::NearestTiesToEven,
                )
                .value
                .to_bits();
            assert_eq!(read_f80(&g, base + 96), seventh, "{mode:?} 1/-7");
        }
    }
}

#[test]
fn stores_round_to_the_memory_format() {
    for engine in EngineKind::emulators() {
        for mode in MODES {
            let g = run_fpu(engine, mode, &[3, 0x0F7F], |a, d| {
                a.fld1().unwrap();
                a.fidiv(word_ptr(d)).unwrap();
                a.fst(dword_ptr(d + 16)).unwrap();
                a.fst(qword_ptr(d + 24)).unwrap();
                a.fist(word_ptr(d + 32)).unwrap(); // 0
                a.fldcw(word_ptr(d + 2)).unwrap(); // round toward zero
                a.fchs().unwrap();
                a.fst(dword_ptr(d + 40)).unwrap();
                a.fld1().unwrap();
                a.fchs().unwrap();
                a.fsub_2(st0, st1).unwrap(); // -1 + 1/3 = -2/3
                a.fchs().unwrap(); // 2/3
                a.fistp(word_ptr(d + 44)).unwrap(); // chop: 0
                a.fild(word_ptr(d)).unwrap();
                a.fld1().unwrap();
                a.fld1().unwrap();
                a.faddp(st1, st0).unwrap(); // 2
                a.fdivp(st1, st0).unwrap(); // 1.5
                a.fisttp(dword_ptr(d + 48)).unwrap(); // 1
            });
            assert_no_exception(&g, "stores");
            let base = data(mode);
            assert_eq!(
                read_u32(&g, base + 16),
                (1.0f32 / 3.0).to_bits(),
                "{engine} {mode:?} m32"
            );
            assert_eq!(
                g.read_u64(base + 24),
                (1.0f64 / 3.0).to_bits(),
                "{mode:?} m64"
            );
            assert_eq!(read_u16(&g, base + 32), 0, "{mode:?} fist");
            // -1/3 in single: nearest rounds the magnitude up, toward zero one ulp below.
            assert_eq!(
                read_u32(&g, base + 40),
                (-1.0f32 / 3.0).to_bits() - 1,
                "{mode:?} m32 chop"
            );
            assert_eq!(read_u16(&g, base + 44), 0, "{mode:?} fistp chop");
            assert_eq!(read_u32(&g, base + 48), 1, "{mode:?} fisttp");
        }
    }
}

#[test]
fn fist_rounds_by_control_word_and_overflow_is_invalid() {
    for engine in EngineKind::emulators() {
        for mode in MODES {
            // 2.5 as m64; CWs for nearest, down, up, chop.
            let mut words = words_of(u128::from(2.5f64.to_bits()), 4);
            words.extend([0x037F, 0x077F, 0x0B7F, 0x0F7F]);
            let g = run_fpu(engine, mode, &words, |a, d| {
                for k in 0..4u32 {
                    a.fldcw(word_ptr(d + 8 + 2 * k)).unwrap();
                    a.fld(qword_ptr(d)).unwrap();
                    a.fchs().unwrap(); // -2.5
                    a.fistp(word_ptr(d + 32 + 2 * k)).unwrap();
                }
                a.fldcw(word_ptr(d + 8)).unwrap();
                a.fild(word_ptr(d + 8)).unwrap(); // 0x037F = 895
                a.fimul(word_ptr(d + 8)).unwrap(); // 801025: out of int16 range
                a.fistp(word_ptr(d + 48)).unwrap();
                a.fnstsw(ax).unwrap();
            });
            assert_no_exception(&g, "fist");
            let base = data(mode);
            let got: Vec<i16> = (0..4)
                .map(|k| read_u16(&g, base + 32 + 2 * k) as i16)
                .collect();
            assert_eq!(got, [-2, -3, -2, -2], "{engine} {mode:?} rounding of -2.5");
            assert_eq!(
                read_u16(&g, base + 48),
                0x8000,
                "{mode:?} integer indefinite"
            );
            assert_ne!(g.cpu.gpr[RAX] & IE, 0, "{mode:?} IE");
        }
    }
}

#[test]
fn stack_overflow_and_underflow() {
    for engine in EngineKind::emulators() {
        for mode in MODES {
            let g = run_fpu(engine, mode, &[], |a, d| {
                for _ in 0..8 {
                    a.fld1().unwrap();
                }
                a.fldz().unwrap(); // overflow
                a.fnstsw(ax).unwrap();
                a.mov(bx, ax).unwrap();
                a.fstp(tword_ptr(d)).unwrap(); // the indefinite
                a.fninit().unwrap();
                a.fadd_2(st0, st1).unwrap(); // underflow
                a.fnstsw(ax).unwrap();
                a.mov(cx, ax).unwrap();
                a.fninit().unwrap();
                a.fld1().unwrap();
                a.fnstenv(ptr(d + 16)).unwrap();
            });
            assert_no_exception(&g, "stack faults");
            let s = &g.cpu;
            let over = s.gpr[RBX] & 0xFFFF;
            assert_eq!(
                over & (IE | SF_FPU | C1),
                IE | SF_FPU | C1,
                "{engine} {mode:?} overflow {over:#x}"
            );
            assert_eq!((over >> 11) & 7, 7, "{mode:?} TOP after the faulting push");
            assert_eq!(read_f80(&g, data(mode)), INDEFINITE, "{mode:?} masked push");
            let under = s.gpr[RCX] & 0xFFFF;
            assert_eq!(
                under & (IE | SF_FPU | C1),
                IE | SF_FPU,
                "{mode:?} underflow {under:#x}"
            );
            // FSTENV: one register (R7) valid, the rest empty; TOP = 7.
            let env = data(mode) + 16;
            let (fsw_at, ftw_at) = env_offsets(mode);
            assert_eq!(read_u16(&g, env + ftw_at), 0x3FFF, "{mode:?} tag word");
            assert_eq!(
                (read_u16(&g, env + fsw_at) >> 11) & 7,
                7,
                "{mode:?} TOP in env"
            );
        }
    }
}

/// Offsets of FSW and FTW in the environment image: the 14-byte layout in 16-bit code, the
/// 28-byte one otherwise.
fn env_offsets(mode: Mode) -> (u64, u64) {
    if mode.bitness() == 16 {
        (2, 4)
    } else {
        (4, 8)
    }
}

#[test]
fn masked_and_unmasked_divide_by_zero() {
    for engine in EngineKind::emulators() {
        for mode in MODES {
            // Masked: result is +inf, no exception, ZE set.
            let g = run_fpu(engine, mode, &[], |a, d| {
                a.fld1().unwrap();
                a.fldz().unwrap();
                a.fdivp(st1, st0).unwrap();
                a.wait().unwrap();
                a.fstp(tword_ptr(d)).unwrap();
                a.fnstsw(ax).unwrap();
            });
            assert_no_exception(&g, "masked ZE");
            assert_eq!(
                read_f80(&g, data(mode)),
                0x7FFF_8000_0000_0000_0000,
                "{engine} {mode:?} inf"
            );
            assert_eq!(g.cpu.gpr[RAX] & (ZE | ES), ZE, "{mode:?} masked flags");
            // Unmasked: the divide leaves the stack alone and sets ES; the next waiting
            // instruction raises #MF; FNSTSW before it does not.
            let g = run_fpu(engine, mode, &[0x037B], |a, d| {
                a.fldcw(word_ptr(d)).unwrap();
                a.fld1().unwrap();
                a.fldz().unwrap();
                a.fdivp(st1, st0).unwrap();
                a.fnstsw(ax).unwrap();
                a.mov(ebx, 0x1234u32).unwrap();
                a.wait().unwrap();
                a.mov(ebx, 0xDEADu32).unwrap();
            });
            assert_eq!(exception(&g), Some(16), "{mode:?} #MF");
            let s = &g.cpu;
            assert_eq!(s.gpr[RBX] & 0xFFFF, 0x1234, "{mode:?} #MF at the FWAIT");
            assert_eq!(
                s.gpr[RAX] & (ZE | ES | 0x8000),
                ZE | ES | 0x8000,
                "{mode:?} ES/B"
            );
            assert_eq!(s.fpu.top(), 6, "{mode:?} no pop after the unmasked fault");
            assert_eq!(s.fpu.st(0).sign_exp, 0, "{mode:?} ST0 still zero");
            // Unmasked precision exception: the result is stored, then #MF at the next FLD.
            let g = run_fpu(engine, mode, &[0x035F, 3], |a, d| {
                a.fldcw(word_ptr(d)).unwrap();
                a.fld1().unwrap();
                a.fidiv(word_ptr(d + 2)).unwrap();
                a.mov(ebx, 0x1234u32).unwrap();
                a.fld1().unwrap();
                a.mov(ebx, 0xDEADu32).unwrap();
            });
            assert_eq!(exception(&g), Some(16), "{mode:?} #MF after PE");
            assert_eq!(g.cpu.gpr[RBX] & 0xFFFF, 0x1234, "{mode:?} #MF at the FLD1");
            assert_eq!(
                g.cpu.fpu.st(0).signif,
                0xAAAA_AAAA_AAAA_AAAB,
                "{mode:?} stored 1/3"
            );
        }
    }
}

#[test]
fn compare_flags_and_condition_codes() {
    for engine in EngineKind::emulators() {
        for mode in MODES {
            let g = run_fpu(engine, mode, &[], |a, _| {
                a.fld1().unwrap();
                a.fldz().unwrap(); // ST0 = 0, ST1 = 1
                a.fcomi(st0, st1).unwrap(); // 0 < 1: CF
                save_flags(a, 0);
                a.fucomi(st0, st0).unwrap(); // equal: ZF
                save_flags(a, 1);
                a.fcom_2(st0, st1).unwrap(); // C0
                a.fnstsw(ax).unwrap();
                a.mov(bx, ax).unwrap();
                a.fxch(st0, st1).unwrap(); // ST0 = 1, ST1 = 0
                a.fcomp_2(st0, st1).unwrap(); // greater, pop
                a.fnstsw(ax).unwrap();
                a.mov(cx, ax).unwrap();
                a.fld(st0).unwrap();
                a.fdiv_2(st0, st0).unwrap(); // 0/0: masked invalid -> indefinite
                a.fucomip(st0, st1).unwrap(); // unordered: ZF PF CF
                save_flags(a, 2);
                a.ftst().unwrap(); // 0 vs 0: C3
                a.fnstsw(ax).unwrap();
            });
            assert_no_exception(&g, "compares");
            let s = &g.cpu;
            assert_eq!(
                s.gpr[RSI] & (CF | ZF | PF),
                CF,
                "{engine} {mode:?} fcomi less"
            );
            assert_eq!(s.gpr[RDI] & (CF | ZF | PF), ZF, "{mode:?} fucomi equal");
            assert_eq!(s.gpr[RBX] & (C0 | C2 | C3), C0, "{mode:?} fcom less");
            assert_eq!(s.gpr[RCX] & (C0 | C2 | C3), 0, "{mode:?} fcomp greater");
            assert_eq!((s.gpr[RCX] >> 11) & 7, 7, "{mode:?} fcomp popped");
            assert_eq!(
                s.gpr[5] & (CF | ZF | PF),
                CF | ZF | PF,
                "{mode:?} unordered"
            );
            assert_eq!(s.gpr[RAX] & (C0 | C2 | C3), C3, "{mode:?} ftst zero");
            assert_ne!(s.gpr[RAX] & IE, 0, "{mode:?} 0/0 raised IE");
        }
    }
}

#[test]
fn fxam_classifies_every_kind() {
    // Denormal 80-bit value at d: exponent 0, significand 1.
    let denormal = words_of(1, 5);
    for engine in EngineKind::emulators() {
        for mode in MODES {
            let g = run_fpu(engine, mode, &denormal, |a, d| {
                let record = |a: &mut CodeAssembler, slot: u32| {
                    a.fxam().unwrap();
                    a.fnstsw(ax).unwrap();
                    a.mov(word_ptr(d + 16 + 2 * slot), ax).unwrap();
                };
                record(a, 0); // empty
                a.fldz().unwrap();
                record(a, 1); // zero
                a.fld1().unwrap();
                a.fchs().unwrap();
                record(a, 2); // negative normal
                a.fld1().unwrap();
                a.fdiv_2(st0, st2).unwrap(); // 1/0 = inf
                record(a, 3);
                a.fsub_2(st0, st0).unwrap(); // inf - inf = NaN
                record(a, 4);
                a.fld(tword_ptr(d)).unwrap();
                record(a, 5); // denormal
            });
            assert_no_exception(&g, "fxam");
            let base = data(mode) + 16;
            let class = |k: u64| u64::from(read_u16(&g, base + 2 * k)) & (C0 | C1 | C2 | C3);
            assert_eq!(class(0), C3 | C0, "{engine} {mode:?} empty");
            assert_eq!(class(1), C3, "{mode:?} zero");
            assert_eq!(class(2), C2 | C1, "{mode:?} negative normal");
            assert_eq!(class(3), C2 | C0, "{mode:?} infinity");
            assert_eq!(class(4) & !C1, C0, "{mode:?} NaN");
            assert_eq!(class(5), C3 | C2, "{mode:?} denormal");
        }
    }
}

#[test]
fn fprem_quotient_bits_and_partial_reduction() {
    for engine in EngineKind::emulators() {
        for mode in MODES {
            let g = run_fpu(engine, mode, &[5, 17, 18, 100], |a, d| {
                let case = |a: &mut CodeAssembler, num: u32, ieee: bool, slot: u32| {
                    a.fild(word_ptr(d)).unwrap(); // 5
                    a.fild(word_ptr(d + num)).unwrap();
                    if ieee {
                        a.fprem1().unwrap();
                    } else {
                        a.fprem().unwrap();
                    }
                    a.fnstsw(ax).unwrap();
                    a.mov(word_ptr(d + 16 + 2 * slot), ax).unwrap();
                    a.fistp(word_ptr(d + 32 + 2 * slot)).unwrap();
                    a.fstp(st0).unwrap();
                };
                case(a, 2, false, 0); // 17 rem 5: q = 3, r = 2
                case(a, 4, false, 1); // 18 rem 5: q = 3, r = 3
                case(a, 4, true, 2); // 18 rem1 5: q = 4, r = -2
                                     // 5 * 2^100 FPREM 3: exponent difference >= 64 -> C2, partial.
                a.fild(word_ptr(d)).unwrap();
                a.fild(word_ptr(d + 6)).unwrap();
                a.fxch(st0, st1).unwrap();
                a.fscale().unwrap(); // 5 * 2^100
                a.fstp(st1).unwrap();
                a.fild(word_ptr(d + 2)).unwrap();
                a.fxch(st0, st1).unwrap(); // ST0 = 5*2^100, ST1 = 17
                a.fprem().unwrap();
                a.fnstsw(ax).unwrap();
            });
            assert_no_exception(&g, "fprem");
            let base = data(mode);
            let sw = |k: u64| u64::from(read_u16(&g, base + 16 + 2 * k)) & (C0 | C1 | C2 | C3);
            let r = |k: u64| read_u16(&g, base + 32 + 2 * k) as i16;
            assert_eq!((sw(0), r(0)), (C3 | C1, 2), "{engine} {mode:?} 17 rem 5");
            assert_eq!((sw(1), r(1)), (C3 | C1, 3), "{mode:?} 18 rem 5");
            assert_eq!((sw(2), r(2)), (C0, -2), "{mode:?} 18 rem1 5");
            assert_ne!(g.cpu.gpr[RAX] & C2, 0, "{mode:?} incomplete reduction");
        }
    }
}

#[test]
fn fbstp_and_fbld_packed_bcd() {
    for engine in EngineKind::emulators() {
        for mode in MODES {
            // 123456789012345678 as m64 int at d, -42.5 as m64 float at d+8.
            let mut words = words_of(123_456_789_012_345_678u128, 4);
            words.extend(words_of(u128::from((-42.5f64).to_bits()), 4));
            let g = run_fpu(engine, mode, &words, |a, d| {
                a.fild(qword_ptr(d)).unwrap();
                a.fbstp(ptr(d + 16)).unwrap();
                a.fld(qword_ptr(d + 8)).unwrap();
                a.fbstp(ptr(d + 32)).unwrap(); // nearest-even: -42
                a.fbld(ptr(d + 16)).unwrap();
                a.fistp(qword_ptr(d + 48)).unwrap();
            });
            assert_no_exception(&g, "bcd");
            let base = data(mode);
            assert_eq!(
                read_f80(&g, base + 16),
                0x0012_3456_7890_1234_5678,
                "{engine} {mode:?}"
            );
            assert_eq!(
                read_f80(&g, base + 32),
                0x8000_0000_0000_0000_0042,
                "{mode:?} -42"
            );
            assert_eq!(
                g.read_u64(base + 48),
                123_456_789_012_345_678,
                "{mode:?} fbld"
            );
        }
    }
}

#[test]
fn fsave_frstor_round_trip() {
    for engine in EngineKind::emulators() {
        for mode in MODES {
            let g = run_fpu(engine, mode, &[0x0B7F], |a, d| {
                a.fldcw(word_ptr(d)).unwrap();
                a.fldpi().unwrap();
                a.fld1().unwrap();
                a.fldz().unwrap();
                a.fnsave(ptr(d + 16)).unwrap();
                a.fnstcw(word_ptr(d + 2)).unwrap(); // after FNSAVE: FNINIT state
                a.fld1().unwrap();
                a.frstor(ptr(d + 16)).unwrap();
                a.fstp(tword_ptr(d + 160)).unwrap(); // 0
                a.fstp(tword_ptr(d + 176)).unwrap(); // 1
                a.fstp(tword_ptr(d + 192)).unwrap(); // pi rounded up
                a.fnstcw(word_ptr(d + 4)).unwrap();
            });
            assert_no_exception(&g, "fsave");
            let base = data(mode);
            assert_eq!(
                read_u16(&g, base + 2),
                0x037F,
                "{engine} {mode:?} FNINIT after FNSAVE"
            );
            assert_eq!(read_u16(&g, base + 4), 0x0B7F, "{mode:?} CW restored");
            let image = base + 16;
            let (_, ftw_at) = env_offsets(mode);
            let regs = image + if mode.bitness() == 16 { 14 } else { 28 };
            assert_eq!(read_u16(&g, image), 0x0B7F, "{mode:?} image FCW");
            // R5 = 0 (zero), R6 = 1, R7 = pi (valid), R0..R4 empty.
            assert_eq!(read_u16(&g, image + ftw_at), 0x07FF, "{mode:?} image tags");
            assert_eq!(read_f80(&g, regs), 0, "{mode:?} image ST0");
            assert_eq!(
                read_f80(&g, regs + 10),
                0x3FFF_8000_0000_0000_0000,
                "{mode:?} ST1"
            );
            assert_eq!(read_f80(&g, base + 160), 0, "{mode:?} restored ST0");
            assert_eq!(
                read_f80(&g, base + 176),
                0x3FFF_8000_0000_0000_0000,
                "{mode:?} ST1"
            );
            assert_eq!(
                read_f80(&g, base + 192),
                0x4000_C90F_DAA2_2168_C235,
                "{mode:?} pi up"
            );
            assert_eq!(g.cpu.fpu.ftw, 0xFFFF, "{mode:?} stack empty at the end");
        }
    }
}

#[test]
fn constants_follow_rounding_control() {
    for engine in EngineKind::emulators() {
        for mode in MODES {
            let g = run_fpu(engine, mode, &[0x077F], |a, d| {
                a.fldpi().unwrap();
                a.fstp(tword_ptr(d + 16)).unwrap();
                a.fldl2e().unwrap();
                a.fstp(tword_ptr(d + 32)).unwrap();
                a.fldcw(word_ptr(d)).unwrap(); // round down
                a.fldpi().unwrap();
                a.fstp(tword_ptr(d + 48)).unwrap();
                a.fldln2().unwrap();
                a.fstp(tword_ptr(d + 64)).unwrap();
            });
            assert_no_exception(&g, "constants");
            let base = data(mode);
            assert_eq!(
                read_f80(&g, base + 16),
                0x4000_C90F_DAA2_2168_C235,
                "{engine} {mode:?}"
            );
            assert_eq!(
                read_f80(&g, base + 32),
                0x3FFF_B8AA_3B29_5C17_F0BC,
                "{mode:?} l2e"
            );
            assert_eq!(
                read_f80(&g, base + 48),
                0x4000_C90F_DAA2_2168_C234,
                "{mode:?} pi down"
            );
            assert_eq!(
                read_f80(&g, base + 64),
                0x3FFE_B172_17F7_D1CF_79AB,
                "{mode:?} ln2 down"
            );
        }
    }
}

#[test]
fn transcendental_values_and_range() {
    for engine in EngineKind::emulators() {
        for mode in MODES {
            let g = run_fpu(engine, mode, &[8, 64], |a, d| {
                a.fld1().unwrap();
                a.fld1().unwrap();
                a.fpatan().unwrap(); // atan(1/1) = pi/4
                a.fstp(qword_ptr(d + 16)).unwrap();
                a.fld1().unwrap();
                a.fild(word_ptr(d)).unwrap();
                a.fyl2x().unwrap(); // 1 * log2(8) = 3
                a.fistp(word_ptr(d + 24)).unwrap();
                a.fldpi().unwrap();
                a.fsincos().unwrap(); // ST0 = cos = -1, ST1 = sin ~ 0
                a.fistp(word_ptr(d + 26)).unwrap();
                a.fstp(st0).unwrap();
                // 2^64 is out of range: C2 set, operand unchanged.
                a.fild(word_ptr(d + 2)).unwrap();
                a.fld1().unwrap();
                a.fscale().unwrap();
                a.fsin().unwrap();
                a.fnstsw(ax).unwrap();
            });
            assert_no_exception(&g, "transcendentals");
            let base = data(mode);
            let quarter_pi = f64::from_bits(g.read_u64(base + 16));
            assert!(
                (quarter_pi - std::f64::consts::FRAC_PI_4).abs() < 1e-15,
                "{engine} {mode:?}"
            );
            assert_eq!(read_u16(&g, base + 24), 3, "{mode:?} fyl2x");
            assert_eq!(read_u16(&g, base + 26) as i16, -1, "{mode:?} cos pi");
            assert_ne!(g.cpu.gpr[RAX] & C2, 0, "{mode:?} out of range");
            assert_eq!(
                g.cpu.fpu.st(0).sign_exp,
                0x3FFF + 64,
                "{mode:?} operand kept"
            );
        }
    }
}

#[test]
fn denormal_operand_flag_and_fxtract() {
    for engine in EngineKind::emulators() {
        for mode in MODES {
            // Smallest f32 denormal at d; 12.0 as m32 at d+4.
            let mut words = words_of(1, 2);
            words.extend(words_of(u128::from(12.0f32.to_bits()), 2));
            let g = run_fpu(engine, mode, &words, |a, d| {
                a.fld(dword_ptr(d)).unwrap();
                a.fnstsw(ax).unwrap();
                a.mov(bx, ax).unwrap();
                a.fld(dword_ptr(d + 4)).unwrap();
                a.fxtract().unwrap(); // ST0 = 1.5, ST1 = 3
                a.fstp(dword_ptr(d + 16)).unwrap();
                a.fistp(word_ptr(d + 20)).unwrap();
            });
            assert_no_exception(&g, "denormal");
            assert_ne!(
                g.cpu.gpr[RBX] & DE,
                0,
                "{engine} {mode:?} DE on the f32 denormal load"
            );
            let base = data(mode);
            assert_eq!(
                read_u32(&g, base + 16),
                1.5f32.to_bits(),
                "{mode:?} fxtract significand"
            );
            assert_eq!(read_u16(&g, base + 20), 3, "{mode:?} fxtract exponent");
            assert_eq!(
                g.cpu.fpu.st(0).to_bits(),
                0x3F6A_8000_0000_0000_0000,
                "{mode:?} 2^-149"
            );
        }
    }
}

#[test]
fn fcmov_moves_on_condition() {
    for engine in EngineKind::emulators() {
        for mode in MODES {
            let g = run_fpu(engine, mode, &[], |a, d| {
                a.fld1().unwrap();
                a.fldz().unwrap(); // ST0 = 0, ST1 = 1
                a.stc().unwrap();
                a.fcmovnb(st0, st1).unwrap(); // CF = 1: not taken
                a.fist(word_ptr(d)).unwrap();
                a.fcmovb(st0, st1).unwrap(); // taken
                a.fist(word_ptr(d + 2)).unwrap();
            });
            assert_no_exception(&g, "fcmov");
            let base = data(mode);
            assert_eq!(read_u16(&g, base), 0, "{engine} {mode:?} not taken");
            assert_eq!(read_u16(&g, base + 2), 1, "{mode:?} taken");
        }
    }
}

#[test]
fn cr0_em_raises_nm_and_cpuid_advertises_fpu() {
    for engine in EngineKind::emulators() {
        for mode in MODES {
            let code = assemble(mode, |a| {
                a.fninit().unwrap();
            });
            let mut g = guest(engine, mode, &code, &[], 0);
            g.cpu.cr0 |= 1 << 2; // EM
            g.run_to_halt();
            assert_eq!(exception(&g), Some(7), "{engine} {mode:?} #NM with CR0.EM");
            let g = run(engine, mode, &[(RAX, 1)], 0, |a| {
                a.cpuid().unwrap();
            });
            assert_ne!(g.cpu.gpr[RDX] & 1, 0, "{mode:?} CPUID.1:EDX.FPU");
        }
    }
}

#[test]
fn fstenv_records_last_instruction_and_operand_pointers() {
    for engine in EngineKind::emulators() {
        for mode in MODES {
            let g = run_fpu(engine, mode, &[0, 0x3F80], |a, d| {
                a.fld1().unwrap(); // at offset 2, after the FNINIT
                a.fld(dword_ptr(d)).unwrap(); // at offset 4: D9 /0
                a.fnstcw(word_ptr(d + 8)).unwrap(); // control: pointers unchanged
                a.fnstenv(ptr(d + 16)).unwrap();
            });
            assert_no_exception(&g, "fstenv pointers");
            let env = data(mode) + 16;
            let fld_linear = CODE_BASE + 4;
            let d = data(mode);
            // ModR/M of `fld dword [disp]`: [disp16] = 06, [disp32] = 05, 64-bit absolute
            // (SIB form) = 04.
            let modrm = match mode.bitness() {
                16 => 0x06,
                32 => 0x05,
                _ => 0x04,
            };
            let fop = 0x100 | modrm;
            if mode.bitness() == 16 {
                let hi = read_u16(&g, env + 8);
                let ip = u64::from(read_u16(&g, env + 6)) | (u64::from(hi >> 12) << 16);
                assert_eq!(ip, fld_linear, "{engine} {mode:?} FIP (linear)");
                assert_eq!(u64::from(hi & 0x7FF), fop, "{mode:?} FOP");
                let dp = u64::from(read_u16(&g, env + 10))
                    | (u64::from(read_u16(&g, env + 12) >> 12) << 16);
                assert_eq!(dp, d, "{mode:?} FDP (linear, DS base 0)");
            } else {
                assert_eq!(
                    u64::from(read_u32(&g, env + 12)),
                    fld_linear,
                    "{mode:?} FIP"
                );
                let cs_op = read_u32(&g, env + 16);
                assert_eq!(u64::from(cs_op >> 16) & 0x7FF, fop, "{mode:?} FOP");
                assert_eq!(
                    cs_op & 0xFFFF,
                    u32::from(g.cpu.seg[1].selector),
                    "{mode:?} FCS"
                );
                assert_eq!(u64::from(read_u32(&g, env + 20)), d, "{mode:?} FDP");
            }
            // FNSTENV masks every exception afterwards.
            assert_eq!(g.cpu.fpu.fcw & 0x3F, 0x3F, "{mode:?} masks after FNSTENV");
        }
    }
}

#[test]
fn operand_size_prefix_selects_the_other_environment_layout() {
    for engine in EngineKind::emulators() {
        for mode in [Mode::Real, Mode::Protected32] {
            let g = run_fpu(engine, mode, &[], |a, d| {
                a.fld1().unwrap(); // at offset 2
                a.db(&[0x66]).unwrap(); // 32-bit image in real mode, 16-bit in protected
                a.fnstenv(ptr(d + 16)).unwrap();
            });
            assert_no_exception(&g, "prefixed fnstenv");
            let env = data(mode) + 16;
            let fld1_linear = CODE_BASE + 2;
            let fop = 0x1E8; // D9 E8
            if mode == Mode::Real {
                // 28-byte real-mode layout: FIP[15:0] at 12, FIP[31:16] << 12 | FOP at 16.
                assert_eq!(read_u16(&g, env + 4) >> 11 & 7, 7, "{engine} TOP");
                let hi = read_u32(&g, env + 16);
                let ip = u64::from(read_u16(&g, env + 12)) | (u64::from(hi >> 12) << 16);
                assert_eq!(ip, fld1_linear, "{engine} real 32-bit FIP");
                assert_eq!(hi & 0x7FF, fop, "{engine} real 32-bit FOP");
            } else {
                // 14-byte protected layout: FSW at 2, FIP offset at 6, FCS at 8.
                assert_eq!(read_u16(&g, env + 2) >> 11 & 7, 7, "{engine} TOP");
                assert_eq!(
                    u64::from(read_u16(&g, env + 6)),
                    fld1_linear & 0xFFFF,
                    "{engine} FIP"
                );
                assert_eq!(read_u16(&g, env + 8), g.cpu.seg[1].selector, "{engine} FCS");
            }
        }
    }
}
