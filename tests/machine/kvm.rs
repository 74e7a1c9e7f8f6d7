//! The KVM engine on this host's `/dev/kvm`: `CpuState` → KVM → `CpuState` round trips for
//! states from every CPU mode, small guests in every mode, and the demo guest. Each test
//! prints why it skips when KVM cannot run here.

use crane86::machine::config::{MachineConfig, SerialBuffer, SerialSink};
use crane86::machine::engine::{hardware_virtualization, kvm_usable};
use crane86::machine::testkit::{sum_loop_program, sum_loop_stored, Mode, TestExit, TestGuest};
use crane86::machine::{demo, EngineKind, ExitReason, PcMachine};
use crane86::x86::{CpuState, F80};
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
use crane86_kvm::KvmVcpu;

/// True when KVM can run here; otherwise prints why the calling test is skipped.
pub fn kvm_here(test: &str) -> bool {
    match kvm_usable() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("skipping {test}: the kvm engine cannot run here: {why}");
            false
        }
    }
}

/// True when KVM runs here on hardware virtualization (vmx/svm); otherwise prints why
/// `what` is skipped.
pub fn hardware_kvm(what: &str) -> bool {
    if !kvm_here(what) {
        return false;
    }
    if software_kvm() {
        eprintln!("skipping {what}: /dev/kvm is a software KVM here (no vmx/svm), which cannot run 32-bit protected-mode interrupt handlers");
        return false;
    }
    true
}

/// `/dev/kvm` works but the CPU has no vmx/svm: a software KVM, which may lack CPU modes
/// (this project's CI machines have one without non-PAE paging).
fn software_kvm() -> bool {
    !hardware_virtualization()
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
/// The fields KVM does not hold (see `crane86_kvm::state`), taken from `cpu`, over RESET.
fn carried_fields(cpu: &CpuState) -> CpuState {
    let mut prev = CpuState::reset();
    prev.fpu.fcs = cpu.fpu.fcs;
    prev.fpu.fds = cpu.fpu.fds;
    prev.dr[4] = cpu.dr[4];
    prev.dr[5] = cpu.dr[5];
    prev.a20 = cpu.a20;
    prev.halted = cpu.halted;
    prev
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
/// Variations on a mode's starting state that a round trip must preserve.
fn variants(base: &CpuState) -> Vec<(&'static str, CpuState)> {
    let mut plain = base.clone();
    plain.gpr[0] = 0x0123_4567;
    let mut busy = base.clone();
    for (i, g) in busy.gpr.iter_mut().enumerate() {
        *g = if base.code_bits() == 64 {
            0x8000_0000_0000_0000 | (i as u64) << 32 | 0xDEAD_0000 | i as u64
        } else {
            0xDEAD_0000 | i as u64
        };
    }
    busy.set_rflags(0x0000_0ED7 & !0x200 | 0x2);
    busy.cr2 = 0x7000_1234;
    busy.fpu.set_top(6);
    busy.fpu.st[6] = F80::new(0x4000, 0xC000_0000_0000_0000);
    busy.fpu.set_tag(6, crane86::x86::fpu::tag::VALID);
    busy.fpu.st[7] = F80::new(0xBFFF, 0x8000_0000_0000_0000);
    busy.fpu.set_tag(7, crane86::x86::fpu::tag::VALID);
    busy.fpu.fcw = 0x027F;
    busy.fpu.fip = 0x2_0010;
    busy.fpu.fdp = 0x4_0020;
    busy.fpu.fop = 0x5C1;
    busy.fpu.mxcsr = 0x9FC0;
    for (i, x) in busy.fpu.xmm.iter_mut().enumerate() {
        *x = 0x1111_2222_3333_4444_5555_6666_7777_0000 | i as u128;
    }
    busy.dr[0] = 0x2_0000;
    busy.dr[7] = 0x0000_0401;
    busy.msr.sysenter_cs = 0x08;
    busy.msr.sysenter_esp = 0x8_0000;
    busy.msr.sysenter_eip = 0x2_0100;
    busy.msr.star = 0x0023_0008_0000_0000;
    busy.msr.lstar = 0xFFFF_FFFF_8100_0000;
    busy.msr.cstar = 0xFFFF_FFFF_8100_1000;
    busy.msr.fmask = 0x4_7700;
    busy.msr.kernel_gs_base = 0xFFFF_8880_0000_0000;
    busy.msr.pat = 0x0007_0406_0007_0106;
    busy.msr.mtrr_def_type = 0xC06;
    busy.msr.mtrr_var[0] = 0x0000_0006;
    busy.msr.mtrr_var[1] = 0xF_F800_0800;
    busy.msr.mtrr_fixed[0] = 0x0606_0606_0606_0606;
    let mut shadow = base.clone();
    shadow.interrupt_shadow = true;
    shadow.rflags |= 0x200;
    let mut pending = base.clone();
    pending.pending_external = Some(0x41);
    pending.rflags |= 0x200;
    vec![
        ("plain", plain),
        ("registers, x87, SSE, MSRs", busy),
        ("interrupt shadow", shadow),
        ("pending external interrupt", pending),
    ]
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[test]
fn cpu_state_round_trips_through_kvm_in_every_mode() {
    if !kvm_here("cpu_state_round_trips_through_kvm_in_every_mode") {
        return;
    }
    for mode in Mode::ALL {
        let code = [0xF4u8];
        let g = TestGuest::new(EngineKind::Interp, mode, &code);
        for (what, cpu) in variants(&g.cpu) {
            let mut kvm = KvmVcpu::new().expect("KVM vCPU");
            kvm.map_memory(&g.mem).expect("memory slots");
            let now = 5_000_000_000;
            if let Err(e) = kvm.load_state(&cpu, now) {
                assert!(
                    software_kvm(),
                    "{mode:?} {what}: hardware KVM refused the state: {e}"
                );
                eprintln!("skipping {mode:?} ({what}) on this software KVM: {e}");
                continue;
            }
            let mut back = kvm
                .save_state(&carried_fields(&cpu), now)
                .unwrap_or_else(|e| panic!("{mode:?} {what}: save: {e}"));
            // The TSC kept running between the two calls (where KVM takes TSC writes).
            let drift = back.msr.tsc_offset.wrapping_sub(cpu.msr.tsc_offset) as i64;
            if kvm.tsc_writable() {
                assert!(
                    (0..10_000_000_000).contains(&drift),
                    "{mode:?} {what}: TSC moved by {drift}"
                );
            } else if mode == Mode::Real && what == "plain" {
                eprintln!("this KVM ignores TSC writes: TSC continuity not checked");
            }
            back.msr.tsc_offset = cpu.msr.tsc_offset;
            assert_eq!(back, cpu, "{mode:?} {what}: state changed in a round trip");
        }
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[test]
fn sum_loop_in_every_mode_under_kvm() {
    if !kvm_here("sum_loop_in_every_mode_under_kvm") {
        return;
    }
    for mode in Mode::ALL {
        let code = sum_loop_program(mode);
        let mut g = TestGuest::new(EngineKind::Kvm, mode, &code);
        let mut probe = KvmVcpu::new().expect("KVM vCPU");
        probe.map_memory(&g.mem).expect("memory slots");
        if let Err(e) = probe.load_state(&g.cpu, 0) {
            assert!(
                software_kvm(),
                "{mode:?}: hardware KVM refused the state: {e}"
            );
            eprintln!("skipping {mode:?} on this software KVM: {e}");
            continue;
        }
        let exit = g.run(10_000_000);
        assert_eq!(exit, TestExit::Halted, "{mode:?}: {:#x?}", g.cpu);
        assert_eq!(g.cpu.gpr[0] & 0xFFFF, 5050, "{mode:?}");
        assert_eq!(sum_loop_stored(&g), 5050, "{mode:?}");
        assert!(g.cpu.halted, "{mode:?}: HLT leaves the CPU halted");
    }
}

#[test]
fn demo_passes_under_kvm() {
    if !kvm_here("demo_passes_under_kvm") {
        return;
    }
    let serial = SerialBuffer::new();
    let config = MachineConfig {
        engine: EngineKind::Kvm,
        serial: SerialSink::Buffer(serial.clone()),
        ..MachineConfig::demo(1)
    };
    let summary = PcMachine::new(config)
        .expect("kvm demo machine")
        .run()
        .unwrap_or_else(|e| panic!("demo under kvm: {e}\n{}", serial.text()));
    let out = serial.text();
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        demo::expected_lines(1),
        "{out}"
    );
    assert_eq!(summary.reason, ExitReason::DebugExit(0));
    assert_eq!(demo::exit_status(&summary), 0);
    assert!(!summary.instructions_counted);
}

#[test]
fn kvm_refuses_icount_and_instruction_limits() {
    if !kvm_here("kvm_refuses_icount_and_instruction_limits") {
        return;
    }
    let icount = MachineConfig {
        engine: EngineKind::Kvm,
        serial: SerialSink::None,
        clock: crane86::machine::ClockMode::Icount { shift: 0 },
        ..MachineConfig::demo(1)
    };
    let e = PcMachine::new(icount)
        .err()
        .expect("icount refused")
        .to_string();
    assert!(e.contains("kvm") && e.contains("--icount"), "{e}");
    let limit = MachineConfig {
        engine: EngineKind::Kvm,
        serial: SerialSink::None,
        max_instructions: Some(1000),
        ..MachineConfig::demo(1)
    };
    let e = PcMachine::new(limit)
        .err()
        .expect("limit refused")
        .to_string();
    assert!(e.contains("--max-insns"), "{e}");
}
