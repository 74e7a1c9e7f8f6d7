//! The vCPU loop with real devices: a guest programs the PIC and the PIT, halts between timer
//! interrupts, and counts ticks — under the host clock and under icount (where HLT skips
//! straight to the next deadline, so the run is deterministic). Also guest-requested resets.

use crane86::machine::config::{
    ClockMode, FlatEntryMode, ImageSource, KernelConfig, KernelFormat, MachineConfig, SerialSink,
};
use crane86::machine::{EngineKind, ExitReason, PcMachine, RunSummary};
use iced_x86::code_asm::*;

const LOAD: u64 = 0x20_0000;
const IDT: u32 = 0x3_0000;
const TICKS_ADDR: u32 = 0x3_1000;
const TICKS: u32 = 10;
/// PIT input clock 1.193182 MHz; 1193 counts ≈ 1 ms.
const PIT_COUNT: u32 = 1193;

/// Program the PIC (IRQ0 → vector 0x20, only IRQ0 unmasked) and PIT channel 0 (rate
/// generator, ~1 ms), then `sti; hlt` until TICKS interrupts arrived; exit with the count.
fn ticking_kernel() -> Vec<u8> {
    const HANDLER: u64 = LOAD + 0x800;
    let mut a = CodeAssembler::new(32).unwrap();
    let mut wait = a.create_label();
    // IDT gate 0x20 → handler (32-bit interrupt gate, selector 0x08).
    a.mov(eax, HANDLER as u32).unwrap();
    a.mov(word_ptr(IDT + 0x20 * 8), ax).unwrap();
    a.mov(word_ptr(IDT + 0x20 * 8 + 2), 0x08u32).unwrap();
    a.mov(word_ptr(IDT + 0x20 * 8 + 4), 0x8E00u32).unwrap();
    a.shr(eax, 16).unwrap();
    a.mov(word_ptr(IDT + 0x20 * 8 + 6), ax).unwrap();
    a.mov(word_ptr(IDT + 0x800), 0x7FFu32).unwrap();
    a.mov(dword_ptr(IDT + 0x802), IDT).unwrap();
    a.lidt(ptr(IDT + 0x800)).unwrap();
    a.mov(dword_ptr(TICKS_ADDR), 0u32).unwrap();
    // PIC: ICW1..ICW4, then masks.
    for (port, v) in [
        (0x20u32, 0x11u32),
        (0xA0, 0x11),
        (0x21, 0x20),
        (0xA1, 0x28),
        (0x21, 0x04),
        (0xA1, 0x02),
        (0x21, 0x01),
        (0xA1, 0x01),
        (0x21, 0xFE),
        (0xA1, 0xFF),
    ] {
        a.mov(al, v).unwrap();
        a.out(port, al).unwrap();
    }
    // PIT channel 0, lobyte/hibyte, mode 2.
    a.mov(al, 0x34u32).unwrap();
    a.out(0x43u32, al).unwrap();
    a.mov(al, PIT_COUNT & 0xFF).unwrap();
    a.out(0x40u32, al).unwrap();
    a.mov(al, PIT_COUNT >> 8).unwrap();
    a.out(0x40u32, al).unwrap();
    a.set_label(&mut wait).unwrap();
    a.sti().unwrap();
    a.hlt().unwrap();
    a.cmp(dword_ptr(TICKS_ADDR), TICKS as i32).unwrap();
    a.jb(wait).unwrap();
    a.cli().unwrap();
    a.mov(eax, dword_ptr(TICKS_ADDR)).unwrap();
    a.out(0xF4u32, al).unwrap();
    a.hlt().unwrap();
    let mut code = a.assemble(LOAD).unwrap();
    assert!(code.len() <= 0x800);
    code.resize(0x800, 0x90);
    // IRQ0 handler at HANDLER: count, EOI, return.
    let mut h = CodeAssembler::new(32).unwrap();
    h.push(eax).unwrap();
    h.inc(dword_ptr(TICKS_ADDR)).unwrap();
    h.mov(al, 0x20u32).unwrap();
    h.out(0x20u32, al).unwrap();
    h.pop(eax).unwrap();
    h.iretd().unwrap();
    code.extend(h.assemble(HANDLER).unwrap());
    code
}

fn flat_kernel(code: Vec<u8>) -> KernelConfig {
    KernelConfig {
        image: ImageSource::Memory {
            name: "flat.bin".into(),
            bytes: code,
        },
        modules: vec![],
        cmdline: String::new(),
        format: KernelFormat::Flat {
            load_addr: LOAD,
            entry: None,
            mode: FlatEntryMode::Protected32,
        },
    }
}

fn run(engine: EngineKind, code: Vec<u8>, clock: ClockMode) -> RunSummary {
    let config = MachineConfig {
        engine,
        ram_size: 16 << 20,
        serial: SerialSink::None,
        kernel: Some(flat_kernel(code)),
        clock,
        // kvm cannot count instructions; the others stop a runaway guest.
        max_instructions: engine.counts_instructions().then_some(50_000_000),
        ..MachineConfig::default()
    };
    PcMachine::new(config)
        .unwrap()
        .run()
        .unwrap_or_else(|e| panic!("{engine}: {e}"))
}

#[test]
fn pit_interrupts_wake_a_halted_guest_under_both_clocks() {
    let min_ns = u64::from(TICKS - 1) * 1_000_000;
    // The host clock on every engine here (kvm included where it can run 32-bit interrupt
    // handlers: see `apic::kvm_on_the_host_clock`).
    let mut engines = EngineKind::emulators();
    if super::kvm::hardware_kvm("the kvm part of pit_interrupts_wake_a_halted_guest") {
        engines.push(EngineKind::Kvm);
    }
    for engine in engines {
        let s = run(engine, ticking_kernel(), ClockMode::Host);
        assert_eq!(s.reason, ExitReason::DebugExit(TICKS), "{engine} host");
        assert!(
            s.guest_ns >= min_ns,
            "{engine} host: guest time {} ns",
            s.guest_ns
        );
    }
    for engine in EngineKind::emulators() {
        let a = run(engine, ticking_kernel(), ClockMode::Icount { shift: 0 });
        let b = run(engine, ticking_kernel(), ClockMode::Icount { shift: 0 });
        assert_eq!(a.reason, ExitReason::DebugExit(TICKS), "{engine} icount");
        assert!(
            a.guest_ns >= min_ns,
            "{engine} icount: guest time {} ns",
            a.guest_ns
        );
        // HLT skipped idle time instead of spinning: far fewer instructions than ns.
        assert!(
            a.instructions < a.guest_ns / 10,
            "{engine}: {} insns",
            a.instructions
        );
        assert_eq!(
            (a.instructions, a.guest_ns),
            (b.instructions, b.guest_ns),
            "{engine}: icount runs must be deterministic"
        );
    }
}

#[test]
fn guest_reset_through_port_cf9_reboots_the_kernel() {
    // A counter outside the image survives the reset (the image is reloaded).
    const COUNTER: u32 = 0x30_0000;
    let mut a = CodeAssembler::new(32).unwrap();
    let mut done = a.create_label();
    a.inc(dword_ptr(COUNTER)).unwrap();
    a.cmp(dword_ptr(COUNTER), 3).unwrap();
    a.jae(done).unwrap();
    a.mov(dx, 0xCF9u32).unwrap();
    a.mov(al, 0x06u32).unwrap();
    a.out(dx, al).unwrap();
    a.hlt().unwrap();
    a.set_label(&mut done).unwrap();
    a.mov(eax, dword_ptr(COUNTER)).unwrap();
    a.out(0xF4u32, al).unwrap();
    a.hlt().unwrap();
    let code = a.assemble(LOAD).unwrap();
    for engine in EngineKind::available() {
        // kvm: the host clock (the guest does not read time).
        let clock = if engine.counts_instructions() {
            ClockMode::Icount { shift: 0 }
        } else {
            ClockMode::Host
        };
        let s = run(engine, code.clone(), clock);
        assert_eq!(s.reason, ExitReason::DebugExit(3), "{engine}");
        assert_eq!(s.resets, 2, "{engine}");
    }
}
