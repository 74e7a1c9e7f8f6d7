//! Which instructions of a block get inline IR ([`inline_kind`], the [`Inline`] forms and
//! the operand shapes they accept), and the RIPs a block can leave with
//! ([`exit_targets`]): decoder facts only, no IR.

use super::*;

/// Which instructions of a block get inline IR.
pub fn inline_kind(i: &Instruction, bits: u32) -> Option<Inline> {
    if bits != 64 {
        return None;
    }
    let reg = |n: u32| i.op_kind(n) == OpKind::Register && gpr_index(i.op_register(n)).is_some();
    let imm = |n: u32| {
        matches!(
            i.op_kind(n),
            OpKind::Immediate8to32
                | OpKind::Immediate8to64
                | OpKind::Immediate32
                | OpKind::Immediate32to64
                | OpKind::Immediate64
        )
    };
    let wide = |n: u32| matches!(i.op_register(n).size(), 4 | 8);
    // Any GPR (8/16/32/64 bits, AH..BH included) or immediate of any size.
    let reg_any = |n: u32| i.op_kind(n) == OpKind::Register && gpr_part(i.op_register(n)).is_some();
    let imm_any = |n: u32| {
        imm(n)
            || matches!(
                i.op_kind(n),
                OpKind::Immediate8 | OpKind::Immediate16 | OpKind::Immediate8to16
            )
    };
    let mem_any = |n: u32| {
        i.op_kind(n) == OpKind::Memory
            && matches!(i.memory_size().size(), 1 | 2 | 4 | 8)
            && mem_simple(i)
    };
    if let Some(k) = sse::sse_kind(i) {
        return Some(Inline::Sse(k));
    }
    if let Some(k) = sse::sse_mem_kind(i) {
        return Some(Inline::SseMem(k));
    }
    match i.mnemonic() {
        // What the interpreter runs as NOPs (hints, and fences: one vCPU, program order).
        Mnemonic::Nop
        | Mnemonic::Pause
        | Mnemonic::Prefetchnta
        | Mnemonic::Prefetcht0
        | Mnemonic::Prefetcht1
        | Mnemonic::Prefetcht2
        | Mnemonic::Prefetchw
        | Mnemonic::Lfence
        | Mnemonic::Sfence
        | Mnemonic::Mfence
        | Mnemonic::Endbr64 => Some(Inline::Nop),
        Mnemonic::Mov
            if reg_any(0)
                && i.op_kind(1) == OpKind::Register
                && i.op_register(1).is_segment_register() =>
        {
            Some(Inline::MovFromSeg)
        }
        Mnemonic::Mov if reg_any(0) && (reg_any(1) || imm_any(1)) => Some(Inline::Mov),
        Mnemonic::Mov if reg_any(0) && mem_any(1) => Some(Inline::Load),
        Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd
            if reg(0)
                && wide(0)
                && i.op_kind(1) == OpKind::Memory
                && matches!(i.memory_size().size(), 1 | 2 | 4)
                && mem_simple(i) =>
        {
            Some(Inline::Load)
        }
        Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd if reg_any(0) && reg_any(1) => {
            Some(Inline::Extend)
        }
        Mnemonic::Shl | Mnemonic::Sal | Mnemonic::Shr | Mnemonic::Sar
            if reg_any(0) && i.op_kind(1) == OpKind::Immediate8 =>
        {
            // Masked counts of 0 (flags untouched) and of the operand width or more (8/16-bit
            // operands) stay with the interpreter.
            let bits = i.op_register(0).size() as u64 * 8;
            let n = i.immediate(1) & if bits == 64 { 0x3F } else { 0x1F };
            (n != 0 && n < bits).then_some(Inline::Shift)
        }
        Mnemonic::Shl | Mnemonic::Sal | Mnemonic::Shr | Mnemonic::Sar
            if mem_any(0) && i.op_kind(1) == OpKind::Immediate8 =>
        {
            // The same counts as for a register, of the memory operand's width.
            let bits = i.memory_size().size() as u64 * 8;
            let n = i.immediate(1) & if bits == 64 { 0x3F } else { 0x1F };
            (n != 0 && n < bits).then_some(Inline::Rmw)
        }
        Mnemonic::Shl | Mnemonic::Sal | Mnemonic::Shr | Mnemonic::Sar
            if reg(0)
                && wide(0)
                && i.op_kind(1) == OpKind::Register
                && i.op1_register() == Register::CL =>
        {
            Some(Inline::ShiftCl)
        }
        Mnemonic::Rol | Mnemonic::Ror if reg_any(0) && i.op_kind(1) == OpKind::Immediate8 => {
            // A masked count of 0 leaves the flags alone: the interpreter's.
            let n = i.immediate(1)
                & if i.op_register(0).size() == 8 {
                    0x3F
                } else {
                    0x1F
                };
            (n != 0).then_some(Inline::Rotate)
        }
        _ if is_setcc(i.mnemonic()) && reg_any(0) => Some(Inline::Setcc),
        _ if is_cmovcc(i.mnemonic()) && reg(0) && wide(0) && reg(1) => Some(Inline::Cmov),
        // The load happens (and may fault) whatever the condition.
        _ if is_cmovcc(i.mnemonic()) && reg(0) && wide(0) && mem_any(1) => Some(Inline::Load),
        Mnemonic::Cbw | Mnemonic::Cwde | Mnemonic::Cdqe => Some(Inline::WidenAcc),
        Mnemonic::Cwd | Mnemonic::Cdq | Mnemonic::Cqo => Some(Inline::SignToDx),
        Mnemonic::Bswap if reg(0) && wide(0) => Some(Inline::Bswap),
        Mnemonic::Mov if mem_any(0) && (reg_any(1) || imm_any(1)) => Some(Inline::Store),
        Mnemonic::Add
        | Mnemonic::Sub
        | Mnemonic::And
        | Mnemonic::Or
        | Mnemonic::Xor
        | Mnemonic::Cmp
        | Mnemonic::Test
            if reg_any(0) && mem_any(1) =>
        {
            Some(Inline::LoadAlu)
        }
        Mnemonic::Cmp | Mnemonic::Test if mem_any(0) && (reg_any(1) || imm_any(1)) => {
            Some(Inline::LoadAlu)
        }
        Mnemonic::Add | Mnemonic::Sub | Mnemonic::And | Mnemonic::Or | Mnemonic::Xor
            if mem_any(0) && (reg_any(1) || imm_any(1)) =>
        {
            Some(Inline::Rmw)
        }
        Mnemonic::Inc | Mnemonic::Dec if i.op_count() == 1 && mem_any(0) => Some(Inline::Rmw),
        // One vCPU: LOCK changes nothing (nor XCHG's implied one).
        Mnemonic::Cmpxchg if mem_any(0) && reg_any(1) => Some(Inline::Rmw),
        // The decoder puts XCHG's memory operand first (87 /r: r/m, reg).
        Mnemonic::Xchg | Mnemonic::Xadd if mem_any(0) && reg_any(1) => Some(Inline::Rmw),
        _ if is_setcc(i.mnemonic()) && mem_any(0) => Some(Inline::Store),
        Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
            if mem_any(0) && i.op_kind(1) == OpKind::Immediate8 =>
        {
            Some(Inline::Rmw)
        }
        Mnemonic::Imul
            if reg(0)
                && wide(0)
                && reg(1)
                && (i.op_count() == 2 || (i.op_count() == 3 && imm(2))) =>
        {
            Some(Inline::Imul)
        }
        Mnemonic::Push
            if matches!(
                i.code(),
                Code::Push_r64 | Code::Pushq_imm32 | Code::Pushq_imm8
            ) =>
        {
            Some(Inline::Push)
        }
        Mnemonic::Pushfq => Some(Inline::Push),
        Mnemonic::Pop if i.code() == Code::Pop_r64 => Some(Inline::Pop),
        // RSP = RBP, then a pop into RBP.
        Mnemonic::Leave if i.code() == Code::Leaveq => Some(Inline::Pop),
        Mnemonic::Not | Mnemonic::Neg | Mnemonic::Inc | Mnemonic::Dec
            if i.op_count() == 1 && reg_any(0) =>
        {
            Some(Inline::Unary)
        }
        // A non-canonical target is the interpreter's #GP.
        Mnemonic::Call
            if i.code() == Code::Call_rel32_64
                && ((i.near_branch_target() as i64) << 16 >> 16) as u64
                    == i.near_branch_target() =>
        {
            Some(Inline::Call)
        }
        Mnemonic::Ret if i.code() == Code::Retnq => Some(Inline::Ret),
        Mnemonic::Bsf | Mnemonic::Bsr if reg(0) && wide(0) && reg(1) => Some(Inline::BitScan),
        // A count or a scan: the CPU model decides (`Translator::model_allows`).
        Mnemonic::Tzcnt | Mnemonic::Lzcnt if reg(0) && wide(0) && reg(1) => {
            Some(Inline::CountZeros)
        }
        Mnemonic::Bsf | Mnemonic::Bsr if reg(0) && wide(0) && mem_any(1) => Some(Inline::Load),
        Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
            if reg(0) && wide(0) && (reg(1) || i.op_kind(1) == OpKind::Immediate8) =>
        {
            Some(Inline::BitTest)
        }
        Mnemonic::Bt
            if mem_any(0)
                && matches!(i.memory_size().size(), 4 | 8)
                && (reg(1) || i.op_kind(1) == OpKind::Immediate8) =>
        {
            Some(Inline::Load)
        }
        // FNSTCW m16: a store of the x87 control word (when the x87 unit is usable).
        Mnemonic::Fnstcw if mem_any(0) => Some(Inline::Store),
        Mnemonic::Jmp if i.code() == Code::Jmp_rm64 && mem_any(0) => Some(Inline::JmpMem),
        Mnemonic::Jmp if i.code() == Code::Jmp_rm64 && reg(0) => Some(Inline::JmpReg),
        Mnemonic::Mul if reg(0) && wide(0) => Some(Inline::Mul),
        Mnemonic::Mul | Mnemonic::Div if mem_any(0) && matches!(i.memory_size().size(), 4 | 8) => {
            Some(Inline::Load)
        }
        Mnemonic::Shld | Mnemonic::Shrd
            if reg(0)
                && wide(0)
                && reg(1)
                && (i.op_kind(2) == OpKind::Immediate8
                    || (i.op_kind(2) == OpKind::Register && i.op2_register() == Register::CL)) =>
        {
            Some(Inline::DoubleShift)
        }
        Mnemonic::Div if reg(0) && wide(0) => Some(Inline::Div),
        Mnemonic::Cli => Some(Inline::Cli),
        Mnemonic::Call if i.code() == Code::Call_rm64 && reg(0) => Some(Inline::CallReg),
        Mnemonic::Call if i.code() == Code::Call_rm64 && mem_any(0) => Some(Inline::CallMem),
        Mnemonic::Lea if reg(0) && wide(0) && lea_simple(i) => Some(Inline::Lea),
        Mnemonic::Add
        | Mnemonic::Sub
        | Mnemonic::And
        | Mnemonic::Or
        | Mnemonic::Xor
        | Mnemonic::Cmp
        | Mnemonic::Test
        | Mnemonic::Adc
        | Mnemonic::Sbb
            if reg_any(0) && (reg_any(1) || imm_any(1)) =>
        {
            Some(Inline::Alu)
        }
        _ => None,
    }
}

/// The inline forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inline {
    /// NOP and what executes as one: PAUSE, the PREFETCH hints, the fences, ENDBR64.
    Nop,
    Mov,
    /// MOV r, Sreg: the selector, zero-extended to a 32/64-bit register.
    MovFromSeg,
    /// CLI where CPL <= IOPL (else the interpreter's #GP).
    Cli,
    Lea,
    Alu,
    /// MOV r32/r64, [mem] (and MOVZX/MOVSX/MOVSXD from memory): TLB fast path inline, the
    /// interpreter on a miss.
    Load,
    /// MOV [mem], r32/r64/imm: likewise.
    Store,
    /// ADD/SUB/AND/OR/XOR [mem], r/imm and INC/DEC [mem]: a load and a store through the
    /// TLB's write entry.
    Rmw,
    /// PUSH r64 / PUSH imm (64-bit operand size): a store at RSP - 8.
    Push,
    /// POP r64: a load at RSP.
    Pop,
    /// MOVZX/MOVSX/MOVSXD from a register.
    Extend,
    /// SHL/SAL/SHR/SAR of a register by an immediate (flags computed, materialized at sync).
    Shift,
    /// SHL/SAL/SHR/SAR r32/r64 by CL (a zero count keeps the flags from before).
    ShiftCl,
    /// ROL/ROR of a register by an immediate (CF and OF change, the other flags stay).
    Rotate,
    /// SETcc of a register.
    Setcc,
    /// CMOVcc r32/r64, r32/r64.
    Cmov,
    /// ADD/SUB/AND/OR/XOR/CMP/TEST r, [mem] and CMP/TEST [mem], r/imm: a load through the
    /// TLB fast path, then the ALU op.
    LoadAlu,
    /// IMUL r32/r64, r32/r64 (and with an immediate).
    Imul,
    /// NOT/NEG/INC/DEC of a register.
    Unary,
    /// CALL rel32 (64-bit): a store of the return address at RSP - 8.
    Call,
    /// RET (near, 64-bit, no immediate): a load at RSP, RIP from it.
    Ret,
    /// JMP qword [mem]: a load through the TLB fast path into RIP.
    JmpMem,
    /// JMP r64 (a canonical target; else the interpreter's #GP).
    JmpReg,
    /// CALL r64: a store of the return address at RSP - 8, RIP from the register.
    CallReg,
    /// CALL qword [mem]: a load of the target, then a store of the return address at
    /// RSP - 8, both through the TLB fast path.
    CallMem,
    /// MUL r32/r64: EDX:EAX / RDX:RAX = the accumulator times the register.
    Mul,
    /// SHLD/SHRD r32/r64, r32/r64, CL or imm8.
    DoubleShift,
    /// BT/BTS/BTR/BTC r32/r64, r32/r64 or imm8 (their memory forms are an [`Inline::Load`] or [`Inline::Rmw`]).
    BitTest,
    /// DIV r32/r64 when the quotient is sure to fit (EDX below the divisor; for 64 bits,
    /// RDX zero) and the divisor is not zero; else the interpreter (#DE, or the 128-bit
    /// dividend).
    Div,
    /// BSF/BSR r32/r64, r32/r64.
    BitScan,
    /// TZCNT/LZCNT of a register, where the model counts (BMI1/ABM; else the
    /// interpreter runs them as BSF/BSR).
    CountZeros,
    /// CBW/CWDE/CDQE: the accumulator's low half sign-extended into all of it.
    WidenAcc,
    /// CWD/CDQ/CQO: DX/EDX/RDX = copies of the accumulator's sign bit.
    SignToDx,
    /// BSWAP r32/r64.
    Bswap,
    /// An SSE2 integer form between registers (see `sse.rs`).
    Sse(sse::Sse),
    /// An SSE form with a memory operand: through the TLB fast path (see `sse.rs`).
    SseMem(sse::SseMem),
}

fn is_setcc(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Seto | Setno
            | Setb
            | Setae
            | Sete
            | Setne
            | Setbe
            | Seta
            | Sets
            | Setns
            | Setp
            | Setnp
            | Setl
            | Setge
            | Setle
            | Setg
    )
}

pub(super) fn is_cmovcc(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Cmovo
            | Cmovno
            | Cmovb
            | Cmovae
            | Cmove
            | Cmovne
            | Cmovbe
            | Cmova
            | Cmovs
            | Cmovns
            | Cmovp
            | Cmovnp
            | Cmovl
            | Cmovge
            | Cmovle
            | Cmovg
    )
}

/// Every RIP the end of a block whose last instruction is `last` can leave with, when they
/// are known at translation time: a direct JMP or CALL goes to its target, a Jcc to its
/// target or the next instruction; RET and indirect branches (which leave through the
/// helper, stopping the chain, unless inline RET) are not known; anything else falls
/// through (the helper leaves the block whenever RIP is not the next instruction).
pub(crate) fn exit_targets(last: &Instruction) -> Option<ExitTargets> {
    let direct = last.op_count() == 1 && last.op0_kind() == OpKind::NearBranch64;
    let (rips, len) = match last.flow_control() {
        iced_x86::FlowControl::UnconditionalBranch | iced_x86::FlowControl::Call if direct => {
            ([last.near_branch_target(), 0], 1)
        }
        iced_x86::FlowControl::ConditionalBranch if direct => {
            ([last.near_branch_target(), last.next_ip()], 2)
        }
        iced_x86::FlowControl::Next => ([last.next_ip(), 0], 1),
        _ => return None,
    };
    Some(ExitTargets { rips, len })
}

/// The RIPs a block's end can leave with (see [`exit_targets`]): one or two, without an
/// allocation.
#[derive(Clone, Copy)]
pub(crate) struct ExitTargets {
    rips: [u64; 2],
    len: usize,
}

impl std::ops::Deref for ExitTargets {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        &self.rips[..self.len]
    }
}

/// Where the translation of a block may go on after the instruction `i`, which ends a
/// block of the interpreter: the RIP the next instruction translated would have. A direct
/// JMP continues at its target, a Jcc at its fall-through (its taken path leaves the
/// translation: a side exit, see `Translator::side_exit`), or at its target when
/// `follow_taken` and the translator decides it inline ([`inline_jcc_target`]; then the
/// fall-through is the side exit). `None` for anything else, a CALL included (its
/// function would be copied into the translation of every caller: measured on the Linux
/// workload, 10% more compile time and no faster).
pub(crate) fn continues_at(i: &Instruction, follow_taken: bool) -> Option<u64> {
    if i.op_count() != 1 || i.op0_kind() != OpKind::NearBranch64 {
        return None;
    }
    match i.flow_control() {
        iced_x86::FlowControl::UnconditionalBranch => Some(i.near_branch_target()),
        iced_x86::FlowControl::ConditionalBranch => match inline_jcc_target(i) {
            Some(target) if follow_taken => Some(target),
            _ => Some(i.next_ip()),
        },
        _ => None,
    }
}

/// The target of `i` if it is a Jcc whose condition the translator evaluates inline (a
/// near branch of 64-bit code to a canonical target on one of the 16 conditions; not
/// LOOP or JRCXZ, which the interpreter runs): a translation may go on along either of
/// its paths.
pub(crate) fn inline_jcc_target(i: &Instruction) -> Option<u64> {
    let jcc = cc_number(i).is_some_and(|cc| flags::JCC[cc as usize] == i.mnemonic());
    near_target(i).filter(|_| jcc)
}

/// The target of `i` if it is a near branch of 64-bit code to a canonical address (else
/// it raises #GP, which the interpreter does).
pub(super) fn near_target(i: &Instruction) -> Option<u64> {
    if i.op_count() != 1 || i.op0_kind() != OpKind::NearBranch64 {
        return None;
    }
    let target = i.near_branch_target();
    (((target as i64) << 16 >> 16) as u64 == target).then_some(target)
}

/// Where a conditional branch `i` inside a translation leaves it (see [`continues_at`]):
/// `next` is the instruction translated after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SideExit {
    /// The RIP it leaves with: the target, or the fall-through when the translation goes
    /// on at the target.
    pub to: u64,
    /// Whether it leaves when the condition holds (else when it fails).
    pub when_taken: bool,
}

/// The side exit of `i`, followed in a translation by `next`, if `i` is a conditional
/// branch (`None` for anything else).
pub(crate) fn side_exit_of(i: &Instruction, next: &Instruction) -> Option<SideExit> {
    if i.flow_control() != iced_x86::FlowControl::ConditionalBranch
        || i.op_count() != 1
        || i.op0_kind() != OpKind::NearBranch64
    {
        return None;
    }
    let target = i.near_branch_target();
    let inverted = next.ip() == target && target != i.next_ip();
    Some(if inverted {
        debug_assert!(inline_jcc_target(i).is_some());
        SideExit {
            to: i.next_ip(),
            when_taken: false,
        }
    } else {
        SideExit {
            to: target,
            when_taken: true,
        }
    })
}

/// The link slots of a translation of `insns` (with the most instructions it can retire):
/// a slot per side exit's target, in order, then one per target of the end, or (up to
/// [`RECENT_SLOTS`] of) the slots left for the most recent successors when the end's RIP
/// is known only at run time. A RIP
/// has only its first slot. The compiler records this in the block
/// (`Block::shape`) and the translator reads the same slots, both from this function.
pub(crate) fn native_shape(insns: &[Instruction]) -> NativeShape {
    let mut slots = [LinkSlot::Unused; BLOCK_LINKS];
    let mut used = 0;
    let mut add = |rip: u64| {
        if !slots[..used].contains(&LinkSlot::To(rip)) && used < BLOCK_LINKS {
            slots[used] = LinkSlot::To(rip);
            used += 1;
        }
    };
    for pair in insns.windows(2) {
        if let Some(side) = side_exit_of(&pair[0], &pair[1]) {
            add(side.to);
        }
    }
    let last = insns.last().expect("a block has an instruction");
    match exit_targets(last) {
        Some(targets) => targets.iter().for_each(|&t| add(t)),
        // More probes cost every such exit more than the run loop's lookup saves.
        None => slots[used..]
            .iter_mut()
            .take(RECENT_SLOTS)
            .for_each(|s| *s = LinkSlot::Recent),
    }
    NativeShape {
        max_insns: insns.len() as u32,
        slots,
    }
}

/// How many instructions from the start of `insns` (at least 1) form a run of PUSH r64 or
/// of POP r64 (RSP neither pushed nor popped), which the translator accesses as one range
/// of the stack ([`super::Translator::stack_group`]): the register saves and restores of
/// function prologues and epilogues, up to six in a row in the kernel.
pub(super) fn stack_run(insns: &[Instruction]) -> usize {
    let is = |i: &Instruction, code: Code| i.code() == code && i.op0_register() != Register::RSP;
    let Some(code) = insns
        .first()
        .map(|i| i.code())
        .filter(|&c| matches!(c, Code::Push_r64 | Code::Pop_r64))
    else {
        return 1;
    };
    insns.iter().take_while(|i| is(i, code)).count().max(1)
}

/// Link slots of an exit whose RIP is known only at run time, probed before the jump
/// table (as many as a block had in all before translations spanned several).
const RECENT_SLOTS: usize = 2;

/// The link slot of a translation with `shape` that holds the link to `rip`.
pub(crate) fn slot_of(shape: &NativeShape, rip: u64) -> Option<usize> {
    shape.slots.iter().position(|&s| s == LinkSlot::To(rip))
}

/// A memory operand the inline TLB path handles: 64-bit addressing (GPR base/index or
/// RIP-relative), any segment (FS/GS add their base).
pub(super) fn mem_simple(i: &Instruction) -> bool {
    let ok = |r: Register| r == Register::None || (gpr_index(r).is_some() && r.size() == 8);
    (ok(i.memory_base()) || i.memory_base() == Register::RIP) && ok(i.memory_index())
}

/// LEA with GPR base/index (or none) and 32/64-bit addressing.
fn lea_simple(i: &Instruction) -> bool {
    let ok = |r: Register| {
        r == Register::None
            || r == Register::RIP
            || gpr_index(r).is_some_and(|_| matches!(r.size(), 4 | 8))
    };
    ok(i.memory_base()) && ok(i.memory_index()) && i.memory_index() != Register::RIP
}

/// Which decoded forms get inline IR (the decoder facts the translator relies on).
#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    fn decode(bytes: &[u8]) -> Instruction {
        Decoder::with_ip(64, bytes, 0x1000, DecoderOptions::NONE).decode()
    }

    #[test]
    fn inline_selection() {
        use sse::{Sse, SseMem};
        // pshufd xmm0,xmm1,1Bh reverses the dword lanes: bytes 12..16 first.
        let reversed = Sse::Shuffle {
            mask: [
                16 + 12,
                29,
                30,
                31,
                16 + 8,
                25,
                26,
                27,
                16 + 4,
                21,
                22,
                23,
                16,
                17,
                18,
                19,
            ],
            zero: false,
        };
        // (bytes, inline form in 64-bit code, the instruction and why)
        let cases: &[(&[u8], Option<Inline>, &str)] = &[
            (&[0x31, 0xC0], Some(Inline::Alu), "xor eax,eax"),
            (&[0x8C, 0xD0], Some(Inline::MovFromSeg), "mov eax,ss"),
            (&[0xF3, 0x90], Some(Inline::Nop), "pause"),
            (
                &[0xF0, 0x0F, 0xB1, 0x17],
                Some(Inline::Rmw),
                "lock cmpxchg [rdi],edx",
            ),
            (
                &[0x49, 0x0F, 0xBA, 0x2C, 0x24, 0x0C],
                Some(Inline::Rmw),
                "bts qword [r12],0Ch",
            ),
            (&[0xFA], Some(Inline::Cli), "cli"),
            (&[0x0F, 0x18, 0x08], Some(Inline::Nop), "prefetcht0 [rax]"),
            (&[0x48, 0x89, 0xD8], Some(Inline::Mov), "mov rax,rbx"),
            (&[0x88, 0xD8], Some(Inline::Mov), "mov al,bl"),
            (&[0x80, 0xFA, 0xE8], Some(Inline::Alu), "cmp dl,0E8h"),
            (&[0xC1, 0xEE, 0x0B], Some(Inline::Shift), "shr esi,0Bh"),
            (&[0xD1, 0xEF], Some(Inline::Shift), "shr edi,1"),
            (&[0xC1, 0xEE, 0x20], None, "shr esi,20h: masked count 0"),
            (
                &[0x66, 0xC1, 0xE9, 0x14],
                None,
                "shr cx,14h: count beyond a 16-bit operand",
            ),
            (&[0xD3, 0xE0], Some(Inline::ShiftCl), "shl eax,cl"),
            (&[0x66, 0xD3, 0xE0], None, "shl ax,cl: 16-bit shift by CL"),
            (&[0xC1, 0xC1, 0x0C], Some(Inline::Rotate), "rol ecx,0Ch"),
            (&[0xC0, 0xC1, 0x20], None, "rol cl,20h: masked count 0"),
            (&[0x0F, 0x92, 0xC0], Some(Inline::Setcc), "setb al"),
            (
                &[0x49, 0x0F, 0x44, 0xF2],
                Some(Inline::Cmov),
                "cmove rsi,r10",
            ),
            (
                &[0x48, 0x0F, 0x44, 0x33],
                Some(Inline::Load),
                "cmove rsi,[rbx]",
            ),
            (&[0xFF, 0x03], Some(Inline::Rmw), "inc dword [rbx]"),
            (&[0x48, 0x98], Some(Inline::WidenAcc), "cdqe"),
            (&[0x0F, 0xC8], Some(Inline::Bswap), "bswap eax"),
            // BSWAP of a 16-bit register is undefined: the interpreter's.
            (&[0x66, 0x0F, 0xC8], None, "bswap ax"),
            (
                &[0x0F, 0x28, 0x07],
                Some(Inline::SseMem(SseMem::Load { aligned: true })),
                "movaps xmm0,[rdi]",
            ),
            (
                &[0xF2, 0x0F, 0x11, 0x07],
                Some(Inline::SseMem(SseMem::Store { aligned: false })),
                "movsd [rdi],xmm0",
            ),
            (&[0xFF, 0xE0], Some(Inline::JmpReg), "jmp rax"),
            (&[0x41, 0xFF, 0xD3], Some(Inline::CallReg), "call r11"),
            (
                &[0x66, 0x0F, 0x70, 0xC1, 0x1B],
                Some(Inline::Sse(reversed)),
                "pshufd xmm0,xmm1,1Bh (lanes reversed)",
            ),
            (&[0x48, 0x8B, 0x03], Some(Inline::Load), "mov rax,[rbx]"),
            (&[0x89, 0x03], Some(Inline::Store), "mov [rbx],eax"),
            (
                &[0x67, 0x8B, 0x03],
                None,
                "mov eax,[ebx]: 32-bit addressing uses the helper",
            ),
            (&[0x55], Some(Inline::Push), "push rbp"),
            (&[0x9C], Some(Inline::Push), "pushfq"),
            (
                &[0x0F, 0xB6, 0x03],
                Some(Inline::Load),
                "movzx eax,byte [rbx]",
            ),
            (&[0x0F, 0xBE, 0xC4], Some(Inline::Extend), "movsx eax,ah"),
            (&[0x41, 0x5C], Some(Inline::Pop), "pop r12"),
            (&[0x66, 0x55], None, "16-bit push"),
            (&[0x0F, 0x92, 0x03], Some(Inline::Store), "setb byte [rbx]"),
            (&[0x87, 0x42, 0x18], Some(Inline::Rmw), "xchg [rdx+18h],eax"),
            (&[0xC9], Some(Inline::Pop), "leave"),
            (&[0xD0, 0x20], Some(Inline::Rmw), "shl byte [rax],1"),
            (
                &[0xF3, 0x48, 0x0F, 0xBC, 0xC9],
                Some(Inline::CountZeros),
                "tzcnt rcx,rcx",
            ),
            (&[0x88, 0x03], Some(Inline::Store), "mov [rbx],al"),
            (
                &[0x48, 0x3B, 0x70, 0x28],
                Some(Inline::LoadAlu),
                "cmp rsi,[rax+28h]",
            ),
            (&[0x01, 0x43, 0x7C], Some(Inline::Rmw), "add [rbx+7Ch],eax"),
            (
                &[0x49, 0x0F, 0xAF, 0xC5],
                Some(Inline::Imul),
                "imul rax,r13",
            ),
            (&[0x41, 0xF7, 0xD1], Some(Inline::Unary), "not r9d"),
            (
                &[0xF7, 0x1B],
                None,
                "neg dword [rbx]: NOT/NEG to memory use the helper",
            ),
            (
                &[0x48, 0x8D, 0x44, 0x8B, 0x10],
                Some(Inline::Lea),
                "lea rax,[rbx+rcx*4+10h]",
            ),
        ];
        for &(bytes, want, what) in cases {
            assert_eq!(inline_kind(&decode(bytes), 64), want, "{what}");
        }
        assert_eq!(
            inline_kind(&decode(&[0x31, 0xC0]), 32),
            None,
            "xor eax,eax: only 64-bit code"
        );
    }
}
