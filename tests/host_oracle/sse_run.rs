//! Running the SSE and MMX cases of [`crate::sse`] against the host and crane86, and
//! reporting per mnemonic: pass/fail counts, the most common kind of failure (an exception
//! such as #UD, a host crash, or which state differs: GPRs, RFLAGS, XMM, MXCSR, MM, x87 TOP
//! and tags, memory) and detailed reports (disassembly, inputs, differing registers) of the
//! first failures, at most one per mnemonic. Each family is a [`Suite`] with its own
//! environment variables (`FAM` is `SSE` or `MMX`; the seed is shared with the integer
//! sequences):
//!
//! - `CRANE86_ORACLE_FAM_COUNT` sequences (default 30,000 SSE, 20,000 MMX)
//! - `CRANE86_ORACLE_FAM_ONLY=MNEMONIC[,MNEMONIC...]` restrict to these mnemonics
//! - `CRANE86_ORACLE_FAM_REPORT=1` print the whole per-mnemonic table, sorted by name
//! - `CRANE86_ORACLE_FAM_DETAILS` number of detailed reports (default 10)

use crate::driver::{compare, describe, diff, env_u64, DEFAULT_SEED};
use crate::emu::{Emu, EmuResult};
use crate::gen::{Generator, Sequence, MXCSR_DEFAULT, SCRATCH_BASE};
use crate::native::{run_batch, NativeResult};
use crate::rng::Rng;
use crate::sse::{tolerated, Family, SseCase, SseGenerator};
use crane86::machine::EngineKind;
use std::collections::BTreeMap;
use std::time::Instant;

const BATCH: usize = 1000;
/// Decorrelates the SSE stream from the integer one under the same seed.
const STREAM: u64 = 0x55E0_55E0;

/// One family of SIMD sequences: what it generates, its name in reports and environment
/// variables, its default size and its random stream.
pub struct Suite {
    pub family: Family,
    /// `SSE` or `MMX`: in reports and in `CRANE86_ORACLE_<label>_COUNT` etc.
    pub label: &'static str,
    pub default_count: u64,
    /// Decorrelates the family's stream from the others under the same seed.
    pub stream: u64,
}

impl Suite {
    pub const SSE: Suite = Suite {
        family: Family::Sse,
        label: "SSE",
        default_count: 30_000,
        stream: STREAM,
    };
    pub const MMX: Suite = Suite {
        family: Family::Mmx,
        label: "MMX",
        default_count: 20_000,
        stream: 0x3A3A_3A3A,
    };

    fn var(&self, what: &str) -> String {
        format!("CRANE86_ORACLE_{}_{what}", self.label)
    }
}

pub struct SseSummary {
    pub sequences: u64,
    pub mismatches: u64,
    pub mnemonics: usize,
    pub failing_mnemonics: usize,
}

/// Results of one mnemonic.
#[derive(Default)]
struct Tally {
    pass: u64,
    fail: u64,
    /// Failure classification → count.
    why: BTreeMap<String, u64>,
}

impl Tally {
    fn most_common(&self) -> Option<(&str, u64)> {
        self.why
            .iter()
            .max_by_key(|(_, &n)| n)
            .map(|(w, &n)| (w.as_str(), n))
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

fn env_list(name: &str) -> Vec<String> {
    std::env::var(name)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `n` cases from `seed` (the same ones `run` starts with under that seed).
fn cases(sse: &SseGenerator, int: &Generator, rng: &mut Rng, n: usize) -> Vec<SseCase> {
    (0..n).map(|_| sse.case(int, rng)).collect()
}

pub fn run(suite: &Suite) -> SseSummary {
    let label = suite.label;
    let seed = env_u64("CRANE86_ORACLE_SEED", DEFAULT_SEED);
    let count = env_u64(&suite.var("COUNT"), suite.default_count);
    let details = env_u64(&suite.var("DETAILS"), 10) as usize;
    let full_report = env_flag(&suite.var("REPORT"));
    let only = env_list(&suite.var("ONLY"));
    let sse = SseGenerator::new(&only, suite.family);
    for name in &sse.missing {
        println!("note: the host CPU lacks {name}: its instructions are not generated");
    }
    let int = Generator::new();
    let mut rng = Rng::new(seed ^ suite.stream);
    let engines = EngineKind::emulators();
    let mut emus: Vec<Emu> = engines.iter().map(|&e| Emu::new(e)).collect();
    let mut tallies: BTreeMap<String, Tally> = sse
        .mnemonics()
        .map(|m| (sse.name(m), Tally::default()))
        .collect();
    let mut reported: Vec<String> = Vec::new();
    let mut summary = SseSummary {
        sequences: 0,
        mismatches: 0,
        mnemonics: tallies.len(),
        failing_mnemonics: 0,
    };
    let start = Instant::now();
    let mut index = 0u64;
    while index < count {
        let n = (count - index).min(BATCH as u64);
        let batch = cases(&sse, &int, &mut rng, n as usize);
        let seqs: Vec<Sequence> = batch.iter().map(|c| c.seq.clone()).collect();
        let natives = run_batch(&seqs);
        for (k, (case, native)) in batch.iter().zip(&natives).enumerate() {
            summary.sequences += 1;
            let name = sse.name(case.mnemonic);
            for (engine, emu) in engines.iter().zip(emus.iter_mut()) {
                let result = emu.run(&case.seq);
                let tally = tallies.get_mut(&name).expect("every mnemonic has a tally");
                match diff(&case.seq, native, &result) {
                    None => tally.pass += 1,
                    Some(d) => {
                        summary.mismatches += 1;
                        tally.fail += 1;
                        *tally.why.entry(d.what.clone()).or_insert(0) += 1;
                        if reported.len() < details && !reported.contains(&name) {
                            reported.push(name.clone());
                            let why = format!("[{name}] {}", d.what);
                            let text = if d.text == d.what { "" } else { &d.text };
                            eprintln!(
                                "{}{text}",
                                describe(seed, index + k as u64, *engine, &case.seq, &why)
                            );
                        }
                    }
                }
            }
        }
        index += n;
    }
    let failing: Vec<(&String, &Tally)> = tallies.iter().filter(|(_, t)| t.fail > 0).collect();
    summary.failing_mnemonics = failing.len();
    println!(
        "{label} host oracle: seed={seed:#x} templates={} mnemonics={} sequences={} engines={} mismatches={} failing-mnemonics={} time={:.1?}",
        sse.template_count(),
        summary.mnemonics,
        summary.sequences,
        engines.len(),
        summary.mismatches,
        summary.failing_mnemonics,
        start.elapsed()
    );
    if !failing.is_empty() {
        // Failing mnemonics grouped by their most common failure.
        let mut by_why: BTreeMap<&str, Vec<(&String, u64)>> = BTreeMap::new();
        for (name, t) in &failing {
            let (why, _) = t.most_common().expect("a failing tally has a reason");
            by_why.entry(why).or_default().push((name, t.fail));
        }
        println!("{label} failures by mnemonic (grouped by the most common failure):");
        for (why, list) in &by_why {
            let cases: u64 = list.iter().map(|(_, n)| n).sum();
            println!("  {why}: {} mnemonics, {cases} sequences", list.len());
            let names: Vec<String> = list.iter().map(|(m, n)| format!("{m}({n})")).collect();
            for line in names.chunks(8) {
                println!("    {}", line.join(" "));
            }
        }
    }
    if full_report {
        println!("{label} per-mnemonic results (pass / fail, most common failure):");
        for (name, t) in &tallies {
            let why = t
                .most_common()
                .map_or(String::new(), |(w, n)| format!("  {w} ({n})"));
            let status = if t.fail > 0 {
                "FAIL"
            } else if t.pass > 0 {
                "ok"
            } else {
                "-"
            };
            println!(
                "  {name:<16} {status:<4} pass {:>6} fail {:>6}{why}",
                t.pass, t.fail
            );
        }
        println!(
            "  {} of {} mnemonics pass every sequence",
            tallies
                .values()
                .filter(|t| t.fail == 0 && t.pass > 0)
                .count(),
            tallies.len()
        );
    }
    summary
}

/// Host-only check of the harness: XMM registers and MXCSR (rounding mode included) reach
/// the code and come back, flags from COMISS are seen, and the comparison reports XMM and
/// MXCSR differences and tolerates only near-equal RCPPS lanes.
pub fn self_check() {
    use iced_x86::code_asm::*;
    let mut a = CodeAssembler::new(64).unwrap();
    a.addps(xmm1, xmm2).unwrap();
    a.divss(xmm3, xmm4).unwrap();
    a.movdqu(xmmword_ptr(SCRATCH_BASE + 0x20), xmm1).unwrap();
    a.comiss(xmm5, xmm6).unwrap();
    a.cvtss2si(eax, xmm7).unwrap();
    let one = 1.0f32.to_bits();
    let splat = |x: u32| (0..4).fold(0u128, |v, k| v | u128::from(x) << (32 * k));
    let mut gpr = [0u64; 16];
    gpr[0] = u64::MAX;
    gpr[4] = crate::gen::INITIAL_RSP;
    let mut s = Sequence::fixed(a.instructions().to_vec(), gpr, 0, 7);
    s.xmm[1] = splat(one);
    s.xmm[2] = splat(2.0f32.to_bits());
    s.xmm[3] = splat(one);
    s.xmm[4] = 0xABCD_0000_0000; // low lane +0.0
    s.xmm[5] = u128::from(one);
    s.xmm[6] = u128::from(2.0f32.to_bits());
    s.xmm[7] = u128::from(2.5f32.to_bits());
    s.xmm[15] = 0x0123_4567_89AB_CDEF_FEDC_BA98_7654_3210;
    s.mxcsr = MXCSR_DEFAULT | 2 << 13; // round up
    let natives = run_batch(std::slice::from_ref(&s));
    let NativeResult::Done {
        gpr: out,
        rflags,
        xmm,
        mxcsr,
        mm,
        x87,
        mem,
    } = &natives[0]
    else {
        panic!("host run of the SSE self-check sequence crashed");
    };
    assert_eq!(xmm[1], splat(3.0f32.to_bits()), "host ADDPS");
    assert_eq!(
        xmm[3],
        splat(one) & !0xFFFF_FFFF | 0x7F80_0000,
        "host DIVSS by zero gives +inf in the low lane only"
    );
    assert_eq!(
        u128::from_le_bytes(mem[0x20..0x30].try_into().unwrap()),
        xmm[1],
        "host MOVDQU store"
    );
    assert_eq!(rflags & 0x45, 1, "host COMISS 1.0, 2.0: CF=1 ZF=0 PF=0");
    assert_eq!(out[0], 3, "host CVTSS2SI 2.5 rounded up, upper half zeroed");
    assert_eq!(xmm[15], s.xmm[15], "host XMM15 round trip");
    assert_eq!(
        *mxcsr,
        s.mxcsr | 0x4 | 0x20,
        "host MXCSR: ZE from DIVSS, PE from CVTSS2SI"
    );
    // The comparison against a (fabricated) agreeing and disagreeing crane86 result.
    let agree = || EmuResult::Done {
        gpr: *out,
        rflags: *rflags,
        xmm: xmm.clone(),
        mxcsr: *mxcsr,
        mm: mm.clone(),
        x87: *x87,
        mem: mem.to_vec(),
    };
    assert!(compare(&s, &natives[0], &agree()).is_none());
    let mut bad = agree();
    if let EmuResult::Done { xmm, .. } = &mut bad {
        xmm[9] ^= 1 << 100;
    }
    let d = diff(&s, &natives[0], &bad).expect("XMM difference missed");
    assert_eq!(d.what, "wrong xmm");
    assert!(d.text.contains("xmm9"), "{}", d.text);
    let mut bad = agree();
    if let EmuResult::Done { mxcsr, .. } = &mut bad {
        *mxcsr &= !0x20;
    }
    assert_eq!(
        diff(&s, &natives[0], &bad)
            .expect("MXCSR difference missed")
            .what,
        "wrong mxcsr"
    );
    let report = describe(0, 0, EngineKind::Interp, &s, "");
    assert!(
        report.contains("addps xmm1,xmm2") && report.contains("xmm15"),
        "{report}"
    );

    // Integer sequences from random XMM registers and MXCSR: both sides must carry them
    // through unchanged (the crane86 side of the plumbing, without needing SSE support).
    let int = Generator::new();
    let mut rng = Rng::new(DEFAULT_SEED ^ STREAM ^ 1);
    let seqs: Vec<Sequence> = (0..300)
        .map(|_| {
            let mut s = int.sequence(&mut rng, 6);
            s.xmm = crate::sse_values::xmm_file(&mut rng);
            s.mxcsr = crate::sse_values::mxcsr(&mut rng);
            s
        })
        .collect();
    let natives = run_batch(&seqs);
    for engine in EngineKind::emulators() {
        let mut emu = Emu::new(engine);
        for (k, (s, native)) in seqs.iter().zip(&natives).enumerate() {
            if let NativeResult::Done { xmm, mxcsr, .. } = native {
                assert_eq!((**xmm, *mxcsr), (s.xmm, s.mxcsr), "host changed XMM/MXCSR");
            }
            if let Some(why) = compare(s, native, &emu.run(s)) {
                panic!("{}{why}", describe(0, k as u64, engine, s, ""));
            }
        }
    }

    // Approximations: near-equal lanes of the RCPPS destination only.
    let mut a = CodeAssembler::new(64).unwrap();
    a.rcpps(xmm2, xmm3).unwrap();
    let r = Sequence::fixed(a.instructions().to_vec(), gpr, 0, 7);
    let h = splat(0.5f32.to_bits());
    assert!(tolerated(&r, 2, h, h + 3), "RCPPS within the tolerance");
    assert!(!tolerated(&r, 2, h, h + (1 << 20)), "RCPPS far off");
    assert!(!tolerated(&r, 1, h, h + 3), "not the RCPPS destination");
    assert!(
        !tolerated(&s, 1, h, h + 3),
        "no approximation in the sequence"
    );
}

/// `n` generated cases of `suite` run on the host: none may crash (misaligned operands,
/// unmasked exceptions, stray addresses would), MXCSR must keep every exception masked, and
/// the instructions must visibly do something.
pub fn host_only_check(suite: &Suite, n: usize) {
    let sse = SseGenerator::new(&[], suite.family);
    let int = Generator::new();
    let mut rng = Rng::new(DEFAULT_SEED ^ suite.stream);
    let batch = cases(&sse, &int, &mut rng, n);
    let seqs: Vec<Sequence> = batch.iter().map(|c| c.seq.clone()).collect();
    let natives = run_batch(&seqs);
    let mut crashed = Vec::new();
    let mut changed = 0;
    for (k, (c, native)) in batch.iter().zip(&natives).enumerate() {
        match native {
            NativeResult::Crashed(why) => {
                eprintln!(
                    "{}",
                    describe(DEFAULT_SEED, k as u64, EngineKind::Interp, &c.seq, why)
                );
                crashed.push(sse.name(c.mnemonic));
            }
            NativeResult::Done { xmm, mxcsr, mm, .. } => {
                assert_eq!(
                    mxcsr & 0x1F80,
                    0x1F80,
                    "sequence {k} ({:?}) unmasked an exception",
                    c.mnemonic
                );
                if **xmm != c.seq.xmm || *mxcsr != c.seq.mxcsr || **mm != c.seq.mm {
                    changed += 1;
                }
            }
        }
    }
    assert!(
        crashed.is_empty(),
        "{} generated {} sequences crashed on the host: {crashed:?}",
        crashed.len(),
        suite.label
    );
    assert!(
        changed * 2 > n,
        "only {changed} of {n} {} sequences changed XMM, MM or MXCSR",
        suite.label
    );
}
