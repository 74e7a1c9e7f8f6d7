//! System instructions: descriptor-table registers (LGDT/LIDT/SGDT/SIDT, LLDT/SLDT, LTR/STR),
//! the machine status word (LMSW/SMSW/CLTS), control and debug registers (MOV CRn/DRn with
//! the mode-transition and TLB-flush rules), segment inspection (ARPL, LAR, LSL, VERR, VERW),
//! cache and TLB maintenance (INVLPG, INVD, WBINVD, CLFLUSH), SWAPGS, RDPMC, BOUND, and the
//! device-not-available check the x87 handlers (`ops::x87`) start with.

use crate::cpu::{addr_bits, mask, seg_of, Cpu};
use crate::descriptor::sel_code;
use crate::exec::Handler;
use crane86_x86::flags;
use crane86_x86::regs::{cr0, cr4, efer};
use crane86_x86::segment::{attr, sys_type, Segment, TableReg};
use crane86_x86::{Exception, SegReg, Vector};
use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

pub fn handler(i: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match i.mnemonic() {
        Lgdt | Lidt => load_table_reg,
        Sgdt | Sidt => store_table_reg,
        Lldt => lldt,
        Sldt => sldt,
        Ltr => ltr,
        Str => str_,
        Lmsw => lmsw,
        Smsw => smsw,
        Clts => clts,
        Arpl => arpl,
        Lar => lar,
        Lsl => lsl,
        Verr | Verw => verr_verw,
        Mov if is_cr_op(i, 0) => mov_to_cr,
        Mov if is_cr_op(i, 1) => mov_from_cr,
        Mov if is_dr_op(i, 0) => mov_to_dr,
        Mov if is_dr_op(i, 1) => mov_from_dr,
        Invlpg => invlpg,
        Invd | Wbinvd => privileged_nop,
        Clflush => clflush,
        Swapgs => swapgs,
        Rdpmc => rdpmc,
        Bound => bound,
        _ => return None,
    })
}

fn is_cr_op(i: &Instruction, n: u32) -> bool {
    i.op_count() > n && i.op_kind(n) == OpKind::Register && i.op_register(n).is_cr()
}

fn is_dr_op(i: &Instruction, n: u32) -> bool {
    i.op_count() > n && i.op_kind(n) == OpKind::Register && i.op_register(n).is_dr()
}

/// #GP(0) unless CPL = 0 (real mode counts as CPL 0, V86 mode as CPL 3).
pub fn require_cpl0(cpu: &Cpu) -> Result<(), Exception> {
    if cpu.cpl() != 0 {
        return Err(Exception::gp0());
    }
    Ok(())
}

/// #UD in real and V86 mode (instructions that only exist in protected mode).
pub fn require_protected(cpu: &Cpu) -> Result<(), Exception> {
    if !cpu.s.protected() || cpu.s.v86() {
        return Err(Exception::ud());
    }
    Ok(())
}

impl Cpu<'_> {
    /// The x87 unit may be used: #NM when CR0.EM or CR0.TS is set. FPU instruction handlers
    /// call this first.
    pub fn check_fpu_available(&self) -> Result<(), Exception> {
        if self.s.cr0 & (cr0::EM | cr0::TS) != 0 {
            return Err(Exception::nm());
        }
        Ok(())
    }

    /// Linear address of the instruction's memory operand (no access checks: INVLPG and the
    /// descriptor-table loads compute it this way before their own checks).
    fn mem_operand_linear(
        &self,
        i: &Instruction,
        bytes: u32,
        write: bool,
    ) -> Result<u64, Exception> {
        let off = self.ea(i);
        self.linear(seg_of(i.memory_segment()), off, bytes, write)
    }
}

// ------------------------------------------------------------------ GDTR / IDTR

fn load_table_reg(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    require_cpl0(cpu)?;
    let seg = seg_of(i.memory_segment());
    let off = cpu.ea(i);
    let limit = cpu.read_mem(seg, off, 16)? as u16;
    let base = match i.code() {
        Code::Lgdt_m1664 | Code::Lidt_m1664 => {
            let b = cpu.read_mem(seg, off.wrapping_add(2), 64)?;
            if ((b as i64) << 16 >> 16) as u64 != b {
                return Err(Exception::gp0());
            }
            b
        }
        Code::Lgdt_m1632_16 | Code::Lidt_m1632_16 => {
            cpu.read_mem(seg, off.wrapping_add(2) & mask(addr_bits(i)), 32)? & 0xFF_FFFF
        }
        _ => cpu.read_mem(seg, off.wrapping_add(2) & mask(addr_bits(i)), 32)?,
    };
    let reg = TableReg { base, limit };
    if i.mnemonic() == Mnemonic::Lgdt {
        cpu.s.gdtr = reg;
    } else {
        cpu.s.idtr = reg;
    }
    Ok(())
}

fn store_table_reg(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let reg = if i.mnemonic() == Mnemonic::Sgdt {
        cpu.s.gdtr
    } else {
        cpu.s.idtr
    };
    let seg = seg_of(i.memory_segment());
    let off = cpu.ea(i);
    let base_bits = if cpu.long64() { 64 } else { 32 };
    // Check the whole destination is writable before storing anything.
    cpu.mem_operand_linear(i, 2 + base_bits / 8, true)?;
    cpu.write_mem(seg, off, 16, u64::from(reg.limit))?;
    // SDM: legacy modes store the full 32-bit base whatever the operand size.
    cpu.write_mem(
        seg,
        off.wrapping_add(2) & mask(addr_bits(i)),
        base_bits,
        reg.base & mask(base_bits),
    )
}

// ------------------------------------------------------------------ LDTR / TR

/// A 16-byte system descriptor's base (long mode) or the 8-byte one's (legacy).
fn system_segment(cpu: &mut Cpu, sel: u16, desc: u64) -> Result<Segment, Exception> {
    let mut s = Segment::from_descriptor(sel, desc);
    if cpu.s.long_mode_active() {
        let high = cpu.read_descriptor_high(sel, Exception::gp)?;
        if (high >> 40) & 0x1F != 0 {
            return Err(Exception::gp(sel_code(sel)));
        }
        s.base |= (high & 0xFFFF_FFFF) << 32;
    }
    Ok(s)
}

fn lldt(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    require_protected(cpu)?;
    require_cpl0(cpu)?;
    let sel = cpu.read_op(i, 0)? as u16;
    if sel & 0xFFFC == 0 {
        cpu.s.ldtr = Segment {
            selector: sel,
            ..Segment::default()
        };
        return Ok(());
    }
    if sel & 4 != 0 {
        return Err(Exception::gp(sel_code(sel)));
    }
    let desc = cpu.read_descriptor(sel, Exception::gp)?;
    let d = Segment::from_descriptor(sel, desc);
    if !d.is_system() || d.seg_type() != sys_type::LDT {
        return Err(Exception::gp(sel_code(sel)));
    }
    if !d.present() {
        return Err(Exception::np(sel_code(sel)));
    }
    cpu.s.ldtr = system_segment(cpu, sel, desc)?;
    Ok(())
}

fn sldt(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    require_protected(cpu)?;
    let sel = cpu.s.ldtr.selector;
    store_selector(cpu, i, sel)
}

/// SLDT/STR/SMSW-style store: a register destination receives the value zero-extended to
/// its width, a memory destination receives 16 bits.
fn store_selector(cpu: &mut Cpu, i: &Instruction, v: u16) -> Result<(), Exception> {
    if i.op0_kind() == OpKind::Register {
        cpu.set_reg(i.op0_register(), u64::from(v));
        Ok(())
    } else {
        let off = cpu.ea(i);
        cpu.write_mem(seg_of(i.memory_segment()), off, 16, u64::from(v))
    }
}

fn ltr(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    require_protected(cpu)?;
    require_cpl0(cpu)?;
    let sel = cpu.read_op(i, 0)? as u16;
    if sel & 0xFFFC == 0 {
        return Err(Exception::gp0());
    }
    if sel & 4 != 0 {
        return Err(Exception::gp(sel_code(sel)));
    }
    let desc = cpu.read_descriptor(sel, Exception::gp)?;
    let d = Segment::from_descriptor(sel, desc);
    let ty = d.seg_type();
    let ok = d.is_system()
        && if cpu.s.long_mode_active() {
            ty == sys_type::TSS32_AVAIL
        } else {
            ty == sys_type::TSS32_AVAIL || ty == sys_type::TSS16_AVAIL
        };
    if !ok {
        return Err(Exception::gp(sel_code(sel)));
    }
    if !d.present() {
        return Err(Exception::np(sel_code(sel)));
    }
    let mut tr = system_segment(cpu, sel, desc)?;
    // Mark the descriptor busy in memory and in the cache.
    let addr = cpu
        .descriptor_addr(sel)
        .ok_or(Exception::gp(sel_code(sel)))?;
    let b = cpu.read_sys(addr + 5, 8)?;
    cpu.write_sys(addr + 5, 8, b | 2)?;
    tr.attr |= 2;
    cpu.s.tr = tr;
    Ok(())
}

fn str_(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    require_protected(cpu)?;
    let sel = cpu.s.tr.selector;
    store_selector(cpu, i, sel)
}

// ------------------------------------------------------------------ MSW

fn lmsw(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    require_cpl0(cpu)?;
    let v = cpu.read_op(i, 0)? & 0xF;
    // LMSW loads PE, MP, EM, TS; it can set PE but never clear it.
    let old = cpu.s.cr0;
    let new = (old & !0xE) | v | (old & cr0::PE);
    cpu.write_cr0(new)
}

fn smsw(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let v = cpu.s.cr0;
    if i.op0_kind() == OpKind::Register {
        cpu.set_reg(i.op0_register(), v);
        Ok(())
    } else {
        let off = cpu.ea(i);
        cpu.write_mem(seg_of(i.memory_segment()), off, 16, v & 0xFFFF)
    }
}

fn clts(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    require_cpl0(cpu)?;
    cpu.s.cr0 &= !cr0::TS;
    Ok(())
}

// ------------------------------------------------------------------ ARPL, LAR, LSL, VERR/VERW

fn arpl(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    require_protected(cpu)?;
    let src_rpl = cpu.read_op(i, 1)? & 3;
    let mut adjusted = false;
    cpu.rmw_op0(i, |_, dst| {
        if dst & 3 < src_rpl {
            adjusted = true;
            Ok(Some((dst & !3) | src_rpl))
        } else {
            Ok(None)
        }
    })?;
    cpu.set_flag(flags::ZF, adjusted);
    Ok(())
}

/// Fetch the descriptor for LAR/LSL/VERR/VERW; `None` (ZF = 0) for a null selector or one
/// outside its table.
fn inspect_descriptor(cpu: &mut Cpu, sel: u16) -> Result<Option<Segment>, Exception> {
    if sel & 0xFFFC == 0 {
        return Ok(None);
    }
    let Some(addr) = cpu.descriptor_addr(sel) else {
        return Ok(None);
    };
    let desc = cpu.read_sys(addr, 64)?;
    Ok(Some(Segment::from_descriptor(sel, desc)))
}

/// The privilege rule of LAR/LSL/VERR/VERW: conforming code is always visible, everything
/// else needs DPL >= CPL and DPL >= RPL.
fn visible(cpu: &Cpu, d: &Segment, sel: u16) -> bool {
    let conforming = d.is_code() && d.attr & attr::DC != 0;
    conforming || (d.dpl() >= cpu.cpl() && d.dpl() >= (sel & 3) as u8)
}

fn lar(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    require_protected(cpu)?;
    let sel = cpu.read_op(i, 1)? as u16;
    let found = inspect_descriptor(cpu, sel)?;
    let result = found.filter(|d| {
        let type_ok = !d.is_system()
            || if cpu.s.long_mode_active() {
                matches!(d.seg_type(), 2 | 9 | 11 | 12)
            } else {
                matches!(d.seg_type(), 1..=5 | 9 | 11 | 12)
            };
        type_ok && visible(cpu, d, sel)
    });
    match result {
        Some(d) => {
            // Bytes 5-6 of the descriptor: access rights and the flags nibble (limit 19:16
            // left out, as the cache does not keep them).
            let raw = (u64::from(d.attr & 0xFF) << 8) | (u64::from(d.attr >> 12) << 20);
            let limit_hi = if d.attr & attr::G != 0 {
                (u64::from(d.limit) >> 28) & 0xF
            } else {
                (u64::from(d.limit) >> 16) & 0xF
            };
            let v = raw | (limit_hi << 16);
            let bits = cpu.op_bits(i, 0);
            cpu.set_reg(i.op0_register(), v & mask(bits.min(32)));
            cpu.set_flag(flags::ZF, true);
        }
        None => cpu.set_flag(flags::ZF, false),
    }
    Ok(())
}

fn lsl(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    require_protected(cpu)?;
    let sel = cpu.read_op(i, 1)? as u16;
    let found = inspect_descriptor(cpu, sel)?;
    let result = found.filter(|d| {
        let type_ok = !d.is_system()
            || if cpu.s.long_mode_active() {
                matches!(d.seg_type(), 2 | 9 | 11)
            } else {
                matches!(d.seg_type(), 1..=3 | 9 | 11)
            };
        type_ok && visible(cpu, d, sel)
    });
    match result {
        Some(d) => {
            let bits = cpu.op_bits(i, 0);
            cpu.set_reg(i.op0_register(), u64::from(d.limit) & mask(bits));
            cpu.set_flag(flags::ZF, true);
        }
        None => cpu.set_flag(flags::ZF, false),
    }
    Ok(())
}

fn verr_verw(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    require_protected(cpu)?;
    let sel = cpu.read_op(i, 0)? as u16;
    let write = i.mnemonic() == Mnemonic::Verw;
    let found = inspect_descriptor(cpu, sel)?;
    let ok = found.is_some_and(|d| {
        if d.is_system() || !visible(cpu, &d, sel) {
            return false;
        }
        if write {
            !d.is_code() && d.attr & attr::RW != 0
        } else {
            !d.is_code() || d.attr & attr::RW != 0
        }
    });
    cpu.set_flag(flags::ZF, ok);
    Ok(())
}

// ------------------------------------------------------------------ control registers

/// CR0 bits that exist; writes to the others are ignored (bits 63:32 raise #GP).
const CR0_DEFINED: u64 = cr0::PE
    | cr0::MP
    | cr0::EM
    | cr0::TS
    | cr0::ET
    | cr0::NE
    | cr0::WP
    | cr0::AM
    | cr0::NW
    | cr0::CD
    | cr0::PG;

/// CR4 bits crane86 implements. VME/PVI are not (no virtual-8086 mode extensions), so they
/// are reserved here and CPUID does not advertise VME.
const CR4_IMPLEMENTED: u64 = cr4::SUPPORTED & !(cr4::VME | cr4::PVI);

/// Physical-address width reported by CPUID.80000008 (reserved CR3 bits lie above it).
const MAXPHYADDR: u32 = 40;

impl Cpu<'_> {
    /// MOV CR0 / LMSW: validate, apply paging-mode transitions (EFER.LMA), flush the TLB
    /// when translation-relevant bits change and end the block.
    pub fn write_cr0(&mut self, value: u64) -> Result<(), Exception> {
        if value >> 32 != 0 {
            return Err(Exception::gp0());
        }
        let new = (value & CR0_DEFINED) | cr0::ET;
        if new & cr0::PG != 0 && new & cr0::PE == 0 {
            return Err(Exception::gp0());
        }
        if new & cr0::NW != 0 && new & cr0::CD == 0 {
            return Err(Exception::gp0());
        }
        let old = self.s.cr0;
        let enabling_pg = new & cr0::PG != 0 && old & cr0::PG == 0;
        let disabling_pg = new & cr0::PG == 0 && old & cr0::PG != 0;
        if enabling_pg && self.s.efer & efer::LME != 0 {
            if self.s.cr4 & cr4::PAE == 0 || self.s.seg[SegReg::Cs as usize].long() {
                return Err(Exception::gp0());
            }
            self.s.efer |= efer::LMA;
        }
        if disabling_pg && self.s.long_mode_active() {
            if self.long64() {
                return Err(Exception::gp0());
            }
            self.s.efer &= !efer::LMA;
        }
        self.s.cr0 = new;
        if (old ^ new) & (cr0::PG | cr0::WP | cr0::PE) != 0 {
            self.tlb.flush_all();
        }
        self.step.end_block = true;
        Ok(())
    }

    pub fn write_cr3(&mut self, value: u64) -> Result<(), Exception> {
        let v = if self.s.long_mode_active() {
            if value >> MAXPHYADDR != 0 {
                return Err(Exception::gp0());
            }
            value
        } else {
            value & 0xFFFF_FFFF
        };
        self.s.cr3 = v;
        self.tlb.flush_non_global();
        self.step.end_block = true;
        Ok(())
    }

    pub fn write_cr4(&mut self, value: u64) -> Result<(), Exception> {
        if value & !CR4_IMPLEMENTED != 0 {
            return Err(Exception::gp0());
        }
        let old = self.s.cr4;
        if self.s.long_mode_active() && value & cr4::PAE == 0 {
            return Err(Exception::gp0());
        }
        self.s.cr4 = value;
        if (old ^ value) & (cr4::PGE | cr4::PAE | cr4::PSE) != 0 {
            self.tlb.flush_all();
        }
        self.step.end_block = true;
        Ok(())
    }
}

fn cr_index(r: Register) -> u32 {
    r as u32 - Register::CR0 as u32
}

fn mov_to_cr(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    require_cpl0(cpu)?;
    let v = cpu.reg(i.op1_register());
    match cr_index(i.op0_register()) {
        0 => cpu.write_cr0(v),
        2 => {
            cpu.s.cr2 = v;
            Ok(())
        }
        3 => cpu.write_cr3(v),
        4 => cpu.write_cr4(v),
        8 => {
            if v & !0xF != 0 {
                return Err(Exception::gp0());
            }
            cpu.s.cr8 = v;
            cpu.step.end_block = true;
            Ok(())
        }
        _ => Err(Exception::ud()),
    }
}

fn mov_from_cr(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    require_cpl0(cpu)?;
    let v = match cr_index(i.op1_register()) {
        0 => cpu.s.cr0,
        2 => cpu.s.cr2,
        3 => cpu.s.cr3,
        4 => cpu.s.cr4,
        8 => cpu.s.cr8,
        _ => return Err(Exception::ud()),
    };
    cpu.set_reg(i.op0_register(), v);
    Ok(())
}

// ------------------------------------------------------------------ debug registers

/// DR index after DR4/DR5 aliasing (#UD when CR4.DE makes them reserved).
fn dr_index(cpu: &Cpu, r: Register) -> Result<usize, Exception> {
    let n = (r as u32 - Register::DR0 as u32) as usize;
    match n {
        4 | 5 if cpu.s.cr4 & cr4::DE != 0 => Err(Exception::ud()),
        4 | 5 => Ok(n + 2),
        0..=7 => Ok(n),
        _ => Err(Exception::ud()),
    }
}

fn mov_to_dr(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    require_cpl0(cpu)?;
    let n = dr_index(cpu, i.op0_register())?;
    let v = cpu.reg(i.op1_register());
    match n {
        6 | 7 if v >> 32 != 0 => Err(Exception::gp0()),
        // DR6: bits 4-11 and 16-31 read as 1, bit 12 as 0.
        6 => {
            cpu.s.dr[6] = (v & 0xE00F) | 0xFFFF_0FF0;
            Ok(())
        }
        // DR7: bit 10 reads as 1; 11, 12, 14, 15 as 0.
        7 => {
            cpu.s.dr[7] = (v & 0xFFFF_23FF) | 0x400;
            if v & 0xFF != 0 {
                tracing::warn!(
                    dr7 = format_args!("{v:#x}"),
                    "hardware breakpoints are not implemented; DR7 enables are stored only"
                );
            }
            Ok(())
        }
        _ => {
            cpu.s.dr[n] = v;
            Ok(())
        }
    }
}

fn mov_from_dr(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    require_cpl0(cpu)?;
    let n = dr_index(cpu, i.op1_register())?;
    let v = cpu.s.dr[n];
    cpu.set_reg(i.op0_register(), v);
    Ok(())
}

// ------------------------------------------------------------------ caches and TLB

fn invlpg(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    require_cpl0(cpu)?;
    // The linear address: segment base + offset, without limit or canonical faults
    // (INVLPG of a non-canonical address is a no-op).
    let seg = seg_of(i.memory_segment());
    let off = cpu.ea(i);
    let lin = if cpu.long64() {
        if matches!(seg, SegReg::Fs | SegReg::Gs) {
            cpu.s.seg[seg as usize].base.wrapping_add(off)
        } else {
            off
        }
    } else {
        cpu.s.seg[seg as usize].base.wrapping_add(off) & 0xFFFF_FFFF
    };
    cpu.tlb.flush_page(lin);
    cpu.step.end_block = true;
    Ok(())
}

fn privileged_nop(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    require_cpl0(cpu)
}

fn clflush(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    // Checked like a byte read (segment and paging faults), otherwise no effect: guest
    // memory is always coherent.
    let lin = cpu.mem_operand_linear(i, 1, false)?;
    let user = cpu.cpl() == 3;
    cpu.translate(lin, crane86_memory::Access::Read, user)?;
    Ok(())
}

fn swapgs(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    if !cpu.long64() {
        return Err(Exception::ud());
    }
    require_cpl0(cpu)?;
    let gs = &mut cpu.s.seg[SegReg::Gs as usize].base;
    std::mem::swap(gs, &mut cpu.s.msr.kernel_gs_base);
    Ok(())
}

/// RDPMC: #GP(0) at CPL > 0 without CR4.PCE; crane86 advertises no performance counters
/// (CPUID leaf 0xA is zero), so every counter index is invalid and also raises #GP(0).
fn rdpmc(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    if cpu.s.protected() && cpu.cpl() != 0 && cpu.s.cr4 & cr4::PCE == 0 {
        return Err(Exception::gp0());
    }
    tracing::warn!(
        ecx = cpu.s.gpr[1] as u32,
        "RDPMC: no performance counters are implemented; raising #GP(0)"
    );
    Err(Exception::gp0())
}

// ------------------------------------------------------------------ BOUND

fn bound(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = cpu.op_bits(i, 0);
    let index = crate::cpu::sign_extend(cpu.reg(i.op0_register()), bits);
    let seg = seg_of(i.memory_segment());
    let off = cpu.ea(i);
    let lower = crate::cpu::sign_extend(cpu.read_mem(seg, off, bits)?, bits);
    let upper_off = off.wrapping_add(u64::from(bits / 8)) & mask(addr_bits(i));
    let upper = crate::cpu::sign_extend(cpu.read_mem(seg, upper_off, bits)?, bits);
    if index < lower || index > upper {
        return Err(Exception::new(Vector::BoundRange));
    }
    Ok(())
}
