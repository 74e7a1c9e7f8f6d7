//! How the runner bridges the recorded 80286 and the modern x86 crane86 models in real mode:
//! which tests are not counted (each with a concrete reason), which undefined flags are
//! masked beyond the metadata's `flags-mask`, and which #GP of the 286 a modern CPU reports as
//! #SS. Skipped tests are still run and their pass count reported, so a skip never hides a
//! crash. Tests of metadata status `undefined` are counted: the C6/C7/8F encodings with
//! ModRM reg ≠ 0 raise #UD on the 286 and on a modern x86 alike.

use super::bench::{is_prefix, opcode_and_next};
use super::suite::{FormInfo, Metadata, Regs, Test, REG_NAMES};
use crane86::x86::flags;
use iced_x86::{Decoder, DecoderOptions, Instruction, OpKind, Register};

/// Longest instruction the 286 accepts (prefixes included); longer ones raise #GP there,
/// while a modern x86 accepts up to 15 bytes.
const MAX_286_INSN_LEN: usize = 10;

/// What the runner does with one test.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Why the test is not counted, or `None` when it is.
    pub skip: Option<String>,
    /// FLAGS bits compared (the metadata mask, possibly narrowed).
    pub flags_mask: u16,
    /// The 286 raised #GP (13) for a stack-segment overrun, which a modern x86 reports as
    /// #SS (12): point IVT entry 12 at the same handler so both land on the recorded state.
    pub alias_ss_fault: bool,
    /// Registers (bit k = `REG_NAMES[k]`) not compared, because the 286 leaves them in a state
    /// a modern x86 does not. The test is still counted.
    pub ignored_regs: u16,
    /// Why the comparison of a counted test deviates from the plain one (masks, aliases).
    pub adjustments: Vec<&'static str>,
}

/// Bit of register `name` in [`Plan::ignored_regs`].
fn reg_bit(name: &str) -> u16 {
    let k = REG_NAMES
        .iter()
        .position(|&n| n == name)
        .expect("a register name of REG_NAMES");
    1 << k
}

/// The metadata entry of the test's form: `80.3` names opcode 80 reg 3; an opcode whose entry
/// is split by reg but has a single file (C6, 8F, …) takes reg from each test's ModRM byte.
pub fn form_info(meta: &Metadata, form: &str, test: &Test) -> Option<FormInfo> {
    let (opcode, reg) = match form.split_once('.') {
        Some((op, reg)) => (op.to_string(), reg.parse::<u8>().ok()),
        None => {
            let reg = if meta.split_by_reg(form) {
                opcode_and_next(&test.bytes).1.map(|modrm| (modrm >> 3) & 7)
            } else {
                None
            };
            (form.to_string(), reg)
        }
    };
    meta.form(&opcode, reg)
}

fn decode(bytes: &[u8], ip: u16) -> Instruction {
    let mut dec = Decoder::with_ip(16, bytes, u64::from(ip), DecoderOptions::NONE);
    dec.decode()
}

/// Decide how to run and judge `test`.
pub fn plan(info: Option<&FormInfo>, test: &Test) -> Plan {
    let mut plan = Plan {
        flags_mask: info.map_or(0xFFFF, |i| i.flags_mask),
        ..Plan::default()
    };
    let insn = decode(&test.bytes, test.initial.regs.ip.unwrap_or(0));
    let (op, modrm) = opcode_and_next(&test.bytes);
    let reg = modrm.map(|m| (m >> 3) & 7);
    let hw_exception = test.exception.as_ref().map(|e| e.number);

    // Undefined flags the metadata leaves in.
    let of = flags::OF as u16;
    let shift = matches!(op, 0xC0 | 0xC1 | 0xD2 | 0xD3);
    if shift && plan.flags_mask & of != 0 && shift_count(&insn, test) > 1 {
        plan.flags_mask &= !of;
        plan.adjustments.push(
            "shift/rotate by more than 1: OF not compared (undefined in the SDM; the 286 and \
             modern CPUs compute different values; the metadata masks it for C1/D2/D3 but not \
             C0)",
        );
    }

    // The 286 reports every real-mode segment overrun as #GP; a modern x86 raises #SS when the
    // access goes through SS (implicit stack accesses and SS-based memory operands).
    let string_op = matches!(op, 0x6C..=0x6F | 0xA4..=0xA7 | 0xAA..=0xAF);
    plan.alias_ss_fault = hw_exception == Some(13) && overruns_ss(&insn, test, op);
    if plan.alias_ss_fault {
        plan.adjustments.push(
            "segment overrun through SS: IVT entry 12 aliased to entry 13 (the 286 raises \
             #GP in real mode, a modern x86 #SS)",
        );
    }

    if string_op && hw_exception == Some(13) {
        plan.ignored_regs = reg_bit("si") | reg_bit("di") | reg_bit("cx");
        plan.adjustments.push(
            "string instruction faulting on a word at offset 0xFFFF: SI, DI and CX not \
             compared (the 286 has already advanced them for the faulting iteration when it \
             raises #GP, a modern x86 faults precisely)",
        );
    }

    if op == 0xD4 && hw_exception == Some(0) {
        plan.flags_mask &= !(flags::ARITH as u16);
        plan.adjustments.push(
            "AAM 0 (#DE): arithmetic flags not compared (the 286 has updated SF/ZF/PF before \
             the fault, a modern x86 leaves FLAGS unchanged)",
        );
    }

    plan.skip = skip_reason(info, test, &insn, op, reg, hw_exception);
    plan
}

fn skip_reason(
    info: Option<&FormInfo>,
    test: &Test,
    insn: &Instruction,
    op: u8,
    reg: Option<u8>,
    hw_exception: Option<u8>,
) -> Option<String> {
    if let Some(info) = info {
        match info.status.as_str() {
            "fpu" => {
                return Some(
                    "metadata status `fpu`: ESC opcode recorded on a 286 without a coprocessor \
                     (a no-op there); a modern x86 runs it on its integrated x87 (or raises \
                     #NM when CR0.EM=1)"
                        .into(),
                )
            }
            "prefix" => return Some("metadata status `prefix`: not an instruction".into()),
            _ => {}
        }
    }
    if !insn.is_invalid() && insn.len() > MAX_286_INSN_LEN {
        return Some(format!(
            "instruction longer than {MAX_286_INSN_LEN} bytes (prefixes included): the 286 \
             raises #GP, a modern x86 accepts up to 15 bytes"
        ));
    }
    if lock_faults_on_modern_x86(&test.bytes) {
        return Some(
            "LOCK on an instruction that cannot be locked: the 286 ignores it, a modern x86 \
             raises #UD"
                .into(),
        );
    }
    if matches!(op, 0x8C | 0x8E) && matches!(reg, Some(4 | 5)) {
        return Some(
            "MOV to/from segment register 4/5: the 286 has no FS/GS (#UD), a modern x86 moves \
             FS/GS"
                .into(),
        );
    }
    let sp = test.initial.regs.sp.unwrap_or(0);
    if op == 0x8F && hw_exception == Some(13) && sp != 0xFFFF {
        return Some(
            "POP r/m16 faulting on its memory destination: the 286 has already incremented SP, \
             a modern x86 faults precisely (SP unchanged)"
                .into(),
        );
    }
    if matches!(op, 0xF6 | 0xF7) && reg == Some(7) && hw_exception.is_none() {
        if let Some(divisor) = operand_value(insn, test) {
            if idiv_faults(test, op == 0xF7, divisor) {
                return Some(
                    "IDIV whose quotient is out of range: the 286 microcode misses this \
                     overflow and returns a result, a modern x86 raises #DE"
                        .into(),
                );
            }
        }
    }
    None
}

/// Whether IDIV of AX (byte form) or DX:AX (`word`) by `divisor` overflows on a modern x86.
fn idiv_faults(test: &Test, word: bool, divisor: u16) -> bool {
    let r = &test.initial.regs;
    let ax = i64::from(r.ax.unwrap_or(0));
    let (dividend, d, lo, hi) = if word {
        let dx = i64::from(r.dx.unwrap_or(0));
        (
            i64::from(((dx << 16) | ax) as u32 as i32),
            i64::from(divisor as i16),
            -0x8000,
            0x7FFF,
        )
    } else {
        (
            i64::from(ax as u16 as i16),
            i64::from(divisor as u8 as i8),
            -0x80,
            0x7F,
        )
    };
    d == 0 || !(lo..=hi).contains(&(dividend / d))
}

/// Whether an access of the instruction through SS can cross offset 0xFFFF: an implicit
/// stack access with an odd SP (BP for LEAVE; stack accesses are words), an SS-based memory
/// operand that ends beyond 0xFFFF, or a word string instruction reading SS:SI with SI odd.
fn overruns_ss(insn: &Instruction, test: &Test, op: u8) -> bool {
    let r = &test.initial.regs;
    let odd = |v: Option<u16>| v.is_some_and(|v| v & 1 == 1);
    let stack = insn.is_stack_instruction() && (odd(r.sp) || (op == 0xC9 && odd(r.bp)));
    let through_ss = insn.memory_segment() == Register::SS;
    let operand = has_memory_operand(insn)
        && through_ss
        && effective_address(insn, r)
            .is_some_and(|ea| u32::from(ea) + insn.memory_size().size() as u32 - 1 > 0xFFFF);
    // Word MOVS, CMPS, LODS, OUTS read the overridable DS:SI.
    let string = matches!(op, 0xA5 | 0xA7 | 0xAD | 0x6F) && through_ss && odd(r.si);
    stack || operand || string
}

/// A 16-bit general register of `r` by iced name (any width of it).
fn reg16(r: &Regs, reg: Register) -> Option<u16> {
    match reg.full_register32() {
        Register::EAX => r.ax,
        Register::EBX => r.bx,
        Register::ECX => r.cx,
        Register::EDX => r.dx,
        Register::ESP => r.sp,
        Register::EBP => r.bp,
        Register::ESI => r.si,
        Register::EDI => r.di,
        _ => None,
    }
}

/// The 16-bit effective address of the instruction's explicit memory operand.
fn effective_address(insn: &Instruction, r: &Regs) -> Option<u16> {
    let mut ea = insn.memory_displacement64() as u16;
    for reg in [insn.memory_base(), insn.memory_index()] {
        if reg != Register::None {
            ea = ea.wrapping_add(reg16(r, reg)?);
        }
    }
    Some(ea)
}

/// The value of the instruction's single r/m operand in the initial state (register, or
/// memory at its 16-bit effective address, A20 on), as the operand size reads it.
fn operand_value(insn: &Instruction, test: &Test) -> Option<u16> {
    let r = &test.initial.regs;
    match insn.op_kind(0) {
        OpKind::Register => {
            let reg = insn.op0_register();
            let v = reg16(r, reg)?;
            Some(match reg {
                Register::AH | Register::CH | Register::DH | Register::BH => v >> 8,
                _ if reg.size() == 1 => v & 0xFF,
                _ => v,
            })
        }
        OpKind::Memory => {
            let ea = effective_address(insn, r)?;
            let seg = match insn.memory_segment() {
                Register::ES => r.es?,
                Register::CS => r.cs?,
                Register::SS => r.ss?,
                _ => r.ds?,
            };
            let byte = |off: u16| -> Option<u16> {
                let addr = (u32::from(seg) << 4) + u32::from(off);
                let ram = &test.initial.ram;
                ram.iter()
                    .find(|&&(a, _)| a == addr)
                    .map(|&(_, v)| u16::from(v))
            };
            if insn.memory_size().size() == 1 {
                byte(ea)
            } else {
                Some(byte(ea)? | byte(ea.wrapping_add(1))? << 8)
            }
        }
        _ => None,
    }
}

fn has_memory_operand(insn: &Instruction) -> bool {
    (0..insn.op_count()).any(|k| insn.op_kind(k) == OpKind::Memory)
}

/// The shift/rotate count of C0/C1 (imm8) or D2/D3 (CL), masked to 5 bits as on every x86
/// since the 186.
fn shift_count(insn: &Instruction, test: &Test) -> u32 {
    let raw = if insn.op_count() > 1 && insn.op_kind(1) == OpKind::Immediate8 {
        u32::from(insn.immediate8())
    } else {
        u32::from(test.initial.regs.cx.unwrap_or(0) & 0xFF)
    };
    raw & 0x1F
}

/// Whether the bytes carry a LOCK prefix on an instruction that is not lockable on a modern
/// x86 (only read-modify-write instructions with a memory destination are).
fn lock_faults_on_modern_x86(bytes: &[u8]) -> bool {
    let has_lock = bytes
        .iter()
        .take_while(|&&b| is_prefix(b))
        .any(|&b| b == 0xF0);
    if !has_lock {
        return false;
    }
    let (op, modrm) = opcode_and_next(bytes);
    let Some(modrm) = modrm else {
        return true;
    };
    let memory_dest = modrm >> 6 != 3;
    let reg = (modrm >> 3) & 7;
    let lockable = match op {
        0x00 | 0x01 | 0x08 | 0x09 | 0x10 | 0x11 | 0x18 | 0x19 | 0x20 | 0x21 | 0x28 | 0x29
        | 0x30 | 0x31 | 0x86 | 0x87 => true,
        0x80..=0x83 => reg != 7,
        0xF6 | 0xF7 => reg == 2 || reg == 3,
        0xFE | 0xFF => reg <= 1,
        _ => false,
    };
    !(lockable && memory_dest)
}
