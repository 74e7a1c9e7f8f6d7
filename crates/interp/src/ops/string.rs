//! String instructions: MOVS CMPS SCAS LODS STOS INS OUTS, with REP / REPE / REPNE, in
//! 16-, 32- and 64-bit address sizes.
//!
//! - The address size comes from the operand kinds iced reports (`MemorySegSI`/`ESI`/`RSI`,
//!   `MemoryESDI`/`EDI`/`RDI`); (R/E)CX, (R/E)SI, (R/E)DI are used and updated at that width.
//! - The segment override applies to the source (DS:SI) only; the destination is always ES.
//! - Restartable: registers are updated after every completed iteration, so a fault in
//!   iteration k leaves RCX/RSI/RDI as they were at the start of iteration k and the
//!   instruction (whose RIP is still the faulting one) resumes exactly there.
//! - Chunking: a REP instruction runs at most [`REP_CHUNK`] iterations per execution (one
//!   when TF is set, so single-stepping traps after every iteration as on hardware) and
//!   stops early when an interrupt is pending and IF is set. It then leaves `next_rip` at
//!   its own RIP, so the dispatcher regains control (interrupts, instruction budget,
//!   timers) and re-executes it to continue.
//! - Fast path: REP MOVS / REP STOS going forward over plain RAM copy or fill whole runs up
//!   to the next page boundary through the softmmu TLB's host pointers ([`bulk`]), when
//!   segment checks pass for the whole run and (for MOVS) a forward element-by-element copy
//!   equals a memmove. Anything else (first touch of a page, MMIO, code pages, DF = 1,
//!   overlapping fill idioms) takes the exact per-element path, which also refills the TLB.

use crate::cpu::{mask, seg_of, Bits, Cpu};
use crate::exec::Handler;
use crane86_memory::PAGE_MASK;
use crane86_x86::flags::{self, CcOp};
use crane86_x86::regs::gpr::{RAX, RCX, RDI, RDX, RSI};
use crane86_x86::{Exception, SegReg};
use iced_x86::{Instruction, Mnemonic, OpKind};

/// Most iterations one execution of a REP instruction performs before yielding.
pub const REP_CHUNK: u64 = 4096;
/// How often (in iterations) a REP chunk polls for a pending interrupt.
const IRQ_POLL_INTERVAL: u64 = 256;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Movs,
    Cmps,
    Scas,
    Lods,
    Stos,
    Ins,
    Outs,
}

pub fn handler(i: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    // MOVSD/CMPSD share their mnemonics with the SSE2 instructions: require string operands.
    addr_size(i)?;
    Some(match i.mnemonic() {
        Movsb | Movsw | Movsd | Movsq => movs,
        Cmpsb | Cmpsw | Cmpsd | Cmpsq => cmps,
        Scasb | Scasw | Scasd | Scasq => scas,
        Lodsb | Lodsw | Lodsd | Lodsq => lods,
        Stosb | Stosw | Stosd | Stosq => stos,
        Insb | Insw | Insd => ins,
        Outsb | Outsw | Outsd => outs,
        _ => return None,
    })
}

/// Address size of a string instruction, from its implicit memory operands.
fn addr_size(i: &Instruction) -> Option<Bits> {
    (0..i.op_count()).find_map(|n| match i.op_kind(n) {
        OpKind::MemorySegSI | OpKind::MemoryESDI => Some(16),
        OpKind::MemorySegESI | OpKind::MemoryESEDI => Some(32),
        OpKind::MemorySegRSI | OpKind::MemoryESRDI => Some(64),
        _ => None,
    })
}

fn movs(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    string_op(cpu, i, Kind::Movs)
}
fn cmps(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    string_op(cpu, i, Kind::Cmps)
}
fn scas(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    string_op(cpu, i, Kind::Scas)
}
fn lods(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    string_op(cpu, i, Kind::Lods)
}
fn stos(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    string_op(cpu, i, Kind::Stos)
}
fn ins(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    string_op(cpu, i, Kind::Ins)
}
fn outs(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    string_op(cpu, i, Kind::Outs)
}

/// Per-instruction constants of one string operation.
struct StringCtx {
    kind: Kind,
    /// Address size in bits.
    asz: Bits,
    /// Element size in bits.
    bits: Bits,
    /// Signed per-iteration pointer increment (negative when DF = 1).
    delta: u64,
    /// Source segment (DS unless overridden).
    src_seg: SegReg,
}

impl StringCtx {
    fn advance(&self, cpu: &mut Cpu, reg: usize) {
        let v = cpu.gpr(reg, self.asz).wrapping_add(self.delta) & mask(self.asz);
        cpu.set_gpr(reg, self.asz, v);
    }

    /// One iteration: the element transfer / comparison and the pointer updates.
    fn iterate(&self, cpu: &mut Cpu) -> Result<(), Exception> {
        let bits = self.bits;
        let si = cpu.gpr(RSI, self.asz);
        let di = cpu.gpr(RDI, self.asz);
        match self.kind {
            Kind::Movs => {
                let v = cpu.read_mem(self.src_seg, si, bits)?;
                cpu.write_mem(SegReg::Es, di, bits, v)?;
                self.advance(cpu, RSI);
                self.advance(cpu, RDI);
            }
            Kind::Cmps => {
                let a = cpu.read_mem(self.src_seg, si, bits)?;
                let b = cpu.read_mem(SegReg::Es, di, bits)?;
                cpu.set_lazy(CcOp::Sub8, bits, a.wrapping_sub(b), b, 0);
                self.advance(cpu, RSI);
                self.advance(cpu, RDI);
            }
            Kind::Scas => {
                let a = cpu.gpr(RAX, bits);
                let b = cpu.read_mem(SegReg::Es, di, bits)?;
                cpu.set_lazy(CcOp::Sub8, bits, a.wrapping_sub(b), b, 0);
                self.advance(cpu, RDI);
            }
            Kind::Lods => {
                let v = cpu.read_mem(self.src_seg, si, bits)?;
                cpu.set_gpr(RAX, bits, v);
                self.advance(cpu, RSI);
            }
            Kind::Stos => {
                let v = cpu.gpr(RAX, bits);
                cpu.write_mem(SegReg::Es, di, bits, v)?;
                self.advance(cpu, RDI);
            }
            Kind::Ins => {
                let port = cpu.s.gpr[RDX] as u16;
                cpu.check_io(port, bits / 8)?;
                // Check the destination before the port read so a fault has no side effect
                // on the device.
                let lin = cpu.linear(SegReg::Es, di, bits / 8, true)?;
                cpu.read_lin_for_write(lin, bits)?;
                cpu.sync_platform_time();
                let v = cpu.plat.pio_read(port, (bits / 8) as u8);
                cpu.write_lin(lin, bits, u64::from(v))?;
                self.advance(cpu, RDI);
            }
            Kind::Outs => {
                let port = cpu.s.gpr[RDX] as u16;
                cpu.check_io(port, bits / 8)?;
                let v = cpu.read_mem(self.src_seg, si, bits)?;
                cpu.sync_platform_time();
                cpu.plat.pio_write(port, (bits / 8) as u8, v as u32);
                cpu.step.action = true;
                self.advance(cpu, RSI);
            }
        }
        Ok(())
    }
}

fn string_op(cpu: &mut Cpu, i: &Instruction, kind: Kind) -> Result<(), Exception> {
    let asz = addr_size(i).expect("string instruction resolved without string operands");
    let bits = i.memory_size().size() as Bits * 8;
    let bytes = u64::from(bits / 8);
    let ctx = StringCtx {
        kind,
        asz,
        bits,
        delta: if cpu.s.rflags & flags::DF != 0 {
            bytes.wrapping_neg()
        } else {
            bytes
        },
        src_seg: seg_of(i.memory_segment()),
    };
    let rep = i.has_rep_prefix() || i.has_repne_prefix();
    if !rep {
        return ctx.iterate(cpu);
    }
    // CMPS/SCAS stop on ZF: REPE while equal (ZF = 1), REPNE while not equal.
    let repeat_while_zf = match kind {
        Kind::Cmps | Kind::Scas => Some(!i.has_repne_prefix()),
        _ => None,
    };
    let limit = if cpu.s.rflags & flags::TF != 0 {
        1
    } else {
        REP_CHUNK
    };
    let mut done = 0u64;
    loop {
        let count = cpu.gpr(RCX, asz);
        if count == 0 {
            return Ok(());
        }
        let quick = if limit > 1 {
            bulk(cpu, &ctx, count.min(limit - done))
        } else {
            0
        };
        if quick > 0 {
            let count = count - quick;
            cpu.set_gpr(RCX, asz, count);
            if count == 0 {
                return Ok(());
            }
            done += quick;
            if done >= limit || irq_waiting(cpu) {
                cpu.next_rip = cpu.s.rip;
                return Ok(());
            }
            continue;
        }
        ctx.iterate(cpu)?;
        let count = count.wrapping_sub(1);
        cpu.set_gpr(RCX, asz, count);
        if let Some(want_zf) = repeat_while_zf {
            if (cpu.flags() & flags::ZF != 0) != want_zf {
                return Ok(());
            }
        }
        if count == 0 {
            return Ok(());
        }
        done += 1;
        if done >= limit || (done.is_multiple_of(IRQ_POLL_INTERVAL) && irq_waiting(cpu)) {
            // Yield: re-execute this instruction to continue.
            cpu.next_rip = cpu.s.rip;
            return Ok(());
        }
    }
}

/// A maskable interrupt is waiting and IF allows it: a REP should yield.
fn irq_waiting(cpu: &Cpu) -> bool {
    cpu.s.rflags & flags::IF != 0 && cpu.plat.interrupt_pending()
}

/// Host pointer for `len` bytes at linear `lin` when the TLB holds a flag-free (plain RAM)
/// translation for the access and the run stays inside the page.
fn host_ptr(cpu: &mut Cpu, lin: u64, len: u64, write: bool) -> Option<*mut u8> {
    let user = cpu.s.cpl() == 3;
    let e = cpu.tlb.entry(user, lin);
    let tag = if write { e.write_tag } else { e.read_tag };
    if tag != lin & PAGE_MASK || (lin & 0xFFF) + len > 0x1000 {
        return None;
    }
    Some(e.addend.wrapping_add(lin) as *mut u8)
}

/// The REP MOVS / REP STOS fast path: perform up to `max` elements (at most to the end of the
/// source and destination pages) through host pointers. Returns the number of elements
/// done and updates RSI/RDI; 0 means "use the per-element path".
fn bulk(cpu: &mut Cpu, ctx: &StringCtx, max: u64) -> u64 {
    let bytes = u64::from(ctx.bits / 8);
    if !matches!(ctx.kind, Kind::Movs | Kind::Stos) || ctx.delta != bytes {
        return 0;
    }
    let amask = mask(ctx.asz);
    let di = cpu.gpr(RDI, ctx.asz);
    let si = cpu.gpr(RSI, ctx.asz);
    // Elements that fit before the destination page ends, and (for 16/32-bit addressing)
    // before the offset would wrap.
    let Ok(dst_lin) = cpu.linear(SegReg::Es, di, bytes as u32, true) else {
        return 0;
    };
    let mut n = max.min((0x1000 - (dst_lin & 0xFFF)) / bytes);
    n = n.min((amask - di) / bytes + 1);
    let mut src_lin = 0;
    if ctx.kind == Kind::Movs {
        let Ok(lin) = cpu.linear(ctx.src_seg, si, bytes as u32, false) else {
            return 0;
        };
        src_lin = lin;
        n = n.min((0x1000 - (lin & 0xFFF)) / bytes);
        n = n.min((amask - si) / bytes + 1);
    }
    if n < 2 {
        return 0;
    }
    let len = n * bytes;
    // Segment limits for the whole run (the linear address is contiguous within a page).
    if cpu.linear(SegReg::Es, di, len as u32, true).is_err() {
        return 0;
    }
    let Some(dst) = host_ptr(cpu, dst_lin, len, true) else {
        return 0;
    };
    match ctx.kind {
        Kind::Movs => {
            if cpu.linear(ctx.src_seg, si, len as u32, false).is_err() {
                return 0;
            }
            let Some(src) = host_ptr(cpu, src_lin, len, false) else {
                return 0;
            };
            // A forward element copy equals memmove unless the destination starts inside
            // the source run after its start (the "rep movsb with di = si + 1" fill idiom).
            let (s, d) = (src as usize, dst as usize);
            if d > s && d < s + len as usize {
                return 0;
            }
            // SAFETY: both runs lie inside single RAM pages whose TLB entries map them into
            // the live guest-memory backing (checked by `host_ptr`); `copy` allows overlap.
            unsafe { std::ptr::copy(src as *const u8, dst, len as usize) };
        }
        _ if bytes == 1 => {
            // SAFETY: the destination run lies inside one RAM page mapped by the TLB entry
            // checked in `host_ptr`.
            unsafe { std::ptr::write_bytes(dst, cpu.s.gpr[RAX] as u8, len as usize) };
        }
        _ => {
            let v = cpu.gpr(RAX, ctx.bits).to_le_bytes();
            for k in 0..n as usize {
                // SAFETY: the destination run lies inside one RAM page mapped by the TLB
                // entry checked in `host_ptr`; element k is within it.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        v.as_ptr(),
                        dst.add(k * bytes as usize),
                        bytes as usize,
                    )
                };
            }
        }
    }
    cpu.set_gpr(RDI, ctx.asz, di.wrapping_add(len) & amask);
    if ctx.kind == Kind::Movs {
        cpu.set_gpr(RSI, ctx.asz, si.wrapping_add(len) & amask);
    }
    n
}
