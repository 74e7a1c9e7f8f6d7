//! Operand construction for generated instructions: registers (never RSP), absolute and
//! register-based memory operands inside the scratch buffer, immediates, and the small helper
//! instructions setups use.

use crate::gen::{DATA_SIZE, SCRATCH_BASE};
use crate::rng::Rng;
use crate::tables::{full, gpr_index, reg_of, HIGH8, RSP_INDEX};
use iced_x86::{Code, Instruction, Mnemonic, OpCodeOperandKind as K, OpKind, Register};

/// A random absolute address in the data area for an operand of `size` bytes.
pub fn data_addr(rng: &mut Rng, size: u64) -> u64 {
    let mut off = rng.below(DATA_SIZE - 32);
    if rng.chance(40) && size.is_power_of_two() {
        off &= !(size - 1);
    }
    SCRATCH_BASE + off
}

/// Displacement size of an absolute operand: 8 selects 64-bit addressing (encoded as a
/// sign-extended disp32), 4 the 32-bit address-size form (0x67 prefix).
pub fn abs_displ_size(rng: &mut Rng) -> u32 {
    if rng.chance(75) {
        8
    } else {
        4
    }
}

pub fn set_abs_mem(ins: &mut Instruction, n: u32, addr: u64, displ_size: u32) {
    ins.set_op_kind(n, OpKind::Memory);
    ins.set_memory_base(Register::None);
    ins.set_memory_index(Register::None);
    ins.set_memory_index_scale(1);
    ins.set_memory_displacement64(addr);
    ins.set_memory_displ_size(displ_size);
}

/// A random register of `bits` (never the RSP family). `allow_high8` permits AH..BH.
pub fn random_reg(rng: &mut Rng, bits: u32, allow_high8: bool) -> Register {
    if bits == 8 && allow_high8 && rng.chance(15) {
        return *rng.pick(&HIGH8);
    }
    loop {
        let idx = rng.below(16) as usize;
        if idx != RSP_INDEX {
            return reg_of(bits, idx);
        }
    }
}

pub fn set_reg(ins: &mut Instruction, n: u32, r: Register) {
    ins.set_op_kind(n, OpKind::Register);
    ins.set_op_register(n, r);
}

/// A random LEA-style memory operand (any registers, any scale, 32- or 64-bit addressing).
pub fn random_lea_mem(rng: &mut Rng, ins: &mut Instruction, n: u32) {
    let bits = if rng.chance(20) { 32 } else { 64 };
    let base = if rng.chance(80) {
        reg_of(bits, rng.below(16) as usize)
    } else {
        Register::None
    };
    let index = if rng.chance(60) {
        random_reg(rng, bits, false)
    } else {
        Register::None
    };
    let disp = match rng.below(3) {
        0 => 0i64,
        1 => i64::from(rng.next_u64() as i8),
        _ => i64::from(rng.next_u64() as i32),
    };
    ins.set_op_kind(n, OpKind::Memory);
    ins.set_memory_base(base);
    ins.set_memory_index(index);
    ins.set_memory_index_scale(*rng.pick(&[1, 2, 4, 8]));
    let displ_size = if disp == 0 {
        0
    } else if i8::try_from(disp).is_ok() {
        1
    } else {
        4
    };
    let d = if bits == 32 {
        disp as u32 as u64
    } else {
        disp as u64
    };
    ins.set_memory_displacement64(d);
    ins.set_memory_displ_size(if base == Register::None && index == Register::None {
        4
    } else {
        displ_size
    });
}

pub fn with2(code: Code, a: Register, imm: u64) -> Instruction {
    let mut i = blank(code);
    set_reg(&mut i, 0, a);
    set_imm(&mut i, 1, imm, code.op_code().op_kind(1));
    i
}

pub fn set_imm(ins: &mut Instruction, n: u32, v: u64, kind: K) {
    let (op_kind, store): (OpKind, u8) = match kind {
        K::imm8 | K::imm8_const_1 => (OpKind::Immediate8, 8),
        K::imm8sex16 => (OpKind::Immediate8to16, 8),
        K::imm8sex32 => (OpKind::Immediate8to32, 8),
        K::imm8sex64 => (OpKind::Immediate8to64, 8),
        K::imm16 => (OpKind::Immediate16, 16),
        K::imm32 => (OpKind::Immediate32, 32),
        K::imm32sex64 => (OpKind::Immediate32to64, 32),
        _ => (OpKind::Immediate64, 64),
    };
    ins.set_op_kind(n, op_kind);
    match store {
        8 => ins.set_immediate8(if kind == K::imm8_const_1 { 1 } else { v as u8 }),
        16 => ins.set_immediate16(v as u16),
        32 => ins.set_immediate32(v as u32),
        _ => ins.set_immediate64(v),
    }
}

/// `mov r64, imm64`.
pub fn mov_imm(r: Register, v: u64) -> Instruction {
    with2(Code::Mov_r64_imm64, full(r), v)
}

/// A memory operand instruction (`code` with op0 = absolute `addr`), e.g. `mov rax, [addr]`.
pub fn load64(dst: Register, addr: u64) -> Instruction {
    let mut i = blank(Code::Mov_r64_rm64);
    set_reg(&mut i, 0, dst);
    set_abs_mem(&mut i, 1, addr, 8);
    i
}

/// Rewrite an absolute memory operand of `ins` as base + index * scale + displacement with
/// registers loaded (by setup instructions) so the address stays the same. Exercises the
/// effective-address paths, including 32-bit address size.
pub fn register_addressing(rng: &mut Rng, ins: &mut Instruction, setup: &mut Vec<Instruction>) {
    if !(0..ins.op_count()).any(|n| ins.op_kind(n) == OpKind::Memory) {
        return;
    }
    if ins.mnemonic() == Mnemonic::Lea || ins.memory_displ_size() == 8 && is_moffs(ins) {
        return;
    }
    // Registers the instruction names or its setup loads must keep their values.
    let mut taken: Vec<Register> = Vec::new();
    for i in setup.iter().chain(std::iter::once(&*ins)) {
        for k in 0..i.op_count() {
            if i.op_kind(k) == OpKind::Register {
                taken.push(i.op_register(k).full_register());
            }
        }
    }
    let free_reg = |rng: &mut Rng, taken: &mut Vec<Register>| {
        for _ in 0..8 {
            let r = random_reg(rng, 64, false);
            if !taken.contains(&r) {
                taken.push(r);
                return Some(r);
            }
        }
        None
    };
    let addr = ins.memory_displacement64();
    let addr_bits = if rng.chance(25) { 32 } else { 64 };
    let Some(base) = free_reg(rng, &mut taken) else {
        return;
    };
    let index = if rng.chance(50) {
        free_reg(rng, &mut taken)
    } else {
        None
    };
    let scale = *rng.pick(&[1u64, 2, 4, 8]);
    let index_value = rng.below(0x100);
    let disp: i64 = match rng.below(3) {
        0 => 0,
        1 => rng.below(256) as i64 - 128,
        _ => rng.below(0x10000) as i64 - 0x8000,
    };
    let mut base_value = (addr as i64 - disp) as u64;
    if let Some(ir) = index {
        base_value = base_value.wrapping_sub(index_value * scale);
        setup.push(mov_imm(ir, index_value));
        ins.set_memory_index(reg_of(addr_bits, gpr_index(ir)));
        ins.set_memory_index_scale(scale as u32);
    } else {
        ins.set_memory_index(Register::None);
        ins.set_memory_index_scale(1);
    }
    setup.push(mov_imm(base, base_value));
    ins.set_memory_base(reg_of(addr_bits, gpr_index(base)));
    let (d, size) = if disp == 0 {
        (0, 0)
    } else if i8::try_from(disp).is_ok() {
        (disp, 1)
    } else {
        (disp, 4)
    };
    ins.set_memory_displacement64(if addr_bits == 32 {
        d as u32 as u64
    } else {
        d as u64
    });
    ins.set_memory_displ_size(size);
}

pub fn is_moffs(ins: &Instruction) -> bool {
    matches!(
        ins.code(),
        Code::Mov_AL_moffs8
            | Code::Mov_AX_moffs16
            | Code::Mov_EAX_moffs32
            | Code::Mov_RAX_moffs64
            | Code::Mov_moffs8_AL
            | Code::Mov_moffs16_AX
            | Code::Mov_moffs32_EAX
            | Code::Mov_moffs64_RAX
    )
}

/// An instruction of `code` whose operands the caller fills in.
pub fn blank(code: Code) -> Instruction {
    let mut i = Instruction::default();
    i.set_code(code);
    i
}
