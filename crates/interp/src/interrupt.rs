//! Exception and interrupt delivery, in one place for every mode: the real-mode IVT,
//! protected-mode IDT interrupt/trap gates (with stack switch from the TSS and V86 exits)
//! and task gates (`ops::tasking`),
//! the long-mode IDT (64-bit frames, IST), and the double-fault / triple-fault rules.

use crate::cpu::Cpu;
use crate::descriptor::{segment_from, sel_code};
use crate::ops::tasking::TaskSwitchReason;
use crane86_x86::flags;
use crane86_x86::regs::gpr::RSP;
use crane86_x86::segment::{attr, sys_type, Segment};
use crane86_x86::{Exception, SegReg, Vector};

/// Where an event comes from; decides the EXT bit, DPL checks and the return address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventSource {
    /// A fault or trap raised by the CPU (EXT = 1).
    Exception,
    /// INT n / INT3 / INTO (gate DPL checked against CPL, EXT = 0).
    Software,
    /// An external interrupt from the PIC/APIC (EXT = 1).
    External,
}

impl Cpu<'_> {
    /// Deliver a fault raised by the instruction at `s.rip` (RIP not advanced).
    pub fn raise(&mut self, e: Exception) {
        self.stats.exceptions += 1;
        let rip = self.s.rip;
        self.deliver_event(e.vector, e.error_code, EventSource::Exception, rip);
    }

    /// Deliver a trap after the instruction completed (`s.rip` already advanced).
    pub fn deliver_trap(&mut self, vector: u8) {
        let rip = self.s.rip;
        self.deliver_event(vector, None, EventSource::Exception, rip);
    }

    pub fn deliver_external(&mut self, vector: u8) {
        let rip = self.s.rip;
        self.deliver_event(vector, None, EventSource::External, rip);
    }

    /// INT n / INT3 / INTO from an instruction handler: returns to `next_rip`. Errors raised
    /// while delivering are returned as the instruction's fault.
    pub fn software_interrupt(&mut self, vector: u8) -> Result<(), Exception> {
        let ret = self.next_rip;
        self.try_deliver(vector, None, EventSource::Software, ret)?;
        self.next_rip = self.s.rip;
        self.step.delivered = true;
        Ok(())
    }

    fn deliver_event(&mut self, vector: u8, code: Option<u32>, src: EventSource, ret: u64) {
        self.s.halted = false;
        self.step.end_block = true;
        let (mut vector, mut code, mut src) = (vector, code, src);
        // A fault while delivering either escalates to #DF (SDM Vol. 3 Table 6-5) or, when the
        // pair is benign, is delivered instead. A fault while delivering #DF shuts down. The
        // bound only guards against a pathological chain of benign faults.
        for _ in 0..8 {
            let Err(next) = self.try_deliver(vector, code, src, ret) else {
                return;
            };
            if vector == Vector::DoubleFault as u8 {
                self.triple_fault = Some(next);
                return;
            }
            (vector, code) = if escalates_to_double_fault(vector, next.vector) {
                (Vector::DoubleFault as u8, Some(0))
            } else {
                (next.vector, next.error_code)
            };
            src = EventSource::Exception;
        }
        self.triple_fault = Some(Exception::with_code(Vector::DoubleFault, 0));
    }

    /// One delivery attempt; any fault on the way is returned with rSP unchanged (a frame
    /// pushed halfway must not move the stack the next delivery attempt uses).
    fn try_deliver(
        &mut self,
        vector: u8,
        code: Option<u32>,
        src: EventSource,
        ret: u64,
    ) -> Result<(), Exception> {
        let saved_rsp = self.s.gpr[RSP];
        let tr = self.s.tr.selector;
        let r = self.try_deliver_once(vector, code, src, ret);
        if r.is_err() && self.s.tr.selector == tr {
            self.s.gpr[RSP] = saved_rsp;
        }
        r.map_err(|mut e| {
            // A fault while delivering an event the program did not cause (an exception or an
            // external interrupt) carries EXT = 1 in its selector error code.
            let selector_code = matches!(e.vector, 10..=13);
            if src != EventSource::Software && selector_code {
                e.error_code = e.error_code.map(|c| c | 1);
            }
            e
        })
    }

    fn try_deliver_once(
        &mut self,
        vector: u8,
        code: Option<u32>,
        src: EventSource,
        ret: u64,
    ) -> Result<(), Exception> {
        if !self.s.protected() {
            return self.deliver_real(vector, ret);
        }
        let ext = u32::from(src != EventSource::Software);
        let idt_code = u32::from(vector) * 8 + 2 + ext;
        if self.s.v86() && src == EventSource::Software && self.s.iopl() < 3 {
            // INT n in V86 mode with IOPL < 3 (no VME redirection): #GP(0).
            return Err(Exception::gp0());
        }
        if self.s.long_mode_active() {
            return self.deliver_long(vector, code, src, ret, ext);
        }
        let entry = u64::from(vector) * 8;
        if entry + 7 > u64::from(self.s.idtr.limit) {
            return Err(Exception::gp(idt_code));
        }
        let gate = self.read_sys(self.s.idtr.base + entry, 64)?;
        let gtype = ((gate >> 40) & 0xF) as u8;
        let gdpl = ((gate >> 45) & 3) as u8;
        let present = gate & (1 << 47) != 0;
        let is32 = match gtype {
            sys_type::INT_GATE16 | sys_type::TRAP_GATE16 => false,
            sys_type::INT_GATE32 | sys_type::TRAP_GATE32 => true,
            sys_type::TASK_GATE => {
                if src == EventSource::Software && gdpl < self.s.cpl() {
                    return Err(Exception::gp(idt_code));
                }
                if !present {
                    return Err(Exception::np(idt_code));
                }
                let tss_sel = ((gate >> 16) & 0xFFFF) as u16;
                if tss_sel & 4 != 0 {
                    return Err(Exception::gp(sel_code(tss_sel)));
                }
                let desc = self.read_descriptor(tss_sel, Exception::gp)?;
                return self.task_switch(tss_sel, desc, TaskSwitchReason::Interrupt, ret, code);
            }
            _ => return Err(Exception::gp(idt_code)),
        };
        if src == EventSource::Software && gdpl < self.s.cpl() {
            return Err(Exception::gp(idt_code));
        }
        if !present {
            return Err(Exception::np(idt_code));
        }
        let interrupt_gate = gtype & 1 == 0;
        let sel = ((gate >> 16) & 0xFFFF) as u16;
        let offset = (gate & 0xFFFF) | ((gate >> 32) & 0xFFFF_0000);
        let (cs_desc, cs) = self.gate_target(sel, ext)?;
        let dpl = cs.dpl();
        let conforming = cs.attr & attr::DC != 0;
        let cpl = self.s.cpl();
        let bits = if is32 { 32 } else { 16 };
        let old_flags = self.s.rflags();
        let from_v86 = self.s.v86();

        if !conforming && dpl < cpl {
            // Inter-privilege: switch to the TSS stack of the new level.
            if from_v86 && dpl != 0 {
                return Err(Exception::gp(sel_code(sel)));
            }
            let (new_ss_sel, new_sp) = self.tss_stack(dpl)?;
            let new_ss = self.check_tss_ss(new_ss_sel, dpl)?;
            let old_ss = self.s.seg[SegReg::Ss as usize];
            let old_sp = self.s.gpr[RSP];
            let mut frame: Vec<u64> = Vec::with_capacity(10);
            if from_v86 {
                for s in [SegReg::Gs, SegReg::Fs, SegReg::Ds, SegReg::Es] {
                    frame.push(u64::from(self.s.seg[s as usize].selector));
                }
            }
            frame.extend([
                u64::from(old_ss.selector),
                old_sp,
                old_flags,
                u64::from(self.s.seg[SegReg::Cs as usize].selector),
                ret,
            ]);
            if let Some(c) = code {
                frame.push(u64::from(c));
            }
            let sp_mask: u64 = if new_ss.big() { 0xFFFF_FFFF } else { 0xFFFF };
            let mut sp = new_sp;
            let user = dpl == 3;
            let nbytes = u64::from(bits / 8);
            // Check the whole frame fits before writing (a #SS here names the new SS).
            let total = nbytes * frame.len() as u64;
            if !stack_fits(&new_ss, sp.wrapping_sub(total) & sp_mask, total) {
                return Err(Exception::ss(sel_code(new_ss_sel)));
            }
            for v in frame {
                sp = sp.wrapping_sub(nbytes) & sp_mask;
                self.write_lin_as(new_ss.base.wrapping_add(sp) & 0xFFFF_FFFF, bits, v, user)?;
            }
            if from_v86 {
                for s in [SegReg::Gs, SegReg::Fs, SegReg::Ds, SegReg::Es] {
                    self.s.seg[s as usize] = Segment::default();
                }
            }
            self.s.seg[SegReg::Ss as usize] = new_ss;
            if new_ss.big() {
                self.s.gpr[RSP] = sp;
            } else {
                self.s.gpr[RSP] = (self.s.gpr[RSP] & !0xFFFF) | sp;
            }
        } else {
            if from_v86 {
                return Err(Exception::gp(sel_code(sel)));
            }
            // Same privilege: push on the current stack.
            self.push(old_flags, bits)?;
            self.push(u64::from(self.s.seg[SegReg::Cs as usize].selector), bits)?;
            self.push(ret, bits)?;
            if let Some(c) = code {
                self.push(u64::from(c), bits)?;
            }
        }
        self.set_accessed(sel, cs_desc)?;
        let new_cpl = if conforming { cpl } else { dpl };
        self.s.seg[SegReg::Cs as usize] = segment_from((sel & !3) | u16::from(new_cpl), cs_desc);
        self.s.rip = if is32 { offset } else { offset & 0xFFFF };
        let mut f = old_flags & !(flags::TF | flags::NT | flags::VM | flags::RF);
        if interrupt_gate {
            f &= !flags::IF;
        }
        self.s.set_rflags(f);
        self.tlb_mode_changed();
        Ok(())
    }

    fn deliver_real(&mut self, vector: u8, ret: u64) -> Result<(), Exception> {
        let entry = u64::from(vector) * 4;
        if entry + 3 > u64::from(self.s.idtr.limit) {
            return Err(Exception::gp(u32::from(vector) * 8 + 2));
        }
        let ivt = self.read_lin(self.s.idtr.base + entry, 32)?;
        let f = self.s.rflags();
        self.push(f & 0xFFFF, 16)?;
        self.push(u64::from(self.s.seg[SegReg::Cs as usize].selector), 16)?;
        self.push(ret & 0xFFFF, 16)?;
        let sel = (ivt >> 16) as u16;
        let cs = &mut self.s.seg[SegReg::Cs as usize];
        cs.selector = sel;
        cs.base = u64::from(sel) << 4;
        self.s.rip = ivt & 0xFFFF;
        self.s
            .set_rflags(f & !(flags::IF | flags::TF | flags::AC | flags::RF));
        Ok(())
    }

    /// Validate the code segment an IDT gate points to.
    fn gate_target(&mut self, sel: u16, ext: u32) -> Result<(u64, Segment), Exception> {
        if sel & 0xFFFC == 0 {
            return Err(Exception::gp(ext));
        }
        let desc = self.read_descriptor(sel, Exception::gp)?;
        let cs = Segment::from_descriptor(sel, desc);
        if !cs.is_code() || cs.dpl() > self.s.cpl() {
            return Err(Exception::gp(sel_code(sel) | ext));
        }
        if !cs.present() {
            return Err(Exception::np(sel_code(sel) | ext));
        }
        Ok((desc, cs))
    }

    /// Validate the stack segment named by the TSS for a privilege change to `dpl`.
    pub(crate) fn check_tss_ss(&mut self, sel: u16, dpl: u8) -> Result<Segment, Exception> {
        if sel & 0xFFFC == 0 {
            return Err(Exception::ts(sel_code(sel)));
        }
        let desc = self.read_descriptor(sel, Exception::ts)?;
        let ss = Segment::from_descriptor(sel, desc);
        if (sel & 3) as u8 != dpl
            || ss.dpl() != dpl
            || ss.is_system()
            || ss.is_code()
            || ss.attr & attr::RW == 0
        {
            return Err(Exception::ts(sel_code(sel)));
        }
        if !ss.present() {
            return Err(Exception::ss(sel_code(sel)));
        }
        self.set_accessed(sel, desc)?;
        Ok(segment_from(sel, desc))
    }

    fn deliver_long(
        &mut self,
        vector: u8,
        code: Option<u32>,
        src: EventSource,
        ret: u64,
        ext: u32,
    ) -> Result<(), Exception> {
        let idt_code = u32::from(vector) * 8 + 2 + ext;
        let entry = u64::from(vector) * 16;
        if entry + 15 > u64::from(self.s.idtr.limit) {
            return Err(Exception::gp(idt_code));
        }
        let lo = self.read_sys(self.s.idtr.base + entry, 64)?;
        let hi = self.read_sys(self.s.idtr.base + entry + 8, 64)?;
        let gtype = ((lo >> 40) & 0xF) as u8;
        let gdpl = ((lo >> 45) & 3) as u8;
        if gtype != sys_type::INT_GATE32 && gtype != sys_type::TRAP_GATE32 {
            return Err(Exception::gp(idt_code));
        }
        if src == EventSource::Software && gdpl < self.s.cpl() {
            return Err(Exception::gp(idt_code));
        }
        if lo & (1 << 47) == 0 {
            return Err(Exception::np(idt_code));
        }
        let sel = ((lo >> 16) & 0xFFFF) as u16;
        let offset = (lo & 0xFFFF) | ((lo >> 32) & 0xFFFF_0000) | (hi << 32);
        let ist = (lo >> 32) & 7;
        let (cs_desc, cs) = self.gate_target(sel, ext)?;
        if !cs.long() || cs.big() {
            return Err(Exception::gp(sel_code(sel) | ext));
        }
        let cpl = self.s.cpl();
        let conforming = cs.attr & attr::DC != 0;
        let new_cpl = if conforming { cpl } else { cs.dpl() };
        let old_ss = u64::from(self.s.seg[SegReg::Ss as usize].selector);
        let old_rsp = self.s.gpr[RSP];
        let old_flags = self.s.rflags();
        let old_cs = u64::from(self.s.seg[SegReg::Cs as usize].selector);
        let mut rsp = if ist != 0 {
            self.tss64_read(0x24 + 8 * (ist - 1))?
        } else if new_cpl < cpl {
            self.tss64_read(4 + 8 * u64::from(new_cpl))?
        } else {
            old_rsp
        };
        rsp &= !0xF;
        let mut frame = vec![old_ss, old_rsp, old_flags, old_cs, ret];
        if let Some(c) = code {
            frame.push(u64::from(c));
        }
        let user = new_cpl == 3;
        for v in frame {
            rsp = rsp.wrapping_sub(8);
            if ((rsp as i64) << 16 >> 16) as u64 != rsp {
                return Err(Exception::ss(0));
            }
            self.write_lin_as(rsp, 64, v, user)?;
        }
        self.set_accessed(sel, cs_desc)?;
        if new_cpl < cpl {
            // SS becomes a null selector with RPL = new CPL.
            self.s.seg[SegReg::Ss as usize] = Segment {
                selector: u16::from(new_cpl),
                attr: 0,
                ..Segment::default()
            };
        }
        self.s.gpr[RSP] = rsp;
        self.s.seg[SegReg::Cs as usize] = segment_from((sel & !3) | u16::from(new_cpl), cs_desc);
        self.s.rip = offset;
        let mut f = old_flags & !(flags::TF | flags::NT | flags::VM | flags::RF);
        if gtype == sys_type::INT_GATE32 {
            f &= !flags::IF;
        }
        self.s.set_rflags(f);
        self.tlb_mode_changed();
        Ok(())
    }

    /// CPL or mode may have changed: the TLB set used for permission checks follows CPL
    /// automatically; only the decoded-block key depends on CS, so end the block.
    pub fn tlb_mode_changed(&mut self) {
        self.step.end_block = true;
    }
}

/// Whether `len` bytes at offset `sp` fit in stack segment `ss` (expand-up or expand-down).
pub(crate) fn stack_fits(ss: &Segment, sp: u64, len: u64) -> bool {
    let last = sp + len - 1;
    if ss.attr & attr::DC != 0 {
        let upper: u64 = if ss.big() { 0xFFFF_FFFF } else { 0xFFFF };
        sp > u64::from(ss.limit) && last <= upper
    } else {
        last <= u64::from(ss.limit)
    }
}

/// Whether a fault `second` raised while delivering `first` becomes a double fault:
/// contributory after contributory, or contributory / #PF after #PF.
fn escalates_to_double_fault(first: u8, second: u8) -> bool {
    let pf = Vector::PageFault as u8;
    let second_serious = Vector::is_contributory(second) || second == pf;
    (Vector::is_contributory(first) && Vector::is_contributory(second))
        || (first == pf && second_serious)
}
