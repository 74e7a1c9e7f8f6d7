//! Switching a running guest between engines (`MachineConfig::switches`, the CLI's
//! `--switch-engine`): the guest continues at an instruction boundary with its full state,
//! and its output and final state match a run that never switched.

use crane86::machine::config::{
    EngineSwitch, MachineConfig, SerialBuffer, SerialSink, SwitchPoint,
};
use crane86::machine::{ClockMode, EngineKind, ExitReason, PcMachine, RunSummary};
use crane86::x86::CpuState;

fn run_demo(
    engine: EngineKind,
    switches: Vec<EngineSwitch>,
    clock: ClockMode,
) -> (RunSummary, CpuState, String) {
    let serial = SerialBuffer::new();
    let config = MachineConfig {
        engine,
        switches,
        clock,
        serial: SerialSink::Buffer(serial.clone()),
        ..MachineConfig::demo(2)
    };
    let mut m = PcMachine::new(config).expect("demo machine");
    let summary = m
        .run()
        .unwrap_or_else(|e| panic!("demo failed: {e}\n{}", serial.text()));
    (summary, m.cpu.clone(), serial.text())
}

fn at(engine: EngineKind, n: u64) -> EngineSwitch {
    EngineSwitch {
        engine,
        at: SwitchPoint::Instructions(n),
    }
}

/// Deterministic (icount) runs: jit → interp → jit, and a run that switches many times,
/// end in exactly the state, output and instruction count of an uninterrupted jit run, and
/// every switch happens at exactly its instruction.
#[test]
fn jit_interp_jit_matches_an_uninterrupted_run() {
    let icount = ClockMode::Icount { shift: 0 };
    let (whole, whole_cpu, whole_out) = run_demo(EngineKind::Jit, vec![], icount);
    assert_eq!(whole.reason, ExitReason::DebugExit(0));
    let total = whole.instructions;
    let plans = [
        vec![
            at(EngineKind::Interp, total / 3),
            at(EngineKind::Jit, 2 * total / 3),
        ],
        (1..12u64)
            .map(|k| {
                let engine = if k % 2 == 1 {
                    EngineKind::Interp
                } else {
                    EngineKind::Jit
                };
                at(engine, k * total / 12 + 7 * k)
            })
            .collect(),
    ];
    for plan in plans {
        let (s, cpu, out) = run_demo(EngineKind::Jit, plan.clone(), icount);
        let expected: Vec<(EngineKind, u64)> = plan
            .iter()
            .map(|sw| match sw.at {
                SwitchPoint::Instructions(n) => (sw.engine, n),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(s.switches, expected, "switches at their exact instructions");
        assert_eq!(s.engine, plan.last().unwrap().engine);
        assert_eq!(out, whole_out, "serial output");
        assert_eq!(s.reason, whole.reason);
        assert_eq!(s.instructions, total, "retired instructions");
        assert_eq!(s.guest_ns, whole.guest_ns, "guest time");
        assert_eq!(cpu, whole_cpu, "final CPU state");
    }
}

/// jit → kvm → jit on the host clock: the demo's output, exit and final registers match an
/// uninterrupted run (the demo does not read the clock into its state).
#[test]
fn jit_kvm_jit_matches_an_uninterrupted_run() {
    if !super::kvm::kvm_here("jit_kvm_jit_matches_an_uninterrupted_run") {
        return;
    }
    let (whole, whole_cpu, whole_out) = run_demo(EngineKind::Jit, vec![], ClockMode::Host);
    let plan = vec![
        at(EngineKind::Kvm, whole.instructions / 4),
        EngineSwitch {
            engine: EngineKind::Jit,
            at: SwitchPoint::AfterTime(std::time::Duration::from_millis(300)),
        },
    ];
    let (s, mut cpu, out) = run_demo(EngineKind::Jit, plan, ClockMode::Host);
    assert_eq!(out, whole_out, "serial output");
    assert_eq!(s.reason, whole.reason);
    assert_eq!(
        s.switches.iter().map(|&(e, _)| e).collect::<Vec<_>>(),
        [EngineKind::Kvm, EngineKind::Jit],
        "both switches happened (the kvm part must take over 300 ms)"
    );
    assert_eq!(s.switches[0].1, whole.instructions / 4);
    assert!(!s.instructions_counted);
    // The TSC offset depends on when the TSC was handed to and taken back from KVM.
    cpu.msr.tsc_offset = whole_cpu.msr.tsc_offset;
    assert_eq!(cpu, whole_cpu, "final CPU state");
}

/// A guest that halts between LAPIC timer interrupts, switched jit ↔ interp at every third
/// instruction under icount (so switches land while it is halted, inside the handler and
/// between STI and HLT): the same exit, instruction count, guest time and final state as
/// an unswitched run.
#[test]
fn switching_while_interrupts_arrive_matches_an_uninterrupted_run() {
    use super::apic::{long_mode_lapic_config, long_mode_lapic_guest, TICKS};
    let image = long_mode_lapic_guest();
    let icount = ClockMode::Icount { shift: 0 };
    let run = |switches: Vec<EngineSwitch>| {
        let config = MachineConfig {
            switches,
            ..long_mode_lapic_config(EngineKind::Jit, image.clone(), icount)
        };
        let mut m = PcMachine::new(config).unwrap();
        let s = m.run().unwrap_or_else(|e| panic!("{e}"));
        (s, m.cpu.clone())
    };
    let (whole, whole_cpu) = run(vec![]);
    assert_eq!(whole.reason, ExitReason::DebugExit(TICKS));
    let points: Vec<EngineSwitch> = (1..whole.instructions / 3)
        .map(|k| {
            at(
                if k % 2 == 1 {
                    EngineKind::Interp
                } else {
                    EngineKind::Jit
                },
                k * 3,
            )
        })
        .collect();
    assert!(points.len() > 5, "{} instructions", whole.instructions);
    let (s, cpu) = run(points.clone());
    assert_eq!(s.switches.len(), points.len(), "every switch was made");
    assert_eq!(s.reason, whole.reason);
    assert_eq!(s.instructions, whole.instructions);
    assert_eq!(s.guest_ns, whole.guest_ns);
    assert_eq!(cpu, whole_cpu, "final CPU state");
}

/// The same guest on the host clock, jit → kvm after 30 instructions → jit after 4 ms: the
/// interrupts keep coming across both switches (halted state, interrupt shadow and a queued
/// interrupt carry over) and the guest ends as an unswitched run does.
#[test]
fn jit_kvm_jit_while_interrupts_arrive() {
    use super::apic::{long_mode_lapic_config, long_mode_lapic_guest, TICKS};
    if !super::kvm::kvm_here("jit_kvm_jit_while_interrupts_arrive") {
        return;
    }
    let image = long_mode_lapic_guest();
    let run = |switches: Vec<EngineSwitch>| {
        let config = MachineConfig {
            switches,
            max_instructions: None,
            ..long_mode_lapic_config(EngineKind::Jit, image.clone(), ClockMode::Host)
        };
        let mut m = PcMachine::new(config).unwrap();
        let s = m.run().unwrap_or_else(|e| panic!("{e}"));
        (s, m.cpu.clone())
    };
    let (whole, whole_cpu) = run(vec![]);
    let plan = vec![
        at(EngineKind::Kvm, 30),
        EngineSwitch {
            engine: EngineKind::Jit,
            at: SwitchPoint::AfterTime(std::time::Duration::from_millis(4)),
        },
    ];
    let (s, mut cpu) = run(plan);
    assert_eq!(whole.reason, ExitReason::DebugExit(TICKS));
    assert_eq!(s.reason, whole.reason);
    assert_eq!(
        s.switches.iter().map(|&(e, _)| e).collect::<Vec<_>>(),
        [EngineKind::Kvm, EngineKind::Jit]
    );
    cpu.msr.tsc_offset = whole_cpu.msr.tsc_offset;
    assert_eq!(cpu, whole_cpu, "final CPU state");
}
