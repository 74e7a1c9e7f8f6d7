//! Inline memory access: the softmmu TLB fast path with the interpreter as the slow path
//! (loads, CMOVcc/BSF/BSR/BT/MUL/DIV of memory, stores, FNSTCW, load + ALU, ALU and
//! INC/DEC, XCHG/XADD, CMPXCHG, BTS/BTR/BTC, shifts by an immediate and SETcc of memory,
//! PUSH/POP/LEAVE (a run of PUSH r64 or of POP r64 as one access), CALL/RET, CALL [mem]
//! and JMP [mem], the SSE memory forms), JMP r64, and effective addresses.

use super::sse::{xmm_offset, SseMem};
use super::*;

impl Translator<'_, '_> {
    /// MOV to or from memory through the TLB: a hit on a RAM page (tag equal to the page,
    /// access inside it, canonical address) loads or stores through the host pointer; anything
    /// else syncs the state from before the instruction and lets the interpreter execute it
    /// (page walk, fault, MMIO, code-page write), after which both paths merge.
    pub(super) fn memory(&mut self, i: &Instruction, index: usize, kind: Inline) {
        let stack = matches!(
            kind,
            Inline::Push | Inline::Pop | Inline::Call | Inline::CallReg | Inline::Ret
        );
        let size = if stack {
            8
        } else {
            i.memory_size().size() as u32
        };
        let sse = match kind {
            Inline::SseMem(k) => Some(k),
            _ => None,
        };
        let ty = match (size, sse) {
            (1, _) => types::I8,
            (2, _) => types::I16,
            (4, _) => types::I32,
            (8, _) => types::I64,
            (_, Some(SseMem::Lanes(_, lanes))) => lanes,
            _ => types::I64X2,
        };
        let seg = i.memory_segment();
        // LEAVE pops from RBP: to the pop, that is the stack pointer it reads.
        let leave = i.mnemonic() == Mnemonic::Leave;
        let sp_reg = if leave { RBP } else { RSP };
        let rsp = if stack { Some(self.gpr(sp_reg)) } else { None };
        let mut lin = match (kind, rsp) {
            (Inline::Push | Inline::Call | Inline::CallReg, Some(sp)) => {
                self.b.ins().iadd_imm_s(sp, -8)
            }
            (Inline::Pop | Inline::Ret, Some(sp)) => sp,
            _ => self.lea_address(i),
        };
        if i.mnemonic() == Mnemonic::Bt && i.op_kind(1) == OpKind::Register {
            // A register bit offset is signed and may reach outside the operand: the
            // operand-sized word it falls in.
            let bits = 8 * size;
            let off = self.operand(i, 1, bits);
            let up = self.b.ins().ishl_imm_u(off, i64::from(64 - bits));
            let off = self.b.ins().sshr_imm_u(up, i64::from(64 - bits));
            let word = self
                .b
                .ins()
                .sshr_imm_u(off, i64::from(bits.trailing_zeros()));
            let delta = self.b.ins().imul_imm_s(word, i64::from(size));
            lin = self.b.ins().iadd(lin, delta);
        }
        if !stack && matches!(seg, Register::FS | Register::GS) {
            let k = if seg == Register::FS { 4 } else { 5 };
            let at =
                offset_of!(CpuState, seg) + k * size_of::<Segment>() + offset_of!(Segment, base);
            let base = self
                .b
                .ins()
                .load(types::I64, trusted(), self.state, at as i32);
            lin = self.b.ins().iadd(lin, base);
        }
        // Store data is read before the branch, so both paths see the same register state.
        let data = match kind {
            Inline::Store if i.mnemonic() == Mnemonic::Fnstcw => {
                let at = offset_of!(CpuState, fpu) + offset_of!(crane86_x86::FpuState, fcw);
                let cw = self
                    .b
                    .ins()
                    .load(types::I16, trusted(), self.state, at as i32);
                Some(self.b.ins().uextend(types::I64, cw))
            }
            Inline::Store if let Some(cc) = cc_number(i) => {
                // SETcc of memory: the condition as the byte.
                let c = self.cond_value(cc);
                Some(self.b.ins().uextend(types::I64, c))
            }
            Inline::Store => Some(self.operand(i, 1, 8 * size)),
            Inline::Rmw if i.op_count() == 2 => Some(self.operand(i, 1, 8 * size)),
            Inline::Push if i.code() == Code::Pushfq => Some(self.pushed_rflags()),
            Inline::Push => Some(self.operand(i, 0, 64)),
            Inline::Call | Inline::CallReg => {
                Some(self.b.ins().iconst(types::I64, i.next_ip() as i64))
            }
            Inline::SseMem(SseMem::Store { .. }) => {
                let at = xmm_offset(i.op_register(1));
                Some(self.b.ins().load(ty, trusted(), self.state, at))
            }
            _ => None,
        };
        // CALL r64: the target register, read before the store (CALL RSP pushes onto the
        // old RSP and jumps to it).
        let call_target = (kind == Inline::CallReg).then(|| {
            let (k, _) = gpr_part(i.op0_register()).expect("CALL r64 has a GPR");
            self.gpr(k)
        });
        // A LoadAlu or Rmw op leaves its own flags pending (XCHG sets none: the pending
        // flags stay the ones from before, which the slow path's sync stores and the
        // interpreter keeps).
        let sets_flags =
            matches!(kind, Inline::LoadAlu | Inline::Rmw) && i.mnemonic() != Mnemonic::Xchg;
        let before = self.begin_fast_path();
        let write = matches!(
            kind,
            Inline::Store
                | Inline::Rmw
                | Inline::Push
                | Inline::Call
                | Inline::CallReg
                | Inline::SseMem(SseMem::Store { .. })
        );
        // One compare decides: the tag of LIN's slot equals the page of the access's last
        // byte. That page is LIN's own page unless the access crosses into the next page,
        // whose slot differs, so a hit means "inside one mapped page". Tags are canonical
        // page addresses (or flagged, or invalid: never equal to a page), so a
        // non-canonical address misses too.
        let (hit, entry) = self.tlb_hit(lin, size, write);
        let mut ok = hit;
        if i.mnemonic() == Mnemonic::Fnstcw {
            // The x87 unit usable (CR0.EM and CR0.TS clear): else the interpreter's #NM.
            use crane86_x86::regs::cr0;
            let usable = self.cr0_clear(cr0::EM | cr0::TS);
            ok = self.b.ins().band(ok, usable);
        }
        if let Some(target) = call_target {
            // A non-canonical target is the interpreter's #GP, before anything is pushed.
            let canonical = self.canonical(target);
            ok = self.b.ins().band(ok, canonical);
        }
        if let Some(k) = sse {
            // SSE usable, and a 16-byte-aligned address where the form needs one: else the
            // interpreter raises #UD, #NM or #GP.
            let usable = self.sse_usable();
            ok = self.b.ins().band(ok, usable);
            if k.aligned() {
                let low = self.b.ins().band_imm_u(lin, 15);
                let aligned = self.b.ins().icmp_imm_u(IntCC::Equal, low, 0);
                ok = self.b.ins().band(ok, aligned);
            }
        }
        let (slow, merge) = self.begin_fast_block(ok);
        let host = self.host_address(entry, lin);
        // The RIP after the instruction (a RET's is the loaded return address).
        let mut next = None;
        match kind {
            Inline::SseMem(SseMem::Store { .. }) => {
                let v = data.expect("store data");
                self.b.ins().store(MemFlagsData::new(), v, host, 0);
            }
            Inline::SseMem(SseMem::Load { .. }) => {
                let v = self.b.ins().load(ty, MemFlagsData::new(), host, 0);
                self.set_xmm_zero_extended(i.op_register(0), v, size);
            }
            Inline::SseMem(SseMem::Lanes(op, lanes)) => {
                let v = self.b.ins().load(lanes, MemFlagsData::new(), host, 0);
                self.lanes(op, lanes, i.op_register(0), v);
            }
            Inline::SseMem(SseMem::Scalar(op, float)) => {
                // Operands or a result the host cannot stand in for: the interpreter, on
                // the state from before (nothing is written yet).
                let b = self.b.ins().load(ty, MemFlagsData::new(), host, 0);
                let dst = i.op_register(0);
                let a = self.xmm_lane0(dst, float);
                let (r, ok) = self.scalar_arith(op, float, a, b);
                self.continue_if(ok, slow);
                self.b
                    .ins()
                    .store(trusted(), r, self.state, xmm_offset(dst));
            }
            Inline::SseMem(SseMem::Compare(float)) => {
                // A NaN or a denormal (which change MXCSR): the interpreter, as above.
                let b = self.b.ins().load(ty, MemFlagsData::new(), host, 0);
                let a = self.xmm_lane0(i.op_register(0), float);
                let ordinary_a = self.ordinary_float(float, a);
                let ordinary_b = self.ordinary_float(float, b);
                let ok = self.b.ins().band(ordinary_a, ordinary_b);
                self.continue_if(ok, slow);
                self.compare_flags(float, a, b);
            }
            Inline::Rmw => {
                // A writable entry is readable too.
                let v = self.b.ins().load(ty, MemFlagsData::new(), host, 0);
                let v = if size == 8 {
                    v
                } else {
                    self.b.ins().uextend(types::I64, v)
                };
                let bits = 8 * size;
                let stored = match i.mnemonic() {
                    Mnemonic::Inc => {
                        self.inc_dec_values(true, bits, v);
                        None
                    }
                    Mnemonic::Dec => {
                        self.inc_dec_values(false, bits, v);
                        None
                    }
                    Mnemonic::Cmpxchg => Some(self.cmpxchg_values(bits, v, data.expect("source"))),
                    Mnemonic::Xchg => {
                        // No flags; the register gets the old memory value.
                        self.write_reg(i.op_register(1), v);
                        Some(data.expect("XCHG's register"))
                    }
                    Mnemonic::Shl | Mnemonic::Sal | Mnemonic::Shr | Mnemonic::Sar => {
                        Some(self.shift_values(i, bits, v))
                    }
                    Mnemonic::Xadd => {
                        // The flags and memory of ADD; the register gets the old value.
                        self.alu_values(i, bits, v, data.expect("XADD's register"));
                        self.write_reg(i.op_register(1), v);
                        None
                    }
                    Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc => {
                        // CF from the bit before (the other flags stay), then the bit.
                        self.bit_test_of(i, v);
                        let m = 1i64 << (i.immediate8() as u32 & (bits - 1));
                        Some(match i.mnemonic() {
                            Mnemonic::Bts => self.b.ins().bor_imm_s(v, m),
                            Mnemonic::Btr => self.b.ins().band_imm_s(v, !m),
                            _ => self.b.ins().bxor_imm_s(v, m),
                        })
                    }
                    _ => {
                        self.alu_values(i, bits, v, data.expect("ALU source"));
                        None
                    }
                };
                let flags = self.tracked.flags.filter(|_| sets_flags);
                let res = stored.unwrap_or_else(|| flags.expect("ALU flags").res);
                let res = if size == 8 {
                    res
                } else {
                    self.b.ins().ireduce(ty, res)
                };
                self.b.ins().store(MemFlagsData::new(), res, host, 0);
                if let Some(f) = flags {
                    self.def_flag_vars(f);
                }
            }
            Inline::Store | Inline::Push | Inline::Call | Inline::CallReg => {
                let v = data.expect("store data");
                let v = if size == 8 {
                    v
                } else {
                    self.b.ins().ireduce(ty, v)
                };
                self.b.ins().store(MemFlagsData::new(), v, host, 0);
                if matches!(kind, Inline::Push | Inline::Call | Inline::CallReg) {
                    self.set_gpr(RSP, lin);
                }
            }
            _ => {
                let v = self.b.ins().load(ty, MemFlagsData::new(), host, 0);
                let signed = matches!(i.mnemonic(), Mnemonic::Movsx | Mnemonic::Movsxd);
                let v = match (size, signed) {
                    (8, _) => v,
                    (_, true) => self.b.ins().sextend(types::I64, v),
                    (_, false) => self.b.ins().uextend(types::I64, v),
                };
                if kind == Inline::CallMem {
                    // The push of the return address: a second access, through the TLB's
                    // write entry of RSP - 8. A non-canonical target or a miss: the
                    // interpreter, on the state from before (nothing is written yet).
                    let canonical = self.canonical(v);
                    let sp = self.gpr(RSP);
                    let slot = self.b.ins().iadd_imm_s(sp, -8);
                    let (hit, push_entry) = self.tlb_hit(slot, 8, true);
                    let ok = self.b.ins().band(canonical, hit);
                    self.continue_if(ok, slow);
                    let host = self.host_address(push_entry, slot);
                    let ret = self.b.ins().iconst(types::I64, i.next_ip() as i64);
                    self.b.ins().store(MemFlagsData::new(), ret, host, 0);
                    self.set_gpr(RSP, slot);
                    self.count_tlb_hit();
                    next = Some(v);
                } else if matches!(kind, Inline::Ret | Inline::JmpMem) {
                    // A non-canonical target is the interpreter's #GP (with RSP unchanged):
                    // to the slow path, which has seen nothing of this path.
                    let canonical = self.canonical(v);
                    self.continue_if(canonical, slow);
                    if let Some(sp) = rsp {
                        let up = self.b.ins().iadd_imm_s(sp, 8);
                        self.set_gpr(RSP, up);
                    }
                    next = Some(v);
                } else if let (Inline::Pop, Some(sp)) = (kind, rsp) {
                    // POP RSP leaves the popped value: RSP is written first.
                    let up = self.b.ins().iadd_imm_s(sp, 8);
                    self.set_gpr(RSP, up);
                }
                if kind == Inline::LoadAlu {
                    let bits = 8 * size;
                    let (a, b) = if i.op0_kind() == OpKind::Memory {
                        (v, self.operand(i, 1, bits))
                    } else {
                        (self.operand(i, 0, bits), v)
                    };
                    self.alu_values(i, bits, a, b);
                    let f = self.tracked.flags.expect("ALU flags");
                    self.def_flag_vars(f);
                } else if matches!(i.mnemonic(), Mnemonic::Bsf | Mnemonic::Bsr) {
                    self.bit_scan_of(i, v);
                } else if i.mnemonic() == Mnemonic::Mul {
                    self.mul_of(i, 8 * size, v);
                } else if i.mnemonic() == Mnemonic::Div {
                    // A quotient that may not fit, or a zero divisor: the interpreter (on
                    // the state from before: nothing is written yet).
                    let (ok, n) = self.div_guard(8 * size, v);
                    self.continue_if(ok, slow);
                    self.div_of(8 * size, n, v);
                } else if i.mnemonic() == Mnemonic::Bt {
                    self.bit_test_of(i, v);
                } else if is_cmovcc(i.mnemonic()) {
                    // A 32-bit destination is zero-extended even when the move does not
                    // happen.
                    let cc = cc_number(i).expect("CMOVcc has a condition");
                    let c = self.cond_value(cc);
                    let dst = self.operand(i, 0, 8 * size);
                    let v = self.b.ins().select(c, v, dst);
                    self.write_reg(i.op_register(0), v);
                } else if leave {
                    self.set_gpr(RBP, v);
                } else if !matches!(kind, Inline::Ret | Inline::JmpMem | Inline::CallMem) {
                    self.write_reg(i.op_register(0), v);
                }
            }
        }
        // BSF/BSR/BT/MUL of memory: flags materialized on this path.
        let materialized = self.define_materialized_flags(&before);
        self.count_tlb_hit();
        match (kind, next) {
            (Inline::Call, _) => self.retire(i.near_branch_target()),
            (Inline::CallReg, _) => self.retire_to(call_target.expect("CALL r64 target")),
            (_, Some(rip)) => self.retire_to(rip),
            _ => self.retire(i.next_ip()),
        }
        let after = self.tracked;
        self.b.ins().jump(merge, &[]);

        // Slow path: the state from before, synced; the interpreter runs the instruction;
        // then the registers the fast path defined are reloaded.
        self.b.seal_block(slow);
        self.b.switch_to_block(slow);
        self.interpreter_path(before, &after, index);
        if after.rip == PendingRip::Var {
            // The RIP the interpreter's RET or JMP went to (the fast path's is pending).
            let rip = self.b.ins().load(types::I64, trusted(), self.state, RIP);
            self.b.def_var(self.rip_var, rip);
        }
        let pending = after.flags.filter(|_| sets_flags || materialized);
        if materialized {
            self.reload_materialized_flags(&after);
        } else if let Some(f) = pending {
            // The interpreter's lazy record of the same op.
            let from_state = self.flags_of_state(f.op);
            self.def_flag_vars(from_state);
        }
        self.b.ins().jump(merge, &[]);
        self.b.seal_block(merge);
        self.b.switch_to_block(merge);
        // On the slow path every register equals memory (synced or reloaded); keeping the
        // fast path's dirty marks only costs a redundant store. RIP and the counts are
        // pending on both.
        self.tracked = after;
        if pending.is_some() {
            self.use_flag_vars();
        }
    }

    /// A run of PUSH r64 or POP r64 (`group`, from instruction `index`; see `stack_run`) as
    /// one access to the stack range it covers: one TLB check for the range (inside one
    /// mapped page, writable for PUSHes), then every store or load through the host
    /// pointer, RSP moved once. Otherwise the interpreter runs the instructions one by one
    /// from the state before the first. Each PUSH or POP through [`Self::memory`] would have
    /// its own check and slow path: about 30 IR instructions more each.
    pub(super) fn stack_group(&mut self, group: &[Instruction], index: usize) {
        let push = group[0].code() == Code::Push_r64;
        let n = group.len() as i64;
        let rsp = self.gpr(RSP);
        // The pushed registers are read before the branch, so both paths see the same
        // register state.
        let data: Vec<Value> = if push {
            group.iter().map(|i| self.operand(i, 0, 64)).collect()
        } else {
            Vec::new()
        };
        let low = if push {
            self.b.ins().iadd_imm_s(rsp, -8 * n)
        } else {
            rsp
        };
        let before = self.begin_fast_path();
        let (hit, entry) = self.tlb_hit(low, 8 * n as u32, push);
        let (slow, merge) = self.begin_fast_block(hit);
        let host = self.host_address(entry, low);
        if push {
            // The j-th PUSH stores at RSP - 8(j + 1), that is LOW + 8(n - 1 - j).
            for (j, &v) in data.iter().enumerate() {
                let at = 8 * (n - 1 - j as i64);
                self.b.ins().store(MemFlagsData::new(), v, host, at as i32);
            }
            self.set_gpr(RSP, low);
        } else {
            for (j, i) in group.iter().enumerate() {
                let v = self
                    .b
                    .ins()
                    .load(types::I64, MemFlagsData::new(), host, 8 * j as i32);
                self.write_reg(i.op0_register(), v);
            }
            let up = self.b.ins().iadd_imm_s(rsp, 8 * n);
            self.set_gpr(RSP, up);
        }
        for i in group {
            self.count_tlb_hit();
            self.retire(i.next_ip());
        }
        let after = self.tracked;
        self.b.ins().jump(merge, &[]);

        self.b.seal_block(slow);
        self.b.switch_to_block(slow);
        self.interpreter_path_run(before, &after, index, group.len());
        self.b.ins().jump(merge, &[]);
        self.b.seal_block(merge);
        self.b.switch_to_block(merge);
        self.tracked = after;
    }

    /// The RFLAGS image PUSHF stores: the arithmetic flags as they are now, the others from
    /// `CpuState`, VM and RF clear.
    fn pushed_rflags(&mut self) -> Value {
        use crane86_x86::flags::{ARITH, RF, VM};
        let arith = self.arith_flags_now();
        let rflags = self.b.ins().load(types::I64, trusted(), self.state, RFLAGS);
        let rest = self.b.ins().band_imm_s(rflags, !(ARITH | VM | RF) as i64);
        self.b.ins().bor(rest, arith)
    }

    /// On the slow path of a form whose fast path materializes the flags (`after`'s): the
    /// six arithmetic flags the interpreter left, into the flag variables.
    pub(super) fn reload_materialized_flags(&mut self, after: &Tracked) {
        let f = after.flags.expect("the fast path's flags");
        debug_assert_eq!(f.kind, CcOp::Eflags);
        let fl = self.call_helper(self.helpers.flags, &[self.state], types::I64);
        self.def_flag_vars(PendingFlags {
            res: fl,
            src: fl,
            a: fl,
            ..f
        });
    }

    /// At the merge of a form's two paths, which both defined the flag variables: the
    /// pending flags (of the fast path's kind) from them.
    pub(super) fn use_flag_vars(&mut self) {
        let f = self.tracked.flags.expect("flags pending after the form");
        self.tracked.flags = Some(PendingFlags {
            res: self.b.use_var(self.flag_vars[0]),
            src: self.b.use_var(self.flag_vars[1]),
            a: self.b.use_var(self.flag_vars[2]),
            aux: f.aux.map(|_| self.b.use_var(self.flag_vars[3])),
            ..f
        });
    }

    /// Whether `v` is a canonical address (bits 63..47 all equal), as a boolean value.
    pub(super) fn canonical(&mut self, v: Value) -> Value {
        let shl = self.b.ins().ishl_imm_u(v, 16);
        let sx = self.b.ins().sshr_imm_u(shl, 16);
        self.b.ins().icmp(IntCC::Equal, sx, v)
    }

    /// JMP r64: RIP from the register when it is canonical, else the interpreter (#GP).
    pub(super) fn jump_register(&mut self, i: &Instruction, index: usize) {
        let (k, _) = gpr_part(i.op0_register()).expect("JMP r64 has a GPR");
        let target = self.gpr(k);
        let ok = self.canonical(target);
        self.guarded(index, ok, |t| t.retire_to(target));
    }

    /// The TLB lookup of a `size`-byte access at `lin` (a write if `write`): whether it
    /// hits a RAM page of the current privilege (the tag of LIN's slot equals the page of
    /// the access's last byte), and the entry.
    pub(super) fn tlb_hit(&mut self, lin: Value, size: u32, write: bool) -> (Value, Value) {
        let slot_off = self.tlb_slot_offset(lin);
        let tlb = self.tlb_set();
        let entry = self.b.ins().iadd(tlb, slot_off);
        let tag_at = if write {
            offset_of!(TlbEntry, write_tag)
        } else {
            offset_of!(TlbEntry, read_tag)
        };
        let tag = self
            .b
            .ins()
            .load(types::I64, trusted(), entry, tag_at as i32);
        let last = self.b.ins().iadd_imm_s(lin, i64::from(size - 1));
        let page = self.b.ins().band_imm_s(last, !0xFFFi64);
        (self.b.ins().icmp(IntCC::Equal, tag, page), entry)
    }

    /// Branch on `ok` (an inline form's TLB hit and guards) into a new fast-path block, which
    /// becomes the current one; returns the form's slow path (cold, not yet sealed) and the
    /// block where both paths merge.
    fn begin_fast_block(&mut self, ok: Value) -> (ir::Block, ir::Block) {
        let fast = self.b.create_block();
        let slow = self.slow_block();
        let merge = self.b.create_block();
        self.b.ins().brif(ok, fast, &[], slow, &[]);
        self.b.seal_block(fast);
        self.b.switch_to_block(fast);
        (slow, merge)
    }

    /// The host address of guest linear `lin` through TLB entry `entry` (a hit).
    fn host_address(&mut self, entry: Value, lin: Value) -> Value {
        let addend = self.b.ins().load(
            types::I64,
            trusted(),
            entry,
            offset_of!(TlbEntry, addend) as i32,
        );
        self.b.ins().iadd(addend, lin)
    }

    /// Go on in a new block where `ok` holds; otherwise to `slow` (an inline form's
    /// interpreter path, which has seen nothing of this path yet).
    fn continue_if(&mut self, ok: Value, slow: ir::Block) {
        let cont = self.b.create_block();
        self.b.ins().brif(ok, cont, &[], slow, &[]);
        self.b.seal_block(cont);
        self.b.switch_to_block(cont);
    }

    /// The TLB set native code looks up ([`BlockCtx::tlb`]), loaded by the first memory
    /// form and reused after it. Memory forms call this on the straight-line path of the
    /// block (before their fast/slow branch, or in a fast path after the first lookup of
    /// the same instruction), so the first load dominates every later use.
    pub(super) fn tlb_set(&mut self) -> Value {
        if let Some(v) = self.tlb_set {
            return v;
        }
        let v = self.ctx_ptr(offset_of!(BlockCtx, tlb));
        self.tlb_set = Some(v);
        v
    }

    /// The byte offset of linear address `lin`'s slot in a TLB set: the slot number (page
    /// number modulo [`TLB_ENTRIES`]) times the entry size, in one shift and one mask.
    pub(super) fn tlb_slot_offset(&mut self, lin: Value) -> Value {
        const ENTRY: usize = size_of::<TlbEntry>();
        const _: () = assert!(ENTRY.is_power_of_two() && ENTRY <= 4096);
        let shifted = self
            .b
            .ins()
            .ushr_imm_u(lin, i64::from(12 - ENTRY.trailing_zeros()));
        self.b
            .ins()
            .band_imm_u(shifted, ((TLB_ENTRIES - 1) * ENTRY) as i64)
    }

    /// The pending flags' values into the variables both paths of a memory form define.
    pub(super) fn def_flag_vars(&mut self, f: PendingFlags) {
        self.b.def_var(self.flag_vars[0], f.res);
        self.b.def_var(self.flag_vars[1], f.src);
        self.b.def_var(self.flag_vars[2], f.a);
        if let Some(aux) = f.aux {
            self.b.def_var(self.flag_vars[3], aux);
        }
    }

    pub(super) fn lea_address(&mut self, i: &Instruction) -> Value {
        let base = i.memory_base();
        let index = i.memory_index();
        // The fewest IR instructions (compile time): no add of a zero displacement, a shift
        // for a scale.
        let mut a = None;
        if base != Register::None && base != Register::RIP {
            let k = gpr_index(base).expect("checked by lea_simple");
            a = Some(self.gpr(k));
        }
        if index != Register::None {
            let k = gpr_index(index).expect("checked by lea_simple");
            let v = self.gpr(k);
            let shift = i.memory_index_scale().trailing_zeros();
            let scaled = if shift == 0 {
                v
            } else {
                self.b.ins().ishl_imm_u(v, i64::from(shift))
            };
            a = Some(match a {
                Some(b) => self.b.ins().iadd(b, scaled),
                None => scaled,
            });
        }
        let disp = i.memory_displacement64() as i64;
        let mut a = match a {
            Some(v) if disp == 0 => v,
            Some(v) => self.b.ins().iadd_imm_s(v, disp),
            None => self.b.ins().iconst(types::I64, disp),
        };
        // 32-bit addressing wraps at 4 GiB.
        let addr_bits = if base != Register::None {
            base.size()
        } else if index != Register::None {
            index.size()
        } else {
            8
        };
        if addr_bits == 4 && base != Register::RIP {
            a = self.truncate(a, 32);
        }
        a
    }
}
