//! Integer ALU: ADD ADC SUB SBB AND OR XOR CMP TEST INC DEC NEG NOT on 8/16/32/64-bit
//! registers and memory, checked against a reference model written here (result, defined
//! flags, preserved flags, untouched upper register bits); read-modify-write on a read-only
//! page (#PF with W), 32-bit zero-extension in 64-bit mode, AH..BH versus SPL..DIL.

use crate::common::*;
use iced_x86::Register;

/// One test case: value A, value B, incoming RFLAGS.
type Case = (u64, u64, u64);
/// Emits the instruction under test for a case.
type EmitCase<'a> = &'a dyn Fn(&mut CodeAssembler, &Case);

/// The instructions under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Add,
    Adc,
    Sub,
    Sbb,
    And,
    Or,
    Xor,
    Cmp,
    Test,
    Inc,
    Dec,
    Neg,
    Not,
}

const BINARY: [Op; 9] = [
    Op::Add,
    Op::Adc,
    Op::Sub,
    Op::Sbb,
    Op::And,
    Op::Or,
    Op::Xor,
    Op::Cmp,
    Op::Test,
];
const UNARY: [Op; 4] = [Op::Inc, Op::Dec, Op::Neg, Op::Not];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Add => "Add",
            Op::Adc => "Adc",
            Op::Sub => "Sub",
            Op::Sbb => "Sbb",
            Op::And => "And",
            Op::Or => "Or",
            Op::Xor => "Xor",
            Op::Cmp => "Cmp",
            Op::Test => "Test",
            Op::Inc => "Inc",
            Op::Dec => "Dec",
            Op::Neg => "Neg",
            Op::Not => "Not",
        }
    }

    /// Does the instruction write its destination?
    fn writes(self) -> bool {
        !matches!(self, Op::Cmp | Op::Test)
    }
}

/// Reference model: (result, flags) of `op` at `bits` on `a`, `b` with incoming `flags_in`.
/// Flags the SDM leaves undefined (AF after logic ops) are reported from `flags_in` and
/// excluded by [`defined`].
fn model(op: Op, bits: u32, a: u64, b: u64, flags_in: u64) -> (u64, u64) {
    let m = width_mask(bits);
    let (a, b) = (a & m, b & m);
    let sign = 1u64 << (bits - 1);
    let cin = flags_in & CF;
    let add = |a: u64, b: u64, c: u64| {
        let r = a.wrapping_add(b).wrapping_add(c) & m;
        let mut f = szp(r, bits);
        if u128::from(a) + u128::from(b) + u128::from(c) > u128::from(m) {
            f |= CF;
        }
        if (a ^ r) & (b ^ r) & sign != 0 {
            f |= OF;
        }
        if (a ^ b ^ r) & 0x10 != 0 {
            f |= AF;
        }
        (r, f)
    };
    let sub = |a: u64, b: u64, c: u64| {
        let r = a.wrapping_sub(b).wrapping_sub(c) & m;
        let mut f = szp(r, bits);
        if u128::from(a) < u128::from(b) + u128::from(c) {
            f |= CF;
        }
        if (a ^ b) & (a ^ r) & sign != 0 {
            f |= OF;
        }
        if (a ^ b ^ r) & 0x10 != 0 {
            f |= AF;
        }
        (r, f)
    };
    let logic = |r: u64| (r, szp(r, bits) | (flags_in & AF));
    match op {
        Op::Add => add(a, b, 0),
        Op::Adc => add(a, b, cin),
        Op::Sub | Op::Cmp => {
            let (r, f) = sub(a, b, 0);
            (if op == Op::Cmp { a } else { r }, f)
        }
        Op::Sbb => sub(a, b, cin),
        Op::And => logic(a & b),
        Op::Or => logic(a | b),
        Op::Xor => logic(a ^ b),
        Op::Test => (a, logic(a & b).1),
        Op::Inc => {
            let (r, f) = add(a, 1, 0);
            (r, (f & !CF) | cin)
        }
        Op::Dec => {
            let (r, f) = sub(a, 1, 0);
            (r, (f & !CF) | cin)
        }
        Op::Neg => sub(0, a, 0),
        Op::Not => (!a & m, flags_in & ARITH),
    }
}

/// The flags the model defines for `op` (checked exactly; the rest are undefined).
fn defined(op: Op) -> u64 {
    match op {
        Op::And | Op::Or | Op::Xor | Op::Test => ARITH & !AF,
        _ => ARITH,
    }
}

/// Operand values exercising carries, signed overflow, the nibble carry and parity.
fn values(bits: u32) -> Vec<u64> {
    let m = width_mask(bits);
    let sign = 1u64 << (bits - 1);
    let mut v = vec![
        0,
        1,
        2,
        0x0F,
        0x10,
        sign - 1,
        sign,
        sign + 1,
        m - 1,
        m,
        0x5A5A_5A5A_5A5A_5A5A & m,
        0xC3A5_9F17_2E4B_8D61 & m,
    ];
    v.dedup();
    v
}

/// Garbage above the operand width, to check 8/16-bit writes merge and sources are masked.
const UPPER: u64 = 0xDEAD_BEEF_CAFE_F00D;

fn reg_of(bits: u32, n: usize) -> Register {
    let by_size = match bits {
        8 => [Register::AL, Register::CL, Register::DL, Register::BL],
        16 => [Register::AX, Register::CX, Register::DX, Register::BX],
        32 => [Register::EAX, Register::ECX, Register::EDX, Register::EBX],
        _ => [Register::RAX, Register::RCX, Register::RDX, Register::RBX],
    };
    by_size[n]
}

fn sizes(mode: Mode) -> Vec<u32> {
    if mode == Mode::Long64 {
        vec![8, 16, 32, 64]
    } else {
        vec![8, 16, 32]
    }
}

/// What the guest recorded for one case: the destination register, RFLAGS.
struct Recorded {
    value: u64,
    flags: u64,
}

/// Run `cases` (each: value A, value B, incoming flags) of `emit_op` in one guest. Each case
/// loads A (with [`UPPER`] garbage) into RAX and B into RBX, sets the flags, runs the
/// instruction, and records RAX and RFLAGS.
fn run_cases(
    engine: EngineKind,
    mode: Mode,
    cases: &[(u64, u64, u64)],
    emit_op: EmitCase,
) -> Vec<Recorded> {
    let d = data(mode);
    let fm = full_mask(mode);
    let g = run(engine, mode, &[], 0, |a| {
        for (k, &(x, y, f)) in cases.iter().enumerate() {
            load(a, RAX, x);
            load(a, RBX, y);
            set_flags(a, f as u32);
            emit_op(a, &(x, y, f));
            if a.bitness() == 64 {
                a.pushfq().unwrap();
                a.pop(rcx).unwrap();
            } else {
                a.pushfd().unwrap();
                a.pop(ecx).unwrap();
            }
            store(a, d + 16 * k as u64, RAX);
            store(a, d + 16 * k as u64 + 8, RCX);
        }
    });
    assert_no_exception(&g, "alu cases");
    (0..cases.len() as u64)
        .map(|k| Recorded {
            value: g.read_u64(d + 16 * k) & fm,
            flags: g.read_u64(d + 16 * k + 8) & fm,
        })
        .collect()
}

/// Expected full destination register: the model result merged into the loaded value.
fn expected_register(mode: Mode, written: bool, bits: u32, loaded: u64, result: u64) -> u64 {
    let fm = full_mask(mode);
    if !written {
        return loaded & fm;
    }
    match bits {
        8 | 16 => ((loaded & !width_mask(bits)) | result) & fm,
        _ => result & fm, // a 32-bit write zero-extends in 64-bit mode
    }
}

fn check(
    engine: EngineKind,
    mode: Mode,
    op: Op,
    bits: u32,
    form: &str,
    cases: &[(u64, u64, u64)],
    got: &[Recorded],
) {
    for (&(x, y, f), r) in cases.iter().zip(got) {
        let (res, flags) = model(op, bits, x, y, f);
        // In the memory-destination form the register is reloaded from memory afterwards.
        let written = op.writes() || form == "mem-dst";
        let want = expected_register(mode, written, bits, x, res);
        let ctx = format!(
            "{engine} {mode:?} {op:?} {form} {bits}-bit a={:#x} b={:#x} flags_in={f:#x}",
            x & width_mask(bits),
            y & width_mask(bits)
        );
        assert_eq!(r.value, want, "{ctx}: register");
        let mask = defined(op);
        assert_eq!(
            r.flags & mask,
            flags & mask,
            "{ctx}: flags (mask {mask:#x})"
        );
    }
}

fn binary_cases(mode: Mode, bits: u32) -> Vec<(u64, u64, u64)> {
    let fm = full_mask(mode);
    let vals = values(bits);
    let mut cases = Vec::new();
    for &x in &vals {
        for &y in &vals {
            for f in [0, ARITH] {
                let upper = UPPER & !width_mask(bits) & fm;
                cases.push((
                    x | upper,
                    y | (upper.rotate_left(8) & !width_mask(bits) & fm),
                    f,
                ));
            }
        }
    }
    cases
}

#[test]
fn binary_ops_register_forms_match_the_model() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            for bits in sizes(mode) {
                let cases = binary_cases(mode, bits);
                for op in BINARY {
                    let name = format!("{}_rm{bits}_r{bits}", op.name());
                    let got = run_cases(engine, mode, &cases, &|a, _| {
                        emit(
                            a,
                            &name,
                            &[Operand::Reg(reg_of(bits, 0)), Operand::Reg(reg_of(bits, 3))],
                        )
                    });
                    check(engine, mode, op, bits, "reg,reg", &cases, &got);
                }
            }
        }
    }
}

#[test]
fn unary_ops_register_forms_match_the_model() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            for bits in sizes(mode) {
                let upper = UPPER & !width_mask(bits) & full_mask(mode);
                let cases: Vec<_> = values(bits)
                    .into_iter()
                    .flat_map(|x| [(x | upper, 0, 0), (x | upper, 0, ARITH)])
                    .collect();
                for op in UNARY {
                    let name = format!("{}_rm{bits}", op.name());
                    // INC/DEC r16/r32 also have one-byte forms (0x40+r) outside 64-bit mode.
                    let short = format!("{}_r{bits}", op.name());
                    let mut forms = vec![name];
                    if matches!(op, Op::Inc | Op::Dec) && mode != Mode::Long64 && bits != 8 {
                        forms.push(short);
                    }
                    for form in forms {
                        let got = run_cases(engine, mode, &cases, &|a, _| {
                            emit(a, &form, &[Operand::Reg(reg_of(bits, 0))])
                        });
                        check(engine, mode, op, bits, &form, &cases, &got);
                    }
                }
            }
        }
    }
}

/// Memory destination (op [mem], reg / op [mem]), memory source (op reg, [mem]), and
/// immediate forms (imm8 sign-extended, full immediates, imm32 sign-extended for 64-bit).
#[test]
fn memory_and_immediate_forms_match_the_model() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let mem = Operand::Mem(Register::None, (data(mode) + 0x1000) as i64);
            for bits in sizes(mode) {
                let (ra, rb) = (Operand::Reg(reg_of(bits, 0)), Operand::Reg(reg_of(bits, 3)));
                let mov_store = format!("Mov_rm{bits}_r{bits}");
                let mov_load = format!("Mov_r{bits}_rm{bits}");
                let cases: Vec<_> = binary_cases(mode, bits).into_iter().step_by(5).collect();
                for op in BINARY.iter().chain(UNARY.iter()).copied() {
                    let unary = UNARY.contains(&op);
                    // [slot] := A; clobber A; op [slot](, B); A := [slot]. CMP/TEST leave
                    // memory at A. The load reads only `bits`, so A's upper garbage stays.
                    let got = run_cases(engine, mode, &cases, &|a, _| {
                        emit(a, &mov_store, &[mem, ra]);
                        emit(a, &format!("Not_rm{bits}"), &[ra]);
                        if unary {
                            emit(a, &format!("{}_rm{bits}", op.name()), &[mem]);
                        } else {
                            emit(a, &format!("{}_rm{bits}_r{bits}", op.name()), &[mem, rb]);
                        }
                        emit(a, &mov_load, &[ra, mem]);
                    });
                    check(engine, mode, op, bits, "mem-dst", &cases, &got);
                    if unary {
                        continue;
                    }
                    // Memory source: A in RAX, B in [slot]. TEST has no r, r/m form.
                    if op != Op::Test {
                        let got = run_cases(engine, mode, &cases, &|a, _| {
                            emit(a, &mov_store, &[mem, rb]);
                            emit(a, &format!("{}_r{bits}_rm{bits}", op.name()), &[ra, mem]);
                        });
                        check(engine, mode, op, bits, "reg,mem", &cases, &got);
                    }
                    // Immediates: B is replaced by the sign-extended immediate.
                    let full = bits.min(32);
                    let mut forms = vec![(format!("{}_rm{bits}_imm{full}", op.name()), full)];
                    if op != Op::Test && bits != 8 {
                        forms.push((format!("{}_rm{bits}_imm8", op.name()), 8));
                    }
                    for (form, imm_bits) in forms {
                        let imm_cases: Vec<_> = cases
                            .iter()
                            .map(|&(x, y, f)| (x, sign_extend_to(y, imm_bits, bits), f))
                            .collect();
                        let got = run_cases(engine, mode, &imm_cases, &|a, case| {
                            let imm = sign_extend_to(case.1, imm_bits, 64) as i64;
                            emit(a, &form, &[ra, Operand::Imm(imm)]);
                        });
                        check(engine, mode, op, bits, &form, &imm_cases, &got);
                    }
                }
            }
        }
    }
}

fn sign_extend_to(v: u64, from: u32, to: u32) -> u64 {
    let s = 64 - from;
    ((((v << s) as i64) >> s) as u64) & width_mask(to)
}

/// A read-modify-write ALU instruction on a read-only page faults with #PF whose error code
/// has P and W set, leaves memory alone, and reports the instruction as the faulting one;
/// a read-only ALU access (CMP) of the same page succeeds.
#[test]
fn read_modify_write_on_a_read_only_page_faults_with_w() {
    for engine in EngineKind::emulators() {
        for mode in PAGED_MODES {
            let target = DATA_BASE + 0x10;
            // Each entry: the RMW instruction, built for one of the forms.
            // XCHG with memory is included: it is a locked read-modify-write too.
            let forms: [(&str, &[Operand]); 6] = [
                (
                    "Add_rm32_imm8",
                    &[
                        Operand::Mem(iced_x86::Register::None, target as i64),
                        Operand::Imm(1),
                    ],
                ),
                (
                    "Inc_rm16",
                    &[Operand::Mem(iced_x86::Register::None, target as i64)],
                ),
                (
                    "Not_rm8",
                    &[Operand::Mem(iced_x86::Register::None, target as i64)],
                ),
                (
                    "Neg_rm32",
                    &[Operand::Mem(iced_x86::Register::None, target as i64)],
                ),
                (
                    "Xor_rm32_r32",
                    &[
                        Operand::Mem(iced_x86::Register::None, target as i64),
                        Operand::Reg(iced_x86::Register::EBX),
                    ],
                ),
                (
                    "Xchg_rm32_r32",
                    &[
                        Operand::Mem(iced_x86::Register::None, target as i64),
                        Operand::Reg(iced_x86::Register::EBX),
                    ],
                ),
            ];
            for (name, ops) in forms {
                let mut prefix_len = 0;
                let code = assemble(mode, |a| {
                    a.cmp(dword_ptr(target), 0x1234_5678).unwrap();
                    a.mov(ecx, 0xC0DEu32).unwrap();
                    prefix_len = a.instructions().len();
                    emit(a, name, ops);
                    a.mov(ecx, 0xBADu32).unwrap();
                });
                // Offset of the RMW instruction: decode the prefix instructions.
                let mut dec = iced_x86::Decoder::with_ip(mode.bitness(), &code, CODE_BASE, 0);
                let mut rmw_off = 0;
                for _ in 0..prefix_len {
                    let i = dec.decode();
                    rmw_off = i.next_ip() - CODE_BASE;
                }
                let mut g = guest(engine, mode, &code, &[(RBX, 0xFF)], 0);
                g.write(target, &0x1234_5678u32.to_le_bytes());
                g.write(
                    pte_addr(mode, target),
                    &((target & !0xFFF) as u32 | 0x5).to_le_bytes(),
                );
                g.run_to_halt();
                let ctx = format!("{engine} {mode:?} {name}");
                assert_eq!(exception(&g), Some(14), "{ctx}: #PF expected");
                let error_code = g.read_u64(stack_phys(&g)) & 0xFFFF_FFFF;
                assert_eq!(error_code, 0b011, "{ctx}: error code P|W (supervisor)");
                assert_eq!(g.cpu.cr2, target, "{ctx}: CR2");
                assert_eq!(faulting_offset(&g, true), rmw_off, "{ctx}: faulting RIP");
                assert_eq!(read_u32(&g, target), 0x1234_5678, "{ctx}: memory unchanged");
                assert_eq!(g.cpu.gpr[RCX], 0xC0DE, "{ctx}: stopped at the RMW");
                assert_eq!(g.cpu.gpr[RBX], 0xFF, "{ctx}: register operand unchanged");
                assert_eq!(flags(&g, ZF), ZF, "{ctx}: the CMP before it read the page");
            }
        }
    }
}

/// 32-bit results zero-extend into the 64-bit register (also for INC/NOT and immediates);
/// 8/16-bit results and CMP/TEST leave the upper bits.
#[test]
fn thirty_two_bit_results_zero_extend_in_64_bit_mode() {
    for engine in EngineKind::emulators() {
        let g = run(engine, Mode::Long64, &[], 0, |a| {
            a.mov(rax, 0xFFFF_FFFF_0000_0001u64).unwrap();
            a.add(eax, 1).unwrap();
            a.mov(rbx, 0xFFFF_FFFF_FFFF_FFFFu64).unwrap();
            a.not(ebx).unwrap();
            a.mov(rcx, 0x1111_1111_1111_1111u64).unwrap();
            a.inc(ecx).unwrap();
            a.mov(rdx, 0x2222_2222_2222_2222u64).unwrap();
            a.cmp(edx, 0).unwrap();
            a.test(edx, edx).unwrap();
            a.mov(rsi, 0x3333_3333_3333_3333u64).unwrap();
            a.sub(si, 0x33).unwrap();
            a.mov(r9, 0x4444_4444_4444_4444u64).unwrap();
            a.xor(r9d, r9d).unwrap();
        });
        assert_no_exception(&g, "zero extension");
        let s = &g.cpu;
        assert_eq!(s.gpr[RAX], 2, "{engine}: add eax");
        assert_eq!(s.gpr[RBX], 0, "{engine}: not ebx");
        assert_eq!(s.gpr[RCX], 0x1111_1112, "{engine}: inc ecx");
        assert_eq!(
            s.gpr[RDX], 0x2222_2222_2222_2222,
            "{engine}: cmp/test do not write"
        );
        assert_eq!(s.gpr[RSI], 0x3333_3333_3333_3300, "{engine}: 16-bit merges");
        assert_eq!(s.gpr[9], 0, "{engine}: xor r9d");
    }
}

/// ModRM byte-register numbers 4..7 mean AH, CH, DH, BH without REX and SPL, BPL, SIL, DIL
/// with any REX prefix (64-bit mode only).
#[test]
fn high_byte_registers_versus_rex_byte_registers() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let init = [
                (RAX, 0x0102_0304u64),
                (RBX, 0x0510u64),
                (RDX, 0x2030u64),
                (RSI, 0x4050),
                (RDI, 0x6070),
            ];
            // add dh, bl (00 DE); add al, bh (00 F8).
            let mut code = vec![0x00, 0xDE, 0x00, 0xF8];
            if mode == Mode::Long64 {
                // REX: add sil, bl (40 00 DE); add al, dil (40 00 F8).
                code.extend_from_slice(&[0x40, 0x00, 0xDE, 0x40, 0x00, 0xF8]);
            }
            code.push(0xF4);
            let mut g = guest(engine, mode, &code, &init, 0);
            g.run_to_halt();
            assert_no_exception(&g, "byte registers");
            let s = &g.cpu;
            // DH = 0x20 + BL (0x10) = 0x30; AL = 0x04 + BH (0x05) = 0x09.
            assert_eq!(s.gpr[RDX] & 0xFFFF, 0x3030, "{engine} {mode:?}: add dh, bl");
            if mode == Mode::Long64 {
                assert_eq!(s.gpr[RSI], 0x4060, "{engine}: add sil, bl");
                // AL = 0x09 + DIL (0x70) = 0x79; AH untouched.
                assert_eq!(s.gpr[RAX], 0x0102_0379, "{engine}: add al, dil");
            } else {
                assert_eq!(
                    s.gpr[RAX] & 0xFFFF_FFFF,
                    0x0102_0309,
                    "{mode:?}: add al, bh"
                );
                assert_eq!(s.gpr[RSI] & 0xFFFF, 0x4050, "{mode:?}: SI untouched");
            }
        }
    }
}

/// A read-modify-write that straddles into a read-only page faults on the second page (CR2 =
/// its first byte) without writing the bytes on the first page.
#[test]
fn page_crossing_read_modify_write_is_all_or_nothing() {
    for engine in EngineKind::emulators() {
        for mode in PAGED_MODES {
            let ro_page = DATA_BASE + 0x2000;
            let target = ro_page - 2;
            let code = assemble(mode, |a| {
                a.add(dword_ptr(target), 0x0101_0101u32).unwrap();
            });
            let mut g = guest(engine, mode, &code, &[], 0);
            g.write(target, &0x4433_2211u32.to_le_bytes());
            g.write(
                pte_addr(mode, ro_page),
                &(ro_page as u32 | 0x5).to_le_bytes(),
            );
            g.run_to_halt();
            let what = format!("{engine} {mode:?}");
            assert_eq!(exception(&g), Some(14), "{what}: #PF");
            assert_eq!(g.cpu.cr2, ro_page, "{what}: CR2 on the second page");
            assert_eq!(
                g.read_u64(stack_phys(&g)) & 0xFFFF_FFFF,
                0b011,
                "{what}: P|W"
            );
            assert_eq!(
                read_u32(&g, target),
                0x4433_2211,
                "{what}: first page untouched"
            );
        }
    }
}
