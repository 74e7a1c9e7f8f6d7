//! Setup instructions that make generated instructions safe and meaningful: DIV/IDIV
//! operands that cannot fault, and string instructions with pointers inside the scratch
//! buffer and small counts.

use crate::gen::SCRATCH_BASE;
use crate::operands::{blank, mov_imm, set_abs_mem, set_imm, set_reg, with2};
use crate::rng::Rng;
use crate::tables::{full, reg_of};
use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register, RepPrefixKind};

/// Make DIV/IDIV safe: no zero divisor, no quotient overflow. The divisor (op0) must not be
/// part of the dividend.
pub fn divide_setup(
    rng: &mut Rng,
    ins: &mut Instruction,
    setup: &mut Vec<Instruction>,
) -> Option<()> {
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
pub fn string_group(rng: &mut Rng) -> Option<Vec<Instruction>> {
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
    if asz == 64 || (count == 0 && rep != RepPrefixKind::None) {
        // A 64-bit count uses all of RCX: keep it small. A 32-bit REP count of zero leaves
        // RCX[63:32] as it was on some Intel cores and clears it on others (seen: a family 6
        // model 167 host clears it): keep that half zero so both agree.
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
