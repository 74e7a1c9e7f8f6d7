//! How long the JIT's backend takes to translate one block (Cranelift included), for
//! representative 64-bit blocks: the compile thread's throughput decides how long hot code
//! waits in the interpreter while a guest boots. Each block is compiled with successor links,
//! as the JIT compiles cached blocks.

use crane86::interp::block::Block;
use crane86_jit::backend::{Backend, Job};
use criterion::{criterion_group, criterion_main, Criterion};
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
    // The links' cells: the code embeds their addresses and reads them only when it runs.
    let block = Block::new(Vec::new());
    let links = std::array::from_fn(|k| block.links[k].as_ptr() as usize);
    for (name, code) in BLOCKS {
        let job = Job {
            insns: Decoder::with_ip(64, code, 0x1000, DecoderOptions::NONE)
                .into_iter()
                .collect(),
            bits: 64,
            rip: 0x1000,
            paddr: 0x1000,
            links: Some(links),
            counters: false,
            entry_flags: None,
            features: Default::default(),
        };
        group.bench_function(name, |b| {
            b.iter(|| backend.compile(&job).expect("the block compiles"))
        });
    }
    group.finish();
}

criterion_group!(benches, compile);
criterion_main!(benches);
