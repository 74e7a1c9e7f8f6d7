//! The KVM engine's adapter to the [`Engine`] trait: a time slice from the instruction
//! budget, KVM's exits mapped to [`EngineExit`], failures kept for
//! [`Engine::take_failure`], and the KVM counters for `--stats`.

use super::{Engine, EngineExit, EngineKind, EngineStats, HOST_INSNS_PER_US};
use crate::error::MachineError;
use crane86_devices::Platform;
use crane86_kvm::{KvmExit, KvmVcpu};
use crane86_memory::PhysMem;
use crane86_x86::{CpuState, Exception, Vector};
use std::time::Duration;

/// Shortest and longest KVM time slice.
const MIN_SLICE: Duration = Duration::from_micros(50);
const MAX_SLICE: Duration = Duration::from_millis(10);

pub struct KvmEngine {
    vcpu: KvmVcpu,
    failure: Option<String>,
}

impl KvmEngine {
    pub fn new() -> Result<KvmEngine, MachineError> {
        let vcpu = KvmVcpu::new().map_err(|e| MachineError::EngineUnavailable {
            engine: EngineKind::Kvm,
            reason: e.to_string(),
        })?;
        Ok(KvmEngine {
            vcpu,
            failure: None,
        })
    }
}

impl Engine for KvmEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Kvm
    }

    fn run(
        &mut self,
        cpu: &mut CpuState,
        mem: &mut PhysMem,
        plat: &mut dyn Platform,
        budget: u64,
    ) -> EngineExit {
        let slice = Duration::from_micros(budget / HOST_INSNS_PER_US).clamp(MIN_SLICE, MAX_SLICE);
        match self.vcpu.run(cpu, mem, plat, slice) {
            Ok(KvmExit::SliceEnd) => EngineExit::Budget,
            Ok(KvmExit::Halted) => EngineExit::Halted,
            Ok(KvmExit::Action(a)) => EngineExit::Action(a),
            // KVM reports a shutdown without the exception that caused it.
            Ok(KvmExit::TripleFault) => {
                EngineExit::TripleFault(Exception::with_code(Vector::DoubleFault, 0))
            }
            Err(e) => {
                self.failure = Some(e.to_string());
                EngineExit::Failed
            }
        }
    }

    fn instructions(&self) -> u64 {
        0
    }

    fn reset_caches(&mut self) {}

    fn stats(&self) -> EngineStats {
        let s = self.vcpu.stats;
        vec![
            ("KVM_RUN calls", s.runs.to_string()),
            ("port I/O exits", s.io_exits.to_string()),
            ("MMIO exits", s.mmio_exits.to_string()),
            ("HLT exits", s.hlt_exits.to_string()),
            ("interrupts injected", s.interrupts_injected.to_string()),
            ("slice-end kicks", s.slice_kicks.to_string()),
            ("full state loads into KVM", s.state_loads.to_string()),
            (
                "TSC rate",
                if self.vcpu.tsc_is_1ghz() {
                    "1 GHz (as the other engines)".to_string()
                } else {
                    "host rate (KVM cannot scale it here)".to_string()
                },
            ),
            (
                "TSC carried between engines",
                if self.vcpu.tsc_writable() {
                    "yes"
                } else {
                    "no (this KVM ignores TSC writes)"
                }
                .to_string(),
            ),
        ]
    }

    fn take_failure(&mut self) -> Option<String> {
        self.failure.take()
    }
}
