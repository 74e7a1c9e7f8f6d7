//! Near control transfer: Jcc for all 16 conditions (taken and not), JMP/CALL/RET near
//! (relative, register, memory, RET imm16), LOOP/LOOPE/LOOPNE/JCXZ/JECXZ/JRCXZ with the
//! counter width from the address size (0x67), #GP for a target beyond the CS limit (real
//! mode) or a non-canonical target (64-bit mode) with RIP at the branch.

use crate::common::*;
use crate::data::{condition, flag_combinations, CC_NAMES};
use iced_x86::BlockEncoderOptions;

fn jcc(a: &mut CodeAssembler, cc: u8, l: CodeLabel) {
    match cc {
        0 => a.jo(l),
        1 => a.jno(l),
        2 => a.jb(l),
        3 => a.jae(l),
        4 => a.je(l),
        5 => a.jne(l),
        6 => a.jbe(l),
        7 => a.ja(l),
        8 => a.js(l),
        9 => a.jns(l),
        10 => a.jp(l),
        11 => a.jnp(l),
        12 => a.jl(l),
        13 => a.jge(l),
        14 => a.jle(l),
        _ => a.jg(l),
    }
    .unwrap();
}

/// Assemble code that needs label addresses as immediates: `f` gets the address of its
/// label `k` (a placeholder of the same size on the first pass) and returns its labels.
/// Returns the code and the label addresses (offsets from CS.base in real mode).
fn assemble_with_addresses(
    mode: Mode,
    f: impl Fn(&mut CodeAssembler, &dyn Fn(usize) -> u64) -> Vec<CodeLabel>,
) -> (Vec<u8>, Vec<u64>) {
    let origin = if mode == Mode::Real { 0 } else { CODE_BASE };
    let pass = |known: &[u64]| {
        let mut a = CodeAssembler::new(mode.bitness()).unwrap();
        let labels = f(&mut a, &|k| known.get(k).copied().unwrap_or(origin + 0x100));
        a.hlt().unwrap();
        let r = a
            .assemble_options(origin, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
            .unwrap();
        let addrs: Vec<u64> = labels.iter().map(|l| r.label_ip(l).unwrap()).collect();
        (r.inner.code_buffer, addrs)
    };
    let (_, first) = pass(&[]);
    let (code, second) = pass(&first);
    assert_eq!(first, second, "label addresses moved between passes");
    (code, second)
}

#[test]
fn jcc_all_conditions_taken_and_not_taken() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let d = data(mode);
            let combos = flag_combinations();
            let g = run(engine, mode, &[], 0, |a| {
                for (k, &f) in combos.iter().enumerate() {
                    set_flags(a, f as u32);
                    for cc in 0..16u8 {
                        let at = d + 16 * k as u64 + u64::from(cc);
                        let mut taken = a.create_label();
                        let mut next = a.create_label();
                        jcc(a, cc, taken);
                        a.mov(byte_ptr(at), 0x0Fu32).unwrap();
                        a.jmp(next).unwrap();
                        a.set_label(&mut taken).unwrap();
                        a.mov(byte_ptr(at), 0x7Au32).unwrap();
                        a.set_label(&mut next).unwrap();
                    }
                }
            });
            assert_no_exception(&g, "jcc");
            for (k, &f) in combos.iter().enumerate() {
                for cc in 0..16u8 {
                    let got = read_u8(&g, d + 16 * k as u64 + u64::from(cc));
                    let want = if condition(cc, f) { 0x7A } else { 0x0F };
                    assert_eq!(
                        got, want,
                        "{engine} {mode:?} j{} flags {f:#x}",
                        CC_NAMES[cc as usize]
                    );
                }
            }
        }
    }
}

/// Jcc with a rel16/rel32 displacement (a target more than 127 bytes away), both ways.
#[test]
fn jcc_near_displacements() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let g = run(engine, mode, &[], 0, |a| {
                let mut far_fwd = a.create_label();
                let mut back = a.create_label();
                let mut done = a.create_label();
                a.xor(ebx, ebx).unwrap(); // ZF = 1
                a.je(far_fwd).unwrap();
                a.mov(ebx, 0xBADu32).unwrap();
                a.set_label(&mut back).unwrap();
                a.add(ebx, 0x10u32).unwrap(); // ZF = 0
                a.jne(done).unwrap();
                a.db(&[0x90; 300]).unwrap();
                a.set_label(&mut far_fwd).unwrap();
                a.add(ebx, 1u32).unwrap(); // ZF = 0
                a.jne(back).unwrap(); // backwards, rel16/rel32
                a.set_label(&mut done).unwrap();
            });
            assert_no_exception(&g, "jcc near");
            assert_eq!(g.cpu.gpr[RBX] & 0xFFFF, 0x11, "{engine} {mode:?}");
        }
    }
}

/// CALL rel / CALL r / CALL m, JMP r / JMP m, RET and RET imm16: return addresses pushed at
/// the mode's width, rSP after each, and RET imm16 releasing its arguments.
#[test]
fn near_jmp_call_ret_forms() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let d = data(mode);
            let w = u64::from(mode.bitness() / 8);
            let (code, labels) = assemble_with_addresses(mode, |a, addr| {
                let mut after_call_rel = a.create_label();
                let mut after_call_reg = a.create_label();
                let mut after_call_mem = a.create_label();
                let mut f_record = a.create_label();
                let mut f_ret_imm = a.create_label();
                let mut jmp_reg_target = a.create_label();
                let mut jmp_mem_target = a.create_label();
                let mut end = a.create_label();
                let abs = |k: usize| addr(k);
                // CALL rel → f_record (stores its return address in ESI).
                a.call(f_record).unwrap();
                a.set_label(&mut after_call_rel).unwrap();
                a.mov(ebp, esi).unwrap();
                // CALL r.
                load(a, RAX, abs(3));
                if mode == Mode::Long64 {
                    a.call(rax).unwrap();
                } else if mode == Mode::Real {
                    a.call(ax).unwrap();
                } else {
                    a.call(eax).unwrap();
                }
                a.set_label(&mut after_call_reg).unwrap();
                store(a, d, RSI);
                // Two arguments, then CALL m → f_ret_imm (RET 2*w).
                a.push(0x11).unwrap();
                a.push(0x22).unwrap();
                load(a, RAX, abs(4));
                store(a, d + 8, RAX);
                match mode.bitness() {
                    16 => a.call(word_ptr(d + 8)).unwrap(),
                    32 => a.call(dword_ptr(d + 8)).unwrap(),
                    _ => a.call(qword_ptr(d + 8)).unwrap(),
                }
                a.set_label(&mut after_call_mem).unwrap();
                store(a, d + 16, RSP);
                // JMP r, JMP m.
                load(a, RAX, abs(5));
                match mode.bitness() {
                    16 => a.jmp(ax).unwrap(),
                    32 => a.jmp(eax).unwrap(),
                    _ => a.jmp(rax).unwrap(),
                }
                a.mov(ecx, 0xBADu32).unwrap();
                a.set_label(&mut jmp_reg_target).unwrap();
                load(a, RAX, abs(6));
                store(a, d + 24, RAX);
                match mode.bitness() {
                    16 => a.jmp(word_ptr(d + 24)).unwrap(),
                    32 => a.jmp(dword_ptr(d + 24)).unwrap(),
                    _ => a.jmp(qword_ptr(d + 24)).unwrap(),
                }
                a.mov(edx, 0xBADu32).unwrap();
                a.set_label(&mut jmp_mem_target).unwrap();
                a.jmp(end).unwrap();
                // f_record: ESI = [rSP] (the return address).
                a.set_label(&mut f_record).unwrap();
                match mode.bitness() {
                    16 => {
                        a.mov(si, word_ptr(esp)).unwrap();
                        a.and(esi, 0xFFFFu32).unwrap();
                    }
                    32 => a.mov(esi, dword_ptr(esp)).unwrap(),
                    _ => a.mov(rsi, qword_ptr(rsp)).unwrap(),
                }
                a.ret().unwrap();
                // f_ret_imm: EDI = rSP at entry, RET 2*w.
                a.set_label(&mut f_ret_imm).unwrap();
                if mode == Mode::Long64 {
                    a.mov(rdi, rsp).unwrap();
                } else {
                    a.mov(edi, esp).unwrap();
                }
                a.ret_1(2 * w as u32).unwrap();
                a.set_label(&mut end).unwrap();
                vec![
                    after_call_rel,
                    after_call_reg,
                    after_call_mem,
                    f_record,
                    f_ret_imm,
                    jmp_reg_target,
                    jmp_mem_target,
                ]
            });
            let mut g = guest(engine, mode, &code, &[], 0);
            g.run_to_halt();
            assert_no_exception(&g, "jmp/call/ret");
            let what = format!("{engine} {mode:?}");
            let m = full_mask(mode);
            let s = &g.cpu;
            let sp0 = if mode == Mode::Real {
                0xFFF0
            } else {
                crane86::machine::testkit::STACK_TOP
            };
            assert_eq!(s.gpr[5] & m, labels[0], "{what}: CALL rel return address");
            assert_eq!(
                g.read_u64(d) & m,
                labels[1],
                "{what}: CALL r return address"
            );
            assert_eq!(
                s.gpr[RDI] & m,
                sp0 - 3 * w,
                "{what}: CALL m pushed one slot"
            );
            assert_eq!(
                g.read_u64(d + 16) & m,
                sp0,
                "{what}: RET imm16 released both args"
            );
            assert_eq!(s.gpr[RCX] & 0xFFF, 0, "{what}: JMP r skipped");
            assert_eq!(s.gpr[RDX] & 0xFFF, 0, "{what}: JMP m skipped");
            assert_eq!(s.gpr[RSP] & m, sp0, "{what}: balanced");
        }
    }
}

/// LOOP/LOOPE/LOOPNE count in CX, ECX or RCX by address size; JCXZ/JECXZ/JRCXZ test it.
#[test]
fn loop_and_jcxz_counter_widths() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            // The non-default counter: 32-bit in real mode, 16-bit in 32-bit mode, 32-bit in
            // 64-bit mode — selected with 0x67 (LOOP = E2, LOOPE = E1, LOOPNE = E0, JrCXZ = E3).
            let (default_bits, other_bits) = match mode.bitness() {
                16 => (16u32, 32u32),
                32 => (32, 16),
                _ => (64, 32),
            };
            let init = 0x0001_0003u64
                | if mode == Mode::Long64 {
                    0x7_0000_0000
                } else {
                    0
                };
            // loop_body: inc ebx; [67] loop loop_body (rel8 = -4 or -5 with 0x67 + 2 bytes).
            let lp = |op: u8, prefixed: bool| -> Vec<u8> {
                // inc ebx is 2 bytes in 64-bit mode (FF C3), 1 byte (43) or 2 (66 43) else.
                let inc: Vec<u8> = match mode.bitness() {
                    16 => vec![0x66, 0x43],
                    32 => vec![0x43],
                    _ => vec![0xFF, 0xC3],
                };
                let mut v = inc.clone();
                if prefixed {
                    v.push(0x67);
                }
                v.push(op);
                v.push((-(v.len() as i8 + 1)) as u8);
                v
            };
            for (op, prefixed, zf_set) in [
                (0xE2u8, false, false),
                (0xE2, true, false),
                (0xE1, true, true),
                (0xE0, true, true),
            ] {
                let mut code = vec![];
                // xor ebx, ebx (31 DB), 0x66 in real mode.
                if mode == Mode::Real {
                    code.push(0x66);
                }
                code.extend_from_slice(&[0x31, 0xDB]);
                let body = lp(op, prefixed);
                code.extend_from_slice(&body);
                code.push(0xF4);
                // LOOPE/LOOPNE: INC sets ZF only on wrap, so with ZF from INC (never 1 here)
                // LOOPE exits after one pass and LOOPNE runs to the counter.
                let _ = zf_set;
                let bits = if prefixed { other_bits } else { default_bits };
                // The default full-width counter starts small (a 64-bit count would not end).
                let start = if prefixed { init } else { 5 };
                let mut g = guest(engine, mode, &code, &[(RCX, start & full_mask(mode))], 0);
                g.run_to_halt();
                let what = format!("{engine} {mode:?} op {op:#x} 0x67={prefixed}");
                assert_no_exception(&g, &what);
                let counter = (start & full_mask(mode)) & width_mask(bits);
                let want_iters = match op {
                    0xE1 => 1,
                    _ => counter,
                };
                assert_eq!(
                    g.cpu.gpr[RBX] & 0xFFFF_FFFF,
                    want_iters,
                    "{what}: iterations"
                );
                let left = counter - want_iters;
                assert_eq!(g.cpu.gpr[RCX] & width_mask(bits), left, "{what}: counter");
                if bits == 16 {
                    assert_eq!(
                        g.cpu.gpr[RCX] >> 16 & 0xFFFF,
                        start >> 16 & 0xFFFF,
                        "{what}: ECX[31:16] kept"
                    );
                }
            }
            // JrCXZ: with rCX = 0x10000 (and 1 << 32 in 64-bit mode) the 16-bit (32-bit)
            // test sees zero and the full-width one does not.
            let rcx_val = if mode == Mode::Long64 {
                1u64 << 32
            } else {
                0x1_0000
            };
            for prefixed in [false, true] {
                let bits = if prefixed { other_bits } else { default_bits };
                // [67] jrcxz +5; mov ebx... : E3 05, B8+3 imm32 (5 bytes), 0xF4.
                let mut code = vec![];
                if prefixed {
                    code.push(0x67);
                }
                code.extend_from_slice(&[0xE3, 0x02, 0xB3, 0x01, 0xB7, 0x02, 0xF4]); // mov bl,1 ; mov bh,2
                let mut g = guest(engine, mode, &code, &[(RCX, rcx_val & full_mask(mode))], 0);
                g.run_to_halt();
                let what = format!("{engine} {mode:?} jrcxz {bits}-bit");
                assert_no_exception(&g, &what);
                let zero = rcx_val & width_mask(bits) == 0;
                let want = if zero { 0x0200 } else { 0x0201 };
                assert_eq!(g.cpu.gpr[RBX] & 0xFFFF, want, "{what}: taken = {zero}");
            }
        }
    }
}

/// In real mode a near branch to an offset beyond the CS limit (0xFFFF) faults with #GP at
/// the branch instruction (JMP r32, CALL rel32 with 0x66, RET).
#[test]
fn branch_beyond_cs_limit_faults_at_the_branch() {
    for engine in EngineKind::emulators() {
        // mov eax, 0x12345 (66 B8 ..); jmp eax (66 FF E0).
        let cases: [(&str, Vec<u8>, u64); 3] = [
            (
                "jmp eax",
                vec![0x66, 0xB8, 0x45, 0x23, 0x01, 0x00, 0x66, 0xFF, 0xE0, 0xF4],
                6,
            ),
            // call rel32 to 0x1_0000 + 6: 66 E8 rel32.
            (
                "call rel32",
                vec![0x66, 0xE8, 0x00, 0x00, 0x01, 0x00, 0xF4],
                0,
            ),
            // push 0x12345 as a 32-bit return address, ret (66 C3).
            (
                "ret32",
                vec![0x66, 0x68, 0x45, 0x23, 0x01, 0x00, 0x66, 0xC3, 0xF4],
                6,
            ),
        ];
        for (name, code, at) in cases {
            let mut g = guest(engine, Mode::Real, &code, &[], 0);
            g.run_to_halt();
            assert_eq!(exception(&g), Some(13), "{engine} real mode {name}: #GP");
            assert_eq!(
                faulting_offset(&g, false),
                at,
                "{engine} {name}: IP at the branch"
            );
            if name == "call rel32" {
                // Nothing pushed by the faulting CALL (the #GP frame is 3 words).
                assert_eq!(
                    g.cpu.gpr[RSP] & 0xFFFF,
                    0xFFF0 - 6,
                    "{engine}: call pushed nothing"
                );
            }
        }
    }
}

/// In 64-bit mode a near branch to a non-canonical address is #GP(0) with RIP at the branch
/// (JMP r, CALL r — nothing pushed —, RET).
#[test]
fn non_canonical_target_faults_at_the_branch() {
    for engine in EngineKind::emulators() {
        for name in ["jmp", "call", "ret"] {
            let mut at = 0;
            let code = assemble(Mode::Long64, |a| {
                a.mov(rax, 0x0000_8000_0000_0000u64).unwrap();
                a.push(rax).unwrap();
                at = 11; // mov rax, imm64 (10) + push rax (1)
                match name {
                    "jmp" => a.jmp(rax).unwrap(),
                    "call" => a.call(rax).unwrap(),
                    _ => a.ret().unwrap(),
                }
            });
            let mut g = guest(engine, Mode::Long64, &code, &[], 0);
            g.run_to_halt();
            assert_eq!(exception(&g), Some(13), "{engine} {name}: #GP");
            assert_eq!(
                faulting_offset(&g, true),
                at,
                "{engine} {name}: RIP at the branch"
            );
            let error_code = g.read_u64(stack_phys(&g));
            assert_eq!(error_code, 0, "{engine} {name}: #GP(0)");
            // The interrupted RSP in the frame (slot 4 after the error code): one push only.
            let frame_rsp = g.read_u64(stack_phys(&g) + 32);
            assert_eq!(
                frame_rsp,
                crane86::machine::testkit::STACK_TOP - 8,
                "{engine} {name}: rSP"
            );
        }
    }
}

/// In real mode IP wraps within the 64 KiB segment: a short jump backwards from offset 0
/// lands at 0xFFF8.
#[test]
fn real_mode_ip_wraps_at_64k() {
    for engine in EngineKind::emulators() {
        // jmp short -10 (EB F6) at IP 0: next IP 2, target 0xFFF8.
        let mut g = guest(engine, Mode::Real, &[0xEB, 0xF6, 0xF4], &[], 0);
        // At 0xFFF8: mov bx, 0x600D (BB 0D 60); hlt.
        g.write(CODE_BASE + 0xFFF8, &[0xBB, 0x0D, 0x60, 0xF4]);
        g.run_to_halt();
        assert_no_exception(&g, "ip wrap");
        assert_eq!(g.cpu.gpr[RBX] & 0xFFFF, 0x600D, "{engine}: reached 0xFFF8");
        assert_eq!(g.cpu.rip, 0xFFFC, "{engine}: IP after the HLT");
    }
}

/// The CS limit is inclusive: in real mode a jump to IP 0xFFFF runs the byte there.
#[test]
fn real_mode_branch_to_the_last_byte_of_the_segment() {
    for engine in EngineKind::emulators() {
        // jmp short -3 (EB FD) at IP 0: target 0xFFFF, where a HLT sits.
        let mut g = guest(engine, Mode::Real, &[0xEB, 0xFD, 0xF4], &[], 0);
        g.write(CODE_BASE + 0xFFFF, &[0xF4]);
        g.run_to_halt();
        assert_no_exception(&g, "branch to 0xFFFF");
        assert_eq!(g.cpu.rip, 0, "{engine}: IP wrapped past the HLT at 0xFFFF");
    }
}

/// Jcc right after CMP or TEST in the same block (where the JIT decides the condition from
/// the comparison's operands without materializing flags), for every condition the
/// comparison defines, 32- and 64-bit operands, and operand pairs around the signed and
/// unsigned boundaries; the expected outcome is computed here from the SDM's definitions.
#[test]
fn jcc_after_cmp_and_test_in_64_bit_code() {
    let values: [u64; 8] = [
        0,
        1,
        2,
        0x7FFF_FFFF,
        0x8000_0000,
        0xFFFF_FFFF,
        0x8000_0000_0000_0000,
        u64::MAX,
    ];
    type Cond = (
        &'static str,
        fn(&mut CodeAssembler, CodeLabel) -> Result<(), IcedError>,
    );
    let conds: [Cond; 12] = [
        ("je", |a, l| a.je(l)),
        ("jne", |a, l| a.jne(l)),
        ("jb", |a, l| a.jb(l)),
        ("jae", |a, l| a.jae(l)),
        ("jbe", |a, l| a.jbe(l)),
        ("ja", |a, l| a.ja(l)),
        ("jl", |a, l| a.jl(l)),
        ("jge", |a, l| a.jge(l)),
        ("jle", |a, l| a.jle(l)),
        ("jg", |a, l| a.jg(l)),
        ("js", |a, l| a.js(l)),
        ("jns", |a, l| a.jns(l)),
    ];
    let expect = |name: &str, test: bool, bits: u32, x: u64, y: u64| -> bool {
        let m = width_mask(bits);
        let (x, y) = (x & m, y & m);
        let sx = |v: u64| ((v << (64 - bits)) as i64) >> (64 - bits);
        let (res, cf, of) = if test {
            (x & y, false, false)
        } else {
            let r = x.wrapping_sub(y) & m;
            (r, x < y, (sx(x) < sx(y)) != (sx(r) < 0))
        };
        let (zf, sf) = (res == 0, sx(res) < 0);
        match name {
            "je" => zf,
            "jne" => !zf,
            "jb" => cf,
            "jae" => !cf,
            "jbe" => cf || zf,
            "ja" => !cf && !zf,
            "jl" => sf != of,
            "jge" => sf == of,
            "jle" => zf || sf != of,
            "jg" => !zf && sf == of,
            "js" => sf,
            _ => !sf,
        }
    };
    for engine in EngineKind::emulators() {
        for test in [false, true] {
            for bits in [32u32, 64] {
                for &(name, jcc) in &conds {
                    // One guest per condition: every pair, its outcome stored as a byte.
                    let code = assemble(Mode::Long64, |a| {
                        let mut k = 0u64;
                        for &x in &values {
                            for &y in &values {
                                let mut taken = a.create_label();
                                let mut done = a.create_label();
                                a.mov(rax, x).unwrap();
                                a.mov(rbx, y).unwrap();
                                match (test, bits) {
                                    (false, 64) => a.cmp(rax, rbx).unwrap(),
                                    (false, _) => a.cmp(eax, ebx).unwrap(),
                                    (true, 64) => a.test(rax, rbx).unwrap(),
                                    (true, _) => a.test(eax, ebx).unwrap(),
                                }
                                jcc(a, taken).unwrap();
                                a.mov(byte_ptr(DATA_BASE + k), 0).unwrap();
                                a.jmp(done).unwrap();
                                a.set_label(&mut taken).unwrap();
                                a.mov(byte_ptr(DATA_BASE + k), 1).unwrap();
                                a.set_label(&mut done).unwrap();
                                a.nop().unwrap();
                                k += 1;
                            }
                        }
                    });
                    let mut g = guest(engine, Mode::Long64, &code, &[], 0);
                    g.run_to_halt();
                    assert_no_exception(&g, name);
                    let mut k = 0u64;
                    for &x in &values {
                        for &y in &values {
                            let got = read_u8(&g, DATA_BASE + k) == 1;
                            let op = if test { "test" } else { "cmp" };
                            assert_eq!(
                                got,
                                expect(name, test, bits, x, y),
                                "{engine}: {op}{bits} {x:#x}, {y:#x}; {name}"
                            );
                            k += 1;
                        }
                    }
                }
            }
        }
    }
}
