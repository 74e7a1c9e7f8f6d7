//! Exhaustive shift/rotate counts: every count 0..=63 (through CL) of SHL SHR SAR ROL ROR RCL
//! RCR SHLD SHRD at every operand size, for several values and every CF/OF combination,
//! compared with the host CPU like the random sequences. This pins down the count-dependent
//! corners (count 0, counts ≥ the width, RCL/RCR modulo size + 1) the random mix rarely hits.
//! On an AMD host the comparison includes the flags the SDM leaves undefined.

use crate::driver::{compare, describe};
use crate::emu::Emu;
use crate::gen::{Sequence, INITIAL_RSP};
use crate::native::run_batch;
use crate::operands::blank;
use crane86::machine::EngineKind;
use iced_x86::{Code, OpKind, Register};

const VALUES: [u64; 6] = [
    0,
    1,
    0x8000_0000_0000_0001,
    0x5555_5555_5555_5555,
    0xFFFF_FFFF_FFFF_FFFF,
    0x0123_4567_89AB_CDEF,
];

fn code_named(name: &str) -> Code {
    Code::values()
        .find(|c| format!("{c:?}") == name)
        .unwrap_or_else(|| panic!("no iced Code named {name}"))
}

fn reg(i: &mut iced_x86::Instruction, n: u32, r: Register) {
    i.set_op_kind(n, OpKind::Register);
    i.set_op_register(n, r);
}

fn cases() -> Vec<Sequence> {
    let sizes = [
        (8, Register::AL, Register::DL),
        (16, Register::AX, Register::DX),
        (32, Register::EAX, Register::EDX),
        (64, Register::RAX, Register::RDX),
    ];
    let mut out = Vec::new();
    for (bits, dst, src) in sizes {
        let mut templates = Vec::new();
        for m in ["Shl", "Shr", "Sar", "Rol", "Ror", "Rcl", "Rcr"] {
            let mut i = blank(code_named(&format!("{m}_rm{bits}_CL")));
            reg(&mut i, 0, dst);
            reg(&mut i, 1, Register::CL);
            templates.push((i, 64u64));
        }
        if bits > 8 {
            for m in ["Shld", "Shrd"] {
                let mut i = blank(code_named(&format!("{m}_rm{bits}_r{bits}_CL")));
                reg(&mut i, 0, dst);
                reg(&mut i, 1, src);
                reg(&mut i, 2, Register::CL);
                // 16-bit counts above 16 are undefined (results differ between CPUs).
                templates.push((i, if bits == 16 { 17 } else { 64 }));
            }
        }
        for (ins, counts) in templates {
            for count in 0..counts {
                for (k, &v) in VALUES.iter().enumerate() {
                    for flags in [0u64, 1, 0x800, 0x801] {
                        let mut gpr = [0u64; 16];
                        gpr[0] = v;
                        gpr[1] = count | 0xC0; // bits above the count mask must not matter
                        gpr[2] = VALUES[(k + 3) % VALUES.len()];
                        gpr[4] = INITIAL_RSP;
                        out.push(Sequence::fixed(vec![ins], gpr, flags | 0x44, 0));
                    }
                }
            }
        }
    }
    out
}

/// True on AMD hosts (CPUID vendor "AuthenticAMD").
fn host_is_amd() -> bool {
    // SAFETY: CPUID leaf 0 exists on every x86-64 CPU. (`__cpuid` is a safe function in
    // newer toolchains; the block keeps older ones, where it is `unsafe`, compiling.)
    #[allow(unused_unsafe)]
    let r = unsafe { std::arch::x86_64::__cpuid(0) };
    let mut vendor = Vec::new();
    for w in [r.ebx, r.edx, r.ecx] {
        vendor.extend_from_slice(&w.to_le_bytes());
    }
    vendor == b"AuthenticAMD"
}

#[test]
fn every_shift_and_rotate_count_matches_the_host() {
    let seqs = cases();
    let mut mismatches = 0;
    for engine in EngineKind::emulators() {
        let mut emu = Emu::new(engine);
        for chunk in seqs.chunks(2000) {
            let natives = run_batch(chunk);
            for (k, (s, native)) in chunk.iter().zip(&natives).enumerate() {
                // On the AMD host crane86 reproduces even the undefined flags (see the
                // module doc of ops/shift.rs); elsewhere compare the defined ones only.
                let mut strict = s.clone();
                if host_is_amd() {
                    strict.undefined_flags = 0;
                }
                let s = &strict;
                if let Some(why) = compare(s, native, &emu.run(s)) {
                    mismatches += 1;
                    if mismatches <= 30 {
                        eprintln!("{}{why}", describe(0, k as u64, engine, s, ""));
                    }
                }
            }
        }
    }
    println!(
        "shift/rotate counts: {} cases, {mismatches} mismatches",
        seqs.len()
    );
    assert_eq!(
        mismatches,
        0,
        "{mismatches} of {} cases disagree",
        seqs.len()
    );
}
