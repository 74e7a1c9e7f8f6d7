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

use crate::operands::{
    abs_displ_size, blank, data_addr, load64, mov_imm, random_lea_mem, random_reg,
    register_addressing, set_abs_mem, set_imm, set_reg, with2,
};
use crate::rng::Rng;
use crate::setups::{divide_setup, string_group};
use crate::tables::{
    allowed, bits_of_kind, excluded, full, is_bmi1, is_high8, supported_kind, RSP_INDEX,
};
use iced_x86::{
    Code, Encoder, EncodingKind, Instruction, Mnemonic, OpCodeOperandKind as K, OpKind, Register,
    RflagsBits,
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

/// MXCSR of sequences that do not choose one: all exceptions masked, round to nearest.
pub const MXCSR_DEFAULT: u32 = 0x1F80;

/// Bytes written over the scratch fill before a run: (offset from `SCRATCH_BASE`, bytes).
pub type MemPatch = (u32, [u8; 16]);

/// x87 TOP when a sequence starts (every register tagged empty): not 0, so the TOP = 0 that
/// every MMX instruction sets is visible.
pub const X87_INITIAL_TOP: u8 = 5;

/// Sign/exponent fields (bits 79..64) of the physical x87 registers R0..R7 when a sequence
/// starts: none all ones, so the all-ones exponent an MMX write leaves in its register is
/// visible, and so is a register that changes without being written.
pub const X87_INITIAL_EXP: [u16; 8] = [
    0x0000, 0x3FFF, 0x4000, 0x7FFF, 0x8000, 0xBFFF, 0xC000, 0x1234,
];

/// The x87 state compared after a sequence: TOP, which physical registers are tagged empty
/// (bit k for register Rk) and the physical registers' sign/exponent fields (their
/// significands are MM0..MM7). MMX instructions set TOP to 0 and every tag valid, and an MM
/// register write sets its register's sign/exponent to all ones; EMMS sets TOP to 0 and tags
/// every register empty; nothing else in the sequences touches any of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct X87 {
    pub top: u8,
    pub empty: u8,
    pub exp: [u16; 8],
}

impl X87 {
    /// The state every sequence starts from.
    pub const INITIAL: X87 = X87 {
        top: X87_INITIAL_TOP,
        empty: 0xFF,
        exp: X87_INITIAL_EXP,
    };

    /// From a status word (TOP in bits 13..11), a full tag word (two bits per physical
    /// register, 11 = empty) and the physical registers' sign/exponent fields.
    pub fn from_full_tags(fsw: u16, ftw: u16, exp: [u16; 8]) -> X87 {
        X87 {
            top: ((fsw >> 11) & 7) as u8,
            empty: (0..8).fold(0, |m, k| m | u8::from((ftw >> (2 * k)) & 3 == 3) << k),
            exp,
        }
    }

    /// From an FXSAVE image: status word, abridged tags (bit k set: Rk not empty) and the
    /// sign/exponent fields of ST(0)..ST(7) (stored relative to TOP: ST(i) is R((TOP+i)&7)).
    pub fn from_fxsave(fsw: u16, abridged: u8, st_exp: [u16; 8]) -> X87 {
        let top = ((fsw >> 11) & 7) as u8;
        X87 {
            top,
            empty: !abridged,
            exp: std::array::from_fn(|k| st_exp[(k + 8 - usize::from(top)) & 7]),
        }
    }
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
    /// Initial XMM0..XMM15 (all zero for integer sequences).
    pub xmm: [u128; 16],
    /// Initial MXCSR (exceptions always masked).
    pub mxcsr: u32,
    /// Initial MM0..MM7 (all zero except for MMX sequences).
    pub mm: [u64; 8],
    /// Interesting bytes over a memory operand (SSE sequences), applied after the fill.
    pub mem_patch: Option<MemPatch>,
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
            xmm: [0; 16],
            mxcsr: MXCSR_DEFAULT,
            mm: [0; 8],
            mem_patch: None,
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
pub struct FlagTrack {
    pub undefined: u64,
}

impl FlagTrack {
    /// Apply `ins`; `None` when it reads a flag that is currently undefined.
    pub fn apply(mut self, ins: &Instruction) -> Option<FlagTrack> {
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

    /// Apply every instruction of `group` in order; `None` if one reads an undefined flag.
    pub fn apply_all(self, group: &[Instruction]) -> Option<FlagTrack> {
        group.iter().try_fold(self, |t, i| t.apply(i))
    }
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
        self.append(rng, len, &mut insns, &mut track);
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
            xmm: [0; 16],
            mxcsr: MXCSR_DEFAULT,
            mm: [0; 8],
            mem_patch: None,
        }
    }

    /// Append `len` main instructions (with their setup) to `insns`, never reading a flag
    /// `track` says is undefined, and update `track`.
    pub fn append(
        &self,
        rng: &mut Rng,
        len: usize,
        insns: &mut Vec<Instruction>,
        track: &mut FlagTrack,
    ) {
        let mut made = 0;
        let mut attempts = 0;
        while made < len && attempts < len * 50 {
            attempts += 1;
            let Some(group) = self.group(rng) else {
                continue;
            };
            let Some(t) = track.apply_all(&group) else {
                continue;
            };
            let mut enc = Encoder::new(64);
            if group.iter().any(|i| enc.encode(i, 0).is_err()) {
                continue;
            }
            *track = t;
            insns.extend(group);
            made += 1;
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
    if rng.chance(30)
        && !setup
            .iter()
            .any(|i| i.op_count() > 0 && (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory))
    {
        register_addressing(rng, &mut ins, &mut setup);
    }
    setup.push(ins);
    Some(setup)
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
