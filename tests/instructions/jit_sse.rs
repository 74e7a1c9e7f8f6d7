//! The JIT's inline SSE2 forms against the interpreter: a long-mode program (translated on
//! its first run under `EngineKind::Jit`) that loads random values into XMM0..XMM7 and the
//! GPRs, runs a random sequence of register PXOR/PAND/PANDN/POR, PCMPEQB/W/D, PADD/PSUB of
//! every lane width, register moves, PMOVMSKB, MOVD/MOVQ both ways, the shuffles
//! (PUNPCKL*/PUNPCKH*, PSHUFD/PSHUFLW/PSHUFHW, PALIGNR, PSLLDQ/PSRLDQ with any immediate)
//! and the lane shifts by immediates around and beyond the lane width (with ALU ops on the
//! GPRs in between, so that register values flow between the two files), and stores every
//! XMM and GPR after each group; both engines must leave the same memory. Likewise the
//! memory forms: random loads, stores and lane operations of every width on a buffer that
//! straddles a page boundary (aligned forms at multiples of 16, the others anywhere, so
//! some accesses cross the page and take the slow path). Then the faults: with CR0.TS set
//! the first inline form is #NM, with CR4.OSFXSR clear #UD, and a misaligned MOVAPS or
//! PCMPEQB m128 is #GP, each on the instruction itself.

use crate::common::*;
use iced_x86::{Code, Instruction, MemoryOperand, Register};

const GROUPS: u64 = 120;
/// CR4.OSFXSR (the test guests start without it).
const OSFXSR: u64 = 1 << 9;
const SEED: u64 = DATA_BASE + 0x1_0000;

fn xmm(k: u64) -> AsmRegisterXmm {
    [xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7][k as usize]
}

fn one_form(a: &mut CodeAssembler, r: &mut Rng) {
    let (d, s) = (xmm(r.below(8)), xmm(r.below(8)));
    // Shuffle immediates of any value; shift counts around and beyond the lane widths.
    let imm = r.below(256) as i32;
    let count = [0, 1, 7, 8, 15, 16, 31, 32, 63, 64, 200][r.below(11) as usize];
    match r.below(55) {
        0 => a.pxor(d, s),
        1 => a.pand(d, s),
        2 => a.pandn(d, s),
        3 => a.por(d, s),
        4 => a.pcmpeqb(d, s),
        5 => a.pcmpeqw(d, s),
        6 => a.pcmpeqd(d, s),
        7 => a.paddb(d, s),
        8 => a.paddw(d, s),
        9 => a.paddd(d, s),
        10 => a.paddq(d, s),
        11 => a.psubb(d, s),
        12 => a.psubw(d, s),
        13 => a.psubd(d, s),
        14 => a.psubq(d, s),
        15 => a.movdqa(d, s),
        16 => a.movups(d, s),
        17 => a.pmovmskb(eax, s),
        18 => a.movd(d, ebx),
        19 => a.movq(d, rcx),
        20 => a.movd(edx, s),
        21 => a.movq(rsi, s),
        22 => a.punpcklbw(d, s),
        23 => a.punpcklwd(d, s),
        24 => a.punpckldq(d, s),
        25 => a.punpcklqdq(d, s),
        26 => a.punpckhbw(d, s),
        27 => a.punpckhwd(d, s),
        28 => a.punpckhdq(d, s),
        29 => a.punpckhqdq(d, s),
        30 => a.pshufd(d, s, imm),
        31 => a.pshuflw(d, s, imm),
        32 => a.pshufhw(d, s, imm),
        33 => a.palignr(d, s, count.min(16)),
        34 => a.palignr(d, s, imm),
        35 => a.pslldq(d, count),
        36 => a.psrldq(d, count),
        37 => a.psllw(d, count),
        38 => a.pslld(d, count),
        39 => a.psllq(d, count),
        40 => a.psrlw(d, count),
        41 => a.psrld(d, count),
        42 => a.psrlq(d, count),
        43 => a.psraw(d, count),
        44 => a.psrad(d, count),
        45 => a.pshufb(d, s),
        46 => a.xorps(d, s),
        47 => a.xorpd(d, s),
        48 => a.andps(d, s),
        49 => a.andpd(d, s),
        50 => a.andnps(d, s),
        51 => a.orpd(d, s),
        52 => a.movapd(d, s),
        53 => a.movupd(d, s),
        _ => a.pshufd(d, d, imm),
    }
    .unwrap();
    match r.below(3) {
        0 => a.add(rbx, rax).unwrap(),
        1 => a.xor(rcx, rdx).unwrap(),
        _ => a.sub(rsi, rbx).unwrap(),
    }
}

/// A buffer of 256 bytes whose middle is a page boundary.
const BUF: u64 = DATA_BASE + 0x3000 - 128;
/// Where the memory-form test stores the XMM registers after each group.
const OUT: u64 = DATA_BASE + 0x8000;

/// `words` random 64-bit words from `seed`, as bytes.
fn random_bytes(seed: u64, words: usize) -> Vec<u8> {
    let mut r = Rng(seed);
    (0..words).flat_map(|_| r.next().to_le_bytes()).collect()
}

fn one_memory_form(a: &mut CodeAssembler, r: &mut Rng) {
    let k = r.below(8);
    let x = xmm(k);
    let x_reg = Register::XMM0 + k as u32;
    // Any offset for the unaligned forms (the widest access still inside the buffer), a
    // multiple of 16 for the aligned ones; the base is R9, sometimes with R10 as index.
    let any = r.below(256 - 16) as i32;
    let at16 = (r.below(16) * 16) as i32;
    let indexed = r.below(2) == 0;
    let m = |off: i32| {
        if indexed {
            r9 + r10 * 2 + (off - 32)
        } else {
            r9 + off
        }
    };
    let raw = |a: &mut CodeAssembler, code: Code, load: bool, off: i32| {
        let mem = if indexed {
            MemoryOperand::with_base_index_scale_displ_size(
                Register::R9,
                Register::R10,
                2,
                i64::from(off - 32),
                1,
            )
        } else {
            MemoryOperand::with_base_displ(Register::R9, i64::from(off))
        };
        let i = if load {
            Instruction::with2(code, x_reg, mem)
        } else {
            Instruction::with2(code, mem, x_reg)
        };
        a.add_instruction(i.unwrap())
    };
    match r.below(30) {
        0 => a.movdqu(x, xmmword_ptr(m(any))),
        1 => a.movups(x, xmmword_ptr(m(any))),
        2 => a.movdqa(x, xmmword_ptr(m(at16))),
        3 => a.movaps(x, xmmword_ptr(m(at16))),
        4 => a.movd(x, dword_ptr(m(any))),
        5 => raw(a, Code::Movq_xmm_rm64, true, any),
        6 => raw(a, Code::Movq_xmm_xmmm64, true, any),
        7 => a.movss(x, dword_ptr(m(any))),
        8 => a.movsd_2(x, qword_ptr(m(any))),
        9 => a.movdqu(xmmword_ptr(m(any)), x),
        10 => a.movups(xmmword_ptr(m(any)), x),
        11 => a.movdqa(xmmword_ptr(m(at16)), x),
        12 => a.movaps(xmmword_ptr(m(at16)), x),
        13 => a.movntdq(xmmword_ptr(m(at16)), x),
        14 => a.movd(dword_ptr(m(any)), x),
        15 => raw(a, Code::Movq_rm64_xmm, false, any),
        16 => raw(a, Code::Movq_xmmm64_xmm, false, any),
        17 => a.movss(dword_ptr(m(any)), x),
        18 => a.movsd_2(qword_ptr(m(any)), x),
        19 => a.pcmpeqb(x, xmmword_ptr(m(at16))),
        20 => a.pxor(x, xmmword_ptr(m(at16))),
        21 => a.paddd(x, xmmword_ptr(m(at16))),
        22 => a.psubq(x, xmmword_ptr(m(at16))),
        23 => a.pshufb(x, xmmword_ptr(m(at16))),
        24 => a.andpd(x, xmmword_ptr(m(at16))),
        25 => a.xorps(x, xmmword_ptr(m(at16))),
        26 => a.movapd(x, xmmword_ptr(m(at16))),
        27 => a.movapd(xmmword_ptr(m(at16)), x),
        28 => a.orps(x, xmmword_ptr(m(at16))),
        _ => a.pandn(x, xmmword_ptr(m(at16))),
    }
    .unwrap();
}

#[test]
fn inline_sse_memory_forms_match_the_interpreter() {
    let seeds = random_bytes(0x5DEE_CE66_D1CE_4E5B, (16 * 8 + 256) / 8);
    let mut results = Vec::new();
    for engine in EngineKind::emulators() {
        let mut r = Rng(0x2F1B_34C9_8A07_11D3);
        let code = assemble(Mode::Long64, |a| {
            a.mov(r8, SEED).unwrap();
            a.mov(r9, BUF).unwrap();
            a.mov(r10, 16u64).unwrap();
            a.mov(rdi, OUT).unwrap();
            for k in 0..8 {
                a.movdqu(xmm(k), xmmword_ptr(r8 + 16 * k as i32)).unwrap();
            }
            for _ in 0..GROUPS {
                for _ in 0..4 {
                    one_memory_form(a, &mut r);
                }
                for k in 0..8 {
                    a.movdqu(xmmword_ptr(rdi + 16 * k as i32), xmm(k)).unwrap();
                }
                a.add(rdi, 128).unwrap();
            }
        });
        assert!(code.len() < STUBS as usize, "program overlaps the stubs");
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.cpu.cr4 |= OSFXSR;
        g.write(SEED, &seeds[..128]);
        g.write(BUF, &seeds[128..]);
        g.run_to_halt();
        assert_no_exception(&g, "inline SSE memory forms");
        let out: Vec<u64> = (0..GROUPS * 16).map(|k| g.read_u64(OUT + 8 * k)).collect();
        let buf: Vec<u64> = (0..32).map(|k| g.read_u64(BUF + 8 * k)).collect();
        results.push((engine, out, buf));
    }
    let (e0, out0, buf0) = &results[0];
    for (e, out, buf) in &results[1..] {
        for (k, (a, b)) in out0.iter().zip(out).enumerate() {
            assert_eq!(
                a,
                b,
                "group {} XMM{} {}: {e0} {a:#x} vs {e} {b:#x}",
                k / 16,
                k % 16 / 2,
                if k % 2 == 0 { "low" } else { "high" }
            );
        }
        assert_eq!(buf0, buf, "{e0} vs {e}: the buffer");
    }
}

#[test]
fn inline_sse_forms_match_the_interpreter() {
    let seeds = random_bytes(0x2545_F491_4F6C_DD1D, 16 * 8 + 8 * 4);
    let mut results = Vec::new();
    for engine in EngineKind::emulators() {
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        let code = assemble(Mode::Long64, |a| {
            a.mov(rdi, DATA_BASE).unwrap();
            a.mov(r8, SEED).unwrap();
            for k in 0..8 {
                a.movdqu(xmm(k), xmmword_ptr(r8 + 16 * k as i32)).unwrap();
            }
            for (k, reg) in [rax, rbx, rcx, rdx, rsi].into_iter().enumerate() {
                a.mov(reg, qword_ptr(r8 + 128 + 8 * k as i32)).unwrap();
            }
            for _ in 0..GROUPS {
                for _ in 0..4 {
                    one_form(a, &mut r);
                }
                for k in 0..8 {
                    a.movdqu(xmmword_ptr(rdi + 16 * k as i32), xmm(k)).unwrap();
                }
                for (k, reg) in [rax, rbx, rcx, rdx, rsi].into_iter().enumerate() {
                    a.mov(qword_ptr(rdi + 128 + 8 * k as i32), reg).unwrap();
                }
                a.add(rdi, 168).unwrap();
            }
        });
        assert!(code.len() < STUBS as usize, "program overlaps the stubs");
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.cpu.cr4 |= OSFXSR;
        g.write(SEED, &seeds);
        g.run_to_halt();
        assert_no_exception(&g, "inline SSE forms");
        let mem: Vec<u64> = (0..GROUPS * 21)
            .map(|k| g.read_u64(DATA_BASE + 8 * k))
            .collect();
        results.push((engine, mem, g.cpu.fpu.xmm));
    }
    let (e0, mem0, x0) = &results[0];
    for (e, mem, x) in &results[1..] {
        for (k, (a, b)) in mem0.iter().zip(mem).enumerate() {
            assert_eq!(
                a,
                b,
                "group {} word {}: {e0} {a:#x} vs {e} {b:#x}",
                k / 21,
                k % 21
            );
        }
        assert_eq!(x0, x, "{e0} vs {e}: final XMM registers");
    }
}

/// With CR0.TS set an inline SSE form raises #NM, with CR4.OSFXSR clear #UD, on the
/// instruction itself and with the registers from before it; a register form, a load and
/// a store each.
#[test]
fn inline_sse_forms_fault_like_the_interpreter() {
    type Form = fn(&mut CodeAssembler) -> Result<(), IcedError>;
    let forms: [(&str, Form); 4] = [
        ("pxor xmm1, xmm2", |a| a.pxor(xmm1, xmm2)),
        ("comisd xmm1, xmm2", |a| a.comisd(xmm1, xmm2)),
        ("movdqu xmm1, [rdi]", |a| a.movdqu(xmm1, xmmword_ptr(rdi))),
        ("movq [rdi], xmm1", |a| a.movq(qword_ptr(rdi), xmm1)),
    ];
    for (bit_in_cr0, want) in [(true, 7u8), (false, 6u8)] {
        for (name, form) in forms {
            let mut out = Vec::new();
            for engine in EngineKind::emulators() {
                let code = assemble(Mode::Long64, |a| {
                    if bit_in_cr0 {
                        a.mov(rax, cr0).unwrap();
                        a.or(rax, 8).unwrap(); // TS
                        a.mov(cr0, rax).unwrap();
                    } else {
                        a.mov(rax, cr4).unwrap();
                        a.and(rax, !(1i32 << 9)).unwrap(); // OSFXSR
                        a.mov(cr4, rax).unwrap();
                    }
                    a.mov(edi, DATA_BASE as u32).unwrap();
                    // The page in the TLB, so the inline form's own check decides.
                    a.mov(dword_ptr(rdi + 64), eax).unwrap();
                    a.mov(ebx, 5).unwrap();
                    a.add(ebx, 1).unwrap();
                    form(a).unwrap();
                    a.mov(ebx, 9).unwrap();
                });
                let mut g = guest(engine, Mode::Long64, &code, &[], 0);
                g.cpu.cr4 |= OSFXSR;
                g.run_to_halt();
                assert_eq!(exception(&g), Some(want), "{engine} {name}");
                assert_eq!(g.cpu.gpr[RBX], 6, "{engine} {name}");
                out.push(faulting_offset(&g, false));
            }
            assert_eq!(out[0], out[1], "{name}: faulting instruction");
        }
    }
}

/// A 16-byte SSE access that needs alignment raises #GP(0) at a misaligned address, on
/// the instruction, with nothing stored; the unaligned forms at the same address do not.
#[test]
fn misaligned_sse_memory_forms_fault_like_the_interpreter() {
    type Form = fn(&mut CodeAssembler) -> Result<(), IcedError>;
    let forms: [(&str, Form, bool); 5] = [
        (
            "andpd xmm1, [rdi+8]",
            |a| a.andpd(xmm1, xmmword_ptr(rdi + 8)),
            true,
        ),
        (
            "movaps xmm1, [rdi+8]",
            |a| a.movaps(xmm1, xmmword_ptr(rdi + 8)),
            true,
        ),
        (
            "movdqa [rdi+8], xmm1",
            |a| a.movdqa(xmmword_ptr(rdi + 8), xmm1),
            true,
        ),
        (
            "pcmpeqb xmm1, [rdi+8]",
            |a| a.pcmpeqb(xmm1, xmmword_ptr(rdi + 8)),
            true,
        ),
        (
            "movdqu [rdi+8], xmm1",
            |a| a.movdqu(xmmword_ptr(rdi + 8), xmm1),
            false,
        ),
    ];
    for (name, form, faults) in forms {
        let mut out = Vec::new();
        for engine in EngineKind::emulators() {
            let code = assemble(Mode::Long64, |a| {
                a.mov(edi, DATA_BASE as u32).unwrap();
                // The page in the TLB, so the inline form's own check decides.
                a.mov(dword_ptr(rdi + 64), eax).unwrap();
                a.pcmpeqb(xmm1, xmm1).unwrap(); // all ones
                a.mov(ebx, 6).unwrap();
                form(a).unwrap();
                a.mov(ebx, 9).unwrap();
            });
            let mut g = guest(engine, Mode::Long64, &code, &[], 0);
            g.cpu.cr4 |= OSFXSR;
            g.run_to_halt();
            let stored = g.read_u64(DATA_BASE + 8);
            if faults {
                assert_eq!(exception(&g), Some(13), "{engine} {name}");
                assert_eq!(g.cpu.gpr[RBX], 6, "{engine} {name}");
                assert_eq!(stored, 0, "{engine} {name}: nothing stored");
                out.push(faulting_offset(&g, true));
            } else {
                assert_no_exception(&g, name);
                assert_eq!(stored, u64::MAX, "{engine} {name}");
            }
        }
        if faults {
            assert_eq!(out[0], out[1], "{name}: faulting instruction");
        }
    }
}

/// COMISS/UCOMISS/COMISD/UCOMISD between registers, on every pair of a set of values
/// covering each class (zeros of both signs, normals, the extremes, infinities, denormals,
/// quiet and signaling NaNs): the arithmetic flags and MXCSR (whose IE and DE only the
/// interpreter's path sets) must equal the interpreter's, and for ordered operands the
/// flags must be the comparison the SDM defines (ZF: equal, CF: less, the others clear).
#[test]
fn float_compares_match_the_interpreter() {
    let doubles: [u64; 12] = [
        0.0f64.to_bits(),
        (-0.0f64).to_bits(),
        1.0f64.to_bits(),
        (-1.5f64).to_bits(),
        f64::MAX.to_bits(),
        f64::MIN_POSITIVE.to_bits(),
        f64::INFINITY.to_bits(),
        f64::NEG_INFINITY.to_bits(),
        1,                     // the smallest denormal
        0x800F_FFFF_FFFF_FFFF, // a negative denormal
        0x7FF8_0000_0000_0000, // quiet NaN
        0x7FF0_0000_0000_0001, // signaling NaN
    ];
    let singles: [u32; 12] = [
        0.0f32.to_bits(),
        (-0.0f32).to_bits(),
        1.0f32.to_bits(),
        (-1.5f32).to_bits(),
        f32::MAX.to_bits(),
        f32::MIN_POSITIVE.to_bits(),
        f32::INFINITY.to_bits(),
        f32::NEG_INFINITY.to_bits(),
        1,
        0x807F_FFFF,
        0x7FC0_0000,
        0x7F80_0001,
    ];
    let n = doubles.len();
    let cases = n * n;
    // Per form, the operand pairs (16 bytes each) in the order x, y.
    let table = DATA_BASE + 0x1_0000;
    let mut pairs = Vec::new();
    for form in 0..4 {
        for x in 0..n {
            for y in 0..n {
                let (first, second) = if form < 2 {
                    (doubles[x], doubles[y])
                } else {
                    (u64::from(singles[x]), u64::from(singles[y]))
                };
                pairs.extend_from_slice(&first.to_le_bytes());
                pairs.extend_from_slice(&second.to_le_bytes());
            }
        }
    }
    let mut results = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            a.mov(rsi, table).unwrap();
            a.mov(rdi, DATA_BASE).unwrap();
            for form in 0..4 {
                let mut top = a.create_label();
                a.mov(ecx, cases as u32).unwrap();
                a.set_label(&mut top).unwrap();
                a.movq(xmm1, qword_ptr(rsi)).unwrap();
                a.movq(xmm2, qword_ptr(rsi + 8)).unwrap();
                // Fresh MXCSR (all exceptions masked) and flags that all change.
                a.mov(dword_ptr(rdi + 12), 0x1F80).unwrap();
                a.ldmxcsr(dword_ptr(rdi + 12)).unwrap();
                a.mov(eax, 0x8D5).unwrap(); // OF SF AF PF CF
                a.push(rax).unwrap();
                a.popfq().unwrap();
                match form {
                    0 => a.comisd(xmm1, xmm2),
                    1 => a.ucomisd(xmm1, xmm2),
                    2 => a.comiss(xmm1, xmm2),
                    _ => a.ucomiss(xmm1, xmm2),
                }
                .unwrap();
                a.pushfq().unwrap();
                a.pop(rax).unwrap();
                a.mov(qword_ptr(rdi), rax).unwrap();
                a.stmxcsr(dword_ptr(rdi + 8)).unwrap();
                a.add(rsi, 16).unwrap();
                a.add(rdi, 16).unwrap();
                a.sub(ecx, 1).unwrap();
                a.jnz(top).unwrap();
            }
        });
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.cpu.cr4 |= OSFXSR;
        g.write(table, &pairs);
        g.run_to_halt();
        assert_no_exception(&g, "float compares");
        // Indexed by form, x, y.
        let out: Vec<(u64, u64)> = (0..(4 * cases) as u64)
            .map(|k| {
                let at = DATA_BASE + 16 * k;
                (g.read_u64(at) & 0x8D5, g.read_u64(at + 8) & 0xFFFF_FFFF)
            })
            .collect();
        results.push((engine, out));
    }
    let (e0, want) = &results[0];
    for (e, got) in &results[1..] {
        for (k, (w, g)) in want.iter().zip(got).enumerate() {
            let (form, x, y) = (k / cases, k / n % n, k % n);
            assert_eq!(w, g, "x {x} y {y} form {form}: {e0} {w:x?} vs {e} {g:x?}");
        }
    }
    // The SDM's flags for the ordered pairs.
    for (k, &(fl, _)) in want.iter().enumerate() {
        let (form, x, y) = (k / cases, k / n % n, k % n);
        let order = if form < 2 {
            f64::from_bits(doubles[x]).partial_cmp(&f64::from_bits(doubles[y]))
        } else {
            f32::from_bits(singles[x]).partial_cmp(&f32::from_bits(singles[y]))
        };
        let expect = match order {
            None => 0x45, // ZF PF CF
            Some(std::cmp::Ordering::Less) => 0x1,
            Some(std::cmp::Ordering::Equal) => 0x40,
            Some(std::cmp::Ordering::Greater) => 0,
        };
        assert_eq!(fl, expect, "x {x} y {y} form {form}");
    }
}
