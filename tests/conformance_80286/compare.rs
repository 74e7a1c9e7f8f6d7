//! Comparing an engine's outcome with the hardware-recorded final state: all 14 registers
//! (unchanged ones are implied by the initial state), FLAGS under the form's `flags-mask`
//! and the 286-real-mode mask, and memory (every byte written or expected written).

use super::bench::{Outcome, FLAGS_286_REAL_MODE_VALID};
use super::suite::{Test, FLAGS_INDEX, REG_NAMES, SP_INDEX, SS_INDEX};
use std::fmt::Write as _;

/// FLAGS bits compared: the ones a 286 in real mode holds (IOPL, NT and bit 15 stay 0 there,
/// while a modern CPU's POPF/IRET load IOPL and NT in real mode), so they are left out.
pub const FLAGS_COMPARED: u16 = FLAGS_286_REAL_MODE_VALID | 0x0002;

/// One difference between expected and actual.
#[derive(Clone, Debug)]
pub enum Diff {
    Reg {
        name: &'static str,
        expected: u16,
        actual: u16,
    },
    Mem {
        addr: u32,
        expected: u8,
        actual: u8,
    },
    /// The engine run ended abnormally (triple fault, halt before executing, action).
    Exit(String),
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Diff::Reg {
                name,
                expected,
                actual,
            } => write!(f, "{name}: expected {expected:#06x}, got {actual:#06x}"),
            Diff::Mem {
                addr,
                expected,
                actual,
            } => write!(
                f,
                "mem[{addr:#07x}]: expected {expected:#04x}, got {actual:#04x}"
            ),
            Diff::Exit(what) => write!(f, "engine exit: {what}"),
        }
    }
}

/// The value a register must have at the end (final if listed, else initial).
fn expected_reg(test: &Test, k: usize) -> u16 {
    test.final_state
        .regs
        .get(k)
        .or_else(|| test.initial.regs.get(k))
        .unwrap_or(0)
}

/// The byte the test expects at `addr` at the end: final if listed, else initial (the
/// test's or the bench's additions), else 0.
fn expected_byte(test: &Test, added_initial: &[(u32, u8)], addr: u32) -> u8 {
    let find = |ram: &[(u32, u8)]| ram.iter().rev().find(|&&(a, _)| a == addr).map(|p| p.1);
    find(&test.final_state.ram)
        .or_else(|| find(&test.initial.ram))
        .or_else(|| find(added_initial))
        .unwrap_or(0)
}

/// All differences between `outcome` and the recorded final state (empty = pass).
/// `ignored_regs` has bit k set for each register `REG_NAMES[k]` not to compare.
pub fn compare(test: &Test, outcome: &Outcome, flags_mask: u16, ignored_regs: u16) -> Vec<Diff> {
    let mut diffs = Vec::new();
    if let Some(exit) = &outcome.exit {
        diffs.push(Diff::Exit(format!("{exit:?}")));
    }
    for (k, &name) in REG_NAMES.iter().enumerate() {
        if ignored_regs & (1 << k) != 0 {
            continue;
        }
        let mut expected = expected_reg(test, k);
        let mut actual = outcome.regs[k];
        if k == FLAGS_INDEX {
            let m = flags_mask & FLAGS_COMPARED;
            expected &= m;
            actual &= m;
        }
        if expected != actual {
            diffs.push(Diff::Reg {
                name,
                expected,
                actual,
            });
        }
    }
    // The FLAGS image an exception pushed: compare it under the same masks. It lies at
    // SS:SP+4 of the final state (the recorded `flag_address` is rounded down to even).
    let flags_image = test.exception.as_ref().map(|_| {
        let ss = u32::from(expected_reg(test, SS_INDEX)) << 4;
        let sp = expected_reg(test, SP_INDEX);
        (
            ss + u32::from(sp.wrapping_add(4)),
            ss + u32::from(sp.wrapping_add(5)),
        )
    });
    let m = flags_mask & FLAGS_COMPARED;
    for &(addr, actual) in &outcome.memory {
        let mut expected = expected_byte(test, &outcome.added_initial, addr);
        let mut actual = actual;
        if let Some((low, high)) = flags_image {
            let byte_mask = if addr == low {
                m as u8
            } else if addr == high {
                (m >> 8) as u8
            } else {
                0xFF
            };
            expected &= byte_mask;
            actual &= byte_mask;
        }
        if expected != actual {
            diffs.push(Diff::Mem {
                addr,
                expected,
                actual,
            });
        }
    }
    diffs
}

/// A multi-line description of a failing test for the report.
pub fn describe(form: &str, test: &Test, diffs: &[Diff]) -> String {
    let mut s = String::new();
    let bytes: Vec<String> = test.bytes.iter().map(|b| format!("{b:02X}")).collect();
    let _ = writeln!(
        s,
        "  [{form} #{}] {:?}  bytes {}  hash {}",
        test.idx,
        test.name,
        bytes.join(" "),
        test.hash
    );
    let r = &test.initial.regs;
    let _ = writeln!(
        s,
        "    initial: {}",
        REG_NAMES
            .iter()
            .enumerate()
            .map(|(k, n)| format!("{n}={:04x}", r.get(k).unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if let Some(e) = &test.exception {
        let _ = writeln!(
            s,
            "    hardware raised exception {} (FLAGS pushed at {:#x})",
            e.number, e.flag_address
        );
    }
    for d in diffs {
        let _ = writeln!(s, "    {d}");
    }
    s
}
