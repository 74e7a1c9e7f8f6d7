//! The JIT's inline forms against the interpreter: one long-mode program (translated on its
//! first run under `EngineKind::Jit`) of flag producers — shifts by immediate of every size
//! (counts 1, 2, width - 1 and others, AH..BH included), 8/16/32/64-bit CMP/TEST/ADD/SUB/
//! logic ops, NOT/NEG/INC/DEC, ALU ops (INC/DEC too) with a memory source or destination
//! and CMP/TEST of memory, BSF/BSR, IMUL
//! with two and three operands, ADC/SBB (carry-in from inline or stored flags), ROL/ROR by
//! an immediate and SHL/SHR/SAR by CL (counts 0, 1, width - 1, width and beyond) after
//! inline or stored flags —
//! each followed by a flag consumer: SETcc of a low or high byte register, CMOVcc 32/64 from
//! a register or memory (the 32-bit form zero-extends when the condition is false), or Jcc,
//! for all 16 conditions;
//! plus MOVZX/MOVSX/MOVSXD and 8/16-bit MOV between registers and loads and stores of every
//! size. After every case the flags and the registers involved are stored; both engines
//! must leave the same memory and registers. Then a precise fault in an inline load + ALU
//! op, and CALL/RET including a RET to a non-canonical address.

use crate::common::*;

/// Cases in the program (its code must stay below the exception stubs at `CODE_BASE + STUBS`).
const CASES: u64 = 200;
/// Where the memory operands point (RAX, so that AH..BH can be used with them).
const SCRATCH: u64 = DATA_BASE + 0x1_0000;

/// Operand values that hit the flag edges (zero, sign bits, carries out of each width).
const EDGES: [u64; 12] = [
    0,
    1,
    0x7F,
    0x80,
    0xFF,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
    0x8000_0000_0000_0000,
];

/// An edge value, its complement, or a random value.
fn edge_value(r: &mut Rng) -> u64 {
    match r.below(3) {
        0 => EDGES[r.below(EDGES.len() as u64) as usize],
        1 => u64::MAX - EDGES[r.below(EDGES.len() as u64) as usize],
        _ => r.next(),
    }
}

/// One flag producer on RBX (and RCX as the second operand).
fn producer(a: &mut CodeAssembler, r: &mut Rng) {
    let kind = r.below(10);
    if kind < 8 {
        return plain_producer(a, r, kind);
    }
    // Flags from any producer before (an inline record, materialized flags, flags the
    // interpreter stored): ROL/ROR keep all but CF and OF, a shift by a CL of 0 keeps all.
    match r.below(3) {
        0 => a.xadd(r10, rcx).unwrap(),
        _ => {
            let before = r.below(8);
            plain_producer(a, r, before)
        }
    }
    if kind == 8 {
        let size = [8u32, 16, 32, 64][r.below(4) as usize];
        let n = match r.below(5) {
            0 => 1,
            1 => 2,
            2 => size - 1,
            3 => size, // a rotation by the width (8/16 bits: by 0, flags still set)
            _ => 1 + r.below(31) as u32,
        };
        let n = n.min(31) as i32;
        let left = r.below(2) == 0;
        macro_rules! rot {
            ($reg:expr) => {
                if left { a.rol($reg, n) } else { a.ror($reg, n) }.unwrap()
            };
        }
        match size {
            8 if r.below(2) == 0 => rot!(bh),
            8 => rot!(bl),
            16 => rot!(bx),
            32 => rot!(ebx),
            _ => rot!(rbx),
        }
        return;
    }
    let count = match r.below(8) {
        0..=3 => 0,
        4 => 1,
        5 => 31,
        6 => 32, // 0 for a 32-bit operand
        _ => r.below(128) as u32,
    };
    a.mov(ecx, count).unwrap();
    let wide = r.below(2) == 0;
    match (r.below(3), wide) {
        (0, true) => a.shl(rbx, cl),
        (0, false) => a.shl(ebx, cl),
        (1, true) => a.shr(rbx, cl),
        (1, false) => a.shr(ebx, cl),
        (_, true) => a.sar(rbx, cl),
        (_, false) => a.sar(ebx, cl),
    }
    .unwrap();
}

/// One flag producer of `kind` (0..8) on RBX (and RCX as the second operand).
fn plain_producer(a: &mut CodeAssembler, r: &mut Rng, kind: u64) {
    if kind == 7 {
        // NOT/NEG/INC/DEC; INC/DEC keep the CF of a preceding inline CMP.
        a.cmp(ecx, ebx).unwrap();
        let op = r.below(4);
        macro_rules! un {
            ($reg:expr) => {
                match op {
                    0 => a.not($reg),
                    1 => a.neg($reg),
                    2 => a.inc($reg),
                    _ => a.dec($reg),
                }
                .unwrap()
            };
        }
        match r.below(5) {
            0 => un!(bl),
            1 => un!(bh),
            2 => un!(bx),
            3 => un!(ebx),
            _ => un!(rbx),
        }
        return;
    }
    if kind == 5 {
        // Memory operands: [RAX] holds RCX.
        let k = r.next() as i32;
        match r.below(22) {
            // INC/DEC keep the CF of a preceding inline CMP.
            18 | 19 => {
                a.cmp(ecx, ebx).unwrap();
                a.inc(dword_ptr(rax + 1))
            }
            20 => {
                a.cmp(bl, cl).unwrap();
                a.dec(byte_ptr(rax + 2))
            }
            21 => a.inc(word_ptr(rax + 4)),
            12 => a.add(qword_ptr(rax), rbx),
            13 => a.sub(dword_ptr(rax + 1), k),
            14 => a.xor(byte_ptr(rax + 2), bh),
            15 => a.or(word_ptr(rax + 4), cx),
            16 => a.and(qword_ptr(rax + 3), k),
            17 => a.add(byte_ptr(rax + 6), k as i8 as i32),
            0 => a.cmp(ebx, dword_ptr(rax)),
            1 => a.cmp(bl, byte_ptr(rax)),
            2 => a.test(word_ptr(rax), bx),
            3 => a.cmp(qword_ptr(rax), k),
            4 => a.add(rbx, qword_ptr(rax)),
            5 => a.sub(bx, word_ptr(rax)),
            6 => a.xor(ebx, dword_ptr(rax + 1)),
            7 => a.and(bh, byte_ptr(rax + 2)),
            8 => a.cmp(byte_ptr(rax + 5), k as i8 as i32),
            9 => a.test(dword_ptr(rax), k),
            10 => a.or(rbx, qword_ptr(rax + 3)),
            _ => a.cmp(word_ptr(rax + 4), cx),
        }
        .unwrap();
        match r.below(4) {
            0 => a.mov(bh, byte_ptr(rax + 1)),
            1 => a.mov(byte_ptr(rax + 3), bl),
            2 => a.mov(word_ptr(rax + 6), bx),
            _ => a.mov(cx, word_ptr(rax + 2)),
        }
        .unwrap();
        return;
    }
    if kind == 6 {
        let k = r.next() as i32;
        match r.below(8) {
            0 => a.imul_2(rbx, rcx),
            1 => a.imul_2(ebx, ecx),
            2 => a.imul_3(rbx, rcx, k),
            3 => a.imul_3(ebx, ecx, k as i8 as i32),
            // A zero source keeps the destination (all of it) and sets only ZF.
            4 => a.bsf(ebx, ecx),
            5 => a.bsf(rbx, rcx),
            6 => a.bsr(ebx, ecx),
            _ => a.bsr(rbx, rcx),
        }
        .unwrap();
        return;
    }
    if kind == 0 {
        // Shift by an immediate.
        let size = [8u32, 16, 32, 64][r.below(4) as usize];
        let n = match r.below(4) {
            0 => 1,
            1 => 2,
            2 => size - 1,
            _ => 1 + r.below(u64::from(size - 1)) as u32,
        };
        let n = n.min(31) as i32;
        let op = r.below(3);
        let high = size == 8 && r.below(2) == 0;
        macro_rules! sh {
            ($reg:expr) => {
                match op {
                    0 => a.shl($reg, n),
                    1 => a.shr($reg, n),
                    _ => a.sar($reg, n),
                }
                .unwrap()
            };
        }
        match (size, high) {
            (8, true) => sh!(bh),
            (8, false) => sh!(bl),
            (16, _) => sh!(bx),
            (32, _) => sh!(ebx),
            _ => sh!(rbx),
        }
        return;
    }
    if kind == 4 {
        // ADC/SBB after an inline CMP (carry-in from its operands), after a helper-run
        // instruction (XADD: the carry from the stored lazy flags), or chained.
        match r.below(3) {
            0 => a.cmp(ecx, ebx).unwrap(),
            1 => a.xadd(r10, rcx).unwrap(),
            _ => a.adc(rbx, rcx).unwrap(),
        }
        match r.below(6) {
            0 => a.adc(ebx, ecx),
            1 => a.sbb(rbx, rcx),
            2 => a.adc(bh, cl),
            3 => a.sbb(bx, cx),
            4 => a.adc(rbx, 0),
            _ => a.sbb(ebx, ebx),
        }
        .unwrap();
        return;
    }
    let size = [8u32, 16, 32, 64][r.below(4) as usize];
    let op = r.below(7);
    let imm = r.below(2) == 0;
    let k = r.next() as i32;
    macro_rules! alu {
        ($d:expr, $s:expr, $k:expr) => {
            match (op, imm) {
                (0, false) => a.add($d, $s),
                (1, false) => a.sub($d, $s),
                (2, false) => a.cmp($d, $s),
                (3, false) => a.and($d, $s),
                (4, false) => a.or($d, $s),
                (5, false) => a.xor($d, $s),
                (_, false) => a.test($d, $s),
                (0, true) => a.add($d, $k),
                (1, true) => a.sub($d, $k),
                (2, true) => a.cmp($d, $k),
                (3, true) => a.and($d, $k),
                (4, true) => a.or($d, $k),
                (5, true) => a.xor($d, $k),
                (_, true) => a.test($d, $k),
            }
            .unwrap()
        };
    }
    match size {
        8 => match r.below(3) {
            0 => alu!(bl, cl, k as i8 as i32),
            1 => alu!(bh, cl, k as i8 as i32),
            _ => alu!(bl, ch, k as i8 as i32),
        },
        16 => alu!(bx, cx, k as i16 as i32),
        32 => alu!(ebx, ecx, k),
        _ => alu!(rbx, rcx, k),
    }
}

/// One flag consumer of condition `cc`: SETcc DL/DH/R10B, CMOVcc R8(D) <- RSI or <- [RAX+1],
/// or Jcc (R9 = 2 when not taken).
fn consumer(a: &mut CodeAssembler, r: &mut Rng, cc: u8) {
    match r.below(4) {
        3 => {
            let rex = [0x4C, 0x44][r.below(2) as usize]; // cmov r8,[rax+1] / r8d,[rax+1]
            a.db(&[rex, 0x0F, 0x40 + cc, 0x40, 0x01]).unwrap();
        }
        0 => {
            let modrm = [0xC2u8, 0xC6][r.below(2) as usize]; // dl, dh
            if r.below(3) == 0 {
                a.db(&[0x41, 0x0F, 0x90 + cc, 0xC2]).unwrap(); // r10b
            } else {
                a.db(&[0x0F, 0x90 + cc, modrm]).unwrap();
            }
        }
        1 => {
            let rex = [0x4C, 0x44][r.below(2) as usize]; // cmov r8,rsi / r8d,esi
            a.db(&[rex, 0x0F, 0x40 + cc, 0xC6]).unwrap();
        }
        _ => {
            // jcc +6; mov r9d, 2
            a.db(&[0x70 + cc, 0x06, 0x41, 0xB9, 0x02, 0, 0, 0]).unwrap();
        }
    }
}

/// MOVZX/MOVSX/MOVSXD and 8/16-bit MOV between registers (RBX/RCX sources, into R11/RBP/DX).
fn extend(a: &mut CodeAssembler, r: &mut Rng) {
    match r.below(8) {
        0 => a.movzx(ebp, bh),
        1 => a.movzx(r11, cx),
        2 => a.movsx(r11, bl),
        3 => a.movsx(ebp, ch),
        4 => a.movsxd(r11, ebx),
        5 => a.movsx(dx, bl),
        6 => a.mov(dh, bl),
        _ => a.mov(dx, cx),
    }
    .unwrap();
}

#[test]
fn inline_forms_match_the_interpreter() {
    let mut results = Vec::new();
    for engine in EngineKind::emulators() {
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        let code = assemble(Mode::Long64, |a| {
            a.mov(rdi, DATA_BASE).unwrap();
            for case in 0..CASES {
                a.mov(rbx, edge_value(&mut r)).unwrap();
                a.mov(rcx, edge_value(&mut r)).unwrap();
                a.mov(rdx, r.next()).unwrap();
                a.mov(rsi, r.next()).unwrap();
                a.mov(r8, r.next()).unwrap();
                a.mov(r10, r.next()).unwrap();
                a.xor(r9d, r9d).unwrap();
                a.mov(eax, SCRATCH as u32).unwrap();
                a.mov(qword_ptr(rax), rcx).unwrap();
                if case % 4 == 3 {
                    extend(a, &mut r);
                }
                producer(a, &mut r);
                consumer(a, &mut r, (case % 16) as u8);
                a.pushfq().unwrap();
                a.pop(rax).unwrap();
                a.mov(r13, qword_ptr(SCRATCH)).unwrap();
                let regs = [rax, rbx, rcx, rdx, r8, r9, r10, r11, rbp, r13];
                for (k, reg) in regs.into_iter().enumerate() {
                    a.mov(qword_ptr(rdi + 8 * k as i32), reg).unwrap();
                }
                a.add(rdi, 80).unwrap();
            }
        });
        assert!(code.len() < STUBS as usize, "program overlaps the stubs");
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.run_to_halt();
        assert_no_exception(&g, "inline forms");
        let mem: Vec<u64> = (0..CASES * 10)
            .map(|k| g.read_u64(DATA_BASE + 8 * k))
            .collect();
        results.push((engine, g.cpu.gpr, g.cpu.rflags(), mem));
    }
    let (e0, gpr0, f0, mem0) = &results[0];
    for (e, gpr, f, mem) in &results[1..] {
        for (k, (x, y)) in mem0.iter().zip(mem).enumerate() {
            assert_eq!(
                x,
                y,
                "case {} slot {}: {e0} {x:#x} vs {e} {y:#x}",
                k / 10,
                k % 10
            );
        }
        assert_eq!(gpr0, gpr, "{e0} vs {e} registers");
        assert_eq!(f0, f, "{e0} vs {e} rflags");
    }
}

/// A fault in an inline load + ALU op (CMP r64, [non-present page]) goes through the slow
/// path: the exception frame names the faulting instruction, and the registers and flags
/// are those from before it (the flags of an inline CMP just before).
#[test]
fn load_alu_fault_is_precise() {
    let page = DATA_BASE + 0x2_0000;
    let mut out = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            a.mov(r12, page).unwrap();
            a.mov(ebx, 5).unwrap();
            a.add(rcx, 3).unwrap();
            a.cmp(ebx, 7).unwrap();
            a.cmp(rbx, qword_ptr(r12 + 8)).unwrap();
            a.mov(ebx, 9).unwrap();
        });
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        let pte = pte_addr(Mode::Long64, page);
        let v = g.read_u64(pte);
        g.write(pte, &(v & !1).to_le_bytes());
        g.run_to_halt();
        assert_eq!(exception(&g), Some(14), "{engine}");
        assert_eq!(g.cpu.gpr[RBX], 5, "{engine}");
        assert_eq!(
            flags(&g, ARITH),
            CF | SF | AF,
            "{engine}: flags of cmp 5, 7"
        );
        out.push((g.cpu.gpr, faulting_offset(&g, true), g.cpu.cr2));
    }
    assert_eq!(out[0], out[1]);
    assert_eq!(out[0].2, page + 8);
}

/// Inline CALL rel32 and RET: a loop calling a function (the return address on the stack,
/// RIP and RSP after each), then a RET to a non-canonical address, which is the
/// interpreter's #GP with RSP unchanged.
#[test]
fn call_and_ret_match_the_interpreter() {
    let mut out = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            let mut top = a.create_label();
            let mut f = a.create_label();
            let mut bad = a.create_label();
            a.mov(ecx, 100).unwrap();
            a.xor(ebx, ebx).unwrap();
            a.set_label(&mut top).unwrap();
            a.call(f).unwrap();
            a.mov(qword_ptr(DATA_BASE), rsp).unwrap();
            a.sub(ecx, 1).unwrap();
            a.jne(top).unwrap();
            a.jmp(bad).unwrap();
            a.set_label(&mut f).unwrap();
            a.add(rbx, rcx).unwrap();
            a.mov(rdx, qword_ptr(rsp)).unwrap();
            a.shl(rbx, 1).unwrap();
            a.ret().unwrap();
            a.set_label(&mut bad).unwrap();
            a.mov(rax, 0x8000_0000_0000_0000u64).unwrap();
            a.push(rax).unwrap();
            a.ret().unwrap();
        });
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.run_to_halt();
        assert_eq!(exception(&g), Some(13), "{engine}");
        let frame = stack_phys(&g);
        // #GP pushes an error code, RIP, CS, RFLAGS, RSP, SS: the interrupted RSP is the
        // pushed bad address's slot.
        let old_rsp = g.read_u64(frame + 32);
        assert_eq!(g.read_u64(old_rsp), 0x8000_0000_0000_0000, "{engine}");
        out.push((g.cpu.gpr, faulting_offset(&g, true), old_rsp));
    }
    assert_eq!(out[0], out[1]);
}

/// A shift by a CL of 0 keeps every flag, so the JIT's shift by CL must reproduce the six
/// arithmetic flags of whatever came before (`arith_flags_now`): for every inline flag
/// producer and operand size, over operand pairs at the flag edges, the flags after
/// `producer; shl ebx, cl (CL = 0)` are the interpreter's.
#[test]
fn zero_count_shift_keeps_the_flags_of_every_producer() {
    let table = DATA_BASE + 0x1_8000;
    let pairs: Vec<(u64, u64)> = EDGES
        .iter()
        .chain(&[0x7FFF_FFFF_FFFF_FFFF, u64::MAX])
        .flat_map(|&a| [0, 1, 0x80, 0x8000_0000, u64::MAX, a].map(|b| (a, b)))
        .collect();
    let bytes: Vec<u8> = pairs
        .iter()
        .flat_map(|&(a, b)| a.to_le_bytes().into_iter().chain(b.to_le_bytes()))
        .collect();
    let mut results = Vec::new();
    for engine in EngineKind::emulators() {
        let mut combos = 0u64;
        let code = assemble(Mode::Long64, |a| {
            a.mov(rdi, DATA_BASE).unwrap();
            for op in 0..11 {
                for size in [8u32, 16, 32, 64] {
                    if op == 10 && size < 32 {
                        continue; // IMUL r, r: 32/64 inline
                    }
                    combos += 1;
                    let mut top = a.create_label();
                    a.mov(rsi, table).unwrap();
                    a.mov(r12d, pairs.len() as u32).unwrap();
                    a.set_label(&mut top).unwrap();
                    a.mov(rbx, qword_ptr(rsi)).unwrap();
                    a.mov(rcx, qword_ptr(rsi + 8)).unwrap();
                    // CF in = bit 0 of the first operand (for ADC/SBB and INC/DEC).
                    a.bt(ebx, 0).unwrap();
                    macro_rules! two {
                        ($f:ident) => {
                            match size {
                                8 => a.$f(bl, cl),
                                16 => a.$f(bx, cx),
                                32 => a.$f(ebx, ecx),
                                _ => a.$f(rbx, rcx),
                            }
                            .unwrap()
                        };
                    }
                    macro_rules! one {
                        ($f:ident) => {
                            match size {
                                8 => a.$f(bl),
                                16 => a.$f(bx),
                                32 => a.$f(ebx),
                                _ => a.$f(rbx),
                            }
                            .unwrap()
                        };
                    }
                    match op {
                        0 => two!(add),
                        1 => two!(sub),
                        2 => two!(cmp),
                        3 => two!(and),
                        4 => two!(xor),
                        5 => two!(adc),
                        6 => two!(sbb),
                        7 => one!(inc),
                        8 => one!(dec),
                        9 => one!(neg),
                        _ if size == 32 => a.imul_2(ebx, ecx).unwrap(),
                        _ => a.imul_2(rbx, rcx).unwrap(),
                    }
                    a.mov(ecx, 0).unwrap(); // MOV: the flags stay
                    a.shl(ebx, cl).unwrap();
                    a.pushfq().unwrap();
                    a.pop(rax).unwrap();
                    a.mov(qword_ptr(rdi), rax).unwrap();
                    a.mov(qword_ptr(rdi + 8), rbx).unwrap();
                    a.add(rdi, 16).unwrap();
                    a.add(rsi, 16).unwrap();
                    a.dec(r12d).unwrap();
                    a.jnz(top).unwrap();
                }
            }
        });
        assert!(code.len() < STUBS as usize, "program overlaps the stubs");
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.write(table, &bytes);
        g.run_to_halt();
        assert_no_exception(&g, "zero-count shifts");
        let n = combos * pairs.len() as u64;
        let mem: Vec<(u64, u64)> = (0..n)
            .map(|k| {
                let at = DATA_BASE + 16 * k;
                (g.read_u64(at), g.read_u64(at + 8))
            })
            .collect();
        results.push((engine, mem));
    }
    let (e0, mem0) = &results[0];
    for (e, mem) in &results[1..] {
        for (k, (x, y)) in mem0.iter().zip(mem).enumerate() {
            let (op, pair) = (k / pairs.len(), pairs[k % pairs.len()]);
            assert_eq!(
                x, y,
                "combo {op} operands {pair:x?}: (rflags, rbx) {e0} {x:x?} vs {e} {y:x?}"
            );
        }
    }
}

/// Point RSI at `table` and fill it with the addresses of `first` and `second`, then a
/// non-canonical address.
fn branch_table(a: &mut CodeAssembler, table: u64, first: CodeLabel, second: CodeLabel) {
    a.mov(rsi, table).unwrap();
    a.lea(rax, ptr(first)).unwrap();
    a.mov(qword_ptr(rsi), rax).unwrap();
    a.lea(rax, ptr(second)).unwrap();
    a.mov(qword_ptr(rsi + 8), rax).unwrap();
    a.mov(rax, 0x8000_0000_0000_0000u64).unwrap();
    a.mov(qword_ptr(rsi + 16), rax).unwrap();
}

/// JMP through memory (a jump table filled by the guest): the targets run as in the
/// interpreter, and a non-canonical table entry is a #GP on the JMP, with the registers from
/// before it.
#[test]
fn jump_through_memory_matches_the_interpreter() {
    let table = DATA_BASE + 0x1_0000;
    let mut out = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            let mut top = a.create_label();
            let mut t0 = a.create_label();
            let mut t1 = a.create_label();
            let mut done = a.create_label();
            branch_table(a, table, t0, t1);
            a.mov(ecx, 301).unwrap();
            a.xor(ebx, ebx).unwrap();
            a.set_label(&mut top).unwrap();
            a.mov(eax, ecx).unwrap();
            a.and(eax, 1).unwrap();
            a.jmp(qword_ptr(rsi + rax * 8)).unwrap();
            a.set_label(&mut t0).unwrap();
            a.add(ebx, 1).unwrap();
            a.sub(ecx, 1).unwrap();
            a.jnz(top).unwrap();
            a.jmp(done).unwrap();
            a.set_label(&mut t1).unwrap();
            a.add(ebx, 100).unwrap();
            a.sub(ecx, 1).unwrap();
            a.jnz(top).unwrap();
            a.set_label(&mut done).unwrap();
            a.mov(eax, 2).unwrap();
            a.mov(edx, 7).unwrap();
            a.jmp(qword_ptr(rsi + rax * 8)).unwrap();
        });
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.run_to_halt();
        assert_eq!(exception(&g), Some(13), "{engine}");
        assert_eq!(g.cpu.gpr[RBX], 150 + 151 * 100, "{engine}: RBX");
        assert_eq!(g.cpu.gpr[RDX], 7, "{engine}");
        out.push((g.cpu.gpr, faulting_offset(&g, true)));
    }
    assert_eq!(out[0], out[1]);
}

/// CBW/CWDE/CDQE, CWD/CDQ/CQO and BSWAP r32/r64 against the interpreter and against the
/// values the SDM gives, on accumulators with each sign bit set or clear.
#[test]
fn widening_and_byte_swaps_match_the_interpreter() {
    type Form = fn(&mut CodeAssembler) -> Result<(), IcedError>;
    let forms: [(&str, Form); 9] = [
        ("cbw", |a| a.cbw()),
        ("cwde", |a| a.cwde()),
        ("cdqe", |a| a.cdqe()),
        ("cwd", |a| a.cwd()),
        ("cdq", |a| a.cdq()),
        ("cqo", |a| a.cqo()),
        ("bswap eax", |a| a.bswap(eax)),
        ("bswap rax", |a| a.bswap(rax)),
        ("bswap r9d", |a| a.bswap(r9d)),
    ];
    let values = [
        0x1122_3344_5566_7780u64,
        0x1122_3344_5566_0F7F,
        0x1122_3344_8000_7F00,
        0x8000_0000_7FFF_FFFF,
        0x7FFF_FFFF_FFFF_FFFF,
    ];
    let junk = 0xDEAD_BEEF_CAFE_F00Du64;
    for (name, form) in forms {
        for v in values {
            let mut out = Vec::new();
            for engine in EngineKind::emulators() {
                let code = assemble(Mode::Long64, |a| {
                    a.mov(rax, v).unwrap();
                    a.mov(rdx, junk).unwrap();
                    a.mov(r9, v).unwrap();
                    form(a).unwrap();
                });
                let mut g = guest(engine, Mode::Long64, &code, &[], 0);
                g.run_to_halt();
                assert_no_exception(&g, name);
                out.push((g.cpu.gpr[RAX], g.cpu.gpr[RDX], g.cpu.gpr[9]));
            }
            assert_eq!(out[0], out[1], "{name} of {v:#x}: interp vs jit");
            let (rax_, rdx_, r9_) = out[1];
            let sx = |v: u64, bits: u32| ((v << (64 - bits)) as i64 >> (64 - bits)) as u64;
            let sign = |bits: u32| {
                if v >> (bits - 1) & 1 != 0 {
                    u64::MAX
                } else {
                    0
                }
            };
            let want = match name {
                "cbw" => (v & !0xFFFF | sx(v, 8) & 0xFFFF, junk, v),
                "cwde" => (sx(v, 16) & 0xFFFF_FFFF, junk, v),
                "cdqe" => (sx(v, 32), junk, v),
                "cwd" => (v, junk & !0xFFFF | sign(16) & 0xFFFF, v),
                "cdq" => (v, sign(32) & 0xFFFF_FFFF, v),
                "cqo" => (v, sign(64), v),
                "bswap eax" => (u64::from((v as u32).swap_bytes()), junk, v),
                "bswap rax" => (v.swap_bytes(), junk, v),
                _ => (v, junk, u64::from((v as u32).swap_bytes())),
            };
            assert_eq!((rax_, rdx_, r9_), want, "{name} of {v:#x}");
        }
    }
}

/// INC/DEC to memory keep CF and set the other five flags, on the inline path (the page
/// already in the TLB) and on the slow path (the first touch of the page: the interpreter
/// runs it and the merge takes the lazy record back, CF included), for each size and the
/// values at the flag edges; against the interpreter, and CF against the carry set before.
#[test]
fn inc_dec_to_memory_keep_cf_on_both_paths() {
    type Form = fn(&mut CodeAssembler) -> Result<(), IcedError>;
    let forms: [(&str, Form); 4] = [
        ("inc byte", |a| a.inc(byte_ptr(rdi))),
        ("dec word", |a| a.dec(word_ptr(rdi))),
        ("inc dword", |a| a.inc(dword_ptr(rdi))),
        ("dec qword", |a| a.dec(qword_ptr(rdi))),
    ];
    let page = DATA_BASE + 0x2_0000;
    for (name, form) in forms {
        for value in [0u64, 0x7F, 0x80, 0xFFFF, 0x7FFF_FFFF, u64::MAX] {
            for carry in [false, true] {
                for warm in [false, true] {
                    let mut out = Vec::new();
                    for engine in EngineKind::emulators() {
                        let code = assemble(Mode::Long64, |a| {
                            a.mov(rdi, page).unwrap();
                            if warm {
                                a.mov(qword_ptr(rdi + 64), rdi).unwrap();
                            }
                            a.mov(ecx, u32::from(!carry)).unwrap();
                            a.cmp(ecx, 1).unwrap(); // CF = (ECX < 1)
                            form(a).unwrap();
                            // Inline consumers of the pending record, then all flags.
                            a.seto(r8b).unwrap();
                            a.setl(r9b).unwrap();
                            a.setle(r10b).unwrap();
                            a.setbe(r11b).unwrap();
                            a.pushfq().unwrap();
                            a.pop(rax).unwrap();
                            a.mov(rbx, qword_ptr(rdi)).unwrap();
                        });
                        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
                        g.write(page, &value.to_le_bytes());
                        g.run_to_halt();
                        let what =
                            format!("{engine} {name} of {value:#x}, CF {carry}, warm {warm}");
                        assert_no_exception(&g, &what);
                        let flags = g.cpu.gpr[RAX] & (CF | PF | AF | ZF | SF | OF);
                        assert_eq!(flags & CF != 0, carry, "{what}: CF");
                        out.push((flags, g.cpu.gpr[RBX], g.cpu.gpr[8..12].to_vec()));
                    }
                    assert_eq!(
                        out[0], out[1],
                        "{name} of {value:#x}, CF {carry}, warm {warm}"
                    );
                }
            }
        }
    }
}

/// BSF/BSR against the interpreter on the sources that matter: zero (the destination keeps
/// all 64 bits, only ZF is set), single low and high bits, all ones, for both widths.
#[test]
fn bit_scans_match_the_interpreter() {
    // BSF/BSR 32/64 from a register, then from memory, then from a quadword that crosses
    // into the next page (the slow path every time).
    const FORMS: u64 = 10;
    let sources = [
        0u64,
        1,
        2,
        0x8000_0000,
        0x1_0000_0000,
        0x8000_0000_0000_0000,
        u64::MAX,
        0x0F0F_0000,
    ];
    let mut out = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            a.mov(rdi, DATA_BASE).unwrap();
            a.mov(r8, DATA_BASE + 0x8000).unwrap();
            a.mov(r9, DATA_BASE + 0x9000 - 4).unwrap();
            for &src in &sources {
                for op in 0..FORMS {
                    a.mov(rcx, src).unwrap();
                    a.mov(qword_ptr(r8), rcx).unwrap();
                    a.mov(qword_ptr(r9), rcx).unwrap();
                    a.mov(rbx, 0xDEAD_BEEF_1234_5678u64).unwrap();
                    a.cmp(ecx, 3).unwrap(); // flags from before that must all be replaced
                    match op {
                        0 => a.bsf(ebx, ecx),
                        1 => a.bsf(rbx, rcx),
                        2 => a.bsr(ebx, ecx),
                        3 => a.bsr(rbx, rcx),
                        4 => a.bsf(ebx, dword_ptr(r8)),
                        5 => a.bsf(rbx, qword_ptr(r8)),
                        6 => a.bsr(ebx, dword_ptr(r8)),
                        7 => a.bsr(rbx, qword_ptr(r8)),
                        8 => a.bsf(rbx, qword_ptr(r9)),
                        _ => a.bsr(rbx, qword_ptr(r9)),
                    }
                    .unwrap();
                    a.pushfq().unwrap();
                    a.pop(rax).unwrap();
                    a.mov(qword_ptr(rdi), rax).unwrap();
                    a.mov(qword_ptr(rdi + 8), rbx).unwrap();
                    a.add(rdi, 16).unwrap();
                }
            }
        });
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.run_to_halt();
        assert_no_exception(&g, "bit scans");
        let n = sources.len() as u64 * FORMS;
        let mem: Vec<u64> = (0..2 * n).map(|k| g.read_u64(DATA_BASE + 8 * k)).collect();
        // A zero source left the marker in place.
        assert_eq!(mem[1], 0xDEAD_BEEF_1234_5678, "{engine}: BSF of 0");
        out.push(mem);
    }
    for (k, (a, b)) in out[0].iter().zip(&out[1]).enumerate() {
        assert_eq!(
            a,
            b,
            "case {} ({}): {a:#x} vs {b:#x}",
            k / 2,
            ["rflags", "rbx"][k % 2]
        );
    }
}

/// A loop whose registers are all live and changed by inline code, with memory accesses
/// in the middle that take the slow path on every pass (they cross a page boundary, so the
/// interpreter runs them) next to ones that take the fast path. The slow path reloads only
/// what its instruction writes, the other registers stay in host registers across it, and
/// it takes its instruction's retired count back out of the counter the fast path keeps
/// pending: registers, memory and the retired-instruction count must equal the
/// interpreter's.
#[test]
fn slow_paths_keep_live_registers_and_counts() {
    // Page-aligned: `PAGE - 4` makes every 8-byte access below cross into the next page.
    let page_end = DATA_BASE + 0x2_0000 + 0x1000;
    let mut out = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            let mut top = a.create_label();
            a.mov(rbx, page_end - 4).unwrap();
            a.mov(rax, 0x0123_4567_89AB_CDEFu64).unwrap();
            a.mov(qword_ptr(rbx), rax).unwrap();
            a.mov(qword_ptr(rbx + 8), rax).unwrap();
            for (k, r) in [rdx, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15]
                .into_iter()
                .enumerate()
            {
                a.mov(r, 0x1111_1111_1111_1111u64 * (k as u64 + 1)).unwrap();
            }
            a.mov(ecx, 150).unwrap();
            a.set_label(&mut top).unwrap();
            a.add(r8, rcx).unwrap();
            a.lea(r9, ptr(r8 + rcx * 2 + 5)).unwrap();
            a.xor(r10, r9).unwrap();
            a.add(rdx, r10).unwrap();
            a.mov(rax, qword_ptr(rbx)).unwrap(); // slow: crosses
            a.add(r11, rax).unwrap();
            a.mov(qword_ptr(rbx + 1), r10).unwrap(); // slow: crosses
            a.add(r12, qword_ptr(rbx + 8)).unwrap(); // fast: inside the next page
            a.push(r13).unwrap();
            a.pop(rsi).unwrap();
            a.add(r13, rsi).unwrap();
            a.rol(r14, 3).unwrap();
            a.imul_2(r15, r9).unwrap();
            a.sub(rdi, qword_ptr(rbx - 2)).unwrap(); // slow: crosses
            a.inc(qword_ptr(rbx + 2)).unwrap(); // slow: crosses
            a.sub(ecx, 1).unwrap();
            a.jnz(top).unwrap();
            a.hlt().unwrap();
        });
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.run_to_halt();
        assert_no_exception(&g, "slow paths");
        let mem: Vec<u64> = (0..4).map(|k| g.read_u64(page_end - 16 + 8 * k)).collect();
        out.push((g.cpu.gpr, mem, g.engine.instructions()));
    }
    let (want, got) = (&out[0], &out[1]);
    for k in 0..16 {
        assert_eq!(got.0[k], want.0[k], "GPR {k}");
    }
    assert_eq!(got.1, want.1, "memory");
    assert_eq!(got.2, want.2, "retired instructions");
}

/// JMP r64 and CALL r64 (with RET back) alternating between two targets, then a CALL to a non-canonical address in a register: #GP on the CALL with nothing
/// pushed. Registers, the stack and the faulting RIP must equal the interpreter's.
#[test]
fn branches_through_registers_match_the_interpreter() {
    let mut out = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            let mut top = a.create_label();
            let mut t0 = a.create_label();
            let mut t1 = a.create_label();
            let mut back = a.create_label();
            let mut sub = a.create_label();
            let mut done = a.create_label();
            a.lea(r8, ptr(t0)).unwrap();
            a.lea(r9, ptr(t1)).unwrap();
            a.lea(r10, ptr(sub)).unwrap();
            a.mov(ecx, 301).unwrap();
            a.xor(ebx, ebx).unwrap();
            a.set_label(&mut top).unwrap();
            a.mov(rax, r8).unwrap();
            a.test(ecx, 1).unwrap();
            a.cmovnz(rax, r9).unwrap();
            a.jmp(rax).unwrap();
            a.set_label(&mut t0).unwrap();
            a.add(ebx, 1).unwrap();
            a.jmp(back).unwrap();
            a.set_label(&mut t1).unwrap();
            a.call(r10).unwrap();
            a.set_label(&mut back).unwrap();
            a.sub(ecx, 1).unwrap();
            a.jnz(top).unwrap();
            a.jmp(done).unwrap();
            a.set_label(&mut sub).unwrap();
            a.add(ebx, 100).unwrap();
            a.mov(rdx, qword_ptr(rsp)).unwrap(); // the return address
            a.ret().unwrap();
            a.set_label(&mut done).unwrap();
            a.mov(rsi, rsp).unwrap();
            a.mov(rax, 0x8000_0000_0000_0000u64).unwrap();
            a.call(rax).unwrap();
        });
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.run_to_halt();
        assert_eq!(exception(&g), Some(13), "{engine}");
        assert_eq!(g.cpu.gpr[RBX], 150 + 151 * 100, "{engine}: RBX");
        let pushed = g.read_u64(g.cpu.gpr[RSI] - 8);
        out.push((g.cpu.gpr[..12].to_vec(), pushed, faulting_offset(&g, true)));
    }
    assert_eq!(out[0], out[1]);
}

/// FNSTCW to memory after FLDCW of assorted control words (the first store of each page
/// takes the slow path, the rest the inline one), then with CR0.TS set: #NM on the
/// FNSTCW with nothing stored.
#[test]
fn fnstcw_matches_the_interpreter() {
    let words: [u16; 6] = [0x037F, 0x027F, 0x0C7F, 0x1F40, 0x0000, 0xFFFF];
    let mut out = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            a.mov(rdi, DATA_BASE).unwrap();
            a.mov(rsi, DATA_BASE + 0x2000).unwrap();
            for (k, &w) in words.iter().enumerate() {
                a.mov(word_ptr(rsi), w as u32).unwrap();
                a.fldcw(word_ptr(rsi)).unwrap();
                a.fnstcw(word_ptr(rdi + 2 * k as i32)).unwrap();
            }
            a.fninit().unwrap();
            a.mov(rax, cr0).unwrap();
            a.or(rax, 8).unwrap(); // TS
            a.mov(cr0, rax).unwrap();
            a.mov(word_ptr(rdi + 64), 0x1234).unwrap();
            a.mov(ebx, 6).unwrap();
            a.fnstcw(word_ptr(rdi + 64)).unwrap();
            a.mov(ebx, 9).unwrap();
        });
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.run_to_halt();
        assert_eq!(exception(&g), Some(7), "{engine}: #NM");
        assert_eq!(g.cpu.gpr[RBX], 6, "{engine}");
        assert_eq!(
            read_u16(&g, DATA_BASE + 64),
            0x1234,
            "{engine}: nothing stored"
        );
        let stored: Vec<u16> = (0..words.len() as u64)
            .map(|k| read_u16(&g, DATA_BASE + 2 * k))
            .collect();
        out.push((stored, faulting_offset(&g, false)));
    }
    assert_eq!(out[0], out[1]);
}

/// MUL and DIV of 32- and 64-bit registers and memory on edge operands: products with and
/// without a high half, quotients the inline path computes (EDX below the divisor, RDX
/// zero) and 64-bit ones it leaves to the interpreter (RDX not zero), each after flags that
/// must survive DIV; then a DIV by zero, #DE on the DIV. Everything against the
/// interpreter.
#[test]
fn mul_and_div_match_the_interpreter() {
    // MUL/DIV of r32, r64, m32, m64, then of an m64 that crosses a page.
    const FORMS: u64 = 10;
    let values = [
        0u64,
        3,
        0xFFFF_FFFF,
        0x1_0000_0000,
        0x8000_0000_0000_0000,
        u64::MAX,
        0x1234_5678_9ABC_DEF0,
    ];
    let mut out = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            a.mov(rdi, DATA_BASE).unwrap();
            a.mov(r8, DATA_BASE + 0x8000).unwrap();
            a.mov(r9, DATA_BASE + 0x9000 - 4).unwrap(); // crosses a page: the slow path
            for &x in &values {
                for &y in &values {
                    for form in 0..FORMS {
                        a.mov(rax, x).unwrap();
                        a.mov(rcx, y | 1).unwrap(); // never zero, for the divisions
                                                    // A high half below the divisor (64-bit: sometimes not zero), so
                                                    // that no division faults.
                        let high = if form == 2 || form == 6 {
                            u64::from((x ^ y) as u32 % (y as u32 | 1)) | 0xAB00_0000_0000
                        } else {
                            (x ^ y) % (y | 1)
                        };
                        a.mov(rdx, high).unwrap();
                        a.mov(qword_ptr(r8), rcx).unwrap();
                        a.mov(qword_ptr(r9), rcx).unwrap();
                        a.cmp(eax, ecx).unwrap();
                        match form {
                            0 => a.mul(ecx),
                            1 => a.mul(rcx),
                            2 => a.div(ecx),
                            3 => a.div(rcx),
                            4 => a.mul(dword_ptr(r8)),
                            5 => a.mul(qword_ptr(r8)),
                            6 => a.div(dword_ptr(r8)),
                            7 => a.div(qword_ptr(r8)),
                            8 => a.mul(qword_ptr(r9)),
                            _ => a.div(qword_ptr(r9)),
                        }
                        .unwrap();
                        a.pushfq().unwrap();
                        a.pop(rbx).unwrap();
                        a.mov(qword_ptr(rdi), rax).unwrap();
                        a.mov(qword_ptr(rdi + 8), rdx).unwrap();
                        a.mov(qword_ptr(rdi + 16), rbx).unwrap();
                        a.add(rdi, 24).unwrap();
                    }
                }
            }
            a.mov(eax, 5).unwrap();
            a.xor(edx, edx).unwrap();
            a.xor(ecx, ecx).unwrap();
            a.div(rcx).unwrap();
        });
        assert!(code.len() < STUBS as usize, "program overlaps the stubs");
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.run_to_halt();
        assert_eq!(exception(&g), Some(0), "{engine}: #DE");
        let n = (values.len() * values.len()) as u64 * FORMS * 3;
        assert_eq!(
            g.cpu.gpr[RDI],
            DATA_BASE + 8 * n,
            "{engine}: every case ran"
        );
        let mem: Vec<u64> = (0..n).map(|k| g.read_u64(DATA_BASE + 8 * k)).collect();
        out.push((mem, g.cpu.gpr[RAX], faulting_offset(&g, false)));
    }
    let (want, got) = (&out[0], &out[1]);
    for (k, (w, g)) in want.0.iter().zip(&got.0).enumerate() {
        let case = k / 3;
        assert_eq!(
            w,
            g,
            "case {case} (form {}) {}",
            case as u64 % FORMS,
            ["rax", "rdx", "rflags"][k % 3]
        );
    }
    assert_eq!((want.1, want.2), (got.1, got.2), "#DE");
}

/// SHLD/SHRD r32/r64 by CL (every count from 0 to 65: masked, zero and width-1 counts
/// included) and by immediates, on edge operands, each after a CMP whose flags a zero count
/// must keep: values and all six arithmetic flags against the interpreter.
#[test]
fn double_shifts_match_the_interpreter() {
    let values = [0u64, 1, 0x8000_0000, u64::MAX, 0x1234_5678_9ABC_DEF0];
    // Past the results (4 forms x 1650 cases x 16 bytes), below the stack.
    let table = DATA_BASE + 0x2_0000;
    let mut cases = Vec::new();
    for &d in &values {
        for &s in &values {
            for count in 0..66u64 {
                cases.push((d, s, count));
            }
        }
    }
    let bytes: Vec<u8> = cases
        .iter()
        .flat_map(|&(d, s, c)| [d, s, c].into_iter().flat_map(u64::to_le_bytes))
        .collect();
    let imm_counts = [0u32, 1, 7, 31, 32, 33, 63];
    let mut out = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            a.mov(rdi, DATA_BASE).unwrap();
            for form in 0..4 {
                let mut top = a.create_label();
                a.mov(rsi, table).unwrap();
                a.mov(r12d, cases.len() as u32).unwrap();
                a.set_label(&mut top).unwrap();
                a.mov(rbx, qword_ptr(rsi)).unwrap();
                a.mov(rdx, qword_ptr(rsi + 8)).unwrap();
                a.mov(rcx, qword_ptr(rsi + 16)).unwrap();
                a.cmp(rbx, rdx).unwrap();
                match form {
                    0 => a.shld(ebx, edx, cl),
                    1 => a.shld(rbx, rdx, cl),
                    2 => a.shrd(ebx, edx, cl),
                    _ => a.shrd(rbx, rdx, cl),
                }
                .unwrap();
                a.pushfq().unwrap();
                a.pop(rax).unwrap();
                a.mov(qword_ptr(rdi), rbx).unwrap();
                a.mov(qword_ptr(rdi + 8), rax).unwrap();
                a.add(rdi, 16).unwrap();
                a.add(rsi, 24).unwrap();
                a.sub(r12d, 1).unwrap();
                a.jnz(top).unwrap();
            }
            for &c in &imm_counts {
                for form in 0..4 {
                    a.mov(rbx, 0x8123_4567_89AB_CDEFu64).unwrap();
                    a.mov(rdx, 0x0FED_CBA9_8765_4321u64).unwrap();
                    a.cmp(ebx, 7).unwrap();
                    match form {
                        0 => a.shld(ebx, edx, c),
                        1 => a.shld(rbx, rdx, c),
                        2 => a.shrd(ebx, edx, c),
                        _ => a.shrd(rbx, rdx, c),
                    }
                    .unwrap();
                    a.pushfq().unwrap();
                    a.pop(rax).unwrap();
                    a.mov(qword_ptr(rdi), rbx).unwrap();
                    a.mov(qword_ptr(rdi + 8), rax).unwrap();
                    a.add(rdi, 16).unwrap();
                }
            }
        });
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.write(table, &bytes);
        g.run_to_halt();
        assert_no_exception(&g, "double shifts");
        let n = (cases.len() * 4 + imm_counts.len() * 4) as u64;
        let mem: Vec<u64> = (0..2 * n).map(|k| g.read_u64(DATA_BASE + 8 * k)).collect();
        out.push(mem);
    }
    for (k, (w, g)) in out[0].iter().zip(&out[1]).enumerate() {
        let case = k / 2;
        let what = if case < cases.len() * 4 {
            let (d, s, c) = cases[case % cases.len()];
            format!(
                "form {} dst {d:#x} src {s:#x} count {c}",
                case / cases.len()
            )
        } else {
            format!("immediate case {}", case - cases.len() * 4)
        };
        let mask = if k % 2 == 1 { 0x8D5 } else { u64::MAX };
        assert_eq!(w & mask, g & mask, "{what}: {}", ["value", "flags"][k % 2]);
    }
}

/// BT of registers and of memory by register offsets (negative ones and ones beyond the
/// operand, which address other words; some words cross into the next page, the slow
/// path) and by immediates, each after an ADD whose other flags BT must keep: CF and the
/// rest of the flags against the interpreter.
#[test]
fn bit_tests_match_the_interpreter() {
    let offsets: [i64; 12] = [0, 1, 5, 31, 32, 33, 63, 64, 100, -1, -33, -70];
    // A bitmap of 64 bytes whose middle is a page boundary.
    let bitmap = DATA_BASE + 0x3000 - 32;
    let mut out = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            a.mov(rdi, DATA_BASE).unwrap();
            a.mov(rsi, bitmap + 24).unwrap(); // 8 bytes below the page end
            a.mov(r8, 0x8421_0F0F_F0F0_1248u64).unwrap();
            for k in 0..8 {
                a.mov(r9, 0x0123_4567_89AB_CDEFu64.rotate_left(7 * k))
                    .unwrap();
                a.mov(qword_ptr(rsi - 24 + 8 * k as i32), r9).unwrap();
            }
            for &off in &offsets {
                for form in 0..7 {
                    a.mov(rcx, off as u64).unwrap();
                    a.mov(eax, 0x7FFF_FFFF).unwrap();
                    a.add(eax, ecx).unwrap(); // flags to keep, CF from the add
                    match form {
                        0 => a.bt(r8d, ecx),
                        1 => a.bt(r8, rcx),
                        2 => a.bt(r8d, (off & 0xFF) as i32),
                        3 => a.bt(r8, (off & 0xFF) as i32),
                        4 => a.bt(dword_ptr(rsi), ecx),
                        5 => a.bt(qword_ptr(rsi), rcx),
                        _ => a.bt(qword_ptr(rsi), (off & 0xFF) as i32),
                    }
                    .unwrap();
                    a.pushfq().unwrap();
                    a.pop(rax).unwrap();
                    a.mov(qword_ptr(rdi), rax).unwrap();
                    a.add(rdi, 8).unwrap();
                }
            }
        });
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.run_to_halt();
        assert_no_exception(&g, "bit tests");
        let n = (offsets.len() * 7) as u64;
        let mem: Vec<u64> = (0..n)
            .map(|k| g.read_u64(DATA_BASE + 8 * k) & 0x8D5)
            .collect();
        out.push(mem);
    }
    for (k, (w, g)) in out[0].iter().zip(&out[1]).enumerate() {
        assert_eq!(w, g, "offset {} form {}", offsets[k / 7], k % 7);
    }
}

/// CALL qword [mem] through a table alternating between two functions (which RET), with
/// the stack on a page the TLB has not seen for one of the calls (the push misses: the
/// interpreter runs the CALL), then a CALL to a non-canonical address from memory: #GP
/// on the CALL with nothing pushed. Against the interpreter.
#[test]
fn calls_through_memory_match_the_interpreter() {
    let table = DATA_BASE + 0x1_0000;
    let fresh_stack = DATA_BASE + 0x3_4000;
    let mut out = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            let mut top = a.create_label();
            let mut f0 = a.create_label();
            let mut f1 = a.create_label();
            let mut done = a.create_label();
            branch_table(a, table, f0, f1);
            a.mov(ecx, 201).unwrap();
            a.xor(ebx, ebx).unwrap();
            a.set_label(&mut top).unwrap();
            a.mov(eax, ecx).unwrap();
            a.and(eax, 1).unwrap();
            a.call(qword_ptr(rsi + rax * 8)).unwrap();
            a.sub(ecx, 1).unwrap();
            a.jnz(top).unwrap();
            a.jmp(done).unwrap();
            a.set_label(&mut f0).unwrap();
            a.add(ebx, 1).unwrap();
            a.mov(rdx, qword_ptr(rsp)).unwrap();
            a.ret().unwrap();
            a.set_label(&mut f1).unwrap();
            a.add(ebx, 100).unwrap();
            a.ret().unwrap();
            a.set_label(&mut done).unwrap();
            a.mov(rdi, rsp).unwrap();
            a.mov(rsp, fresh_stack).unwrap();
            a.call(qword_ptr(rsi + 8)).unwrap();
            a.mov(r8, rsp).unwrap();
            a.mov(rsp, rdi).unwrap();
            a.mov(r9, rsp).unwrap();
            a.call(qword_ptr(rsi + 16)).unwrap();
        });
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.run_to_halt();
        assert_eq!(exception(&g), Some(13), "{engine}");
        assert_eq!(g.cpu.gpr[RBX], 100 * 101 + 100 + 100, "{engine}: RBX");
        assert_eq!(g.cpu.gpr[8], fresh_stack, "{engine}: RSP after the call");
        let pushed = g.read_u64(fresh_stack - 8);
        let not_pushed = g.read_u64(g.cpu.gpr[9] - 8);
        out.push((
            g.cpu.gpr[..10].to_vec(),
            pushed,
            not_pushed,
            faulting_offset(&g, true),
        ));
    }
    assert_eq!(out[0], out[1]);
}

/// MOV r, Sreg of every segment register into 16-, 32- and 64-bit registers that hold
/// other bits (the 16-bit form keeps the rest, the others zero-extend), and the hints the
/// interpreter runs as NOPs (PAUSE, PREFETCHh of an address that is not mapped, the fences,
/// ENDBR64) between them: registers and flags as the interpreter leaves them.
#[test]
fn segment_reads_and_hints_match_the_interpreter() {
    let mut results = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            let sregs = [es, cs, ss, ds, fs, gs];
            a.mov(r9, 0x0000_7FFF_DEAD_0000u64).unwrap(); // not mapped
            a.cmp(r9, 5).unwrap();
            for (k, &s) in sregs.iter().enumerate() {
                a.mov(rax, u64::MAX).unwrap();
                a.mov(rbx, u64::MAX).unwrap();
                a.mov(rcx, u64::MAX).unwrap();
                a.mov(ax, s).unwrap();
                a.mov(ebx, s).unwrap();
                a.mov(rcx, s).unwrap();
                a.pause().unwrap();
                a.prefetcht0(byte_ptr(r9)).unwrap();
                a.prefetchnta(byte_ptr(r9 + 64)).unwrap();
                a.lfence().unwrap();
                a.mfence().unwrap();
                a.sfence().unwrap();
                a.endbr64().unwrap();
                a.mov(qword_ptr(rdi + 24 * k as i32), rax).unwrap();
                a.mov(qword_ptr(rdi + 24 * k as i32 + 8), rbx).unwrap();
                a.mov(qword_ptr(rdi + 24 * k as i32 + 16), rcx).unwrap();
            }
            a.pushfq().unwrap();
            a.pop(rdx).unwrap();
        });
        let mut g = guest(engine, Mode::Long64, &code, &[(RDI, DATA_BASE)], 0);
        g.run_to_halt();
        assert_no_exception(&g, &format!("{engine}"));
        let stored: Vec<u64> = (0..18).map(|k| g.read_u64(DATA_BASE + 8 * k)).collect();
        results.push((stored, g.cpu.gpr[RDX]));
    }
    assert_eq!(results[0], results[1]);
    // The 16-bit form kept the other bits; the others did not.
    let ss_row = &results[0].0[6..9];
    assert_eq!(ss_row[0] >> 16, 0xFFFF_FFFF_FFFF);
    assert!(ss_row[1] <= 0xFFFF && ss_row[2] <= 0xFFFF);
}
