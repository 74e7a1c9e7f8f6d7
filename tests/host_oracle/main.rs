//! Host-CPU differential tester: random sequences of unprivileged 64-bit integer instructions
//! run natively (in a forked child, see [`native`]) and in crane86 (a Long64 test guest per
//! engine, see [`emu`]); all 16 GPRs, RFLAGS (arithmetic flags and DF, minus the flags left
//! undefined by the sequence), XMM0..XMM15, MXCSR, MM0..MM7, the x87 TOP, tags and exponents,
//! and the scratch memory must agree.
//!
//! The default run (part of `cargo test`) uses a fixed seed and 100,000 sequences. A longer
//! or different run:
//!
//! ```text
//! CRANE86_ORACLE_SEED=12345 CRANE86_ORACLE_COUNT=2000000 \
//!     cargo test --test host_oracle -- --nocapture
//! ```
//!
//! A second group of sequences covers SSE..SSE4.2 (see [`sse`] and [`sse_run`]): each has
//! exactly one SSE instruction, so a failure names its mnemonic. Its knobs:
//!
//! ```text
//! CRANE86_ORACLE_SSE_COUNT=30000     sequences (default 30,000; the seed is shared)
//! CRANE86_ORACLE_SSE_ONLY=ADDPS,PSHUFB   only these mnemonics
//! CRANE86_ORACLE_SSE_REPORT=1        print the per-mnemonic pass/fail table
//! CRANE86_ORACLE_SSE_DETAILS=10      detailed mismatch reports (at most one per mnemonic)
//! ```
//!
//! A third group covers the MMX-register forms (see [`mmx`]: MMX, the SSE/SSE2/SSSE3
//! instructions on MM registers, the MM forms of the CVTPI/CVTPS2PI family, MOVQ2DQ/MOVDQ2Q,
//! EMMS), one such instruction per sequence, reported per mnemonic with an `(mm)` suffix:
//!
//! ```text
//! CRANE86_ORACLE_MMX_COUNT=20000     sequences (default 20,000)
//! CRANE86_ORACLE_MMX_ONLY=PADDB,PSHUFW   only these mnemonics (with or without "(mm)")
//! CRANE86_ORACLE_MMX_REPORT=1        print the per-mnemonic pass/fail table
//! CRANE86_ORACLE_MMX_DETAILS=10      detailed mismatch reports (at most one per mnemonic)
//! ```
//!
//! Only x86-64 Linux hosts can run it; elsewhere the test prints why and passes.

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod counts;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod emu;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod gen;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod mmx;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod native;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod operands;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod rng;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod setups;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod sse;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod sse_run;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod sse_values;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod tables;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod driver {
    use crate::emu::{Emu, EmuResult};
    use crate::gen::{Generator, Sequence, COMPARED_FLAGS, MXCSR_DEFAULT, SCRATCH_BASE, X87};
    use crate::native::{run_batch, NativeResult};
    use crate::rng::Rng;
    use crane86::machine::EngineKind;
    use std::time::Instant;

    pub const DEFAULT_SEED: u64 = 0x000C_2A4E_0086;
    pub const DEFAULT_COUNT: u64 = 100_000;
    const BATCH: usize = 1000;
    const MIN_LEN: u64 = 5;
    const MAX_LEN: u64 = 10;
    /// Detailed reports printed before only counting.
    const MAX_REPORTS: usize = 25;

    const GPR_NAMES: [&str; 16] = [
        "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15",
    ];

    pub fn env_u64(name: &str, default: u64) -> u64 {
        match std::env::var(name) {
            Ok(v) => {
                let v = v.trim();
                let parsed = if let Some(hex) = v.strip_prefix("0x") {
                    u64::from_str_radix(hex, 16)
                } else {
                    v.parse()
                };
                parsed.unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}"))
            }
            Err(_) => default,
        }
    }

    pub struct Summary {
        pub sequences: u64,
        pub instructions: u64,
        pub mismatches: u64,
    }

    pub fn describe(seed: u64, index: u64, engine: EngineKind, s: &Sequence, why: &str) -> String {
        let mut out = format!(
            "MISMATCH seed={seed:#x} sequence={index} engine={engine}: {why}\n  initial rflags={:#x} undefined-at-end={:#x}\n",
            s.rflags, s.undefined_flags
        );
        for (k, v) in s.gpr.iter().enumerate() {
            out += &format!("  in  {:>3}={v:#018x}\n", GPR_NAMES[k]);
        }
        if s.xmm != [0; 16] || s.mxcsr != MXCSR_DEFAULT {
            out += &format!("  in  mxcsr={:#06x}\n", s.mxcsr);
            for (k, v) in s.xmm.iter().enumerate() {
                out += &format!("  in  xmm{k:<2}={}\n", xmm_hex(*v));
            }
        }
        if s.mm != [0; 8] {
            for (k, v) in s.mm.iter().enumerate() {
                out += &format!("  in  mm{k}   ={}\n", mm_hex(*v));
            }
        }
        if let Some((off, bytes)) = s.mem_patch {
            out += &format!(
                "  in  memory at {:#x} = {bytes:02x?} (over the fill)\n",
                SCRATCH_BASE + u64::from(off)
            );
        }
        // Disassemble the bytes that actually ran.
        let mut decoder = iced_x86::Decoder::with_ip(64, &s.bytes, 0, 0);
        for i in decoder.iter() {
            let start = i.ip() as usize;
            let bytes = &s.bytes[start..start + i.len()];
            out += &format!("    {:<40} {:02x?}\n", i.to_string(), bytes);
        }
        out
    }

    /// An XMM value as four 32-bit lanes, most significant first.
    pub fn xmm_hex(v: u128) -> String {
        format!(
            "{:08x}_{:08x}_{:08x}_{:08x}",
            (v >> 96) as u32,
            (v >> 64) as u32,
            (v >> 32) as u32,
            v as u32
        )
    }

    /// An MM value as two 32-bit halves, most significant first.
    pub fn mm_hex(v: u64) -> String {
        format!("{:08x}_{:08x}", (v >> 32) as u32, v as u32)
    }

    fn x87_text(x: X87) -> String {
        let exp: Vec<String> = x.exp.iter().map(|e| format!("{e:04x}")).collect();
        format!(
            "TOP={} empty-tags={:#04x} R0..R7-sign/exp=[{}]",
            x.top,
            x.empty,
            exp.join(" ")
        )
    }

    /// How one sequence's results differ: `what` is a short classification (the failure, or
    /// the differing parts such as "xmm+mxcsr"), `text` the detailed lines.
    pub struct Diff {
        pub what: String,
        pub text: String,
    }

    /// Compare one sequence's results; `None` when they agree.
    pub fn compare(s: &Sequence, native: &NativeResult, emu: &EmuResult) -> Option<String> {
        diff(s, native, emu).map(|d| d.text)
    }

    /// Compare one sequence's results, classified; `None` when they agree.
    pub fn diff(s: &Sequence, native: &NativeResult, emu: &EmuResult) -> Option<Diff> {
        let (ngpr, nflags, nxmm, nmxcsr, nmm, nx87, nmem) = match native {
            NativeResult::Done {
                gpr,
                rflags,
                xmm,
                mxcsr,
                mm,
                x87,
                mem,
            } => (gpr, *rflags, xmm, *mxcsr, mm, *x87, &mem[..]),
            NativeResult::Crashed(why) => {
                let text = format!("host run crashed: {why}");
                return Some(Diff {
                    what: text.clone(),
                    text,
                });
            }
        };
        let (egpr, eflags, exmm, emxcsr, emm, ex87, emem) = match emu {
            EmuResult::Done {
                gpr,
                rflags,
                xmm,
                mxcsr,
                mm,
                x87,
                mem,
            } => (gpr, *rflags, xmm, *mxcsr, mm, *x87, &mem[..]),
            EmuResult::Failed(why) => {
                return Some(Diff {
                    what: why.clone(),
                    text: why.clone(),
                })
            }
        };
        let mut parts: Vec<&str> = Vec::new();
        let mut diffs = String::new();
        for k in 0..16 {
            if ngpr[k] != egpr[k] {
                diffs += &format!(
                    "  {:>3}: host {:#018x} crane86 {:#018x}\n",
                    GPR_NAMES[k], ngpr[k], egpr[k]
                );
                if !parts.contains(&"gpr") {
                    parts.push("gpr");
                }
            }
        }
        for k in 0..16 {
            if nxmm[k] != exmm[k] && !crate::sse::tolerated(s, k, nxmm[k], exmm[k]) {
                diffs += &format!(
                    "  xmm{k:<2}: host {} crane86 {}\n",
                    xmm_hex(nxmm[k]),
                    xmm_hex(exmm[k])
                );
                if !parts.contains(&"xmm") {
                    parts.push("xmm");
                }
            }
        }
        for k in 0..8 {
            if nmm[k] != emm[k] {
                diffs += &format!(
                    "  mm{k}  : host {} crane86 {}\n",
                    mm_hex(nmm[k]),
                    mm_hex(emm[k])
                );
                if !parts.contains(&"mm") {
                    parts.push("mm");
                }
            }
        }
        if nx87 != ex87 {
            diffs += &format!(
                "  x87: host {} crane86 {}\n",
                x87_text(nx87),
                x87_text(ex87)
            );
            parts.push("x87");
        }
        if nmxcsr != emxcsr {
            diffs += &format!(
                "  mxcsr: host {nmxcsr:#06x} crane86 {emxcsr:#06x} (differing bits {:#x})\n",
                nmxcsr ^ emxcsr
            );
            parts.push("mxcsr");
        }
        let m = COMPARED_FLAGS & !s.undefined_flags;
        if nflags & m != eflags & m {
            parts.push("rflags");
            diffs += &format!(
                "  rflags (mask {m:#x}): host {:#x} crane86 {:#x} (differing bits {:#x})\n",
                nflags & m,
                eflags & m,
                (nflags ^ eflags) & m
            );
        }
        if nmem != emem {
            let first = (0..nmem.len()).find(|&k| nmem[k] != emem[k]).unwrap_or(0);
            let count = (0..nmem.len()).filter(|&k| nmem[k] != emem[k]).count();
            let lo = first & !7;
            diffs += &format!(
                "  memory: {count} bytes differ, first at {:#x}: host {:02x?} crane86 {:02x?}\n",
                SCRATCH_BASE + first as u64,
                &nmem[lo..(lo + 8).min(nmem.len())],
                &emem[lo..(lo + 8).min(emem.len())]
            );
            parts.push("memory");
        }
        (!diffs.is_empty()).then(|| Diff {
            what: format!("wrong {}", parts.join("+")),
            text: diffs,
        })
    }

    pub fn self_check() {
        use iced_x86::code_asm::*;
        let mut a = CodeAssembler::new(64).unwrap();
        a.not(rax).unwrap();
        a.add(rbx, rcx).unwrap();
        a.mov(qword_ptr(SCRATCH_BASE + 0x10), rbx).unwrap();
        a.push(rcx).unwrap();
        let bytes = a.assemble(0).unwrap();
        let mut gpr = [0u64; 16];
        gpr[0] = 0x1234;
        gpr[1] = 0x8000_0000_0000_0001;
        gpr[3] = 0x8000_0000_0000_0002;
        gpr[4] = crate::gen::INITIAL_RSP;
        let s = Sequence {
            insns: Vec::new(),
            bytes,
            gpr,
            rflags: crate::gen::FIXED_FLAGS,
            mem_seed: 7,
            undefined_flags: 0,
            xmm: [0; 16],
            mxcsr: MXCSR_DEFAULT,
            mm: [0; 8],
            mem_patch: None,
        };
        let natives = run_batch(std::slice::from_ref(&s));
        let NativeResult::Done {
            gpr: out,
            rflags,
            mem,
            ..
        } = &natives[0]
        else {
            panic!("host run of the self-check sequence crashed");
        };
        assert_eq!(out[0], !0x1234u64, "host NOT RAX");
        assert_eq!(out[3], 3, "host ADD RBX, RCX");
        assert_eq!(out[4], crate::gen::INITIAL_RSP - 8, "host PUSH moved RSP");
        assert_eq!(rflags & 1, 1, "host ADD carried out");
        assert_eq!(u64::from_le_bytes(mem[0x10..0x18].try_into().unwrap()), 3);
        for engine in EngineKind::emulators() {
            let mut emu = Emu::new(engine);
            let result = emu.run(&s);
            assert!(
                compare(&s, &natives[0], &result).is_none(),
                "{engine} disagrees"
            );
            let EmuResult::Done {
                mut gpr,
                rflags,
                xmm,
                mxcsr,
                mm,
                x87,
                mut mem,
            } = result
            else {
                unreachable!("compare accepted a failed run")
            };
            gpr[9] ^= 1;
            let bad = EmuResult::Done {
                gpr,
                rflags,
                xmm: xmm.clone(),
                mxcsr,
                mm: mm.clone(),
                x87,
                mem: mem.clone(),
            };
            assert!(
                compare(&s, &natives[0], &bad).is_some(),
                "register difference missed"
            );
            gpr[9] ^= 1;
            mem[0x1800 - 8] ^= 0x40;
            let bad = EmuResult::Done {
                gpr,
                rflags,
                xmm,
                mxcsr,
                mm,
                x87,
                mem,
            };
            assert!(
                compare(&s, &natives[0], &bad).is_some(),
                "stack difference missed"
            );
        }
    }

    pub fn run() -> Summary {
        let seed = env_u64("CRANE86_ORACLE_SEED", DEFAULT_SEED);
        let count = env_u64("CRANE86_ORACLE_COUNT", DEFAULT_COUNT);
        let generator = Generator::new();
        let mut rng = Rng::new(seed);
        let engines = EngineKind::emulators();
        let mut emus: Vec<Emu> = engines.iter().map(|&e| Emu::new(e)).collect();
        let start = Instant::now();
        let mut summary = Summary {
            sequences: 0,
            instructions: 0,
            mismatches: 0,
        };
        let mut reports = 0;
        // Informational: sequences whose flags differ only in bits the SDM leaves undefined,
        // by the last instruction with undefined flags (CRANE86_ORACLE_UNDEFINED=1).
        let strict_undefined = std::env::var("CRANE86_ORACLE_UNDEFINED").is_ok();
        let mut undefined_differences = std::collections::BTreeMap::<String, u64>::new();
        let mut index = 0u64;
        while index < count {
            let n = (count - index).min(BATCH as u64);
            let seqs: Vec<Sequence> = (0..n)
                .map(|_| {
                    let len = MIN_LEN + rng.below(MAX_LEN - MIN_LEN + 1);
                    generator.sequence(&mut rng, len as usize)
                })
                .collect();
            let natives = run_batch(&seqs);
            for (k, (s, native)) in seqs.iter().zip(&natives).enumerate() {
                summary.sequences += 1;
                summary.instructions += s.insns.len() as u64;
                for (engine, emu) in engines.iter().zip(emus.iter_mut()) {
                    let result = emu.run(s);
                    if strict_undefined {
                        let mut strict = s.clone();
                        strict.undefined_flags = 0;
                        if compare(s, native, &result).is_none()
                            && compare(&strict, native, &result).is_some()
                        {
                            let last = s.insns.iter().rev().find(|i| i.rflags_undefined() != 0);
                            let name =
                                last.map_or("?".to_string(), |i| format!("{:?}", i.mnemonic()));
                            *undefined_differences.entry(name).or_insert(0u64) += 1;
                        }
                    }
                    if let Some(why) = compare(s, native, &result) {
                        summary.mismatches += 1;
                        if reports < MAX_REPORTS {
                            reports += 1;
                            eprintln!("{}{why}", describe(seed, index + k as u64, *engine, s, ""));
                        }
                    }
                }
            }
            index += n;
        }
        println!(
            "host oracle: seed={seed:#x} templates={} sequences={} instructions={} engines={} mismatches={} time={:.1?}",
            generator.template_count(),
            summary.sequences,
            summary.instructions,
            engines.len(),
            summary.mismatches,
            start.elapsed()
        );
        if strict_undefined {
            println!("undefined-flag differences by last undefined-flag writer: {undefined_differences:?}");
        }
        summary
    }
}

/// The harness itself: a known sequence gives the architecturally required result on both
/// sides, and a corrupted result is reported.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn oracle_harness_sees_results_and_reports_differences() {
    driver::self_check();
}

#[test]
fn host_cpu_and_crane86_agree_on_random_sequences() {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        let s = driver::run();
        assert!(s.sequences > 0, "no sequences ran");
        assert_eq!(
            s.mismatches, 0,
            "{} of {} sequences disagreed with the host CPU (details above)",
            s.mismatches, s.sequences
        );
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    eprintln!("host oracle skipped: it needs an x86-64 Linux host to run guest code natively");
}

/// The SSE side of the harness on the host alone (crane86 is not involved): XMM registers
/// and MXCSR reach the code and come back, and differences in them are reported.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn sse_harness_sees_xmm_and_mxcsr() {
    sse_run::self_check();
}

/// Generated SSE sequences are encodable, stay inside the scratch buffer and never fault on
/// the host (aligned operands, masked exceptions, controlled LDMXCSR values).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn sse_sequences_run_on_the_host_without_faults() {
    sse_run::host_only_check(&sse_run::Suite::SSE, 3000);
}

/// The MMX side of the harness: MM registers and the x87 TOP/tags reach the code and come
/// back on the host, differences in them are reported, and crane86 carries MM values through
/// integer code.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn mmx_harness_sees_mm_registers_and_x87_tags() {
    mmx::self_check();
}

/// Generated MMX sequences are encodable, stay inside the scratch buffer and never fault on
/// the host.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn mmx_sequences_run_on_the_host_without_faults() {
    sse_run::host_only_check(&sse_run::Suite::MMX, 2000);
}

#[test]
fn sse_sequences_match_the_host_cpu() {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        let s = sse_run::run(&sse_run::Suite::SSE);
        assert!(s.sequences > 0, "no SSE sequences ran");
        assert_eq!(
            s.mismatches, 0,
            "{} of {} SSE sequences disagreed with the host CPU ({} of {} mnemonics have \
             failures; details and the per-mnemonic summary above)",
            s.mismatches, s.sequences, s.failing_mnemonics, s.mnemonics
        );
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    eprintln!("SSE host oracle skipped: it needs an x86-64 Linux host to run guest code natively");
}

#[test]
fn mmx_sequences_match_the_host_cpu() {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        let s = sse_run::run(&sse_run::Suite::MMX);
        assert!(s.sequences > 0, "no MMX sequences ran");
        assert_eq!(
            s.mismatches, 0,
            "{} of {} MMX sequences disagreed with the host CPU ({} of {} mnemonics have \
             failures; details and the per-mnemonic summary above)",
            s.mismatches, s.sequences, s.failing_mnemonics, s.mnemonics
        );
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    eprintln!("MMX host oracle skipped: it needs an x86-64 Linux host to run guest code natively");
}
