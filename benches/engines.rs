//! Guest throughput of every available engine on the built-in demo workload (real mode →
//! long mode, sieve, FNV-1a, memcpy, recursive fib, page faults). Criterion reports the
//! throughput in elements per second where one element is one retired guest instruction, so
//! "Melem/s" reads as guest MIPS. The workload's instruction count comes from the
//! interpreter (the demo takes no interrupts, so the count is the same on every engine);
//! kvm, which cannot count instructions, is measured against that count too.

use crane86::machine::config::{MachineConfig, SerialSink};
use crane86::machine::{EngineKind, ExitReason, PcMachine};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Workload iterations per measured run (about 1.4 M instructions each).
const ITERATIONS: u64 = 5;

fn demo_config(engine: EngineKind) -> MachineConfig {
    MachineConfig {
        engine,
        serial: SerialSink::None,
        ..MachineConfig::demo(ITERATIONS)
    }
}

/// Run the demo once; returns the retired instruction count.
fn run_demo(config: &MachineConfig) -> u64 {
    let mut m = PcMachine::new(config.clone()).expect("demo machine builds");
    let summary = m.run().expect("demo runs");
    assert_eq!(
        summary.reason,
        ExitReason::DebugExit(0),
        "demo self-check failed"
    );
    summary.instructions
}

fn engines(c: &mut Criterion) {
    let mut group = c.benchmark_group("demo-guest");
    group.sample_size(10);
    let instructions = run_demo(&demo_config(EngineKind::Interp));
    group.throughput(Throughput::Elements(instructions));
    for engine in EngineKind::available() {
        let config = demo_config(engine);
        group.bench_function(engine.name(), |b| b.iter(|| run_demo(&config)));
    }
    group.finish();
}

criterion_group!(benches, engines);
criterion_main!(benches);
