//! `Cpu`: the execution context an instruction handler sees — the architectural state, guest
//! memory behind the softmmu TLB, and the platform — plus register and operand access.

use crate::InterpStats;
use crane86_devices::Platform;
use crane86_memory::{PhysMem, SoftTlb};
use crane86_x86::cpuid::CpuModel;
use crane86_x86::flags::{self, CcOp};
use crane86_x86::{CpuState, Exception, SegReg};
use iced_x86::{Instruction, OpKind, Register};

/// Per-instruction outcome flags the block loop looks at.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepFlags {
    /// The instruction changed state that the decoded block or the TLB depend on (mode, CS,
    /// CR0/CR3/CR4, EFER, a code page): leave the block after it.
    pub end_block: bool,
    /// The instruction set the interrupt shadow (STI, MOV SS, POP SS).
    pub shadow: bool,
    /// MOV SS / POP SS: besides interrupts, the shadow also holds off debug traps (the
    /// single-step trap) until after the next instruction (SDM Vol. 3 6.8.3).
    pub ss_load: bool,
    /// A platform action is waiting (port or MMIO write).
    pub action: bool,
    /// HLT executed.
    pub halt: bool,
    /// The instruction itself delivered an interrupt (INT n, INT3, INTO, INT1, task switch
    /// through a gate): no single-step trap follows it (SDM Vol. 3 17.3.1.4).
    pub delivered: bool,
}

/// Execution context for one engine run.
pub struct Cpu<'a> {
    pub s: &'a mut CpuState,
    pub mem: &'a mut PhysMem,
    pub tlb: &'a mut SoftTlb,
    pub plat: &'a mut dyn Platform,
    pub model: &'a CpuModel,
    pub stats: &'a mut InterpStats,
    /// RIP of the instruction after the current one.
    pub next_rip: u64,
    pub step: StepFlags,
    /// Set when an exception could not be delivered even as a double fault.
    pub triple_fault: Option<Exception>,
}

/// Operand / address sizes in bits.
pub type Bits = u32;

#[inline]
pub fn mask(bits: Bits) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

#[inline]
pub fn sign_extend(v: u64, bits: Bits) -> i64 {
    if bits >= 64 {
        v as i64
    } else {
        let sh = 64 - bits;
        ((v << sh) as i64) >> sh
    }
}

#[inline]
pub fn sign_bit(bits: Bits) -> u64 {
    1u64 << (bits - 1)
}

/// Map an iced segment register to ours.
pub fn seg_of(r: Register) -> SegReg {
    match r {
        Register::ES => SegReg::Es,
        Register::CS => SegReg::Cs,
        Register::SS => SegReg::Ss,
        Register::FS => SegReg::Fs,
        Register::GS => SegReg::Gs,
        _ => SegReg::Ds,
    }
}

impl Cpu<'_> {
    // ---------------------------------------------------------------- registers

    /// Read a general-purpose register (any width, including AH..BH).
    #[inline]
    pub fn reg(&self, r: Register) -> u64 {
        let n = r as u32;
        if (Register::AL as u32..=Register::R15L as u32).contains(&n) {
            if (Register::AH as u32..=Register::BH as u32).contains(&n) {
                (self.s.gpr[(n - Register::AH as u32) as usize] >> 8) & 0xFF
            } else {
                let idx = if n <= Register::BL as u32 {
                    n - Register::AL as u32
                } else {
                    n - Register::SPL as u32 + 4
                };
                self.s.gpr[idx as usize] & 0xFF
            }
        } else if (Register::AX as u32..=Register::R15W as u32).contains(&n) {
            self.s.gpr[(n - Register::AX as u32) as usize] & 0xFFFF
        } else if (Register::EAX as u32..=Register::R15D as u32).contains(&n) {
            self.s.gpr[(n - Register::EAX as u32) as usize] & 0xFFFF_FFFF
        } else if (Register::RAX as u32..=Register::R15 as u32).contains(&n) {
            self.s.gpr[(n - Register::RAX as u32) as usize]
        } else if (Register::ES as u32..=Register::GS as u32).contains(&n) {
            u64::from(self.s.seg[(n - Register::ES as u32) as usize].selector)
        } else {
            debug_assert!(false, "reg() of non-GPR {r:?}");
            0
        }
    }

    /// Write a general-purpose register with x86 width semantics (32-bit writes zero-extend,
    /// 8/16-bit writes merge).
    #[inline]
    pub fn set_reg(&mut self, r: Register, v: u64) {
        let n = r as u32;
        if (Register::AL as u32..=Register::R15L as u32).contains(&n) {
            if (Register::AH as u32..=Register::BH as u32).contains(&n) {
                let g = &mut self.s.gpr[(n - Register::AH as u32) as usize];
                *g = (*g & !0xFF00) | ((v & 0xFF) << 8);
            } else {
                let idx = if n <= Register::BL as u32 {
                    n - Register::AL as u32
                } else {
                    n - Register::SPL as u32 + 4
                };
                let g = &mut self.s.gpr[idx as usize];
                *g = (*g & !0xFF) | (v & 0xFF);
            }
        } else if (Register::AX as u32..=Register::R15W as u32).contains(&n) {
            let g = &mut self.s.gpr[(n - Register::AX as u32) as usize];
            *g = (*g & !0xFFFF) | (v & 0xFFFF);
        } else if (Register::EAX as u32..=Register::R15D as u32).contains(&n) {
            self.s.gpr[(n - Register::EAX as u32) as usize] = v & 0xFFFF_FFFF;
        } else if (Register::RAX as u32..=Register::R15 as u32).contains(&n) {
            self.s.gpr[(n - Register::RAX as u32) as usize] = v;
        } else {
            debug_assert!(false, "set_reg() of non-GPR {r:?}");
        }
    }

    /// Read GPR `idx` at `bits` width.
    #[inline]
    pub fn gpr(&self, idx: usize, bits: Bits) -> u64 {
        self.s.gpr[idx] & mask(bits)
    }

    /// Write GPR `idx` at `bits` width (32-bit zero-extends).
    #[inline]
    pub fn set_gpr(&mut self, idx: usize, bits: Bits, v: u64) {
        let g = &mut self.s.gpr[idx];
        *g = match bits {
            8 => (*g & !0xFF) | (v & 0xFF),
            16 => (*g & !0xFFFF) | (v & 0xFFFF),
            32 => v & 0xFFFF_FFFF,
            _ => v,
        };
    }

    // ---------------------------------------------------------------- flags

    #[inline]
    pub fn flags(&self) -> u64 {
        self.s.rflags()
    }

    #[inline]
    pub fn cf(&self) -> bool {
        if self.s.lazy.op == CcOp::Eflags {
            self.s.rflags & flags::CF != 0
        } else {
            self.s.lazy.carry(self.s.rflags)
        }
    }

    /// Record a lazily evaluated flag result.
    #[inline]
    pub fn set_lazy(&mut self, op: CcOp, bits: Bits, res: u64, src: u64, aux: u64) {
        self.s.lazy.op = CcOp::sized(op, bits);
        self.s.lazy.res = res & mask(bits);
        self.s.lazy.src = src & mask(bits);
        self.s.lazy.aux = aux;
    }

    /// Replace the arithmetic flags selected by `which` with `values` (materializing).
    #[inline]
    pub fn set_arith_flags(&mut self, which: u64, values: u64) {
        let f = self.s.rflags();
        self.s.set_rflags((f & !which) | (values & which));
    }

    #[inline]
    pub fn set_flag(&mut self, bit: u64, on: bool) {
        self.set_arith_flags(bit, if on { bit } else { 0 });
    }

    /// Evaluate condition code `cc` (0..15 in Jcc encoding order).
    #[inline]
    pub fn cond(&self, cc: u8) -> bool {
        self.s.lazy.cond(cc, self.s.rflags)
    }

    // ---------------------------------------------------------------- modes

    #[inline]
    pub fn long64(&self) -> bool {
        self.s.long_mode_active() && self.s.seg[SegReg::Cs as usize].long()
    }

    #[inline]
    pub fn cpl(&self) -> u8 {
        self.s.cpl()
    }

    /// Stack pointer width in bits (SS.B / 64-bit mode).
    #[inline]
    pub fn stack_bits(&self) -> Bits {
        self.s.stack_bits()
    }

    // ---------------------------------------------------------------- operands

    /// Effective address (offset within the segment) of the memory operand.
    #[inline]
    pub fn ea(&self, i: &Instruction) -> u64 {
        let mut a = i.memory_displacement64();
        let base = i.memory_base();
        if base != Register::None && base != Register::RIP && base != Register::EIP {
            a = a.wrapping_add(self.reg(base));
        }
        let index = i.memory_index();
        if index != Register::None {
            a = a.wrapping_add(
                self.reg(index)
                    .wrapping_mul(u64::from(i.memory_index_scale())),
            );
        }
        match addr_bits(i) {
            16 => a & 0xFFFF,
            32 => a & 0xFFFF_FFFF,
            _ => a,
        }
    }

    /// Size in bits of operand `n`.
    #[inline]
    pub fn op_bits(&self, i: &Instruction, n: u32) -> Bits {
        match i.op_kind(n) {
            OpKind::Register => i.op_register(n).size() as Bits * 8,
            OpKind::Memory => i.memory_size().size() as Bits * 8,
            OpKind::Immediate8 => 8,
            OpKind::Immediate16 | OpKind::Immediate8to16 => 16,
            OpKind::Immediate32 | OpKind::Immediate8to32 => 32,
            OpKind::Immediate64 | OpKind::Immediate8to64 | OpKind::Immediate32to64 => 64,
            _ => 0,
        }
    }

    /// Read operand `n` (register, memory or immediate), zero-extended to u64.
    #[inline]
    pub fn read_op(&mut self, i: &Instruction, n: u32) -> Result<u64, Exception> {
        match i.op_kind(n) {
            OpKind::Register => Ok(self.reg(i.op_register(n))),
            OpKind::Memory => {
                let bits = i.memory_size().size() as u32 * 8;
                let off = self.ea(i);
                self.read_mem(seg_of(i.memory_segment()), off, bits)
            }
            k => {
                let v = i.immediate(n);
                Ok(match k {
                    OpKind::Immediate8to16 => v & 0xFFFF,
                    OpKind::Immediate8to32 => v & 0xFFFF_FFFF,
                    _ => v,
                })
            }
        }
    }

    /// Write operand `n` (register or memory).
    #[inline]
    pub fn write_op(&mut self, i: &Instruction, n: u32, v: u64) -> Result<(), Exception> {
        match i.op_kind(n) {
            OpKind::Register => {
                self.set_reg(i.op_register(n), v);
                Ok(())
            }
            OpKind::Memory => {
                let bits = i.memory_size().size() as u32 * 8;
                let off = self.ea(i);
                self.write_mem(seg_of(i.memory_segment()), off, bits, v)
            }
            k => unreachable!("write to operand kind {k:?}"),
        }
    }

    /// Read-modify-write operand 0: `f(old) -> Some(new)` writes, `None` leaves it. Memory
    /// operands are checked for write access before the read (as hardware does).
    #[inline]
    pub fn rmw_op0(
        &mut self,
        i: &Instruction,
        f: impl FnOnce(&mut Self, u64) -> Result<Option<u64>, Exception>,
    ) -> Result<(), Exception> {
        match i.op_kind(0) {
            OpKind::Register => {
                let r = i.op_register(0);
                let old = self.reg(r);
                if let Some(new) = f(self, old)? {
                    self.set_reg(r, new);
                }
                Ok(())
            }
            OpKind::Memory => {
                let bits = i.memory_size().size() as u32 * 8;
                let off = self.ea(i);
                let lin = self.linear(seg_of(i.memory_segment()), off, bits / 8, true)?;
                let old = self.read_lin_for_write(lin, bits)?;
                if let Some(new) = f(self, old)? {
                    self.write_lin(lin, bits, new)?;
                }
                Ok(())
            }
            k => unreachable!("rmw on operand kind {k:?}"),
        }
    }
}

/// Address size in bits of the instruction's explicit memory operand (`OpKind::Memory`):
/// from the base or index register width, else from the displacement size iced reports.
#[inline]
pub fn addr_bits(i: &Instruction) -> Bits {
    let base = i.memory_base();
    if base != Register::None {
        return base.size() as Bits * 8;
    }
    let index = i.memory_index();
    if index != Register::None {
        return index.size() as Bits * 8;
    }
    match i.memory_displ_size() {
        2 => 16,
        4 => 32,
        8 => 64,
        _ => code_bits(i),
    }
}

/// Code-segment size the instruction was decoded for.
#[inline]
pub fn code_bits(i: &Instruction) -> Bits {
    match i.code_size() {
        iced_x86::CodeSize::Code16 => 16,
        iced_x86::CodeSize::Code32 => 32,
        _ => 64,
    }
}
