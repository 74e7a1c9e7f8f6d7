//! JIT translations that go on past their block's end (a Jcc's fall-through, a direct JMP's
//! target in the same page) must keep the interpreter's semantics: each Jcc passed
//! becomes a side exit that leaves with every register, flag and count written back, and a
//! store into the code the translation spans runs the new code. Each guest runs its
//! continuation blocks once before the block at the head, so that the head's translation
//! (on its first run, in the test engine) finds them cached and takes them in.

use super::*;
use crane86::machine::engine::JitEngine;

/// The head `add; cmp; jb side` runs on into `c1` (a store and a load, a second Jcc) and
/// `c2` (ending in a CALL, whose function the translation does not take in): two side
/// exits whose paths rejoin, taken on different passes, with registers and memory changed
/// before each; `patch` also makes `c1` rewrite the immediate of `c2`'s ADD on every pass.
fn program(patch: bool) -> impl FnOnce(&mut CodeAssembler) -> Result<Vec<CodeLabel>, IcedError> {
    move |a| {
        let mut head = a.create_label();
        let mut c1 = a.create_label();
        let mut c2 = a.create_label();
        let mut side = a.create_label();
        let mut odd = a.create_label();
        let mut func = a.create_label();
        a.mov(ecx, 400)?;
        a.xor(eax, eax)?;
        a.xor(ebx, ebx)?;
        a.xor(edx, edx)?;
        a.mov(rsi, DATA)?;
        a.jmp(c1)?;
        a.set_label(&mut head)?;
        a.add(eax, ecx)?;
        a.cmp(ecx, 300)?;
        a.jb(side)?;
        a.set_label(&mut c1)?;
        a.mov(dword_ptr(rsi), eax)?;
        a.add(ebx, dword_ptr(rsi))?;
        if patch {
            a.lea(rdi, ptr(c2))?;
            // The imm32 of `add edx, imm32` (81 C2 id) at c2.
            a.mov(dword_ptr(rdi + 2), ecx)?;
        }
        a.test(ecx, 1)?;
        a.jnz(odd)?;
        a.set_label(&mut c2)?;
        a.add(edx, 0x1234_5678)?;
        a.lea(edx, dword_ptr(rdx + rbx * 2))?;
        a.call(func)?;
        a.sub(ecx, 1)?;
        a.jnz(head)?;
        a.hlt()?;
        a.set_label(&mut side)?;
        a.xor(eax, 0x55)?;
        a.jmp(c1)?;
        a.set_label(&mut odd)?;
        a.add(edx, 7)?;
        a.jmp(c2)?;
        a.set_label(&mut func)?;
        a.imul_3(eax, eax, 3)?;
        a.ret()?;
        Ok(vec![])
    }
}

const DATA: u64 = CODE_BASE + 0x8000;

#[test]
fn spanning_translation_with_side_exits_matches_the_interpreter() {
    for patch in [false, true] {
        let what = format!("code rewritten on every pass: {patch}");
        let (mut want, _) = guest(EngineKind::Interp, Mode::Long64, program(patch));
        want.run_to_halt();
        let (mut got, _) = guest(EngineKind::Jit, Mode::Long64, program(patch));
        got.run_to_halt();
        assert_eq!(summary(&got.cpu), summary(&want.cpu), "{what}");
        assert_eq!(got.read_u64(DATA), want.read_u64(DATA), "{what}");
        // The translation at the head spans the rest (without the rewrite, which
        // invalidates the page every pass, it stays for good).
        assert!(
            stat(&got, "translations spanning later blocks") >= 1,
            "{what}: no translation spans its successors"
        );
    }
}

#[test]
fn spanning_translation_stops_exactly_at_the_budget() {
    for slice in [1, 2, 3, 5, 7, 11, 64] {
        let (mut want, _) = guest(EngineKind::Interp, Mode::Long64, program(false));
        want.run_to_halt();
        let (mut got, _) = guest(EngineKind::Jit, Mode::Long64, program(false));
        run_in_slices(&mut got, slice, &format!("slice {slice}"));
        assert_eq!(summary(&got.cpu), summary(&want.cpu), "slice {slice}");
        assert!(
            stat(&got, "translations spanning later blocks") >= 1,
            "slice {slice}"
        );
    }
}

/// A loop of three blocks like the match loop of deflate, whose hot path takes the Jcc of
/// `top` and falls through the one of `mid`: `top: ...; jnz mid` (taken 7 passes in 8; the
/// eighth runs `rare`, a store and a JMP), `mid: ...; jb late` (taken only in the last 100
/// passes: `late` rejoins at `bottom`), `bottom: ...; dec ecx; jnz top`. `rol edx, cl` is
/// left to the interpreter. Entered at `top`, the translation at `top` follows the taken
/// path into `mid` and closes the loop with the branch back to its start; entered at
/// `bottom` (`at_bottom`), the first block hot is `bottom`, whose trace `bottom, top, mid`
/// closes the loop with `mid`'s fall-through.
fn deflate_like_loop(
    at_bottom: bool,
) -> impl FnOnce(&mut CodeAssembler) -> Result<Vec<CodeLabel>, IcedError> {
    move |a| {
        let mut top = a.create_label();
        let mut mid = a.create_label();
        let mut bottom = a.create_label();
        let mut late = a.create_label();
        a.mov(ecx, 2000)?;
        a.xor(eax, eax)?;
        a.xor(ebx, ebx)?;
        a.xor(edx, edx)?;
        a.mov(rsi, DATA)?;
        a.mov(dword_ptr(rsi), 0)?;
        if at_bottom {
            a.jmp(bottom)?;
        }
        a.set_label(&mut top)?;
        a.add(eax, ecx)?;
        a.test(ecx, 7)?;
        a.jnz(mid)?;
        // rare
        a.add(ebx, 5)?;
        a.mov(dword_ptr(rsi), ebx)?;
        a.jmp(mid)?;
        a.set_label(&mut mid)?;
        a.imul_3(edx, eax, 3)?;
        a.rol(edx, cl)?;
        a.cmp(ecx, 100)?;
        a.jb(late)?;
        a.set_label(&mut bottom)?;
        a.add(edx, dword_ptr(rsi))?;
        a.xor(eax, edx)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.hlt()?;
        a.set_label(&mut late)?;
        a.xor(eax, 0x55)?;
        a.jmp(bottom)?;
        Ok(vec![])
    }
}

/// The deflate-like loop under a JIT that interprets each block 32 times first (so its
/// branch profile decides the trace), run to its end at once and in slices of the budget
/// (which the loop inside the translation must stop at exactly).
#[test]
fn trace_along_taken_branches_matches_the_interpreter() {
    for at_bottom in [false, true] {
        for slice in [None, Some(1), Some(7), Some(64)] {
            let what = format!("entered at the bottom: {at_bottom}, slice {slice:?}");
            let (mut want, _) = guest(
                EngineKind::Interp,
                Mode::Long64,
                deflate_like_loop(at_bottom),
            );
            want.run_to_halt();
            let (mut got, _) = guest(EngineKind::Jit, Mode::Long64, deflate_like_loop(at_bottom));
            got.engine = Box::new(JitEngine::with_hot_threshold(32));
            match slice {
                None => {
                    got.run_to_halt();
                }
                Some(n) => run_in_slices(&mut got, n, &what),
            }
            assert_eq!(summary(&got.cpu), summary(&want.cpu), "{what}");
            assert_eq!(got.read_u64(DATA), want.read_u64(DATA), "{what}");
            // (Slices shorter than a block leave it to the interpreter.)
            if slice.is_none_or(|n| n >= 64) {
                assert!(
                    stat(&got, "translations along taken branches") >= 1,
                    "{what}: no translation follows a taken branch"
                );
            }
            if slice.is_none() {
                // The loop runs inside one translation: few passes go through the run loop.
                let passes = 2000;
                assert!(
                    stat(&got, "dispatcher transitions") < passes / 10,
                    "{what}: {} dispatcher transitions",
                    stat(&got, "dispatcher transitions")
                );
            }
        }
    }
}
