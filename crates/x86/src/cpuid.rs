//! The CPUID model: one consistent description of the CPU that advertises only what crane86
//! implements. Engines call [`cpuid`]; the KVM engine intersects it with the host.

/// CPUID.1:EAX processor signature: family 6, model 0x3A (Ivy Bridge style), stepping 9.
pub const SIGNATURE: u32 = 0x0003_06A9;

/// The TSC and core-crystal frequency reported in leaf 0x15 (guest time is 1 ns per tick).
pub const TSC_HZ: u32 = 1_000_000_000;
const TSC_MHZ: u32 = TSC_HZ / 1_000_000;

/// XCR0 components the model supports: x87 (bit 0) and SSE (bit 1).
pub const XSAVE_FEATURES: u32 = 0b11;
/// Bytes of an XSAVE area for [`XSAVE_FEATURES`]: the 512-byte legacy region and the
/// 64-byte header.
pub const XSAVE_AREA_SIZE: u32 = 512 + 64;

/// CPUID.1:EDX features.
pub mod edx1 {
    pub const FPU: u32 = 1 << 0;
    pub const VME: u32 = 1 << 1;
    pub const DE: u32 = 1 << 2;
    pub const PSE: u32 = 1 << 3;
    pub const TSC: u32 = 1 << 4;
    pub const MSR: u32 = 1 << 5;
    pub const PAE: u32 = 1 << 6;
    pub const CX8: u32 = 1 << 8;
    pub const APIC: u32 = 1 << 9;
    pub const SEP: u32 = 1 << 11;
    pub const MTRR: u32 = 1 << 12;
    pub const PGE: u32 = 1 << 13;
    pub const CMOV: u32 = 1 << 15;
    pub const PAT: u32 = 1 << 16;
    pub const PSE36: u32 = 1 << 17;
    pub const CLFSH: u32 = 1 << 19;
    pub const MMX: u32 = 1 << 23;
    pub const FXSR: u32 = 1 << 24;
    pub const SSE: u32 = 1 << 25;
    pub const SSE2: u32 = 1 << 26;
}

/// CPUID.1:ECX features.
pub mod ecx1 {
    pub const SSE3: u32 = 1 << 0;
    pub const SSSE3: u32 = 1 << 9;
    pub const CX16: u32 = 1 << 13;
    pub const SSE41: u32 = 1 << 19;
    pub const SSE42: u32 = 1 << 20;
    pub const MOVBE: u32 = 1 << 22;
    pub const POPCNT: u32 = 1 << 23;
    /// LAPIC timer TSC-deadline mode (IA32_TSC_DEADLINE, MSR 0x6E0).
    pub const TSC_DEADLINE: u32 = 1 << 24;
    pub const XSAVE: u32 = 1 << 26;
    pub const OSXSAVE: u32 = 1 << 27;
    pub const HYPERVISOR: u32 = 1 << 31;
}

/// CPUID.80000001:EDX / ECX features.
pub mod ext1 {
    pub const EDX_SYSCALL: u32 = 1 << 11;
    pub const EDX_NX: u32 = 1 << 20;
    pub const EDX_PDPE1GB: u32 = 1 << 26;
    pub const EDX_RDTSCP: u32 = 1 << 27;
    pub const EDX_LM: u32 = 1 << 29;
    pub const ECX_LAHF_LM: u32 = 1 << 0;
    pub const ECX_ABM: u32 = 1 << 5;
}

/// CPUID.7.0:EBX features.
pub mod ebx7 {
    pub const BMI1: u32 = 1 << 3;
    pub const ERMS: u32 = 1 << 9;
}

/// CPUID.7.0:EDX features.
pub mod edx7 {
    /// IA32_ARCH_CAPABILITIES (MSR 0x10A) exists; its value is [`super::ARCH_CAPABILITIES`].
    pub const ARCH_CAPABILITIES: u32 = 1 << 29;
}

/// The IA32_ARCH_CAPABILITIES value of the emulated CPU: it executes nothing speculatively
/// and has no fill, store or load buffers shared between privilege levels, so it is immune
/// to every transient-execution attack these bits name, and says so. A guest kernel then
/// leaves out the mitigations that cost on every kernel entry (page-table isolation's CR3
/// switches, buffer clearing with VERW, indirect-branch thunks for ITS). Under KVM the guest
/// runs on the host CPU, so that engine leaves this MSR to KVM, which reports the host's.
pub const ARCH_CAPABILITIES: u64 = arch_cap::RDCL_NO
    | arch_cap::SSB_NO
    | arch_cap::MDS_NO
    | arch_cap::PSCHANGE_MC_NO
    | arch_cap::TAA_NO
    | arch_cap::SBDR_SSDP_NO
    | arch_cap::FBSDP_NO
    | arch_cap::PSDP_NO
    | arch_cap::BHI_NO
    | arch_cap::PBRSB_NO
    | arch_cap::GDS_NO
    | arch_cap::RFDS_NO
    | arch_cap::ITS_NO;

/// IA32_ARCH_CAPABILITIES bits (Intel SDM vol. 4, table 2-2).
pub mod arch_cap {
    /// Not susceptible to rogue data cache load (Meltdown).
    pub const RDCL_NO: u64 = 1 << 0;
    /// Not susceptible to speculative store bypass.
    pub const SSB_NO: u64 = 1 << 4;
    /// Not susceptible to microarchitectural data sampling.
    pub const MDS_NO: u64 = 1 << 5;
    /// No machine check on a page-size change without a TLB invalidation.
    pub const PSCHANGE_MC_NO: u64 = 1 << 6;
    /// Not susceptible to TSX asynchronous abort.
    pub const TAA_NO: u64 = 1 << 8;
    /// Not susceptible to shared-buffers data read / sideband stale data propagator.
    pub const SBDR_SSDP_NO: u64 = 1 << 13;
    /// Not susceptible to fill-buffer stale data propagator.
    pub const FBSDP_NO: u64 = 1 << 14;
    /// Not susceptible to primary stale data propagator.
    pub const PSDP_NO: u64 = 1 << 15;
    /// Not susceptible to branch history injection.
    pub const BHI_NO: u64 = 1 << 20;
    /// Not susceptible to post-barrier return stack buffer predictions.
    pub const PBRSB_NO: u64 = 1 << 24;
    /// Not susceptible to gather data sampling.
    pub const GDS_NO: u64 = 1 << 26;
    /// Not susceptible to register file data sampling.
    pub const RFDS_NO: u64 = 1 << 27;
    /// Not susceptible to indirect target selection.
    pub const ITS_NO: u64 = 1 << 62;
}

/// Feature set of the CPU model: the feature words of CPUID leaves 1, 7 and 0x80000001.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuModel {
    pub edx1: u32,
    pub ecx1: u32,
    pub ext_edx: u32,
    pub ext_ecx: u32,
    pub ebx7: u32,
    pub edx7: u32,
}

impl Default for CpuModel {
    fn default() -> Self {
        use edx1::*;
        CpuModel {
            // VME is not advertised: the virtual-8086 mode extensions (CR4.VME/PVI) are not
            // implemented.
            edx1: FPU
                | DE
                | PSE
                | TSC
                | MSR
                | PAE
                | CX8
                | APIC
                | SEP
                | MTRR
                | PGE
                | CMOV
                | PAT
                | PSE36
                | CLFSH
                | MMX
                | FXSR
                | SSE
                | SSE2,
            ecx1: ecx1::SSE3
                | ecx1::SSSE3
                | ecx1::CX16
                | ecx1::SSE41
                | ecx1::SSE42
                | ecx1::POPCNT
                | ecx1::MOVBE
                | ecx1::TSC_DEADLINE
                | ecx1::XSAVE
                | ecx1::HYPERVISOR,
            ext_edx: ext1::EDX_SYSCALL | ext1::EDX_NX | ext1::EDX_RDTSCP | ext1::EDX_LM,
            ext_ecx: ext1::ECX_LAHF_LM | ext1::ECX_ABM,
            ebx7: ebx7::BMI1 | ebx7::ERMS,
            edx7: edx7::ARCH_CAPABILITIES,
        }
    }
}

fn ascii4(s: &[u8]) -> u32 {
    u32::from_le_bytes([s[0], s[1], s[2], s[3]])
}

/// Execute CPUID for `leaf`/`subleaf` with the given model. Returns [EAX, EBX, ECX, EDX].
/// `apic_id` goes in CPUID.1:EBX[31:24]; `osxsave` reflects CR4.OSXSAVE.
pub fn cpuid(model: &CpuModel, leaf: u32, subleaf: u32, apic_id: u8, osxsave: bool) -> [u32; 4] {
    const VENDOR: &[u8; 12] = b"GenuineIntel";
    const MAX_BASIC: u32 = 0x16;
    const MAX_EXT: u32 = 0x8000_0008;
    match leaf {
        0 => [
            MAX_BASIC,
            ascii4(&VENDOR[0..4]),
            ascii4(&VENDOR[8..12]),
            ascii4(&VENDOR[4..8]),
        ],
        1 => {
            let mut ecx = model.ecx1;
            if osxsave && ecx & ecx1::XSAVE != 0 {
                ecx |= ecx1::OSXSAVE;
            }
            // EBX: brand 0, CLFLUSH line size 8 (x8 = 64 bytes), 1 logical CPU, APIC id.
            let ebx = (8 << 8) | (1 << 16) | (u32::from(apic_id) << 24);
            [SIGNATURE, ebx, ecx, model.edx1]
        }
        7 if subleaf == 0 => [0, model.ebx7, 0, model.edx7],
        // XSAVE: the x87 and SSE components in the standard format (legacy region + header,
        // 576 bytes); none of XSAVEOPT/XSAVEC/XGETBV1/XSAVES (sub-leaf 1 is zero).
        0xD if subleaf == 0 && model.ecx1 & ecx1::XSAVE != 0 => {
            [XSAVE_FEATURES, XSAVE_AREA_SIZE, XSAVE_AREA_SIZE, 0]
        }
        // TSC / core crystal: the TSC counts guest ns (1 GHz) from a 1 GHz crystal with ratio
        // 1/1, so a kernel knows the TSC and LAPIC timer rates without calibrating them.
        0x15 => [1, 1, TSC_HZ, 0],
        // Processor base, maximum and bus frequency in MHz.
        0x16 => [TSC_MHZ, TSC_MHZ, TSC_MHZ, 0],
        0x8000_0000 => [MAX_EXT, 0, 0, 0],
        0x8000_0001 => [0, 0, model.ext_ecx, model.ext_edx],
        0x8000_0002..=0x8000_0004 => {
            const BRAND: &[u8; 48] = b"crane86 virtual CPU                             ";
            let off = ((leaf - 0x8000_0002) * 16) as usize;
            let w = |i: usize| ascii4(&BRAND[off + i * 4..off + i * 4 + 4]);
            [w(0), w(1), w(2), w(3)]
        }
        // Physical address bits 40, linear 48.
        0x8000_0008 => [0x3028, 0, 0, 0],
        _ => [0, 0, 0, 0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_string() {
        let r = cpuid(&CpuModel::default(), 0, 0, 0, false);
        let mut v = Vec::new();
        for w in [r[1], r[3], r[2]] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        assert_eq!(&v, b"GenuineIntel");
    }

    #[test]
    fn arch_capabilities_is_advertised_and_claims_no_meltdown_or_mds() {
        let r = cpuid(&CpuModel::default(), 7, 0, 0, false);
        assert_ne!(r[3] & edx7::ARCH_CAPABILITIES, 0);
        assert_ne!(ARCH_CAPABILITIES & arch_cap::RDCL_NO, 0);
        assert_ne!(ARCH_CAPABILITIES & arch_cap::MDS_NO, 0);
        // IBRS_ALL (bit 1) would promise IA32_SPEC_CTRL, which is not modelled.
        assert_eq!(ARCH_CAPABILITIES & (1 << 1), 0);
    }

    #[test]
    fn vme_not_advertised() {
        let r = cpuid(&CpuModel::default(), 1, 0, 0, false);
        assert_eq!(r[3] & edx1::VME, 0, "CR4.VME/PVI are not implemented");
        assert_ne!(r[3] & edx1::SEP, 0, "SYSENTER/SYSEXIT are implemented");
    }

    #[test]
    fn only_implemented_floating_point_units_are_advertised() {
        let r = cpuid(&CpuModel::default(), 1, 0, 0, false);
        assert_ne!(r[3] & edx1::FPU, 0, "the x87 FPU is implemented");
        assert_ne!(r[3] & edx1::SSE2, 0, "SSE2 is implemented");
        assert_eq!(r[2] & (1 << 28), 0, "AVX is not implemented");
    }
}
