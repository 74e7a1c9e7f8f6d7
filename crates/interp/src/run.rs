//! The interpreter's execution loop: interrupt check at block boundaries, block lookup or
//! decode, instruction dispatch, precise fault delivery, single-step traps, and platform
//! actions (A20, reset, power-off, debug-exit).

use crate::block::{decode_block, Block, BlockCache, BlockKey, DecodedInsn};
use crate::cpu::{Cpu, StepFlags};
use crate::InterpStats;
use crane86_devices::{Platform, PlatformAction};
use crane86_memory::{Access, PhysMem, PhysTarget, SoftTlb, PAGE_MASK};
use crane86_x86::cpuid::CpuModel;
use crane86_x86::{flags, CpuState, Exception, SegReg};
use std::rc::Rc;

/// Why `Interpreter::run` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunExit {
    /// The instruction budget is used up.
    Budget,
    /// HLT with no interrupt deliverable: wait for the next timer deadline or device event.
    Halted,
    /// A device asked for a machine-level action.
    Action(PlatformAction),
    /// A fault occurred while delivering a double fault: the CPU shuts down. Carries the
    /// exception that could not be delivered.
    TripleFault(Exception),
}

/// What one instruction's execution means for the block around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Go on with the next instruction of the block.
    Next,
    /// Leave the block (a branch, a fault delivered, an interrupt shadow, a state change the
    /// block depends on); the run loop continues at the new RIP.
    Leave,
    /// End the run.
    Exit(RunExit),
}

/// A tier above the interpreter (the JIT): offered every block before the interpreter runs
/// it. `execute` returns `None` when the interpreter should run the block, or the block's
/// outcome (`Some(None)`: continue the run loop; `Some(Some(exit))`: end the run). At most
/// `remaining` instructions may retire. `blocks` is the block cache, whose other blocks a
/// tier may read (to translate what follows a block); the cache does not change during
/// the call, so links between cached blocks made in its current [`BlockCache::epoch`] stay
/// valid until the tier returns.
///
/// A tier may run successor blocks itself (block chaining) as long as it does what this loop
/// does before each block: stop at the budget, when an interrupt could be delivered
/// (`IF` and [`Platform::interrupt_pending`], or `CpuState::pending_external`), in an
/// interrupt shadow, when halted, under
/// single-step, and when guest code was overwritten (`PhysMem::has_smc_dirty`); and find the
/// successor by its key ([`cached_block_key`]).
pub trait Tier {
    fn execute(
        &mut self,
        cpu: &mut Cpu,
        block: &Rc<Block>,
        blocks: &BlockCache,
        remaining: u64,
    ) -> Option<Option<RunExit>>;
}

/// The interpreter engine of one vCPU.
pub struct Interpreter {
    blocks: BlockCache,
    tlb: SoftTlb,
    pub model: CpuModel,
    pub stats: InterpStats,
}

impl Default for Interpreter {
    fn default() -> Self {
        Self::new(CpuModel::default())
    }
}

impl Interpreter {
    pub fn new(model: CpuModel) -> Interpreter {
        Interpreter {
            blocks: BlockCache::default(),
            tlb: SoftTlb::new(),
            model,
            stats: InterpStats::default(),
        }
    }

    pub fn tlb(&self) -> &SoftTlb {
        &self.tlb
    }

    /// Forget cached translations and decoded code (after the machine changed CPU state or
    /// memory behind the engine's back, e.g. a snapshot restore or an engine switch).
    pub fn reset_caches(&mut self) {
        self.tlb.flush_all();
        self.blocks.clear();
    }

    /// Forget decoded blocks only (a tier dropping the native code they point to).
    pub fn clear_blocks(&mut self) {
        self.blocks.clear();
    }

    /// Execute at most `budget` instructions (exactly `budget` unless the guest halts, faults
    /// into a triple fault, or a device action ends the run).
    pub fn run(
        &mut self,
        state: &mut CpuState,
        mem: &mut PhysMem,
        plat: &mut dyn Platform,
        budget: u64,
    ) -> RunExit {
        self.run_tiered(state, mem, plat, budget, None)
    }

    /// [`Self::run`], offering every block to `tier` first.
    pub fn run_tiered(
        &mut self,
        state: &mut CpuState,
        mem: &mut PhysMem,
        plat: &mut dyn Platform,
        budget: u64,
        mut tier: Option<&mut dyn Tier>,
    ) -> RunExit {
        for page in mem.take_smc_dirty() {
            self.blocks.invalidate_page(page);
        }
        let Interpreter {
            blocks,
            tlb,
            model,
            stats,
        } = self;
        let mut cpu = Cpu {
            s: state,
            mem,
            tlb,
            plat,
            model,
            stats,
            next_rip: 0,
            step: StepFlags::default(),
            triple_fault: None,
        };
        let start = cpu.stats.instructions;
        loop {
            if cpu.stats.instructions - start >= budget {
                return RunExit::Budget;
            }
            if let Some(vector) = cpu.s.pending_external.take() {
                // Acknowledged by another engine before it stopped: deliver it now.
                cpu.s.halted = false;
                cpu.stats.interrupts += 1;
                cpu.deliver_external(vector);
                if let Some(e) = cpu.triple_fault {
                    return RunExit::TripleFault(e);
                }
            } else if cpu.s.interrupt_shadow {
                cpu.s.interrupt_shadow = false;
            } else if cpu.s.rflags & flags::IF != 0 && cpu.plat.interrupt_pending() {
                if let Some(vector) = cpu.plat.ack_interrupt() {
                    cpu.s.halted = false;
                    cpu.stats.interrupts += 1;
                    cpu.deliver_external(vector);
                    if let Some(e) = cpu.triple_fault {
                        return RunExit::TripleFault(e);
                    }
                }
            }
            if cpu.s.halted {
                return RunExit::Halted;
            }
            let block = match lookup_block(&mut cpu, blocks) {
                Ok(b) => b,
                Err(e) => {
                    cpu.raise(e);
                    if let Some(e) = cpu.triple_fault {
                        return RunExit::TripleFault(e);
                    }
                    continue;
                }
            };
            let remaining = budget - (cpu.stats.instructions - start);
            let outcome = match tier.as_deref_mut() {
                Some(t) => t.execute(&mut cpu, &block, blocks, remaining),
                None => None,
            };
            let exit = match outcome {
                Some(exit) => exit,
                None => execute_block(&mut cpu, &block, remaining),
            };
            if let Some(exit) = exit {
                return exit;
            }
            if cpu.mem.has_smc_dirty() {
                for page in cpu.mem.take_smc_dirty() {
                    blocks.invalidate_page(page);
                }
            }
        }
    }
}

/// The linear address of the page after the one holding `lin`.
fn next_page(lin: u64, bits: u32) -> u64 {
    let next = (lin | 0xFFF).wrapping_add(1);
    if bits == 64 {
        next
    } else {
        next & 0xFFFF_FFFF
    }
}

/// The physical page the page after linear `lin` maps to for instruction fetch now (`None`
/// if it cannot be fetched from), without raising anything.
fn second_page_now(cpu: &mut Cpu, lin: u64, bits: u32, user: bool) -> Option<u64> {
    let lin2 = next_page(lin, bits);
    cpu.tlb.stats.accesses += 1;
    let e = cpu.tlb.entry(user, lin2);
    if e.fetch_tag == lin2 {
        return Some(e.paddr_page);
    }
    cpu.translate(lin2, Access::Fetch, user)
        .ok()
        .map(|p| p & PAGE_MASK)
}

/// The block at `lin` (physical `pa`, RAM or ROM) whose first instruction crosses into the
/// next linear page, decoded from both pages when that page can be fetched from and is RAM or
/// ROM too (`None` otherwise). Both pages are marked as code, so a write to either
/// invalidates the block.
fn decode_spanning(cpu: &mut Cpu, pa: u64, lin: u64, bits: u32, user: bool) -> Option<Rc<Block>> {
    let first = match cpu.mem.target(pa) {
        PhysTarget::Ram(off) | PhysTarget::Rom(off) => off,
        PhysTarget::Mmio => return None,
    };
    let pa2 = second_page_now(cpu, lin, bits, user)?;
    let second = match cpu.mem.target(pa2) {
        PhysTarget::Ram(off) | PhysTarget::Rom(off) => off,
        PhysTarget::Mmio => return None,
    };
    let tail = (0x1000 - (pa & 0xFFF)) as usize;
    let mut bytes = Vec::with_capacity(tail + 0x1000);
    // SAFETY: `first` and `second` are backing offsets of the two pages; `tail` bytes from
    // `first` end at its page's end, and `second` starts a page of 0x1000 bytes. The slices
    // are copied before anything else touches guest memory.
    unsafe {
        bytes.extend_from_slice(std::slice::from_raw_parts(cpu.mem.host_ptr(first), tail));
        bytes.extend_from_slice(std::slice::from_raw_parts(cpu.mem.host_ptr(second), 0x1000));
    }
    let insns = decode_block(&bytes, cpu.s.rip, bits);
    if insns.is_empty() {
        return None;
    }
    for (paddr, off) in [(pa, first), (pa2, second)] {
        if matches!(cpu.mem.target(paddr), PhysTarget::Ram(_)) && cpu.mem.mark_code_page(off) {
            cpu.tlb.protect_code_page(paddr & PAGE_MASK);
        }
    }
    Some(Rc::new(Block::spanning(insns, pa2)))
}

/// Run at most `remaining` instructions of `block` from the current RIP. Returns an exit when
/// the run must end.
fn execute_block(cpu: &mut Cpu, block: &Block, remaining: u64) -> Option<RunExit> {
    let bits = cpu.s.code_bits();
    for d in block.insns.iter().take(remaining as usize) {
        match step_insn(cpu, d, bits) {
            Step::Next => {}
            Step::Leave => return None,
            Step::Exit(e) => return Some(e),
        }
    }
    None
}

/// Execute one decoded instruction at the current RIP (code size `bits`) with everything
/// around it: the CS limit check, fault delivery, the single-step trap, platform actions,
/// the interrupt shadow, and whether the block may go on. Inline into the block loop: the
/// call and its register saves were about 10% of the interpreter's time on the demo guest.
#[inline]
pub fn step_insn(cpu: &mut Cpu, d: &DecodedInsn, bits: u32) -> Step {
    let insn = &d.insn;
    let rip = cpu.s.rip;
    let len = insn.len() as u64;
    let next = match bits {
        16 => rip.wrapping_add(len) & 0xFFFF,
        32 => rip.wrapping_add(len) & 0xFFFF_FFFF,
        _ => rip.wrapping_add(len),
    };
    cpu.next_rip = next;
    cpu.step = StepFlags::default();
    let single_step = cpu.s.rflags & flags::TF != 0;
    let result = if bits != 64 && rip + len - 1 > u64::from(cpu.s.seg[SegReg::Cs as usize].limit) {
        Err(Exception::gp0())
    } else {
        (d.handler)(cpu, insn)
    };
    match result {
        Ok(()) => {
            cpu.s.rip = cpu.next_rip;
            cpu.stats.instructions += 1;
        }
        Err(e) => {
            cpu.stats.instructions += 1;
            cpu.raise(e);
            if let Some(e) = cpu.triple_fault {
                return Step::Exit(RunExit::TripleFault(e));
            }
            return Step::Leave;
        }
    }
    if let Some(e) = cpu.triple_fault {
        return Step::Exit(RunExit::TripleFault(e));
    }
    if cpu.step.halt {
        cpu.s.halted = true;
    }
    if single_step && !cpu.step.halt && !cpu.step.delivered && !cpu.step.ss_load {
        // #DB trap after the instruction (DR6.BS).
        cpu.s.dr[6] |= 1 << 14;
        cpu.deliver_trap(crane86_x86::Vector::Debug as u8);
        if let Some(e) = cpu.triple_fault {
            return Step::Exit(RunExit::TripleFault(e));
        }
        return Step::Leave;
    }
    if cpu.step.action {
        while let Some(a) = cpu.plat.take_action() {
            match a {
                PlatformAction::SetA20(on) => {
                    if cpu.s.a20 != on {
                        cpu.s.a20 = on;
                        cpu.tlb.flush_all();
                    }
                }
                other => return Step::Exit(RunExit::Action(other)),
            }
        }
        return Step::Leave;
    }
    if cpu.step.shadow {
        cpu.s.interrupt_shadow = true;
        return Step::Leave;
    }
    if cpu.step.halt || cpu.step.end_block || cpu.s.rip != next {
        return Step::Leave;
    }
    Step::Next
}

/// The linear address of CS:RIP in code of size `bits` (#GP past the CS limit).
#[inline]
fn fetch_linear(s: &CpuState, bits: u32) -> Result<u64, Exception> {
    let rip = s.rip;
    if bits == 64 {
        return Ok(rip);
    }
    let cs = &s.seg[SegReg::Cs as usize];
    if rip > u64::from(cs.limit) {
        return Err(Exception::gp0());
    }
    Ok(cs.base.wrapping_add(rip) & 0xFFFF_FFFF)
}

/// The cache key of the block at CS:RIP when the TLB already holds the fetch translation of
/// its page (`None` otherwise, and past the CS limit: the run loop's lookup handles those).
/// This is the key [`BlockCache`] lookups use, so a block with this key is the block the
/// run loop would run next.
#[inline]
pub fn cached_block_key(cpu: &mut Cpu) -> Option<BlockKey> {
    let bits = cpu.s.code_bits();
    let lin = fetch_linear(cpu.s, bits).ok()?;
    cpu.tlb.stats.accesses += 1;
    let e = cpu.tlb.entry(cpu.s.cpl() == 3, lin);
    (e.fetch_tag == lin & PAGE_MASK).then_some(BlockKey {
        paddr: e.paddr_page | (lin & 0xFFF),
        rip: cpu.s.rip,
        bits,
    })
}

/// Find or decode the block at CS:RIP.
fn lookup_block(cpu: &mut Cpu, blocks: &mut BlockCache) -> Result<Rc<Block>, Exception> {
    let bits = cpu.s.code_bits();
    let rip = cpu.s.rip;
    let lin = fetch_linear(cpu.s, bits)?;
    let user = cpu.s.cpl() == 3;
    // Fast path: the TLB already holds an executable RAM/ROM translation of this page.
    cpu.tlb.stats.accesses += 1;
    let e = cpu.tlb.entry(user, lin);
    let pa = if e.fetch_tag == lin & PAGE_MASK {
        e.paddr_page | (lin & 0xFFF)
    } else {
        cpu.translate(lin, Access::Fetch, user)?
    };
    let key = BlockKey {
        paddr: pa,
        rip,
        bits,
    };
    if let Some(b) = blocks.get(&key) {
        if b.second_page.is_none() || b.second_page == second_page_now(cpu, lin, bits, user) {
            cpu.stats.block_cache_hits += 1;
            return Ok(b);
        }
    }
    cpu.stats.blocks_decoded += 1;
    if let PhysTarget::Ram(off) | PhysTarget::Rom(off) = cpu.mem.target(pa) {
        let avail = (0x1000 - (pa & 0xFFF)) as usize;
        // SAFETY: `off` is the backing offset of `pa`; the `avail` bytes up to the end of the
        // page lie within the same backing page. The slice is dropped before any guest write.
        let bytes = unsafe { std::slice::from_raw_parts(cpu.mem.host_ptr(off), avail) };
        let insns = decode_block(bytes, rip, bits);
        if !insns.is_empty() {
            let is_ram = matches!(cpu.mem.target(pa), PhysTarget::Ram(_));
            let block = Rc::new(Block::new(insns));
            // Entries filled while the page is code get the code tag at their fill; those
            // filled before it became code get it here.
            if is_ram && cpu.mem.mark_code_page(off) {
                cpu.tlb.protect_code_page(pa & PAGE_MASK);
            }
            blocks.insert(key, block.clone());
            return Ok(block);
        }
    }
    if let Some(block) = decode_spanning(cpu, pa, lin, bits, user) {
        blocks.insert(key, block.clone());
        return Ok(block);
    }
    // Code runs from device memory, or its first instruction crosses into a page that cannot
    // be fetched from: fetch up to 15 bytes through the TLB and decode one uncached
    // instruction (a fault on bytes it needs is raised).
    let mut buf = [0u8; 15];
    let mut n = 0;
    while n < 15 {
        let l = if bits == 64 {
            lin.wrapping_add(n as u64)
        } else {
            lin.wrapping_add(n as u64) & 0xFFFF_FFFF
        };
        match cpu.translate(l, Access::Fetch, user) {
            Ok(p) => buf[n] = cpu.phys_read(p, 1) as u8,
            Err(e) => {
                // Only a fault on bytes the instruction actually needs matters.
                let insns = decode_block(&buf[..n], rip, bits);
                if insns.is_empty() {
                    return Err(e);
                }
                return Ok(Rc::new(Block::new(insns)));
            }
        }
        n += 1;
    }
    let mut insns = decode_block(&buf, rip, bits);
    insns.truncate(1);
    if insns.is_empty() {
        insns.push(DecodedInsn {
            insn: iced_x86::Instruction::default(),
            handler: crate::exec::invalid_opcode,
        });
    }
    Ok(Rc::new(Block::new(insns)))
}
