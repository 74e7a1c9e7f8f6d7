//! JIT block chaining: native blocks that run their native successors without the run
//! loop must keep the run loop's semantics. A branchy loop over several blocks ends in the
//! interpreter's state (also when run in small budget slices, which chaining must respect
//! exactly); an interrupt raised between runs, or by the guest's own port write inside a
//! chained loop, is delivered at the next block boundary, and so is one that becomes
//! pending (with guest time) during an instruction the interpreter runs inside a block; a
//! successor in another page that the guest rewrites after it was chained runs its new
//! code.

use super::*;
use crane86::devices::{Platform, PlatformAction};
use crane86::machine::testkit::{pte_addr, TestExit, DATA_BASE};
use std::cell::Cell;
use std::rc::Rc;

/// A loop of four blocks (Jcc both ways, a direct JMP, a fall-through into a block that
/// starts at a branch target) with an instruction the JIT leaves to the interpreter.
fn branchy_loop(a: &mut CodeAssembler) -> Result<Vec<CodeLabel>, IcedError> {
    let mut top = a.create_label();
    let mut low = a.create_label();
    let mut join = a.create_label();
    a.mov(ecx, 3000)?;
    a.xor(eax, eax)?;
    a.xor(ebx, ebx)?;
    a.xor(edx, edx)?;
    a.set_label(&mut top)?;
    a.add(eax, ecx)?;
    a.cmp(ecx, 1500)?;
    a.jb(low)?;
    a.add(ebx, 3)?;
    a.jmp(join)?;
    a.set_label(&mut low)?;
    a.xor(ebx, eax)?;
    a.set_label(&mut join)?;
    a.imul_3(edx, eax, 5)?;
    a.add(edx, ebx)?;
    a.sub(ecx, 1)?;
    a.jnz(top)?;
    a.hlt()?;
    Ok(vec![])
}

#[test]
fn chained_loop_matches_the_interpreter() {
    for mode in Mode::ALL {
        let (mut want, _) = guest(EngineKind::Interp, mode, branchy_loop);
        want.run_to_halt();
        let (mut got, _) = guest(EngineKind::Jit, mode, branchy_loop);
        got.run_to_halt();
        assert_eq!(summary(&got.cpu), summary(&want.cpu), "{mode:?}");
        // At least one transition per pass (the translation of a block goes on past its
        // JMP and its Jcc's fall-through, so some of the four blocks run inside others).
        let chained = stat(&got, "chained transitions");
        assert!(
            chained > 3000,
            "{mode:?}: block transitions chain ({chained})"
        );
        assert!(
            stat(&got, "dispatcher transitions") < chained / 10,
            "{mode:?}"
        );
        // 64-bit code enters its direct successors through entries the run loop patches
        // (where the code region stays writable: x86-64 Linux).
        if mode == Mode::Long64 && cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            assert!(stat(&got, "links patched into code") > 0, "{mode:?}");
        }
    }
}

/// A successor entered by native code whose first instruction the interpreter runs (LOOP)
/// runs at its own RIP: the predecessor does not store RIP when it enters it, so the
/// successor must (its LOOP falls through relative to RIP once the count is out). The
/// branch into it is a Jcc that is always taken, a side exit: a JMP's translation would go
/// on into its target instead of entering it.
#[test]
fn chained_successor_starting_with_a_helper_run_instruction_runs_at_its_own_rip() {
    let body = |a: &mut CodeAssembler| -> Result<Vec<CodeLabel>, IcedError> {
        let mut top = a.create_label();
        let mut second = a.create_label();
        a.mov(ecx, 2000)?;
        a.xor(ebx, ebx)?;
        a.set_label(&mut top)?;
        a.add(ebx, 3)?;
        a.test(ebx, 0)?;
        a.jz(second)?;
        a.hlt()?;
        a.set_label(&mut second)?;
        a.loop_(top)?;
        a.mov(edx, ebx)?;
        a.hlt()?;
        Ok(vec![])
    };
    let (mut want, _) = guest(EngineKind::Interp, Mode::Long64, body);
    want.run_to_halt();
    let (mut got, _) = guest(EngineKind::Jit, Mode::Long64, body);
    got.run_to_halt();
    assert_eq!(want.cpu.gpr[2], 6000, "EDX after the loop (interpreter)");
    assert_eq!(summary(&got.cpu), summary(&want.cpu));
    assert!(stat(&got, "chained transitions (native)") > 1000);
}

#[test]
fn chaining_stops_exactly_at_the_budget() {
    for mode in [Mode::Protected32, Mode::Long64] {
        let (mut want, _) = guest(EngineKind::Interp, mode, branchy_loop);
        want.run_to_halt();
        let (mut got, _) = guest(EngineKind::Jit, mode, branchy_loop);
        run_in_slices(&mut got, 37, &format!("{mode:?}"));
        assert_eq!(summary(&got.cpu), summary(&want.cpu), "{mode:?}");
        assert!(stat(&got, "chained transitions") > 0, "{mode:?}");
    }
}

/// Raises one interrupt (vector 0x20) when `raise` is set (by the test, between runs), on
/// the first write to port 0x80 (by the guest), or once the guest has retired `at`
/// instructions (guest time, which the engine reports at time-visible accesses like RDTSC).
/// The pending state changes only through these, as the `Platform` contract requires.
struct LateIrq {
    raise: Rc<Cell<bool>>,
    acked: bool,
    at: u64,
    retired: u64,
}

impl Platform for LateIrq {
    fn pio_read(&mut self, _port: u16, _size: u8) -> u32 {
        u32::MAX
    }
    fn pio_write(&mut self, port: u16, _size: u8, _value: u32) {
        if port == 0x80 {
            self.raise.set(true);
        }
    }
    fn mmio_read(&mut self, _paddr: u64, _size: u8) -> u64 {
        u64::MAX
    }
    fn mmio_write(&mut self, _paddr: u64, _size: u8, _value: u64) {}
    fn interrupt_pending(&self) -> bool {
        !self.acked && (self.raise.get() || self.retired >= self.at)
    }
    fn ack_interrupt(&mut self) -> Option<u8> {
        let pending = self.interrupt_pending();
        self.acked |= pending;
        pending.then_some(0x20)
    }
    fn take_action(&mut self) -> Option<PlatformAction> {
        None
    }
    fn now_ns(&self) -> u64 {
        0
    }
    fn sync_retired_instructions(&mut self, retired: u64) {
        self.retired = self.retired.max(retired);
    }
}

/// A two-block loop counting ECX down from `iterations`; with `out_at`, the guest writes
/// port 0x80 (raising the interrupt) when ECX equals it. The handler saves ECX in EBX and
/// the interrupted RIP in RDX.
fn interrupted_loop(
    engine: EngineKind,
    iterations: u32,
    out_at: Option<u32>,
) -> (TestGuest, Rc<Cell<bool>>) {
    let (mut g, labels) = guest(engine, Mode::Long64, |a| {
        let mut top = a.create_label();
        let mut mid = a.create_label();
        let mut handler = a.create_label();
        a.xor(ebx, ebx)?;
        a.mov(ecx, iterations)?;
        a.sti()?;
        a.set_label(&mut top)?;
        a.add(eax, 1)?;
        if let Some(at) = out_at {
            a.cmp(ecx, at)?;
            a.jne(mid)?;
            a.out(0x80, al)?;
        }
        a.jmp(mid)?;
        a.set_label(&mut mid)?;
        a.sub(ecx, 1)?;
        a.jnz(top)?;
        a.hlt()?;
        // The interrupt gate clears IF: HLT ends the test.
        a.set_label(&mut handler)?;
        a.mov(ebx, ecx)?;
        a.mov(rdx, qword_ptr(rsp))?;
        a.hlt()?;
        Ok(vec![handler])
    });
    let raise = late_irq(&mut g, labels[0]);
    (g, raise)
}

/// Give `g` a [`LateIrq`] platform whose vector 0x20 goes to `handler`; returns the flag
/// that raises it.
fn late_irq(g: &mut TestGuest, handler: u64) -> Rc<Cell<bool>> {
    g.set_gate(0x20, handler, 0);
    let raise = Rc::new(Cell::new(false));
    g.plat = Box::new(LateIrq {
        raise: raise.clone(),
        acked: false,
        at: u64::MAX,
        retired: 0,
    });
    raise
}

/// An interrupt raised between two runs of a chained loop is taken before the next
/// instruction.
#[test]
fn interrupt_between_runs_reaches_a_chained_loop() {
    for engine in [EngineKind::Interp, EngineKind::Jit] {
        let (mut g, raise) = interrupted_loop(engine, 1_000_000, None);
        for _ in 0..5 {
            assert_eq!(g.run(10_000), TestExit::Timeout, "{engine}");
        }
        let ecx_at_raise = g.cpu.gpr[1] as u32;
        assert!(ecx_at_raise < 1_000_000 - 10_000, "{engine}: the loop ran");
        raise.set(true);
        g.run_to_halt();
        assert_eq!(
            g.cpu.gpr[3] as u32, ecx_at_raise,
            "{engine}: ECX in the handler"
        );
        if engine == EngineKind::Jit {
            assert!(stat(&g, "chained transitions (native)") > 0, "{engine}");
        }
    }
}

/// An interrupt the guest raises with a port write in the middle of a chained loop is taken
/// at the next block boundary, not at the end of the run.
#[test]
fn interrupt_raised_inside_a_chained_loop_is_taken_at_the_next_block() {
    let mut interrupted_at = Vec::new();
    for engine in [EngineKind::Interp, EngineKind::Jit] {
        let (mut g, _) = interrupted_loop(engine, 1_000_000, Some(600_000));
        g.run_to_halt();
        let left = g.cpu.gpr[3] as u32;
        // The OUT's block ends at the JMP after it; the SUB of that iteration has not run.
        assert_eq!(left, 600_000, "{engine}: ECX in the handler");
        if engine == EngineKind::Jit {
            assert!(stat(&g, "chained transitions (native)") > 0, "{engine}");
        }
        interrupted_at.push((g.cpu.gpr[2], g.engine.instructions()));
    }
    // The interrupt came after the JMP (RIP at its target), each instruction retired once.
    assert_eq!(
        interrupted_at[0], interrupted_at[1],
        "interrupted RIP, retired count"
    );
}

/// The successor lives in the next page: `mov ebx, 5; add edx, ebx; jmp back`. After 50
/// chained rounds the guest patches the immediate to 3 (only that page is invalidated; the
/// block jumping there survives with its link), runs 50 more, patches it to 2 (now also the
/// blocks around the patching store are chained), and runs 50 more.
#[test]
fn rewritten_chained_successor_runs_its_new_code() {
    let succ = CODE_BASE + 0x1000;
    for engine in [EngineKind::Interp, EngineKind::Jit] {
        for mode in [Mode::Protected32, Mode::Paged32, Mode::Pae32, Mode::Long64] {
            let main = build(mode.bitness(), CODE_BASE, |a| {
                let mut outer = a.create_label();
                let mut top = a.create_label();
                let mut back = a.create_label();
                a.xor(eax, eax)?;
                a.xor(edx, edx)?;
                a.mov(edi, 3)?;
                a.set_label(&mut outer)?;
                a.mov(ecx, 50)?;
                a.set_label(&mut top)?;
                a.add(eax, 1)?;
                a.jmp(succ)?;
                a.set_label(&mut back)?;
                a.sub(ecx, 1)?;
                a.jnz(top)?;
                if mode == Mode::Long64 {
                    a.mov(rsi, succ + 1)?;
                    a.mov(dword_ptr(rsi), edi)?;
                } else {
                    a.mov(esi, (succ + 1) as u32)?;
                    a.mov(dword_ptr(esi), edi)?;
                }
                a.sub(edi, 1)?;
                a.jnz(outer)?;
                a.hlt()?;
                Ok(vec![back])
            });
            let back = main.labels[0];
            let tail = build(mode.bitness(), succ, |a| {
                a.mov(ebx, 5)?;
                a.add(edx, ebx)?;
                a.jmp(back)?;
                Ok(vec![])
            });
            assert_eq!(&tail.bytes[..5], &[0xBB, 5, 0, 0, 0], "mov ebx, imm32");
            let mut g = TestGuest::new(engine, mode, &main.bytes);
            g.write(succ, &tail.bytes);
            g.run_to_halt();
            let what = format!("{engine} {mode:?}");
            assert_eq!(g.cpu.gpr[0] as u32, 150, "{what}");
            assert_eq!(g.cpu.gpr[2] as u32, 50 * (5 + 3 + 2), "{what}");
            if engine == EngineKind::Jit {
                assert!(stat(&g, "chained transitions") >= 150, "{what}");
            }
        }
    }
}

/// A block that branches back to its own start, in three variants: registers only (with a
/// flag consumer in the body), with inline loads and stores through the TLB, and with an
/// instruction the JIT leaves to the interpreter (registers reloaded after it).
fn self_loop(variant: u32) -> impl FnOnce(&mut CodeAssembler) -> Result<Vec<CodeLabel>, IcedError> {
    move |a| {
        let mut top = a.create_label();
        a.mov(ecx, 5000)?;
        a.xor(eax, eax)?;
        a.mov(edx, 7)?;
        a.mov(rsi, CODE_BASE + 0x8000)?;
        a.xor(r8d, r8d)?;
        a.set_label(&mut top)?;
        a.add(eax, ecx)?;
        if variant == 2 {
            a.add(edx, r8d)?; // R8: from the interpreter-run CPUID of the pass before
        }
        a.cmp(eax, 0x10_0000)?;
        a.setb(bl)?;
        a.imul_3(edx, edx, 3)?;
        a.xor(edx, eax)?;
        a.rol(edx, 5)?;
        match variant {
            1 => {
                a.mov(qword_ptr(rsi), rdx)?;
                a.add(rdx, qword_ptr(rsi + 4))?;
                a.mov(dword_ptr(rsi + 8), eax)?;
            }
            2 => {
                // CPUID leaf 0 (the highest basic leaf into R8), registers kept.
                a.mov(r9d, eax)?;
                a.mov(r10d, edx)?;
                a.mov(r11d, ecx)?;
                a.mov(r12d, ebx)?;
                a.xor(eax, eax)?;
                a.cpuid()?;
                a.mov(r8d, eax)?;
                a.mov(eax, r9d)?;
                a.mov(edx, r10d)?;
                a.mov(ecx, r11d)?;
                a.mov(ebx, r12d)?;
            }
            _ => {}
        }
        a.sub(ecx, 1)?;
        a.jnz(top)?;
        a.hlt()?;
        Ok(vec![])
    }
}

/// A self-looping block iterates inside its native code: the state and the retired count
/// match the interpreter, also when the run is cut into 37-instruction slices (each slice
/// exact), and the passes count as native chaining.
#[test]
fn self_loop_matches_the_interpreter_in_any_slicing() {
    for variant in 0..3 {
        let (mut want, _) = guest(EngineKind::Interp, Mode::Long64, self_loop(variant));
        want.run_to_halt();
        let (mut whole, _) = guest(EngineKind::Jit, Mode::Long64, self_loop(variant));
        whole.run_to_halt();
        assert_eq!(summary(&whole.cpu), summary(&want.cpu), "variant {variant}");
        // Every pass's instructions are counted.
        assert_eq!(
            whole.engine.instructions(),
            want.engine.instructions(),
            "variant {variant}: retired"
        );
        assert_eq!(
            whole.read_u64(CODE_BASE + 0x8000),
            want.read_u64(CODE_BASE + 0x8000),
            "variant {variant}: memory"
        );
        let native = stat(&whole, "chained transitions (native)");
        assert!(native >= 4900, "variant {variant}: {native} native passes");
        let (mut got, _) = guest(EngineKind::Jit, Mode::Long64, self_loop(variant));
        run_in_slices(&mut got, 37, &format!("variant {variant}"));
        assert_eq!(
            summary(&got.cpu),
            summary(&want.cpu),
            "variant {variant} sliced"
        );
        assert_eq!(
            got.engine.instructions(),
            want.engine.instructions(),
            "variant {variant} sliced: retired"
        );
    }
}

/// A port write inside a self-looping block that raises an interrupt leaves the loop: the
/// interrupt is taken right after the OUT (a port write ends its block), as in the
/// interpreter.
#[test]
fn interrupt_raised_inside_a_self_loop_is_taken_after_the_port_write() {
    for engine in [EngineKind::Interp, EngineKind::Jit] {
        let (mut g, labels) = guest(engine, Mode::Long64, |a| {
            let mut top = a.create_label();
            let mut handler = a.create_label();
            a.xor(ebx, ebx)?;
            a.mov(ecx, 100_000)?;
            a.sti()?;
            a.set_label(&mut top)?;
            a.add(eax, 1)?;
            a.mov(edx, 0)?;
            a.cmp(ecx, 40_000)?;
            a.sete(dl)?;
            a.shl(edx, 7)?; // DX = 0x80 when ECX is 40000, else 0
            a.out(dx, al)?;
            a.sub(ecx, 1)?;
            a.jnz(top)?;
            a.hlt()?;
            a.set_label(&mut handler)?;
            a.mov(ebx, ecx)?;
            a.hlt()?;
            Ok(vec![handler])
        });
        late_irq(&mut g, labels[0]);
        g.run_to_halt();
        assert_eq!(g.cpu.gpr[3] as u32, 40_000, "{engine}: ECX in the handler");
        if engine == EngineKind::Jit {
            assert!(stat(&g, "chained transitions (native)") > 1000, "{engine}");
        }
    }
}

/// The default JIT compiles on a background thread while the block is interpreted: a long
/// loop ends in the interpreter's state, and most of it ran as native code once the
/// translations arrived. It counts no chained transitions in native code (no detailed stats).
#[test]
fn background_compilation_matches_the_interpreter() {
    let program = |a: &mut CodeAssembler| {
        let mut top = a.create_label();
        let mut odd = a.create_label();
        let mut join = a.create_label();
        a.mov(ecx, 1_000_000)?;
        a.xor(eax, eax)?;
        a.xor(edx, edx)?;
        a.set_label(&mut top)?;
        a.test(ecx, 1)?;
        a.jnz(odd)?;
        a.add(eax, ecx)?;
        a.jmp(join)?;
        a.set_label(&mut odd)?;
        a.xor(edx, eax)?;
        a.set_label(&mut join)?;
        a.sub(ecx, 1)?;
        a.jnz(top)?;
        a.hlt()?;
        Ok(vec![])
    };
    let (mut want, _) = guest(EngineKind::Interp, Mode::Long64, program);
    want.run_to_halt();
    let (mut got, _) = guest(EngineKind::Jit, Mode::Long64, program);
    got.engine = EngineKind::Jit.create().expect("the default jit");
    got.run_to_halt();
    assert_eq!(summary(&got.cpu), summary(&want.cpu));
    let translation = stat_text(&got, "translation time");
    assert!(translation.contains("background"), "{translation}");
    // Without detailed stats, native code counts no chained transitions, and says so.
    let chained = stat_text(&got, "chained transitions (native)");
    assert!(chained.starts_with("not counted"), "{chained}");
    let native = stat(&got, "instructions in native blocks");
    let total = got.engine.instructions();
    assert!(
        native > total / 2,
        "{native} of {total} instructions native"
    );
}

/// An interrupt that becomes pending during an instruction the interpreter runs in the
/// middle of a block ending in a direct JMP (RDTSC: the block goes on, but the native code
/// must return to the run loop at its end): it is taken with RIP at the JMP's target, each
/// instruction retired once, as under the interpreter.
#[test]
fn interrupt_pending_before_a_direct_jump_is_taken_at_its_target() {
    let mut out = Vec::new();
    for engine in [EngineKind::Interp, EngineKind::Jit] {
        let (mut g, labels) = guest(engine, Mode::Long64, |a| {
            let mut top = a.create_label();
            let mut mid = a.create_label();
            let mut handler = a.create_label();
            a.mov(ecx, 3000)?;
            a.sti()?;
            a.set_label(&mut top)?;
            a.add(ebx, 1)?;
            a.rdtsc()?;
            a.jmp(mid)?;
            a.set_label(&mut mid)?;
            a.add(esi, ebx)?;
            a.sub(ecx, 1)?;
            a.jnz(top)?;
            a.hlt()?;
            a.set_label(&mut handler)?;
            a.mov(rdi, qword_ptr(rsp))?;
            a.hlt()?;
            Ok(vec![handler, mid])
        });
        g.set_gate(0x20, labels[0], 0);
        g.plat = Box::new(LateIrq {
            raise: Rc::new(Cell::new(false)),
            acked: false,
            at: 5000,
            retired: 0,
        });
        g.run_to_halt();
        assert_eq!(
            g.cpu.gpr[7], labels[1],
            "{engine}: interrupted at the JMP's target"
        );
        out.push((summary(&g.cpu), g.engine.instructions()));
    }
    assert_eq!(out[0], out[1], "state and retired instructions");
}

/// A function called from six sites of a loop returns to each in turn: more successors than
/// a block has links. The RETs go on natively through the jump table (run-time RIP), for a
/// function in the caller's page and in the next one (where the table entry's physical
/// address is what tells the successor apart).
#[test]
fn returns_to_many_callers_chain_natively() {
    for other_page in [false, true] {
        let func = CODE_BASE + 0x1000;
        let program = |a: &mut CodeAssembler| {
            let mut top = a.create_label();
            let mut local = a.create_label();
            a.mov(ecx, 2000)?;
            a.xor(eax, eax)?;
            a.xor(ebx, ebx)?;
            a.set_label(&mut top)?;
            for k in 1..=6 {
                a.mov(edi, k)?;
                if other_page {
                    a.call(func)?;
                } else {
                    a.call(local)?;
                }
                a.add(ebx, eax)?;
            }
            a.sub(ecx, 1)?;
            a.jnz(top)?;
            a.hlt()?;
            a.set_label(&mut local)?;
            a.imul_3(eax, edi, 3)?;
            a.ret()?;
            Ok(vec![])
        };
        let callee = build(64, func, |a| {
            a.imul_3(eax, edi, 3)?;
            a.ret()?;
            Ok(vec![])
        });
        let what = format!("function in the other page: {other_page}");
        let (mut want, _) = guest(EngineKind::Interp, Mode::Long64, program);
        want.write(func, &callee.bytes);
        want.run_to_halt();
        let (mut got, _) = guest(EngineKind::Jit, Mode::Long64, program);
        got.write(func, &callee.bytes);
        got.run_to_halt();
        assert_eq!(summary(&got.cpu), summary(&want.cpu), "{what}");
        assert_eq!(got.cpu.gpr[3] as u32, 2000 * 3 * 21, "{what}");
        let native = stat(&got, "chained transitions (native)");
        let dispatcher = stat(&got, "dispatcher transitions");
        // 12 block transitions per pass, or 7 when the translation of each CALL goes on
        // into the function in the same page; with the links alone two in three RETs went
        // to the run loop.
        let per_pass = if other_page { 11 } else { 6 };
        assert!(
            native > 2000 * per_pass,
            "{what}: {native} native transitions"
        );
        assert!(
            dispatcher < native / 100,
            "{what}: {dispatcher} dispatcher transitions"
        );
    }
}

/// One indirect call site with seven targets (so most are found in the jump table). After
/// 100 passes the guest maps the page of the seventh function to another physical page
/// holding other code (PTE write + INVLPG) and runs 100 more: the table entry of the old
/// page must not be taken for the new one.
#[test]
fn jump_table_entries_keep_their_physical_page() {
    let funcs = CODE_BASE + 0x1000;
    let remapped = CODE_BASE + 0x2000;
    let replacement = CODE_BASE + 0x3000;
    let pte = pte_addr(Mode::Long64, remapped);
    let program = |a: &mut CodeAssembler| {
        let mut outer = a.create_label();
        let mut top = a.create_label();
        let mut inner = a.create_label();
        a.xor(ebx, ebx)?;
        a.mov(r8d, 2)?;
        a.set_label(&mut outer)?;
        a.mov(ecx, 100)?;
        a.set_label(&mut top)?;
        a.xor(edx, edx)?;
        a.set_label(&mut inner)?;
        a.mov(rsi, DATA_BASE)?;
        a.call(qword_ptr(rsi + rdx * 8))?;
        a.add(ebx, eax)?;
        a.add(edx, 1)?;
        a.cmp(edx, 7)?;
        a.jne(inner)?;
        a.sub(ecx, 1)?;
        a.jnz(top)?;
        a.mov(rsi, pte)?;
        a.mov(rax, qword_ptr(rsi))?;
        a.and(rax, 0xFFF)?;
        a.mov(rdi, replacement)?;
        a.or(rax, rdi)?;
        a.mov(qword_ptr(rsi), rax)?;
        a.mov(rdi, remapped)?;
        a.invlpg(byte_ptr(rdi))?;
        a.sub(r8d, 1)?;
        a.jnz(outer)?;
        a.hlt()?;
        Ok(vec![])
    };
    let function = |at: u64, value: u32| {
        build(64, at, |a| {
            a.mov(eax, value)?;
            a.ret()?;
            Ok(vec![])
        })
        .bytes
    };
    let mut results = Vec::new();
    for engine in [EngineKind::Interp, EngineKind::Jit] {
        let (mut g, _) = guest(engine, Mode::Long64, program);
        for k in 0..6u64 {
            let at = funcs + 0x10 * k;
            g.write(at, &function(at, k as u32 + 1));
            g.write(DATA_BASE + 8 * k, &at.to_le_bytes());
        }
        g.write(remapped, &function(remapped, 100));
        g.write(replacement, &function(remapped, 1000));
        g.write(DATA_BASE + 8 * 6, &remapped.to_le_bytes());
        g.run_to_halt();
        assert_eq!(
            g.cpu.gpr[3] as u32,
            100 * (21 + 100) + 100 * (21 + 1000),
            "{engine}"
        );
        if engine == EngineKind::Jit {
            let native = stat(&g, "chained transitions (native)");
            assert!(native > 200 * 7, "{native} native transitions");
        }
        results.push(summary(&g.cpu));
    }
    assert_eq!(results[0], results[1]);
}
