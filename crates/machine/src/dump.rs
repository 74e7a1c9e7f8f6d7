//! A compact CPU register dump for error messages (triple fault, dead halt) and debugging.

use crane86_x86::flags;
use crane86_x86::{CpuState, SegReg};
use std::fmt::Write;

const GPR_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

/// Set RFLAGS bits as letters, e.g. `[ZF PF IF]`.
fn flag_names(f: u64) -> String {
    let names = [
        (flags::CF, "CF"),
        (flags::PF, "PF"),
        (flags::AF, "AF"),
        (flags::ZF, "ZF"),
        (flags::SF, "SF"),
        (flags::TF, "TF"),
        (flags::IF, "IF"),
        (flags::DF, "DF"),
        (flags::OF, "OF"),
        (flags::NT, "NT"),
        (flags::RF, "RF"),
        (flags::VM, "VM"),
        (flags::AC, "AC"),
    ];
    let set: Vec<&str> = names
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|&(_, n)| n)
        .collect();
    format!("[{}]", set.join(" "))
}

/// A multi-line dump of the architectural state: mode, RIP, RFLAGS, GPRs, segments, control
/// registers and descriptor tables.
pub fn format_cpu(s: &CpuState) -> String {
    let mut out = String::new();
    let rf = s.rflags();
    let _ = writeln!(
        out,
        "mode {:?}  cpl {}  rip {:#018x}  rflags {:#010x} {}  iopl {}{}",
        s.mode(),
        s.cpl(),
        s.rip,
        rf,
        flag_names(rf),
        s.iopl(),
        if s.halted { "  (halted)" } else { "" }
    );
    for row in GPR_NAMES.chunks(4).enumerate() {
        let (r, names) = row;
        let line: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(k, n)| format!("{n:>3} {:016x}", s.gpr[r * 4 + k]))
            .collect();
        let _ = writeln!(out, "{}", line.join("  "));
    }
    for seg in SegReg::ALL {
        let d = s.seg(seg);
        let _ = writeln!(
            out,
            "{}  sel {:04x}  base {:016x}  limit {:08x}  attr {:04x}",
            seg.name(),
            d.selector,
            d.base,
            d.limit,
            d.attr
        );
    }
    let _ = writeln!(
        out,
        "tr  sel {:04x}  base {:016x}  limit {:08x}   ldtr sel {:04x}  base {:016x}",
        s.tr.selector, s.tr.base, s.tr.limit, s.ldtr.selector, s.ldtr.base
    );
    let _ = writeln!(
        out,
        "gdtr {:016x}/{:04x}  idtr {:016x}/{:04x}",
        s.gdtr.base, s.gdtr.limit, s.idtr.base, s.idtr.limit
    );
    let _ = write!(
        out,
        "cr0 {:08x}  cr2 {:016x}  cr3 {:016x}  cr4 {:08x}  efer {:x}  a20 {}",
        s.cr0,
        s.cr2,
        s.cr3,
        s.cr4,
        s.efer,
        if s.a20 { "on" } else { "off" }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_names_mode_and_registers() {
        let mut s = CpuState::reset();
        s.gpr[0] = 0xDEAD_BEEF;
        let d = format_cpu(&s);
        assert!(d.contains("mode Real"), "{d}");
        assert!(d.contains("rax 00000000deadbeef"), "{d}");
        assert!(d.contains("cs  sel f000  base 00000000ffff0000"), "{d}");
        assert!(d.contains("rip 0x000000000000fff0"), "{d}");
    }
}
