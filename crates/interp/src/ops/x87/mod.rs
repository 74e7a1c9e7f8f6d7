//! The x87 FPU: handler resolution for the D8-DF escape instructions and the helpers every
//! x87 handler shares — the #NM / pending-#MF entry checks, the last-instruction and
//! last-operand pointers, the register stack (push, pop, empty-register underflow) and the
//! status-word bookkeeping of exception flags (masked responses are computed by
//! [`softfloat`]; an unmasked exception sets ES/B, suppresses the store where the SDM says
//! so, and raises #MF at the next waiting x87 instruction). The FPU behaves as with CR0.NE = 1
//! in every case: the legacy FERR#/IRQ 13 path is not modelled.

mod arith;
mod compare;
mod control;
mod env;
mod load_store;
mod remainder;
pub mod softfloat;
mod transcendental;

use crate::cpu::{seg_of, Cpu};
use crate::exec::Handler;
use crane86_x86::fpu::{fsw, tag};
use crane86_x86::{Exception, SegReg, Vector, F80};
use iced_x86::{Instruction, MemorySize, OpKind, Register};
use softfloat::{Env, Res};

pub fn handler(i: &Instruction) -> Option<Handler> {
    arith::handler(i)
        .or_else(|| load_store::handler(i))
        .or_else(|| compare::handler(i))
        .or_else(|| remainder::handler(i))
        .or_else(|| transcendental::handler(i))
        .or_else(|| control::handler(i))
        .or_else(|| env::handler(i))
}

/// Stack index of an ST(i) register operand.
pub(crate) fn st_index(r: Register) -> u8 {
    (r as u32 - Register::ST0 as u32) as u8
}

/// The stack index of operand `n` when it is a register (ST(i)).
pub(crate) fn st_op(i: &Instruction, n: u32) -> u8 {
    st_index(i.op_register(n))
}

/// The instruction has an explicit memory operand.
pub(crate) fn has_mem(i: &Instruction) -> bool {
    (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory)
}

/// Exception flags that prevent the result from being stored when unmasked.
const PRE_COMPUTATION: u16 = fsw::IE | fsw::DE | fsw::ZE;

impl Cpu<'_> {
    /// Entry of a control instruction: #NM when CR0.EM/TS, then (for the waiting forms)
    /// #MF if an unmasked exception is pending.
    pub(crate) fn x87_check(&mut self, waiting: bool) -> Result<(), Exception> {
        self.check_fpu_available()?;
        if waiting && self.s.fpu.fsw & fsw::ES != 0 {
            return Err(Exception::new(Vector::X87Fpu));
        }
        Ok(())
    }

    /// Entry of a non-control x87 instruction: the checks of [`Self::x87_check`], then the
    /// last-instruction pointer, opcode and (for memory forms) last-operand pointer.
    pub(crate) fn x87_begin(&mut self, i: &Instruction) -> Result<(), Exception> {
        self.x87_check(true)?;
        self.s.fpu.fip = self.s.rip;
        self.s.fpu.fcs = self.s.seg(SegReg::Cs).selector;
        self.s.fpu.fop = self.x87_opcode(i);
        if has_mem(i) {
            self.s.fpu.fdp = self.ea(i);
            self.s.fpu.fds = self.s.seg(seg_of(i.memory_segment())).selector;
        }
        Ok(())
    }

    /// The 11-bit x87 opcode (escape byte low bits, ModR/M) read back from the instruction.
    /// The instruction was just fetched from CS:RIP, so its bytes are read at the linear
    /// address directly (no segment-type check: code segments may be execute-only), in one
    /// 8-byte read when that stays inside the page.
    fn x87_opcode(&mut self, i: &Instruction) -> u16 {
        let cs_base = self.s.seg(SegReg::Cs).base;
        let mut lin = cs_base.wrapping_add(self.s.rip);
        if !self.long64() {
            lin &= 0xFFFF_FFFF;
        }
        let len = i.len().min(8) as u64;
        let bytes = if lin & 0xFFF <= 0xFF8 {
            self.read_lin(lin, 64).ok()
        } else {
            (0..len).try_fold(0u64, |acc, k| {
                let b = self.read_lin(lin.wrapping_add(k), 8).ok()?;
                Some(acc | (b << (8 * k)))
            })
        };
        let Some(bytes) = bytes else {
            return 0;
        };
        (0..len.saturating_sub(1))
            .map(|k| ((bytes >> (8 * k)) & 0xFF, (bytes >> (8 * (k + 1))) & 0xFF))
            .find(|&(b, _)| (0xD8..=0xDF).contains(&b))
            .map_or(0, |(esc, modrm)| (((esc & 7) << 8) | modrm) as u16)
    }

    /// Rounding rules for a result (`use_pc`: precision control applies).
    pub(crate) fn x87_env(&self, use_pc: bool) -> Env {
        Env::from_fcw(self.s.fpu.fcw, use_pc)
    }

    /// Record an operation's status bits: exception flags are sticky, SF with them, C1 is
    /// replaced; an unmasked exception sets ES and B. Returns whether the result may be
    /// stored (no unmasked invalid, denormal or divide-by-zero exception).
    pub(crate) fn x87_flags(&mut self, flags: u16) -> bool {
        let f = &mut self.s.fpu;
        f.fsw = (f.fsw & !fsw::C1) | (flags & fsw::C1);
        f.fsw |= flags & (fsw::EXCEPTIONS | fsw::SF);
        let unmasked = flags & fsw::EXCEPTIONS & !(f.fcw & fsw::EXCEPTIONS);
        if unmasked != 0 {
            f.fsw |= fsw::ES | fsw::B;
        }
        unmasked & PRE_COMPUTATION == 0
    }

    /// Store a result into ST(dst) after recording its flags; returns whether it was stored.
    pub(crate) fn x87_store(&mut self, dst: u8, r: Res) -> bool {
        let stored = self.x87_flags(r.flags);
        if stored {
            self.s.fpu.set_st(dst, r.value);
        }
        stored
    }

    /// ST(i), or `None` when the register is empty.
    pub(crate) fn x87_get(&self, i: u8) -> Option<F80> {
        (!self.s.fpu.is_empty(i)).then(|| self.s.fpu.st(i))
    }

    /// Push a value: stack overflow (ST(7) not empty) raises IE|SF with C1 = 1 and pushes
    /// the indefinite when masked. Returns whether the push happened.
    pub(crate) fn x87_push(&mut self, r: Res) -> bool {
        if !self.s.fpu.is_empty(7) {
            let stored = self.x87_flags(fsw::IE | fsw::SF | fsw::C1);
            if stored {
                self.x87_push_raw(F80::INDEFINITE);
            }
            return stored;
        }
        let stored = self.x87_flags(r.flags);
        if stored {
            self.x87_push_raw(r.value);
        }
        stored
    }

    /// Decrement TOP and write ST(0) (no checks).
    pub(crate) fn x87_push_raw(&mut self, v: F80) {
        let top = self.s.fpu.top().wrapping_sub(1) & 7;
        self.s.fpu.set_top(top);
        self.s.fpu.set_st(0, v);
    }

    /// Mark ST(0) empty and increment TOP.
    pub(crate) fn x87_pop(&mut self) {
        let r = self.s.fpu.phys(0);
        self.s.fpu.set_tag(r, tag::EMPTY);
        let top = self.s.fpu.top().wrapping_add(1) & 7;
        self.s.fpu.set_top(top);
    }

    /// Linear address of the memory operand, checked for `bytes` bytes.
    pub(crate) fn x87_mem_lin(
        &mut self,
        i: &Instruction,
        bytes: u32,
        write: bool,
    ) -> Result<u64, Exception> {
        let off = self.ea(i);
        self.linear(seg_of(i.memory_segment()), off, bytes, write)
    }

    /// Read `bytes` (up to 16) at a linear address, little-endian.
    pub(crate) fn x87_read_bytes(&mut self, lin: u64, bytes: u32) -> Result<u128, Exception> {
        let mut v = 0u128;
        let mut k = 0;
        while k < bytes {
            let (chunk, bits) = if bytes - k >= 8 {
                (8, 64)
            } else if bytes - k >= 2 {
                (2, 16)
            } else {
                (1, 8)
            };
            v |= u128::from(self.read_lin(lin.wrapping_add(u64::from(k)), bits)?) << (8 * k);
            k += chunk;
        }
        Ok(v)
    }

    /// Write `bytes` (up to 16) at a linear address, little-endian; the whole range is
    /// probed for write access first so a fault leaves memory unchanged.
    pub(crate) fn x87_write_bytes(
        &mut self,
        lin: u64,
        bytes: u32,
        v: u128,
    ) -> Result<(), Exception> {
        self.read_lin_for_write(lin, 8)?;
        self.read_lin_for_write(lin.wrapping_add(u64::from(bytes) - 1), 8)?;
        let mut k = 0;
        while k < bytes {
            let (chunk, bits) = if bytes - k >= 8 {
                (8, 64)
            } else if bytes - k >= 2 {
                (2, 16)
            } else {
                (1, 8)
            };
            let part = (v >> (8 * k)) as u64;
            self.write_lin(lin.wrapping_add(u64::from(k)), bits, part)?;
            k += chunk;
        }
        Ok(())
    }

    /// Load the memory operand as an 80-bit value (float, integer or BCD forms of the
    /// arithmetic and load instructions), with the flags of the conversion.
    pub(crate) fn x87_load_mem(&mut self, i: &Instruction) -> Result<Res, Exception> {
        let size = i.memory_size();
        let bytes = size.size() as u32;
        let lin = self.x87_mem_lin(i, bytes, false)?;
        let raw = self.x87_read_bytes(lin, bytes)?;
        Ok(match size {
            MemorySize::Float32 => softfloat::from_ieee(raw as u64, 8, 23),
            MemorySize::Float64 => softfloat::from_ieee(raw as u64, 11, 52),
            MemorySize::Float80 => Res::ok(F80::from_bits(raw)),
            MemorySize::Int16 => Res::ok(softfloat::from_int(i64::from(raw as u16 as i16))),
            MemorySize::Int32 => Res::ok(softfloat::from_int(i64::from(raw as u32 as i32))),
            MemorySize::Int64 => Res::ok(softfloat::from_int(raw as u64 as i64)),
            MemorySize::Bcd => Res::ok(load_store::from_bcd(raw)),
            other => {
                debug_assert!(false, "x87 load of memory size {other:?}");
                Res::invalid()
            }
        })
    }
}

/// The flags of reading an empty register: IE and SF with C1 = 0 (stack underflow).
pub(crate) const UNDERFLOW: Res = Res {
    value: F80::INDEFINITE,
    flags: fsw::IE | fsw::SF,
};
