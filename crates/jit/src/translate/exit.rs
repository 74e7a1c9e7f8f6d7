//! How a translated block ends: [`Translator::chain_direct`] (every exit RIP known) and
//! [`Translator::chain_exit`] (RIP known only at run time) enter the successor block
//! itself (a tail call through the block's links), and a block whose last instruction
//! branches back to its own start loops inside its function ([`Translator::loop_header`],
//! [`Translator::back_edge`]) with the guest registers staying in host registers.

use super::*;
use crane86_interp::block::MAX_BLOCK_INSNS;
use iced_x86::InstructionInfoFactory;

/// The loop head of a self-looping block and what the translator assumes there.
pub(super) struct LoopHeader {
    pub(super) block: ir::Block,
    /// The block's start (the branch target).
    start: u64,
    /// GPRs the block uses: cached (and treated as dirty) at the head.
    used: [bool; 16],
}

/// The immediates of a patchable direct-successor entry (see [`Translator::chain_direct`]
/// and `ChainSite`), each emitted with a placeholder value ([`ChainPlaceholders`]), which
/// the backend finds in the finished code ([`ChainPlaceholders::sites`]). The link's epoch is
/// compared in two 32-bit halves, each an immediate of the compare instruction itself (a
/// 64-bit one would be a load from the constant pool); the high half's placeholder is far
/// above any epoch the cache reaches, so an entry whose immediates were never written is
/// never taken. The physical address (64 bits, in the constant pool) and the code address
/// (a `mov r64, imm64`) are plain 64-bit constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainImmediate {
    EpochLow = 1,
    EpochHigh = 2,
    Paddr = 3,
    Target = 4,
}

impl ChainImmediate {
    /// Every kind, in the order of their values.
    const ALL: [ChainImmediate; 4] = [
        ChainImmediate::EpochLow,
        ChainImmediate::EpochHigh,
        ChainImmediate::Paddr,
        ChainImmediate::Target,
    ];

    /// Its position in [`ChainImmediate::ALL`].
    fn index(self) -> usize {
        self as usize - 1
    }

    /// A 64-bit placeholder (the others are 32 bits).
    fn wide(self) -> bool {
        matches!(self, ChainImmediate::Paddr | ChainImmediate::Target)
    }
}

/// The placeholders of one translation: derived from a tag the backend picks at random
/// for each ([`ChainPlaceholders::pick`]), so guest code cannot plant one, and checked
/// against the guest's own constants, so that Cranelift never shares a placeholder's
/// register with a guest value (a patch would change that value too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainPlaceholders {
    tag: u64,
}

impl ChainPlaceholders {
    /// Placeholders from `next_random` (called again while they collide with a constant of
    /// `insns`: an immediate, a displacement or a branch target, also truncated to 32 bits).
    pub fn pick(insns: &[Instruction], mut next_random: impl FnMut() -> u64) -> Self {
        loop {
            let p = ChainPlaceholders { tag: next_random() };
            let all: Vec<u64> = (0..BLOCK_LINKS)
                .flat_map(|slot| ChainImmediate::ALL.map(|kind| p.value(slot, kind)))
                .collect();
            let collides = insns.iter().flat_map(guest_constants).any(|c| {
                all.iter()
                    .any(|&v| v == c || (v >> 32 == 0 && v == c & 0xFFFF_FFFF))
            });
            if !collides {
                return p;
            }
        }
    }

    /// The placeholder of immediate `kind` of link slot `slot`: 32 bits for the epoch's
    /// halves (the high one with bit 31 set: no epoch gets there), 64 with a non-canonical
    /// top (no physical or code address) for the others.
    pub fn value(&self, slot: usize, kind: ChainImmediate) -> u64 {
        let mixed = splitmix64(self.tag ^ splitmix64((slot as u64) << 3 | kind as u64));
        match kind {
            ChainImmediate::EpochLow => mixed & 0xFFFF_FFFF,
            ChainImmediate::EpochHigh => (mixed & 0x7FFF_FFFF) | 0x8000_0000,
            ChainImmediate::Paddr | ChainImmediate::Target => {
                0xC86A_0000_0000_0000 | (mixed & 0xFFFF_FFFF_FFFF)
            }
        }
    }

    #[cfg(test)]
    fn bytes(&self, slot: usize, kind: ChainImmediate) -> Vec<u8> {
        let v = self.value(slot, kind);
        match kind {
            ChainImmediate::EpochLow | ChainImmediate::EpochHigh => {
                (v as u32).to_le_bytes().to_vec()
            }
            ChainImmediate::Paddr | ChainImmediate::Target => v.to_le_bytes().to_vec(),
        }
    }

    /// The patchable entries of finished x86-64 code `code` translated with these
    /// placeholders: where each placeholder's bytes are. A placeholder found more than once
    /// leaves its slot without a site, so that entry always returns to the run loop.
    ///
    /// One pass over the code, comparing the 32 bits at each offset with every
    /// placeholder's low half (the 64-bit ones then in full): a scan per placeholder (16 of
    /// them, each a `memcmp` per offset) was 8% of the compile thread's time, this 2%
    /// before the first-byte filter.
    pub fn sites(&self, code: &[u8]) -> [ChainSite; BLOCK_LINKS] {
        #[derive(Clone, Copy, PartialEq)]
        enum Found {
            Nowhere,
            At(u32),
            Twice,
        }
        let wanted: Vec<(u64, bool)> = (0..BLOCK_LINKS)
            .flat_map(|slot| ChainImmediate::ALL.map(|kind| (self.value(slot, kind), kind.wide())))
            .collect();
        let mut found = vec![Found::Nowhere; wanted.len()];
        // Most offsets are rejected on their first byte.
        let mut starts = [false; 256];
        for &(value, _) in &wanted {
            starts[value as u8 as usize] = true;
        }
        for at in 0..code.len().saturating_sub(3) {
            if !starts[code[at] as usize] {
                continue;
            }
            let word = u32::from_le_bytes(code[at..at + 4].try_into().expect("4 bytes"));
            for (k, &(value, wide)) in wanted.iter().enumerate() {
                if word != value as u32 {
                    continue;
                }
                let whole = !wide
                    || code.get(at..at + 8).is_some_and(|b| {
                        u64::from_le_bytes(b.try_into().expect("8 bytes")) == value
                    });
                if whole {
                    found[k] = match found[k] {
                        Found::Nowhere => Found::At(at as u32),
                        _ => Found::Twice,
                    };
                }
            }
        }
        let once = |slot: usize, kind: ChainImmediate| match found
            [slot * ChainImmediate::ALL.len() + kind.index()]
        {
            Found::At(offset) => Some(offset),
            Found::Nowhere | Found::Twice => None,
        };
        let mut sites = [ChainSite::default(); BLOCK_LINKS];
        for (slot, site) in sites.iter_mut().enumerate() {
            let (Some(low), Some(high), Some(target)) = (
                once(slot, ChainImmediate::EpochLow),
                once(slot, ChainImmediate::EpochHigh),
                once(slot, ChainImmediate::Target),
            ) else {
                continue;
            };
            *site = ChainSite {
                epoch: [low, high],
                paddr: once(slot, ChainImmediate::Paddr).unwrap_or(0),
                target,
            };
        }
        sites
    }
}

/// SplitMix64's finalizer: every input bit reaches every output bit.
fn splitmix64(x: u64) -> u64 {
    let x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The constants an instruction brings into its translation.
fn guest_constants(i: &Instruction) -> impl Iterator<Item = u64> + '_ {
    let immediates = (0..i.op_count()).filter_map(move |k| match i.op_kind(k) {
        OpKind::Immediate8
        | OpKind::Immediate8_2nd
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => Some(i.immediate(k)),
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
            Some(i.near_branch_target())
        }
        _ => None,
    });
    immediates.chain([i.memory_displacement64(), i.next_ip()])
}

impl Translator<'_, '_> {
    /// The block's exit with native chaining: look up the successor the way the run loop
    /// would (the block key of the RIP now, through the TLB's fetch entry, compared with the
    /// block's links of the current epoch), check that it fits the budget, and tail-call its
    /// native code. Anything else returns to the run loop, which does the same with its slow
    /// paths. The budget check also returns when the step helper asked for the run loop (it
    /// zeroes [`BlockCtx::limit`]), so whatever the lookup found then is never entered.
    /// (64-bit code only: there the linear address is RIP.) A successor in the block's own
    /// page needs no TLB lookup: that page still maps where it did when the block was
    /// entered (only a helper-run instruction could change that, and it stops the chain).
    /// `rip` is the RIP after the block (stored only if the exit returns, see
    /// [`Self::return_block`]); `targets`, when known, every value it can have (then the
    /// page test happens at translation time).
    ///
    /// A link's code size needs no test: links join blocks of the same size only (see
    /// `link` in the compiler), and this block is 64-bit code. When every target is in the
    /// block's own page, neither does the link's physical address: a link to the own page
    /// keeps the block's own physical page (`link` makes no other), and that is where the
    /// own page still maps.
    pub(super) fn chain_exit(
        &mut self,
        chain: &Chain,
        shape: &NativeShape,
        rip: Value,
        targets: Option<&[u64]>,
    ) {
        if targets.is_none() && self.shared_indirect_exit {
            self.shared_exit(chain, shape, rip);
            return;
        }
        let i64t = types::I64;
        let ret = self.return_block();
        let low = self.b.ins().band_imm_u(rip, 0xFFF);
        let page = self.b.ins().band_imm_s(rip, !0xFFFi64);
        let own_page = chain.rip & !0xFFF;
        let mapped = self.b.create_block();
        self.b.append_block_param(mapped, i64t);
        let own_paddr = self.b.ins().iconst(i64t, (chain.paddr & !0xFFF) as i64);
        let own_paddr = self.b.ins().bor(own_paddr, low);
        let all_own = targets.is_some_and(|t| t.iter().all(|&r| r & !0xFFF == own_page));
        if all_own {
            self.b.ins().jump(mapped, &[own_paddr.into()]);
        } else {
            let own = self.b.ins().icmp_imm_u(IntCC::Equal, page, own_page as i64);
            let lookup_tlb = self.b.create_block();
            self.b
                .ins()
                .brif(own, mapped, &[own_paddr.into()], lookup_tlb, &[]);
            self.b.seal_block(lookup_tlb);
            self.b.switch_to_block(lookup_tlb);
            self.tlb_successor(rip, page, low, mapped, ret);
        }
        self.b.seal_block(mapped);
        self.b.switch_to_block(mapped);
        let paddr = self.b.block_params(mapped)[0];
        let epoch = self
            .b
            .ins()
            .load(i64t, fixed(), self.ctx, offset_of!(BlockCtx, epoch) as i32);
        let enter = self.link_entry();
        // The slots that can hold this exit's successor: its known targets' (a LOOP, say,
        // which the helper runs), else the most recent successors'.
        let slots: Vec<usize> = match targets {
            Some(t) => t.iter().filter_map(|&rip| slot_of(shape, rip)).collect(),
            None => (0..BLOCK_LINKS)
                .filter(|&k| shape.slots[k] == LinkSlot::Recent)
                .collect(),
        };
        for link in slots.into_iter().map(|k| chain.link(k)) {
            let at = self.b.ins().iconst(self.ptr, link as i64);
            let next = self.b.create_block();
            let mut checks = vec![
                (offset_of!(Link, key.rip), rip),
                (offset_of!(Link, epoch), epoch),
            ];
            if !all_own {
                checks.push((offset_of!(Link, key.paddr), paddr));
            }
            self.probe_link(at, &checks, (enter, &[at.into(), rip.into()]), (next, &[]));
            self.b.seal_block(next);
            self.b.switch_to_block(next);
        }
        // No link: the vCPU's jump table (`JumpTable`, in the compiler).
        let table = self.ctx_ptr(offset_of!(BlockCtx, jump_table));
        let high = self.b.ins().ushr_imm_u(rip, 12);
        let hash = self.b.ins().bxor(rip, high);
        let index = self
            .b
            .ins()
            .band_imm_u(hash, (JUMP_TABLE_ENTRIES - 1) as i64);
        let offset = self
            .b
            .ins()
            .imul_imm_u(index, std::mem::size_of::<Link>() as i64);
        let at = self.b.ins().iadd(table, offset);
        let checks = [
            (offset_of!(Link, key.rip), rip),
            (offset_of!(Link, epoch), epoch),
            (offset_of!(Link, key.paddr), paddr),
        ];
        self.probe_link(
            at,
            &checks,
            (enter, &[at.into(), rip.into()]),
            (ret, &[rip.into()]),
        );
        self.fill_link_entry(enter, ret);
        self.fill_return_block(ret);
    }

    /// [`Self::chain_exit`] of an exit whose RIP is known only at run time through the
    /// module's shared lookup ([`super::indirect_exit`]): a tail call with the block's two
    /// most-recent-successor link cells.
    fn shared_exit(&mut self, chain: &Chain, shape: &NativeShape, rip: Value) {
        let mut slots = (0..BLOCK_LINKS)
            .filter(|&k| shape.slots[k] == LinkSlot::Recent)
            .map(|k| chain.link(k));
        let mut slot = || {
            let at = slots
                .next()
                .unwrap_or_else(|| super::indirect_exit::NO_LINK.address());
            self.b.ins().iconst(self.ptr, at as i64)
        };
        let (slot0, slot1) = (slot(), slot());
        let block = self.b.ins().iconst(self.ptr, chain.block as i64);
        let stub = self.b.ins().iconst(
            self.ptr,
            self.helpers.indirect_exit[usize::from(self.counters)] as i64,
        );
        let sig = self
            .b
            .import_signature(super::indirect_exit::signature(self.ptr));
        self.b
            .ins()
            .return_call_indirect(sig, stub, &[self.ctx, rip, block, slot0, slot1]);
    }

    /// The block's exit when every RIP it can leave with is known (`targets`: one, or for an
    /// inline Jcc the taken target and the fall-through, picked by `taken`): branch on the
    /// condition itself, and with the constant RIP of the path enter the successor
    /// through the link of that target if it fits the budget (which fails once the step
    /// helper asked for the run loop, see [`Self::chain_exit`]). Links of such blocks are
    /// kept per target (slot k holds only a link to target k, see `link` in the compiler),
    /// so a link needs no RIP compare: the epoch, and for a target in another page the
    /// physical address.
    /// Everything else returns to the run loop, as in [`Self::chain_exit`].
    pub(super) fn chain_direct(
        &mut self,
        chain: &Chain,
        shape: &NativeShape,
        targets: &[u64],
        taken: Option<Value>,
    ) {
        let ret = self.return_block();
        let paths: Vec<ir::Block> = targets.iter().map(|_| self.b.create_block()).collect();
        let own_page = chain.rip & !0xFFF;
        let epoch = self.b.ins().load(
            types::I64,
            fixed(),
            self.ctx,
            offset_of!(BlockCtx, epoch) as i32,
        );
        // (Patched entries need no shared link entry.)
        let enter = (!self.patch_chains).then(|| self.link_entry());
        match (taken, paths.as_slice()) {
            (Some(c), [t, f]) => _ = self.b.ins().brif(c, *t, &[], *f, &[]),
            (None, [only]) => _ = self.b.ins().jump(*only, &[]),
            _ => unreachable!("one target, or a condition and two"),
        }
        for (&target, &path) in targets.iter().zip(&paths) {
            self.b.seal_block(path);
            self.b.switch_to_block(path);
            let rip = self.b.ins().iconst(types::I64, target as i64);
            // The slot `link` uses for this target (its first, see `native_shape`).
            let slot = slot_of(shape, target).expect("every direct target has a slot");
            let Some(enter) = enter else {
                self.patched_entry(slot, target & !0xFFF == own_page, target, rip, ret);
                continue;
            };
            let at = self.b.ins().iconst(self.ptr, chain.link(slot) as i64);
            if target & !0xFFF == own_page {
                let checks = [(offset_of!(Link, epoch), epoch)];
                self.probe_link(
                    at,
                    &checks,
                    (enter, &[at.into(), rip.into()]),
                    (ret, &[rip.into()]),
                );
                continue;
            }
            let live = self.b.create_block();
            let checks = [(offset_of!(Link, epoch), epoch)];
            self.probe_link(at, &checks, (live, &[]), (ret, &[rip.into()]));
            self.b.seal_block(live);
            self.b.switch_to_block(live);
            let paddr = self.target_paddr(target, rip, ret);
            let checks = [(offset_of!(Link, key.paddr), paddr)];
            self.probe_link(
                at,
                &checks,
                (enter, &[at.into(), rip.into()]),
                (ret, &[rip.into()]),
            );
        }
        if let Some(enter) = enter {
            self.fill_link_entry(enter, ret);
        }
        self.fill_return_block(ret);
    }

    /// One path of [`Self::chain_direct`] through a patchable entry (see [`ChainImmediate`]):
    /// if the current epoch is the one the compiler wrote into the entry (so is the
    /// successor's physical page, for a `target` in another page, where it maps now) and a
    /// block of any length fits the budget, tail-call the code address written into it.
    /// Nothing is loaded but the epoch, the budget and (for another page) the TLB entry: no
    /// link cell, no block. Everything else goes to `ret` with the target RIP.
    fn patched_entry(
        &mut self,
        slot: usize,
        own_page: bool,
        target: u64,
        rip: Value,
        ret: ir::Block,
    ) {
        let i64t = types::I64;
        let placeholders = self.chain_placeholders;
        let placeholder = |kind| placeholders.value(slot, kind) as i64;
        let go = self.b.create_block();
        let high_too = self.b.create_block();
        let at = offset_of!(BlockCtx, epoch) as i32;
        // (Little-endian: the low half first.)
        let low = self.b.ins().load(types::I32, fixed(), self.ctx, at);
        let same =
            self.b
                .ins()
                .icmp_imm_s(IntCC::Equal, low, placeholder(ChainImmediate::EpochLow));
        self.b.ins().brif(same, high_too, &[], ret, &[rip.into()]);
        self.b.seal_block(high_too);
        self.b.switch_to_block(high_too);
        let high = self.b.ins().load(types::I32, fixed(), self.ctx, at + 4);
        let live =
            self.b
                .ins()
                .icmp_imm_s(IntCC::Equal, high, placeholder(ChainImmediate::EpochHigh));
        if own_page {
            self.b.ins().brif(live, go, &[], ret, &[rip.into()]);
        } else {
            let mapped_now = self.b.create_block();
            self.b.ins().brif(live, mapped_now, &[], ret, &[rip.into()]);
            self.b.seal_block(mapped_now);
            self.b.switch_to_block(mapped_now);
            let paddr = self.target_paddr(target, rip, ret);
            let linked = self
                .b
                .ins()
                .iconst(i64t, placeholder(ChainImmediate::Paddr));
            let same = self.b.ins().icmp(IntCC::Equal, paddr, linked);
            self.b.ins().brif(same, go, &[], ret, &[rip.into()]);
        }
        self.b.seal_block(go);
        self.b.switch_to_block(go);
        let longest = self.b.ins().iconst(i64t, MAX_BLOCK_INSNS as i64);
        let fits = self.fits_budget(longest);
        let enter = self.b.create_block();
        self.b.ins().brif(fits, enter, &[], ret, &[rip.into()]);
        self.b.seal_block(enter);
        self.b.switch_to_block(enter);
        self.count_native_entry();
        let code = self
            .b
            .ins()
            .iconst(self.ptr, placeholder(ChainImmediate::Target));
        let tail_sig = self.b.import_signature(block_signature(self.ptr));
        self.b
            .ins()
            .return_call_indirect(tail_sig, code, &[self.ctx]);
    }

    /// The side exit of a conditional branch inside the translation (one the interpreter's
    /// blocks end with, which the translation goes on past, see `continues_at`): where
    /// `taken` is `side.when_taken`, leave to `side.to` with everything written back,
    /// entering it through its link like the end of a block ([`Self::chain_direct`]);
    /// otherwise go on with the registers still in their variables.
    pub(super) fn side_exit(
        &mut self,
        chain: Option<&Chain>,
        shape: &NativeShape,
        side: SideExit,
        taken: Value,
    ) {
        let leave = self.b.create_block();
        let stay = self.b.create_block();
        if side.when_taken {
            self.b.ins().brif(taken, leave, &[], stay, &[]);
        } else {
            self.b.ins().brif(taken, stay, &[], leave, &[]);
        }
        self.b.seal_block(leave);
        self.b.seal_block(stay);
        self.b.switch_to_block(leave);
        let saved = self.tracked;
        let target = side.to;
        match chain {
            Some(chain) => {
                self.tracked.rip = PendingRip::Stored;
                self.sync();
                self.chain_direct(chain, shape, &[target], None);
            }
            None => {
                self.tracked.rip = PendingRip::Const(target);
                self.sync();
                let exit = self.exit;
                self.b.ins().jump(exit, &[]);
            }
        }
        self.tracked = saved;
        self.b.switch_to_block(stay);
    }

    /// Compare the fields of the link at `at` with `checks` (field offset, expected value),
    /// one load and branch at a time (each loaded value dies at once, so the probe holds few
    /// host registers), most selective first: all equal goes to `hit`, the first
    /// difference to `miss` (each a block with its arguments).
    fn probe_link(
        &mut self,
        at: Value,
        checks: &[(usize, Value)],
        (hit, hit_args): (ir::Block, &[ir::BlockArg]),
        (miss, miss_args): (ir::Block, &[ir::BlockArg]),
    ) {
        for (k, &(offset, expected)) in checks.iter().enumerate() {
            let field = self.b.ins().load(types::I64, trusted(), at, offset as i32);
            let same = self.b.ins().icmp(IntCC::Equal, field, expected);
            if k + 1 == checks.len() {
                self.b.ins().brif(same, hit, hit_args, miss, miss_args);
            } else {
                let next = self.b.create_block();
                self.b.ins().brif(same, next, &[], miss, miss_args);
                self.b.seal_block(next);
                self.b.switch_to_block(next);
            }
        }
    }

    /// The block an exit returns to the run loop through, with the RIP to leave in
    /// `CpuState` (its one parameter): chained blocks do not store RIP when they enter a
    /// successor (the successor starts with its own RIP pending, see `Translator::block`),
    /// only when they return.
    fn return_block(&mut self) -> ir::Block {
        let ret = self.slow_block();
        self.b.append_block_param(ret, types::I64);
        ret
    }

    /// The body of [`Self::return_block`]'s block: store RIP and the running block, return.
    fn fill_return_block(&mut self, ret: ir::Block) {
        self.b.seal_block(ret);
        self.b.switch_to_block(ret);
        let rip = self.b.block_params(ret)[0];
        self.b.ins().store(trusted(), rip, self.state, RIP);
        self.store_own_block();
        self.b.ins().return_(&[]);
    }

    /// The block every usable link of an exit branches to with the link's address and the
    /// RIP (its parameters; the RIP for the return when the budget does not fit);
    /// [`Self::fill_link_entry`] emits it once all branches are in. One per exit, so the
    /// entry sequence is emitted once.
    fn link_entry(&mut self) -> ir::Block {
        let enter = self.b.create_block();
        self.b.append_block_param(enter, self.ptr);
        self.b.append_block_param(enter, types::I64);
        enter
    }

    /// The body of [`Self::link_entry`]'s block `enter`: if a block of any length fits the
    /// budget (else to `ret`: the run loop's chain, which knows the target's length, may
    /// still enter it), tail-call the link's code (which stores itself as the running block
    /// where Rust needs to know, see [`Translator::store_own_block`]). Checking for the
    /// longest block rather than the target's length saves a load on every chained entry.
    fn fill_link_entry(&mut self, enter: ir::Block, ret: ir::Block) {
        self.b.seal_block(enter);
        self.b.switch_to_block(enter);
        let (at, rip) = (self.b.block_params(enter)[0], self.b.block_params(enter)[1]);
        let longest = self.b.ins().iconst(types::I64, MAX_BLOCK_INSNS as i64);
        let fits = self.fits_budget(longest);
        let go = self.b.create_block();
        self.b.ins().brif(fits, go, &[], ret, &[rip.into()]);
        self.b.seal_block(go);
        self.b.switch_to_block(go);
        // A link of a live epoch targets a block with code (`link` makes links only to
        // blocks with code, and code is replaced, never removed, within an epoch); it is read
        // from the target so that a re-optimized translation is entered from then on.
        let target = self
            .b
            .ins()
            .load(self.ptr, trusted(), at, offset_of!(Link, target) as i32);
        let code = self.b.ins().load(
            self.ptr,
            trusted(),
            target,
            offset_of!(Block, native) as i32,
        );
        self.count_native_entry();
        let tail_sig = self.b.import_signature(block_signature(self.ptr));
        self.b
            .ins()
            .return_call_indirect(tail_sig, code, &[self.ctx]);
    }

    /// The physical address of direct target `target` (RIP value `rip`) in another page,
    /// through the TLB's fetch entry ([`Self::tlb_successor`]; a miss goes to `ret`).
    fn target_paddr(&mut self, target: u64, rip: Value, ret: ir::Block) -> Value {
        let page = self.b.ins().iconst(types::I64, (target & !0xFFF) as i64);
        let low = self.b.ins().iconst(types::I64, (target & 0xFFF) as i64);
        let mapped = self.b.create_block();
        self.b.append_block_param(mapped, types::I64);
        self.tlb_successor(rip, page, low, mapped, ret);
        self.b.seal_block(mapped);
        self.b.switch_to_block(mapped);
        self.b.block_params(mapped)[0]
    }

    /// The physical address of a successor RIP in another page, through the TLB's fetch
    /// entry: to `mapped` with it, or to `miss` with `rip` (a [`Self::return_block`]: the
    /// run loop walks the page tables).
    fn tlb_successor(
        &mut self,
        rip: Value,
        page: Value,
        low: Value,
        mapped: ir::Block,
        miss: ir::Block,
    ) {
        let i64t = types::I64;
        let slot_off = self.tlb_slot_offset(rip);
        let tlb = self.ctx_ptr(offset_of!(BlockCtx, tlb));
        let entry = self.b.ins().iadd(tlb, slot_off);
        let tag = self.b.ins().load(
            i64t,
            trusted(),
            entry,
            offset_of!(TlbEntry, fetch_tag) as i32,
        );
        let hit = self.b.ins().icmp(IntCC::Equal, tag, page);
        let tlb_mapped = self.b.create_block();
        self.b.ins().brif(hit, tlb_mapped, &[], miss, &[rip.into()]);
        self.b.seal_block(tlb_mapped);
        self.b.switch_to_block(tlb_mapped);
        let paddr_page = self.b.ins().load(
            i64t,
            trusted(),
            entry,
            offset_of!(TlbEntry, paddr_page) as i32,
        );
        let tlb_paddr = self.b.ins().bor(paddr_page, low);
        self.b.ins().jump(mapped, &[tlb_paddr.into()]);
    }

    /// For a block whose last instruction is a direct JMP to its start, or an inline Jcc
    /// with its start as the target or the fall-through (a trace around a loop, see
    /// `superblock` in the compiler): load every GPR the block uses, and open the loop head
    /// that [`Self::back_edge`] jumps back to. At the head those registers are cached and
    /// counted as dirty (the first pass only stores back values equal to memory), RIP is
    /// the block's start, and the flags are in `CpuState`.
    pub(super) fn loop_header(&mut self, insns: &[Instruction]) -> Option<LoopHeader> {
        let (first, last) = (insns.first()?, insns.last()?);
        let start = first.ip();
        let loops = if last.mnemonic() == Mnemonic::Jmp {
            near_target(last) == Some(start)
        } else {
            inline_jcc_target(last).is_some_and(|t| t == start || last.next_ip() == start)
        };
        if !loops {
            return None;
        }
        let mut used = [false; 16];
        let mut info = InstructionInfoFactory::new();
        for i in insns {
            for r in info.info(i).used_registers() {
                if let Some(k) = gpr_index(r.register().full_register()) {
                    used[k] = true;
                }
            }
        }
        for (k, &u) in used.iter().enumerate() {
            if u {
                self.gpr(k);
                self.tracked.dirty[k] = true;
            }
        }
        // Nothing has retired at the block's start, and each pass flushes its counts at the
        // back edge: none are pending at the head.
        debug_assert_eq!((self.tracked.retired, self.tracked.tlb_hits), (0, 0));
        self.tracked.rip = PendingRip::Const(start);
        let block = self.b.create_block();
        self.b.ins().jump(block, &[]);
        self.b.switch_to_block(block);
        Some(LoopHeader { block, start, used })
    }

    /// After the block's last instruction (the inline branch that may go to its start):
    /// when RIP goes back and another pass fits the budget (so the step helper did not ask
    /// for the run loop), jump to the loop head with the registers still in their variables (the
    /// flags and the pass's counts are stored; RIP stays pending). Otherwise go on to the
    /// block's exit. `len` is the block's length in instructions.
    pub(super) fn back_edge(&mut self, h: &LoopHeader, len: usize) {
        let saved = self.tracked;
        let rip = self
            .pending_rip()
            .expect("the branch back leaves RIP pending");
        let taken = self.b.ins().icmp_imm_u(IntCC::Equal, rip, h.start as i64);
        let check = self.b.create_block();
        let leave = self.b.create_block();
        self.b.ins().brif(taken, check, &[], leave, &[]);
        self.b.seal_block(check);
        self.b.switch_to_block(check);
        // The pass's retired count is still pending here.
        let more = self
            .b
            .ins()
            .iconst(types::I64, i64::from(self.tracked.retired) + len as i64);
        let fits = self.fits_budget(more);
        let back = self.b.create_block();
        self.b.ins().brif(fits, back, &[], leave, &[]);
        self.b.seal_block(back);
        self.b.seal_block(leave);
        self.b.switch_to_block(back);
        for (k, &u) in h.used.iter().enumerate() {
            if u {
                self.gpr(k);
            }
        }
        self.flush_flags();
        self.flush_counts();
        self.tracked.rip = PendingRip::Const(h.start);
        self.count_native_entry();
        self.b.ins().jump(h.block, &[]);
        self.b.seal_block(h.block);
        self.b.switch_to_block(leave);
        self.tracked = saved;
    }

    /// Whether `more` instructions (an I64) after the retired count in memory stay within
    /// the slice budget ([`BlockCtx::limit`]; 0 once the step helper asked for the run
    /// loop, so not a `fixed` load).
    fn fits_budget(&mut self, more: Value) -> Value {
        let retired = self.b.ins().load(
            types::I64,
            trusted(),
            self.ctx,
            offset_of!(BlockCtx, retired) as i32,
        );
        let after = self.b.ins().iadd(retired, more);
        let limit = self.b.ins().load(
            types::I64,
            trusted(),
            self.ctx,
            offset_of!(BlockCtx, limit) as i32,
        );
        self.b
            .ins()
            .icmp(IntCC::UnsignedLessThanOrEqual, after, limit)
    }

    /// Count one block entered by native code itself ([`BlockCtx::chained`]).
    fn count_native_entry(&mut self) {
        if !self.counters {
            return;
        }
        let at = offset_of!(BlockCtx, chained) as i32;
        let n = self.b.ins().load(types::I64, trusted(), self.ctx, at);
        let n = self.b.ins().iadd_imm_s(n, 1);
        self.b.ins().store(trusted(), n, self.ctx, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::Code;

    const KINDS: [ChainImmediate; 4] = [
        ChainImmediate::EpochLow,
        ChainImmediate::EpochHigh,
        ChainImmediate::Paddr,
        ChainImmediate::Target,
    ];

    #[test]
    fn placeholders_avoid_the_guest_constants() {
        let planted = ChainPlaceholders { tag: 7 };
        for kind in KINDS {
            let value = planted.value(2, kind);
            let mov = Instruction::with2(Code::Mov_r64_imm64, Register::RAX, value).unwrap();
            let mut tags = [7, 8].into_iter();
            let picked = ChainPlaceholders::pick(&[mov], || tags.next().unwrap());
            assert_eq!(
                picked.tag, 8,
                "{kind:?}: the tag whose placeholder the guest has"
            );
        }
        let add = Instruction::with2(Code::Add_rm32_imm32, Register::EAX, 5).unwrap();
        assert_eq!(ChainPlaceholders::pick(&[add], || 7).tag, 7);
    }

    #[test]
    fn placeholders_never_match_an_epoch_or_an_address() {
        for tag in 0..1000 {
            let p = ChainPlaceholders { tag };
            for slot in 0..BLOCK_LINKS {
                assert!(p.value(slot, ChainImmediate::EpochHigh) >= 1 << 31);
                assert!(p.value(slot, ChainImmediate::EpochLow) <= u32::MAX as u64);
                for kind in [ChainImmediate::Paddr, ChainImmediate::Target] {
                    assert_eq!(p.value(slot, kind) >> 48, 0xC86A, "non-canonical");
                }
            }
        }
    }

    #[test]
    fn sites_are_where_each_placeholder_is_once() {
        let p = ChainPlaceholders { tag: 42 };
        let mut code = vec![0x90u8; 64];
        let mut put = |at: usize, kind| {
            let bytes = p.bytes(1, kind);
            code[at..at + bytes.len()].copy_from_slice(&bytes);
        };
        put(3, ChainImmediate::EpochLow);
        put(11, ChainImmediate::EpochHigh);
        put(20, ChainImmediate::Target);
        let sites = p.sites(&code);
        assert_eq!(
            sites[1],
            ChainSite {
                epoch: [3, 11],
                paddr: 0,
                target: 20
            }
        );
        assert!(!sites[0].present() && !sites[2].present());
        // The target placeholder twice: no site (the entry is never patched).
        let target = p.bytes(1, ChainImmediate::Target);
        code[40..48].copy_from_slice(&target);
        assert!(!p.sites(&code)[1].present());
    }
}
