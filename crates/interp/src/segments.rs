//! Loading data and stack segment registers (MOV Sreg, POP Sreg, LDS/LES/LFS/LGS/LSS) with
//! the protected-mode checks. Code-segment loads belong to far transfers (`ops::far`).

use crate::cpu::Cpu;
use crate::descriptor::{segment_from, sel_code};
use crane86_x86::segment::{attr, Segment};
use crane86_x86::{Exception, SegReg};

impl Cpu<'_> {
    /// Load segment register `seg` (not CS) with `sel`.
    pub fn load_segment(&mut self, seg: SegReg, sel: u16) -> Result<(), Exception> {
        if !self.s.protected() || self.s.v86() {
            let v86 = self.s.v86();
            let s = &mut self.s.seg[seg as usize];
            if v86 {
                // V86 segments: base = sel * 16, 64 KiB, DPL 3.
                *s = Segment::real_mode(sel, false);
                s.attr |= 3 << attr::DPL_SHIFT;
            } else {
                // Real mode keeps the cached limit and attributes ("unreal mode").
                s.selector = sel;
                s.base = u64::from(sel) << 4;
            }
            return Ok(());
        }
        let cpl = self.cpl();
        let rpl = (sel & 3) as u8;
        if sel & 0xFFFC == 0 {
            if seg == SegReg::Ss && !(self.long64() && cpl != 3 && rpl == cpl) {
                return Err(Exception::gp0());
            }
            self.s.seg[seg as usize] = Segment {
                selector: sel,
                ..Segment::default()
            };
            return Ok(());
        }
        let desc = self.read_descriptor(sel, Exception::gp)?;
        let d = Segment::from_descriptor(sel, desc);
        if seg == SegReg::Ss {
            if rpl != cpl
                || d.dpl() != cpl
                || d.is_system()
                || d.is_code()
                || d.attr & attr::RW == 0
            {
                return Err(Exception::gp(sel_code(sel)));
            }
            if !d.present() {
                return Err(Exception::ss(sel_code(sel)));
            }
        } else {
            if d.is_system() || (d.is_code() && d.attr & attr::RW == 0) {
                return Err(Exception::gp(sel_code(sel)));
            }
            let conforming_code = d.is_code() && d.attr & attr::DC != 0;
            if !conforming_code && (rpl > d.dpl() || cpl > d.dpl()) {
                return Err(Exception::gp(sel_code(sel)));
            }
            if !d.present() {
                return Err(Exception::np(sel_code(sel)));
            }
        }
        self.set_accessed(sel, desc)?;
        self.s.seg[seg as usize] = segment_from(sel, desc);
        Ok(())
    }
}
