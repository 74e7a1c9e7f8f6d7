//! Model-specific registers and the fast system-call instructions: RDMSR/WRMSR over the MSRs
//! listed in `crane86_x86::msr` (backed by `MsrState`, EFER, the FS/GS bases and the TSC
//! offset), SYSCALL/SYSRET (64-bit, and the legacy-mode form) and SYSENTER/SYSEXIT.

use crate::cpu::Cpu;
use crate::exec::Handler;
use crate::ops::system::require_cpl0;
use crane86_devices::lapic::IA32_TSC_DEADLINE;
use crane86_x86::cpuid::{self, edx7};
use crane86_x86::flags;
use crane86_x86::msr::*;
use crane86_x86::regs::efer;
use crane86_x86::regs::gpr::{RAX, RCX, RDX, RSP};
use crane86_x86::segment::{attr, Segment};
use crane86_x86::{Exception, SegReg};
use iced_x86::{Code, Instruction, Mnemonic};

pub fn handler(i: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match i.mnemonic() {
        Rdmsr => rdmsr,
        Wrmsr => wrmsr,
        Syscall => syscall,
        Sysret | Sysretq => sysret,
        Sysenter => sysenter,
        Sysexit | Sysexitq => sysexit,
        _ => return None,
    })
}

#[inline]
fn canonical(v: u64) -> bool {
    ((v as i64) << 16 >> 16) as u64 == v
}

/// Physical-address bits above MAXPHYADDR (40), reserved in MTRR/APIC base values.
const ABOVE_MAXPHYADDR: u64 = !((1u64 << 40) - 1);

/// Memory types valid in PAT entries (UC, WC, WT, WP, WB, UC-).
fn valid_pat_type(t: u8) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6 | 7)
}

/// Memory types valid in MTRRs (UC, WC, WT, WP, WB).
fn valid_mtrr_type(t: u8) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6)
}

/// MTRRCAP: 8 variable ranges, fixed ranges supported (bit 8), write-combining (bit 10).
const MTRRCAP_VALUE: u64 = MTRR_VAR_COUNT as u64 | (1 << 8) | (1 << 10);

fn fixed_mtrr_index(msr: u32) -> Option<usize> {
    match msr {
        IA32_MTRR_FIX64K_00000 => Some(0),
        IA32_MTRR_FIX16K_80000 => Some(1),
        IA32_MTRR_FIX16K_A0000 => Some(2),
        IA32_MTRR_FIX4K_C0000..=IA32_MTRR_FIX4K_F8000 => {
            Some(3 + (msr - IA32_MTRR_FIX4K_C0000) as usize)
        }
        _ => None,
    }
}

fn var_mtrr_index(msr: u32) -> Option<usize> {
    let last = IA32_MTRR_PHYSBASE0 + 2 * MTRR_VAR_COUNT - 1;
    (IA32_MTRR_PHYSBASE0..=last)
        .contains(&msr)
        .then(|| (msr - IA32_MTRR_PHYSBASE0) as usize)
}

impl Cpu<'_> {
    /// RDMSR semantics: the value of `msr`, or #GP(0) for an MSR crane86 does not model.
    pub fn read_msr(&mut self, msr: u32) -> Result<u64, Exception> {
        let m = &self.s.msr;
        Ok(match msr {
            IA32_TSC => self.tsc(),
            IA32_APIC_BASE => m.apic_base,
            // Locked, VMX off.
            IA32_FEATURE_CONTROL => 1,
            IA32_BIOS_SIGN_ID => 0,
            IA32_MTRRCAP => MTRRCAP_VALUE,
            IA32_ARCH_CAPABILITIES if self.model.edx7 & edx7::ARCH_CAPABILITIES != 0 => {
                cpuid::ARCH_CAPABILITIES
            }
            IA32_SYSENTER_CS => m.sysenter_cs,
            IA32_SYSENTER_ESP => m.sysenter_esp,
            IA32_SYSENTER_EIP => m.sysenter_eip,
            // No machine-check banks.
            IA32_MCG_CAP | IA32_MCG_STATUS => 0,
            IA32_MISC_ENABLE => m.misc_enable,
            IA32_PAT => m.pat,
            IA32_MTRR_DEF_TYPE => m.mtrr_def_type,
            IA32_EFER => self.s.efer,
            IA32_STAR => m.star,
            IA32_LSTAR => m.lstar,
            IA32_CSTAR => m.cstar,
            IA32_FMASK => m.fmask,
            IA32_FS_BASE => self.s.seg[SegReg::Fs as usize].base,
            IA32_GS_BASE => self.s.seg[SegReg::Gs as usize].base,
            IA32_KERNEL_GS_BASE => m.kernel_gs_base,
            IA32_TSC_AUX => m.tsc_aux,
            _ => {
                if let Some(k) = fixed_mtrr_index(msr) {
                    m.mtrr_fixed[k]
                } else if let Some(k) = var_mtrr_index(msr) {
                    m.mtrr_var[k]
                } else if let Some(v) = self.platform_msr_read(msr) {
                    v
                } else {
                    tracing::warn!(
                        msr = format_args!("{msr:#x}"),
                        "RDMSR of an unimplemented MSR: raising #GP(0)"
                    );
                    return Err(Exception::gp0());
                }
            }
        })
    }

    /// An MSR the platform models (the LAPIC's IA32_TSC_DEADLINE). The platform counts guest
    /// ns; the guest sees TSC units (ns plus the TSC offset).
    fn platform_msr_read(&mut self, msr: u32) -> Option<u64> {
        self.sync_platform_time();
        let v = self.plat.read_msr(msr)?;
        Some(if msr == IA32_TSC_DEADLINE && v != 0 {
            v.wrapping_add(self.s.msr.tsc_offset)
        } else {
            v
        })
    }

    /// WRMSR to a platform MSR; true if the platform claimed it. Ends the block so a timer
    /// the write re-armed is noticed at once.
    fn platform_msr_write(&mut self, msr: u32, v: u64) -> bool {
        self.sync_platform_time();
        let v = if msr == IA32_TSC_DEADLINE && v != 0 {
            v.wrapping_sub(self.s.msr.tsc_offset).max(1)
        } else {
            v
        };
        let claimed = self.plat.write_msr(msr, v);
        self.step.action |= claimed;
        claimed
    }

    /// WRMSR semantics, with the reserved-bit and canonical checks of each MSR.
    pub fn write_msr(&mut self, msr: u32, v: u64) -> Result<(), Exception> {
        let gp = Err(Exception::gp0());
        match msr {
            IA32_TSC => {
                let now = self.tsc().wrapping_sub(self.s.msr.tsc_offset);
                self.s.msr.tsc_offset = v.wrapping_sub(now);
            }
            IA32_APIC_BASE => {
                // Bits 0-7, 9, 10 (x2APIC is not offered) and above MAXPHYADDR are reserved.
                if v & (0x6FF | ABOVE_MAXPHYADDR) != 0 {
                    return gp;
                }
                if v & !0xFFF != 0xFEE0_0000 || v & (1 << 11) == 0 {
                    tracing::warn!(
                        value = format_args!("{v:#x}"),
                        "IA32_APIC_BASE: relocating or globally disabling the LAPIC is not modelled; it stays enabled at 0xFEE00000"
                    );
                }
                self.s.msr.apic_base = v;
            }
            // Updating microcode is accepted and ignored.
            IA32_BIOS_SIGN_ID => {}
            IA32_SYSENTER_CS => self.s.msr.sysenter_cs = v & 0xFFFF_FFFF,
            IA32_SYSENTER_ESP | IA32_SYSENTER_EIP | IA32_LSTAR | IA32_CSTAR
            | IA32_KERNEL_GS_BASE | IA32_FS_BASE | IA32_GS_BASE
                if !canonical(v) =>
            {
                return gp
            }
            IA32_SYSENTER_ESP => self.s.msr.sysenter_esp = v,
            IA32_SYSENTER_EIP => self.s.msr.sysenter_eip = v,
            IA32_MCG_STATUS if v == 0 => {}
            IA32_MISC_ENABLE => self.s.msr.misc_enable = v,
            IA32_PAT => {
                if v.to_le_bytes().iter().any(|&t| !valid_pat_type(t)) {
                    return gp;
                }
                self.s.msr.pat = v;
            }
            IA32_MTRR_DEF_TYPE => {
                if v & !0xCFF != 0 || !valid_mtrr_type(v as u8) {
                    return gp;
                }
                self.s.msr.mtrr_def_type = v;
            }
            IA32_EFER => self.write_efer(v)?,
            IA32_STAR => self.s.msr.star = v,
            IA32_LSTAR => self.s.msr.lstar = v,
            IA32_CSTAR => self.s.msr.cstar = v,
            IA32_FMASK => self.s.msr.fmask = v & 0xFFFF_FFFF,
            IA32_FS_BASE => self.s.seg[SegReg::Fs as usize].base = v,
            IA32_GS_BASE => self.s.seg[SegReg::Gs as usize].base = v,
            IA32_KERNEL_GS_BASE => self.s.msr.kernel_gs_base = v,
            IA32_TSC_AUX => {
                if v >> 32 != 0 {
                    return gp;
                }
                self.s.msr.tsc_aux = v;
            }
            _ => {
                if let Some(k) = fixed_mtrr_index(msr) {
                    if v.to_le_bytes().iter().any(|&t| !valid_mtrr_type(t)) {
                        return gp;
                    }
                    self.s.msr.mtrr_fixed[k] = v;
                } else if let Some(k) = var_mtrr_index(msr) {
                    let reserved = if k % 2 == 0 {
                        // PHYSBASE: type in 7:0, bits 11:8 reserved.
                        if !valid_mtrr_type(v as u8) {
                            return gp;
                        }
                        0xF00 | ABOVE_MAXPHYADDR
                    } else {
                        // PHYSMASK: valid bit 11, bits 10:0 reserved.
                        0x7FF | ABOVE_MAXPHYADDR
                    };
                    if v & reserved != 0 {
                        return gp;
                    }
                    self.s.msr.mtrr_var[k] = v;
                } else if !self.platform_msr_write(msr, v) {
                    tracing::warn!(
                        msr = format_args!("{msr:#x}"),
                        value = format_args!("{v:#x}"),
                        "WRMSR to an unimplemented or read-only MSR: raising #GP(0)"
                    );
                    return gp;
                }
            }
        }
        Ok(())
    }

    /// EFER write: reserved bits #GP; LME may not change while paging is on; LMA is
    /// read-only (kept as the CPU computed it); an NXE change flushes the TLB.
    fn write_efer(&mut self, v: u64) -> Result<(), Exception> {
        if v & !(efer::WRITABLE | efer::LMA) != 0 {
            return Err(Exception::gp0());
        }
        let old = self.s.efer;
        if (old ^ v) & efer::LME != 0 && self.s.paging() {
            return Err(Exception::gp0());
        }
        let new = (v & efer::WRITABLE) | (old & efer::LMA);
        self.s.efer = new;
        if (old ^ new) & efer::NXE != 0 {
            self.tlb.flush_all();
        }
        self.step.end_block = true;
        Ok(())
    }
}

fn rdmsr(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    require_cpl0(cpu)?;
    let v = cpu.read_msr(cpu.s.gpr[RCX] as u32)?;
    cpu.s.gpr[RAX] = v & 0xFFFF_FFFF;
    cpu.s.gpr[RDX] = v >> 32;
    Ok(())
}

fn wrmsr(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    require_cpl0(cpu)?;
    let v = (cpu.s.gpr[RDX] << 32) | (cpu.s.gpr[RAX] & 0xFFFF_FFFF);
    cpu.write_msr(cpu.s.gpr[RCX] as u32, v)
}

// ------------------------------------------------------------------ flat segments

/// The flat segments SYSCALL/SYSRET/SYSENTER/SYSEXIT load without reading descriptors.
fn flat_code(sel: u16, dpl: u8, long: bool) -> Segment {
    let size = if long { attr::L } else { attr::DB };
    Segment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector: sel,
        attr: attr::PRESENT
            | attr::S
            | attr::CODE
            | attr::RW
            | attr::ACCESSED
            | attr::G
            | size
            | (u16::from(dpl) << attr::DPL_SHIFT),
    }
}

fn flat_stack(sel: u16, dpl: u8) -> Segment {
    Segment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector: sel,
        attr: attr::PRESENT
            | attr::S
            | attr::RW
            | attr::ACCESSED
            | attr::G
            | attr::DB
            | (u16::from(dpl) << attr::DPL_SHIFT),
    }
}

impl Cpu<'_> {
    fn load_flat(&mut self, cs: Segment, ss: Segment) {
        self.s.seg[SegReg::Cs as usize] = cs;
        self.s.seg[SegReg::Ss as usize] = ss;
        self.step.end_block = true;
    }
}

// ------------------------------------------------------------------ SYSCALL / SYSRET

/// SYSCALL. In long mode (64-bit or compatibility): RCX = return RIP, R11 = RFLAGS, CS/SS
/// from STAR[47:32], RIP from LSTAR (CSTAR from compatibility mode), RFLAGS &= !FMASK. In
/// legacy protected mode (AMD's form): ECX = return EIP, EIP = STAR[31:0], IF/VM/RF cleared.
fn syscall(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    if cpu.s.efer & efer::SCE == 0 || !cpu.s.protected() || cpu.s.v86() {
        return Err(Exception::ud());
    }
    let sel = ((cpu.s.msr.star >> 32) & 0xFFFC) as u16;
    let f = cpu.flags();
    let ret = cpu.next_rip;
    if cpu.s.long_mode_active() {
        let target = if cpu.long64() {
            cpu.s.msr.lstar
        } else {
            cpu.s.msr.cstar
        };
        cpu.s.gpr[RCX] = ret;
        cpu.s.gpr[11] = f & !flags::RF;
        cpu.load_flat(flat_code(sel, 0, true), flat_stack(sel + 8, 0));
        cpu.s.set_rflags(f & !cpu.s.msr.fmask & !flags::RF);
        cpu.next_rip = target;
    } else {
        cpu.s.gpr[RCX] = ret & 0xFFFF_FFFF;
        cpu.load_flat(flat_code(sel, 0, false), flat_stack(sel + 8, 0));
        cpu.s.set_rflags(f & !(flags::IF | flags::VM | flags::RF));
        cpu.next_rip = cpu.s.msr.star & 0xFFFF_FFFF;
    }
    Ok(())
}

/// SYSRET: back to CPL 3. SYSRETQ (REX.W) goes to 64-bit code at RCX (canonical, else
/// #GP(0)) with CS = STAR[63:48]+16; SYSRETD to 32-bit code with CS = STAR[63:48]. SS =
/// STAR[63:48]+8. RFLAGS = R11 in long mode; legacy mode only sets IF.
fn sysret(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    if cpu.s.efer & efer::SCE == 0 || !cpu.s.protected() || cpu.s.v86() {
        return Err(Exception::ud());
    }
    if cpu.s.long_mode_active() && !cpu.long64() {
        return Err(Exception::ud());
    }
    require_cpl0(cpu)?;
    let base = ((cpu.s.msr.star >> 48) & 0xFFFC) as u16;
    let ss = flat_stack((base + 8) | 3, 3);
    if cpu.s.long_mode_active() {
        let to64 = i.code() == Code::Sysretq;
        let rcx = cpu.s.gpr[RCX];
        if to64 && !canonical(rcx) {
            return Err(Exception::gp0());
        }
        let f = (cpu.s.gpr[11] & 0x3C_7FD7) | flags::RESERVED1;
        if to64 {
            cpu.load_flat(flat_code((base + 16) | 3, 3, true), ss);
            cpu.next_rip = rcx;
        } else {
            cpu.load_flat(flat_code(base | 3, 3, false), ss);
            cpu.next_rip = rcx & 0xFFFF_FFFF;
        }
        cpu.s.set_rflags(f);
    } else {
        cpu.load_flat(flat_code(base | 3, 3, false), ss);
        let f = cpu.flags() | flags::IF;
        cpu.s.set_rflags(f);
        cpu.next_rip = cpu.s.gpr[RCX] & 0xFFFF_FFFF;
    }
    Ok(())
}

// ------------------------------------------------------------------ SYSENTER / SYSEXIT

/// SYSENTER: to CPL 0 at SYSENTER_CS:SYSENTER_EIP with SS = CS + 8 and rSP = SYSENTER_ESP;
/// 64-bit code when long mode is active. #GP(0) in real mode or with a null SYSENTER_CS.
fn sysenter(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    let cs_sel = (cpu.s.msr.sysenter_cs & 0xFFFC) as u16;
    if !cpu.s.protected() || cs_sel == 0 {
        return Err(Exception::gp0());
    }
    let long = cpu.s.long_mode_active();
    let f = cpu.flags() & !(flags::VM | flags::IF | flags::RF);
    cpu.s.set_rflags(f);
    cpu.load_flat(flat_code(cs_sel, 0, long), flat_stack(cs_sel + 8, 0));
    if long {
        cpu.s.gpr[RSP] = cpu.s.msr.sysenter_esp;
        cpu.next_rip = cpu.s.msr.sysenter_eip;
    } else {
        cpu.s.gpr[RSP] = cpu.s.msr.sysenter_esp & 0xFFFF_FFFF;
        cpu.next_rip = cpu.s.msr.sysenter_eip & 0xFFFF_FFFF;
    }
    Ok(())
}

/// SYSEXIT: to CPL 3 at rDX with rSP = rCX. SYSEXITQ: CS = SYSENTER_CS+32, SS = +40, 64-bit
/// (RDX and RCX must be canonical); otherwise CS = +16, SS = +24, 32-bit.
fn sysexit(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let base = (cpu.s.msr.sysenter_cs & 0xFFFC) as u16;
    if !cpu.s.protected() || cpu.s.v86() || base == 0 {
        return Err(Exception::gp0());
    }
    require_cpl0(cpu)?;
    if i.code() == Code::Sysexitq {
        let (rip, rsp) = (cpu.s.gpr[RDX], cpu.s.gpr[RCX]);
        if !canonical(rip) || !canonical(rsp) {
            return Err(Exception::gp0());
        }
        cpu.load_flat(
            flat_code((base + 32) | 3, 3, true),
            flat_stack((base + 40) | 3, 3),
        );
        cpu.s.gpr[RSP] = rsp;
        cpu.next_rip = rip;
    } else {
        cpu.load_flat(
            flat_code((base + 16) | 3, 3, false),
            flat_stack((base + 24) | 3, 3),
        );
        cpu.s.gpr[RSP] = cpu.s.gpr[RCX] & 0xFFFF_FFFF;
        cpu.next_rip = cpu.s.gpr[RDX] & 0xFFFF_FFFF;
    }
    Ok(())
}
