//! Shared helpers for the instruction tests: assemble a snippet for a mode, run it in a test
//! guest whose exception vectors each halt at their own stub, and inspect the outcome.

use crane86::devices::{Platform, PlatformAction};
pub use crane86::machine::testkit::{pte_addr, Mode, TestGuest, CODE_BASE, DATA_BASE};
pub use crane86::machine::EngineKind;
pub use iced_x86::code_asm::*;
use std::sync::{Arc, Mutex};

pub const CF: u64 = 1 << 0;
pub const PF: u64 = 1 << 2;
pub const AF: u64 = 1 << 4;
pub const ZF: u64 = 1 << 6;
pub const SF: u64 = 1 << 7;
pub const IF: u64 = 1 << 9;
pub const OF: u64 = 1 << 11;

pub const RAX: usize = 0;
pub const RCX: usize = 1;
pub const RDX: usize = 2;
pub const RBX: usize = 3;
pub const RSP: usize = 4;
pub const RSI: usize = 6;
pub const RDI: usize = 7;

/// Offset from `CODE_BASE` of the exception stubs: vector v halts at `STUBS + v`.
pub const STUBS: u64 = 0x7000;
/// Number of vectors with a stub.
pub const STUB_COUNT: u8 = 0x40;

/// Modes without 64-bit mode (where the BCD instructions exist).
pub const LEGACY_MODES: [Mode; 4] = [Mode::Real, Mode::Protected32, Mode::Paged32, Mode::Pae32];
/// Modes with paging.
pub const PAGED_MODES: [Mode; 3] = [Mode::Paged32, Mode::Pae32, Mode::Long64];

/// Where test data lives in `mode`, as an offset the guest can address (DS base 0; real
/// mode offsets must stay below 64 KiB).
pub fn data(mode: Mode) -> u64 {
    if mode == Mode::Real {
        0x9000
    } else {
        DATA_BASE
    }
}

/// Assemble `f` for `mode`, followed by HLT.
pub fn assemble(mode: Mode, f: impl FnOnce(&mut CodeAssembler)) -> Vec<u8> {
    let mut a = CodeAssembler::new(mode.bitness()).unwrap();
    f(&mut a);
    a.hlt().unwrap();
    a.assemble(if mode == Mode::Real { 0 } else { CODE_BASE })
        .unwrap()
}

/// Port traffic seen by a [`RecordingPlatform`], shared with the test.
#[derive(Debug, Default)]
pub struct PortLog {
    pub writes: Vec<(u16, u8, u32)>,
    pub reads: u32,
    /// Assert an interrupt (vector 0x20) once this many reads happened.
    pub irq_after_reads: Option<u32>,
    pub irq_acked: bool,
}

/// A platform whose port reads return 0x10, 0x11, 0x12, … and whose writes are logged.
pub struct RecordingPlatform(pub Arc<Mutex<PortLog>>);

pub const IRQ_VECTOR: u8 = 0x20;

impl Platform for RecordingPlatform {
    fn pio_read(&mut self, _port: u16, size: u8) -> u32 {
        let mut log = self.0.lock().unwrap();
        let v = 0x10 + log.reads;
        log.reads += 1;
        v & if size >= 4 {
            u32::MAX
        } else {
            (1 << (size * 8)) - 1
        }
    }
    fn pio_write(&mut self, port: u16, size: u8, value: u32) {
        self.0.lock().unwrap().writes.push((port, size, value));
    }
    fn mmio_read(&mut self, _paddr: u64, _size: u8) -> u64 {
        u64::MAX
    }
    fn mmio_write(&mut self, _paddr: u64, _size: u8, _value: u64) {}
    fn interrupt_pending(&self) -> bool {
        let log = self.0.lock().unwrap();
        !log.irq_acked && log.irq_after_reads.is_some_and(|n| log.reads >= n)
    }
    fn ack_interrupt(&mut self) -> Option<u8> {
        let mut log = self.0.lock().unwrap();
        if !log.irq_acked && log.irq_after_reads.is_some_and(|n| log.reads >= n) {
            log.irq_acked = true;
            Some(IRQ_VECTOR)
        } else {
            None
        }
    }
    fn take_action(&mut self) -> Option<PlatformAction> {
        None
    }
    fn now_ns(&self) -> u64 {
        0
    }
}

/// A guest with `code` loaded, exception stubs installed, and `regs` / `rflags` set
/// (RFLAGS bit 1 is added). Not yet run.
pub fn guest(
    engine: EngineKind,
    mode: Mode,
    code: &[u8],
    regs: &[(usize, u64)],
    rflags: u64,
) -> TestGuest {
    let mut g = TestGuest::new(engine, mode, code);
    g.write(CODE_BASE + STUBS, &[0xF4; STUB_COUNT as usize]);
    for v in 0..STUB_COUNT {
        g.set_gate(v, CODE_BASE + STUBS + u64::from(v), 0);
    }
    for &(r, v) in regs {
        g.cpu.gpr[r] = v;
    }
    g.cpu.set_rflags(rflags | 2);
    g
}

/// Assemble `f`, run it to HLT with `regs` / `rflags`, and return the guest.
pub fn run(
    engine: EngineKind,
    mode: Mode,
    regs: &[(usize, u64)],
    rflags: u64,
    f: impl FnOnce(&mut CodeAssembler),
) -> TestGuest {
    let code = assemble(mode, f);
    let mut g = guest(engine, mode, &code, regs, rflags);
    g.run_to_halt();
    g
}

/// Offset of RIP from `CODE_BASE` (real-mode IP is already relative to CS = CODE_BASE/16).
pub fn rip_offset(g: &TestGuest) -> u64 {
    if g.mode == Mode::Real {
        g.cpu.rip
    } else {
        g.cpu.rip - CODE_BASE
    }
}

/// The exception vector whose stub the guest halted in, if any.
pub fn exception(g: &TestGuest) -> Option<u8> {
    let off = rip_offset(g);
    (STUBS + 1..=STUBS + u64::from(STUB_COUNT))
        .contains(&off)
        .then(|| (off - STUBS - 1) as u8)
}

/// Assert the guest ran to its final HLT without an exception.
/// Run 64-bit `code` under `engine` to its HLT (an exception fails the test) and read the
/// `n` quadwords at `at`: what the differential JIT tests compare between engines.
pub fn run_long64(engine: EngineKind, code: &[u8], at: u64, n: u64) -> (TestGuest, Vec<u64>) {
    let mut g = guest(engine, Mode::Long64, code, &[], 0);
    g.run_to_halt();
    assert_no_exception(&g, &format!("{engine}"));
    let stored = (0..n).map(|k| g.read_u64(at + 8 * k)).collect();
    (g, stored)
}

/// The index of the first element where `a` and `b` differ (or where one ends).
pub fn first_difference(a: &[u64], b: &[u64]) -> Option<usize> {
    (0..a.len().max(b.len())).find(|&k| a.get(k) != b.get(k))
}

pub fn assert_no_exception(g: &TestGuest, what: &str) {
    assert_eq!(
        exception(g),
        None,
        "{what}: unexpected exception in {:?}; state {:#x?}",
        g.mode,
        g.cpu
    );
}

/// Physical address of the stack top as the guest sees it (exception frames go there).
pub fn stack_phys(g: &TestGuest) -> u64 {
    let stack_seg = &g.cpu.seg[crane86::x86::SegReg::Ss as usize];
    let offset = if g.mode == Mode::Long64 {
        g.cpu.gpr[RSP]
    } else if g.mode == Mode::Real {
        g.cpu.gpr[RSP] & 0xFFFF
    } else {
        g.cpu.gpr[RSP] & 0xFFFF_FFFF
    };
    stack_seg.base + offset
}

/// The return address of the exception frame at the top of the stack, as an offset from
/// `CODE_BASE`. `error_code` says whether the vector pushed one.
pub fn faulting_offset(g: &TestGuest, error_code: bool) -> u64 {
    let top = stack_phys(g);
    match g.mode {
        Mode::Real => g.read_u64(top) & 0xFFFF,
        Mode::Long64 => g.read_u64(top + if error_code { 8 } else { 0 }) - CODE_BASE,
        _ => (g.read_u64(top + if error_code { 4 } else { 0 }) & 0xFFFF_FFFF) - CODE_BASE,
    }
}

pub fn read_u8(g: &TestGuest, addr: u64) -> u8 {
    g.read_u64(addr) as u8
}

pub fn read_u16(g: &TestGuest, addr: u64) -> u16 {
    g.read_u64(addr) as u16
}

pub fn read_u32(g: &TestGuest, addr: u64) -> u32 {
    g.read_u64(addr) as u32
}

/// The arithmetic flags selected by `mask`.
pub fn flags(g: &TestGuest, mask: u64) -> u64 {
    g.cpu.rflags() & mask
}

/// Save RFLAGS into ESI/RSI (`which` = 0), EDI/RDI (1) or EBP/RBP (2) via the stack.
pub fn save_flags(a: &mut CodeAssembler, which: usize) {
    if a.bitness() == 64 {
        a.pushfq().unwrap();
        match which {
            0 => a.pop(rsi),
            1 => a.pop(rdi),
            _ => a.pop(rbp),
        }
        .unwrap();
    } else {
        a.pushfd().unwrap();
        match which {
            0 => a.pop(esi),
            1 => a.pop(edi),
            _ => a.pop(ebp),
        }
        .unwrap();
    }
}

/// All six arithmetic status flags.
pub const ARITH: u64 = CF | PF | AF | ZF | SF | OF;
pub const DF: u64 = 1 << 10;

/// The iced `Code` whose name is `name` (e.g. "Add_rm32_r32"), for table-driven tests.
pub fn code(name: &str) -> iced_x86::Code {
    iced_x86::Code::values()
        .find(|c| format!("{c:?}") == name)
        .unwrap_or_else(|| panic!("no iced Code named {name}"))
}

/// Emit `name` with `ops` (registers, a memory operand or an immediate, in order).
pub fn emit(a: &mut CodeAssembler, name: &str, ops: &[Operand]) {
    use iced_x86::Instruction as I;
    let c = code(name);
    let i = match *ops {
        [] => I::with(c),
        [x] => x.one(c),
        [x, y] => x.two(c, y),
        _ => panic!("emit: {} operands", ops.len()),
    };
    a.add_instruction(i).unwrap();
}

/// An operand for [`emit`].
#[derive(Clone, Copy, Debug)]
pub enum Operand {
    Reg(iced_x86::Register),
    Mem(iced_x86::Register, i64),
    Imm(i64),
}

impl Operand {
    fn one(self, c: iced_x86::Code) -> iced_x86::Instruction {
        use iced_x86::Instruction as I;
        match self {
            Operand::Reg(r) => I::with1(c, r).unwrap(),
            Operand::Mem(b, d) => I::with1(c, mem_operand(b, d)).unwrap(),
            Operand::Imm(v) => I::with1(c, v as i32).unwrap(),
        }
    }
    fn two(self, c: iced_x86::Code, y: Operand) -> iced_x86::Instruction {
        use iced_x86::Instruction as I;
        match (self, y) {
            (Operand::Reg(r), Operand::Reg(s)) => I::with2(c, r, s).unwrap(),
            (Operand::Reg(r), Operand::Mem(b, d)) => I::with2(c, r, mem_operand(b, d)).unwrap(),
            (Operand::Mem(b, d), Operand::Reg(s)) => I::with2(c, mem_operand(b, d), s).unwrap(),
            (Operand::Reg(r), Operand::Imm(v)) => I::with2(c, r, v).unwrap(),
            (Operand::Mem(b, d), Operand::Imm(v)) => {
                I::with2(c, mem_operand(b, d), v as i32).unwrap()
            }
            (x, y) => panic!("emit: unsupported operand pair {x:?}, {y:?}"),
        }
    }
}

/// `[base + displ]`, or `[displ]` with `base` = `Register::None`.
fn mem_operand(base: iced_x86::Register, displ: i64) -> iced_x86::MemoryOperand {
    let size = if base == iced_x86::Register::None {
        4
    } else {
        1
    };
    iced_x86::MemoryOperand::with_base_displ_size(base, displ, size)
}

/// Set RFLAGS to `value` through the stack (PUSH imm / POPF at the mode's width).
pub fn set_flags(a: &mut CodeAssembler, value: u32) {
    match a.bitness() {
        16 => {
            a.push(value as i32 & 0xFFFF).unwrap();
            a.popf().unwrap();
        }
        32 => {
            a.push(value).unwrap();
            a.popfd().unwrap();
        }
        _ => {
            a.push(value as i32).unwrap();
            a.popfq().unwrap();
        }
    }
}

/// Store the full-width accumulator-style register `reg` (EAX.. in 16/32-bit code, RAX.. in
/// 64-bit code) to the absolute offset `at`.
pub fn store(a: &mut CodeAssembler, at: u64, reg: usize) {
    if a.bitness() == 64 {
        let r = [rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi][reg];
        a.mov(qword_ptr(at), r).unwrap();
    } else {
        let r = [eax, ecx, edx, ebx, esp, ebp, esi, edi][reg];
        a.mov(dword_ptr(at), r).unwrap();
    }
}

/// Load `value` into the full-width register `reg` (32-bit outside 64-bit mode).
pub fn load(a: &mut CodeAssembler, reg: usize, value: u64) {
    if a.bitness() == 64 {
        let r = [rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi][reg];
        a.mov(r, value).unwrap();
    } else {
        let r = [eax, ecx, edx, ebx, esp, ebp, esi, edi][reg];
        a.mov(r, value as u32).unwrap();
    }
}

/// Width of a full register in `mode` as the guest can observe it.
pub fn full_mask(mode: Mode) -> u64 {
    if mode == Mode::Long64 {
        u64::MAX
    } else {
        0xFFFF_FFFF
    }
}

/// Even parity of the low byte (PF).
pub fn parity(v: u64) -> bool {
    (v as u8).count_ones().is_multiple_of(2)
}

/// SF, ZF and PF of `r` at `bits`.
pub fn szp(r: u64, bits: u32) -> u64 {
    let mut f = 0;
    if r >> (bits - 1) & 1 != 0 {
        f |= SF;
    }
    if r & width_mask(bits) == 0 {
        f |= ZF;
    }
    if parity(r) {
        f |= PF;
    }
    f
}

pub fn width_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1 << bits) - 1
    }
}

/// Vector whose (DPL-3) gate ends a ring-3 snippet: `INT USER_EXIT` halts in its stub.
pub const USER_EXIT: u8 = 0x3F;
/// Offset from `CODE_BASE` of the ring-3 code of [`run_user`].
pub const USER_CODE: u64 = 0x4000;
/// Ring-3 stack top used by [`run_user`].
pub const USER_STACK: u64 = 0x7_0000;

/// Assemble and run `f` at CPL 3 in a protected `mode`: IRET to `SEL_USER_CODE32/64` with
/// `rflags` (DS/ES reloaded with `SEL_USER_DATA` in 32-bit code), then `INT USER_EXIT`.
/// Check the outcome with [`user_exited`] or [`exception`].
pub fn run_user(
    engine: EngineKind,
    mode: Mode,
    regs: &[(usize, u64)],
    rflags: u64,
    f: impl FnOnce(&mut CodeAssembler),
) -> TestGuest {
    let mut g = user_guest(engine, mode, regs, rflags, f);
    g.run_to_halt();
    g
}

/// [`run_user`] without running: the caller may adjust the guest (platform, TR) first.
pub fn user_guest(
    engine: EngineKind,
    mode: Mode,
    regs: &[(usize, u64)],
    rflags: u64,
    f: impl FnOnce(&mut CodeAssembler),
) -> TestGuest {
    use crane86::machine::testkit::{SEL_USER_CODE32, SEL_USER_CODE64, SEL_USER_DATA};
    assert!(mode != Mode::Real, "run_user needs protected mode");
    // The ring-3 code lives at a fixed address so the ring-0 prologue can push it.
    let user_at = CODE_BASE + USER_CODE;
    let code = assemble(mode, |a| {
        if mode == Mode::Long64 {
            a.push(i32::from(SEL_USER_DATA)).unwrap();
            a.push(USER_STACK as i32).unwrap();
            a.push((rflags | 2) as i32).unwrap();
            a.push(i32::from(SEL_USER_CODE64)).unwrap();
            a.push(user_at as i32).unwrap();
            a.iretq().unwrap();
        } else {
            a.push(u32::from(SEL_USER_DATA)).unwrap();
            a.push(USER_STACK as u32).unwrap();
            a.push((rflags | 2) as u32).unwrap();
            a.push(u32::from(SEL_USER_CODE32)).unwrap();
            a.push(user_at as u32).unwrap();
            a.iretd().unwrap();
        }
    });
    let mut user = CodeAssembler::new(mode.bitness()).unwrap();
    if mode != Mode::Long64 {
        user.mov(ax, u32::from(SEL_USER_DATA)).unwrap();
        user.mov(ds, ax).unwrap();
        user.mov(es, ax).unwrap();
    }
    for &(r, v) in regs {
        load(&mut user, r, v);
    }
    f(&mut user);
    user.int(u32::from(USER_EXIT)).unwrap();
    let user_code = user.assemble(user_at).unwrap();
    assert!(
        USER_CODE + user_code.len() as u64 <= STUBS,
        "ring-3 code overlaps the stubs"
    );
    let mut g = guest(engine, mode, &code, &[], 0);
    g.write(user_at, &user_code);
    // Make the exit gate callable from ring 3 (DPL 3: attribute byte 0xEE).
    let gate_size = if mode == Mode::Long64 { 16 } else { 8 };
    g.write(
        crane86::machine::testkit::IDT_BASE + u64::from(USER_EXIT) * gate_size + 5,
        &[0xEE],
    );
    g
}

/// Did a [`run_user`] guest reach its `INT USER_EXIT` (no exception on the way)?
pub fn user_exited(g: &TestGuest, what: &str) {
    assert_eq!(
        exception(g),
        Some(USER_EXIT),
        "{what}: ring-3 code did not reach its exit in {:?}; state {:#x?}",
        g.mode,
        g.cpu
    );
}

/// A small deterministic generator (xorshift64*) for generated test cases.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
