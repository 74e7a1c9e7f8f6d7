//! x87 environment and state images: FNSTENV/FSTENV and FLDENV (14- or 28-byte environment),
//! FNSAVE/FSAVE and FRSTOR (environment + the eight registers in stack order), in the real-
//! mode (also V86) and protected-mode layouts of SDM Vol. 1 Figures 8-9 to 8-12. 64-bit mode
//! uses the 32-bit protected layout.

use super::control::recompute_summary;
use crate::cpu::Cpu;
use crate::exec::Handler;
use crane86_x86::fpu::{fcw, tag};
use crane86_x86::{Exception, F80};
use iced_x86::{Instruction, MemorySize, Mnemonic};

pub fn handler(i: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match i.mnemonic() {
        Fnstenv => fstenv::<false>,
        Fstenv => fstenv::<true>,
        Fldenv => fldenv,
        Fnsave => fsave::<false>,
        Fsave => fsave::<true>,
        Frstor => frstor,
        _ => return None,
    })
}

/// Environment size for the instruction's memory operand: 14 (16-bit) or 28 bytes.
fn env_bytes(i: &Instruction) -> usize {
    match i.memory_size() {
        MemorySize::FpuEnv14 | MemorySize::FpuState94 => 14,
        _ => 28,
    }
}

/// The real-mode layout applies in real and V86 mode.
fn real_layout(cpu: &Cpu) -> bool {
    !cpu.s.protected() || cpu.s.v86()
}

fn put16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn get16(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([buf[at], buf[at + 1]])
}
fn get32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Serialize the environment into `size` (14 or 28) bytes.
fn encode_env(cpu: &Cpu, size: usize) -> Vec<u8> {
    let f = &cpu.s.fpu;
    let real = real_layout(cpu);
    let (ip, dp) = if real {
        (
            (u32::from(f.fcs) << 4).wrapping_add(f.fip as u32),
            (u32::from(f.fds) << 4).wrapping_add(f.fdp as u32),
        )
    } else {
        (f.fip as u32, f.fdp as u32)
    };
    let mut b = vec![0u8; size];
    if size == 14 {
        put16(&mut b, 0, f.fcw);
        put16(&mut b, 2, f.fsw);
        put16(&mut b, 4, f.full_tags());
        put16(&mut b, 6, ip as u16);
        put16(&mut b, 10, dp as u16);
        if real {
            put16(
                &mut b,
                8,
                (((ip >> 16) as u16 & 0xF) << 12) | (f.fop & 0x7FF),
            );
            put16(&mut b, 12, ((dp >> 16) as u16 & 0xF) << 12);
        } else {
            put16(&mut b, 8, f.fcs);
            put16(&mut b, 12, f.fds);
        }
    } else {
        put32(&mut b, 0, 0xFFFF_0000 | u32::from(f.fcw));
        put32(&mut b, 4, 0xFFFF_0000 | u32::from(f.fsw));
        put32(&mut b, 8, 0xFFFF_0000 | u32::from(f.full_tags()));
        if real {
            put32(&mut b, 12, 0xFFFF_0000 | (ip & 0xFFFF));
            put32(&mut b, 16, ((ip >> 16) << 12) | u32::from(f.fop & 0x7FF));
            put32(&mut b, 20, 0xFFFF_0000 | (dp & 0xFFFF));
            put32(&mut b, 24, (dp >> 16) << 12);
        } else {
            put32(&mut b, 12, ip);
            put32(
                &mut b,
                16,
                u32::from(f.fcs) | (u32::from(f.fop & 0x7FF) << 16),
            );
            put32(&mut b, 20, dp);
            put32(&mut b, 24, 0xFFFF_0000 | u32::from(f.fds));
        }
    }
    b
}

/// Load the environment from its image.
fn decode_env(cpu: &mut Cpu, b: &[u8]) {
    let real = real_layout(cpu);
    let f = &mut cpu.s.fpu;
    if b.len() == 14 {
        f.fcw = get16(b, 0);
        f.fsw = get16(b, 2);
        f.ftw = get16(b, 4);
        if real {
            let w = get16(b, 8);
            f.fip = u64::from(get16(b, 6)) | (u64::from(w >> 12) << 16);
            f.fop = w & 0x7FF;
            f.fdp = u64::from(get16(b, 10)) | (u64::from(get16(b, 12) >> 12) << 16);
            f.fcs = 0;
            f.fds = 0;
        } else {
            f.fip = u64::from(get16(b, 6));
            f.fcs = get16(b, 8);
            f.fdp = u64::from(get16(b, 10));
            f.fds = get16(b, 12);
        }
    } else {
        f.fcw = get16(b, 0);
        f.fsw = get16(b, 4);
        f.ftw = get16(b, 8);
        if real {
            let w = get32(b, 16);
            f.fip = u64::from(get16(b, 12)) | (u64::from(w >> 12) << 16);
            f.fop = (w & 0x7FF) as u16;
            f.fdp = u64::from(get16(b, 20)) | (u64::from(get32(b, 24) >> 12) << 16);
            f.fcs = 0;
            f.fds = 0;
        } else {
            f.fip = u64::from(get32(b, 12));
            let w = get32(b, 16);
            f.fcs = w as u16;
            f.fop = ((w >> 16) & 0x7FF) as u16;
            f.fdp = u64::from(get32(b, 20));
            f.fds = get16(b, 24);
        }
    }
    f.fcw = (f.fcw & 0x1F3F) | 0x40;
    // Only "empty" is taken from the image; other tags follow the register contents.
    for r in 0..8 {
        if f.tag_of(r) != tag::EMPTY {
            let t = f.st[r].tag();
            f.set_tag(r, t);
        }
    }
    recompute_summary(cpu);
}

impl Cpu<'_> {
    /// Write a byte image at a linear address, probing both ends for write access first.
    fn x87_write_image(&mut self, lin: u64, b: &[u8]) -> Result<(), Exception> {
        self.read_lin_for_write(lin, 8)?;
        self.read_lin_for_write(lin.wrapping_add(b.len() as u64 - 1), 8)?;
        for (k, chunk) in b.chunks(8).enumerate() {
            let mut v = [0u8; 16];
            v[..chunk.len()].copy_from_slice(chunk);
            self.x87_write_bytes(
                lin.wrapping_add(8 * k as u64),
                chunk.len() as u32,
                u128::from_le_bytes(v),
            )?;
        }
        Ok(())
    }

    fn x87_read_image(&mut self, lin: u64, len: usize) -> Result<Vec<u8>, Exception> {
        let mut out = Vec::with_capacity(len);
        for k in (0..len).step_by(8) {
            let n = (len - k).min(8);
            let v = self.x87_read_bytes(lin.wrapping_add(k as u64), n as u32)?;
            out.extend_from_slice(&v.to_le_bytes()[..n]);
        }
        Ok(out)
    }
}

fn fstenv<const WAIT: bool>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_check(WAIT)?;
    let size = env_bytes(i);
    let lin = cpu.x87_mem_lin(i, size as u32, true)?;
    let image = encode_env(cpu, size);
    cpu.x87_write_image(lin, &image)?;
    cpu.s.fpu.fcw |= fcw::MASKS;
    Ok(())
}

fn fldenv(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_check(true)?;
    let size = env_bytes(i);
    let lin = cpu.x87_mem_lin(i, size as u32, false)?;
    let image = cpu.x87_read_image(lin, size)?;
    decode_env(cpu, &image);
    Ok(())
}

fn fsave<const WAIT: bool>(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_check(WAIT)?;
    let size = env_bytes(i);
    let lin = cpu.x87_mem_lin(i, size as u32 + 80, true)?;
    let mut image = encode_env(cpu, size);
    for k in 0..8 {
        image.extend_from_slice(&cpu.s.fpu.st(k).to_le_bytes());
    }
    cpu.x87_write_image(lin, &image)?;
    cpu.s.fpu.finit();
    Ok(())
}

fn frstor(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    cpu.x87_check(true)?;
    let size = env_bytes(i);
    let lin = cpu.x87_mem_lin(i, size as u32 + 80, false)?;
    let image = cpu.x87_read_image(lin, size + 80)?;
    // Registers first (in stack order relative to the loaded TOP), then retag via the env.
    let top = ((get16(&image, if size == 14 { 2 } else { 4 }) >> 11) & 7) as usize;
    for k in 0..8 {
        let b = &image[size + 10 * k..size + 10 * k + 10];
        let mut raw = [0u8; 16];
        raw[..10].copy_from_slice(b);
        cpu.s.fpu.st[(top + k) & 7] = F80::from_bits(u128::from_le_bytes(raw));
    }
    decode_env(cpu, &image[..size]);
    Ok(())
}
