//! The JIT's inline scalar SSE floating point against the interpreter's soft float:
//! ADDSS/SUBSS/MULSS/DIVSS and the SD twins with a register and a memory source,
//! COMISS/UCOMISS/COMISD/UCOMISD with a memory source and CVTSI2SS/CVTSI2SD from 32- and
//! 64-bit GPRs, on every pair of edge values (normal numbers, results that overflow or
//! underflow, zeros, denormals, infinities, quiet and signaling NaNs) under several MXCSR
//! settings (fresh with PE clear, PE set, DAZ, rounding up, FTZ). The inline fast path
//! stands in for the soft float only where it cannot differ; both engines must leave the
//! same XMM1 (both halves), MXCSR and flags, and a few results are checked against the host.

use crate::common::*;

/// Doubles whose pairs hit every path: ordinary, inexact, overflowing, underflowing,
/// zero, denormal, infinite and NaN operands.
const DOUBLES: [u64; 16] = [
    0x3FF8_0000_0000_0000, // 1.5
    0xC002_0000_0000_0000, // -2.25
    0x3FD5_5555_5555_5555, // ~1/3
    0x7E37_E43C_8800_759C, // 1e300
    0x01A5_6E1F_C2F8_F359, // 1e-300
    0x0010_0000_0000_0000, // smallest normal
    0,
    0x8000_0000_0000_0000, // -0
    0x7FF0_0000_0000_0000, // infinity
    1,                     // smallest denormal
    0x7FF8_0000_0000_0000, // quiet NaN
    0x7FF0_0000_0000_0001, // signaling NaN
    0x4008_0000_0000_0000, // 3
    0x3FB9_9999_9999_999A, // 0.1
    // 1 + 2^-52 and 2^-1000 * (1 + 2^-52): a normal product whose rounding error (2^-1104)
    // is below the denormals, so Dekker's algorithm alone would call it exact.
    0x3FF0_0000_0000_0001,
    0x0170_0000_0000_0001,
];
const SINGLES: [u32; 16] = [
    0x3FC0_0000, // 1.5
    0xC010_0000, // -2.25
    0x3EAA_AAAB, // ~1/3
    0x7E96_7699, // 1e38
    0x0DA2_4260, // 1e-30
    0x0080_0000, // smallest normal
    0,
    0x8000_0000,
    0x7F80_0000,
    1,
    0x7FC0_0000,
    0x7F80_0001,
    0x4040_0000, // 3
    0x3DCC_CCCD, // 0.1
    0x3F80_0001, // 1 + 2^-23
    0x0380_0001, // 2^-120 * (1 + 2^-23)
];
/// MXCSR values the forms run under: fresh (PE clear), PE set, PE and DAZ, PE and round
/// up, PE and FTZ.
const CSRS: [u32; 5] = [0x1F80, 0x1FA0, 0x1FE0, 0x5FA0, 0x9FA0];
/// Forms: 0..8 register arithmetic (ADD/SUB/MUL/DIV SS, then SD), 8..16 the same with a
/// memory source, 16..20 COMISS/UCOMISS/COMISD/UCOMISD of memory, 20..24 CVTSI2SS r32/r64
/// and CVTSI2SD r32/r64 (of the pair's first value as an integer).
const FORMS: usize = 24;
const N: usize = DOUBLES.len();
const PAIRS: usize = N * N;
const TABLE: u64 = DATA_BASE + 0x1_0000;
/// Above the legacy VGA hole at 0xA0000 and the page tables at 1 MiB (the results take
/// 1 MiB).
const OUT: u64 = 0x40_0000;

fn is_double(form: usize) -> bool {
    match form {
        0..16 => form % 8 >= 4,
        16..20 => form >= 18,
        _ => form >= 22,
    }
}

/// The operand pairs (16 bytes each) of every form, in form, x, y order.
fn table() -> Vec<u8> {
    let mut t = Vec::new();
    for form in 0..FORMS {
        for x in 0..N {
            for y in 0..N {
                let (a, b) = if is_double(form) {
                    (DOUBLES[x], DOUBLES[y])
                } else {
                    (u64::from(SINGLES[x]), u64::from(SINGLES[y]))
                };
                t.extend_from_slice(&a.to_le_bytes());
                t.extend_from_slice(&b.to_le_bytes());
            }
        }
    }
    t
}

fn emit_form(a: &mut CodeAssembler, form: usize) {
    let m = qword_ptr(rsi + 8);
    let d = dword_ptr(rsi + 8);
    match form {
        0 => a.addss(xmm1, xmm2),
        1 => a.subss(xmm1, xmm2),
        2 => a.mulss(xmm1, xmm2),
        3 => a.divss(xmm1, xmm2),
        4 => a.addsd(xmm1, xmm2),
        5 => a.subsd(xmm1, xmm2),
        6 => a.mulsd(xmm1, xmm2),
        7 => a.divsd(xmm1, xmm2),
        8 => a.addss(xmm1, d),
        9 => a.subss(xmm1, d),
        10 => a.mulss(xmm1, d),
        11 => a.divss(xmm1, d),
        12 => a.addsd(xmm1, m),
        13 => a.subsd(xmm1, m),
        14 => a.mulsd(xmm1, m),
        15 => a.divsd(xmm1, m),
        16 => a.comiss(xmm1, d),
        17 => a.ucomiss(xmm1, d),
        18 => a.comisd(xmm1, m),
        19 => a.ucomisd(xmm1, m),
        20 => a.cvtsi2ss(xmm1, eax),
        21 => a.cvtsi2ss(xmm1, rax),
        22 => a.cvtsi2sd(xmm1, eax),
        _ => a.cvtsi2sd(xmm1, rax),
    }
    .unwrap();
}

#[test]
fn inline_scalar_float_matches_the_interpreter() {
    let pairs = table();
    let mut results = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            a.mov(rdi, OUT).unwrap();
            for form in 0..FORMS {
                for csr in CSRS {
                    let mut top = a.create_label();
                    a.mov(rsi, TABLE + (form * PAIRS * 16) as u64).unwrap();
                    a.mov(ecx, PAIRS as u32).unwrap();
                    a.set_label(&mut top).unwrap();
                    // XMM1 = the first value with a marker above lane 0; XMM2 the second.
                    a.movq(xmm1, qword_ptr(rsi)).unwrap();
                    a.mov(rax, 0x1234_5678_9ABC_DEF0u64).unwrap();
                    a.movq(xmm3, rax).unwrap();
                    a.punpcklqdq(xmm1, xmm3).unwrap();
                    a.movq(xmm2, qword_ptr(rsi + 8)).unwrap();
                    a.mov(rax, qword_ptr(rsi)).unwrap();
                    a.mov(dword_ptr(rdi + 28), csr).unwrap();
                    a.ldmxcsr(dword_ptr(rdi + 28)).unwrap();
                    a.mov(edx, 0x8D5).unwrap(); // OF SF AF PF CF
                    a.push(rdx).unwrap();
                    a.popfq().unwrap();
                    emit_form(a, form);
                    a.pushfq().unwrap();
                    a.pop(rdx).unwrap();
                    a.movdqu(xmmword_ptr(rdi), xmm1).unwrap();
                    a.mov(qword_ptr(rdi + 16), rdx).unwrap();
                    a.stmxcsr(dword_ptr(rdi + 24)).unwrap();
                    a.add(rsi, 16).unwrap();
                    a.add(rdi, 32).unwrap();
                    a.sub(ecx, 1).unwrap();
                    a.jnz(top).unwrap();
                }
            }
        });
        assert!(code.len() < STUBS as usize, "program overlaps the stubs");
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.cpu.cr4 |= 1 << 9; // OSFXSR
        g.write(TABLE, &pairs);
        g.run_to_halt();
        assert_no_exception(&g, &format!("{engine}: scalar float"));
        // Per case: XMM1 low, XMM1 high, the flags, MXCSR.
        let out: Vec<[u64; 4]> = (0..(FORMS * CSRS.len() * PAIRS) as u64)
            .map(|k| {
                let at = OUT + 32 * k;
                [
                    g.read_u64(at),
                    g.read_u64(at + 8),
                    g.read_u64(at + 16) & 0x8D5,
                    g.read_u64(at + 24) & 0xFFFF_FFFF,
                ]
            })
            .collect();
        results.push((engine, out));
    }
    let case = |k: usize| {
        let (form, csr, x, y) = (
            k / (CSRS.len() * PAIRS),
            CSRS[k / PAIRS % CSRS.len()],
            k / N % N,
            k % N,
        );
        format!("form {form} MXCSR {csr:#x} x {x} y {y}")
    };
    let (e0, want) = &results[0];
    for (e, got) in &results[1..] {
        for (k, (w, g)) in want.iter().zip(got).enumerate() {
            assert_eq!(w, g, "{}: {e0} {w:x?} vs {e} {g:x?}", case(k));
        }
    }
    // Against the host: MULSD of register 1.5 by -2.25 with PE set, the upper half kept;
    // ADDSD of memory 1e300 + 1e300 (normal); CVTSI2SD r64 of 1/3's bits (inexact: PE).
    let at = |form: usize, csr: usize, x: usize, y: usize| {
        &want[(form * CSRS.len() + csr) * PAIRS + x * N + y]
    };
    let product = at(6, 1, 0, 1);
    assert_eq!(f64::from_bits(product[0]), 1.5 * -2.25, "mulsd");
    assert_eq!(
        product[1], 0x1234_5678_9ABC_DEF0,
        "mulsd keeps the upper half"
    );
    assert_eq!(product[3], 0x1FA0, "mulsd: exact, MXCSR unchanged");
    let sum = at(12, 0, 3, 3);
    assert_eq!(f64::from_bits(sum[0]), 1e300 + 1e300, "addsd of memory");
    let third = at(7, 0, 0, 2);
    assert_eq!(third[3] & 0x20, 0x20, "1.5 / (1/3) is inexact: PE");
    let converted = at(23, 0, 2, 0);
    assert_eq!(
        f64::from_bits(converted[0]),
        DOUBLES[2] as i64 as f64,
        "cvtsi2sd"
    );
    assert_eq!(converted[3], 0x1FA0, "cvtsi2sd of a 63-bit value sets PE");
}
