//! The host CPU's own x87 as the oracle: random operand pairs (normals over a wide exponent
//! range, values near the overflow and underflow thresholds, denormals, zeros, infinities,
//! NaNs, tie-prone significands) under every precision-control and rounding mode, with a
//! quarter of the cases unmasking random exceptions; each operation executed natively with
//! inline assembly and in a crane86 Long64 guest; the results (register or memory) and the
//! status words must match bit for bit. The transcendental functions, which crane86 evaluates
//! in f64, are compared to double precision (with C2, TOP, IE and ZE exact). Only on x86-64
//! hosts.

#![cfg(target_arch = "x86_64")]

use crate::common::*;

/// One case's bytes in guest memory: CW at 0, A at 2, B at 12, result at 32, SW at 42.
const STRIDE: u64 = 64;
const CASES: usize = 1024;
/// Status-word bits compared: exception flags, SF, ES, C0-C3 and TOP (B mirrors ES).
const SW_COMPARED: u16 = 0x7FFF;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Subr,
    Mul,
    Div,
    Divr,
    Sqrt,
    Prem,
    Prem1,
    Rndint,
    Scale,
    Xtract,
    Com,
    Ucom,
    Fist32,
    Fistp16,
    Fistp64,
    Tst,
    Xam,
    Comi,
    Ucomi,
    Comp,
    Comip,
    Addp,
    Fstp32,
    Fisttp32,
    Fbstp,
    Fst32,
    Fst64,
    Ld32,
    Ld64,
    Sin,
    Cos,
    Tan,
    Sincos,
    Atan,
    F2xm1,
    Yl2x,
    Yl2xp1,
}

impl Op {
    /// Evaluated with host f64 math in crane86: compared to a tolerance, not bit for bit.
    fn approximate(self) -> bool {
        matches!(
            self,
            Op::Sin | Op::Cos | Op::Tan | Op::Sincos | Op::Atan | Op::F2xm1 | Op::Yl2x | Op::Yl2xp1
        )
    }

    /// The result is a memory store at `out` (not ST(0)): integer, BCD, single/double, or
    /// the RFLAGS image after FCOMI/FUCOMI.
    fn stores_memory(self) -> bool {
        matches!(
            self,
            Op::Fist32
                | Op::Fistp16
                | Op::Fistp64
                | Op::Fisttp32
                | Op::Fbstp
                | Op::Fst32
                | Op::Fst64
                | Op::Comi
                | Op::Ucomi
                | Op::Comip
                | Op::Fstp32
        )
    }
}

/// A random 80-bit operand (sign/exponent, significand), biased towards interesting classes.
fn operand(rng: &mut Rng, near: u16) -> (u16, u64) {
    let sign = if rng.below(2) == 0 { 0 } else { 0x8000 };
    let signif = match rng.below(6) {
        0 => (1 << 63) | (rng.next() >> 1),
        1 => (1 << 63) | (1 << rng.below(63)),
        2 => u64::MAX << rng.below(64),
        3 => (1 << 63) | (rng.next() & 0xFFFF_FF00),
        _ => (1 << 63) | rng.next(),
    };
    let exp = match rng.below(22) {
        0 => return (sign, 0),                                          // zero
        1 => return (sign, signif >> (1 + rng.below(63))),              // denormal
        2 => return (sign | 0x7FFF, 1 << 63),                           // infinity
        3 => return (sign | 0x7FFF, (1 << 63) | (rng.next() >> 2) | 1), // NaN
        20 => {
            // Unsupported encodings: unnormals, pseudo-infinities, pseudo-NaNs.
            let e = [0x7FFF, 0x3FFF, 1][rng.below(3) as usize];
            return (sign | e, signif & !(1 << 63));
        }
        21 => return (sign, signif | (1 << 63)), // pseudo-denormal
        4 => 0x7FFE - rng.below(3) as u16,
        5 => 1 + rng.below(3) as u16,
        6..=9 => near.wrapping_add(rng.below(9) as u16).wrapping_sub(4),
        _ => 0x3FFF + rng.below(160) as u16 - 80,
    };
    (sign | exp, signif)
}

/// A random IEEE single/double bit pattern, biased towards the special classes.
fn ieee_operand(rng: &mut Rng, exp_bits: u32, frac_bits: u32) -> u64 {
    let sign = rng.below(2) << (exp_bits + frac_bits);
    let frac = rng.next() & ((1 << frac_bits) - 1);
    let max = (1u64 << exp_bits) - 1;
    let exp = match rng.below(8) {
        0 => 0,
        1 => max,
        2 => 1,
        _ => rng.below(max),
    };
    sign | (exp << frac_bits) | frac
}

/// Operands (ST(0), ST(1)) in each function's domain.
fn function_operands(op: Op, rng: &mut Rng) -> (f64, f64) {
    let unit = |rng: &mut Rng| (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    let signed = |rng: &mut Rng, r: f64| (unit(rng) * 2.0 - 1.0) * r;
    let y = signed(rng, 100.0);
    match op {
        Op::Sin | Op::Cos | Op::Tan | Op::Sincos => {
            let range = [1.0, 10.0, 1e4][rng.below(3) as usize];
            (signed(rng, range), y)
        }
        Op::Atan => (signed(rng, 10.0), y),
        Op::F2xm1 => (signed(rng, 1.0), y),
        Op::Yl2x => (
            unit(rng) * [1.0, 1e3, 1e-3][rng.below(3) as usize] + 1e-9,
            y,
        ),
        _ => (signed(rng, 0.29), y),
    }
}

/// An f64 as 80-bit (sign/exponent, significand), exactly.
fn f64_to_f80(v: f64) -> (u16, u64) {
    let bits = v.to_bits();
    let sign = ((bits >> 63) as u16) << 15;
    let exp = ((bits >> 52) & 0x7FF) as i32;
    let frac = bits & ((1 << 52) - 1);
    if exp == 0 {
        assert_eq!(frac, 0, "denormal f64 operands are not generated");
        return (sign, 0);
    }
    (sign | (exp - 1023 + 16383) as u16, (1 << 63) | (frac << 11))
}

/// An 80-bit value (finite or NaN) as an f64, approximately.
fn f80_to_f64(v: u128) -> f64 {
    let se = (v >> 64) as u16;
    let sig = v as u64;
    let exp = i32::from(se & 0x7FFF);
    let mag = if exp == 0x7FFF {
        if sig << 1 == 0 {
            f64::INFINITY
        } else {
            f64::NAN
        }
    } else {
        sig as f64 * 2f64.powi((exp.max(1) - 16383 - 63).max(-1074))
    };
    if se & 0x8000 != 0 {
        -mag
    } else {
        mag
    }
}

fn to_bytes((se, sig): (u16, u64)) -> [u8; 10] {
    let mut b = [0u8; 10];
    b[..8].copy_from_slice(&sig.to_le_bytes());
    b[8..].copy_from_slice(&se.to_le_bytes());
    b
}

/// Run one case natively: load B then A (ST0 = A, ST1 = B), apply `op`, store the status
/// word and ST0 (or the 32-bit integer for FIST).
fn native(op: Op, cw: u16, a: [u8; 10], b: [u8; 10]) -> ([u8; 10], u16) {
    let mut out = [0u8; 10];
    let mut sw = 0u16;
    macro_rules! run {
        ($insn:literal) => {
            run!($insn, "fstp tbyte ptr [{out}]")
        };
        ($insn:literal, $store:literal) => {
            // SAFETY: the asm only touches the x87 unit, RAX and the red-zone-free stack slot
            // of a PUSHFQ/POP pair (all eight x87 registers and RAX are declared clobbered; FNINIT at the end restores the default control word the Rust ABI
            // expects) and the locals passed by pointer, which are valid for the accesses
            // (2 bytes at `cw`/`sw`, 10 bytes at `a`/`b`/`out`).
            unsafe {
                std::arch::asm!(
                    "fninit",
                    "fldcw word ptr [{cw}]",
                    "fld tbyte ptr [{b}]",
                    "fld tbyte ptr [{a}]",
                    $insn,
                    "fnstsw word ptr [{sw}]",
                    "fnclex",
                    $store,
                    "fninit",
                    cw = in(reg) &cw,
                    a = in(reg) a.as_ptr(),
                    b = in(reg) b.as_ptr(),
                    sw = in(reg) &mut sw,
                    out = in(reg) out.as_mut_ptr(),
                    out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
                    out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
                    out("rax") _,
                );
            }
        };
    }
    match op {
        Op::Add => run!("fadd st(0), st(1)"),
        Op::Sub => run!("fsub st(0), st(1)"),
        Op::Subr => run!("fsubr st(0), st(1)"),
        Op::Mul => run!("fmul st(0), st(1)"),
        Op::Div => run!("fdiv st(0), st(1)"),
        Op::Divr => run!("fdivr st(0), st(1)"),
        Op::Sqrt => run!("fsqrt"),
        Op::Prem => run!("fprem"),
        Op::Prem1 => run!("fprem1"),
        Op::Rndint => run!("frndint"),
        Op::Scale => run!("fscale"),
        Op::Xtract => run!("fxtract"),
        Op::Com => run!("fcom st(1)"),
        Op::Ucom => run!("fucom st(1)"),
        Op::Fist32 => run!("fist dword ptr [{out}]", "fstp st(0)"),
        Op::Fistp16 => run!("fistp word ptr [{out}]", "fstp st(0)"),
        Op::Fistp64 => run!("fistp qword ptr [{out}]", "fstp st(0)"),
        Op::Tst => run!("ftst"),
        Op::Xam => run!("fxam"),
        Op::Comi => run!(
            "fcomi st, st(1)\npushfq\npop rax\nmov qword ptr [{out}], rax",
            "fstp st(0)"
        ),
        Op::Comp => run!("fcomp st(1)"),
        Op::Comip => run!(
            "fcomip st, st(1)\npushfq\npop rax\nmov qword ptr [{out}], rax",
            "fstp st(0)"
        ),
        Op::Addp => run!("faddp st(1), st"),
        Op::Fstp32 => run!("fstp dword ptr [{out}]", "fstp st(0)"),
        Op::Ucomi => run!(
            "fucomi st, st(1)\npushfq\npop rax\nmov qword ptr [{out}], rax",
            "fstp st(0)"
        ),
        Op::Fisttp32 => run!("fisttp dword ptr [{out}]", "fstp st(0)"),
        Op::Fbstp => run!("fbstp tbyte ptr [{out}]", "fstp st(0)"),
        Op::Fst32 => run!("fst dword ptr [{out}]", "fstp st(0)"),
        Op::Fst64 => run!("fst qword ptr [{out}]", "fstp st(0)"),
        Op::Ld32 => run!("fld dword ptr [{b}]"),
        Op::Ld64 => run!("fld qword ptr [{b}]"),
        Op::Sin => run!("fsin"),
        Op::Cos => run!("fcos"),
        Op::Tan => run!("fptan\nfstp st(0)"),
        Op::Sincos => run!("fsincos"),
        Op::Atan => run!("fpatan"),
        Op::F2xm1 => run!("f2xm1"),
        Op::Yl2x => run!("fyl2x"),
        Op::Yl2xp1 => run!("fyl2xp1"),
    }
    (out, sw)
}

fn emit(a: &mut CodeAssembler, op: Op) {
    match op {
        Op::Add => a.fadd_2(st0, st1),
        Op::Sub => a.fsub_2(st0, st1),
        Op::Subr => a.fsubr_2(st0, st1),
        Op::Mul => a.fmul_2(st0, st1),
        Op::Div => a.fdiv_2(st0, st1),
        Op::Divr => a.fdivr_2(st0, st1),
        Op::Sqrt => a.fsqrt(),
        Op::Prem => a.fprem(),
        Op::Prem1 => a.fprem1(),
        Op::Rndint => a.frndint(),
        Op::Scale => a.fscale(),
        Op::Xtract => a.fxtract(),
        Op::Com => a.fcom_2(st0, st1),
        Op::Ucom => a.fucom(st0, st1),
        Op::Fist32 => a.fist(dword_ptr(rsi + 32)),
        Op::Fistp16 => a.fistp(word_ptr(rsi + 32)),
        Op::Fistp64 => a.fistp(qword_ptr(rsi + 32)),
        Op::Tst => a.ftst(),
        Op::Xam => a.fxam(),
        Op::Comp => a.fcomp_2(st0, st1),
        Op::Addp => a.faddp(st1, st0),
        Op::Fstp32 => a.fstp(dword_ptr(rsi + 32)),
        Op::Comi | Op::Ucomi | Op::Comip => {
            match op {
                Op::Comi => a.fcomi(st0, st1),
                Op::Ucomi => a.fucomi(st0, st1),
                _ => a.fcomip(st0, st1),
            }
            .unwrap();
            a.pushfq().unwrap();
            a.pop(rax).unwrap();
            a.mov(qword_ptr(rsi + 32), rax)
        }
        Op::Fisttp32 => a.fisttp(dword_ptr(rsi + 32)),
        Op::Fbstp => a.fbstp(ptr(rsi + 32)),
        Op::Fst32 => a.fst(dword_ptr(rsi + 32)),
        Op::Fst64 => a.fst(qword_ptr(rsi + 32)),
        Op::Ld32 => a.fld(dword_ptr(rsi + 12)),
        Op::Ld64 => a.fld(qword_ptr(rsi + 12)),
        Op::Sin => a.fsin(),
        Op::Cos => a.fcos(),
        Op::Tan => a.fptan().and_then(|_| a.fstp(st0)),
        Op::Sincos => a.fsincos(),
        Op::Atan => a.fpatan(),
        Op::F2xm1 => a.f2xm1(),
        Op::Yl2x => a.fyl2x(),
        Op::Yl2xp1 => a.fyl2xp1(),
    }
    .unwrap();
}

/// Run all cases in one Long64 guest: a loop over the case table at `DATA_BASE`.
fn emulated(engine: EngineKind, op: Op, table: &[u8]) -> TestGuest {
    let code = assemble(Mode::Long64, |a| {
        let mut top = a.create_label();
        a.mov(rsi, DATA_BASE).unwrap();
        a.mov(ecx, CASES as u32).unwrap();
        a.set_label(&mut top).unwrap();
        a.fninit().unwrap();
        a.fldcw(word_ptr(rsi)).unwrap();
        a.fld(tword_ptr(rsi + 12)).unwrap();
        a.fld(tword_ptr(rsi + 2)).unwrap();
        emit(a, op);
        a.fnstsw(word_ptr(rsi + 42)).unwrap();
        a.fnclex().unwrap();
        if op.stores_memory() {
            a.fstp(st0).unwrap();
        } else {
            a.fstp(tword_ptr(rsi + 32)).unwrap();
        }
        a.add(rsi, STRIDE as i32).unwrap();
        a.dec(ecx).unwrap();
        a.jnz(top).unwrap();
    });
    let mut g = guest(engine, Mode::Long64, &code, &[], 0);
    g.write(DATA_BASE, table);
    g.run_to_halt();
    assert_no_exception(&g, "x87 oracle loop");
    g
}

/// Rounds of `CASES` cases per operation: 1 by default, more with
/// `CRANE86_X87_ORACLE_ROUNDS=n cargo test --test instructions host_x87`.
fn rounds() -> u64 {
    std::env::var("CRANE86_X87_ORACLE_ROUNDS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1)
}

fn check(op: Op, seed: u64) {
    for round in 0..rounds() {
        check_round(
            op,
            seed.wrapping_add(round.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        );
    }
}

fn check_round(op: Op, seed: u64) {
    let mut rng = Rng(seed);
    let mut table = vec![0u8; CASES * STRIDE as usize];
    let mut cases = Vec::with_capacity(CASES);
    for k in 0..CASES {
        let pc = [0u16, 2, 3][rng.below(3) as usize];
        let rc = rng.below(4) as u16;
        // A quarter of the cases unmask a random set of exceptions.
        let masks = if rng.below(4) == 0 {
            rng.below(64) as u16
        } else {
            0x3F
        };
        let cw = 0x40 | masks | (pc << 8) | (rc << 10);
        let a = operand(&mut rng, 0x3FFF);
        // B near A's exponent half of the time, so sums cancel and remainders stay short.
        let b = operand(&mut rng, a.0 & 0x7FFF);
        let b = if op == Op::Ld32 {
            (0, ieee_operand(&mut rng, 8, 23))
        } else if op == Op::Ld64 {
            (0, ieee_operand(&mut rng, 11, 52))
        } else if op == Op::Scale {
            (
                (rng.below(2) as u16 * 0x8000) | (0x3FFF + rng.below(15) as u16),
                b.1 | (1 << 63),
            )
        } else {
            b
        };
        let (a, b) = if op.approximate() {
            let (x, y) = function_operands(op, &mut rng);
            (f64_to_f80(x), f64_to_f80(y))
        } else {
            (a, b)
        };
        let cw = if op.approximate() { 0x037F } else { cw };
        let (ab, bb) = (to_bytes(a), to_bytes(b));
        let at = k * STRIDE as usize;
        table[at..at + 2].copy_from_slice(&cw.to_le_bytes());
        table[at + 2..at + 12].copy_from_slice(&ab);
        table[at + 12..at + 22].copy_from_slice(&bb);
        cases.push((cw, ab, bb));
    }
    for engine in EngineKind::emulators() {
        let g = emulated(engine, op, &table);
        let mut mismatches = Vec::new();
        for (k, &(cw, a, b)) in cases.iter().enumerate() {
            let (want, want_sw) = native(op, cw, a, b);
            let at = DATA_BASE + k as u64 * STRIDE;
            let mut got =
                u128::from(g.read_u64(at + 32)) | (u128::from(read_u16(&g, at + 40)) << 64);
            let mut want_bits = [0u8; 16];
            want_bits[..10].copy_from_slice(&want);
            let mut want = u128::from_le_bytes(want_bits);
            if matches!(op, Op::Comi | Op::Ucomi | Op::Comip) {
                // RFLAGS: compare the arithmetic flags only.
                const ARITH_FLAGS: u128 = 0x8D5;
                got &= ARITH_FLAGS;
                want &= ARITH_FLAGS;
            }
            let got_sw = read_u16(&g, at + 42);
            // An incomplete partial remainder may reduce by any step the SDM allows.
            let partial = matches!(op, Op::Prem | Op::Prem1) && want_sw & 0x400 != 0;
            // The SDM leaves TOP and the stack unchanged for an unmasked denormal load; AMD
            // hosts load the value anyway. crane86 follows the SDM.
            let amd_denormal_load =
                matches!(op, Op::Ld32 | Op::Ld64) && want_sw & 2 != 0 && cw & 2 == 0;
            let skip = partial || amd_denormal_load;
            let (result_ok, sw_ok) = if op.approximate() {
                // Good to about double precision; C2 (out of range), TOP, IE and ZE exact.
                let (g, w) = (f80_to_f64(got), f80_to_f64(want));
                // The x87 reduces trigonometric arguments with a 66-bit pi, crane86 exactly:
                // allow for the argument size and, for the tangent, its slope near poles.
                let x = f80_to_f64(u128::from_le_bytes({
                    let mut x = [0u8; 16];
                    x[..10].copy_from_slice(&a);
                    x
                }));
                let slope = if op == Op::Tan { 1.0 + w * w } else { 1.0 };
                let scale = w.abs().max(1.0) * x.abs().max(1.0) * slope;
                let close = (g - w).abs() <= scale * 2f64.powi(-50) || (g.is_nan() && w.is_nan());
                (close, (got_sw ^ want_sw) & 0x3C05 == 0)
            } else {
                (
                    skip || got == want,
                    skip || (got_sw ^ want_sw) & SW_COMPARED == 0,
                )
            };
            if !(result_ok && sw_ok) {
                mismatches.push(format!(
                    "{op:?} cw={cw:#06x} a={:#x} b={:#x}: got {got:#x} sw {got_sw:#06x}, host {want:#x} sw {want_sw:#06x}",
                    u128::from_le_bytes({ let mut x = [0u8; 16]; x[..10].copy_from_slice(&a); x }),
                    u128::from_le_bytes({ let mut x = [0u8; 16]; x[..10].copy_from_slice(&b); x }),
                ));
            }
        }
        assert!(
            mismatches.is_empty(),
            "{engine}: {} of {CASES} cases differ from the host x87:\n{}",
            mismatches.len(),
            mismatches
                .iter()
                .take(12)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn host_x87_add_sub() {
    check(Op::Add, 0xA11);
    check(Op::Sub, 0x5B);
}

#[test]
fn host_x87_mul_div() {
    check(Op::Mul, 0x3A1);
    check(Op::Div, 0xD1F);
}

#[test]
fn host_x87_sqrt_rndint_fist() {
    check(Op::Sqrt, 0x5C7);
    check(Op::Rndint, 0x121);
    check(Op::Fist32, 0xF15);
}

#[test]
fn host_x87_prem_scale_xtract_compare() {
    check(Op::Prem, 0x9E3);
    check(Op::Prem1, 0x9E4);
    check(Op::Scale, 0x5CA);
    check(Op::Xtract, 0x7E7);
    check(Op::Com, 0xC03);
    check(Op::Ucom, 0xC04);
    check(Op::Tst, 0x757);
    check(Op::Xam, 0xA8A);
    check(Op::Comi, 0xC01);
    check(Op::Ucomi, 0xC02);
}

#[test]
fn host_x87_popping_forms_with_unmasked_exceptions() {
    check(Op::Comp, 0xC0B);
    check(Op::Comip, 0xC0C);
    check(Op::Addp, 0xADD);
    check(Op::Fstp32, 0x5F3);
}

#[test]
fn host_x87_transcendentals_to_double_precision() {
    for (op, seed) in [
        (Op::Sin, 0x51),
        (Op::Cos, 0xC0),
        (Op::Tan, 0x7A),
        (Op::Sincos, 0x5C),
        (Op::Atan, 0xA7),
        (Op::F2xm1, 0x2E),
        (Op::Yl2x, 0x12),
        (Op::Yl2xp1, 0x13),
    ] {
        check(op, seed);
    }
}

#[test]
fn host_x87_reversed_forms() {
    check(Op::Subr, 0x5B2);
    check(Op::Divr, 0xD12);
}

#[test]
fn host_x87_integer_and_bcd_stores() {
    check(Op::Fistp16, 0xF16);
    check(Op::Fistp64, 0xF64);
    check(Op::Fisttp32, 0xF17);
    check(Op::Fbstp, 0xBCD);
}

#[test]
fn host_x87_single_double_loads_and_stores() {
    check(Op::Fst32, 0x532);
    check(Op::Fst64, 0x564);
    check(Op::Ld32, 0x132);
    check(Op::Ld64, 0x164);
}
