//! Conditions and flags in inline code: Jcc/SETcc/CMOVcc conditions decided from the pending
//! inline flags or by [`cond_helper`] on the stored lazy flags, the write-back of pending
//! flags, and materialized flags (shifts, IMUL).

use super::*;

/// Jcc mnemonics in condition-code order (0 = O ... 15 = G, as `Cpu::cond` numbers them).
pub(super) const JCC: [Mnemonic; 16] = {
    use Mnemonic::*;
    [
        Jo, Jno, Jb, Jae, Je, Jne, Jbe, Ja, Js, Jns, Jp, Jnp, Jl, Jge, Jle, Jg,
    ]
};

/// The condition-code number (0..15) of a Jcc/SETcc/CMOVcc.
pub(super) fn cc_number(i: &Instruction) -> Option<u8> {
    let c = i.condition_code() as u8;
    (1..=16).contains(&c).then(|| c - 1)
}

/// Evaluate condition `cc` on the flags in `CpuState` (the rest of the state untouched):
/// what inline code calls when the condition is not known from pending inline flags.
///
/// # Safety
/// `state` points at the live `CpuState` of the running block.
pub unsafe extern "C" fn cond_helper(state: *const CpuState, cc: u32) -> u32 {
    // SAFETY: guaranteed by the caller (native code passes its state pointer).
    let s = unsafe { &*state };
    u32::from(s.lazy.cond(cc as u8, s.rflags))
}

/// The six arithmetic flags of `CpuState` (evaluating its lazy record): for inline code that
/// changes some flags and keeps the others, when no pending inline flags say what they are.
///
/// # Safety
/// `state` points at the live `CpuState` of the running block.
pub unsafe extern "C" fn arith_flags_helper(state: *const CpuState) -> u64 {
    // SAFETY: guaranteed by the caller (native code passes its state pointer).
    let s = unsafe { &*state };
    s.rflags() & crane86_x86::flags::ARITH
}

impl Translator<'_, '_> {
    /// The six arithmetic flags as they are now (an I64 in RFLAGS positions): computed from
    /// the pending inline flags exactly as `LazyFlags::arith_flags` would (pure IR, so it
    /// costs nothing when a later instruction overwrites the flags before a sync), or read
    /// through [`arith_flags_helper`] when the flags are in `CpuState`.
    pub(super) fn arith_flags_now(&mut self) -> Value {
        use crane86_x86::flags::{AF, CF, OF};
        let Some(f) = self.tracked.flags else {
            return self.arith_flags_from_state();
        };
        if f.kind == CcOp::Eflags {
            return f.res;
        }
        let op = f.op as u32;
        let bits = 8u32 << (op & 3);
        let res = self.truncate(f.res, bits);
        let b = self.truncate(f.src, bits);
        let c = match f.aux {
            Some(v) => self.b.ins().band_imm_u(v, 1),
            None => self.b.ins().iconst(types::I64, 0),
        };
        let mut fl = self.zsp(res, bits);
        let sign = 1i64 << (bits - 1);
        let flag = |t: &mut Self, cond: Value, bit: u64| {
            let x = t.b.ins().uextend(types::I64, cond);
            t.b.ins().ishl_imm_u(x, i64::from(bit.trailing_zeros()))
        };
        let or = |t: &mut Self, fl: Value, x: Value| t.b.ins().bor(fl, x);
        match op & !3 {
            4 | 8 | 12 | 16 => {
                let add = op & !3 <= 8;
                // The first operand, back from the result.
                let a = if add {
                    let x = self.b.ins().isub(res, b);
                    self.b.ins().isub(x, c)
                } else {
                    let x = self.b.ins().iadd(res, b);
                    self.b.ins().iadd(x, c)
                };
                let a = self.truncate(a, bits);
                let (strict, inclusive) = if add {
                    (
                        self.b.ins().icmp(IntCC::UnsignedLessThan, res, a),
                        self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, res, a),
                    )
                } else {
                    (
                        self.b.ins().icmp(IntCC::UnsignedLessThan, a, b),
                        self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, a, b),
                    )
                };
                let no_carry_in = self.b.ins().icmp_imm_u(IntCC::Equal, c, 0);
                let carry = self.b.ins().select(no_carry_in, strict, inclusive);
                let x = flag(self, carry, CF);
                fl = or(self, fl, x);
                let (p, q) = if add {
                    (self.b.ins().bxor(a, res), self.b.ins().bxor(b, res))
                } else {
                    (self.b.ins().bxor(a, b), self.b.ins().bxor(a, res))
                };
                let o = self.b.ins().band(p, q);
                let o = self.b.ins().band_imm_u(o, sign);
                let o = self.b.ins().icmp_imm_u(IntCC::NotEqual, o, 0);
                let x = flag(self, o, OF);
                fl = or(self, fl, x);
                let ab = self.b.ins().bxor(a, b);
                let abr = self.b.ins().bxor(ab, res);
                let af = self.b.ins().band_imm_u(abr, AF as i64);
                fl = or(self, fl, af);
            }
            20 => {}
            24 | 28 => {
                let inc = op & !3 == 24;
                fl = or(self, fl, c); // the preserved CF
                let at = if inc { sign } else { sign - 1 };
                let o = self.b.ins().icmp_imm_u(IntCC::Equal, res, at);
                let x = flag(self, o, OF);
                fl = or(self, fl, x);
                let low = self.b.ins().band_imm_u(res, 0xF);
                let a = self
                    .b
                    .ins()
                    .icmp_imm_u(IntCC::Equal, low, if inc { 0 } else { 0xF });
                let x = flag(self, a, AF);
                fl = or(self, fl, x);
            }
            _ => unreachable!("inline flag records use validated CcOp values"),
        }
        fl
    }

    /// ZF, SF and PF of `res` (`bits` wide, zero-extended) in RFLAGS positions.
    pub(super) fn zsp(&mut self, res: Value, bits: u32) -> Value {
        let z = self.b.ins().icmp_imm_s(IntCC::Equal, res, 0);
        let z = self.b.ins().uextend(types::I64, z);
        let z = self.b.ins().ishl_imm_u(z, 6);
        let s = self.b.ins().ushr_imm_u(res, i64::from(bits - 1));
        let s = self.b.ins().band_imm_u(s, 1);
        let s = self.b.ins().ishl_imm_u(s, 7);
        let low = self.b.ins().band_imm_u(res, 0xFF);
        let pop = self.b.ins().popcnt(low);
        let odd = self.b.ins().band_imm_u(pop, 1);
        let pf = self.b.ins().bxor_imm_u(odd, 1);
        let pf = self.b.ins().ishl_imm_u(pf, 2);
        let zs = self.b.ins().bor(z, s);
        self.b.ins().bor(zs, pf)
    }

    /// Make `fl` (the six arithmetic flags, RFLAGS positions) the pending flags.
    pub(super) fn set_materialized(&mut self, fl: Value, bits: u32) {
        self.tracked.flags = Some(PendingFlags::materialized(fl, bits));
    }

    /// A direct JMP, or a Jcc whose condition the pending inline flags decide, in 64-bit
    /// code: RIP becomes the target (or the fall-through). A Jcc with a `next` instruction
    /// translated after it leaves RIP at that one (the fall-through, or the target when the
    /// translation follows the taken path) and its condition in `branch_taken` for the side
    /// exit (see [`side_exit_of`]). Returns false (nothing emitted) for anything else.
    pub(super) fn branch(&mut self, i: &Instruction, next: Option<&Instruction>) -> bool {
        let (target, taken) = if i.mnemonic() == Mnemonic::Jmp {
            match near_target(i) {
                Some(t) => (t, None),
                None => return false,
            }
        } else {
            let Some(t) = inline_jcc_target(i) else {
                return false;
            };
            let cc = cc_number(i).expect("an inline Jcc has a condition");
            (t, Some(self.cond_value(cc)))
        };
        match (taken, next) {
            (None, _) => self.retire(target),
            // A side exit: the translation goes on at `next` (see `Translator::side_exit`).
            (Some(c), Some(next)) => {
                self.retire(next.ip());
                self.branch_taken = Some(c);
            }
            (Some(c), None) => {
                let target = self.b.ins().iconst(types::I64, target as i64);
                let fall = self.b.ins().iconst(types::I64, i.next_ip() as i64);
                let rip = self.b.ins().select(c, target, fall);
                self.retire_to(rip);
                self.branch_taken = Some(c);
            }
        }
        true
    }

    /// Condition `cc` (0..15) as an I8 0/1: from the pending inline flags when they decide
    /// it, otherwise by calling [`cond_helper`] after storing the pending flags (registers
    /// stay in their variables).
    pub(super) fn cond_value(&mut self, cc: u8) -> Value {
        if let Some(f) = self.tracked.flags {
            if let Some(v) = self.condition(JCC[cc as usize], f) {
                return v;
            }
        }
        self.flush_flags();
        self.state_flags_guarded(
            types::I8,
            |t, f| match t.condition(JCC[cc as usize], f) {
                Some(v) => v,
                None => {
                    let fl = t.arith_flags_of(f);
                    t.condition(JCC[cc as usize], PendingFlags::materialized(fl, f.bits))
                        .expect("every condition of materialized flags")
                }
            },
            |t| {
                let ccv = t.b.ins().iconst(types::I32, i64::from(cc));
                let r = t.call_helper(t.helpers.cond, &[t.state, ccv], types::I32);
                t.b.ins().icmp_imm_s(IntCC::NotEqual, r, 0)
            },
        )
    }

    /// The six arithmetic flags of record `f` (loaded from `CpuState`, none pending inline).
    fn arith_flags_of(&mut self, f: PendingFlags) -> Value {
        self.tracked.flags = Some(f);
        let fl = self.arith_flags_now();
        self.tracked.flags = None;
        fl
    }

    /// The six arithmetic flags from `CpuState`'s lazy record (no flags pending inline).
    fn arith_flags_from_state(&mut self) -> Value {
        self.state_flags_guarded(
            types::I64,
            |t, f| t.arith_flags_of(f),
            |t| t.call_helper(t.helpers.flags, &[t.state], types::I64),
        )
    }

    /// A value of type `ty` computed from the flags in `CpuState` (none pending inline).
    /// When the block's translation expects a lazy record of op `K` there
    /// ([`crate::backend::Job::entry_flags`]: the op it saw when the block became hot), and
    /// the record's op is `K` at run time, `inline` computes it from the record's operands
    /// loaded as pending flags of op `K`; otherwise `helper` does (a helper call).
    fn state_flags_guarded(
        &mut self,
        ty: Type,
        inline: impl FnOnce(&mut Self, PendingFlags) -> Value,
        helper: impl FnOnce(&mut Self) -> Value,
    ) -> Value {
        debug_assert!(self.tracked.flags.is_none());
        let Some(op) = self.entry_flags else {
            return helper(self);
        };
        let (fast, slow, merge) = (
            self.b.create_block(),
            self.slow_block(),
            self.b.create_block(),
        );
        let v = self.b.append_block_param(merge, ty);
        let recorded = self
            .b
            .ins()
            .load(types::I32, trusted(), self.state, LAZY_OP);
        let same = self.b.ins().icmp_imm_u(IntCC::Equal, recorded, op as i64);
        self.b.ins().brif(same, fast, &[], slow, &[]);
        self.b.seal_block(fast);
        self.b.switch_to_block(fast);
        let f = self.flags_of_state(op);
        let x = inline(self, f);
        self.b.ins().jump(merge, &[x.into()]);
        self.b.seal_block(slow);
        self.b.switch_to_block(slow);
        let y = helper(self);
        self.b.ins().jump(merge, &[y.into()]);
        self.b.seal_block(merge);
        self.b.switch_to_block(merge);
        v
    }

    /// `CpuState`'s lazy record, known to be of op `op`, as pending flags (loaded).
    pub(super) fn flags_of_state(&mut self, op: CcOp) -> PendingFlags {
        let i64t = types::I64;
        if op == CcOp::Eflags {
            let rflags = self.b.ins().load(i64t, trusted(), self.state, RFLAGS);
            let fl = self
                .b
                .ins()
                .band_imm_u(rflags, crane86_x86::flags::ARITH as i64);
            return PendingFlags::materialized(fl, 64);
        }
        let raw = op as u32;
        let bits = 8u32 << (raw & 3);
        let kind = CcOp::from_u32(raw & !3).expect("a CcOp kind");
        let res = self.b.ins().load(i64t, trusted(), self.state, LAZY_RES);
        let res = self.truncate(res, bits);
        let src = self.b.ins().load(i64t, trusted(), self.state, LAZY_SRC);
        let src = self.truncate(src, bits);
        let aux = matches!(kind, CcOp::Adc8 | CcOp::Sbb8 | CcOp::Inc8 | CcOp::Dec8).then(|| {
            let aux = self.b.ins().load(i64t, trusted(), self.state, LAZY_AUX);
            self.b.ins().band_imm_u(aux, 1)
        });
        // The first operand, back from the result (what conditions on SUB and ADD compare).
        let a = match kind {
            CcOp::Sub8 => self.b.ins().iadd(res, src),
            CcOp::Add8 => self.b.ins().isub(res, src),
            _ => res,
        };
        let a = self.truncate(a, bits);
        PendingFlags {
            op,
            kind,
            res,
            src,
            a,
            bits,
            aux,
        }
    }

    /// The Jcc condition from an inline SUB/CMP, ADD or logic op's operands or from
    /// materialized inline flags, or `None` when it needs the lazy-flags evaluation.
    pub(super) fn condition(&mut self, m: Mnemonic, f: PendingFlags) -> Option<Value> {
        use Mnemonic::*;
        let (a, b, res) = (f.a, f.src, f.res);
        let narrow = |t: &mut Self, v: Value| match f.bits {
            8 => t.b.ins().ireduce(types::I8, v),
            16 => t.b.ins().ireduce(types::I16, v),
            32 => t.b.ins().ireduce(types::I32, v),
            _ => v,
        };
        if f.kind == CcOp::Eflags {
            use crane86_x86::flags::{CF, OF, PF, SF, ZF};
            let cc = JCC.iter().position(|&j| j == m)? as u8;
            // The odd conditions are the even ones negated: one compare either way.
            let negated = cc & 1 != 0;
            let bits_set = |t: &mut Self, mask: u64| {
                let x = t.b.ins().band_imm_u(res, mask as i64);
                let cond = if negated {
                    IntCC::Equal
                } else {
                    IntCC::NotEqual
                };
                t.b.ins().icmp_imm_u(cond, x, 0)
            };
            let single = match cc >> 1 {
                0 => Some(OF),
                1 => Some(CF),
                2 => Some(ZF),
                3 => Some(CF | ZF),
                4 => Some(SF),
                5 => Some(PF),
                _ => None,
            };
            if let Some(mask) = single {
                return Some(bits_set(self, mask));
            }
            let bit = |t: &mut Self, mask: u64| {
                let x = t.b.ins().band_imm_u(res, mask as i64);
                t.b.ins().icmp_imm_u(IntCC::NotEqual, x, 0)
            };
            let r = match cc >> 1 {
                6 => {
                    let (s, o) = (bit(self, SF), bit(self, OF));
                    self.b.ins().bxor(s, o)
                }
                _ => {
                    let (s, o, z) = (bit(self, SF), bit(self, OF), bit(self, ZF));
                    let x = self.b.ins().bxor(s, o);
                    self.b.ins().bor(x, z)
                }
            };
            return Some(if negated {
                self.b.ins().bxor_imm_u(r, 1)
            } else {
                r
            });
        }
        let ins_zero = |t: &mut Self| t.b.ins().icmp_imm_s(IntCC::Equal, res, 0);
        let nonzero = |t: &mut Self| t.b.ins().icmp_imm_s(IntCC::NotEqual, res, 0);
        let sign = |t: &mut Self| {
            let r = narrow(t, res);
            t.b.ins().icmp_imm_s(IntCC::SignedLessThan, r, 0)
        };
        let no_sign = |t: &mut Self| {
            let r = narrow(t, res);
            t.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, r, 0)
        };
        let cc = |t: &mut Self, cc: IntCC| {
            let (x, y) = (narrow(t, a), narrow(t, b));
            t.b.ins().icmp(cc, x, y)
        };
        let konst = |t: &mut Self, v: bool| t.b.ins().iconst(types::I8, i64::from(v));
        // ZF and SF come from the result for every kind below.
        let zero_or_sign = |t: &mut Self| {
            Some(match m {
                Je => ins_zero(t),
                Jne => nonzero(t),
                Js => sign(t),
                Jns => no_sign(t),
                _ => return None,
            })
        };
        if matches!(f.kind, CcOp::Inc8 | CcOp::Dec8) {
            // CF is the preserved one.
            if let Some(v) = zero_or_sign(self) {
                return Some(v);
            }
            return Some(match m {
                Jb | Jae => {
                    let cf = f.aux?;
                    let cc = if m == Jb {
                        IntCC::NotEqual
                    } else {
                        IntCC::Equal
                    };
                    self.b.ins().icmp_imm_s(cc, cf, 0)
                }
                _ => return None,
            });
        }
        if f.kind == CcOp::Add8 {
            if let Some(v) = zero_or_sign(self) {
                return Some(v);
            }
            return Some(match m {
                // CF: the (truncated) sum is below an operand.
                Jb | Jae => {
                    let (r, x) = (narrow(self, res), narrow(self, a));
                    let cc = if m == Jb {
                        IntCC::UnsignedLessThan
                    } else {
                        IntCC::UnsignedGreaterThanOrEqual
                    };
                    self.b.ins().icmp(cc, r, x)
                }
                _ => return None,
            });
        }
        if f.kind == CcOp::Sub8 {
            Some(match m {
                Je => ins_zero(self),
                Jne => nonzero(self),
                Jb => cc(self, IntCC::UnsignedLessThan),
                Jae => cc(self, IntCC::UnsignedGreaterThanOrEqual),
                Jbe => cc(self, IntCC::UnsignedLessThanOrEqual),
                Ja => cc(self, IntCC::UnsignedGreaterThan),
                Jl => cc(self, IntCC::SignedLessThan),
                Jge => cc(self, IntCC::SignedGreaterThanOrEqual),
                Jle => cc(self, IntCC::SignedLessThanOrEqual),
                Jg => cc(self, IntCC::SignedGreaterThan),
                Js => sign(self),
                Jns => no_sign(self),
                _ => return None,
            })
        } else if f.kind == CcOp::Logic8 {
            // CF = OF = 0.
            Some(match m {
                Je | Jbe => ins_zero(self),
                Jne | Ja => nonzero(self),
                Js | Jl => sign(self),
                Jns | Jge => no_sign(self),
                Jle => {
                    let (z, s) = (ins_zero(self), sign(self));
                    self.b.ins().bor(z, s)
                }
                Jg => {
                    let (z, s) = (ins_zero(self), sign(self));
                    let either = self.b.ins().bor(z, s);
                    self.b.ins().bxor_imm_u(either, 1)
                }
                Jb | Jo => konst(self, false),
                Jae | Jno => konst(self, true),
                _ => return None,
            })
        } else {
            None
        }
    }

    /// Store the pending flags (a lazy record, or materialized flags into RFLAGS).
    pub(super) fn flush_flags(&mut self) {
        let Some(f) = self.tracked.flags.take() else {
            return;
        };
        if f.kind == CcOp::Eflags {
            let old = self.b.ins().load(types::I64, trusted(), self.state, RFLAGS);
            let kept = self
                .b
                .ins()
                .band_imm_s(old, !(crane86_x86::flags::ARITH as i64));
            let new = self.b.ins().bor(kept, f.res);
            self.b.ins().store(trusted(), new, self.state, RFLAGS);
            let op = self.b.ins().iconst(types::I32, CcOp::Eflags as i64);
            self.b.ins().store(trusted(), op, self.state, LAZY_OP);
            return;
        }
        let op = self.b.ins().iconst(types::I32, f.op as i64);
        self.b.ins().store(trusted(), op, self.state, LAZY_OP);
        self.b.ins().store(trusted(), f.res, self.state, LAZY_RES);
        self.b.ins().store(trusted(), f.src, self.state, LAZY_SRC);
        // Without a carry-in or preserved CF the operation ignores `aux` (see
        // `LazyFlags::arith_flags`).
        let aux = match f.aux {
            Some(v) => v,
            None => self.b.ins().iconst(types::I64, 0),
        };
        self.b.ins().store(trusted(), aux, self.state, LAZY_AUX);
    }

    /// The six arithmetic flags (an I64) with ZF SF PF of `res` (`bits` wide), CF and OF
    /// from the I64 0/1 values `cf` and `of`, and the constant bits `fixed` (AF or 0).
    pub(super) fn flags_value(
        &mut self,
        res: Value,
        bits: u32,
        cf: Value,
        of: Value,
        fixed: u64,
    ) -> Value {
        let zsp = self.zsp(res, bits);
        let fl = self.b.ins().bor_imm_u(cf, fixed as i64);
        let fl = self.b.ins().bor(fl, zsp);
        let of = self.b.ins().ishl_imm_u(of, 11);
        self.b.ins().bor(fl, of)
    }

    /// Pending materialized flags, as [`Self::flags_value`] computes them.
    pub(super) fn materialized_flags(
        &mut self,
        res: Value,
        bits: u32,
        cf: Value,
        of: Value,
        fixed: u64,
    ) {
        let fl = self.flags_value(res, bits, cf, of, fixed);
        self.set_materialized(fl, bits);
    }
}
