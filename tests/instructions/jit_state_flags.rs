//! Flags a translated block reads before it sets any: they come from the lazy record in
//! `CpuState` that the block before left. The JIT evaluates them inline when the record has
//! the op it saw when it translated the block, and through a helper otherwise. Producers of
//! every lazy kind and size (and materialized flags) end their block; a consumer block reads
//! all 16 conditions and the carry. Each producer has its own consumer (the inline path),
//! and one consumer is called after every producer in turn (mostly the helper path). Both
//! engines must leave the same results.

use crate::common::*;

/// Operand pairs per producer.
const PAIRS: u64 = 24;
const TABLE: u64 = DATA_BASE;
/// Results of the per-producer consumers, then of the shared one: 24 bytes each.
const OUT: u64 = DATA_BASE + 0x1000;
const OUT_SHARED: u64 = DATA_BASE + 0x4000;
const RESULT_BYTES: u64 = 24;

/// The producers: each sets the flags from RBX and RCX (and the carry before, for ADC/SBB).
const PRODUCERS: [&str; 13] = [
    "cmp32", "sub8", "add16", "add64", "test64", "and32", "inc16", "dec64", "adc32", "sbb8",
    "neg64", "popf", "or8",
];

fn producer(a: &mut CodeAssembler, name: &str) {
    match name {
        "cmp32" => a.cmp(ebx, ecx),
        "sub8" => a.sub(bl, cl),
        "add16" => a.add(bx, cx),
        "add64" => a.add(rbx, rcx),
        "test64" => a.test(rbx, rcx),
        "and32" => a.and(ebx, ecx),
        // A CF that varies before those that keep it or add it in.
        "inc16" => {
            a.cmp(rcx, rbx).unwrap();
            a.inc(bx)
        }
        "dec64" => {
            a.cmp(rbx, rcx).unwrap();
            a.dec(rbx)
        }
        "adc32" => {
            a.cmp(rcx, rbx).unwrap();
            a.adc(ebx, ecx)
        }
        "sbb8" => {
            a.cmp(rbx, rcx).unwrap();
            a.sbb(bl, cl)
        }
        "neg64" => a.neg(rbx),
        // Materialized flags (an interpreter-run POPF of the six arithmetic flags).
        "popf" => {
            a.and(rbx, 0x8D5).unwrap();
            a.push(rbx).unwrap();
            a.popfq()
        }
        "or8" => a.or(bl, cl),
        other => panic!("no producer {other}"),
    }
    .unwrap();
}

/// Read every condition into its own byte register, and CF through ADC; store them at RDI
/// and advance it.
fn consumer(a: &mut CodeAssembler) {
    let cc_regs = [
        al, cl, dl, bl, ah, ch, dh, bh, sil, r8b, bpl, r9b, r10b, r11b, r14b, r15b,
    ];
    let setters = [
        CodeAssembler::seto,
        CodeAssembler::setno,
        CodeAssembler::setb,
        CodeAssembler::setae,
        CodeAssembler::sete,
        CodeAssembler::setne,
        CodeAssembler::setbe,
        CodeAssembler::seta,
        CodeAssembler::sets,
        CodeAssembler::setns,
        CodeAssembler::setp,
        CodeAssembler::setnp,
        CodeAssembler::setl,
        CodeAssembler::setge,
        CodeAssembler::setle,
        CodeAssembler::setg,
    ];
    for (set, &reg) in setters.iter().zip(&cc_regs) {
        set(a, reg).unwrap();
    }
    // MOV keeps the flags; ADC reads CF.
    for (k, &reg) in cc_regs.iter().enumerate() {
        a.mov(byte_ptr(rdi + k as i32), reg).unwrap();
    }
    a.mov(r15d, 0x10).unwrap();
    a.adc(r15, 0).unwrap();
    a.mov(qword_ptr(rdi + 16), r15).unwrap();
    a.add(rdi, RESULT_BYTES as i32).unwrap();
}

/// The operands: the low half of RBX/RCX from the table entry.
fn load_pair(a: &mut CodeAssembler) {
    a.mov(rbx, qword_ptr(r13)).unwrap();
    a.mov(rcx, qword_ptr(r13 + 8)).unwrap();
}

fn program(a: &mut CodeAssembler) {
    let mut shared = a.create_label();
    for (k, name) in PRODUCERS.iter().enumerate() {
        let mut top = a.create_label();
        let mut consume = a.create_label();
        a.mov(r13, TABLE).unwrap();
        a.mov(rdi, OUT + k as u64 * PAIRS * RESULT_BYTES).unwrap();
        a.mov(r12d, PAIRS as u32).unwrap();
        a.set_label(&mut top).unwrap();
        load_pair(a);
        producer(a, name);
        a.jmp(consume).unwrap();
        a.set_label(&mut consume).unwrap();
        consumer(a);
        a.add(r13, 16).unwrap();
        a.sub(r12d, 1).unwrap();
        a.jnz(top).unwrap();
    }
    // One consumer after every producer in turn.
    let mut top = a.create_label();
    a.mov(r13, TABLE).unwrap();
    a.mov(rdi, OUT_SHARED).unwrap();
    a.mov(r12d, PAIRS as u32).unwrap();
    a.set_label(&mut top).unwrap();
    for name in PRODUCERS {
        load_pair(a);
        producer(a, name);
        a.call(shared).unwrap();
    }
    a.add(r13, 16).unwrap();
    a.sub(r12d, 1).unwrap();
    a.jnz(top).unwrap();
    a.hlt().unwrap();
    a.set_label(&mut shared).unwrap();
    consumer(a);
    a.ret().unwrap();
}

#[test]
fn flags_from_the_block_before_match_the_interpreter() {
    let code = assemble(Mode::Long64, program);
    let mut rng = Rng(0x5EED_F1A6);
    let mut table = Vec::new();
    for _ in 0..PAIRS * 2 {
        let v = match rng.below(3) {
            0 => [
                0,
                1,
                0x7F,
                0x80,
                0xFF,
                0x8000,
                0xFFFF,
                0x8000_0000,
                u64::MAX,
            ][rng.below(9) as usize],
            // Small differences, so that comparisons go both ways and hit equality.
            1 => rng.below(4),
            _ => rng.next(),
        };
        table.extend_from_slice(&v.to_le_bytes());
    }
    let mut results = Vec::new();
    for engine in EngineKind::emulators() {
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.write(TABLE, &table);
        g.run_to_halt();
        assert_no_exception(&g, &format!("{engine}"));
        let size = PRODUCERS.len() as u64 * PAIRS * RESULT_BYTES;
        let bytes = |at: u64| (0..size).map(|k| read_u8(&g, at + k)).collect::<Vec<u8>>();
        let (out, shared) = (bytes(OUT), bytes(OUT_SHARED));
        results.push((engine, out, shared, g.cpu.gpr));
    }
    // The first result that differs: (producer, pair, byte), in the layout of `consumer`.
    let first_difference = |got: &[u8], want: &[u8], producers_inner: bool| {
        let k = (0..got.len()).find(|&k| got[k] != want[k])?;
        let (result, byte) = (k as u64 / RESULT_BYTES, k as u64 % RESULT_BYTES);
        let n = PRODUCERS.len() as u64;
        let (producer, pair) = if producers_inner {
            (result % n, result / n)
        } else {
            (result / PAIRS, result % PAIRS)
        };
        Some((PRODUCERS[producer as usize], pair, byte, got[k], want[k]))
    };
    let (_, want_out, want_shared, want_gpr) = &results[0];
    for (engine, out, shared, gpr) in &results[1..] {
        let own = first_difference(out, want_out, false);
        assert_eq!(
            own, None,
            "{engine}: (producer, pair, byte, got, want), own consumers"
        );
        let one = first_difference(shared, want_shared, true);
        assert_eq!(
            one, None,
            "{engine}: (producer, pair, byte, got, want), shared consumer"
        );
        assert_eq!(gpr, want_gpr, "{engine}: registers");
    }
}
