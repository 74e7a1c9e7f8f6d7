//! System-level guest tests: mode transitions, far transfers through gates, fast system
//! calls, exception delivery, paging, code crossing a page boundary, system instructions,
//! self-modifying code, JIT block chaining and translations spanning several blocks. Every
//! test runs on every engine of `EngineKind::emulators()` (the JIT tests compare the JIT
//! with the interpreter).

mod chaining;
mod exceptions;
mod far;
mod modes;
mod page_crossing;
mod paging;
mod smc;
mod superblocks;
mod syscalls;
mod sysinsn;

use crane86::machine::testkit::{Mode, TestGuest, CODE_BASE, GDT_BASE, IDT_BASE};
use crane86::machine::{EngineExit, EngineKind};
use crane86::x86::CpuState;
use iced_x86::code_asm::*;
use iced_x86::{BlockEncoderOptions, IcedError};

/// Assembled code and the addresses of the labels the builder returned.
pub struct Built {
    pub bytes: Vec<u8>,
    pub labels: Vec<u64>,
}

/// Assemble `f` for `bits` at `base`; `f` returns the labels whose addresses the test needs.
pub fn build(
    bits: u32,
    base: u64,
    f: impl FnOnce(&mut CodeAssembler) -> Result<Vec<CodeLabel>, IcedError>,
) -> Built {
    let mut a = CodeAssembler::new(bits).unwrap();
    let labels = f(&mut a).expect("test code assembles");
    let r = a
        .assemble_options(base, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
        .expect("test code encodes");
    let labels = labels.iter().map(|l| r.label_ip(l).unwrap()).collect();
    Built {
        bytes: r.inner.code_buffer,
        labels,
    }
}

/// Base address code for `mode` is assembled at (real-mode code runs at CS = CODE_BASE/16).
pub fn code_origin(mode: Mode) -> u64 {
    if mode == Mode::Real {
        0
    } else {
        CODE_BASE
    }
}

/// A guest in `mode` running `f`'s code at CODE_BASE; returns the guest and label addresses
/// (linear, i.e. CODE_BASE-relative offsets are already added for real mode).
pub fn guest(
    engine: EngineKind,
    mode: Mode,
    f: impl FnOnce(&mut CodeAssembler) -> Result<Vec<CodeLabel>, IcedError>,
) -> (TestGuest, Vec<u64>) {
    let origin = code_origin(mode);
    let b = build(mode.bitness(), origin, f);
    let g = TestGuest::new(engine, mode, &b.bytes);
    let labels = b.labels.iter().map(|&l| l - origin + CODE_BASE).collect();
    (g, labels)
}

// What the JIT tests (`chaining`, `superblocks`) read of a guest run.

/// A `--stats` figure of the guest's engine, as text (empty when the engine has none).
pub fn stat_text(g: &TestGuest, name: &str) -> String {
    g.engine
        .stats()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// A `--stats` counter of the guest's engine (0 when the engine has none).
pub fn stat(g: &TestGuest, name: &str) -> u64 {
    let text = stat_text(g, name);
    if text.is_empty() {
        return 0;
    }
    text.parse().expect("numeric counter")
}

/// The architectural state a comparison looks at.
pub fn summary(s: &CpuState) -> ([u64; 16], u64, u64) {
    (s.gpr, s.rip, s.rflags())
}

/// Run `g` to its HLT in runs of `slice` instructions, each of which must retire exactly
/// `slice` (the last one at most that).
pub fn run_in_slices(g: &mut TestGuest, slice: u64, what: &str) {
    loop {
        let before = g.engine.instructions();
        let exit = g.engine.run(&mut g.cpu, &mut g.mem, g.plat.as_mut(), slice);
        let ran = g.engine.instructions() - before;
        match exit {
            EngineExit::Budget => assert_eq!(ran, slice, "{what}"),
            EngineExit::Halted => {
                assert!(ran <= slice, "{what}");
                break;
            }
            other => panic!("{what}: unexpected exit {other:?}"),
        }
    }
}

/// Write an 8-byte GDT entry `index` (selector = index * 8) and widen the GDT limit.
pub fn set_gdt_entry(g: &mut TestGuest, index: u64, desc: u64) {
    g.write(GDT_BASE + index * 8, &desc.to_le_bytes());
    let limit = (index * 8 + 7) as u16;
    if g.cpu.gdtr.limit < limit {
        g.cpu.gdtr.limit = limit;
    }
}

/// A legacy segment descriptor (the test kit's encoder).
pub fn seg_desc(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    crane86::machine::testkit::segment_descriptor(base, limit, access, flags)
}

/// Write a raw 32-bit IDT gate (protected mode) for `vector`: `type_attr` is byte 5
/// (e.g. 0x8E interrupt gate DPL 0, 0xEE DPL 3).
pub fn set_gate32(g: &mut TestGuest, vector: u8, sel: u16, handler: u64, type_attr: u8) {
    let d = (handler & 0xFFFF)
        | u64::from(sel) << 16
        | u64::from(type_attr) << 40
        | ((handler >> 16) & 0xFFFF) << 48;
    g.write(IDT_BASE + u64::from(vector) * 8, &d.to_le_bytes());
}

/// Write a 64-bit IDT gate.
pub fn set_gate64(g: &mut TestGuest, vector: u8, sel: u16, handler: u64, type_attr: u8, ist: u8) {
    let lo = (handler & 0xFFFF)
        | u64::from(sel) << 16
        | u64::from(ist) << 32
        | u64::from(type_attr) << 40
        | ((handler >> 16) & 0xFFFF) << 48;
    let a = IDT_BASE + u64::from(vector) * 16;
    g.write(a, &lo.to_le_bytes());
    g.write(a + 8, &(handler >> 32).to_le_bytes());
}

/// Modes with paging enabled.
pub const PAGED: [Mode; 3] = [Mode::Paged32, Mode::Pae32, Mode::Long64];
/// Protected-mode flavours (32-bit and 64-bit).
pub const PROTECTED: [Mode; 4] = [Mode::Protected32, Mode::Paged32, Mode::Pae32, Mode::Long64];
