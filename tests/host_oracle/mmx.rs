//! The MMX-register side of the SSE oracle ([`crate::sse::Family::Mmx`]): initial MM0..MM7
//! values (and the 8-byte memory operands patched for the MM forms), the MASKMOVQ setup, and
//! a host-only check that MM registers and the x87 TOP, tags and exponents reach the code and
//! come back.
//!
//! MM values mix the XMM value kinds of [`crate::sse_values`] (random bits, pairs of
//! interesting single-precision lanes for CVTPI2PS/CVTPS2PI, integer edge words, short
//! strings) with MMX-specific ones: doubleword edges (the CVTPI2PS/CVTPI2PD inputs, including
//! values single precision cannot hold exactly), byte edges (saturation and the
//! PAVGB/PSADBW/PMOVMSKB corners) and small shift counts (for PSRLW mm, mm/m64 and friends,
//! whose count is the whole 64-bit operand).

use crate::gen::{MemPatch, DATA_SIZE, SCRATCH_BASE};
use crate::operands::mov_imm;
use crate::rng::Rng;
use crate::sse::{patch_for, Family};
use crate::sse_values::{f32_lane, xmm_value};
use crate::tables::MM;
use iced_x86::{Instruction, Register};

/// Interesting signed doublewords (as bit patterns).
const I32_EDGES: [u32; 14] = [
    0,
    1,
    0xFFFF_FFFF, // -1
    0x7FFF_FFFF,
    0x8000_0000,
    0x8000_0001,
    0x0100_0001, // 2^24 + 1: not exact in single precision
    0xFEFF_FFFF, // -(2^24 + 1)
    0x7FFF_FFC0, // rounds up to 2^31 in single precision
    0x00FF_FFFF, // 2^24 - 1: exact
    0x0000_7FFF,
    0xFFFF_8000,
    0x0000_FFFF,
    0x0001_0000,
];

/// Interesting bytes.
const BYTE_EDGES: [u8; 7] = [0, 1, 0x7F, 0x80, 0x81, 0xFE, 0xFF];

/// A 64-bit value for an MM register or an 8-byte memory operand.
pub fn mm_value(rng: &mut Rng) -> u64 {
    match rng.below(100) {
        0..=34 => xmm_value(rng) as u64,
        35..=49 => {
            let mut lane = || {
                if rng.chance(75) {
                    *rng.pick(&I32_EDGES)
                } else {
                    rng.next_u64() as u32
                }
            };
            u64::from(lane()) | u64::from(lane()) << 32
        }
        50..=59 => (0..8).fold(0u64, |v, k| {
            let b = if rng.chance(70) {
                *rng.pick(&BYTE_EDGES)
            } else {
                rng.next_u64() as u8
            };
            v | u64::from(b) << (8 * k)
        }),
        60..=69 => u64::from(f32_lane(rng)) | u64::from(f32_lane(rng)) << 32,
        70..=79 => rng.below(70),
        _ => rng.value(),
    }
}

/// All eight initial MM registers; some are copies of others (equal operands).
pub fn mm_file(rng: &mut Rng) -> [u64; 8] {
    let mut m = [0u64; 8];
    for v in m.iter_mut() {
        *v = mm_value(rng);
    }
    for _ in 0..rng.below(3) {
        let (a, b) = (rng.below(8) as usize, rng.below(8) as usize);
        m[a] = m[b];
    }
    m
}

/// 16 bytes for a memory operand of an MMX-family instruction: half of the time an MM value
/// in the first 8 bytes (the operand of the m64/m32/m16 forms), otherwise an XMM value (the
/// m128 operand of CVTPD2PI/CVTTPD2PI, and doubles/singles for the other conversions).
pub fn mm_patch(rng: &mut Rng) -> u128 {
    let v = xmm_value(rng);
    if rng.chance(50) {
        v & !u128::from(u64::MAX) | u128::from(mm_value(rng))
    } else {
        v
    }
}

pub fn random_mm(rng: &mut Rng) -> Register {
    MM[rng.below(8) as usize]
}

/// MASKMOVQ: the implicit destination DS:[RDI] inside the scratch data.
pub fn maskmovq(rng: &mut Rng) -> Option<(Vec<Instruction>, Option<MemPatch>)> {
    let asz = if rng.chance(20) { 32 } else { 64 };
    let ins =
        Instruction::with_maskmovq(asz, random_mm(rng), random_mm(rng), Register::None).ok()?;
    let a = SCRATCH_BASE + rng.below(DATA_SIZE - 32);
    let patch = patch_for(rng, a, Family::Mmx);
    Some((vec![mov_imm(Register::RDI, a), ins], patch))
}

/// Host-only check of the MMX plumbing: MM values reach the code and come back, MMX results
/// are seen in MM registers, GPRs and XMM registers, the x87 TOP, tags and exponents after
/// MMX code, after EMMS and after code without either are as the architecture says, and the
/// comparison reports MM and x87 differences. Integer sequences from random MM values run
/// unchanged in crane86 too (its side of the plumbing, without needing MMX support).
pub fn self_check() {
    use crate::driver::{compare, describe, diff};
    use crate::emu::{Emu, EmuResult};
    use crate::gen::{Generator, Sequence, X87};
    use crate::native::{run_batch, NativeResult};
    use crane86::machine::EngineKind;
    use iced_x86::code_asm::*;

    let mut gpr = [0u64; 16];
    gpr[4] = crate::gen::INITIAL_RSP;
    let mut a = CodeAssembler::new(64).unwrap();
    a.paddb(mm1, mm2).unwrap();
    a.movq(rax, mm1).unwrap();
    a.pmovmskb(ecx, mm3).unwrap();
    a.movq2dq(xmm4, mm5).unwrap();
    a.cvtpi2ps(xmm6, mm7).unwrap();
    a.movq(qword_ptr(crate::gen::SCRATCH_BASE + 0x40), mm6)
        .unwrap();
    let mut s = Sequence::fixed(a.instructions().to_vec(), gpr, 0, 7);
    s.mm = [
        0x0123_4567_89AB_CDEF,
        0x0101_0101_0101_01FF,
        0x0102_0304_0506_0701,
        0x8000_8000_0000_FF7F,
        0xDEAD_BEEF,
        0xFEDC_BA98_7654_3210,
        0x5555_AAAA_5555_AAAA,
        0xFFFF_FFFF_0000_0003, // -1, 3
    ];
    s.xmm[4] = u128::MAX;
    s.xmm[6] = u128::MAX;
    let native = run_batch(std::slice::from_ref(&s)).remove(0);
    let NativeResult::Done {
        gpr: out,
        rflags,
        xmm,
        mxcsr,
        mm,
        x87,
        mem,
    } = &native
    else {
        panic!("host run of the MMX self-check sequence crashed");
    };
    assert_eq!(mm[1], 0x0203_0405_0607_0800, "host PADDB wraps bytes");
    assert_eq!(out[0], mm[1], "host MOVQ RAX, MM1");
    assert_eq!(out[1], 0b1010_0010, "host PMOVMSKB ECX, MM3");
    assert_eq!(
        xmm[4],
        u128::from(s.mm[5]),
        "host MOVQ2DQ zeroes the upper half"
    );
    let splat_hi = !u128::from(u64::MAX);
    let cvt = u128::from(3.0f32.to_bits()) | u128::from((-1.0f32).to_bits()) << 32;
    assert_eq!(xmm[6], splat_hi | cvt, "host CVTPI2PS keeps the upper half");
    assert_eq!(
        u64::from_le_bytes(mem[0x40..0x48].try_into().unwrap()),
        s.mm[6],
        "host MOVQ store"
    );
    for k in [0, 2, 3, 4, 5, 6, 7] {
        assert_eq!(mm[k], s.mm[k], "host MM{k} round trip");
    }
    let mut exp = X87::INITIAL.exp;
    exp[1] = 0xFFFF;
    assert_eq!(
        *x87,
        X87 {
            top: 0,
            empty: 0,
            exp
        },
        "host x87 after MMX code: TOP 0, all valid, the written register's exponent all ones"
    );

    // EMMS empties the tags and (as every MMX instruction) sets TOP to 0; code without MMX
    // leaves the initial state.
    let mut a = CodeAssembler::new(64).unwrap();
    a.emms().unwrap();
    let mut b = CodeAssembler::new(64).unwrap();
    b.add(rax, rcx).unwrap();
    let seqs = [
        Sequence::fixed(a.instructions().to_vec(), gpr, 0, 7),
        Sequence::fixed(b.instructions().to_vec(), gpr, 0, 7),
    ];
    let natives = run_batch(&seqs);
    let x87_of = |n: &NativeResult| match n {
        NativeResult::Done { x87, .. } => *x87,
        NativeResult::Crashed(why) => panic!("host run crashed: {why}"),
    };
    assert_eq!(
        x87_of(&natives[0]),
        X87 {
            top: 0,
            empty: 0xFF,
            exp: X87::INITIAL.exp
        },
        "host x87 after EMMS"
    );
    assert_eq!(
        x87_of(&natives[1]),
        X87::INITIAL,
        "host x87 after integer code"
    );

    // The comparison against fabricated crane86 results.
    let agree = || EmuResult::Done {
        gpr: *out,
        rflags: *rflags,
        xmm: xmm.clone(),
        mxcsr: *mxcsr,
        mm: mm.clone(),
        x87: *x87,
        mem: mem.to_vec(),
    };
    let native = &native;
    assert!(compare(&s, native, &agree()).is_none());
    let mut bad = agree();
    if let EmuResult::Done { mm, .. } = &mut bad {
        mm[5] ^= 1 << 40;
    }
    let d = diff(&s, native, &bad).expect("MM difference missed");
    assert_eq!(d.what, "wrong mm");
    assert!(d.text.contains("mm5"), "{}", d.text);
    let mut bad = agree();
    if let EmuResult::Done { x87, .. } = &mut bad {
        x87.top = 5;
    }
    assert_eq!(
        diff(&s, native, &bad).expect("x87 difference missed").what,
        "wrong x87"
    );
    let report = describe(0, 0, EngineKind::Interp, &s, "");
    assert!(
        report.contains("paddb mm1,mm2") && report.contains("mm7"),
        "{report}"
    );

    // Integer sequences from random MM values: both sides carry them through unchanged.
    let int = Generator::new();
    let mut rng = Rng::new(0x3A3A_0001);
    let seqs: Vec<Sequence> = (0..200)
        .map(|_| {
            let mut s = int.sequence(&mut rng, 6);
            s.mm = mm_file(&mut rng);
            s
        })
        .collect();
    let natives = run_batch(&seqs);
    for engine in EngineKind::emulators() {
        let mut emu = Emu::new(engine);
        for (k, (s, native)) in seqs.iter().zip(&natives).enumerate() {
            if let NativeResult::Done { mm, x87, .. } = native {
                assert_eq!(**mm, s.mm, "host changed MM registers");
                assert_eq!(*x87, X87::INITIAL, "host changed the x87 state");
            }
            if let Some(why) = compare(s, native, &emu.run(s)) {
                panic!("{}{why}", describe(0, k as u64, engine, s, ""));
            }
        }
    }
}
