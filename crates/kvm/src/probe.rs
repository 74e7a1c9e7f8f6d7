//! Whether KVM can run guests here, and whether it is hardware virtualization: `/dev/kvm`
//! may exist without VT-x/AMD-V (a software implementation such as kvm_pvm, correct but far
//! slower than the JIT), so `--accel auto` wants both.

use kvm_ioctls::Kvm;
use std::sync::OnceLock;

/// What [`probe`] found.
#[derive(Clone, Debug)]
pub struct KvmProbe {
    /// `Ok` when `/dev/kvm` opens and a VM can be created; else why not.
    pub usable: Result<(), String>,
    /// The host CPU reports hardware virtualization (`vmx` or `svm` in /proc/cpuinfo).
    pub hardware_virtualization: bool,
}

/// Probe once per process.
pub fn probe() -> &'static KvmProbe {
    static PROBE: OnceLock<KvmProbe> = OnceLock::new();
    PROBE.get_or_init(|| KvmProbe {
        usable: Kvm::new()
            .map_err(|e| format!("cannot open /dev/kvm: {e}"))
            .and_then(|kvm| {
                kvm.create_vm()
                    .map(drop)
                    .map_err(|e| format!("/dev/kvm cannot create a VM: {e}"))
            }),
        hardware_virtualization: cpu_has_virtualization(),
    })
}

fn cpu_has_virtualization() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|info| {
            info.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        })
        .unwrap_or(false)
}
