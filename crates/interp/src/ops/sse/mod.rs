//! The SIMD instruction sets on the legacy (non-VEX) encodings: MMX, SSE, SSE2, SSE3, SSSE3,
//! SSE4.1 and SSE4.2, plus the state instructions (LDMXCSR/STMXCSR, FXSAVE/FXRSTOR,
//! XSAVE/XRSTOR, XGETBV/XSETBV, EMMS). This module resolves handlers and owns what every
//! SIMD handler shares: the availability checks (#UD / #NM / pending #MF), operand access to
//! XMM and MM registers and to memory with the 16-byte alignment rule, and the MMX side
//! effects on the x87 state.
//!
//! | module        | what lives there |
//! |---------------|------------------|
//! | [`lanes`]     | lane extraction and saturation helpers over `u128` vectors |
//! | [`int`]       | packed integer arithmetic, compares, logic, shifts, packs, SSSE3/SSE4.1 integer ops |
//! | [`shuffle`]   | data movement and rearrangement: moves, unpacks, shuffles, blends, inserts/extracts |
//! | [`float`]     | IEEE single/double arithmetic under MXCSR (rounding, DAZ/FTZ, flags, x86 NaN rules) |
//! | [`fp`]        | packed and scalar floating-point instructions built on [`float`] |
//! | [`convert`]   | CVT* conversions between integers, singles and doubles |
//! | [`strings`]   | SSE4.2 PCMPxSTRx and CRC32 |
//! | [`state`]     | MXCSR, FXSAVE/FXRSTOR, XSAVE/XRSTOR, XGETBV/XSETBV, EMMS |

mod convert;
pub mod float;
mod fp;
mod int;
mod lanes;
mod shuffle;
mod state;
mod strings;

use crate::cpu::{seg_of, Cpu};
use crate::exec::Handler;
use crane86_x86::fpu::fsw;
use crane86_x86::regs::{cr0, cr4};
use crane86_x86::{Exception, Vector};
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

pub fn handler(i: &Instruction) -> Option<Handler> {
    state::handler(i)
        .or_else(|| shuffle::handler(i))
        .or_else(|| int::handler(i))
        .or_else(|| fp::handler(i))
        .or_else(|| convert::handler(i))
        .or_else(|| strings::handler(i))
}

/// XMM register number of an XMM register operand.
fn xmm_index(r: Register) -> usize {
    (r as usize - Register::XMM0 as usize) & 15
}

/// MM register number of an MMX register operand.
fn mm_index(r: Register) -> usize {
    (r as usize - Register::MM0 as usize) & 7
}

/// The instruction names an MMX register, so it runs in MMX mode (x87 checks, and TOP = 0
/// with all tags valid afterwards).
fn uses_mmx(i: &Instruction) -> bool {
    (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Register && i.op_register(n).is_mm())
}

/// Legacy-SSE 16-byte memory operands must be 16-byte aligned (#GP(0)), except for the
/// explicitly unaligned forms and the SSE4.2 string compares.
fn alignment_exempt(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Movups
            | Movupd
            | Movdqu
            | Lddqu
            | Pcmpestri
            | Pcmpestri64
            | Pcmpestrm
            | Pcmpestrm64
            | Pcmpistri
            | Pcmpistrm
    )
}

impl Cpu<'_> {
    /// Entry checks of every SSE instruction: #UD when CR0.EM is set or CR4.OSFXSR is clear,
    /// #NM when CR0.TS is set. MMX forms instead follow the x87 rules (#UD on CR0.EM, #NM on
    /// CR0.TS, #MF when an unmasked x87 exception is pending) and enter MMX mode.
    pub(crate) fn simd_begin(&mut self, i: &Instruction) -> Result<(), Exception> {
        if self.s.cr0 & cr0::EM != 0 {
            return Err(Exception::ud());
        }
        if uses_mmx(i) {
            if self.s.cr0 & cr0::TS != 0 {
                return Err(Exception::nm());
            }
            if self.s.fpu.fsw & fsw::ES != 0 {
                return Err(Exception::new(Vector::X87Fpu));
            }
            self.enter_mmx_mode();
            return Ok(());
        }
        if self.s.cr4 & cr4::OSFXSR == 0 {
            return Err(Exception::ud());
        }
        if self.s.cr0 & cr0::TS != 0 {
            return Err(Exception::nm());
        }
        Ok(())
    }

    /// Every MMX instruction (except EMMS) sets TOP to 0 and tags every register valid.
    fn enter_mmx_mode(&mut self) {
        self.s.fpu.set_top(0);
        self.s.fpu.ftw = 0;
    }

    /// Linear address of the memory operand for `bytes` bytes, with the alignment rule.
    pub(crate) fn simd_mem_lin(
        &mut self,
        i: &Instruction,
        bytes: u32,
        write: bool,
    ) -> Result<u64, Exception> {
        let off = self.ea(i);
        let lin = self.linear(seg_of(i.memory_segment()), off, bytes, write)?;
        if bytes == 16 && lin & 15 != 0 && !alignment_exempt(i.mnemonic()) {
            return Err(Exception::gp0());
        }
        Ok(lin)
    }

    /// Read `bytes` (1..=16) at a linear address, little-endian.
    pub(crate) fn read_lin_u128(&mut self, lin: u64, bytes: u32) -> Result<u128, Exception> {
        Ok(match bytes {
            16 => {
                let lo = self.read_lin(lin, 64)?;
                let hi = self.read_lin(lin.wrapping_add(8), 64)?;
                u128::from(lo) | (u128::from(hi) << 64)
            }
            1 | 2 | 4 | 8 => u128::from(self.read_lin(lin, bytes * 8)?),
            _ => self.x87_read_bytes(lin, bytes)?,
        })
    }

    /// Write `bytes` (1..=16) at a linear address; a 16-byte store is probed first so a fault
    /// leaves memory unchanged.
    pub(crate) fn write_lin_u128(
        &mut self,
        lin: u64,
        bytes: u32,
        v: u128,
    ) -> Result<(), Exception> {
        match bytes {
            16 => {
                self.read_lin_for_write(lin, 8)?;
                self.read_lin_for_write(lin.wrapping_add(15), 8)?;
                self.write_lin(lin, 64, v as u64)?;
                self.write_lin(lin.wrapping_add(8), 64, (v >> 64) as u64)
            }
            1 | 2 | 4 | 8 => self.write_lin(lin, bytes * 8, v as u64),
            _ => self.x87_write_bytes(lin, bytes, v),
        }
    }

    /// Read operand `n`: an XMM or MM register, a GPR, memory of the instruction's memory
    /// size (zero-extended), or an immediate.
    pub(crate) fn vread(&mut self, i: &Instruction, n: u32) -> Result<u128, Exception> {
        match i.op_kind(n) {
            OpKind::Register => {
                let r = i.op_register(n);
                Ok(if r.is_xmm() {
                    self.s.fpu.xmm[xmm_index(r)]
                } else if r.is_mm() {
                    u128::from(self.s.fpu.st[mm_index(r)].signif)
                } else {
                    u128::from(self.reg(r))
                })
            }
            OpKind::Memory => {
                let bytes = i.memory_size().size() as u32;
                let lin = self.simd_mem_lin(i, bytes, false)?;
                self.read_lin_u128(lin, bytes)
            }
            _ => Ok(u128::from(i.immediate(n))),
        }
    }

    /// Write operand `n`: a whole XMM register, an MM register (its x87 register's exponent
    /// becomes all ones), a GPR (with x86 width rules) or memory of the memory size.
    pub(crate) fn vwrite(&mut self, i: &Instruction, n: u32, v: u128) -> Result<(), Exception> {
        match i.op_kind(n) {
            OpKind::Register => {
                let r = i.op_register(n);
                if r.is_xmm() {
                    self.s.fpu.xmm[xmm_index(r)] = v;
                } else if r.is_mm() {
                    let st = &mut self.s.fpu.st[mm_index(r)];
                    st.signif = v as u64;
                    st.sign_exp = 0xFFFF;
                } else {
                    self.set_reg(r, v as u64);
                }
                Ok(())
            }
            OpKind::Memory => {
                let bytes = i.memory_size().size() as u32;
                let lin = self.simd_mem_lin(i, bytes, true)?;
                self.write_lin_u128(lin, bytes, v)
            }
            k => unreachable!("SIMD write to operand kind {k:?}"),
        }
    }

    /// Register width in bytes of operand 0 (16 for XMM, 8 for MM).
    pub(crate) fn vwidth(i: &Instruction) -> usize {
        if i.op_kind(0) == OpKind::Register && i.op_register(0).is_mm() {
            8
        } else {
            16
        }
    }
}

/// Operand `n`'s XMM register number (the operand must be an XMM register).
pub(crate) fn xmm_op(i: &Instruction, n: u32) -> usize {
    xmm_index(i.op_register(n))
}

/// The generic two-operand shape `op0 = f(op0, op1)` on the register width of op0: entry
/// checks, reads, computation, write-back.
pub(crate) fn binary(
    cpu: &mut Cpu,
    i: &Instruction,
    f: impl FnOnce(u128, u128, usize) -> u128,
) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let width = Cpu::vwidth(i);
    let a = cpu.vread(i, 0)?;
    let b = cpu.vread(i, 1)?;
    cpu.vwrite(i, 0, f(a, b, width))
}

/// `op0 = f(op0, op1, imm8)` (the immediate is the last operand).
pub(crate) fn binary_imm(
    cpu: &mut Cpu,
    i: &Instruction,
    f: impl FnOnce(u128, u128, u8, usize) -> u128,
) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let width = Cpu::vwidth(i);
    let a = cpu.vread(i, 0)?;
    let b = cpu.vread(i, 1)?;
    let imm = i.immediate(i.op_count() - 1) as u8;
    cpu.vwrite(i, 0, f(a, b, imm, width))
}

/// `op0 = f(op1)`: the destination is not read.
pub(crate) fn unary(
    cpu: &mut Cpu,
    i: &Instruction,
    f: impl FnOnce(u128, usize) -> u128,
) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let width = Cpu::vwidth(i);
    let b = cpu.vread(i, 1)?;
    cpu.vwrite(i, 0, f(b, width))
}
