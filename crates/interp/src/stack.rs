//! Stack access: PUSH/POP through SS with the current stack-address size.

use crate::cpu::{mask, Bits, Cpu};
use crane86_x86::regs::gpr::RSP;
use crane86_x86::{Exception, SegReg};

impl Cpu<'_> {
    /// Push `bits` of `v` on SS:rSP. rSP is updated only if the write succeeds.
    #[inline]
    pub fn push(&mut self, v: u64, bits: Bits) -> Result<(), Exception> {
        let sb = self.stack_bits();
        let sp = self.s.gpr[RSP].wrapping_sub(u64::from(bits / 8)) & mask(sb);
        self.write_mem(SegReg::Ss, sp, bits, v)?;
        self.set_gpr(RSP, sb, sp);
        Ok(())
    }

    /// Pop `bits` from SS:rSP.
    #[inline]
    pub fn pop(&mut self, bits: Bits) -> Result<u64, Exception> {
        let v = self.peek(0, bits)?;
        self.adjust_sp(u64::from(bits / 8));
        Ok(v)
    }

    /// Read `bits` at SS:rSP+`offset` without popping.
    #[inline]
    pub fn peek(&mut self, offset: u64, bits: Bits) -> Result<u64, Exception> {
        let sb = self.stack_bits();
        let sp = self.s.gpr[RSP].wrapping_add(offset) & mask(sb);
        self.read_mem(SegReg::Ss, sp, bits)
    }

    /// rSP += delta at the stack-address size.
    #[inline]
    pub fn adjust_sp(&mut self, delta: u64) {
        let sb = self.stack_bits();
        let sp = self.s.gpr[RSP].wrapping_add(delta) & mask(sb);
        self.set_gpr(RSP, sb, sp);
    }
}
