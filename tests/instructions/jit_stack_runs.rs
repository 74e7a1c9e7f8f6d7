//! The JIT's runs of PUSH r64 and of POP r64 (a function's register saves and restores),
//! which it accesses as one range of the stack: the values and their order, a range across
//! a page boundary (the interpreter's path, instruction by instruction), a run into a code
//! page, and a fault in the middle of a run. Both engines must leave the same memory and
//! registers.

use crate::common::*;

const R8: usize = 8;
const R9: usize = 9;
const R10: usize = 10;
const R11: usize = 11;

/// Six PUSHes and six POPs (into other registers) per pass, with RSP 8 lower each pass so
/// that the range crosses a page boundary on some passes; the popped values are folded
/// into R11 in order. Then the registers and RSP.
#[test]
fn stack_runs_match_the_interpreter() {
    let top = DATA_BASE + 0x3_0000 + 0x100;
    let mut out = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            let mut again = a.create_label();
            a.mov(rsp, top).unwrap();
            a.mov(ecx, 600).unwrap();
            a.xor(r11d, r11d).unwrap();
            a.set_label(&mut again).unwrap();
            a.mov(rbx, rcx).unwrap();
            a.lea(rbp, qword_ptr(rcx * 2 + 1)).unwrap();
            a.lea(r12, qword_ptr(rcx * 4 + 2)).unwrap();
            a.lea(r13, qword_ptr(rcx * 8 + 3)).unwrap();
            a.mov(r14, 0x1234_5678_9ABC_DEF0u64).unwrap();
            a.xor(r14, rcx).unwrap();
            a.mov(r15, rsp).unwrap();
            a.push(rbx).unwrap();
            a.push(rbp).unwrap();
            a.push(r12).unwrap();
            a.push(r13).unwrap();
            a.push(r14).unwrap();
            a.push(r15).unwrap();
            a.mov(rax, qword_ptr(rsp + 16)).unwrap();
            a.pop(rdx).unwrap();
            a.pop(rsi).unwrap();
            a.pop(rdi).unwrap();
            a.pop(r8).unwrap();
            a.pop(r9).unwrap();
            a.pop(r10).unwrap();
            for r in [rax, rdx, rsi, rdi, r8, r9, r10] {
                a.rol(r11, 7).unwrap();
                a.xor(r11, r).unwrap();
            }
            a.sub(rsp, 8).unwrap();
            a.dec(ecx).unwrap();
            a.jne(again).unwrap();
        });
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.run_to_halt();
        assert_no_exception(&g, &format!("{engine}"));
        // The last pass's pushes, still in memory below RSP + 8.
        let saved: Vec<u64> = (0..6)
            .map(|k| g.read_u64(g.cpu.gpr[RSP] - 40 + 8 * k))
            .collect();
        let regs = [RAX, RDX, RSI, RDI, R8, R9, R10, R11, RSP].map(|r| g.cpu.gpr[r]);
        out.push((regs, saved));
    }
    assert_eq!(out[0], out[1]);
    // The last pass (RCX = 1): RDX got R15 (the RSP before the pushes), R10 got RBX = 1.
    let [_, last_rdx, _, _, _, _, last_r10, _, last_rsp] = out[0].0;
    assert_eq!(last_rsp, top - 600 * 8);
    assert_eq!(last_rdx, last_rsp + 8);
    assert_eq!(last_r10, 1);
}

/// A run of POPs whose third reads a non-present page: #PF at that POP (CR2 the page), the
/// first two registers loaded, the third and the rest unchanged, RSP past the first two.
#[test]
fn fault_inside_a_pop_run_is_precise() {
    let page = DATA_BASE + 0x2_1000;
    let mut out = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            a.mov(rsp, page - 16).unwrap();
            a.mov(rdx, 0x55u64).unwrap();
            a.mov(rsi, 0x66u64).unwrap();
            a.pop(rbx).unwrap();
            a.pop(rbp).unwrap();
            a.pop(rdx).unwrap();
            a.pop(rsi).unwrap();
        });
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.write(page - 16, &0x1111u64.to_le_bytes());
        g.write(page - 8, &0x2222u64.to_le_bytes());
        let pte = pte_addr(Mode::Long64, page);
        let v = g.read_u64(pte);
        g.write(pte, &(v & !1).to_le_bytes());
        g.run_to_halt();
        assert_eq!(exception(&g), Some(14), "{engine}");
        assert_eq!(g.cpu.cr2, page, "{engine}");
        let frame = stack_phys(&g);
        // #PF pushes an error code, RIP, CS, RFLAGS, RSP, SS.
        let old_rsp = g.read_u64(frame + 32);
        assert_eq!(old_rsp, page, "{engine}: RSP past the two POPs that ran");
        let regs = [RBX, 5, RDX, RSI].map(|r| g.cpu.gpr[r]);
        assert_eq!(regs, [0x1111, 0x2222, 0x55, 0x66], "{engine}");
        out.push((g.cpu.gpr, faulting_offset(&g, true)));
    }
    assert_eq!(out[0], out[1]);
}

/// A run of PUSHes whose range lies in the page of the code that runs it: each store is
/// the interpreter's (a write to a code page), the code is rewritten, and the block ends
/// after the writes. Here the pushes store over the code after them (a NOP slide that
/// becomes `mov eax, 0x77` + HLT bytes), which the next pass must run.
#[test]
fn push_run_into_its_own_code_page_rewrites_the_code() {
    let mut out = Vec::new();
    for engine in EngineKind::emulators() {
        let code = assemble(Mode::Long64, |a| {
            let mut slide = a.create_label();
            a.lea(rsp, qword_ptr(slide)).unwrap();
            a.add(rsp, 16).unwrap();
            // MOV EAX, 0x77 (B8 77 00 00 00), then HLT (F4): the second quadword pushed
            // lands first in the slide.
            a.mov(rbx, 0xF4_00_00_00_77_B8u64).unwrap();
            a.mov(rcx, 0x9090_9090_9090_9090u64).unwrap();
            a.xor(eax, eax).unwrap();
            a.push(rcx).unwrap();
            a.push(rbx).unwrap();
            a.set_label(&mut slide).unwrap();
            for _ in 0..16 {
                a.nop().unwrap();
            }
            a.mov(eax, 0x99).unwrap();
        });
        let mut g = guest(engine, Mode::Long64, &code, &[], 0);
        g.run_to_halt();
        assert_no_exception(&g, &format!("{engine}"));
        assert_eq!(g.cpu.gpr[RAX], 0x77, "{engine}: the rewritten code ran");
        out.push(g.cpu.gpr);
    }
    assert_eq!(out[0], out[1]);
}
