//! The JIT's inline read-modify-write forms of memory that go beyond the ALU ops: LOCK
//! CMPXCHG (all sizes, equal and not, RAX's other bits set), XCHG (all sizes, a high-byte
//! register, the flags from before kept) and BTS/BTR/BTC by an immediate,
//! each followed by its flags (SETcc of registers through the inline conditions, PUSHF) and
//! with an operand across a page boundary (the interpreter's path); and BTS/BTR/BTC of
//! registers. Both engines must leave the same memory, registers and flags.

use crate::common::*;

/// LOCK CMPXCHG of memory, 8 to 64 bits, where the accumulator equals the destination and
/// where it does not (RAX's other bits set, to see what each size keeps), then the flags
/// (SETcc of all conditions through the inline path and PUSHF through the interpreter), and
/// a destination across a page boundary (the interpreter's path): memory, registers and
/// flags as the interpreter leaves them.
#[test]
fn cmpxchg_matches_the_interpreter() {
    let cross = DATA_BASE + 0x1FFE; // 8 bytes across a page boundary
    let mut results = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            a.mov(rdi, DATA_BASE).unwrap();
            a.mov(rsi, DATA_BASE + 0x800).unwrap(); // results
            let mut out = 0;
            // The flags and RAX after an exchange, at RSI + OUT.
            fn record(a: &mut CodeAssembler, out: &mut i32) {
                let o = *out;
                // SETcc of registers: the inline conditions of the pending flags.
                a.seto(r8b).unwrap();
                a.setb(r9b).unwrap();
                a.sete(r10b).unwrap();
                a.setbe(r11b).unwrap();
                a.sets(r12b).unwrap();
                a.setp(r13b).unwrap();
                a.setl(r14b).unwrap();
                a.setle(r15b).unwrap();
                for (k, r) in [r8b, r9b, r10b, r11b, r12b, r13b, r14b, r15b]
                    .into_iter()
                    .enumerate()
                {
                    a.mov(byte_ptr(rsi + o + k as i32), r).unwrap();
                }
                a.mov(qword_ptr(rsi + o + 8), rax).unwrap();
                a.pushfq().unwrap();
                a.pop(qword_ptr(rsi + o + 16)).unwrap();
                *out += 24;
            }
            for (k, acc) in [0x5Au64, 0x80, 0x7FFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF, 0]
                .into_iter()
                .enumerate()
            {
                let at = 32 * k as i32;
                for equal in [true, false] {
                    // The destination: ACC's value or a different one.
                    let dest = if equal {
                        acc
                    } else {
                        acc ^ 0x8000_0000_0000_0081
                    };
                    for size in [8, 16, 32, 64] {
                        a.mov(rax, dest).unwrap();
                        a.mov(qword_ptr(rdi + at), rax).unwrap();
                        // The accumulator's operand size holds ACC, the bits above it
                        // something else.
                        let low = if size == 64 {
                            u64::MAX
                        } else {
                            (1u64 << size) - 1
                        };
                        a.mov(rax, (0xA5A5_A5A5_A5A5_A5A5u64 & !low) | (acc & low))
                            .unwrap();
                        if size == 64 {
                            a.mov(rdx, 0x1234_5678_9ABC_DEF0u64).unwrap();
                        } else {
                            a.mov(edx, 0x9ABC_DEF0u32).unwrap();
                        }
                        match size {
                            8 => a.lock().cmpxchg(byte_ptr(rdi + at), dl).unwrap(),
                            16 => a.lock().cmpxchg(word_ptr(rdi + at), dx).unwrap(),
                            32 => a.lock().cmpxchg(dword_ptr(rdi + at), edx).unwrap(),
                            _ => a.lock().cmpxchg(qword_ptr(rdi + at), rdx).unwrap(),
                        }
                        record(a, &mut out);
                        a.mov(rax, qword_ptr(rdi + at)).unwrap();
                        a.mov(qword_ptr(rsi + out), rax).unwrap();
                        out += 8;
                    }
                }
            }
            a.mov(rbx, cross).unwrap();
            a.mov(rax, 77u64).unwrap();
            a.mov(qword_ptr(rbx), rax).unwrap();
            a.mov(edx, 99).unwrap();
            a.cmpxchg(qword_ptr(rbx), rdx).unwrap();
            record(a, &mut out);
        });
        let (g, stored) = run_long64(engine, &code, DATA_BASE + 0x800, 1200);
        results.push((stored, g.read_u64(cross), g.cpu.gpr));
    }
    assert_eq!(results[0].1, 99, "the page-crossing exchange happened");
    let first = first_difference(&results[0].0, &results[1].0);
    assert_eq!(first, None, "first differing result quadword");
    assert_eq!(results[0].2, results[1].2, "registers");
}

/// XCHG and XADD of memory and a register, 8 to 64 bits (AH among the byte registers), and
/// SETcc of memory, after a CMP whose flags XCHG and SETcc must leave alone (SETcc of
/// registers through the inline conditions, PUSHF through the interpreter), and operands
/// across a page boundary (the interpreter's path, with the CMP's flags still pending):
/// memory, registers and flags as the interpreter leaves them.
#[test]
fn xchg_xadd_and_setcc_of_memory_match_the_interpreter() {
    let cross = DATA_BASE + 0x1FFC; // 8 bytes across a page boundary
    let mut results = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            a.mov(rdi, DATA_BASE).unwrap();
            a.mov(rsi, DATA_BASE + 0x800).unwrap(); // results
            a.mov(rbx, cross).unwrap();
            let mut out = 0;
            let mut record = |a: &mut CodeAssembler| {
                a.setb(r8b).unwrap();
                a.sete(r9b).unwrap();
                a.setl(r10b).unwrap();
                a.mov(byte_ptr(rsi + out), r8b).unwrap();
                a.mov(byte_ptr(rsi + out + 1), r9b).unwrap();
                a.mov(byte_ptr(rsi + out + 2), r10b).unwrap();
                a.pushfq().unwrap();
                a.pop(qword_ptr(rsi + out + 8)).unwrap();
                a.mov(qword_ptr(rsi + out + 16), rax).unwrap();
                a.mov(qword_ptr(rsi + out + 24), rdx).unwrap();
                a.mov(rcx, qword_ptr(rdi)).unwrap();
                a.mov(qword_ptr(rsi + out + 32), rcx).unwrap();
                a.mov(rcx, qword_ptr(rbx)).unwrap();
                a.mov(qword_ptr(rsi + out + 40), rcx).unwrap();
                out += 48;
            };
            for (k, (x, y)) in [(1u64, 2u64), (5, 5), (u64::MAX, 0)]
                .into_iter()
                .enumerate()
            {
                for form in 0..19 {
                    a.mov(rax, 0x1122_3344_5566_7788u64 ^ (k as u64)).unwrap();
                    a.mov(qword_ptr(rdi), rax).unwrap();
                    a.mov(qword_ptr(rbx), rax).unwrap();
                    a.mov(rax, 0xA5A5_A5A5_A5A5_A5A5u64).unwrap();
                    a.mov(rdx, 0x0F0E_0D0C_0B0A_0908u64).unwrap();
                    // Flags pending from a CMP, for XCHG to keep.
                    a.mov(rcx, x).unwrap();
                    a.mov(r11, y).unwrap();
                    a.cmp(rcx, r11).unwrap();
                    match form {
                        0 => a.xchg(byte_ptr(rdi + 3), dl).unwrap(),
                        1 => a.xchg(byte_ptr(rdi + 5), ah).unwrap(),
                        2 => a.xchg(word_ptr(rdi + 2), dx).unwrap(),
                        3 => a.xchg(dword_ptr(rdi + 4), edx).unwrap(),
                        4 => a.xchg(qword_ptr(rdi), rdx).unwrap(),
                        5 => a.xchg(dword_ptr(rdi), eax).unwrap(),
                        6 => a.xchg(qword_ptr(rdi + 1), rax).unwrap(),
                        7 => a.xchg(dword_ptr(rbx + 2), edx).unwrap(),
                        8 => a.xchg(qword_ptr(rbx), rax).unwrap(),
                        9 => a.xchg(byte_ptr(rbx + 4), ah).unwrap(),
                        10 => a.lock().xadd(byte_ptr(rdi + 3), dl).unwrap(),
                        11 => a.xadd(byte_ptr(rdi + 1), ah).unwrap(),
                        12 => a.xadd(word_ptr(rdi + 6), dx).unwrap(),
                        13 => a.lock().xadd(dword_ptr(rdi), eax).unwrap(),
                        14 => a.xadd(qword_ptr(rdi), rdx).unwrap(),
                        15 => a.xadd(qword_ptr(rbx), rdx).unwrap(),
                        16 => a.setb(byte_ptr(rdi + 2)).unwrap(),
                        17 => a.setl(byte_ptr(rbx + 3)).unwrap(),
                        _ => a.setne(byte_ptr(rdi + r11 * 1 + 7)).unwrap(),
                    }
                    record(a);
                }
            }
        });
        let (g, stored) = run_long64(engine, &code, DATA_BASE + 0x800, 3 * 19 * 6);
        results.push((stored, g.cpu.gpr));
    }
    // Six quadwords per record; the fifth form (XCHG [RDI], RDX) of the first pair: RDX and
    // the memory swapped, as the interpreter left them.
    let swapped = (results[0].0[4 * 6 + 3], results[0].0[4 * 6 + 4]);
    assert_eq!(
        swapped,
        (0x1122_3344_5566_7788, 0x0F0E_0D0C_0B0A_0908),
        "XCHG [rdi], rdx under the interpreter"
    );
    let first = first_difference(&results[0].0, &results[1].0);
    assert_eq!(first, None, "first differing result quadword");
    assert_eq!(results[0].1, results[1].1, "registers");
}

/// BTS, BTR and BTC of 16/32/64-bit memory by immediates (masked to the width), after flags
/// of each kind (inline, stored, materialized by POPF): the memory, CF through SETC and the
/// whole RFLAGS image through PUSHF, and an operand across a page boundary (the
/// interpreter's path), as the interpreter leaves them.
#[test]
fn bit_test_and_modify_of_memory_match_the_interpreter() {
    let cross = DATA_BASE + 0x1FFE;
    let mut results = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            a.mov(rdi, DATA_BASE).unwrap();
            a.mov(rsi, DATA_BASE + 0x800).unwrap();
            let mut out = 0;
            for (k, imm) in [0u32, 5, 15, 31, 63, 70, 200].into_iter().enumerate() {
                for op in 0..3 {
                    for size in [16, 32, 64] {
                        let at = 8 * (k as i32 * 9 + op * 3 + size / 32);
                        a.mov(rax, 0x8000_4000_A5A5_0021u64 ^ (k as u64 * 0x1111))
                            .unwrap();
                        a.mov(qword_ptr(rdi + at), rax).unwrap();
                        // Flags before: inline (CMP), or from POPF.
                        if (k + op as usize).is_multiple_of(2) {
                            a.cmp(rax, rdi).unwrap();
                        } else {
                            a.push(0x8D5).unwrap();
                            a.popfq().unwrap();
                        }
                        let m = |size| match size {
                            16 => word_ptr(rdi + at),
                            32 => dword_ptr(rdi + at),
                            _ => qword_ptr(rdi + at),
                        };
                        match op {
                            0 => a.bts(m(size), imm as i32).unwrap(),
                            1 => a.btr(m(size), imm as i32).unwrap(),
                            _ => a.btc(m(size), imm as i32).unwrap(),
                        }
                        a.setb(cl).unwrap();
                        a.pushfq().unwrap();
                        a.pop(rdx).unwrap();
                        a.mov(byte_ptr(rsi + out), cl).unwrap();
                        a.mov(qword_ptr(rsi + out + 8), rdx).unwrap();
                        out += 16;
                    }
                }
            }
            a.mov(rbx, cross).unwrap();
            a.mov(qword_ptr(rbx), rdi).unwrap();
            a.bts(qword_ptr(rbx), 62).unwrap();
            a.btc(qword_ptr(rbx), 3).unwrap();
            a.pushfq().unwrap();
            a.pop(r8).unwrap();
        });
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.run_to_halt();
        assert_no_exception(&g, &format!("{engine}"));
        let memory: Vec<u64> = (0..63).map(|k| g.read_u64(DATA_BASE + 8 * k)).collect();
        let flags: Vec<u64> = (0..126)
            .map(|k| g.read_u64(DATA_BASE + 0x800 + 8 * k))
            .collect();
        results.push((memory, flags, g.read_u64(cross), g.cpu.gpr[8]));
    }
    assert_eq!(
        results[0].2,
        (DATA_BASE | 1 << 62) ^ 8,
        "across the page boundary"
    );
    let first = |n: usize| {
        (0..)
            .take(results[0].0.len().max(results[0].1.len()))
            .find(|&k| {
                let pick = |r: &(Vec<u64>, Vec<u64>, u64, u64)| {
                    if n == 0 {
                        r.0.get(k).copied()
                    } else {
                        r.1.get(k).copied()
                    }
                };
                pick(&results[0]) != pick(&results[1])
            })
    };
    assert_eq!(first(0), None, "first differing memory quadword");
    assert_eq!(first(1), None, "first differing CF/RFLAGS quadword");
    assert_eq!(
        results[0].3, results[1].3,
        "RFLAGS after the page-crossing forms"
    );
}

/// SHL/SAL/SHR/SAR of memory by immediates (1, a middle count, the width - 1; 8 to 64 bits),
/// of values with the top bit set and clear, then the flags (CF, OF, ZF, SF through SETcc,
/// the whole image through PUSHF) and an operand across a page boundary (the interpreter's
/// path): memory and flags as the interpreter leaves them.
#[test]
fn shifts_of_memory_match_the_interpreter() {
    let cross = DATA_BASE + 0x1FFC;
    let mut results = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            a.mov(rsi, DATA_BASE + 0x800).unwrap(); // results
            let mut out = 0;
            for (k, value) in [0x8123_4567_89AB_CDEFu64, 0x4000_0000_0000_0081]
                .into_iter()
                .enumerate()
            {
                for size in [8u32, 16, 32, 64] {
                    for count in [1u32, 3, size - 1] {
                        for op in 0..4 {
                            let base = if (op + k) % 3 == 2 { cross } else { DATA_BASE };
                            a.mov(rdi, base).unwrap();
                            a.mov(rax, value).unwrap();
                            a.mov(qword_ptr(rdi), rax).unwrap();
                            let m = rdi + 1;
                            match (size, op) {
                                (8, 0) => a.shl(byte_ptr(m), count).unwrap(),
                                (8, 1) => a.shr(byte_ptr(m), count).unwrap(),
                                (8, 2) => a.sar(byte_ptr(m), count).unwrap(),
                                (8, _) => a.sal(byte_ptr(m), count).unwrap(),
                                (16, 0) => a.shl(word_ptr(m), count).unwrap(),
                                (16, 1) => a.shr(word_ptr(m), count).unwrap(),
                                (16, 2) => a.sar(word_ptr(m), count).unwrap(),
                                (16, _) => a.sal(word_ptr(m), count).unwrap(),
                                (32, 0) => a.shl(dword_ptr(m), count).unwrap(),
                                (32, 1) => a.shr(dword_ptr(m), count).unwrap(),
                                (32, 2) => a.sar(dword_ptr(m), count).unwrap(),
                                (32, _) => a.sal(dword_ptr(m), count).unwrap(),
                                (_, 0) => a.shl(qword_ptr(m), count).unwrap(),
                                (_, 1) => a.shr(qword_ptr(m), count).unwrap(),
                                (_, 2) => a.sar(qword_ptr(m), count).unwrap(),
                                _ => a.sal(qword_ptr(m), count).unwrap(),
                            }
                            a.setb(r8b).unwrap();
                            a.seto(r9b).unwrap();
                            a.sete(r10b).unwrap();
                            a.sets(r11b).unwrap();
                            for (j, r) in [r8b, r9b, r10b, r11b].into_iter().enumerate() {
                                a.mov(byte_ptr(rsi + out + j as i32), r).unwrap();
                            }
                            a.pushfq().unwrap();
                            a.pop(qword_ptr(rsi + out + 8)).unwrap();
                            a.mov(rax, qword_ptr(rdi)).unwrap();
                            a.mov(qword_ptr(rsi + out + 16), rax).unwrap();
                            out += 24;
                        }
                    }
                }
            }
        });
        let (_, stored) = run_long64(engine, &code, DATA_BASE + 0x800, 2 * 4 * 3 * 4 * 3);
        results.push(stored);
    }
    // The interpreter's first form: SHL byte [DATA_BASE + 1], 1 of 0xCD: 0x9A, CF = 1.
    assert_eq!(results[0][2] >> 8 & 0xFF, 0x9A, "SHL byte, 1");
    assert_eq!(results[0][0] & 0xFF, 1, "CF of SHL byte, 1");
    let first = first_difference(&results[0], &results[1]);
    assert_eq!(first, None, "first differing result quadword");
}

/// BTS, BTR and BTC of 32/64-bit registers by immediates and by registers (offsets beyond
/// the width, masked), after inline and POPF-materialized flags: each register, CF through
/// SETC and the RFLAGS image through PUSHF, as the interpreter leaves them (the 32-bit forms
/// zero the upper half).
#[test]
fn bit_test_and_modify_of_registers_match_the_interpreter() {
    let mut results = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            a.mov(rsi, DATA_BASE + 0x800).unwrap();
            let mut out = 0;
            for (k, offset) in [0u32, 5, 31, 32, 63, 70, 200].into_iter().enumerate() {
                for op in 0..3 {
                    for (wide, by_register) in
                        [(false, false), (true, false), (false, true), (true, true)]
                    {
                        a.mov(rax, 0x8000_4000_A5A5_0021u64 ^ (k as u64 * 0x1111_0101))
                            .unwrap();
                        a.mov(rcx, u64::from(offset) | 0xFF00).unwrap();
                        if (k + op).is_multiple_of(2) {
                            a.cmp(rax, rsi).unwrap();
                        } else {
                            a.push(0x8D5).unwrap();
                            a.popfq().unwrap();
                        }
                        match (op, wide, by_register) {
                            (0, true, false) => a.bts(rax, offset as i32).unwrap(),
                            (0, false, false) => a.bts(eax, offset as i32).unwrap(),
                            (0, true, true) => a.bts(rax, rcx).unwrap(),
                            (0, false, true) => a.bts(eax, ecx).unwrap(),
                            (1, true, false) => a.btr(rax, offset as i32).unwrap(),
                            (1, false, false) => a.btr(eax, offset as i32).unwrap(),
                            (1, true, true) => a.btr(rax, rcx).unwrap(),
                            (1, false, true) => a.btr(eax, ecx).unwrap(),
                            (_, true, false) => a.btc(rax, offset as i32).unwrap(),
                            (_, false, false) => a.btc(eax, offset as i32).unwrap(),
                            (_, true, true) => a.btc(rax, rcx).unwrap(),
                            (_, false, true) => a.btc(eax, ecx).unwrap(),
                        }
                        a.setb(dl).unwrap();
                        a.pushfq().unwrap();
                        a.pop(rbx).unwrap();
                        a.mov(qword_ptr(rsi + out), rax).unwrap();
                        a.mov(byte_ptr(rsi + out + 8), dl).unwrap();
                        a.mov(qword_ptr(rsi + out + 16), rbx).unwrap();
                        out += 24;
                    }
                }
            }
        });
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.run_to_halt();
        assert_no_exception(&g, &format!("{engine}"));
        let words: Vec<u64> = (0..7 * 3 * 4 * 3)
            .map(|k| g.read_u64(DATA_BASE + 0x800 + 8 * k))
            .collect();
        results.push(words);
    }
    // The first case: BTS EAX, 0 of a value with bit 0 set (CF = 1), upper half zeroed.
    assert_eq!(results[0][0], 0xA5A5_0021, "bts eax, 0");
    assert_eq!(results[0][1] & 0xFF, 1, "bts eax, 0: CF");
    let first = (0..results[0].len()).find(|&k| results[0][k] != results[1][k]);
    assert_eq!(
        first, None,
        "first differing quadword (register, CF, RFLAGS of case k / 3)"
    );
}
