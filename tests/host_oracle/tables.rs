//! Static tables of the generator: the register files, the mnemonic allow list, the codes
//! left out, and the iced operand kinds the generator can fill.

use iced_x86::{Code, Mnemonic, OpCodeOperandKind as K, Register};

pub const RSP_INDEX: usize = 4;

pub const GPR64: [Register; 16] = [
    Register::RAX,
    Register::RCX,
    Register::RDX,
    Register::RBX,
    Register::RSP,
    Register::RBP,
    Register::RSI,
    Register::RDI,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
    Register::R12,
    Register::R13,
    Register::R14,
    Register::R15,
];

pub const GPR32: [Register; 16] = [
    Register::EAX,
    Register::ECX,
    Register::EDX,
    Register::EBX,
    Register::ESP,
    Register::EBP,
    Register::ESI,
    Register::EDI,
    Register::R8D,
    Register::R9D,
    Register::R10D,
    Register::R11D,
    Register::R12D,
    Register::R13D,
    Register::R14D,
    Register::R15D,
];

pub const GPR16: [Register; 16] = [
    Register::AX,
    Register::CX,
    Register::DX,
    Register::BX,
    Register::SP,
    Register::BP,
    Register::SI,
    Register::DI,
    Register::R8W,
    Register::R9W,
    Register::R10W,
    Register::R11W,
    Register::R12W,
    Register::R13W,
    Register::R14W,
    Register::R15W,
];

pub const GPR8: [Register; 16] = [
    Register::AL,
    Register::CL,
    Register::DL,
    Register::BL,
    Register::SPL,
    Register::BPL,
    Register::SIL,
    Register::DIL,
    Register::R8L,
    Register::R9L,
    Register::R10L,
    Register::R11L,
    Register::R12L,
    Register::R13L,
    Register::R14L,
    Register::R15L,
];

pub const XMM: [Register; 16] = [
    Register::XMM0,
    Register::XMM1,
    Register::XMM2,
    Register::XMM3,
    Register::XMM4,
    Register::XMM5,
    Register::XMM6,
    Register::XMM7,
    Register::XMM8,
    Register::XMM9,
    Register::XMM10,
    Register::XMM11,
    Register::XMM12,
    Register::XMM13,
    Register::XMM14,
    Register::XMM15,
];

pub const MM: [Register; 8] = [
    Register::MM0,
    Register::MM1,
    Register::MM2,
    Register::MM3,
    Register::MM4,
    Register::MM5,
    Register::MM6,
    Register::MM7,
];

pub const HIGH8: [Register; 4] = [Register::AH, Register::CH, Register::DH, Register::BH];

pub fn allowed(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Add | Adc
            | Sub
            | Sbb
            | And
            | Or
            | Xor
            | Cmp
            | Test
            | Inc
            | Dec
            | Neg
            | Not
            | Shl
            | Sal
            | Shr
            | Sar
            | Rol
            | Ror
            | Rcl
            | Rcr
            | Shld
            | Shrd
            | Mul
            | Imul
            | Div
            | Idiv
            | Bt
            | Bts
            | Btr
            | Btc
            | Bsf
            | Bsr
            | Popcnt
            | Lzcnt
            | Tzcnt
            | Andn
            | Bextr
            | Blsi
            | Blsmsk
            | Blsr
            | Cmova
            | Cmovae
            | Cmovb
            | Cmovbe
            | Cmove
            | Cmovg
            | Cmovge
            | Cmovl
            | Cmovle
            | Cmovne
            | Cmovno
            | Cmovnp
            | Cmovns
            | Cmovo
            | Cmovp
            | Cmovs
            | Seta
            | Setae
            | Setb
            | Setbe
            | Sete
            | Setg
            | Setge
            | Setl
            | Setle
            | Setne
            | Setno
            | Setnp
            | Setns
            | Seto
            | Setp
            | Sets
            | Push
            | Pop
            | Lea
            | Xchg
            | Xadd
            | Cmpxchg
            | Cmpxchg8b
            | Cmpxchg16b
            | Bswap
            | Mov
            | Movzx
            | Movsx
            | Movsxd
            | Cbw
            | Cwde
            | Cdqe
            | Cwd
            | Cdq
            | Cqo
            | Lahf
            | Sahf
            | Clc
            | Stc
            | Cmc
            | Cld
            | Std
            | Movbe
    )
}

/// The VEX-encoded BMI1 instructions (the only VEX encodings generated: others on the allow
/// list, e.g. the Knights Corner POPCNT, are not x86-64 instructions).
pub fn is_bmi1(m: Mnemonic) -> bool {
    matches!(
        m,
        Mnemonic::Andn | Mnemonic::Bextr | Mnemonic::Blsi | Mnemonic::Blsmsk | Mnemonic::Blsr
    )
}

/// Codes on the allow list the generator deliberately leaves out, with the reason.
pub fn excluded(code: Code) -> bool {
    matches!(
        code,
        // BSWAP of a 16-bit register is undefined.
        Code::Bswap_r16
    )
}

pub fn supported_kind(k: K) -> bool {
    matches!(
        k,
        K::r8_or_mem
            | K::r16_or_mem
            | K::r32_or_mem
            | K::r64_or_mem
            | K::r8_reg
            | K::r8_opcode
            | K::r16_reg
            | K::r16_opcode
            | K::r16_rm
            | K::r32_reg
            | K::r32_opcode
            | K::r32_rm
            | K::r32_vvvv
            | K::r64_reg
            | K::r64_opcode
            | K::r64_rm
            | K::r64_vvvv
            | K::mem
            | K::mem_offs
            | K::al
            | K::cl
            | K::ax
            | K::eax
            | K::rax
            | K::imm8
            | K::imm8_const_1
            | K::imm8sex16
            | K::imm8sex32
            | K::imm8sex64
            | K::imm16
            | K::imm32
            | K::imm32sex64
            | K::imm64
    )
}

pub fn reg_of(bits: u32, idx: usize) -> Register {
    match bits {
        8 => GPR8[idx],
        16 => GPR16[idx],
        32 => GPR32[idx],
        _ => GPR64[idx],
    }
}

/// Full 64-bit register containing `r`.
pub fn full(r: Register) -> Register {
    r.full_register()
}

pub fn is_high8(r: Register) -> bool {
    HIGH8.contains(&r)
}

pub fn bits_of_kind(k: K) -> u32 {
    match k {
        K::r8_or_mem | K::r8_reg | K::r8_opcode | K::al => 8,
        K::r16_or_mem | K::r16_reg | K::r16_opcode | K::r16_rm | K::ax => 16,
        K::r32_or_mem | K::r32_reg | K::r32_opcode | K::r32_rm | K::r32_vvvv | K::eax => 32,
        _ => 64,
    }
}

pub fn gpr_index(r: Register) -> usize {
    GPR64
        .iter()
        .position(|&g| g == r.full_register())
        .expect("a general-purpose register")
}
