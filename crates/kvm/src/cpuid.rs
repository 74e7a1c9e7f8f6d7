//! The CPUID table a KVM vCPU gets: crane86's CPU model (the same leaves the interpreter and
//! the JIT answer, so a guest can move between engines without features appearing or
//! vanishing), with every feature bit also required in `KVM_GET_SUPPORTED_CPUID` (what this
//! host and KVM can actually run).
//!
//! IA32_ARCH_CAPABILITIES (CPUID.7:EDX[29]) stays when KVM supports it, and KVM answers the
//! MSR itself with the host's value: under KVM the guest runs on the host CPU's speculation,
//! so crane86's "immune to all" value (`crane86_x86::cpuid::ARCH_CAPABILITIES`) does not apply.
//!
//! Removed on top of the intersection:
//! - TSC-deadline (CPUID.1:ECX[24]): with the interrupt controller in userspace KVM keeps
//!   IA32_TSC_DEADLINE itself and never tells crane86's LAPIC, so a guest that armed it
//!   would wait forever; Linux then uses the LAPIC timer's one-shot mode through MMIO.
//! - Leaves 0x15/0x16 (TSC and crystal frequency) unless the vCPU TSC was set to crane86's
//!   1 GHz: otherwise they would misstate the rate and the guest must calibrate.

use crane86_x86::cpuid::{cpuid, ecx1, CpuModel};
use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// The leaves (and sub-leaves) crane86's model answers.
const LEAVES: &[(u32, u32)] = &[
    (0, 0),
    (1, 0),
    (7, 0),
    (0xD, 0),
    (0xD, 1),
    (0x15, 0),
    (0x16, 0),
    (0x8000_0000, 0),
    (0x8000_0001, 0),
    (0x8000_0002, 0),
    (0x8000_0003, 0),
    (0x8000_0004, 0),
    (0x8000_0008, 0),
];

/// Which registers of a leaf are feature bits (intersected with KVM's), as [EAX, EBX, ECX,
/// EDX]; the other registers are identification (vendor, signature, brand, sizes) and come
/// from crane86's model.
fn feature_mask(leaf: u32, subleaf: u32) -> [bool; 4] {
    match (leaf, subleaf) {
        (1, _) => [false, false, true, true],
        (7, 0) => [false, true, true, true],
        (0xD, 0) => [true, false, false, true],
        (0xD, 1) => [true, false, false, false],
        (0x8000_0001, _) => [false, false, true, true],
        _ => [false; 4],
    }
}

/// Build the vCPU's CPUID entries from `supported` (KVM_GET_SUPPORTED_CPUID).
pub fn vcpu_cpuid(supported: &[kvm_cpuid_entry2], tsc_is_1ghz: bool) -> Vec<kvm_cpuid_entry2> {
    let mut model = CpuModel::default();
    model.ecx1 &= !ecx1::TSC_DEADLINE;
    let host = |leaf: u32, subleaf: u32| {
        supported
            .iter()
            .find(|e| e.function == leaf && (e.index == subleaf || e.flags == 0))
            .map(|e| [e.eax, e.ebx, e.ecx, e.edx])
    };
    let mut out = Vec::new();
    for &(leaf, subleaf) in LEAVES {
        if matches!(leaf, 0x15 | 0x16) && !tsc_is_1ghz {
            continue;
        }
        let mut regs = cpuid(&model, leaf, subleaf, 0, false);
        let mask = feature_mask(leaf, subleaf);
        let kvm = host(leaf, subleaf).unwrap_or([0; 4]);
        for r in 0..4 {
            if mask[r] {
                regs[r] &= kvm[r];
            }
        }
        if leaf == 1 {
            // KVM does not report the hypervisor bit as supported; crane86 sets it always.
            regs[2] |= model.ecx1 & ecx1::HYPERVISOR;
        }
        if leaf == 0x8000_0008 {
            // No more physical address bits than the host has.
            let host_bits = kvm[0] & 0xFF;
            if host_bits != 0 && host_bits < regs[0] & 0xFF {
                regs[0] = (regs[0] & !0xFF) | host_bits;
            }
        }
        out.push(kvm_cpuid_entry2 {
            function: leaf,
            index: subleaf,
            flags: if matches!(leaf, 7 | 0xD) {
                KVM_CPUID_FLAG_SIGNIFCANT_INDEX
            } else {
                0
            },
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            padding: [0; 3],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, r: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            flags: 0,
            eax: r[0],
            ebx: r[1],
            ecx: r[2],
            edx: r[3],
            padding: [0; 3],
        }
    }

    #[test]
    fn features_are_the_intersection_and_identification_is_crane86s() {
        // A host without SSE4.2 (ECX bit 20) but with AVX (bit 28) and x2APIC (bit 21).
        let supported = [
            entry(0, 0, [0xD, 0x6874_7541, 0x444D_4163, 0x6974_6E65]),
            entry(1, 0, [0xA20F10, 0, !(1 << 20), u32::MAX]),
            entry(0x8000_0008, 0, [0x3027, 0, 0, 0]),
        ];
        let table = vcpu_cpuid(&supported, false);
        let get = |f: u32| {
            table
                .iter()
                .find(|e| e.function == f)
                .expect("leaf present")
        };
        let ours = cpuid(&CpuModel::default(), 1, 0, 0, false);
        let l1 = get(1);
        assert_eq!(l1.eax, ours[0], "signature from crane86's model");
        assert_eq!(l1.ecx & (1 << 20), 0, "SSE4.2 missing on the host");
        assert_eq!(l1.ecx & (1 << 28), 0, "AVX is not in crane86's model");
        assert_eq!(l1.ecx & (1 << 21), 0, "x2APIC is not in crane86's model");
        assert_eq!(
            l1.ecx & ecx1::TSC_DEADLINE,
            0,
            "no TSC-deadline with a userspace LAPIC"
        );
        assert_ne!(l1.ecx & ecx1::SSE41, 0);
        assert_ne!(l1.ecx & ecx1::HYPERVISOR, 0);
        assert_eq!(
            get(0).ebx,
            u32::from_le_bytes(*b"Genu"),
            "vendor from crane86's model"
        );
        assert_eq!(
            get(0x8000_0008).eax & 0xFF,
            0x27,
            "host physical address width"
        );
        assert!(
            table.iter().all(|e| e.function != 0x15),
            "TSC rate not claimed"
        );
        // Leaf 7 is absent from this host's list: no leaf-7 features.
        assert_eq!(get(7).ebx, 0);
    }
}
