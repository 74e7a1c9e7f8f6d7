//! `CpuState`: the one architectural state every engine reads and writes (`#[repr(C)]` so JIT
//! code can address fields with `std::mem::offset_of!`).

use crate::flags::{self, LazyFlags};
use crate::regs::{cr0, efer};
use crate::segment::{attr, SegReg, Segment, TableReg};
use serde::{Deserialize, Serialize};

/// MSR-backed state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[repr(C)]
pub struct MsrState {
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub fmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub pat: u64,
    pub tsc_aux: u64,
    pub apic_base: u64,
    pub misc_enable: u64,
    pub mtrr_def_type: u64,
    /// FIX64K_00000, FIX16K_80000/A0000, FIX4K_C0000..F8000.
    pub mtrr_fixed: [u64; 11],
    /// PHYSBASE/PHYSMASK pairs.
    pub mtrr_var: [u64; 16],
    /// Guest-visible TSC = clock-derived TSC + tsc_offset.
    pub tsc_offset: u64,
}

/// The operating mode, derived from CR0.PE, EFER.LMA, RFLAGS.VM and CS.L.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuMode {
    Real,
    Protected,
    Virtual8086,
    /// Long mode, compatibility sub-mode (CS.L = 0).
    Compatibility,
    /// Long mode, 64-bit sub-mode.
    Long64,
}

/// Complete architectural state of one x86 CPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(C)]
pub struct CpuState {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15.
    pub gpr: [u64; 16],
    pub rip: u64,
    /// RFLAGS. The arithmetic flags here are stale unless `lazy.op == CcOp::Eflags`; read
    /// them through [`CpuState::rflags`].
    pub rflags: u64,
    pub lazy: LazyFlags,
    /// ES, CS, SS, DS, FS, GS.
    pub seg: [Segment; 6],
    pub ldtr: Segment,
    pub tr: Segment,
    pub gdtr: TableReg,
    pub idtr: TableReg,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub xcr0: u64,
    pub dr: [u64; 8],
    pub msr: MsrState,
    /// x87 FPU, MXCSR and XMM registers.
    pub fpu: crate::fpu::FpuState,
    /// The CPU is halted (HLT) until an interrupt arrives.
    pub halted: bool,
    /// Interrupts are inhibited for one instruction (after STI or MOV SS / POP SS).
    pub interrupt_shadow: bool,
    /// The A20 address line is enabled (otherwise physical bit 20 is forced to 0).
    pub a20: bool,
    /// An external interrupt taken from the interrupt controller (its INTA cycle is done) but
    /// not yet delivered through the IDT: an engine stopped in between (KVM's injection
    /// queue). The next engine to run delivers it before the next instruction.
    pub pending_external: Option<u8>,
    pub _pad: [u8; 3],
}

impl Default for CpuState {
    fn default() -> Self {
        Self::reset()
    }
}

impl CpuState {
    /// The state after RESET (SDM Vol. 3 Table 10-1): real mode, CS:IP = F000:FFF0 with CS
    /// base 0xFFFF0000.
    pub fn reset() -> CpuState {
        let mut seg = [Segment::real_mode(0, false); 6];
        seg[SegReg::Cs as usize] = Segment {
            base: 0xFFFF_0000,
            limit: 0xFFFF,
            selector: 0xF000,
            attr: attr::REAL_MODE_CODE,
        };
        let mut gpr = [0u64; 16];
        // EDX = processor signature (family 6, model 0x3A style, stepping 9 => matches CPUID 1).
        gpr[2] = crate::cpuid::SIGNATURE as u64;
        CpuState {
            gpr,
            rip: 0xFFF0,
            rflags: flags::RESERVED1,
            lazy: LazyFlags::default(),
            seg,
            ldtr: Segment {
                attr: attr::PRESENT | crate::segment::sys_type::LDT as u16,
                limit: 0xFFFF,
                ..Segment::default()
            },
            tr: Segment {
                attr: attr::PRESENT | crate::segment::sys_type::TSS32_BUSY as u16,
                limit: 0xFFFF,
                ..Segment::default()
            },
            gdtr: TableReg {
                base: 0,
                limit: 0xFFFF,
            },
            idtr: TableReg {
                base: 0,
                limit: 0x3FF,
            },
            cr0: cr0::ET | cr0::CD | cr0::NW,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            cr8: 0,
            efer: 0,
            xcr0: 1,
            dr: [0, 0, 0, 0, 0, 0, 0xFFFF_0FF0, 0x400],
            msr: MsrState {
                pat: crate::msr::PAT_DEFAULT,
                apic_base: crate::msr::APIC_BASE_DEFAULT,
                misc_enable: 1,
                ..MsrState::default()
            },
            fpu: crate::fpu::FpuState::reset(),
            halted: false,
            interrupt_shadow: false,
            a20: true,
            pending_external: None,
            _pad: [0; 3],
        }
    }

    /// RFLAGS with the lazily-held arithmetic flags folded in.
    #[inline]
    pub fn rflags(&self) -> u64 {
        if self.lazy.op as u32 == 0 {
            self.rflags
        } else {
            (self.rflags & !flags::ARITH) | self.lazy.arith_flags(self.rflags)
        }
    }

    /// Set RFLAGS wholesale (materialized; clears the lazy record). Bit 1 is forced to 1.
    #[inline]
    pub fn set_rflags(&mut self, value: u64) {
        self.rflags = value | flags::RESERVED1;
        self.lazy.op = flags::CcOp::Eflags;
    }

    /// Fold lazy flags into `rflags` so it can be read or modified bitwise.
    #[inline]
    pub fn materialize_flags(&mut self) {
        let f = self.rflags();
        self.set_rflags(f);
    }

    #[inline]
    pub fn flag(&self, bit: u64) -> bool {
        if bit & flags::ARITH == 0 {
            self.rflags & bit != 0
        } else {
            self.rflags() & bit != 0
        }
    }

    pub fn seg(&self, s: SegReg) -> &Segment {
        &self.seg[s as usize]
    }
    pub fn seg_mut(&mut self, s: SegReg) -> &mut Segment {
        &mut self.seg[s as usize]
    }

    pub fn protected(&self) -> bool {
        self.cr0 & cr0::PE != 0
    }
    pub fn paging(&self) -> bool {
        self.cr0 & cr0::PG != 0
    }
    pub fn long_mode_active(&self) -> bool {
        self.efer & efer::LMA != 0
    }
    pub fn v86(&self) -> bool {
        self.rflags & flags::VM != 0
    }

    pub fn mode(&self) -> CpuMode {
        if !self.protected() {
            CpuMode::Real
        } else if self.long_mode_active() {
            if self.seg[SegReg::Cs as usize].long() {
                CpuMode::Long64
            } else {
                CpuMode::Compatibility
            }
        } else if self.v86() {
            CpuMode::Virtual8086
        } else {
            CpuMode::Protected
        }
    }

    /// Current privilege level: 0 in real mode, 3 in V86 mode, CS.RPL otherwise.
    pub fn cpl(&self) -> u8 {
        if !self.protected() {
            0
        } else if self.v86() {
            3
        } else {
            (self.seg[SegReg::Cs as usize].selector & 3) as u8
        }
    }

    pub fn iopl(&self) -> u8 {
        ((self.rflags & flags::IOPL) >> flags::IOPL_SHIFT) as u8
    }

    /// Code-segment default size in bits: 16, 32 or 64.
    pub fn code_bits(&self) -> u32 {
        let cs = &self.seg[SegReg::Cs as usize];
        if self.long_mode_active() && cs.long() {
            64
        } else if self.protected() && !self.v86() && cs.big() {
            32
        } else {
            16
        }
    }

    /// Stack-address size in bits.
    pub fn stack_bits(&self) -> u32 {
        if self.code_bits() == 64 {
            64
        } else if self.protected() && !self.v86() && self.seg[SegReg::Ss as usize].big() {
            32
        } else {
            16
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_state_is_real_mode_at_reset_vector() {
        let s = CpuState::reset();
        assert_eq!(s.mode(), CpuMode::Real);
        assert_eq!(s.seg(SegReg::Cs).base + s.rip, 0xFFFF_FFF0);
        assert_eq!(s.rflags(), 2);
        assert_eq!(s.code_bits(), 16);
    }
}
