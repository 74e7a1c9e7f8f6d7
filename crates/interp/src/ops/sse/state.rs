//! SIMD and x87 state instructions: LDMXCSR/STMXCSR, FXSAVE/FXRSTOR (32- and 64-bit
//! layouts, SDM Vol. 1 Table 10-2), XSAVE/XRSTOR in the standard format for the x87 and SSE
//! components (XCR0 bits 0 and 1), XGETBV/XSETBV, and EMMS.

use super::float::mxcsr;
use crate::cpu::Cpu;
use crate::exec::Handler;
use crate::ops::system::require_cpl0;
use crane86_x86::fpu::{tag, FpuState};
use crane86_x86::fxsave::{
    decode_sse, decode_x87, encode_mxcsr, encode_sse, encode_x87, get_u32, get_u64, put,
};
use crane86_x86::regs::{cr0, cr4};
use crane86_x86::{Exception, F80};
use iced_x86::{Instruction, Mnemonic};

pub fn handler(i: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match i.mnemonic() {
        Ldmxcsr => ldmxcsr,
        Stmxcsr => stmxcsr,
        Fxsave => fxsave::<false>,
        Fxsave64 => fxsave::<true>,
        Fxrstor => fxrstor::<false>,
        Fxrstor64 => fxrstor::<true>,
        Xsave => xsave::<false>,
        Xsave64 => xsave::<true>,
        Xrstor => xrstor::<false>,
        Xrstor64 => xrstor::<true>,
        Xgetbv => xgetbv,
        Xsetbv => xsetbv,
        Emms => emms,
        _ => return None,
    })
}

/// The value MXCSR_MASK reports in an FXSAVE image: every MXCSR bit crane86 implements
/// (DAZ included).
pub const MXCSR_MASK: u32 = mxcsr::WRITABLE;

/// XCR0 bits crane86 supports: x87 (bit 0) and SSE (bit 1).
pub const XCR0_SUPPORTED: u64 = crane86_x86::cpuid::XSAVE_FEATURES as u64;
const XCR0_X87: u64 = 1 << 0;
const XCR0_SSE: u64 = 1 << 1;

/// Size of the legacy region plus the XSAVE header.
pub const XSAVE_SIZE: u32 = crane86_x86::cpuid::XSAVE_AREA_SIZE;

fn ldmxcsr(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let v = cpu.vread(i, 0)? as u32;
    if v & !mxcsr::WRITABLE != 0 {
        return Err(Exception::gp0());
    }
    cpu.s.fpu.mxcsr = v;
    Ok(())
}

fn stmxcsr(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.simd_begin(i)?;
    let v = cpu.s.fpu.mxcsr;
    cpu.vwrite(i, 0, v.into())
}

/// EMMS: every x87 register tagged empty and, as for every MMX instruction, TOP set to 0
/// (SDM Vol. 3 12.2, Table 12-2). x87 checks apply: #UD on CR0.EM, #NM on CR0.TS, #MF when an
/// unmasked x87 exception is pending.
fn emms(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    if cpu.s.cr0 & cr0::EM != 0 {
        return Err(Exception::ud());
    }
    cpu.x87_check(true)?;
    cpu.s.fpu.ftw = 0xFFFF;
    cpu.s.fpu.set_top(0);
    Ok(())
}

/// XMM registers an image holds: 16 in 64-bit mode, 8 elsewhere.
fn xmm_count(cpu: &Cpu) -> usize {
    if cpu.long64() {
        16
    } else {
        8
    }
}

impl Cpu<'_> {
    /// The linear address of a state image of `bytes` bytes, aligned to `align` (#GP(0)
    /// otherwise), probed for write access when `write`.
    fn image_lin(
        &mut self,
        i: &Instruction,
        bytes: u32,
        align: u64,
        write: bool,
    ) -> Result<u64, Exception> {
        let off = self.ea(i);
        let lin = self.linear(crate::cpu::seg_of(i.memory_segment()), off, bytes, write)?;
        if lin & (align - 1) != 0 {
            return Err(Exception::gp0());
        }
        if write {
            self.read_lin_for_write(lin, 8)?;
            self.read_lin_for_write(lin + u64::from(bytes) - 8, 8)?;
        }
        Ok(lin)
    }

    /// Read `len` bytes (a multiple of 8) of an image.
    fn read_image(&mut self, lin: u64, len: usize) -> Result<Vec<u8>, Exception> {
        let mut buf = vec![0u8; len];
        for k in (0..len).step_by(8) {
            let v = self.read_lin(lin + k as u64, 64)?;
            put(&mut buf, k, &v.to_le_bytes());
        }
        Ok(buf)
    }

    /// Write `buf[range]` (8-byte granules) of an image.
    fn write_image(
        &mut self,
        lin: u64,
        buf: &[u8],
        range: std::ops::Range<usize>,
    ) -> Result<(), Exception> {
        for k in range.step_by(8) {
            self.write_lin(lin + k as u64, 64, get_u64(buf, k))?;
        }
        Ok(())
    }

    /// FXSAVE/FXRSTOR/XSAVE/XRSTOR entry: #UD on CR0.EM (FXSAVE: #NM), #NM on CR0.TS.
    fn state_check(&self, xsave: bool) -> Result<(), Exception> {
        if xsave && self.s.cr4 & cr4::OSXSAVE == 0 {
            return Err(Exception::ud());
        }
        if self.s.cr0 & cr0::TS != 0 || (!xsave && self.s.cr0 & cr0::EM != 0) {
            return Err(Exception::nm());
        }
        if xsave && self.s.cr0 & cr0::EM != 0 {
            return Err(Exception::ud());
        }
        Ok(())
    }
}

/// FXSAVE: x87 state, MXCSR and the XMM registers into a 16-byte-aligned 512-byte image
/// (bytes 464..512 are left to software, as on hardware).
fn fxsave<const WIDE: bool>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.state_check(false)?;
    let lin = cpu.image_lin(i, 512, 16, true)?;
    let mut buf = vec![0u8; 512];
    let xmms = xmm_count(cpu);
    encode_x87(&cpu.s.fpu, WIDE, &mut buf);
    encode_mxcsr(&cpu.s.fpu, MXCSR_MASK, &mut buf);
    encode_sse(&cpu.s.fpu, xmms, &mut buf);
    cpu.write_image(lin, &buf, 0..160 + 16 * xmms)
}

fn fxrstor<const WIDE: bool>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.state_check(false)?;
    let lin = cpu.image_lin(i, 512, 16, false)?;
    let buf = cpu.read_image(lin, 416)?;
    let mxcsr = get_u32(&buf, 24);
    if mxcsr & !MXCSR_MASK != 0 {
        return Err(Exception::gp0());
    }
    let xmms = xmm_count(cpu);
    let f = &mut cpu.s.fpu;
    decode_x87(f, WIDE, &buf);
    f.mxcsr = mxcsr;
    decode_sse(f, xmms, &buf);
    Ok(())
}

/// The requested-feature bitmap: XCR0 AND EDX:EAX.
fn rfbm(cpu: &Cpu) -> u64 {
    let edx_eax = (cpu.s.gpr[2] << 32) | (cpu.s.gpr[0] & 0xFFFF_FFFF);
    cpu.s.xcr0 & edx_eax
}

/// XSAVE (standard format): the requested components into the legacy region, and their
/// XSTATE_BV bits set in the header (components are always reported in use).
fn xsave<const WIDE: bool>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.state_check(true)?;
    let lin = cpu.image_lin(i, XSAVE_SIZE, 64, true)?;
    let rfbm = rfbm(cpu);
    let xmms = xmm_count(cpu);
    let mut buf = vec![0u8; 512];
    if rfbm & XCR0_X87 != 0 {
        encode_x87(&cpu.s.fpu, WIDE, &mut buf);
        cpu.write_image(lin, &buf, 0..24)?;
        cpu.write_image(lin, &buf, 32..160)?;
    }
    if rfbm & XCR0_SSE != 0 {
        encode_mxcsr(&cpu.s.fpu, MXCSR_MASK, &mut buf);
        encode_sse(&cpu.s.fpu, xmms, &mut buf);
        cpu.write_image(lin, &buf, 24..32)?;
        cpu.write_image(lin, &buf, 160..160 + 16 * xmms)?;
    }
    let bv = cpu.read_lin(lin + 512, 64)?;
    cpu.write_lin(lin + 512, 64, (bv & !rfbm) | rfbm)
}

/// XRSTOR (standard format): components in RFBM are loaded when their XSTATE_BV bit is set
/// and put in their initial state otherwise; MXCSR is loaded whenever SSE is requested.
fn xrstor<const WIDE: bool>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.state_check(true)?;
    let lin = cpu.image_lin(i, XSAVE_SIZE, 64, false)?;
    let buf = cpu.read_image(lin, XSAVE_SIZE as usize)?;
    let xstate_bv = get_u64(&buf, 512);
    let xcomp_bv = get_u64(&buf, 520);
    let reserved_nonzero = (528..576).step_by(8).any(|k| get_u64(&buf, k) != 0);
    if xcomp_bv != 0 || reserved_nonzero || xstate_bv & !cpu.s.xcr0 != 0 {
        return Err(Exception::gp0());
    }
    let rfbm = rfbm(cpu);
    let mxcsr = get_u32(&buf, 24);
    if rfbm & XCR0_SSE != 0 && mxcsr & !MXCSR_MASK != 0 {
        return Err(Exception::gp0());
    }
    let xmms = xmm_count(cpu);
    let f = &mut cpu.s.fpu;
    if rfbm & XCR0_X87 != 0 {
        if xstate_bv & XCR0_X87 != 0 {
            decode_x87(f, WIDE, &buf);
        } else {
            init_x87(f);
        }
    }
    if rfbm & XCR0_SSE != 0 {
        f.mxcsr = mxcsr;
        if xstate_bv & XCR0_SSE != 0 {
            decode_sse(f, xmms, &buf);
        } else {
            f.xmm.iter_mut().take(xmms).for_each(|x| *x = 0);
        }
    }
    Ok(())
}

/// The x87 component's initial configuration (as FNINIT, with the data registers zeroed).
fn init_x87(f: &mut FpuState) {
    f.finit();
    f.st = [F80::ZERO; 8];
    f.ftw = 0xFFFF;
    debug_assert_eq!(f.tag_of(0), tag::EMPTY);
}

/// XGETBV: ECX = 0 reads XCR0 into EDX:EAX; other indices #GP(0). #UD without CR4.OSXSAVE.
fn xgetbv(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    if cpu.s.cr4 & cr4::OSXSAVE == 0 {
        return Err(Exception::ud());
    }
    if cpu.s.gpr[1] as u32 != 0 {
        return Err(Exception::gp0());
    }
    let v = cpu.s.xcr0;
    cpu.s.gpr[0] = v & 0xFFFF_FFFF;
    cpu.s.gpr[2] = v >> 32;
    Ok(())
}

/// XSETBV: CPL 0, ECX = 0, and a value with x87 set and only supported bits.
fn xsetbv(cpu: &mut Cpu, _: &Instruction) -> Result<(), Exception> {
    if cpu.s.cr4 & cr4::OSXSAVE == 0 {
        return Err(Exception::ud());
    }
    require_cpl0(cpu)?;
    let v = (cpu.s.gpr[2] << 32) | (cpu.s.gpr[0] & 0xFFFF_FFFF);
    if cpu.s.gpr[1] as u32 != 0 || v & XCR0_X87 == 0 || v & !XCR0_SUPPORTED != 0 {
        return Err(Exception::gp0());
    }
    cpu.s.xcr0 = v;
    Ok(())
}
