//! Ready-to-run guests for instruction tests and benchmarks: RAM, a flat GDT, an IDT whose
//! gates all point at the test's own handlers, identity page tables, and the CPU put directly
//! into the requested mode (no firmware). The guest code is assembled by the caller with
//! iced-x86 `code_asm` for [`Mode::bitness`] at [`CODE_BASE`].
//!
//! Memory map of a test guest (physical = linear):
//! - `GDT_BASE` GDT (see the `SEL_*` selectors), `IDT_BASE` IDT, `TSS_BASE` a 32/64-bit TSS
//! - `PAGE_TABLES` identity tables covering the first 1 GiB (4 KiB pages for the first
//!   2 MiB so tests can change individual PTEs: see [`pte_addr`])
//! - `CODE_BASE` test code, `DATA_BASE` scratch data, `STACK_TOP` initial stack pointer

use crate::engine::{Engine, EngineExit, EngineKind};
use crane86_devices::platform::NullPlatform;
use crane86_devices::Platform;
use crane86_memory::PhysMem;
use crane86_x86::regs::{cr0, cr4, efer};
use crane86_x86::segment::{attr, Segment, TableReg};
use crane86_x86::{CpuState, SegReg};
use iced_x86::code_asm::*;

pub const GDT_BASE: u64 = 0x1000;
pub const IDT_BASE: u64 = 0x2000;
pub const TSS_BASE: u64 = 0x3000;
/// Interrupt-stack-table stack (IST1) top, for long-mode tests.
pub const IST1_TOP: u64 = 0x6000;
/// Ring-0 stack used on privilege changes (TSS.ESP0 / RSP0).
pub const RING0_STACK_TOP: u64 = 0x7000;
pub const PAGE_TABLES: u64 = 0x10_0000;
pub const CODE_BASE: u64 = 0x2_0000;
pub const DATA_BASE: u64 = 0x4_0000;
pub const STACK_TOP: u64 = 0x8_0000;
pub const RAM_SIZE: u64 = 32 << 20;

pub const SEL_CODE32: u16 = 0x08;
pub const SEL_DATA: u16 = 0x10;
pub const SEL_CODE16: u16 = 0x18;
pub const SEL_DATA16: u16 = 0x20;
pub const SEL_CODE64: u16 = 0x28;
pub const SEL_USER_CODE32: u16 = 0x33;
pub const SEL_USER_DATA: u16 = 0x3B;
pub const SEL_USER_CODE64: u16 = 0x43;
pub const SEL_TSS: u16 = 0x48;

/// CPU mode a test guest starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Real mode: CS = CODE_BASE / 16 with IP = 0, DS = ES = FS = GS = 0, SS:SP just below
    /// STACK_TOP.
    Real,
    /// 32-bit protected mode, flat segments, paging off.
    Protected32,
    /// 32-bit protected mode with 2-level paging (identity map of the first 1 GiB).
    Paged32,
    /// 32-bit protected mode with PAE paging.
    Pae32,
    /// 64-bit long mode with 4-level paging.
    Long64,
}

impl Mode {
    pub const ALL: [Mode; 5] = [
        Mode::Real,
        Mode::Protected32,
        Mode::Paged32,
        Mode::Pae32,
        Mode::Long64,
    ];

    pub fn bitness(self) -> u32 {
        match self {
            Mode::Real => 16,
            Mode::Long64 => 64,
            _ => 32,
        }
    }
}

/// Physical address of the 4 KiB PTE that maps linear address `lin` (< 2 MiB) in `mode`.
pub fn pte_addr(mode: Mode, lin: u64) -> u64 {
    match mode {
        Mode::Paged32 => PAGE_TABLES + 0x1000 + (lin >> 12) * 4,
        Mode::Pae32 | Mode::Long64 => PAGE_TABLES + 0x3000 + (lin >> 12) * 8,
        _ => panic!("mode {mode:?} has no page tables"),
    }
}

/// A test guest: CPU state, memory, a device-less platform and an engine.
pub struct TestGuest {
    pub cpu: CpuState,
    pub mem: PhysMem,
    pub plat: Box<dyn Platform>,
    pub engine: Box<dyn Engine>,
    pub mode: Mode,
}

/// How a test guest run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestExit {
    /// HLT with interrupts disabled (the normal end of a test).
    Halted,
    TripleFault,
    DebugExit(u32),
    /// Ran out of the instruction budget.
    Timeout,
}

/// Encode a legacy 8-byte segment descriptor: `access` is byte 5 (P, DPL, S, type), `flags`
/// the high nibble of byte 6 (G, D/B, L, AVL).
pub fn segment_descriptor(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    let limit = u64::from(limit);
    let base = u64::from(base);
    (limit & 0xFFFF)
        | (base & 0xFF_FFFF) << 16
        | u64::from(access) << 40
        | ((limit >> 16) & 0xF) << 48
        | u64::from(flags & 0xF) << 52
        | (base >> 24) << 56
}

impl TestGuest {
    /// A guest in `mode` on `engine` with `code` (assembled for `mode.bitness()` at
    /// `CODE_BASE`) loaded and RIP at its first byte.
    pub fn new(engine: EngineKind, mode: Mode, code: &[u8]) -> TestGuest {
        let mut mem = PhysMem::new(RAM_SIZE, &[]).expect("test RAM");
        mem.write_ram(CODE_BASE, code).expect("code fits in RAM");
        let mut cpu = CpuState::reset();
        cpu.gpr = [0; 16];
        build_tables(&mut mem, mode);
        enter_mode(&mut cpu, mode);
        TestGuest {
            cpu,
            mem,
            plat: Box::new(NullPlatform::default()),
            engine: engine
                .create_eager()
                .unwrap_or_else(|e| panic!("creating engine {engine}: {e}")),
            mode,
        }
    }

    /// Point IDT vector `vector` at `handler` (a linear address / real-mode offset from
    /// CS = CODE_BASE >> 4). Long-mode gates use IST `ist` (0 = none).
    pub fn set_gate(&mut self, vector: u8, handler: u64, ist: u8) {
        match self.mode {
            Mode::Real => {
                let seg = (CODE_BASE >> 4) as u32;
                let off = (handler - CODE_BASE) as u32;
                self.mem
                    .write_ram(u64::from(vector) * 4, &(off | seg << 16).to_le_bytes())
                    .unwrap();
            }
            Mode::Long64 => {
                let lo = (handler & 0xFFFF)
                    | u64::from(SEL_CODE64) << 16
                    | u64::from(ist & 7) << 32
                    | 0x8E_u64 << 40
                    | ((handler >> 16) & 0xFFFF) << 48;
                let hi = handler >> 32;
                let a = IDT_BASE + u64::from(vector) * 16;
                self.mem.write_ram(a, &lo.to_le_bytes()).unwrap();
                self.mem.write_ram(a + 8, &hi.to_le_bytes()).unwrap();
            }
            _ => {
                let g = (handler & 0xFFFF)
                    | u64::from(SEL_CODE32) << 16
                    | 0x8E_u64 << 40
                    | ((handler >> 16) & 0xFFFF) << 48;
                self.mem
                    .write_ram(IDT_BASE + u64::from(vector) * 8, &g.to_le_bytes())
                    .unwrap();
            }
        }
    }

    /// Run until HLT, triple fault, debug-exit, or `budget` instructions.
    /// Engines that cannot count instructions (kvm) get `budget` µs of host time instead
    /// (at least a second): at 1 guest instruction per µs, as slow as a software KVM runs.
    /// An engine failure panics with its reason, and so does a block the JIT failed to
    /// translate.
    pub fn run(&mut self, budget: u64) -> TestExit {
        let start = self.engine.instructions();
        let counted = self.engine.kind().counts_instructions();
        let deadline =
            std::time::Instant::now() + std::time::Duration::from_micros(budget.max(1_000_000));
        let exit = loop {
            let used = self.engine.instructions() - start;
            if used >= budget || (!counted && std::time::Instant::now() >= deadline) {
                break TestExit::Timeout;
            }
            match self.engine.run(
                &mut self.cpu,
                &mut self.mem,
                self.plat.as_mut(),
                budget - used,
            ) {
                EngineExit::Budget => continue,
                EngineExit::Halted => break TestExit::Halted,
                EngineExit::TripleFault(_) => break TestExit::TripleFault,
                EngineExit::Action(crane86_devices::PlatformAction::DebugExit(v)) => {
                    break TestExit::DebugExit(v)
                }
                EngineExit::Action(_) => continue,
                EngineExit::Failed => panic!(
                    "engine {} failed: {}",
                    self.engine.kind(),
                    self.engine.take_failure().unwrap_or_default()
                ),
            }
        };
        // A block the JIT could not translate stays interpreted, which would make a test of
        // translated code quietly test the interpreter: in tests, that is a failure.
        if let Some((_, n)) = self
            .engine
            .stats()
            .into_iter()
            .find(|(name, _)| *name == "translation failures")
        {
            panic!("the JIT failed to translate {n} block(s) (see the warnings)");
        }
        exit
    }

    /// Run and insist the guest halts.
    pub fn run_to_halt(&mut self) -> &CpuState {
        let exit = self.run(10_000_000);
        assert_eq!(
            exit,
            TestExit::Halted,
            "guest did not halt; state: {:#x?}",
            self.cpu
        );
        &self.cpu
    }

    pub fn read_u64(&self, paddr: u64) -> u64 {
        self.mem.read_u64(paddr)
    }

    pub fn write(&mut self, paddr: u64, data: &[u8]) {
        self.mem.write_ram(paddr, data).unwrap();
        self.engine.reset_caches();
    }
}

fn build_tables(mem: &mut PhysMem, mode: Mode) {
    let gdt = [
        0,
        segment_descriptor(0, 0xFFFFF, 0x9B, 0xC), // 0x08 code32
        segment_descriptor(0, 0xFFFFF, 0x93, 0xC), // 0x10 data
        segment_descriptor(0, 0xFFFF, 0x9B, 0x0),  // 0x18 code16
        segment_descriptor(0, 0xFFFF, 0x93, 0x0),  // 0x20 data16
        segment_descriptor(0, 0xFFFFF, 0x9B, 0xA), // 0x28 code64 (L)
        segment_descriptor(0, 0xFFFFF, 0xFB, 0xC), // 0x30 user code32 (DPL 3)
        segment_descriptor(0, 0xFFFFF, 0xF3, 0xC), // 0x38 user data
        segment_descriptor(0, 0xFFFFF, 0xFB, 0xA), // 0x40 user code64
        segment_descriptor(TSS_BASE as u32, 0x67 + 0x2000, 0x89, 0), // 0x48 TSS (available)
        0,                                         // 0x50 high half of a 64-bit TSS descriptor
    ];
    for (k, d) in gdt.iter().enumerate() {
        mem.write_ram(GDT_BASE + k as u64 * 8, &d.to_le_bytes())
            .unwrap();
    }
    // TSS: ESP0/SS0 (32-bit) and RSP0/IST1 (64-bit) share the layout's first bytes only in
    // part, so fill what the mode uses.
    if mode == Mode::Long64 {
        mem.write_ram(TSS_BASE + 4, &RING0_STACK_TOP.to_le_bytes())
            .unwrap();
        mem.write_ram(TSS_BASE + 0x24, &IST1_TOP.to_le_bytes())
            .unwrap();
        mem.write_ram(TSS_BASE + 0x66, &0x68u16.to_le_bytes())
            .unwrap();
    } else {
        mem.write_ram(TSS_BASE + 4, &(RING0_STACK_TOP as u32).to_le_bytes())
            .unwrap();
        mem.write_ram(TSS_BASE + 8, &u32::from(SEL_DATA).to_le_bytes())
            .unwrap();
        mem.write_ram(TSS_BASE + 0x66, &0x68u16.to_le_bytes())
            .unwrap();
    }
    // Page tables.
    match mode {
        Mode::Paged32 => {
            // PD at PAGE_TABLES; first PDE → PT at +0x1000 (4 KiB pages), rest 4 MiB pages.
            mem.write_u32(PAGE_TABLES, (PAGE_TABLES + 0x1000) as u32 | 0x7);
            for k in 1..256u64 {
                mem.write_u32(PAGE_TABLES + k * 4, ((k << 22) | 0x87) as u32);
            }
            for k in 0..1024u64 {
                mem.write_u32(PAGE_TABLES + 0x1000 + k * 4, ((k << 12) | 0x7) as u32);
            }
        }
        Mode::Pae32 | Mode::Long64 => {
            // PML4 (+0) → PDPT (+0x1000) → PD (+0x2000) → PT for the first 2 MiB (+0x3000).
            mem.write_u64(PAGE_TABLES, (PAGE_TABLES + 0x1000) | 0x7);
            let pdpte_flags = if mode == Mode::Pae32 { 0x1 } else { 0x7 };
            mem.write_u64(PAGE_TABLES + 0x1000, (PAGE_TABLES + 0x2000) | pdpte_flags);
            mem.write_u64(PAGE_TABLES + 0x2000, (PAGE_TABLES + 0x3000) | 0x7);
            for k in 1..512u64 {
                mem.write_u64(PAGE_TABLES + 0x2000 + k * 8, (k << 21) | 0x87);
            }
            for k in 0..512u64 {
                mem.write_u64(PAGE_TABLES + 0x3000 + k * 8, (k << 12) | 0x7);
            }
        }
        _ => {}
    }
}

fn enter_mode(cpu: &mut CpuState, mode: Mode) {
    if mode == Mode::Real {
        let cs_sel = (CODE_BASE >> 4) as u16;
        cpu.seg[SegReg::Cs as usize] = Segment::real_mode(cs_sel, true);
        for s in [SegReg::Ds, SegReg::Es, SegReg::Fs, SegReg::Gs] {
            cpu.seg[s as usize] = Segment::real_mode(0, false);
        }
        cpu.seg[SegReg::Ss as usize] =
            Segment::real_mode(((STACK_TOP - 0x1_0000) >> 4) as u16, false);
        cpu.gpr[4] = 0xFFF0;
        cpu.rip = 0;
        cpu.idtr = TableReg {
            base: 0,
            limit: 0x3FF,
        };
        return;
    }
    let gdt_desc = |mem_desc: u64, sel: u16| {
        let mut s = Segment::from_descriptor(sel, mem_desc);
        s.attr |= attr::ACCESSED;
        s
    };
    let code = if mode == Mode::Long64 {
        gdt_desc(segment_descriptor(0, 0xFFFFF, 0x9B, 0xA), SEL_CODE64)
    } else {
        gdt_desc(segment_descriptor(0, 0xFFFFF, 0x9B, 0xC), SEL_CODE32)
    };
    let data = gdt_desc(segment_descriptor(0, 0xFFFFF, 0x93, 0xC), SEL_DATA);
    cpu.seg[SegReg::Cs as usize] = code;
    for s in [SegReg::Ds, SegReg::Es, SegReg::Fs, SegReg::Gs, SegReg::Ss] {
        cpu.seg[s as usize] = data;
    }
    cpu.gdtr = TableReg {
        base: GDT_BASE,
        limit: 11 * 8 - 1,
    };
    cpu.idtr = TableReg {
        base: IDT_BASE,
        limit: if mode == Mode::Long64 {
            256 * 16 - 1
        } else {
            256 * 8 - 1
        },
    };
    // A busy TSS (type 0xB) in every mode: the 32-bit and 64-bit busy types share the value.
    // A busy 32-bit (or, in long mode, 64-bit) TSS, as after LTR.
    let tss_type = u16::from(crane86_x86::segment::sys_type::TSS32_BUSY);
    cpu.tr = Segment {
        base: TSS_BASE,
        limit: 0x67 + 0x2000,
        selector: SEL_TSS,
        attr: attr::PRESENT | tss_type,
    };
    cpu.rip = CODE_BASE;
    cpu.gpr[4] = STACK_TOP;
    cpu.cr0 = cr0::PE | cr0::ET | cr0::NE;
    match mode {
        Mode::Paged32 => {
            cpu.cr0 |= cr0::PG | cr0::WP;
            cpu.cr3 = PAGE_TABLES;
            cpu.cr4 = cr4::PSE;
        }
        Mode::Pae32 => {
            cpu.cr0 |= cr0::PG | cr0::WP;
            cpu.cr3 = PAGE_TABLES + 0x1000;
            cpu.cr4 = cr4::PAE;
            cpu.efer = efer::NXE;
        }
        Mode::Long64 => {
            cpu.cr0 |= cr0::PG | cr0::WP;
            cpu.cr3 = PAGE_TABLES;
            cpu.cr4 = cr4::PAE;
            cpu.efer = efer::LME | efer::LMA | efer::NXE | efer::SCE;
        }
        _ => {}
    }
}

/// The smoke-test program for `mode`: sum 1..=100 into AX/EAX, store it (word at 0x100 in
/// real mode, dword at `DATA_BASE` otherwise, see [`sum_loop_stored`]) and halt. Assembled
/// for `CODE_BASE` (offset 0 in real mode).
pub fn sum_loop_program(mode: Mode) -> Vec<u8> {
    fn build(a: &mut CodeAssembler, mode: Mode) -> Result<(), IcedError> {
        let mut top = a.create_label();
        if mode.bitness() == 16 {
            a.xor(ax, ax)?;
            a.mov(cx, 100u32)?;
            a.set_label(&mut top)?;
            a.add(ax, cx)?;
            a.loop_(top)?;
            a.mov(word_ptr(0x100), ax)?;
        } else {
            a.xor(eax, eax)?;
            a.mov(ecx, 100u32)?;
            a.set_label(&mut top)?;
            a.add(eax, ecx)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            a.mov(dword_ptr(DATA_BASE as u32), eax)?;
        }
        a.hlt()
    }
    let mut a = CodeAssembler::new(mode.bitness()).expect("valid bitness");
    build(&mut a, mode).expect("the sum loop assembles");
    a.assemble(if mode == Mode::Real { 0 } else { CODE_BASE })
        .expect("the sum loop assembles")
}

/// The sum [`sum_loop_program`] stored in memory (5050 when it ran).
pub fn sum_loop_stored(g: &TestGuest) -> u64 {
    if g.mode == Mode::Real {
        g.read_u64(0x100) & 0xFFFF
    } else {
        g.read_u64(DATA_BASE) & 0xFFFF_FFFF
    }
}
