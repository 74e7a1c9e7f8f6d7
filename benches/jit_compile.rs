//! How long the JIT's backend takes to translate one block (Cranelift included), for
//! representative 64-bit blocks: the compile thread's throughput decides how long hot code
//! waits in the interpreter while a guest boots. Each block is compiled with successor links,
//! as the JIT compiles cached blocks.
//!
//! With `CRANE86_JIT_CORPUS_BENCH=<file>` (a corpus a guest run recorded with
//! `CRANE86_JIT_CORPUS=<file>`, see `crane86_jit::corpus`) it also compiles a real guest's
//! blocks: `CRANE86_JIT_CORPUS_BLOCKS` of them (default 2000), spread evenly over the file,
//! with each [`Effort`] (`blocks`, `blocks-quick`).

use crane86::interp::block::Block;
use crane86_jit::backend::{Backend, Effort, Job};
use crane86_jit::corpus;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use iced_x86::{Decoder, DecoderOptions};

/// (name, machine code at 0x1000).
const BLOCKS: [(&str, &[u8]); 5] = [
    // add rax, 1; jmp $+0x12
    ("alu-jmp", &[0x48, 0x83, 0xC0, 0x01, 0xEB, 0x10]),
    // cmp rax, rbx; jne $+0x12
    ("cmp-jcc", &[0x48, 0x39, 0xD8, 0x75, 0x10]),
    // xor eax, eax; ret
    ("xor-ret", &[0x31, 0xC0, 0xC3]),
    // mov rax, [rbx+8]; add rax, rcx; mov [rdx], rax; ret
    (
        "load-add-store-ret",
        &[
            0x48, 0x8B, 0x43, 0x08, 0x48, 0x01, 0xC8, 0x48, 0x89, 0x02, 0xC3,
        ],
    ),
    // movzx ecx, byte [rsi]; add rsi, 1; test ecx, ecx; mov [rdi], cl; lea rdi, [rdi+1];
    // jne $-0x10
    (
        "byte-copy-loop",
        &[
            0x0F, 0xB6, 0x0E, 0x48, 0x83, 0xC6, 0x01, 0x85, 0xC9, 0x88, 0x0F, 0x48, 0x8D, 0x7F,
            0x01, 0x75, 0xEE,
        ],
    ),
];

fn compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("jit-compile");
    let mut backend = Backend::default();
    // The block whose link cells the code embeds (it reads them only when it runs).
    let block = Block::new(Vec::new());
    for (name, code) in BLOCKS {
        let insns: Vec<_> = Decoder::with_ip(64, code, 0x1000, DecoderOptions::NONE)
            .into_iter()
            .collect();
        let job = Job {
            own_len: insns.len(),
            insns,
            bits: 64,
            rip: 0x1000,
            paddr: 0x1000,
            linked_block: Some(&block as *const Block as usize),
            counters: false,
            entry_flags: None,
            features: Default::default(),
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                backend
                    .compile(&job, Effort::Optimized)
                    .expect("the block compiles")
            })
        });
    }
    group.finish();
}

/// The blocks of the corpus file named by `CRANE86_JIT_CORPUS_BENCH`, as jobs (`None` when
/// the variable is unset).
fn corpus_jobs(block: &Block) -> Option<Vec<Job>> {
    let path = std::env::var("CRANE86_JIT_CORPUS_BENCH").ok()?;
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("CRANE86_JIT_CORPUS_BENCH={path}: cannot read it: {e}"));
    let want: usize = std::env::var("CRANE86_JIT_CORPUS_BLOCKS")
        .ok()
        .map(|n| n.parse().expect("CRANE86_JIT_CORPUS_BLOCKS is a number"))
        .unwrap_or(2000);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let step = (lines.len() / want.max(1)).max(1);
    let by_name = |name: &str| serde_json::from_str(&format!("{name:?}")).ok();
    let jobs = lines
        .iter()
        .step_by(step)
        .take(want)
        .map(|line| {
            let b = corpus::parse_line(line, by_name).unwrap_or_else(|e| panic!("{path}: {e}"));
            Job {
                own_len: b.insns.len(),
                insns: b.insns,
                bits: b.bits,
                rip: b.rip,
                paddr: b.paddr,
                linked_block: Some(block as *const Block as usize),
                counters: false,
                entry_flags: b.entry_flags,
                features: b.features,
            }
        })
        .collect();
    Some(jobs)
}

fn compile_corpus(c: &mut Criterion) {
    let block = Block::new(Vec::new());
    let Some(jobs) = corpus_jobs(&block) else {
        return;
    };
    let mut group = c.benchmark_group("jit-compile-corpus");
    group.sample_size(10);
    group.throughput(Throughput::Elements(jobs.len() as u64));
    let mut backend = Backend::default();
    for (name, effort) in [
        ("blocks", Effort::Optimized),
        ("blocks-quick", Effort::Quick),
    ] {
        // Code size is the run-time side of compile speed: printed once per effort.
        // SAFETY: none of the code compiled here ever runs.
        unsafe { backend.reset() };
        let bytes: u64 = jobs
            .iter()
            .map(|job| u64::from(backend.compile(job, effort).expect("compiles").bytes))
            .sum();
        println!(
            "jit-compile-corpus/{name}: {} blocks, {:.1} host code bytes per block",
            jobs.len(),
            bytes as f64 / jobs.len() as f64
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                // SAFETY: none of the code compiled here ever runs.
                unsafe { backend.reset() };
                for job in &jobs {
                    backend.compile(job, effort).expect("the block compiles");
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, compile, compile_corpus);
criterion_main!(benches);
