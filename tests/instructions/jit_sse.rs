//! The JIT's inline SSE2 forms against the interpreter: a long-mode program (translated on
//! its first run under `EngineKind::Jit`) that loads random values into XMM0..XMM7 and the
//! GPRs, runs a random sequence of register PXOR/PAND/PANDN/POR, PCMPEQB/W/D, PADD/PSUB of
//! every lane width, register moves, PMOVMSKB and MOVD/MOVQ both ways (with ALU ops on the
//! GPRs in between, so that register values flow between the two files), and stores every
//! XMM and GPR after each group; both engines must leave the same memory. Then the faults:
//! with CR0.TS set the first inline form is #NM, with CR4.OSFXSR clear #UD, each on the
//! instruction itself.

use crate::common::*;

const GROUPS: u64 = 120;
/// CR4.OSFXSR (the test guests start without it).
const OSFXSR: u64 = 1 << 9;
const SEED: u64 = DATA_BASE + 0x1_0000;

fn xmm(k: u64) -> AsmRegisterXmm {
    [xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7][k as usize]
}

fn one_form(a: &mut CodeAssembler, r: &mut Rng) {
    let (d, s) = (xmm(r.below(8)), xmm(r.below(8)));
    match r.below(22) {
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
        _ => a.movq(rsi, s),
    }
    .unwrap();
    match r.below(3) {
        0 => a.add(rbx, rax).unwrap(),
        1 => a.xor(rcx, rdx).unwrap(),
        _ => a.sub(rsi, rbx).unwrap(),
    }
}

#[test]
fn inline_sse_forms_match_the_interpreter() {
    let mut seed = Rng(0x2545_F491_4F6C_DD1D);
    let seeds: Vec<u8> = (0..16 * 8 + 8 * 4)
        .flat_map(|_| seed.next().to_le_bytes())
        .collect();
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
/// instruction itself and with the registers from before it.
#[test]
fn inline_sse_forms_fault_like_the_interpreter() {
    for (bit_in_cr0, want) in [(true, 7u8), (false, 6u8)] {
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
                a.mov(ebx, 5).unwrap();
                a.add(ebx, 1).unwrap();
                a.pxor(xmm1, xmm2).unwrap();
                a.mov(ebx, 9).unwrap();
            });
            let mut g = guest(engine, Mode::Long64, &code, &[], 0);
            g.cpu.cr4 |= OSFXSR;
            g.run_to_halt();
            assert_eq!(exception(&g), Some(want), "{engine}");
            assert_eq!(g.cpu.gpr[RBX], 6, "{engine}");
            out.push(faulting_offset(&g, false));
        }
        assert_eq!(out[0], out[1], "faulting instruction");
    }
}
