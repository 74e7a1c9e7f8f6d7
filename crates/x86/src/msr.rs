//! Model-specific register numbers crane86 implements.

pub const IA32_TSC: u32 = 0x10;
pub const IA32_APIC_BASE: u32 = 0x1B;
pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
pub const IA32_TSC_ADJUST: u32 = 0x3B;
pub const IA32_BIOS_SIGN_ID: u32 = 0x8B;
pub const IA32_MTRRCAP: u32 = 0xFE;
pub const IA32_ARCH_CAPABILITIES: u32 = 0x10A;
pub const IA32_SYSENTER_CS: u32 = 0x174;
pub const IA32_SYSENTER_ESP: u32 = 0x175;
pub const IA32_SYSENTER_EIP: u32 = 0x176;
pub const IA32_MCG_CAP: u32 = 0x179;
pub const IA32_MCG_STATUS: u32 = 0x17A;
pub const IA32_MISC_ENABLE: u32 = 0x1A0;
/// First variable-range MTRR (PHYSBASE0); PHYSBASEn = 0x200 + 2n, PHYSMASKn = 0x201 + 2n.
pub const IA32_MTRR_PHYSBASE0: u32 = 0x200;
/// Number of variable-range MTRR pairs advertised in MTRRCAP.
pub const MTRR_VAR_COUNT: u32 = 8;
pub const IA32_MTRR_FIX64K_00000: u32 = 0x250;
pub const IA32_MTRR_FIX16K_80000: u32 = 0x258;
pub const IA32_MTRR_FIX16K_A0000: u32 = 0x259;
pub const IA32_MTRR_FIX4K_C0000: u32 = 0x268;
pub const IA32_MTRR_FIX4K_F8000: u32 = 0x26F;
pub const IA32_PAT: u32 = 0x277;
pub const IA32_MTRR_DEF_TYPE: u32 = 0x2FF;
pub const IA32_EFER: u32 = 0xC000_0080;
pub const IA32_STAR: u32 = 0xC000_0081;
pub const IA32_LSTAR: u32 = 0xC000_0082;
pub const IA32_CSTAR: u32 = 0xC000_0083;
pub const IA32_FMASK: u32 = 0xC000_0084;
pub const IA32_FS_BASE: u32 = 0xC000_0100;
pub const IA32_GS_BASE: u32 = 0xC000_0101;
pub const IA32_KERNEL_GS_BASE: u32 = 0xC000_0102;
pub const IA32_TSC_AUX: u32 = 0xC000_0103;

/// Power-on value of IA32_PAT.
pub const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;
/// Default APIC base: 0xFEE00000, enabled, BSP.
pub const APIC_BASE_DEFAULT: u64 = 0xFEE0_0000 | (1 << 11) | (1 << 8);
