//! The demo guest runs to completion on every engine, prints its expected lines, and exits
//! with status 0 through `demo::exit_status`.

use crane86::machine::config::{MachineConfig, SerialBuffer, SerialSink};
use crane86::machine::demo;
use crane86::machine::{EngineKind, ExitReason, PcMachine};

fn run_demo(engine: EngineKind, iterations: u64) -> (crane86::machine::RunSummary, String) {
    let serial = SerialBuffer::new();
    let config = MachineConfig {
        engine,
        serial: SerialSink::Buffer(serial.clone()),
        max_instructions: Some(500_000_000),
        ..MachineConfig::demo(iterations)
    };
    let mut m = PcMachine::new(config).expect("demo machine builds");
    let summary = match m.run() {
        Ok(s) => s,
        Err(e) => panic!(
            "{engine}: demo failed: {e}\nserial output:\n{}",
            serial.text()
        ),
    };
    (summary, serial.text())
}

#[test]
fn demo_passes_on_every_engine() {
    for engine in EngineKind::emulators() {
        for iterations in [1, 3] {
            let (summary, out) = run_demo(engine, iterations);
            let lines: Vec<&str> = out.lines().collect();
            let expected = demo::expected_lines(iterations);
            assert_eq!(
                lines, expected,
                "{engine} iterations {iterations}: output\n{out}"
            );
            assert_eq!(summary.reason, ExitReason::DebugExit(0), "{engine}\n{out}");
            assert_eq!(demo::exit_status(&summary), 0);
            assert!(
                summary.instructions > 100_000,
                "{engine}: {}",
                summary.instructions
            );
        }
    }
}

#[test]
fn demo_under_icount_is_deterministic() {
    let run = || {
        let config = MachineConfig {
            serial: SerialSink::None,
            clock: crane86::machine::ClockMode::Icount { shift: 2 },
            ..MachineConfig::demo(1)
        };
        PcMachine::new(config).unwrap().run().unwrap()
    };
    let (a, b) = (run(), run());
    assert_eq!(a.reason, ExitReason::DebugExit(0));
    assert_eq!((a.instructions, a.guest_ns), (b.instructions, b.guest_ns));
    assert_eq!(
        a.guest_ns,
        a.instructions << 2,
        "no halts: guest time is 4 ns per insn"
    );
}

/// The differential check between engines: the same deterministic run (icount clock) ends in
/// the same architectural state, the same output and the same instruction count on every
/// engine as on the interpreter.
#[test]
fn demo_ends_in_the_same_state_on_every_engine() {
    let run = |engine: EngineKind| {
        let serial = SerialBuffer::new();
        let config = MachineConfig {
            engine,
            serial: SerialSink::Buffer(serial.clone()),
            clock: crane86::machine::ClockMode::Icount { shift: 0 },
            ..MachineConfig::demo(3)
        };
        let mut m = PcMachine::new(config).unwrap();
        let summary = m.run().unwrap();
        (
            summary.reason,
            summary.instructions,
            m.cpu.clone(),
            serial.text(),
        )
    };
    let reference = run(EngineKind::Interp);
    assert_eq!(reference.0, ExitReason::DebugExit(0));
    for engine in EngineKind::emulators() {
        let other = run(engine);
        assert_eq!(other.0, reference.0, "{engine}: exit");
        assert_eq!(other.1, reference.1, "{engine}: retired instructions");
        assert_eq!(other.3, reference.3, "{engine}: serial output");
        assert_eq!(other.2, reference.2, "{engine}: final CPU state");
    }
}
