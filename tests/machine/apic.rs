//! The APIC interrupt path and timer calibration through the whole vCPU loop: the LAPIC
//! timer waking a halted guest, the PIT routed through IOAPIC pin 2 with the 8259 masked, and
//! Linux-style TSC calibration against PIT channel 2 polled through port 0x61 — which needs
//! guest time to advance within one engine run under icount.

use crane86::machine::config::{
    ClockMode, FlatEntryMode, ImageSource, KernelConfig, KernelFormat, MachineConfig, SerialSink,
};
use crane86::machine::{EngineKind, ExitReason, PcMachine, RunSummary};
use iced_x86::code_asm::*;

const LOAD: u64 = 0x20_0000;
const HANDLER: u64 = LOAD + 0x800;
const IDT: u32 = 0x3_0000;
const TICKS_ADDR: u32 = 0x3_1000;
pub(crate) const TICKS: u32 = 10;
const LAPIC: u32 = 0xFEE0_0000;
const IOAPIC: u32 = 0xFEC0_0000;
const VECTOR: u32 = 0x40;

fn run(engine: EngineKind, code: Vec<u8>) -> RunSummary {
    run_with_clock(engine, code, ClockMode::Icount { shift: 0 })
}

fn run_with_clock(engine: EngineKind, code: Vec<u8>, clock: ClockMode) -> RunSummary {
    let config = MachineConfig {
        engine,
        ram_size: 16 << 20,
        serial: SerialSink::None,
        kernel: Some(KernelConfig {
            image: ImageSource::Memory {
                name: "apic.bin".into(),
                bytes: code,
            },
            modules: vec![],
            cmdline: String::new(),
            format: KernelFormat::Flat {
                load_addr: LOAD,
                entry: None,
                mode: FlatEntryMode::Protected32,
            },
        }),
        clock,
        max_instructions: engine.counts_instructions().then_some(20_000_000),
        ..MachineConfig::default()
    };
    PcMachine::new(config)
        .unwrap()
        .run()
        .unwrap_or_else(|e| panic!("{engine}: {e}"))
}

/// IDT gate VECTOR → HANDLER, load the IDT, zero the tick counter, mask both 8259s.
fn prologue(a: &mut CodeAssembler) {
    let gate = IDT + VECTOR * 8;
    a.mov(eax, HANDLER as u32).unwrap();
    a.mov(word_ptr(gate), ax).unwrap();
    a.mov(word_ptr(gate + 2), 0x08u32).unwrap();
    a.mov(word_ptr(gate + 4), 0x8E00u32).unwrap();
    a.shr(eax, 16).unwrap();
    a.mov(word_ptr(gate + 6), ax).unwrap();
    a.mov(word_ptr(IDT + 0x800), 0x7FFu32).unwrap();
    a.mov(dword_ptr(IDT + 0x802), IDT).unwrap();
    a.lidt(ptr(IDT + 0x800)).unwrap();
    a.mov(dword_ptr(TICKS_ADDR), 0u32).unwrap();
    a.mov(al, 0xFFu32).unwrap();
    a.out(0x21u32, al).unwrap();
    a.out(0xA1u32, al).unwrap();
    // LAPIC software enable, spurious vector 0xFF.
    a.mov(dword_ptr(LAPIC + 0xF0), 0x1FFu32).unwrap();
}

/// `sti; hlt` until TICKS interrupts arrived, then exit with the count. The handler counts
/// and writes the LAPIC EOI register.
fn wait_and_handler(mut a: CodeAssembler) -> Vec<u8> {
    let mut wait = a.create_label();
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
    let mut h = CodeAssembler::new(32).unwrap();
    h.inc(dword_ptr(TICKS_ADDR)).unwrap();
    h.mov(dword_ptr(LAPIC + 0xB0), 0u32).unwrap();
    h.iretd().unwrap();
    code.extend(h.assemble(HANDLER).unwrap());
    code
}

#[test]
fn lapic_periodic_timer_wakes_a_halted_guest() {
    let mut a = CodeAssembler::new(32).unwrap();
    prologue(&mut a);
    a.mov(dword_ptr(LAPIC + 0x3E0), 0xBu32).unwrap(); // divide by 1
    a.mov(dword_ptr(LAPIC + 0x320), (1u32 << 17) | VECTOR)
        .unwrap(); // periodic
    a.mov(dword_ptr(LAPIC + 0x380), 1_000_000u32).unwrap(); // 1 ms at 1 GHz
    let code = wait_and_handler(a);
    for engine in EngineKind::emulators() {
        let s = run(engine, code.clone());
        assert_eq!(s.reason, ExitReason::DebugExit(TICKS), "{engine}");
        assert!(
            (10_000_000..11_000_000).contains(&s.guest_ns),
            "{engine}: 10 periods of 1 ms, guest time {} ns",
            s.guest_ns
        );
        assert!(s.instructions < 10_000, "{engine}: HLT skipped idle time");
    }
    kvm_on_the_host_clock(&code);
}

/// Under kvm (where it runs; the host clock, as kvm cannot count instructions): the LAPIC
/// and IOAPIC are MMIO exits to the shared devices and the interrupts are injected.
/// A software KVM (no vmx/svm) may be unable to run 32-bit protected-mode handlers (this
/// project's CI machines' kvm_pvm cannot emulate a 32-bit IRET): the long-mode test below
/// covers interrupt injection there.
fn kvm_on_the_host_clock(code: &[u8]) {
    if !super::kvm::hardware_kvm("the 32-bit kvm part of this test") {
        return;
    }
    let s = run_with_clock(EngineKind::Kvm, code.to_vec(), ClockMode::Host);
    assert_eq!(s.reason, ExitReason::DebugExit(TICKS), "kvm");
    assert!(s.guest_ns >= 9_000_000, "kvm: {} ns", s.guest_ns);
    assert_injected_every_tick(&s);
}

#[test]
fn pit_through_ioapic_pin2_with_the_8259_masked() {
    let mut a = CodeAssembler::new(32).unwrap();
    prologue(&mut a);
    // IOAPIC redirection entry 2 (registers 0x14/0x15): vector, fixed, physical dest 0.
    a.mov(dword_ptr(IOAPIC), 0x15u32).unwrap();
    a.mov(dword_ptr(IOAPIC + 0x10), 0u32).unwrap();
    a.mov(dword_ptr(IOAPIC), 0x14u32).unwrap();
    a.mov(dword_ptr(IOAPIC + 0x10), VECTOR).unwrap();
    // PIT channel 0, rate generator, 1193 counts ≈ 1 ms.
    a.mov(al, 0x34u32).unwrap();
    a.out(0x43u32, al).unwrap();
    a.mov(al, 1193u32 & 0xFF).unwrap();
    a.out(0x40u32, al).unwrap();
    a.mov(al, 1193u32 >> 8).unwrap();
    a.out(0x40u32, al).unwrap();
    let code = wait_and_handler(a);
    for engine in EngineKind::emulators() {
        let s = run(engine, code.clone());
        assert_eq!(s.reason, ExitReason::DebugExit(TICKS), "{engine}");
        assert!(s.guest_ns >= 9_000_000, "{engine}: {} ns", s.guest_ns);
    }
    kvm_on_the_host_clock(&code);
}

/// Linux's `pit_calibrate_tsc` shape: gate channel 2 on, mode 0 with a 10 ms count, read
/// the TSC, poll port 0x61 bit 5 (OUT), read the TSC again; exit with the elapsed TSC in
/// units of 100 µs.
#[test]
fn tsc_calibration_against_pit_channel2_under_icount() {
    const LATCH: u32 = 11_932; // 10 ms at 1.193182 MHz
    let mut a = CodeAssembler::new(32).unwrap();
    let mut poll = a.create_label();
    a.in_(al, 0x61u32).unwrap();
    a.and(al, 0xFDu32 as i32).unwrap(); // speaker off
    a.or(al, 0x01).unwrap(); // gate on
    a.out(0x61u32, al).unwrap();
    a.mov(al, 0xB0u32).unwrap(); // channel 2, lobyte/hibyte, mode 0
    a.out(0x43u32, al).unwrap();
    a.mov(al, LATCH & 0xFF).unwrap();
    a.out(0x42u32, al).unwrap();
    a.mov(al, LATCH >> 8).unwrap();
    a.out(0x42u32, al).unwrap();
    a.rdtsc().unwrap();
    a.mov(ebx, eax).unwrap();
    a.set_label(&mut poll).unwrap();
    a.in_(al, 0x61u32).unwrap();
    a.test(al, 0x20).unwrap();
    a.jz(poll).unwrap();
    a.rdtsc().unwrap();
    a.sub(eax, ebx).unwrap();
    a.xor(edx, edx).unwrap();
    a.mov(ecx, 100_000u32).unwrap();
    a.div(ecx).unwrap();
    a.out(0xF4u32, al).unwrap();
    a.hlt().unwrap();
    let code = a.assemble(LOAD).unwrap();
    for engine in EngineKind::emulators() {
        let s = run(engine, code.clone());
        // The TSC runs at 1 GHz: 11932 PIT ticks = 10.0002 ms = 100 units of 100 µs.
        assert_eq!(s.reason, ExitReason::DebugExit(100), "{engine}: {s}");
    }
}

/// Under icount the TSC is derived from retired instructions, also between two RDTSCs of one
/// engine run: 1000 iterations of `dec; jnz` (2000 instructions at 1 ns each) read as ~2 µs.
#[test]
fn tsc_advances_within_one_engine_run() {
    let mut a = CodeAssembler::new(32).unwrap();
    let mut spin = a.create_label();
    a.rdtsc().unwrap();
    a.mov(ebx, eax).unwrap();
    a.mov(ecx, 1000u32).unwrap();
    a.set_label(&mut spin).unwrap();
    a.dec(ecx).unwrap();
    a.jnz(spin).unwrap();
    a.rdtsc().unwrap();
    a.sub(eax, ebx).unwrap();
    a.xor(edx, edx).unwrap();
    a.mov(ecx, 100u32).unwrap();
    a.div(ecx).unwrap();
    a.out(0xF4u32, al).unwrap();
    a.hlt().unwrap();
    let code = a.assemble(LOAD).unwrap();
    for engine in EngineKind::emulators() {
        let s = run(engine, code.clone());
        assert_eq!(s.reason, ExitReason::DebugExit(20), "{engine}: {s}");
    }
}

/// TSC-deadline mode as Linux uses it when CPUID.1:ECX[24] is set: LVT timer mode 2, then
/// per tick `WRMSR IA32_TSC_DEADLINE, rdtsc + 1 ms` and `sti; hlt`.
#[test]
fn tsc_deadline_timer_wakes_a_halted_guest() {
    const NOT_ADVERTISED: u32 = 0x7F;
    let mut a = CodeAssembler::new(32).unwrap();
    let mut advertised = a.create_label();
    let mut wait = a.create_label();
    a.mov(eax, 1u32).unwrap();
    a.cpuid().unwrap();
    a.bt(ecx, 24).unwrap();
    a.jc(advertised).unwrap();
    a.mov(al, NOT_ADVERTISED).unwrap();
    a.out(0xF4u32, al).unwrap();
    a.set_label(&mut advertised).unwrap();
    prologue(&mut a);
    a.mov(dword_ptr(LAPIC + 0x320), (2u32 << 17) | VECTOR)
        .unwrap();
    a.set_label(&mut wait).unwrap();
    a.rdtsc().unwrap();
    a.add(eax, 1_000_000).unwrap();
    a.adc(edx, 0).unwrap();
    a.mov(ecx, 0x6E0u32).unwrap();
    a.wrmsr().unwrap();
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
    let mut h = CodeAssembler::new(32).unwrap();
    h.inc(dword_ptr(TICKS_ADDR)).unwrap();
    h.mov(dword_ptr(LAPIC + 0xB0), 0u32).unwrap();
    h.iretd().unwrap();
    code.extend(h.assemble(HANDLER).unwrap());
    for engine in EngineKind::emulators() {
        let s = run(engine, code.clone());
        assert_eq!(s.reason, ExitReason::DebugExit(TICKS), "{engine}: {s}");
        assert!(
            (10_000_000..10_100_000).contains(&s.guest_ns),
            "{engine}: 10 deadlines 1 ms apart, guest time {} ns",
            s.guest_ns
        );
    }
}

/// The LAPIC periodic timer in 64-bit long mode (a vmlinux ELF entered through the 64-bit
/// boot protocol: identity-mapped 0..4 GiB), on every engine here with the host clock: ten
/// interrupts wake the halted guest, the handler EOIs and IRETQs. Under kvm this is the
/// interrupt injection path with the userspace LAPIC.
#[test]
fn lapic_timer_interrupts_in_long_mode_on_every_engine() {
    let image = long_mode_lapic_guest();
    for engine in EngineKind::available() {
        let s = PcMachine::new(long_mode_lapic_config(
            engine,
            image.clone(),
            ClockMode::Host,
        ))
        .and_then(|mut m| m.run())
        .unwrap_or_else(|e| panic!("{engine}: {e}"));
        assert_eq!(s.reason, ExitReason::DebugExit(TICKS), "{engine}");
        assert!(s.guest_ns >= 9_000_000, "{engine}: {} ns", s.guest_ns);
        if engine == EngineKind::Kvm {
            assert_injected_every_tick(&s);
        }
    }
}

/// The machine for [`long_mode_lapic_guest`] on `engine`.
pub(crate) fn long_mode_lapic_config(
    engine: EngineKind,
    image: Vec<u8>,
    clock: ClockMode,
) -> MachineConfig {
    MachineConfig {
        engine,
        ram_size: 64 << 20,
        serial: SerialSink::None,
        kernel: Some(super::linux::kernel_config(image, &[], "")),
        clock,
        max_instructions: engine.counts_instructions().then_some(50_000_000),
        ..MachineConfig::default()
    }
}

/// A vmlinux ELF whose 64-bit code arms the LAPIC timer (periodic, 1 ms), halts until
/// [`TICKS`] interrupts were counted and exits with the count.
pub(crate) fn long_mode_lapic_guest() -> Vec<u8> {
    const PADDR: u64 = 0x100_0000;
    const IDT64: u64 = 0x3_0000;
    const TICKS64: u64 = 0x3_2000;
    let mut a = CodeAssembler::new(64).unwrap();
    let mut handler = a.create_label();
    let mut wait = a.create_label();
    let mut idtr = a.create_label();
    a.mov(rax, 0u64).unwrap();
    a.lea(rax, ptr(handler)).unwrap();
    let gate = IDT64 + u64::from(VECTOR) * 16;
    a.mov(rdi, gate).unwrap();
    a.mov(word_ptr(rdi), ax).unwrap();
    a.mov(
        word_ptr(rdi + 2),
        u32::from(crane86::machine::loader::bzimage::BOOT_CS),
    )
    .unwrap();
    a.mov(word_ptr(rdi + 4), 0x8E00u32).unwrap();
    a.shr(rax, 16).unwrap();
    a.mov(word_ptr(rdi + 6), ax).unwrap();
    a.shr(rax, 16).unwrap();
    a.mov(dword_ptr(rdi + 8), eax).unwrap();
    a.mov(dword_ptr(rdi + 12), 0u32).unwrap();
    a.lidt(ptr(idtr)).unwrap();
    a.mov(rdi, TICKS64).unwrap();
    a.mov(dword_ptr(rdi), 0u32).unwrap();
    a.mov(al, 0xFFu32).unwrap();
    a.out(0x21u32, al).unwrap();
    a.out(0xA1u32, al).unwrap();
    a.mov(rsi, u64::from(LAPIC)).unwrap();
    a.mov(dword_ptr(rsi + 0xF0), 0x1FFu32).unwrap(); // software enable
    a.mov(dword_ptr(rsi + 0x3E0), 0xBu32).unwrap(); // divide by 1
    a.mov(dword_ptr(rsi + 0x320), (1u32 << 17) | VECTOR)
        .unwrap(); // periodic
    a.mov(dword_ptr(rsi + 0x380), 1_000_000u32).unwrap(); // 1 ms at 1 GHz
    a.set_label(&mut wait).unwrap();
    a.sti().unwrap();
    a.hlt().unwrap();
    a.cmp(dword_ptr(rdi), TICKS as i32).unwrap();
    a.jb(wait).unwrap();
    a.cli().unwrap();
    a.mov(dword_ptr(rsi + 0x320), 1u32 << 16).unwrap(); // masked
    a.mov(eax, dword_ptr(rdi)).unwrap();
    a.out(0xF4u32, al).unwrap();
    a.hlt().unwrap();
    a.set_label(&mut handler).unwrap();
    a.push(rax).unwrap();
    a.mov(rax, TICKS64).unwrap();
    a.inc(dword_ptr(rax)).unwrap();
    a.mov(rax, u64::from(LAPIC + 0xB0)).unwrap();
    a.mov(dword_ptr(rax), 0u32).unwrap(); // EOI
    a.pop(rax).unwrap();
    a.iretq().unwrap();
    a.set_label(&mut idtr).unwrap();
    a.dw(&[0x0FFF]).unwrap();
    a.dq(&[IDT64]).unwrap();
    let code = a.assemble(PADDR).unwrap();
    super::linux::vmlinux_elf(PADDR, &code, 0)
}

/// kvm's `--stats` count of injected interrupts covers every tick.
fn assert_injected_every_tick(s: &RunSummary) {
    let injected = s
        .engine_stats
        .iter()
        .find(|(k, _)| *k == "interrupts injected")
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .expect("kvm counts injected interrupts");
    assert!(
        injected >= u64::from(TICKS),
        "kvm: {injected} interrupts injected"
    );
}
