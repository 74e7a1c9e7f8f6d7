//! Hardware task switching (legacy protected mode, 32-bit TSS): JMP/CALL to a TSS or a task
//! gate, interrupts and exceptions through IDT task gates, and IRET with EFLAGS.NT set
//! (return to the task in the back link). SDM Vol. 3 §8.3 ("Task Switching").
//!
//! 16-bit TSSs are not implemented (a task switch to or from one raises #GP with a warning).
//! Long mode has no task switching (the callers raise #GP there, as hardware does).

use crate::cpu::Cpu;
use crate::descriptor::sel_code;
use crane86_x86::flags;
use crane86_x86::regs::cr0;
use crane86_x86::segment::{attr, sys_type, Segment};
use crane86_x86::{Exception, SegReg};

/// What started a task switch; decides busy bits, NT and the back link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskSwitchReason {
    Jmp,
    Call,
    Iret,
    /// An interrupt or exception through a task gate.
    Interrupt,
}

/// 32-bit TSS field offsets.
mod tss32 {
    pub const BACK_LINK: u64 = 0x00;
    pub const CR3: u64 = 0x1C;
    pub const EIP: u64 = 0x20;
    pub const EFLAGS: u64 = 0x24;
    /// EAX; the other GPRs follow in hardware order, 4 bytes apart.
    pub const GPRS: u64 = 0x28;
    /// ES; CS, SS, DS, FS, GS follow 4 bytes apart.
    pub const SEGS: u64 = 0x48;
    pub const LDT: u64 = 0x60;
    /// Minimum limit of a 32-bit TSS.
    pub const MIN_LIMIT: u32 = 0x67;
}

/// The architectural state a task switch loads from the new TSS.
struct TaskImage {
    cr3: u64,
    eip: u64,
    eflags: u64,
    gprs: [u64; 8],
    segs: [u16; 6],
    ldt: u16,
}

impl Cpu<'_> {
    /// Switch to the task whose TSS descriptor (`tss_desc`, selector `tss_sel`) is given.
    /// `ret_eip` is the EIP saved in the outgoing task; `error_code` is pushed on the new
    /// task's stack (exceptions through a task gate). On success RIP is the new task's EIP
    /// (also in `next_rip`).
    pub fn task_switch(
        &mut self,
        tss_sel: u16,
        tss_desc: u64,
        reason: TaskSwitchReason,
        ret_eip: u64,
        error_code: Option<u32>,
    ) -> Result<(), Exception> {
        let new = Segment::from_descriptor(tss_sel, tss_desc);
        let ty = new.seg_type();
        if !new.is_system() || !matches!(ty, sys_type::TSS32_AVAIL | sys_type::TSS32_BUSY) {
            if matches!(ty, sys_type::TSS16_AVAIL | sys_type::TSS16_BUSY) && new.is_system() {
                tracing::warn!(
                    selector = format_args!("{tss_sel:#x}"),
                    "task switch to a 16-bit TSS is not implemented; raising #GP"
                );
            }
            return Err(Exception::gp(sel_code(tss_sel)));
        }
        if !new.present() {
            return Err(Exception::np(sel_code(tss_sel)));
        }
        if new.limit < tss32::MIN_LIMIT {
            return Err(Exception::ts(sel_code(tss_sel)));
        }
        let busy = ty == sys_type::TSS32_BUSY;
        if reason == TaskSwitchReason::Iret {
            if !busy {
                return Err(Exception::ts(sel_code(tss_sel)));
            }
        } else if busy {
            return Err(Exception::gp(sel_code(tss_sel)));
        }
        let old = self.s.tr;
        if old.seg_type() != sys_type::TSS32_BUSY || old.limit < tss32::MIN_LIMIT {
            tracing::warn!(
                tr = format_args!("{:#x}", old.selector),
                "task switch from a task without a 32-bit TSS is not implemented; raising #TS"
            );
            return Err(Exception::ts(sel_code(old.selector)));
        }

        // Read the incoming image first: a fault here leaves everything unchanged.
        let image = self.read_task_image(new.base)?;

        // Save the outgoing task.
        let mut out_flags = self.flags();
        if matches!(reason, TaskSwitchReason::Jmp | TaskSwitchReason::Iret) {
            out_flags &= !flags::NT;
        }
        self.write_sys(old.base + tss32::EIP, 32, ret_eip & 0xFFFF_FFFF)?;
        self.write_sys(old.base + tss32::EFLAGS, 32, out_flags & 0xFFFF_FFFF)?;
        for r in 0..8 {
            let v = self.s.gpr[r] & 0xFFFF_FFFF;
            self.write_sys(old.base + tss32::GPRS + 4 * r as u64, 32, v)?;
        }
        for (k, s) in SegReg::ALL.iter().enumerate() {
            let v = u64::from(self.s.seg[*s as usize].selector);
            self.write_sys(old.base + tss32::SEGS + 4 * k as u64, 16, v)?;
        }
        if matches!(reason, TaskSwitchReason::Jmp | TaskSwitchReason::Iret) {
            self.set_tss_busy(old.selector, false)?;
        }
        let mut eflags = image.eflags;
        if matches!(reason, TaskSwitchReason::Call | TaskSwitchReason::Interrupt) {
            self.write_sys(new.base + tss32::BACK_LINK, 16, u64::from(old.selector))?;
            eflags |= flags::NT;
        }
        if reason != TaskSwitchReason::Iret {
            self.set_tss_busy(tss_sel, true)?;
        }

        // Commit: from here on faults belong to the new task.
        let mut tr = new;
        tr.attr = (tr.attr & !attr::TYPE_MASK) | u16::from(sys_type::TSS32_BUSY);
        self.s.tr = tr;
        self.s.cr0 |= cr0::TS;
        if self.s.paging() && image.cr3 != self.s.cr3 {
            self.s.cr3 = image.cr3;
            self.tlb.flush_non_global();
        }
        for (r, v) in image.gprs.iter().enumerate() {
            self.s.gpr[r] = *v;
        }
        self.s.set_rflags(eflags | flags::RESERVED1);
        self.s.rip = image.eip;
        self.next_rip = image.eip;
        self.step.end_block = true;
        // Selectors first (with unusable caches), then the descriptor checks.
        for (k, s) in SegReg::ALL.iter().enumerate() {
            self.s.seg[*s as usize] = Segment {
                selector: image.segs[k],
                ..Segment::default()
            };
        }
        self.load_task_ldt(image.ldt)?;
        self.load_task_segments(&image.segs)?;
        if let Some(code) = error_code {
            let bits = 32;
            self.push(u64::from(code), bits)?;
        }
        let cs_limit = u64::from(self.s.seg[SegReg::Cs as usize].limit);
        if self.s.rip > cs_limit {
            return Err(Exception::gp0());
        }
        Ok(())
    }

    fn read_task_image(&mut self, base: u64) -> Result<TaskImage, Exception> {
        let mut gprs = [0u64; 8];
        for (r, g) in gprs.iter_mut().enumerate() {
            *g = self.read_sys(base + tss32::GPRS + 4 * r as u64, 32)?;
        }
        let mut segs = [0u16; 6];
        for (k, s) in segs.iter_mut().enumerate() {
            *s = self.read_sys(base + tss32::SEGS + 4 * k as u64, 16)? as u16;
        }
        Ok(TaskImage {
            cr3: self.read_sys(base + tss32::CR3, 32)?,
            eip: self.read_sys(base + tss32::EIP, 32)?,
            eflags: self.read_sys(base + tss32::EFLAGS, 32)?,
            gprs,
            segs,
            ldt: self.read_sys(base + tss32::LDT, 16)? as u16,
        })
    }

    /// Set or clear the busy bit of the TSS descriptor `sel` in the GDT.
    fn set_tss_busy(&mut self, sel: u16, busy: bool) -> Result<(), Exception> {
        let addr = self
            .descriptor_addr(sel & !4)
            .ok_or(Exception::ts(sel_code(sel)))?;
        let b = self.read_sys(addr + 5, 8)?;
        let nb = if busy { b | 2 } else { b & !2 };
        self.write_sys(addr + 5, 8, nb)
    }

    fn load_task_ldt(&mut self, sel: u16) -> Result<(), Exception> {
        if sel & 0xFFFC == 0 {
            self.s.ldtr = Segment {
                selector: sel,
                ..Segment::default()
            };
            return Ok(());
        }
        if sel & 4 != 0 {
            return Err(Exception::ts(sel_code(sel)));
        }
        let desc = self.read_descriptor(sel, Exception::ts)?;
        let d = Segment::from_descriptor(sel, desc);
        if !d.is_system() || d.seg_type() != sys_type::LDT {
            return Err(Exception::ts(sel_code(sel)));
        }
        if !d.present() {
            return Err(Exception::ts(sel_code(sel)));
        }
        self.s.ldtr = d;
        Ok(())
    }

    /// Load CS, SS, DS, ES, FS, GS of the new task with the task-switch checks (#TS for
    /// invalid selectors, #NP / #SS for not-present segments).
    fn load_task_segments(&mut self, segs: &[u16; 6]) -> Result<(), Exception> {
        if self.s.v86() {
            for (k, s) in SegReg::ALL.iter().enumerate() {
                let mut seg = Segment::real_mode(segs[k], *s == SegReg::Cs);
                seg.attr |= 3 << attr::DPL_SHIFT;
                self.s.seg[*s as usize] = seg;
            }
            return Ok(());
        }
        let cs_sel = segs[SegReg::Cs as usize];
        let cpl = (cs_sel & 3) as u8;
        if cs_sel & 0xFFFC == 0 {
            return Err(Exception::ts(sel_code(cs_sel)));
        }
        let desc = self.read_descriptor(cs_sel, Exception::ts)?;
        let cs = Segment::from_descriptor(cs_sel, desc);
        let conforming = cs.attr & attr::DC != 0;
        if !cs.is_code() || (conforming && cs.dpl() > cpl) || (!conforming && cs.dpl() != cpl) {
            return Err(Exception::ts(sel_code(cs_sel)));
        }
        if !cs.present() {
            return Err(Exception::np(sel_code(cs_sel)));
        }
        self.set_accessed(cs_sel, desc)?;
        self.s.seg[SegReg::Cs as usize] = crate::descriptor::segment_from(cs_sel, desc);
        // SS and the data segments follow the ordinary load rules at the new CPL, with
        // #GP reported as #TS.
        for s in [SegReg::Ss, SegReg::Ds, SegReg::Es, SegReg::Fs, SegReg::Gs] {
            let sel = segs[s as usize];
            self.load_segment(s, sel).map_err(|e| {
                if e.vector == crane86_x86::Vector::GeneralProtection as u8 {
                    Exception::ts(sel_code(sel))
                } else {
                    e
                }
            })?;
        }
        Ok(())
    }
}
