//! The test bench one worker thread reuses for every test: one `PhysMem` (16 MiB + 64 KiB),
//! a device-less platform whose legacy hole (0xA0000..0x100000, device memory in crane86's PC
//! map) is plain bytes so 286 tests that place code or data there work, and one engine.
//!
//! Between tests only the touched memory is restored: every RAM page is marked as holding
//! code, so any guest write unmarks its page (the self-modifying-code tracking); after each
//! step the bench finds the written pages by their cleared mark, marks them again, and after
//! the test compares and zeroes them.
//!
//! The recorded final state is the one after the CPU halted on the HLT that follows the
//! instruction (or that a jump or exception landed on), so the bench executes that HLT too.

use super::suite::{Test, FLAGS_INDEX, REG_NAMES};
use crane86::devices::platform::NullPlatform;
use crane86::devices::{Platform, PlatformAction};
use crane86::machine::{Engine, EngineExit, EngineKind};
use crane86::memory::PhysMem;
use crane86::x86::regs::gpr::{RAX, RBP, RBX, RCX, RDI, RDX, RSI, RSP};
use crane86::x86::{CpuState, SegReg, Segment};

/// RAM size: 24-bit physical space plus the 64 KiB above it that `FFFF:FFFF` reaches.
pub const RAM_SIZE: u64 = (16 << 20) + (64 << 10);
/// Highest physical address + 1 a real-mode 286 access can reach (FFFF:FFFF + 1, A20 on).
pub const REACHABLE: u64 = 0x10_FFF0;
/// The legacy device window crane86's PC map keeps out of RAM.
pub const HOLE: std::ops::Range<u64> = 0xA_0000..0x10_0000;
const PAGE: u64 = 4096;
/// The HLT opcode that ends every test.
const HLT: u8 = 0xF4;

/// FLAGS bits a real-mode 286 holds at zero (IOPL, NT, bit 15) and the bits that read as
/// constants on every x86 (1 = set, 3 and 5 = clear): the initial FLAGS the CPU really had.
pub const FLAGS_286_REAL_MODE_VALID: u16 = 0x0FD5;

/// A platform without devices whose legacy hole is memory.
pub struct HolePlatform {
    null: NullPlatform,
    hole: Vec<u8>,
    /// Hole offsets the guest wrote since the last [`HolePlatform::take_written`].
    written: Vec<u32>,
}

impl HolePlatform {
    fn new() -> HolePlatform {
        HolePlatform {
            null: NullPlatform::default(),
            hole: vec![0; (HOLE.end - HOLE.start) as usize],
            written: Vec::new(),
        }
    }

    fn in_hole(paddr: u64) -> bool {
        HOLE.contains(&paddr)
    }

    fn byte(&self, paddr: u64) -> u8 {
        self.hole[(paddr - HOLE.start) as usize]
    }

    fn set_byte(&mut self, paddr: u64, v: u8) {
        self.hole[(paddr - HOLE.start) as usize] = v;
    }
}

impl Platform for HolePlatform {
    fn pio_read(&mut self, port: u16, size: u8) -> u32 {
        self.null.pio_read(port, size)
    }
    fn pio_write(&mut self, port: u16, size: u8, value: u32) {
        // Port 0xF4 is crane86's debug-exit; an `out 0F4h` test must not end the run.
        if port != 0xF4 {
            self.null.pio_write(port, size, value);
        }
    }
    fn mmio_read(&mut self, paddr: u64, size: u8) -> u64 {
        let mut v = 0u64;
        for k in 0..u64::from(size) {
            let a = paddr + k;
            let b = if Self::in_hole(a) { self.byte(a) } else { 0xFF };
            v |= u64::from(b) << (8 * k);
        }
        v
    }
    fn mmio_write(&mut self, paddr: u64, size: u8, value: u64) {
        for k in 0..u64::from(size) {
            let a = paddr + k;
            if Self::in_hole(a) {
                self.set_byte(a, (value >> (8 * k)) as u8);
                self.written.push((a - HOLE.start) as u32);
            }
        }
    }
    fn interrupt_pending(&self) -> bool {
        false
    }
    fn ack_interrupt(&mut self) -> Option<u8> {
        None
    }
    fn take_action(&mut self) -> Option<PlatformAction> {
        self.null.take_action()
    }
    fn now_ns(&self) -> u64 {
        0
    }
}

/// The outcome of one test on an engine.
pub struct Outcome {
    /// The 14 registers after the instruction, in [`REG_NAMES`] order.
    pub regs: [u16; 14],
    /// Every byte the guest wrote, or that the test expects written: (address, actual).
    pub memory: Vec<(u32, u8)>,
    /// How the engine run ended, when not by the budget.
    pub exit: Option<EngineExit>,
    /// Initial bytes the bench added to the test's own (the IVT #SS alias).
    pub added_initial: Vec<(u32, u8)>,
}

/// IVT address of vector `v` in real mode.
const fn ivt(v: u32) -> u32 {
    v * 4
}

pub struct Bench {
    mem: PhysMem,
    plat: HolePlatform,
    engine: Box<dyn Engine>,
    /// RAM pages that hold data of the current test and must be zeroed afterwards.
    loaded_pages: Vec<u64>,
    /// RAM pages the guest wrote during the current test.
    written_pages: Vec<u64>,
    /// Hole offsets that hold data of the current test.
    hole_loaded: Vec<u32>,
    /// A written page was marked again: the engine's TLB must be flushed before the next
    /// step that may write (the final HLT does not).
    tlb_stale: bool,
}

/// Longest REP string run the bench drives (CX = 0 means 65,536 iterations).
const MAX_REP_STEPS: u32 = 0x1_0010;

impl Bench {
    pub fn new(kind: EngineKind) -> Bench {
        let mut mem = PhysMem::new(RAM_SIZE, &[]).expect("allocating the conformance RAM");
        let mut page = 0;
        while page < REACHABLE {
            mem.mark_code_page(page);
            page += PAGE;
        }
        Bench {
            mem,
            plat: HolePlatform::new(),
            engine: kind
                .create_eager()
                .unwrap_or_else(|e| panic!("creating engine {kind}: {e}")),
            loaded_pages: Vec::new(),
            written_pages: Vec::new(),
            hole_loaded: Vec::new(),
            tlb_stale: false,
        }
    }

    /// One engine step of at most one instruction; then record the pages it wrote (their
    /// code mark is cleared) and mark them again, since a later code fetch in the same test
    /// would re-mark them and hide the write.
    fn step(&mut self, cpu: &mut CpuState) -> Option<EngineExit> {
        if self.tlb_stale {
            // TLB entries filled while a page was unmarked would let writes bypass the mark.
            self.engine.reset_caches();
            self.tlb_stale = false;
        }
        let exit = match self.engine.run(cpu, &mut self.mem, &mut self.plat, 1) {
            EngineExit::Budget => None,
            other => Some(other),
        };
        let mut page = 0;
        while page < REACHABLE {
            if !self.mem.is_code_page(page) {
                self.mem.mark_code_page(page);
                self.tlb_stale = true;
                if !self.written_pages.contains(&page) {
                    self.written_pages.push(page);
                }
            }
            page += PAGE;
        }
        exit
    }

    /// Write one byte of initial memory (RAM or the hole) without touching the page marks.
    fn poke(&mut self, paddr: u64, v: u8) {
        if HolePlatform::in_hole(paddr) {
            self.plat.set_byte(paddr, v);
            self.hole_loaded.push((paddr - HOLE.start) as u32);
        } else {
            self.mem.backing_mut()[paddr as usize] = v;
            let page = paddr & !(PAGE - 1);
            if !self.loaded_pages.contains(&page) {
                self.loaded_pages.push(page);
            }
        }
    }

    /// The byte at CS:IP, if CS:IP is within the reachable space.
    fn next_byte(&self, cpu: &CpuState) -> Option<u8> {
        let cs = &cpu.seg[SegReg::Cs as usize];
        let paddr = cs.base + cpu.rip;
        (paddr < REACHABLE).then(|| self.peek(paddr))
    }

    fn peek(&self, paddr: u64) -> u8 {
        if HolePlatform::in_hole(paddr) {
            self.plat.byte(paddr)
        } else {
            self.mem.backing()[paddr as usize]
        }
    }

    /// Run `test` and report the final registers and every byte that was or should be written.
    /// `alias_ss_fault` points IVT entry 12 (#SS) at the handler of entry 13 (#GP).
    pub fn run(&mut self, test: &Test, alias_ss_fault: bool) -> Result<Outcome, String> {
        let init = &test.initial.regs;
        let mut cpu = CpuState::reset();
        cpu.gpr = [0; 16];
        for (gpr, k) in [
            (RAX, 0),
            (RBX, 1),
            (RCX, 2),
            (RDX, 3),
            (RSP, 8),
            (RBP, 9),
            (RSI, 10),
            (RDI, 11),
        ] {
            cpu.gpr[gpr] = u64::from(init.require(k)?);
        }
        for (seg, k) in [
            (SegReg::Cs, 4),
            (SegReg::Ss, 5),
            (SegReg::Ds, 6),
            (SegReg::Es, 7),
        ] {
            cpu.seg[seg as usize] = Segment::real_mode(init.require(k)?, seg == SegReg::Cs);
        }
        for seg in [SegReg::Fs, SegReg::Gs] {
            cpu.seg[seg as usize] = Segment::real_mode(0, false);
        }
        cpu.rip = u64::from(init.require(12)?);
        cpu.set_rflags(u64::from(
            init.require(FLAGS_INDEX)? & FLAGS_286_REAL_MODE_VALID,
        ));
        cpu.a20 = true;

        for &(addr, v) in &test.initial.ram {
            if u64::from(addr) >= REACHABLE {
                return Err(format!(
                    "initial RAM byte at {addr:#x} is beyond {REACHABLE:#x}"
                ));
            }
            self.poke(u64::from(addr), v);
        }
        let mut added_initial = Vec::new();
        let given = |a: u32| test.initial.ram.iter().any(|&(b, _)| a == b);
        if alias_ss_fault && (0..4).all(|k| given(ivt(13) + k) && !given(ivt(12) + k)) {
            for k in 0..4 {
                let v = self.peek(u64::from(ivt(13) + k));
                self.poke(u64::from(ivt(12) + k), v);
                added_initial.push((ivt(12) + k, v));
            }
        }
        self.plat.written.clear();
        self.engine.reset_caches();
        self.tlb_stale = false;
        let _ = self.mem.take_smc_dirty();

        let start_ip = cpu.rip;
        let start_cs = cpu.seg[SegReg::Cs as usize].selector;
        let rep_string = is_rep_string(&test.bytes);
        let mut exit = None;
        for _ in 0..MAX_REP_STEPS {
            exit = self.step(&mut cpu);
            if exit.is_some() {
                break;
            }
            // A REP string instruction is one instruction of the test however the engine
            // counts its iterations: keep going while it is still at the same CS:IP.
            let same_place =
                cpu.rip == start_ip && cpu.seg[SegReg::Cs as usize].selector == start_cs;
            if !(rep_string && same_place && cpu.gpr[RCX] & 0xFFFF != 0) {
                break;
            }
        }
        // The recorded final state is taken after the CPU halted on the HLT that follows the
        // instruction (or that a jump or exception landed on): execute that HLT too. HLT
        // writes nothing, so a stale TLB does not matter.
        if exit.is_none() && !cpu.halted && self.next_byte(&cpu) == Some(HLT) {
            self.tlb_stale = false;
            exit = self.step(&mut cpu);
        }

        let seg = |s: SegReg| cpu.seg[s as usize].selector;
        let g = |r: usize| cpu.gpr[r] as u16;
        let regs = [
            g(RAX),
            g(RBX),
            g(RCX),
            g(RDX),
            seg(SegReg::Cs),
            seg(SegReg::Ss),
            seg(SegReg::Ds),
            seg(SegReg::Es),
            g(RSP),
            g(RBP),
            g(RSI),
            g(RDI),
            cpu.rip as u16,
            cpu.rflags() as u16,
        ];
        debug_assert_eq!(regs.len(), REG_NAMES.len());
        if cpu.gpr.iter().take(8).any(|&v| v > 0xFFFF) || cpu.rip > 0xFFFF {
            return Err(format!(
                "a register or IP grew beyond 16 bits: gpr {:x?} rip {:#x}",
                &cpu.gpr[..8],
                cpu.rip
            ));
        }

        let memory = self.collect_memory(test, &added_initial);
        self.restore();
        Ok(Outcome {
            regs,
            memory,
            exit,
            added_initial,
        })
    }

    /// The bytes to compare: the ones the test expects changed plus every byte of every page
    /// the guest wrote (found by the cleared code-page mark) and every hole byte it wrote.
    fn collect_memory(&mut self, test: &Test, added_initial: &[(u32, u8)]) -> Vec<(u32, u8)> {
        let mut addrs: Vec<u64> = test
            .final_state
            .ram
            .iter()
            .map(|&(a, _)| u64::from(a))
            .collect();
        for &page in &self.written_pages {
            let bytes = &self.mem.backing()[page as usize..(page + PAGE) as usize];
            addrs.extend(
                bytes
                    .iter()
                    .enumerate()
                    .filter(|(_, &b)| b != 0)
                    .map(|(k, _)| page + k as u64),
            );
            // Zero bytes in a written page may be expected non-zero: the initial bytes.
            addrs.extend(
                test.initial
                    .ram
                    .iter()
                    .chain(added_initial)
                    .map(|&(a, _)| u64::from(a))
                    .filter(|a| a & !(PAGE - 1) == page),
            );
        }
        addrs.extend(
            self.plat
                .written
                .iter()
                .map(|&off| HOLE.start + u64::from(off)),
        );
        addrs.sort_unstable();
        addrs.dedup();
        addrs
            .into_iter()
            .map(|a| (a as u32, self.peek(a)))
            .collect()
    }

    /// Zero every page and hole byte the test touched.
    fn restore(&mut self) {
        for page in self.written_pages.drain(..) {
            self.mem.backing_mut()[page as usize..(page + PAGE) as usize].fill(0);
        }
        for page in self.loaded_pages.drain(..) {
            self.mem.backing_mut()[page as usize..(page + PAGE) as usize].fill(0);
        }
        for off in self
            .plat
            .written
            .drain(..)
            .chain(self.hole_loaded.drain(..))
        {
            self.plat.hole[off as usize] = 0;
        }
        let _ = self.mem.take_smc_dirty();
    }
}

/// Segment-override, LOCK and REP prefixes of the 286.
pub fn is_prefix(b: u8) -> bool {
    matches!(b, 0x26 | 0x2E | 0x36 | 0x3E | 0xF0 | 0xF2 | 0xF3)
}

/// The opcode byte and the byte after it (ModRM when the form has one), past the prefixes.
pub fn opcode_and_next(bytes: &[u8]) -> (u8, Option<u8>) {
    let k = bytes.iter().position(|&b| !is_prefix(b)).unwrap_or(0);
    (
        bytes.get(k).copied().unwrap_or(0),
        bytes.get(k + 1).copied(),
    )
}

/// A string instruction (INS OUTS MOVS CMPS STOS LODS SCAS) with a REP/REPNE prefix.
fn is_rep_string(bytes: &[u8]) -> bool {
    let prefixes = bytes.iter().take_while(|&&b| is_prefix(b));
    let rep = prefixes.clone().any(|&b| b == 0xF2 || b == 0xF3);
    let (op, _) = opcode_and_next(bytes);
    rep && matches!(op, 0x6C..=0x6F | 0xA4..=0xA7 | 0xAA..=0xAF)
}
