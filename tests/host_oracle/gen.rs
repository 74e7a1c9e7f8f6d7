//! Random instruction-sequence generator. Templates are every 64-bit-mode iced `Code` whose
//! mnemonic is on the allow list and whose operand kinds the generator can fill; operands are
//! random registers (never RSP, which stays pointing into the scratch stack), absolute memory
//! operands inside the scratch buffer, and random immediates. A few instructions get setup
//! instructions in front of them so they cannot fault or hit undefined results (DIV/IDIV
//! operands, BT bit offsets into memory, 16-bit SHLD/SHRD counts, string pointers).
//!
//! The generator tracks which arithmetic flags are currently undefined (per iced's
//! `rflags_undefined`) and never emits an instruction that reads one of them; the flags still
//! undefined at the end are the ones the comparison ignores.

use crate::rng::Rng;
use iced_x86::{
    Code, Encoder, EncodingKind, Instruction, Mnemonic, OpCodeOperandKind as K, OpKind, Register,
    RepPrefixKind, RflagsBits,
};

/// Scratch buffer: data at `SCRATCH_BASE..+DATA_SIZE`, stack above it, compared up to
/// `COMPARE_SIZE`; the native harness's state block sits at `STATE_ADDR` (not compared).
pub const SCRATCH_BASE: u64 = 0x0100_0000;
pub const DATA_SIZE: u64 = 0x1000;
pub const COMPARE_SIZE: usize = 0x2000;
pub const INITIAL_RSP: u64 = SCRATCH_BASE + 0x1800;
pub const STATE_ADDR: u64 = SCRATCH_BASE + 0x3000;
pub const MAP_SIZE: usize = 0x4000;

/// The RFLAGS bits compared: the arithmetic flags and DF.
pub const COMPARED_FLAGS: u64 = 0x8D5 | 0x400;
/// Bits always set in the initial RFLAGS (reserved bit 1 and IF, which user mode keeps).
pub const FIXED_FLAGS: u64 = 0x202;

const RSP_INDEX: usize = 4;

const GPR64: [Register; 16] = [
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
const GPR32: [Register; 16] = [
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
const GPR16: [Register; 16] = [
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
const GPR8: [Register; 16] = [
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
const HIGH8: [Register; 4] = [Register::AH, Register::CH, Register::DH, Register::BH];

fn allowed(m: Mnemonic) -> bool {
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
fn is_bmi1(m: Mnemonic) -> bool {
    matches!(
        m,
        Mnemonic::Andn | Mnemonic::Bextr | Mnemonic::Blsi | Mnemonic::Blsmsk | Mnemonic::Blsr
    )
}

/// Codes on the allow list the generator deliberately leaves out, with the reason.
fn excluded(code: Code) -> bool {
    matches!(
        code,
        // BSWAP of a 16-bit register is undefined.
        Code::Bswap_r16
    )
}

fn supported_kind(k: K) -> bool {
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

/// An instruction template: a `Code` and its operand kinds.
#[derive(Clone, Debug)]
struct Template {
    code: Code,
    kinds: Vec<K>,
}

/// What the generator chooses from, weighted uniformly: one group per mnemonic, plus the
/// string instructions.
enum Group {
    Codes(Vec<Template>),
    Strings,
}

/// A generated sequence and the initial state it runs from.
#[derive(Clone, Debug)]
pub struct Sequence {
    pub insns: Vec<Instruction>,
    /// Encoded instructions (position independent: no branches, no RIP-relative operands).
    pub bytes: Vec<u8>,
    pub gpr: [u64; 16],
    pub rflags: u64,
    /// Seed of the scratch-memory contents.
    pub mem_seed: u64,
    /// RFLAGS bits undefined at the end of the sequence (ignored by the comparison).
    pub undefined_flags: u64,
}

impl Sequence {
    /// A sequence of fixed instructions (no setup added) from the given initial state.
    /// Panics if an instruction reads a flag an earlier one left undefined.
    pub fn fixed(insns: Vec<Instruction>, gpr: [u64; 16], rflags: u64, mem_seed: u64) -> Self {
        let mut track = FlagTrack::default();
        let mut enc = Encoder::new(64);
        for i in &insns {
            track = track
                .apply(i)
                .unwrap_or_else(|| panic!("{i} reads an undefined flag"));
            enc.encode(i, 0)
                .unwrap_or_else(|e| panic!("cannot encode {i}: {e}"));
        }
        Sequence {
            bytes: enc.take_buffer(),
            insns,
            gpr,
            rflags: rflags | FIXED_FLAGS,
            mem_seed,
            undefined_flags: track.undefined,
        }
    }
}

pub struct Generator {
    groups: Vec<Group>,
}

/// iced `RflagsBits` to x86 RFLAGS bits.
pub fn x86_flags(f: u32) -> u64 {
    let mut r = 0;
    for (iced, x86) in [
        (RflagsBits::OF, 1u64 << 11),
        (RflagsBits::SF, 1 << 7),
        (RflagsBits::ZF, 1 << 6),
        (RflagsBits::AF, 1 << 4),
        (RflagsBits::CF, 1),
        (RflagsBits::PF, 1 << 2),
        (RflagsBits::DF, 1 << 10),
    ] {
        if f & iced != 0 {
            r |= x86;
        }
    }
    r
}

/// Flags state tracking across a sequence.
#[derive(Clone, Copy, Default)]
struct FlagTrack {
    undefined: u64,
}

impl FlagTrack {
    /// Apply `ins`; `None` when it reads a flag that is currently undefined.
    fn apply(mut self, ins: &Instruction) -> Option<FlagTrack> {
        const CF: u64 = 1;
        const OF: u64 = 1 << 11;
        let rotate_through_carry = matches!(ins.mnemonic(), Mnemonic::Rcl | Mnemonic::Rcr);
        let mut read = x86_flags(ins.rflags_read());
        let mut undefined = x86_flags(ins.rflags_undefined());
        if rotate_through_carry {
            // iced treats an immediate count that is a multiple of size + 1 as a no-op, but
            // the CPU still reads CF and rewrites OF (differently on Intel and AMD).
            read |= CF;
            if x86_flags(ins.rflags_modified()) == 0 {
                undefined |= OF;
            }
        }
        if read & self.undefined != 0 {
            return None;
        }
        let defined = x86_flags(ins.rflags_modified()) & !undefined;
        // Shifts/rotates with a zero count and REP CMPS/SCAS with a zero count leave the
        // flags alone, so they cannot be trusted to define anything.
        let may_skip = matches!(
            ins.mnemonic(),
            Mnemonic::Shl
                | Mnemonic::Sal
                | Mnemonic::Shr
                | Mnemonic::Sar
                | Mnemonic::Rol
                | Mnemonic::Ror
                | Mnemonic::Rcl
                | Mnemonic::Rcr
                | Mnemonic::Shld
                | Mnemonic::Shrd
        ) || ins.has_rep_prefix()
            || ins.has_repne_prefix();
        if !may_skip {
            self.undefined &= !defined;
        }
        self.undefined |= undefined;
        Some(self)
    }
}

fn reg_of(bits: u32, idx: usize) -> Register {
    match bits {
        8 => GPR8[idx],
        16 => GPR16[idx],
        32 => GPR32[idx],
        _ => GPR64[idx],
    }
}

/// Full 64-bit register containing `r`.
fn full(r: Register) -> Register {
    r.full_register()
}

fn is_high8(r: Register) -> bool {
    HIGH8.contains(&r)
}

impl Default for Generator {
    fn default() -> Self {
        Self::new()
    }
}

impl Generator {
    pub fn new() -> Generator {
        let mut by_mnemonic: Vec<(Mnemonic, Vec<Template>)> = Vec::new();
        for code in Code::values() {
            let oc = code.op_code();
            if !oc.is_instruction()
                || !oc.mode64()
                || !allowed(code.mnemonic())
                || excluded(code)
                || !(oc.encoding() == EncodingKind::Legacy
                    || (oc.encoding() == EncodingKind::VEX && is_bmi1(code.mnemonic())))
                || !oc.op_kinds().iter().all(|&k| supported_kind(k))
            {
                continue;
            }
            let t = Template {
                code,
                kinds: oc.op_kinds().to_vec(),
            };
            match by_mnemonic.iter_mut().find(|(m, _)| *m == code.mnemonic()) {
                Some((_, v)) => v.push(t),
                None => by_mnemonic.push((code.mnemonic(), vec![t])),
            }
        }
        let mut groups: Vec<Group> = by_mnemonic
            .into_iter()
            .map(|(_, v)| Group::Codes(v))
            .collect();
        // Give the string instructions a few shares: they come in many shapes.
        for _ in 0..4 {
            groups.push(Group::Strings);
        }
        Generator { groups }
    }

    /// Number of instruction templates (Codes) the generator draws from.
    pub fn template_count(&self) -> usize {
        self.groups
            .iter()
            .map(|g| match g {
                Group::Codes(v) => v.len(),
                Group::Strings => 0,
            })
            .sum()
    }

    /// Generate a sequence of `len` main instructions (plus setup instructions).
    pub fn sequence(&self, rng: &mut Rng, len: usize) -> Sequence {
        let mut gpr = [0u64; 16];
        for g in gpr.iter_mut() {
            *g = rng.value();
        }
        gpr[RSP_INDEX] = INITIAL_RSP;
        let arith = rng.next_u64() & 0x8D5;
        let rflags = arith | FIXED_FLAGS;
        let mut insns = Vec::new();
        let mut track = FlagTrack::default();
        let mut made = 0;
        let mut attempts = 0;
        while made < len && attempts < len * 50 {
            attempts += 1;
            let Some(group) = self.group(rng) else {
                continue;
            };
            let mut t = track;
            if !group.iter().all(|i| match t.apply(i) {
                Some(n) => {
                    t = n;
                    true
                }
                None => false,
            }) {
                continue;
            }
            let mut enc = Encoder::new(64);
            if group.iter().any(|i| enc.encode(i, 0).is_err()) {
                continue;
            }
            track = t;
            insns.extend(group);
            made += 1;
        }
        let mut enc = Encoder::new(64);
        for i in &insns {
            enc.encode(i, 0).expect("instruction encoded once already");
        }
        Sequence {
            bytes: enc.take_buffer(),
            insns,
            gpr,
            rflags,
            mem_seed: rng.next_u64(),
            undefined_flags: track.undefined,
        }
    }

    /// One main instruction with its setup instructions, or `None` to retry.
    fn group(&self, rng: &mut Rng) -> Option<Vec<Instruction>> {
        match rng.pick(&self.groups) {
            Group::Strings => string_group(rng),
            Group::Codes(templates) => {
                let t = rng.pick(templates);
                instantiate(rng, t)
            }
        }
    }
}

/// A random absolute address in the data area for an operand of `size` bytes.
fn data_addr(rng: &mut Rng, size: u64) -> u64 {
    let mut off = rng.below(DATA_SIZE - 32);
    if rng.chance(40) && size.is_power_of_two() {
        off &= !(size - 1);
    }
    SCRATCH_BASE + off
}

/// Displacement size of an absolute operand: 8 selects 64-bit addressing (encoded as a
/// sign-extended disp32), 4 the 32-bit address-size form (0x67 prefix).
fn abs_displ_size(rng: &mut Rng) -> u32 {
    if rng.chance(75) {
        8
    } else {
        4
    }
}

fn set_abs_mem(ins: &mut Instruction, n: u32, addr: u64, displ_size: u32) {
    ins.set_op_kind(n, OpKind::Memory);
    ins.set_memory_base(Register::None);
    ins.set_memory_index(Register::None);
    ins.set_memory_index_scale(1);
    ins.set_memory_displacement64(addr);
    ins.set_memory_displ_size(displ_size);
}

/// A random register of `bits` (never the RSP family). `allow_high8` permits AH..BH.
fn random_reg(rng: &mut Rng, bits: u32, allow_high8: bool) -> Register {
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

fn set_reg(ins: &mut Instruction, n: u32, r: Register) {
    ins.set_op_kind(n, OpKind::Register);
    ins.set_op_register(n, r);
}

/// A random LEA-style memory operand (any registers, any scale, 32- or 64-bit addressing).
fn random_lea_mem(rng: &mut Rng, ins: &mut Instruction, n: u32) {
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

fn with2(code: Code, a: Register, imm: u64) -> Instruction {
    let mut i = blank(code);
    set_reg(&mut i, 0, a);
    set_imm(&mut i, 1, imm, code.op_code().op_kind(1));
    i
}

fn set_imm(ins: &mut Instruction, n: u32, v: u64, kind: K) {
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
fn mov_imm(r: Register, v: u64) -> Instruction {
    with2(Code::Mov_r64_imm64, full(r), v)
}

/// A memory operand instruction (`code` with op0 = absolute `addr`), e.g. `mov rax, [addr]`.
fn load64(dst: Register, addr: u64) -> Instruction {
    let mut i = blank(Code::Mov_r64_rm64);
    set_reg(&mut i, 0, dst);
    set_abs_mem(&mut i, 1, addr, 8);
    i
}

fn bits_of_kind(k: K) -> u32 {
    match k {
        K::r8_or_mem | K::r8_reg | K::r8_opcode | K::al => 8,
        K::r16_or_mem | K::r16_reg | K::r16_opcode | K::r16_rm | K::ax => 16,
        K::r32_or_mem | K::r32_reg | K::r32_opcode | K::r32_rm | K::r32_vvvv | K::eax => 32,
        _ => 64,
    }
}

/// Fill the operands of template `t` and add the setup it needs.
fn instantiate(rng: &mut Rng, t: &Template) -> Option<Vec<Instruction>> {
    let mut ins = blank(t.code);
    let mnemonic = t.code.mnemonic();
    let mem_size = u64::from(ins.memory_size().size() as u32);
    let mut mem_addr = None;
    let high8_ok = rng.chance(30);
    for (n, &k) in t.kinds.iter().enumerate() {
        let n = n as u32;
        match k {
            K::r8_or_mem | K::r16_or_mem | K::r32_or_mem | K::r64_or_mem => {
                if rng.chance(35) {
                    let a = data_addr(rng, mem_size);
                    set_abs_mem(&mut ins, n, a, abs_displ_size(rng));
                    mem_addr = Some(a);
                } else {
                    set_reg(&mut ins, n, random_reg(rng, bits_of_kind(k), high8_ok));
                }
            }
            K::mem if mnemonic == Mnemonic::Lea => random_lea_mem(rng, &mut ins, n),
            K::mem => {
                let mut a = data_addr(rng, mem_size);
                if mnemonic == Mnemonic::Cmpxchg16b {
                    a &= !0xF;
                }
                set_abs_mem(&mut ins, n, a, abs_displ_size(rng));
                mem_addr = Some(a);
            }
            K::mem_offs => {
                let a = data_addr(rng, mem_size);
                set_abs_mem(&mut ins, n, a, 8);
                mem_addr = Some(a);
            }
            K::al => set_reg(&mut ins, n, Register::AL),
            K::cl => set_reg(&mut ins, n, Register::CL),
            K::ax => set_reg(&mut ins, n, Register::AX),
            K::eax => set_reg(&mut ins, n, Register::EAX),
            K::rax => set_reg(&mut ins, n, Register::RAX),
            K::imm8 | K::imm8_const_1 | K::imm8sex16 | K::imm8sex32 | K::imm8sex64 => {
                let v = if rng.chance(50) {
                    rng.below(70)
                } else {
                    rng.next_u64()
                };
                set_imm(&mut ins, n, v, k)
            }
            K::imm16 | K::imm32 | K::imm32sex64 | K::imm64 => {
                let v = rng.value();
                set_imm(&mut ins, n, v, k)
            }
            _ => set_reg(&mut ins, n, random_reg(rng, bits_of_kind(k), high8_ok)),
        }
    }
    if t.code.op_code().can_use_lock_prefix()
        && ins.op_count() > 0
        && ins.op0_kind() == OpKind::Memory
        && rng.chance(30)
    {
        ins.set_has_lock_prefix(true);
    }
    let mut setup = Vec::new();
    match mnemonic {
        Mnemonic::Div | Mnemonic::Idiv => divide_setup(rng, &mut ins, &mut setup)?,
        Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
            if ins.op0_kind() == OpKind::Memory && ins.op1_kind() == OpKind::Register =>
        {
            // Signed bit offset reaching up to 0x700 bytes either side of the operand.
            let span = 0x700 * 8;
            let offset = rng.below(2 * span) as i64 - span as i64;
            setup.push(mov_imm(ins.op1_register(), offset as u64));
            let a = SCRATCH_BASE + 0x800 + rng.below(0x40);
            ins.set_memory_displacement64(a);
        }
        Mnemonic::Shld | Mnemonic::Shrd if ins.op0_register().size() == 2 || mem_size == 2 => {
            // Counts above 16 are undefined for 16-bit operands: keep them in range.
            let count = rng.below(17);
            if ins.op2_kind() == OpKind::Register {
                setup.push(with2(Code::Mov_r8_imm8, Register::CL, count));
            } else {
                ins.set_immediate8(count as u8);
            }
        }
        Mnemonic::Cmpxchg if rng.chance(50) => {
            // Make the comparison succeed: load the accumulator from the destination.
            if ins.op0_kind() == OpKind::Memory {
                setup.push(load64(Register::RAX, mem_addr?));
            } else {
                let d = ins.op0_register();
                if is_high8(d) {
                    return None;
                }
                let mut m = blank(Code::Mov_r64_rm64);
                set_reg(&mut m, 0, Register::RAX);
                set_reg(&mut m, 1, full(d));
                setup.push(m);
            }
        }
        Mnemonic::Cmpxchg8b | Mnemonic::Cmpxchg16b if rng.chance(50) => {
            let a = mem_addr?;
            let half = mem_size / 2;
            setup.push(load64(Register::RAX, a));
            setup.push(load64(Register::RDX, a + half));
        }
        _ => {}
    }
    setup.push(ins);
    Some(setup)
}

/// Make DIV/IDIV safe: no zero divisor, no quotient overflow. The divisor (op0) must not be
/// part of the dividend.
fn divide_setup(rng: &mut Rng, ins: &mut Instruction, setup: &mut Vec<Instruction>) -> Option<()> {
    let bits = if ins.op0_kind() == OpKind::Memory {
        ins.memory_size().size() as u32 * 8
    } else {
        let r = ins.op0_register();
        if matches!(full(r), Register::RAX | Register::RDX)
            && (r.size() > 1 || r == Register::AL || r == Register::AH)
        {
            return None;
        }
        r.size() as u32 * 8
    };
    let _ = rng;
    // An instruction applying `code` with op0 = the divisor operand and an immediate.
    let on_divisor = |code: Code, imm: u64| {
        let mut i = blank(code);
        if ins.op0_kind() == OpKind::Memory {
            set_abs_mem(
                &mut i,
                0,
                ins.memory_displacement64(),
                ins.memory_displ_size(),
            );
        } else {
            set_reg(&mut i, 0, ins.op0_register());
        }
        set_imm(&mut i, 1, imm, code.op_code().op_kind(1));
        i
    };
    let (bts, btr) = match bits {
        16 => (Code::Bts_rm16_imm8, Code::Btr_rm16_imm8),
        32 => (Code::Bts_rm32_imm8, Code::Btr_rm32_imm8),
        _ => (Code::Bts_rm64_imm8, Code::Btr_rm64_imm8),
    };
    if ins.mnemonic() == Mnemonic::Div {
        // Divisor >= 2^(bits-1) > high half of the dividend.
        if bits == 8 {
            setup.push(on_divisor(Code::Or_rm8_imm8, 0x80));
            setup.push(with2(Code::And_rm8_imm8, Register::AH, 0x7F));
        } else {
            setup.push(on_divisor(bts, u64::from(bits - 1)));
            setup.push(with2(btr, reg_of(bits, 2), u64::from(bits - 1)));
        }
    } else {
        // |divisor| >= 3 (bit 2 set, bit 1 clear) and a sign-extended dividend.
        if bits == 8 {
            setup.push(on_divisor(Code::And_rm8_imm8, 0xFD));
            setup.push(on_divisor(Code::Or_rm8_imm8, 0x04));
            setup.push(blank(Code::Cbw));
        } else {
            setup.push(on_divisor(btr, 1));
            setup.push(on_divisor(bts, 2));
            setup.push(blank(match bits {
                16 => Code::Cwd,
                32 => Code::Cdq,
                _ => Code::Cqo,
            }));
        }
    }
    Some(())
}

/// A string instruction with its pointer/count setup.
fn string_group(rng: &mut Rng) -> Option<Vec<Instruction>> {
    let size = *rng.pick(&[1u64, 2, 4, 8]);
    let asz = if rng.chance(20) { 32 } else { 64 };
    let which = rng.below(5);
    let rep = match rng.below(4) {
        0 => RepPrefixKind::None,
        1 | 2 => RepPrefixKind::Repe,
        _ => RepPrefixKind::Repne,
    };
    // CMPS/SCAS distinguish REPE/REPNE; the others repeat with either.
    let seg = Register::None;
    let ins = match (which, size) {
        (0, 1) => Instruction::with_movsb(asz, seg, rep),
        (0, 2) => Instruction::with_movsw(asz, seg, rep),
        (0, 4) => Instruction::with_movsd(asz, seg, rep),
        (0, _) => Instruction::with_movsq(asz, seg, rep),
        (1, 1) => Instruction::with_cmpsb(asz, seg, rep),
        (1, 2) => Instruction::with_cmpsw(asz, seg, rep),
        (1, 4) => Instruction::with_cmpsd(asz, seg, rep),
        (1, _) => Instruction::with_cmpsq(asz, seg, rep),
        (2, 1) => Instruction::with_scasb(asz, rep),
        (2, 2) => Instruction::with_scasw(asz, rep),
        (2, 4) => Instruction::with_scasd(asz, rep),
        (2, _) => Instruction::with_scasq(asz, rep),
        (3, 1) => Instruction::with_lodsb(asz, seg, rep),
        (3, 2) => Instruction::with_lodsw(asz, seg, rep),
        (3, 4) => Instruction::with_lodsd(asz, seg, rep),
        (3, _) => Instruction::with_lodsq(asz, seg, rep),
        (_, 1) => Instruction::with_stosb(asz, rep),
        (_, 2) => Instruction::with_stosw(asz, rep),
        (_, 4) => Instruction::with_stosd(asz, rep),
        (_, _) => Instruction::with_stosq(asz, rep),
    }
    .ok()?;
    let count = rng.below(17);
    // Pointers well inside the data area so 16 elements either way stay in it.
    let si = SCRATCH_BASE + 0x200 + rng.below(0xC00);
    let di = SCRATCH_BASE + 0x200 + rng.below(0xC00);
    let mut setup = vec![
        mov_imm(Register::RSI, si),
        mov_imm(Register::RDI, di),
        mov_imm(
            Register::RCX,
            count | (rng.next_u64() & 0xFFFF_FFFF_0000_0000),
        ),
    ];
    if asz == 64 {
        // A 64-bit count uses all of RCX: keep it small.
        setup[2] = mov_imm(Register::RCX, count);
    }
    if which == 1 || which == 2 {
        // Make equal elements likely for REPE: copy a run first half of the time.
        if rng.chance(50) {
            setup.push(mov_imm(Register::RDI, si));
        }
    }
    setup.push(blank(if rng.chance(30) { Code::Std } else { Code::Cld }));
    setup.push(ins);
    Some(setup)
}

/// An instruction of `code` whose operands the caller fills in.
pub fn blank(code: Code) -> Instruction {
    let mut i = Instruction::default();
    i.set_code(code);
    i
}

#[test]
fn every_allowed_mnemonic_has_templates() {
    let g = Generator::new();
    let covered: Vec<Mnemonic> = g
        .groups
        .iter()
        .filter_map(|grp| match grp {
            Group::Codes(v) => Some(v[0].code.mnemonic()),
            Group::Strings => None,
        })
        .collect();
    for code in Code::values() {
        let m = code.mnemonic();
        assert!(
            !allowed(m) || covered.contains(&m),
            "allowed mnemonic {m:?} has no usable 64-bit template"
        );
    }
    assert!(
        g.template_count() > 400,
        "only {} templates",
        g.template_count()
    );
}
