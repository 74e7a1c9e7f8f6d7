//! Far control transfer: far JMP/CALL (direct ptr16:16/32 and indirect m16:16/32/64) in real,
//! V86, protected and long mode, including call gates (16/32-bit with privilege change and
//! parameter copy, 64-bit in long mode); RETF (same and outer privilege); IRET/IRETD/IRETQ
//! (real mode, V86, protected mode same/outer privilege, return to V86, long-mode frames);
//! and LDS/LES/LFS/LGS/LSS.
//!
//! JMP/CALL to a TSS or task gate and IRET with NT set hand over to `ops::tasking`.

use crate::cpu::{mask, seg_of, Cpu};
use crate::descriptor::{segment_from, sel_code};
use crate::exec::Handler;
use crate::interrupt::stack_fits;
use crate::ops::tasking::TaskSwitchReason;
use crane86_x86::flags;
use crane86_x86::regs::gpr::RSP;
use crane86_x86::segment::{attr, sys_type, Segment};
use crane86_x86::{Exception, SegReg};
use iced_x86::{Code, Instruction, MemorySize, Mnemonic, OpKind};

/// JMP/CALL with a far target: a direct ptr16:16/32 or an m16:16/32/64 memory operand.
pub fn is_far_branch(i: &Instruction) -> bool {
    matches!(i.op0_kind(), OpKind::FarBranch16 | OpKind::FarBranch32)
        || (i.op_count() == 1
            && i.op0_kind() == OpKind::Memory
            && matches!(
                i.memory_size(),
                MemorySize::SegPtr16 | MemorySize::SegPtr32 | MemorySize::SegPtr64
            ))
}

pub fn handler(i: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    let far = is_far_branch(i);
    Some(match i.mnemonic() {
        Jmp if far => jmp_far,
        Call if far => call_far,
        Retf => retf,
        Iret | Iretd | Iretq => iret,
        Lds | Les | Lfs | Lgs | Lss => load_far_pointer,
        _ => return None,
    })
}

/// EFLAGS.RF is not loaded by IRET: it only suppresses instruction breakpoints (which are
/// not implemented) for one instruction, and nothing would clear it again afterwards.
const RF_NOT_MODELLED: u64 = flags::RF;

#[inline]
fn canonical(v: u64) -> bool {
    ((v as i64) << 16 >> 16) as u64 == v
}

/// Selector, offset and operand size (bits) of a far JMP/CALL operand.
fn far_operand(cpu: &mut Cpu, i: &Instruction) -> Result<(u16, u64, u32), Exception> {
    match i.op0_kind() {
        OpKind::FarBranch16 => Ok((i.far_branch_selector(), u64::from(i.far_branch16()), 16)),
        OpKind::FarBranch32 => Ok((i.far_branch_selector(), u64::from(i.far_branch32()), 32)),
        _ => {
            let bits = match i.memory_size() {
                MemorySize::SegPtr16 => 16,
                MemorySize::SegPtr32 => 32,
                _ => 64,
            };
            let seg = seg_of(i.memory_segment());
            let off = cpu.ea(i);
            let target = cpu.read_mem(seg, off, bits)?;
            let sel_off = off.wrapping_add(u64::from(bits / 8)) & mask(crate::cpu::addr_bits(i));
            let sel = cpu.read_mem(seg, sel_off, 16)? as u16;
            Ok((sel, target, bits))
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FarKind {
    Jmp,
    Call,
}

impl FarKind {
    fn task_reason(self) -> TaskSwitchReason {
        match self {
            FarKind::Jmp => TaskSwitchReason::Jmp,
            FarKind::Call => TaskSwitchReason::Call,
        }
    }
}

fn jmp_far(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let (sel, off, bits) = far_operand(cpu, i)?;
    cpu.restoring_rsp(|cpu| cpu.far_transfer(sel, off, bits, FarKind::Jmp))
}

fn call_far(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let (sel, off, bits) = far_operand(cpu, i)?;
    cpu.restoring_rsp(|cpu| cpu.far_transfer(sel, off, bits, FarKind::Call))
}

/// Real-mode / V86 code segment for selector `sel`. Real mode keeps the cached limit.
fn real_code_segment(cpu: &Cpu, sel: u16) -> Segment {
    if cpu.s.v86() {
        let mut s = Segment::real_mode(sel, true);
        s.attr |= 3 << attr::DPL_SHIFT;
        s
    } else {
        let mut s = cpu.s.seg[SegReg::Cs as usize];
        s.selector = sel;
        s.base = u64::from(sel) << 4;
        s
    }
}

impl Cpu<'_> {
    /// Run `f`; if it fails, put rSP back (a fault must leave the stack pointer unchanged),
    /// unless a task switch committed (the fault then belongs to the new task).
    fn restoring_rsp(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<(), Exception>,
    ) -> Result<(), Exception> {
        let saved = self.s.gpr[RSP];
        let tr = self.s.tr.selector;
        let r = f(self);
        if r.is_err() && self.s.tr.selector == tr {
            self.s.gpr[RSP] = saved;
        }
        r
    }

    /// Install a new CS and the next RIP, after the limit (or canonical) check of `offset`.
    fn enter_code(&mut self, cs: Segment, offset: u64) -> Result<(), Exception> {
        if self.s.long_mode_active() && cs.long() {
            if !canonical(offset) {
                return Err(Exception::gp0());
            }
        } else if offset > u64::from(cs.limit) {
            return Err(Exception::gp0());
        }
        self.s.seg[SegReg::Cs as usize] = cs;
        self.next_rip = offset;
        self.step.end_block = true;
        Ok(())
    }

    fn far_transfer(
        &mut self,
        sel: u16,
        offset: u64,
        bits: u32,
        kind: FarKind,
    ) -> Result<(), Exception> {
        let offset = offset & mask(bits);
        let ret = self.next_rip;
        let old_cs = u64::from(self.s.seg[SegReg::Cs as usize].selector);
        if !self.s.protected() || self.s.v86() {
            let cs = real_code_segment(self, sel);
            if offset > u64::from(cs.limit) {
                return Err(Exception::gp0());
            }
            if kind == FarKind::Call {
                self.push(old_cs, bits)?;
                self.push(ret, bits)?;
            }
            return self.enter_code(cs, offset);
        }
        if sel & 0xFFFC == 0 {
            return Err(Exception::gp0());
        }
        let desc = self.read_descriptor(sel, Exception::gp)?;
        let d = Segment::from_descriptor(sel, desc);
        let cpl = self.cpl();
        let rpl = (sel & 3) as u8;
        if d.is_code() {
            if d.attr & attr::DC != 0 {
                if d.dpl() > cpl {
                    return Err(Exception::gp(sel_code(sel)));
                }
            } else if rpl > cpl || d.dpl() != cpl {
                return Err(Exception::gp(sel_code(sel)));
            }
            if !d.present() {
                return Err(Exception::np(sel_code(sel)));
            }
            if self.s.long_mode_active() && d.long() && d.big() {
                return Err(Exception::gp(sel_code(sel)));
            }
            let cs = segment_from((sel & !3) | u16::from(cpl), desc);
            if kind == FarKind::Call {
                self.push(old_cs, bits)?;
                self.push(ret, bits)?;
            }
            self.set_accessed(sel, desc)?;
            return self.enter_code(cs, offset);
        }
        if d.is_system() {
            let ty = d.seg_type();
            let long = self.s.long_mode_active();
            match ty {
                sys_type::CALL_GATE32 => return self.call_gate(sel, desc, kind, long),
                sys_type::CALL_GATE16 if !long => return self.call_gate(sel, desc, kind, false),
                sys_type::TSS16_AVAIL
                | sys_type::TSS32_AVAIL
                | sys_type::TSS16_BUSY
                | sys_type::TSS32_BUSY
                    if !long =>
                {
                    if d.dpl() < cpl || d.dpl() < rpl {
                        return Err(Exception::gp(sel_code(sel)));
                    }
                    return self.task_switch(sel, desc, kind.task_reason(), ret, None);
                }
                sys_type::TASK_GATE if !long => {
                    if d.dpl() < cpl || d.dpl() < rpl {
                        return Err(Exception::gp(sel_code(sel)));
                    }
                    if !d.present() {
                        return Err(Exception::np(sel_code(sel)));
                    }
                    let tss_sel = ((desc >> 16) & 0xFFFF) as u16;
                    if tss_sel & 4 != 0 {
                        return Err(Exception::gp(sel_code(tss_sel)));
                    }
                    let tss_desc = self.read_descriptor(tss_sel, Exception::gp)?;
                    return self.task_switch(tss_sel, tss_desc, kind.task_reason(), ret, None);
                }
                _ => {}
            }
        }
        Err(Exception::gp(sel_code(sel)))
    }

    /// Far JMP/CALL through a call gate (`long`: a 16-byte 64-bit gate).
    fn call_gate(
        &mut self,
        gate_sel: u16,
        gate: u64,
        kind: FarKind,
        long: bool,
    ) -> Result<(), Exception> {
        let cpl = self.cpl();
        let gate_dpl = ((gate >> 45) & 3) as u8;
        let rpl = (gate_sel & 3) as u8;
        if gate_dpl < cpl || gate_dpl < rpl {
            return Err(Exception::gp(sel_code(gate_sel)));
        }
        if gate & (1 << 47) == 0 {
            return Err(Exception::np(sel_code(gate_sel)));
        }
        let gate_type = ((gate >> 40) & 0xF) as u8;
        let mut offset = gate & 0xFFFF;
        let gate_bits: u32 = if long {
            64
        } else if gate_type == sys_type::CALL_GATE32 {
            32
        } else {
            16
        };
        if gate_bits >= 32 {
            offset |= (gate >> 32) & 0xFFFF_0000;
        }
        if long {
            let high = self.read_descriptor_high(gate_sel, Exception::gp)?;
            if (high >> 40) & 0x1F != 0 {
                return Err(Exception::gp(sel_code(gate_sel)));
            }
            offset |= (high & 0xFFFF_FFFF) << 32;
        }
        let params = (gate >> 32) & 0x1F;
        let target_sel = ((gate >> 16) & 0xFFFF) as u16;
        if target_sel & 0xFFFC == 0 {
            return Err(Exception::gp0());
        }
        let tdesc = self.read_descriptor(target_sel, Exception::gp)?;
        let t = Segment::from_descriptor(target_sel, tdesc);
        let tcode = sel_code(target_sel);
        if !t.is_code() || t.dpl() > cpl {
            return Err(Exception::gp(tcode));
        }
        if long && (!t.long() || t.big()) {
            return Err(Exception::gp(tcode));
        }
        if !t.present() {
            return Err(Exception::np(tcode));
        }
        let conforming = t.attr & attr::DC != 0;
        let ret = self.next_rip;
        let old_cs = u64::from(self.s.seg[SegReg::Cs as usize].selector);
        if kind == FarKind::Jmp {
            if !conforming && t.dpl() != cpl {
                return Err(Exception::gp(tcode));
            }
            let cs = segment_from((target_sel & !3) | u16::from(cpl), tdesc);
            self.set_accessed(target_sel, tdesc)?;
            return self.enter_code(cs, offset);
        }
        if !conforming && t.dpl() < cpl {
            return self.call_gate_inner(target_sel, tdesc, offset, gate_bits, params, long);
        }
        // Same privilege.
        let new_cpl = cpl;
        let cs = segment_from((target_sel & !3) | u16::from(new_cpl), tdesc);
        self.push(old_cs, gate_bits)?;
        self.push(ret, gate_bits)?;
        self.set_accessed(target_sel, tdesc)?;
        self.enter_code(cs, offset)
    }

    /// CALL through a gate to a more privileged non-conforming segment: switch to the TSS
    /// stack of the target level, copy `params` parameters (legacy gates), push the return
    /// frame.
    fn call_gate_inner(
        &mut self,
        target_sel: u16,
        tdesc: u64,
        offset: u64,
        gate_bits: u32,
        params: u64,
        long: bool,
    ) -> Result<(), Exception> {
        let t = Segment::from_descriptor(target_sel, tdesc);
        let new_cpl = t.dpl();
        let ret = self.next_rip;
        let old_cs = u64::from(self.s.seg[SegReg::Cs as usize].selector);
        let old_ss = self.s.seg[SegReg::Ss as usize];
        let old_sp = self.s.gpr[RSP];
        let cs = segment_from((target_sel & !3) | u16::from(new_cpl), tdesc);
        if long {
            let rsp0 = self.tss64_read(4 + 8 * u64::from(new_cpl))?;
            let frame = [u64::from(old_ss.selector), old_sp, old_cs, ret];
            let mut rsp = rsp0;
            for v in frame {
                rsp = rsp.wrapping_sub(8);
                if !canonical(rsp) {
                    return Err(Exception::ss(0));
                }
                self.write_lin_as(rsp, 64, v, false)?;
            }
            self.set_accessed(target_sel, tdesc)?;
            self.enter_code(cs, offset)?;
            self.s.seg[SegReg::Ss as usize] = Segment {
                selector: u16::from(new_cpl),
                ..Segment::default()
            };
            self.s.gpr[RSP] = rsp;
            return Ok(());
        }
        let (ss_sel, new_sp) = self.tss_stack(new_cpl)?;
        let new_ss = self.check_tss_ss(ss_sel, new_cpl)?;
        let bytes = u64::from(gate_bits / 8);
        // Parameters, read from the caller's stack (first parameter at the lowest address).
        let old_mask = if old_ss.big() { 0xFFFF_FFFF } else { 0xFFFF };
        let mut copied = Vec::with_capacity(params as usize);
        for k in 0..params {
            let off = old_sp.wrapping_add(k * bytes) & old_mask;
            copied.push(self.read_mem(SegReg::Ss, off, gate_bits)?);
        }
        let mut frame = vec![u64::from(old_ss.selector), old_sp & mask(gate_bits)];
        frame.extend(copied.iter().rev());
        frame.extend([old_cs, ret]);
        let new_mask: u64 = if new_ss.big() { 0xFFFF_FFFF } else { 0xFFFF };
        let total = bytes * frame.len() as u64;
        let mut sp = new_sp & new_mask;
        if !stack_fits(&new_ss, sp.wrapping_sub(total) & new_mask, total) {
            return Err(Exception::ss(sel_code(ss_sel)));
        }
        for v in frame {
            sp = sp.wrapping_sub(bytes) & new_mask;
            self.write_lin_as(
                new_ss.base.wrapping_add(sp) & 0xFFFF_FFFF,
                gate_bits,
                v,
                false,
            )?;
        }
        self.set_accessed(target_sel, tdesc)?;
        self.enter_code(cs, offset)?;
        self.s.seg[SegReg::Ss as usize] = new_ss;
        if new_ss.big() {
            self.s.gpr[RSP] = sp;
        } else {
            self.s.gpr[RSP] = (self.s.gpr[RSP] & !0xFFFF) | sp;
        }
        Ok(())
    }

    /// Validate the return CS of RETF/IRET in protected mode; returns its descriptor.
    fn check_return_cs(&mut self, sel: u16) -> Result<u64, Exception> {
        if sel & 0xFFFC == 0 {
            return Err(Exception::gp0());
        }
        let rpl = (sel & 3) as u8;
        if rpl < self.cpl() {
            return Err(Exception::gp(sel_code(sel)));
        }
        let desc = self.read_descriptor(sel, Exception::gp)?;
        let d = Segment::from_descriptor(sel, desc);
        if !d.is_code() {
            return Err(Exception::gp(sel_code(sel)));
        }
        if d.attr & attr::DC != 0 {
            if d.dpl() > rpl {
                return Err(Exception::gp(sel_code(sel)));
            }
        } else if d.dpl() != rpl {
            return Err(Exception::gp(sel_code(sel)));
        }
        if !d.present() {
            return Err(Exception::np(sel_code(sel)));
        }
        if self.s.long_mode_active() && d.long() && d.big() {
            return Err(Exception::gp(sel_code(sel)));
        }
        Ok(desc)
    }

    /// Validate the SS popped by a RETF/IRET to privilege `rpl` (the return CS's RPL).
    /// `to64`: the return is to 64-bit code, where a null SS is allowed below ring 3.
    fn check_return_ss(&mut self, sel: u16, rpl: u8, to64: bool) -> Result<Segment, Exception> {
        if sel & 0xFFFC == 0 {
            if to64 && rpl != 3 && (sel & 3) as u8 == rpl {
                return Ok(Segment {
                    selector: sel,
                    ..Segment::default()
                });
            }
            return Err(Exception::gp0());
        }
        if (sel & 3) as u8 != rpl {
            return Err(Exception::gp(sel_code(sel)));
        }
        let desc = self.read_descriptor(sel, Exception::gp)?;
        let d = Segment::from_descriptor(sel, desc);
        if d.is_system() || d.is_code() || d.attr & attr::RW == 0 || d.dpl() != rpl {
            return Err(Exception::gp(sel_code(sel)));
        }
        if !d.present() {
            return Err(Exception::ss(sel_code(sel)));
        }
        self.set_accessed(sel, desc)?;
        Ok(segment_from(sel, desc))
    }

    /// After a return to an outer privilege: data segments the new CPL may not use become
    /// null (data and non-conforming code with DPL < CPL).
    fn null_inaccessible_data_segments(&mut self) {
        let cpl = self.cpl();
        for s in [SegReg::Es, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
            let seg = &mut self.s.seg[s as usize];
            let conforming_code = seg.is_code() && seg.attr & attr::DC != 0;
            if seg.present() && !conforming_code && seg.dpl() < cpl {
                *seg = Segment::default();
            }
        }
    }

    /// Load SS and the stack pointer after a privilege-changing return.
    fn set_return_stack(&mut self, ss: Segment, sp: u64) {
        self.s.seg[SegReg::Ss as usize] = ss;
        let sb = self.stack_bits();
        self.set_gpr(RSP, sb, sp & mask(sb));
    }
}

fn retf(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = match i.code() {
        Code::Retfw | Code::Retfw_imm16 => 16,
        Code::Retfd | Code::Retfd_imm16 => 32,
        _ => 64,
    };
    let imm = if i.op_count() == 1 {
        u64::from(i.immediate16())
    } else {
        0
    };
    let bytes = u64::from(bits / 8);
    let offset = cpu.peek(0, bits)?;
    let sel = cpu.peek(bytes, bits)? as u16;
    if !cpu.s.protected() || cpu.s.v86() {
        let cs = real_code_segment(cpu, sel);
        cpu.enter_code(cs, offset)?;
        cpu.adjust_sp(2 * bytes + imm);
        return Ok(());
    }
    let desc = cpu.check_return_cs(sel)?;
    let cpl = cpu.cpl();
    let rpl = (sel & 3) as u8;
    let cs = segment_from(sel, desc);
    if rpl == cpl {
        cpu.set_accessed(sel, desc)?;
        cpu.enter_code(cs, offset)?;
        cpu.adjust_sp(2 * bytes + imm);
        return Ok(());
    }
    // Return to an outer privilege level: the caller's SS:rSP follow the parameters.
    let new_sp = cpu.peek(2 * bytes + imm, bits)?;
    let ss_sel = cpu.peek(3 * bytes + imm, bits)? as u16;
    let to64 = cpu.s.long_mode_active() && cs.long();
    let ss = cpu.check_return_ss(ss_sel, rpl, to64)?;
    cpu.set_accessed(sel, desc)?;
    cpu.enter_code(cs, offset)?;
    cpu.set_return_stack(ss, new_sp.wrapping_add(imm));
    cpu.null_inaccessible_data_segments();
    Ok(())
}

fn iret(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let bits = match i.code() {
        Code::Iretw => 16,
        Code::Iretd => 32,
        _ => 64,
    };
    let bytes = u64::from(bits / 8);
    let cur = cpu.flags();
    if !cpu.s.protected() || cpu.s.v86() {
        if cpu.s.v86() && cpu.s.iopl() < 3 {
            return Err(Exception::gp0());
        }
        let offset = cpu.peek(0, bits)?;
        let sel = cpu.peek(bytes, bits)? as u16;
        let image = cpu.peek(2 * bytes, bits)?;
        let mut writable: u64 = 0x25_7FD5 & !RF_NOT_MODELLED & mask(bits);
        if cpu.s.v86() {
            writable &= !flags::IOPL;
        }
        let cs = real_code_segment(cpu, sel);
        cpu.enter_code(cs, offset)?;
        cpu.adjust_sp(3 * bytes);
        cpu.s.set_rflags((cur & !writable) | (image & writable));
        return Ok(());
    }
    if cur & flags::NT != 0 {
        if cpu.s.long_mode_active() {
            return Err(Exception::gp0());
        }
        // Return from a nested task: switch to the task in the back link.
        let tr = cpu.s.tr;
        let link = cpu.read_sys(tr.base, 16)? as u16;
        if link & 4 != 0 {
            return Err(Exception::ts(sel_code(link)));
        }
        let desc = cpu.read_descriptor(link, Exception::ts)?;
        let ret = cpu.next_rip;
        return cpu.task_switch(link, desc, TaskSwitchReason::Iret, ret, None);
    }
    let offset = cpu.peek(0, bits)?;
    let sel = cpu.peek(bytes, bits)? as u16;
    let image = cpu.peek(2 * bytes, bits)?;
    let cpl = cpu.cpl();
    if !cpu.s.long_mode_active() && bits == 32 && image & flags::VM != 0 && cpl == 0 {
        return iret_to_v86(cpu, offset, sel, image);
    }
    let desc = cpu.check_return_cs(sel)?;
    let rpl = (sel & 3) as u8;
    let cs = segment_from(sel, desc);
    let to64 = cpu.s.long_mode_active() && cs.long();
    let pop_stack = rpl > cpl || cpu.long64();
    let new_stack = if pop_stack {
        let sp = cpu.peek(3 * bytes, bits)?;
        let ss_sel = cpu.peek(4 * bytes, bits)? as u16;
        Some((cpu.check_return_ss(ss_sel, rpl, to64)?, sp))
    } else {
        None
    };
    // RFLAGS under the privilege rules of the *current* CPL.
    let mut writable = flags::ARITH | flags::TF | flags::DF | flags::NT | flags::AC | flags::ID;
    if cpl == 0 {
        writable |= flags::IOPL | flags::VIF | flags::VIP;
    }
    if cpl <= cpu.s.iopl() {
        writable |= flags::IF;
    }
    writable &= mask(bits);
    cpu.set_accessed(sel, desc)?;
    cpu.enter_code(cs, offset)?;
    cpu.s.set_rflags((cur & !writable) | (image & writable));
    match new_stack {
        Some((ss, sp)) => {
            cpu.set_return_stack(ss, sp);
            if rpl > cpl {
                cpu.null_inaccessible_data_segments();
            }
        }
        None => cpu.adjust_sp(3 * bytes),
    }
    Ok(())
}

/// IRETD at CPL 0 with VM set in the popped EFLAGS: the frame continues with ESP, SS, ES,
/// DS, FS, GS; all segments are loaded as V86 segments.
fn iret_to_v86(cpu: &mut Cpu, offset: u64, sel: u16, image: u64) -> Result<(), Exception> {
    let mut rest = [0u64; 6];
    for (k, v) in rest.iter_mut().enumerate() {
        *v = cpu.peek(4 * (3 + k as u64), 32)?;
    }
    let [esp, ss, es, ds, fs, gs] = rest;
    if offset > 0xFFFF {
        return Err(Exception::gp0());
    }
    cpu.s
        .set_rflags((image & 0x3F_7FD7 & !RF_NOT_MODELLED) | flags::VM);
    let v86 = |sel: u64, code: bool| {
        let mut s = Segment::real_mode(sel as u16, code);
        s.attr |= 3 << attr::DPL_SHIFT;
        s
    };
    cpu.s.seg[SegReg::Cs as usize] = v86(u64::from(sel), true);
    for (reg, v) in [
        (SegReg::Ss, ss),
        (SegReg::Es, es),
        (SegReg::Ds, ds),
        (SegReg::Fs, fs),
        (SegReg::Gs, gs),
    ] {
        cpu.s.seg[reg as usize] = v86(v, false);
    }
    cpu.s.gpr[RSP] = esp & 0xFFFF_FFFF;
    cpu.next_rip = offset;
    cpu.step.end_block = true;
    Ok(())
}

/// LDS/LES/LFS/LGS/LSS r, m16:16/32/64: load the segment register, then the offset.
fn load_far_pointer(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    let seg = match i.mnemonic() {
        Mnemonic::Lds => SegReg::Ds,
        Mnemonic::Les => SegReg::Es,
        Mnemonic::Lfs => SegReg::Fs,
        Mnemonic::Lgs => SegReg::Gs,
        _ => SegReg::Ss,
    };
    let bits = cpu.op_bits(i, 0);
    let mseg = seg_of(i.memory_segment());
    let off = cpu.ea(i);
    let offset = cpu.read_mem(mseg, off, bits)?;
    let sel_off = off.wrapping_add(u64::from(bits / 8)) & mask(crate::cpu::addr_bits(i));
    let sel = cpu.read_mem(mseg, sel_off, 16)? as u16;
    cpu.load_segment(seg, sel)?;
    cpu.set_reg(i.op0_register(), offset);
    Ok(())
}
