//! The demo guest's code, generated with iced-x86 `code_asm` into a 128 KiB firmware image.
//!
//! Image layout (the ROM is mapped at the top of 4 GiB, so image offset `o` is linear
//! `ROM_BASE + o`):
//!
//! | linear        | contents                                                    |
//! |---------------|-------------------------------------------------------------|
//! | `0xFFFE_0000` | 64-bit code: IDT setup, workload, reports, debug-exit       |
//! | `0xFFFF_0000` | data: GDT, GDT pointer, NUL-terminated strings              |
//! | `0xFFFF_1000` | 32-bit code: page tables, PAE, EFER.LME, paging on          |
//! | `0xFFFF_F000` | 16-bit code: COM1 banner, A20, LGDT, CR0.PE                 |
//! | `0xFFFF_FFF0` | reset vector: `jmp 0xF000` (CS base is 0xFFFF0000 at reset) |
//!
//! RAM used by the guest: page tables at 1 MiB (so A20 must really be on), the IDT and the
//! result variables after them, the stack below 0x90000, the sieve at 2 MiB, the buffers at
//! 3 and 4 MiB, and the fault region at 16 MiB (a page table whose entries start not present).

use super::reference::{self, Check};
use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;

pub const ROM_BASE: u64 = 0xFFFE_0000;
pub const ROM_SIZE: usize = 0x2_0000;
const CODE64: u64 = 0xFFFE_0000;
const DATA: u64 = 0xFFFF_0000;
const CODE32: u64 = 0xFFFF_1000;
/// Real-mode offsets are relative to the reset CS base 0xFFFF0000.
const REAL_CS_BASE: u64 = 0xFFFF_0000;
const CODE16_IP: u64 = 0xF000;
const RESET_IP: u64 = 0xFFF0;

const SEL_CODE32: u16 = 0x08;
const SEL_DATA: u16 = 0x10;
const SEL_CODE64: u16 = 0x18;

const PML4: u64 = 0x10_0000;
const PDPT: u64 = 0x10_1000;
const PD0: u64 = 0x10_2000;
const PD3: u64 = 0x10_3000;
const FAULT_PT: u64 = 0x10_4000;
const IDT: u64 = 0x10_5000;
const VARS: u64 = 0x10_6000;
/// Pages zeroed by the 32-bit code (tables, IDT, variables).
const ZEROED_PAGES: u64 = 7;
const STACK_TOP: u64 = 0x9_0000;
const SIEVE: u64 = 0x20_0000;
const SRC: u64 = 0x30_0000;
const DST: u64 = 0x40_0000;
/// PD0 entry 8 (16 MiB) points at `FAULT_PT`.
const FAULT_REGION: u64 = 0x100_0000;

// Offsets of the result variables from VARS.
const V_SIEVE: i32 = 0;
const V_FNV: i32 = 8;
const V_COPY: i32 = 16;
const V_FIB: i32 = 24;
const V_FAULTS: i32 = 32;
const V_FAULT_SUM: i32 = 40;
const V_IDTR: i32 = 0x100;

/// Debug-exit bit the #PF handler sets when a fault hits outside the fault region.
pub const UNEXPECTED_FAULT_BIT: u64 = 0x80;

pub const COM1: u16 = 0x3F8;
pub const DEBUG_EXIT_PORT: u16 = 0xF4;

/// Banner lines printed before the workload, in order.
pub const BANNERS: [&str; 4] = [
    "crane86 demo: real mode at F000:FFF0, COM1 ready",
    "crane86 demo: A20 enabled, loading GDT",
    "crane86 demo: 32-bit protected mode, building PAE page tables",
    "crane86 demo: 64-bit long mode, IDT with #PF handler loaded",
];
pub const PASS_LINE: &str = "crane86 demo: all checks passed";
pub const FAIL_LINE: &str = "crane86 demo: checks FAILED";

/// Strings in the data area, with their linear addresses.
struct Strings {
    bytes: Vec<u8>,
    base: u64,
}

impl Strings {
    fn add(&mut self, s: &str) -> u64 {
        let addr = self.base + self.bytes.len() as u64;
        self.bytes.extend_from_slice(s.as_bytes());
        self.bytes.push(0);
        addr
    }
}

fn gdt_entry(access: u8, flags: u8) -> u64 {
    0xFFFF | (0xF << 48) | u64::from(access) << 40 | u64::from(flags) << 52
}

type Asm = CodeAssembler;
type R<T = ()> = Result<T, IcedError>;

/// Build the firmware image for `iterations` workload iterations.
pub fn build_image(iterations: u64) -> Result<Vec<u8>, IcedError> {
    let checks = reference::checks(iterations);
    let mut rom = vec![0xF4u8; ROM_SIZE]; // HLT filler

    // ---- data area: GDT at +0, GDT pointer at +0x40, strings from +0x100
    let gdt = [
        0u64,
        gdt_entry(0x9B, 0xC), // 0x08 code32
        gdt_entry(0x93, 0xC), // 0x10 data
        gdt_entry(0x9B, 0xA), // 0x18 code64
    ];
    let data_off = (DATA - ROM_BASE) as usize;
    for (k, d) in gdt.iter().enumerate() {
        rom[data_off + k * 8..data_off + k * 8 + 8].copy_from_slice(&d.to_le_bytes());
    }
    let gdt_ptr = DATA + 0x40;
    let p = data_off + 0x40;
    rom[p..p + 2].copy_from_slice(&((gdt.len() * 8 - 1) as u16).to_le_bytes());
    rom[p + 2..p + 6].copy_from_slice(&(DATA as u32).to_le_bytes());
    let mut strings = Strings {
        bytes: Vec::new(),
        base: DATA + 0x100,
    };
    let banners: Vec<u64> = BANNERS
        .iter()
        .map(|b| strings.add(&format!("{b}\n")))
        .collect();
    let labels: Vec<u64> = checks.iter().map(|c| strings.add(&c.label)).collect();
    let s = ReportStrings {
        open: strings.add(" (0x"),
        ok: strings.add(") ok\n"),
        mismatch: strings.add(") MISMATCH, expected 0x"),
        newline: strings.add("\n"),
        pass: strings.add(&format!("{PASS_LINE}\n")),
        fail: strings.add(&format!("{FAIL_LINE}\n")),
        bad_fault: strings.add("crane86 demo: unexpected page fault at 0x"),
    };
    let so = data_off + 0x100;
    rom[so..so + strings.bytes.len()].copy_from_slice(&strings.bytes);

    // ---- code
    let code16 = real_mode(banners[0], banners[1], gdt_ptr)?;
    place(&mut rom, REAL_CS_BASE + CODE16_IP, &code16);
    let mut reset = Asm::new(16)?;
    reset.jmp(CODE16_IP)?;
    place(
        &mut rom,
        REAL_CS_BASE + RESET_IP,
        &reset.assemble(RESET_IP)?,
    );
    let code32 = protected_mode(banners[2])?;
    place(&mut rom, CODE32, &code32);
    let code64 = long_mode(banners[3], &checks, &labels, &s, iterations)?;
    assert!(
        code64.len() as u64 <= DATA - CODE64,
        "64-bit demo code too large"
    );
    place(&mut rom, CODE64, &code64);
    Ok(rom)
}

fn place(rom: &mut [u8], linear: u64, code: &[u8]) {
    let off = (linear - ROM_BASE) as usize;
    rom[off..off + code.len()].copy_from_slice(code);
}

/// 16-bit: print two banners, enable A20 through port 0x92, LGDT, CR0.PE, far jump.
fn real_mode(banner0: u64, banner1: u64, gdt_ptr: u64) -> R<Vec<u8>> {
    let mut a = Asm::new(16)?;
    a.cli()?;
    a.cld()?;
    a.xor(ax, ax)?;
    a.mov(ss, ax)?;
    a.mov(sp, 0x7000u32)?;
    print16(&mut a, banner0 - REAL_CS_BASE)?;
    a.in_(al, 0x92)?;
    a.or(al, 2)?;
    a.and(al, 0xFE)?;
    a.out(0x92, al)?;
    print16(&mut a, banner1 - REAL_CS_BASE)?;
    // o32 cs: lgdt [gdt_ptr] — the 32-bit form loads all 32 base bits.
    let ip = (gdt_ptr - REAL_CS_BASE) as u16;
    a.db(&[0x66, 0x2E, 0x0F, 0x01, 0x16])?;
    a.db(&ip.to_le_bytes())?;
    a.mov(eax, cr0)?;
    a.or(eax, 1)?;
    a.mov(cr0, eax)?;
    // o32 jmp far SEL_CODE32:CODE32
    a.db(&[0x66, 0xEA])?;
    a.db(&(CODE32 as u32).to_le_bytes())?;
    a.db(&SEL_CODE32.to_le_bytes())?;
    a.assemble(CODE16_IP)
}

/// Print the NUL-terminated string at `cs:ip` to COM1, polling LSR.THRE.
fn print16(a: &mut Asm, ip: u64) -> R {
    let mut next = a.create_label();
    let mut wait = a.create_label();
    let mut done = a.create_label();
    a.mov(si, ip as u32)?;
    a.set_label(&mut next)?;
    a.mov(bl, byte_ptr(si).cs())?;
    a.test(bl, bl)?;
    a.jz(done)?;
    a.mov(dx, u32::from(COM1 + 5))?;
    a.set_label(&mut wait)?;
    a.in_(al, dx)?;
    a.test(al, 0x20)?;
    a.jz(wait)?;
    a.mov(al, bl)?;
    a.mov(dx, u32::from(COM1))?;
    a.out(dx, al)?;
    a.inc(si)?;
    a.jmp(next)?;
    a.set_label(&mut done)?;
    a.nop()
}

/// 32-bit: data segments, page tables (identity 0..1 GiB with 2 MiB pages, the fault region
/// with 4 KiB not-present pages, the ROM's 2 MiB at the top of 4 GiB), PAE, LME, PG, far
/// jump into the 64-bit code.
fn protected_mode(banner: u64) -> R<Vec<u8>> {
    let mut a = Asm::new(32)?;
    a.mov(ax, u32::from(SEL_DATA))?;
    for s in [ds, es, ss, fs, gs] {
        a.mov(s, ax)?;
    }
    a.mov(esp, STACK_TOP as u32)?;
    // puts (inline, linear string address)
    let mut next = a.create_label();
    let mut wait = a.create_label();
    let mut done = a.create_label();
    a.mov(esi, banner as u32)?;
    a.set_label(&mut next)?;
    a.mov(bl, byte_ptr(esi))?;
    a.test(bl, bl)?;
    a.jz(done)?;
    a.mov(dx, u32::from(COM1 + 5))?;
    a.set_label(&mut wait)?;
    a.in_(al, dx)?;
    a.test(al, 0x20)?;
    a.jz(wait)?;
    a.mov(al, bl)?;
    a.mov(dx, u32::from(COM1))?;
    a.out(dx, al)?;
    a.inc(esi)?;
    a.jmp(next)?;
    a.set_label(&mut done)?;
    // Zero the tables, IDT and variables.
    let mut zero = a.create_label();
    a.mov(edi, PML4 as u32)?;
    a.mov(ecx, (ZEROED_PAGES * 1024) as u32)?;
    a.xor(eax, eax)?;
    a.set_label(&mut zero)?;
    a.mov(dword_ptr(edi), eax)?;
    a.add(edi, 4)?;
    a.dec(ecx)?;
    a.jnz(zero)?;
    a.mov(dword_ptr(PML4 as u32), (PDPT | 3) as u32)?;
    a.mov(dword_ptr(PDPT as u32), (PD0 | 3) as u32)?;
    a.mov(dword_ptr((PDPT + 3 * 8) as u32), (PD3 | 3) as u32)?;
    let mut fill = a.create_label();
    a.mov(edi, PD0 as u32)?;
    a.mov(eax, 0x83u32)?;
    a.mov(ecx, 512u32)?;
    a.set_label(&mut fill)?;
    a.mov(dword_ptr(edi), eax)?;
    a.add(eax, 0x20_0000)?;
    a.add(edi, 8)?;
    a.dec(ecx)?;
    a.jnz(fill)?;
    a.mov(
        dword_ptr((PD0 + (FAULT_REGION >> 21) * 8) as u32),
        (FAULT_PT | 3) as u32,
    )?;
    a.mov(dword_ptr((PD3 + 511 * 8) as u32), 0xFFE0_0083u32)?;
    a.mov(eax, cr4)?;
    a.or(eax, 0x20)?; // PAE
    a.mov(cr4, eax)?;
    a.mov(eax, PML4 as u32)?;
    a.mov(cr3, eax)?;
    a.mov(ecx, 0xC000_0080u32)?; // IA32_EFER
    a.rdmsr()?;
    a.or(eax, 0x100)?; // LME
    a.wrmsr()?;
    a.mov(eax, cr0)?;
    a.or(eax, 0x8000_0000u32 as i32)?; // PG
    a.mov(cr0, eax)?;
    // jmp far SEL_CODE64:CODE64 (compatibility mode → 64-bit)
    a.db(&[0xEA])?;
    a.db(&(CODE64 as u32).to_le_bytes())?;
    a.db(&SEL_CODE64.to_le_bytes())?;
    a.assemble(CODE32)
}

struct ReportStrings {
    open: u64,
    ok: u64,
    mismatch: u64,
    newline: u64,
    pass: u64,
    fail: u64,
    bad_fault: u64,
}

/// Labels of the 64-bit subroutines.
struct Subs {
    putc: CodeLabel,
    puts: CodeLabel,
    put_hex: CodeLabel,
    put_dec: CodeLabel,
    report: CodeLabel,
    fib: CodeLabel,
    pf_handler: CodeLabel,
}

fn long_mode(
    banner: u64,
    checks: &[Check],
    labels: &[u64],
    s: &ReportStrings,
    iterations: u64,
) -> R<Vec<u8>> {
    let mut a = Asm::new(64)?;
    let mut subs = Subs {
        putc: a.create_label(),
        puts: a.create_label(),
        put_hex: a.create_label(),
        put_dec: a.create_label(),
        report: a.create_label(),
        fib: a.create_label(),
        pf_handler: a.create_label(),
    };
    a.mov(ax, u32::from(SEL_DATA))?;
    for sr in [ds, es, ss] {
        a.mov(sr, ax)?;
    }
    a.mov(rsp, STACK_TOP)?;
    a.mov(r12, VARS)?;
    // IDT[14] = 64-bit interrupt gate to pf_handler.
    a.lea(rax, qword_ptr(subs.pf_handler))?;
    a.mov(rdi, IDT + 14 * 16)?;
    a.mov(word_ptr(rdi), ax)?;
    a.mov(word_ptr(rdi + 2), u32::from(SEL_CODE64))?;
    a.mov(word_ptr(rdi + 4), 0x8E00u32)?;
    a.shr(rax, 16)?;
    a.mov(word_ptr(rdi + 6), ax)?;
    a.shr(rax, 16)?;
    a.mov(dword_ptr(rdi + 8), eax)?;
    a.mov(word_ptr(r12 + V_IDTR), 0xFFFu32)?;
    a.mov(rax, IDT)?;
    a.mov(qword_ptr(r12 + V_IDTR + 2), rax)?;
    a.lidt(ptr(r12 + V_IDTR))?;
    a.mov(rsi, banner)?;
    a.call(subs.puts)?;

    // Initial state: failure mask, FNV offset, the LCG-filled buffer.
    a.xor(r15, r15)?;
    a.mov(rax, reference::FNV_OFFSET)?;
    a.mov(qword_ptr(r12 + V_FNV), rax)?;
    let mut fill = a.create_label();
    a.mov(rax, reference::LCG_SEED)?;
    a.mov(rdx, reference::LCG_MUL)?;
    a.mov(r9, reference::LCG_INC)?;
    a.mov(rdi, SRC)?;
    a.mov(rcx, reference::BUFFER_LEN / 8)?;
    a.set_label(&mut fill)?;
    a.imul_2(rax, rdx)?;
    a.add(rax, r9)?;
    a.mov(qword_ptr(rdi), rax)?;
    a.add(rdi, 8)?;
    a.dec(rcx)?;
    a.jnz(fill)?;

    // ---- the iteration loop (r14 = iteration number)
    let mut iter = a.create_label();
    a.xor(r14, r14)?;
    a.set_label(&mut iter)?;
    workload(&mut a, &subs)?;
    a.inc(r14)?;
    a.mov(rax, iterations)?;
    a.cmp(r14, rax)?;
    a.jb(iter)?;

    // ---- reports
    let vars = [V_SIEVE, V_FNV, V_COPY, V_FIB, V_FAULTS, V_FAULT_SUM];
    for (k, ((c, &label), &var)) in checks.iter().zip(labels).zip(&vars).enumerate() {
        a.mov(rsi, label)?;
        a.mov(rax, qword_ptr(r12 + var))?;
        a.mov(rdx, c.expected)?;
        a.mov(r8, 1u64 << k)?;
        a.call(subs.report)?;
    }
    let mut failed = a.create_label();
    let mut exit = a.create_label();
    a.test(r15, r15)?;
    a.jnz(failed)?;
    a.mov(rsi, s.pass)?;
    a.call(subs.puts)?;
    a.jmp(exit)?;
    a.set_label(&mut failed)?;
    a.mov(rsi, s.fail)?;
    a.call(subs.puts)?;
    a.set_label(&mut exit)?;
    a.mov(eax, r15d)?;
    a.out(DEBUG_EXIT_PORT as u32, al)?;
    let mut stop = a.create_label();
    a.set_label(&mut stop)?;
    a.cli()?;
    a.hlt()?;
    a.jmp(stop)?;

    subroutines(&mut a, &mut subs, s)?;
    let result = a.assemble_options(CODE64, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)?;
    Ok(result.inner.code_buffer)
}

/// One iteration: reset the fault region, sieve, FNV-1a, copy + checksum, fib, page faults.
fn workload(a: &mut Asm, subs: &Subs) -> R {
    // Make the fault region not present again and flush the TLB by reloading CR3.
    let mut clear = a.create_label();
    a.mov(rdi, FAULT_PT)?;
    a.mov(ecx, reference::FAULT_PAGES as u32)?;
    a.set_label(&mut clear)?;
    a.mov(qword_ptr(rdi), 0)?;
    a.add(rdi, 8)?;
    a.dec(ecx)?;
    a.jnz(clear)?;
    a.mov(rax, cr3)?;
    a.mov(cr3, rax)?;

    // Sieve of Eratosthenes over SIEVE_LIMIT bytes at SIEVE; count in r8.
    let mut zero = a.create_label();
    a.mov(rdi, SIEVE)?;
    a.mov(rcx, reference::SIEVE_LIMIT)?;
    a.xor(eax, eax)?;
    a.set_label(&mut zero)?;
    a.mov(qword_ptr(rdi), rax)?;
    a.add(rdi, 8)?;
    a.sub(rcx, 8)?;
    a.jnz(zero)?;
    let (mut outer, mut inner, mut next, mut done) = (
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
    );
    a.mov(rbx, 2u64)?;
    a.xor(r8d, r8d)?;
    a.mov(r10, SIEVE)?;
    a.set_label(&mut outer)?;
    a.cmp(rbx, reference::SIEVE_LIMIT as i32)?;
    a.jae(done)?;
    a.cmp(byte_ptr(r10 + rbx), 0)?;
    a.jne(next)?;
    a.inc(r8)?;
    a.mov(rax, rbx)?;
    a.imul_2(rax, rbx)?;
    a.set_label(&mut inner)?;
    a.cmp(rax, reference::SIEVE_LIMIT as i32)?;
    a.jae(next)?;
    a.mov(byte_ptr(r10 + rax), 1)?;
    a.add(rax, rbx)?;
    a.jmp(inner)?;
    a.set_label(&mut next)?;
    a.inc(rbx)?;
    a.jmp(outer)?;
    a.set_label(&mut done)?;
    a.add(qword_ptr(r12 + V_SIEVE), r8)?;

    // FNV-1a 64 over the buffer, continuing the hash across iterations.
    let mut fnv = a.create_label();
    a.mov(rax, qword_ptr(r12 + V_FNV))?;
    a.mov(rsi, SRC)?;
    a.mov(rcx, reference::BUFFER_LEN)?;
    a.mov(rdx, reference::FNV_PRIME)?;
    a.set_label(&mut fnv)?;
    a.movzx(ebx, byte_ptr(rsi))?;
    a.xor(rax, rbx)?;
    a.imul_2(rax, rdx)?;
    a.inc(rsi)?;
    a.dec(rcx)?;
    a.jnz(fnv)?;
    a.mov(qword_ptr(r12 + V_FNV), rax)?;

    // Copy SRC → DST qword by qword, then a rotate-add checksum over DST.
    let (mut copy, mut sum) = (a.create_label(), a.create_label());
    a.mov(rsi, SRC)?;
    a.mov(rdi, DST)?;
    a.mov(rcx, reference::BUFFER_LEN / 8)?;
    a.set_label(&mut copy)?;
    a.mov(rax, qword_ptr(rsi))?;
    a.mov(qword_ptr(rdi), rax)?;
    a.add(rsi, 8)?;
    a.add(rdi, 8)?;
    a.dec(rcx)?;
    a.jnz(copy)?;
    a.mov(rax, qword_ptr(r12 + V_COPY))?;
    a.mov(rsi, DST)?;
    a.mov(rcx, reference::BUFFER_LEN / 8)?;
    a.set_label(&mut sum)?;
    a.rol(rax, reference::CHECKSUM_ROTATE)?;
    a.add(rax, qword_ptr(rsi))?;
    a.add(rsi, 8)?;
    a.dec(rcx)?;
    a.jnz(sum)?;
    a.mov(qword_ptr(r12 + V_COPY), rax)?;

    // Recursive Fibonacci.
    a.mov(rdi, reference::FIB_N)?;
    a.call(subs.fib)?;
    a.add(qword_ptr(r12 + V_FIB), rax)?;

    // Touch each page of the fault region: store iteration * FAULT_PAGES + page + 1, read back.
    let mut touch = a.create_label();
    a.mov(rdi, FAULT_REGION)?;
    a.mov(rax, r14)?;
    a.imul_3(rax, rax, reference::FAULT_PAGES as i32)?;
    a.inc(rax)?;
    a.mov(ecx, reference::FAULT_PAGES as u32)?;
    a.set_label(&mut touch)?;
    a.mov(qword_ptr(rdi + 0x18), rax)?;
    a.mov(rbx, qword_ptr(rdi + 0x18))?;
    a.add(qword_ptr(r12 + V_FAULT_SUM), rbx)?;
    a.inc(rax)?;
    a.add(rdi, 0x1000)?;
    a.dec(ecx)?;
    a.jnz(touch)?;
    Ok(())
}

fn subroutines(a: &mut Asm, subs: &mut Subs, s: &ReportStrings) -> R {
    // putc: AL → COM1 once LSR.THRE (bit 5) is set.
    let mut wait = a.create_label();
    a.set_label(&mut subs.putc)?;
    a.push(rdx)?;
    a.push(rax)?;
    a.mov(dx, u32::from(COM1 + 5))?;
    a.set_label(&mut wait)?;
    a.in_(al, dx)?;
    a.test(al, 0x20)?;
    a.jz(wait)?;
    a.pop(rax)?;
    a.mov(dx, u32::from(COM1))?;
    a.out(dx, al)?;
    a.pop(rdx)?;
    a.ret()?;

    // puts: the NUL-terminated string at RSI.
    let (mut next, mut done) = (a.create_label(), a.create_label());
    a.set_label(&mut subs.puts)?;
    a.push(rax)?;
    a.push(rsi)?;
    a.set_label(&mut next)?;
    a.mov(al, byte_ptr(rsi))?;
    a.test(al, al)?;
    a.jz(done)?;
    a.call(subs.putc)?;
    a.inc(rsi)?;
    a.jmp(next)?;
    a.set_label(&mut done)?;
    a.pop(rsi)?;
    a.pop(rax)?;
    a.ret()?;

    // put_hex: RAX as 16 hex digits.
    let (mut digit, mut decimal) = (a.create_label(), a.create_label());
    a.set_label(&mut subs.put_hex)?;
    a.push(rax)?;
    a.push(rbx)?;
    a.push(rcx)?;
    a.mov(rbx, rax)?;
    a.mov(ecx, 16u32)?;
    a.set_label(&mut digit)?;
    a.rol(rbx, 4)?;
    a.mov(eax, ebx)?;
    a.and(eax, 15)?;
    a.cmp(al, 10)?;
    a.jb(decimal)?;
    a.add(al, (b'a' - 10 - b'0') as i32)?;
    a.set_label(&mut decimal)?;
    a.add(al, b'0' as i32)?;
    a.call(subs.putc)?;
    a.dec(ecx)?;
    a.jnz(digit)?;
    a.pop(rcx)?;
    a.pop(rbx)?;
    a.pop(rax)?;
    a.ret()?;

    // put_dec: RAX in decimal (DIV by 10, digits pushed on the stack).
    let (mut divide, mut emit) = (a.create_label(), a.create_label());
    a.set_label(&mut subs.put_dec)?;
    a.push(rax)?;
    a.push(rbx)?;
    a.push(rcx)?;
    a.push(rdx)?;
    a.mov(ebx, 10u32)?;
    a.xor(ecx, ecx)?;
    a.set_label(&mut divide)?;
    a.xor(edx, edx)?;
    a.div(rbx)?;
    a.push(rdx)?;
    a.inc(ecx)?;
    a.test(rax, rax)?;
    a.jnz(divide)?;
    a.set_label(&mut emit)?;
    a.pop(rax)?;
    a.add(al, b'0' as i32)?;
    a.call(subs.putc)?;
    a.dec(ecx)?;
    a.jnz(emit)?;
    a.pop(rdx)?;
    a.pop(rcx)?;
    a.pop(rbx)?;
    a.pop(rax)?;
    a.ret()?;

    // report: label at RSI, value RAX, expected RDX, failure bit R8 (ORed into R15).
    let mut ok = a.create_label();
    a.set_label(&mut subs.report)?;
    a.call(subs.puts)?;
    a.call(subs.put_dec)?;
    a.mov(rsi, s.open)?;
    a.call(subs.puts)?;
    a.call(subs.put_hex)?;
    a.cmp(rax, rdx)?;
    a.je(ok)?;
    a.or(r15, r8)?;
    a.mov(rsi, s.mismatch)?;
    a.call(subs.puts)?;
    a.mov(rax, rdx)?;
    a.call(subs.put_hex)?;
    a.mov(rsi, s.newline)?;
    a.call(subs.puts)?;
    a.ret()?;
    a.set_label(&mut ok)?;
    a.mov(rsi, s.ok)?;
    a.call(subs.puts)?;
    a.ret()?;

    // fib: RAX = fib(RDI), recursively.
    let mut recurse = a.create_label();
    a.set_label(&mut subs.fib)?;
    a.cmp(rdi, 2)?;
    a.jae(recurse)?;
    a.mov(rax, rdi)?;
    a.ret()?;
    a.set_label(&mut recurse)?;
    a.push(rbx)?;
    a.push(rdi)?;
    a.dec(rdi)?;
    a.call(subs.fib)?;
    a.mov(rbx, rax)?;
    a.mov(rdi, qword_ptr(rsp))?;
    a.sub(rdi, 2)?;
    a.call(subs.fib)?;
    a.add(rax, rbx)?;
    a.pop(rdi)?;
    a.pop(rbx)?;
    a.ret()?;

    // #PF handler: map the faulting page of the fault region (identity), count, resume.
    let mut unexpected = a.create_label();
    a.set_label(&mut subs.pf_handler)?;
    a.push(rax)?;
    a.push(rbx)?;
    a.mov(rax, cr2)?;
    a.mov(rbx, rax)?;
    a.sub(rbx, FAULT_REGION as i32)?;
    a.cmp(rbx, (reference::FAULT_PAGES * 0x1000) as i32)?;
    a.jae(unexpected)?;
    a.shr(rbx, 12)?;
    a.and(rax, -0x1000)?;
    a.or(rax, 3)?;
    a.mov(qword_ptr(rbx * 8 + FAULT_PT as i32), rax)?;
    a.inc(qword_ptr(r12 + V_FAULTS))?;
    a.pop(rbx)?;
    a.pop(rax)?;
    a.add(rsp, 8)?; // error code
    a.iretq()?;
    a.set_label(&mut unexpected)?;
    a.mov(rsi, s.bad_fault)?;
    a.call(subs.puts)?;
    a.call(subs.put_hex)?;
    a.mov(rsi, s.newline)?;
    a.call(subs.puts)?;
    a.mov(eax, UNEXPECTED_FAULT_BIT as u32)?;
    a.out(DEBUG_EXIT_PORT as u32, al)?;
    a.cli()?;
    a.hlt()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_has_reset_jump_and_fits() {
        let rom = build_image(2).unwrap();
        assert_eq!(rom.len(), ROM_SIZE);
        // The reset vector holds a near JMP (E9 rel16).
        let reset = (REAL_CS_BASE + RESET_IP - ROM_BASE) as usize;
        assert_eq!(rom[reset], 0xE9);
    }
}
