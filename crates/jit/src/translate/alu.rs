//! Inline ALU operations: ADD/SUB/AND/OR/XOR/CMP/TEST with their lazy-flags record; the
//! shifts and rotates, SHLD/SHRD, BSF/BSR, TZCNT/LZCNT, BT, IMUL and MUL with materialized
//! flags; DIV (64-bit with a high half by long division).

use super::*;

impl Translator<'_, '_> {
    /// SHL/SAL/SHR/SAR by a masked count `0 < n < bits`, with the interpreter's flags
    /// (`ops::shift`): CF the last bit out, AF set, OF = MSB(res) ^ CF (SHL), the operand's
    /// MSB for a count of 1 else 0 (SHR), 0 (SAR).
    pub(super) fn shift(&mut self, i: &Instruction) {
        let r = i.op_register(0);
        let bits = r.size() as u32 * 8;
        let v = self.operand(i, 0, bits);
        let res = self.shift_values(i, bits, v);
        self.write_reg(r, res);
    }

    /// The result of [`Self::shift`]'s shift of `v` (the `bits`-wide first operand, of a
    /// register or of memory), with the flags materialized.
    pub(super) fn shift_values(&mut self, i: &Instruction, bits: u32, v: Value) -> Value {
        use crane86_x86::flags::AF;
        let n = (i.immediate(1) & if bits == 64 { 0x3F } else { 0x1F }) as u32;
        let one = |t: &mut Self, x: Value, at: u32| {
            let s = t.b.ins().ushr_imm_u(x, i64::from(at));
            t.b.ins().band_imm_u(s, 1)
        };
        let (res, cf, of) = match i.mnemonic() {
            Mnemonic::Shr => {
                let res = self.b.ins().ushr_imm_u(v, i64::from(n));
                let cf = one(self, v, n - 1);
                let of = if n == 1 {
                    one(self, v, bits - 1)
                } else {
                    self.b.ins().iconst(types::I64, 0)
                };
                (res, cf, of)
            }
            Mnemonic::Sar => {
                let up = self.b.ins().ishl_imm_u(v, i64::from(64 - bits));
                let s = self.b.ins().sshr_imm_u(up, i64::from(64 - bits));
                let res = self.b.ins().sshr_imm_u(s, i64::from(n));
                let res = self.truncate(res, bits);
                let cf = one(self, s, n - 1);
                let of = self.b.ins().iconst(types::I64, 0);
                (res, cf, of)
            }
            _ => {
                let res = self.b.ins().ishl_imm_u(v, i64::from(n));
                let res = self.truncate(res, bits);
                let cf = one(self, v, bits - n);
                let msb = one(self, res, bits - 1);
                let of = self.b.ins().bxor(msb, cf);
                (res, cf, of)
            }
        };
        self.materialized_flags(res, bits, cf, of, AF);
        res
    }

    /// SHL/SAL/SHR/SAR r32/r64 by CL, as `ops::shift` does them: the count masked to 5 (6)
    /// bits; a zero count changes neither the flags nor the value (a 32-bit register is
    /// still zero-extended).
    pub(super) fn shift_cl(&mut self, i: &Instruction) {
        use crane86_x86::flags::AF;
        let r = i.op_register(0);
        let bits = r.size() as u32 * 8;
        let before = self.arith_flags_now();
        let rcx = self.gpr(1);
        let n = self
            .b
            .ins()
            .band_imm_u(rcx, if bits == 64 { 0x3F } else { 0x1F });
        let v = self.operand(i, 0, bits);
        let one = |t: &mut Self, x: Value, at: Value| {
            let s = t.b.ins().ushr(x, at);
            t.b.ins().band_imm_u(s, 1)
        };
        // Bit positions below wrap (Cranelift masks shift amounts) only for a zero count,
        // whose flags are not used.
        let n_minus_1 = self.b.ins().iadd_imm_s(n, -1);
        let (res, cf, of) = match i.mnemonic() {
            Mnemonic::Shr => {
                let res = self.b.ins().ushr(v, n);
                let cf = one(self, v, n_minus_1);
                // The sign before the last single-bit step.
                let before_last = self.b.ins().ushr(v, n_minus_1);
                let of = self.b.ins().ushr_imm_u(before_last, i64::from(bits - 1));
                let of = self.b.ins().band_imm_u(of, 1);
                (res, cf, of)
            }
            Mnemonic::Sar => {
                let up = self.b.ins().ishl_imm_u(v, i64::from(64 - bits));
                let sx = self.b.ins().sshr_imm_u(up, i64::from(64 - bits));
                let res = self.b.ins().sshr(sx, n);
                let res = self.truncate(res, bits);
                let cf = one(self, sx, n_minus_1);
                let of = self.b.ins().iconst(types::I64, 0);
                (res, cf, of)
            }
            _ => {
                let res = self.b.ins().ishl(v, n);
                let res = self.truncate(res, bits);
                let width = self.b.ins().iconst(types::I64, i64::from(bits));
                let out = self.b.ins().isub(width, n);
                let cf = one(self, v, out);
                let msb = self.b.ins().ushr_imm_u(res, i64::from(bits - 1));
                let of = self.b.ins().bxor(msb, cf);
                (res, cf, of)
            }
        };
        let after = self.flags_value(res, bits, cf, of, AF);
        let zero = self.b.ins().icmp_imm_u(IntCC::Equal, n, 0);
        let fl = self.b.ins().select(zero, before, after);
        self.set_materialized(fl, bits);
        self.write_reg(r, res);
    }

    /// SHLD/SHRD r32/r64, r32/r64, CL or imm8, as `ops::shift` does them: the count masked
    /// to 5 (6) bits; a zero count changes neither the flags nor the value (a 32-bit
    /// register is still zero-extended); otherwise CF is the last bit shifted out, OF the
    /// sign change of the last single-bit step, AF set, ZF SF PF of the result.
    pub(super) fn double_shift(&mut self, i: &Instruction) {
        use crane86_x86::flags::AF;
        let r = i.op_register(0);
        let bits = r.size() as u32 * 8;
        let before = self.arith_flags_now();
        let mask = if bits == 64 { 0x3F } else { 0x1F };
        let n = match i.op_kind(2) {
            OpKind::Register => {
                let rcx = self.gpr(1);
                self.b.ins().band_imm_u(rcx, mask)
            }
            _ => self
                .b
                .ins()
                .iconst(types::I64, (i.immediate(2) & mask as u64) as i64),
        };
        let dst = self.operand(i, 0, bits);
        let src = self.operand(i, 1, bits);
        let left = i.mnemonic() == Mnemonic::Shld;
        // Shift amounts below are taken modulo 64 by Cranelift; the ones that wrap belong to
        // a zero count, whose results are not used.
        let n_minus_1 = self.b.ins().iadd_imm_s(n, -1);
        let bit = |t: &mut Self, x: Value, at: Value| {
            let s = t.b.ins().ushr(x, at);
            t.b.ins().band_imm_u(s, 1)
        };
        let msb = |t: &mut Self, x: Value| {
            let s = t.b.ins().ushr_imm_u(x, i64::from(bits - 1));
            t.b.ins().band_imm_u(s, 1)
        };
        let (res, cf, of) = if bits == 32 {
            // The 64-bit concatenation, shifted as a whole.
            let (hi, lo) = if left { (dst, src) } else { (src, dst) };
            let up = self.b.ins().ishl_imm_u(hi, 32);
            let cat = self.b.ins().bor(up, lo);
            if left {
                let shifted = self.b.ins().ishl(cat, n);
                let res = self.b.ins().ushr_imm_u(shifted, 32);
                let sixty_four = self.b.ins().iconst(types::I64, 64);
                let out = self.b.ins().isub(sixty_four, n);
                let cf = bit(self, cat, out);
                let top = msb(self, res);
                (res, cf, self.b.ins().bxor(top, cf))
            } else {
                let shifted = self.b.ins().ushr(cat, n);
                let res = self.truncate(shifted, 32);
                let cf = bit(self, cat, n_minus_1);
                let last = self.b.ins().ushr(cat, n_minus_1);
                let last = self.truncate(last, 32);
                let (a, b) = (msb(self, res), msb(self, last));
                (res, cf, self.b.ins().bxor(a, b))
            }
        } else {
            let sixty_four = self.b.ins().iconst(types::I64, 64);
            let rest = self.b.ins().isub(sixty_four, n);
            if left {
                let a = self.b.ins().ishl(dst, n);
                let b = self.b.ins().ushr(src, rest);
                let res = self.b.ins().bor(a, b);
                let cf = bit(self, dst, rest);
                let top = msb(self, res);
                (res, cf, self.b.ins().bxor(top, cf))
            } else {
                let a = self.b.ins().ushr(dst, n);
                let b = self.b.ins().ishl(src, rest);
                let res = self.b.ins().bor(a, b);
                let cf = bit(self, dst, n_minus_1);
                // The sign before the last step: the destination's for a count of 1, else
                // source bit n - 2; the sign after it, source bit n - 1.
                let n_minus_2 = self.b.ins().iadd_imm_s(n, -2);
                let from_src = bit(self, src, n_minus_2);
                let dst_sign = msb(self, dst);
                let one = self.b.ins().icmp_imm_u(IntCC::Equal, n, 1);
                let sign_before = self.b.ins().select(one, dst_sign, from_src);
                let sign_after = bit(self, src, n_minus_1);
                (res, cf, self.b.ins().bxor(sign_before, sign_after))
            }
        };
        let after = self.flags_value(res, bits, cf, of, AF);
        let zero = self.b.ins().icmp_imm_u(IntCC::Equal, n, 0);
        let fl = self.b.ins().select(zero, before, after);
        self.set_materialized(fl, bits);
        let res = self.b.ins().select(zero, dst, res);
        self.write_reg(r, res);
    }

    /// ROL/ROR of a register by a nonzero (masked) immediate, as `ops::shift` does them:
    /// the rotation is the count modulo the width; CF is the bit that came around, OF the
    /// interpreter's (defined by the SDM for a count of 1); the other flags stay.
    pub(super) fn rotate(&mut self, i: &Instruction) {
        use crane86_x86::flags::{CF, OF};
        let r = i.op_register(0);
        let bits = r.size() as u32 * 8;
        let n = (i.immediate(1) & if bits == 64 { 0x3F } else { 0x1F }) as u32;
        let left = i.mnemonic() == Mnemonic::Rol;
        // As a left rotation by `k`.
        let k = if left {
            n % bits
        } else {
            (bits - n % bits) % bits
        };
        let before = self.arith_flags_now();
        let v = self.operand(i, 0, bits);
        let res = if k == 0 {
            v
        } else {
            let up = self.b.ins().ishl_imm_u(v, i64::from(k));
            let down = self.b.ins().ushr_imm_u(v, i64::from(bits - k));
            let x = self.b.ins().bor(up, down);
            self.truncate(x, bits)
        };
        let bit = |t: &mut Self, at: u32| {
            let s = t.b.ins().ushr_imm_u(res, i64::from(at));
            t.b.ins().band_imm_u(s, 1)
        };
        let msb = bit(self, bits - 1);
        let (cf, of) = if left {
            let cf = bit(self, 0);
            (cf, self.b.ins().bxor(msb, cf))
        } else {
            let next = bit(self, bits - 2);
            (msb, self.b.ins().bxor(msb, next))
        };
        let kept = self.b.ins().band_imm_s(before, !((CF | OF) as i64));
        let fl = self.b.ins().bor(kept, cf);
        let of = self.b.ins().ishl_imm_u(of, 11);
        let fl = self.b.ins().bor(fl, of);
        self.set_materialized(fl, bits);
        self.write_reg(r, res);
    }

    /// BSF/BSR of a register, as `ops::bits` does them: a zero source sets ZF (the other
    /// arithmetic flags clear) and leaves the destination alone (all 64 bits); otherwise
    /// the index of the lowest (highest) set bit, ZF clear, SF and PF of the index.
    pub(super) fn bit_scan(&mut self, i: &Instruction) {
        let bits = i.op_register(0).size() as u32 * 8;
        let src = self.operand(i, 1, bits);
        self.bit_scan_of(i, src);
    }

    /// BT, BTS, BTR or BTC of a register by a register or an immediate offset: CF from the
    /// bit before, then (but for BT) the register with that bit set, cleared or flipped.
    pub(super) fn bit_test(&mut self, i: &Instruction) {
        let r = i.op_register(0);
        let bits = r.size() as u32 * 8;
        let v = self.operand(i, 0, bits);
        self.bit_test_of(i, v);
        if i.mnemonic() == Mnemonic::Bt {
            return;
        }
        let off = self.operand(i, 1, bits);
        let at = self.b.ins().band_imm_u(off, i64::from(bits - 1));
        let one = self.b.ins().iconst(types::I64, 1);
        let mask = self.b.ins().ishl(one, at);
        let r_new = match i.mnemonic() {
            Mnemonic::Bts => self.b.ins().bor(v, mask),
            Mnemonic::Btr => self.b.ins().band_not(v, mask),
            _ => self.b.ins().bxor(v, mask),
        };
        self.write_reg(r, r_new);
    }

    /// BT of `v` (the first operand's value; for a memory operand with a register offset,
    /// the word the offset falls in), as `ops::bits` does it: CF = the bit at the offset
    /// modulo the width, the other flags as they were.
    pub(super) fn bit_test_of(&mut self, i: &Instruction, v: Value) {
        use crane86_x86::flags::CF;
        let bits = match i.op_kind(0) {
            OpKind::Register => i.op_register(0).size() as u32 * 8,
            _ => 8 * i.memory_size().size() as u32,
        };
        let before = self.arith_flags_now();
        let off = self.operand(i, 1, bits);
        let at = self.b.ins().band_imm_u(off, i64::from(bits - 1));
        let shifted = self.b.ins().ushr(v, at);
        let cf = self.b.ins().band_imm_u(shifted, 1);
        let rest = self.b.ins().band_imm_s(before, !(CF as i64));
        let fl = self.b.ins().bor(rest, cf);
        self.set_materialized(fl, bits);
    }

    /// BSF/BSR of `src` (the source operand's value, zero-extended) into the destination
    /// register of `i`.
    pub(super) fn bit_scan_of(&mut self, i: &Instruction, src: Value) {
        use crane86_x86::flags::ZF;
        let r = i.op_register(0);
        let bits = r.size() as u32 * 8;
        let (k, _) = gpr_part(r).expect("a GPR");
        let old = self.gpr(k);
        let index = if i.mnemonic() == Mnemonic::Bsf {
            self.b.ins().ctz(src)
        } else {
            let lead = self.b.ins().clz(src);
            let top = self.b.ins().iconst(types::I64, 63);
            self.b.ins().isub(top, lead)
        };
        let zero = self.b.ins().icmp_imm_u(IntCC::Equal, src, 0);
        let zsp = self.zsp(index, bits);
        let found = self.b.ins().band_imm_s(zsp, !(ZF as i64));
        let zf = self.b.ins().iconst(types::I64, ZF as i64);
        let fl = self.b.ins().select(zero, zf, found);
        self.set_materialized(fl, bits);
        let v = self.b.ins().select(zero, old, index);
        self.set_gpr(k, v);
    }

    /// TZCNT/LZCNT of a register, as `ops::bits` counts them: the trailing (leading) zeros
    /// of the source at its width, the width for a zero source; CF = the source is zero,
    /// ZF = the count is zero, the other arithmetic flags clear.
    pub(super) fn count_zeros(&mut self, i: &Instruction) {
        use crane86_x86::flags::{CF, ZF};
        let r = i.op_register(0);
        let bits = r.size() as u32 * 8;
        let src = self.operand(i, 1, bits);
        let zero = self.b.ins().icmp_imm_u(IntCC::Equal, src, 0);
        let n = if i.mnemonic() == Mnemonic::Tzcnt {
            let ctz = self.b.ins().ctz(src);
            let width = self.b.ins().iconst(types::I64, i64::from(bits));
            self.b.ins().select(zero, width, ctz)
        } else {
            // The source is zero-extended: its leading zeros above the width do not count.
            let clz = self.b.ins().clz(src);
            self.b.ins().iadd_imm_s(clz, -i64::from(64 - bits))
        };
        let none = self.b.ins().icmp_imm_u(IntCC::Equal, n, 0);
        let flag = |t: &mut Self, set: Value, bit: u64| {
            let v = t.b.ins().uextend(types::I64, set);
            t.b.ins().ishl_imm_u(v, i64::from(bit.trailing_zeros()))
        };
        let cf = flag(self, zero, CF);
        let zf = flag(self, none, ZF);
        let fl = self.b.ins().bor(cf, zf);
        self.set_materialized(fl, bits);
        self.write_reg(r, n);
    }

    /// IMUL r, r (two operands) or IMUL r, r, imm (32/64-bit), with the interpreter's flags
    /// (`ops::muldiv`): CF = OF = the signed product does not fit, ZF SF PF of the result,
    /// AF = 0.
    pub(super) fn imul(&mut self, i: &Instruction) {
        let r = i.op_register(0);
        let bits = r.size() as u32 * 8;
        let (x, y) = if i.op_count() == 3 { (1, 2) } else { (0, 1) };
        let a = self.operand(i, x, bits);
        let b = self.operand(i, y, bits);
        let (low, ovf) = if bits == 64 {
            let low = self.b.ins().imul(a, b);
            let high = self.b.ins().smulhi(a, b);
            let sign = self.b.ins().sshr_imm_u(low, 63);
            (low, self.b.ins().icmp(IntCC::NotEqual, high, sign))
        } else {
            let sext = |t: &mut Self, v: Value| {
                let up = t.b.ins().ishl_imm_u(v, 32);
                t.b.ins().sshr_imm_u(up, 32)
            };
            let (sa, sb) = (sext(self, a), sext(self, b));
            let product = self.b.ins().imul(sa, sb);
            let low = self.truncate(product, 32);
            let back = sext(self, low);
            (low, self.b.ins().icmp(IntCC::NotEqual, back, product))
        };
        let ovf = self.b.ins().uextend(types::I64, ovf);
        self.materialized_flags(low, bits, ovf, ovf, 0);
        self.write_reg(r, low);
    }

    /// MUL r32/r64, with the interpreter's flags (`ops::muldiv`): CF = OF = the high half is
    /// not zero, ZF SF PF of the low half, AF = 0.
    pub(super) fn mul(&mut self, i: &Instruction) {
        let bits = i.op_register(0).size() as u32 * 8;
        let src = self.operand(i, 0, bits);
        self.mul_of(i, bits, src);
    }

    /// MUL of the accumulator by `src` (the `bits`-wide operand's value, zero-extended).
    pub(super) fn mul_of(&mut self, i: &Instruction, bits: u32, src: Value) {
        debug_assert!(matches!(i.mnemonic(), Mnemonic::Mul));
        let acc = self.gpr(0);
        let acc = self.truncate(acc, bits);
        let (low, high) = if bits == 64 {
            (self.b.ins().imul(acc, src), self.b.ins().umulhi(acc, src))
        } else {
            let product = self.b.ins().imul(acc, src);
            let low = self.truncate(product, 32);
            (low, self.b.ins().ushr_imm_u(product, 32))
        };
        let ovf = self.b.ins().icmp_imm_u(IntCC::NotEqual, high, 0);
        let ovf = self.b.ins().uextend(types::I64, ovf);
        self.materialized_flags(low, bits, ovf, ovf, 0);
        let (acc_reg, dx) = if bits == 64 {
            (Register::RAX, Register::RDX)
        } else {
            (Register::EAX, Register::EDX)
        };
        self.write_reg(acc_reg, low);
        self.write_reg(dx, high);
    }

    /// DIV r32/r64 (instruction `index`) when the quotient fits and the divisor is not zero
    /// (see [`Inline::Div`]); the flags stay as they were (as `ops::muldiv` leaves them).
    pub(super) fn div(&mut self, i: &Instruction, index: usize) {
        let bits = i.op_register(0).size() as u32 * 8;
        let d = self.operand(i, 0, bits);
        let (ok, n) = self.div_guard(bits, d);
        self.guarded(index, ok, |t| {
            t.div_of(bits, n, d);
            t.retire(i.next_ip());
        });
    }

    /// Whether DIV by `d` (`bits` wide, zero-extended) can run inline, and the dividend
    /// it then has (RAX, or EDX:EAX).
    pub(super) fn div_guard(&mut self, bits: u32, d: Value) -> (Value, Value) {
        let rax = self.gpr(0);
        let rdx = self.gpr(2);
        let (n, high) = if bits == 64 {
            (rax, rdx)
        } else {
            let low = self.truncate(rax, 32);
            let high = self.truncate(rdx, 32);
            let up = self.b.ins().ishl_imm_u(high, 32);
            (self.b.ins().bor(up, low), high)
        };
        // The quotient fits exactly when the high half is below the divisor (then the
        // divisor is not zero either).
        let fits = self.b.ins().icmp(IntCC::UnsignedLessThan, high, d);
        (fits, n)
    }

    /// The quotient and remainder of dividend `n` by `d` into the accumulator and DX,
    /// where [`Self::div_guard`] said yes (so `d` is not zero, and the quotient fits). A
    /// 64-bit dividend with a high half (RDX) takes [`Self::div_wide`].
    pub(super) fn div_of(&mut self, bits: u32, n: Value, d: Value) {
        let (q, r) = if bits == 64 {
            let high = self.gpr(2);
            let (narrow, wide, join) = (
                self.b.create_block(),
                self.b.create_block(),
                self.b.create_block(),
            );
            self.b.append_block_param(join, types::I64);
            self.b.append_block_param(join, types::I64);
            self.b.ins().brif(high, wide, &[], narrow, &[]);
            self.b.seal_block(narrow);
            self.b.seal_block(wide);
            self.b.switch_to_block(narrow);
            let q = self.b.ins().udiv(n, d);
            let r = self.b.ins().urem(n, d);
            self.b.ins().jump(join, &[q.into(), r.into()]);
            self.b.switch_to_block(wide);
            let (q, r) = self.div_wide(high, n, d);
            self.b.ins().jump(join, &[q.into(), r.into()]);
            self.b.seal_block(join);
            self.b.switch_to_block(join);
            let p = self.b.block_params(join);
            (p[0], p[1])
        } else {
            (self.b.ins().udiv(n, d), self.b.ins().urem(n, d))
        };
        let (acc_reg, dx) = if bits == 64 {
            (Register::RAX, Register::RDX)
        } else {
            (Register::EAX, Register::EDX)
        };
        self.write_reg(acc_reg, q);
        self.write_reg(dx, r);
    }

    /// `high:low` divided by `d` where `high < d` (so the quotient fits in 64 bits): the
    /// quotient and the remainder, by long division in two 32-bit digits on the normalized
    /// divisor (Knuth's algorithm D, as in Hacker's Delight's `divlu`).
    fn div_wide(&mut self, high: Value, low: Value, d: Value) -> (Value, Value) {
        let shift = self.b.ins().clz(d);
        let dn = self.b.ins().ishl(d, shift);
        // (high:low) << shift; `low >> (64 - shift)` as two shifts, so that a shift of 0
        // brings in nothing.
        let back = self.b.ins().iconst(types::I64, 63);
        let back = self.b.ins().isub(back, shift);
        let half = self.b.ins().ushr_imm_u(low, 1);
        let carry = self.b.ins().ushr(half, back);
        let up = self.b.ins().ishl(high, shift);
        let un32 = self.b.ins().bor(up, carry);
        let un10 = self.b.ins().ishl(low, shift);
        let vn1 = self.b.ins().ushr_imm_u(dn, 32);
        let vn0 = self.b.ins().band_imm_u(dn, 0xFFFF_FFFF);
        let un1 = self.b.ins().ushr_imm_u(un10, 32);
        let un0 = self.b.ins().band_imm_u(un10, 0xFFFF_FFFF);
        let (q1, un21) = self.quotient_digit(un32, un1, dn, vn1, vn0);
        let (q0, rest) = self.quotient_digit(un21, un0, dn, vn1, vn0);
        let q1 = self.b.ins().ishl_imm_u(q1, 32);
        let q = self.b.ins().bor(q1, q0);
        let r = self.b.ins().ushr(rest, shift);
        (q, r)
    }

    /// One 32-bit digit of `(u * 2^32 + next) / dn`, where `u < dn`, `dn` is normalized
    /// (top bit set) with halves `vn1:vn0`, and `next < 2^32`: the digit and the remainder.
    /// The estimate from the high half is at most two too large; each correction is a
    /// select.
    fn quotient_digit(
        &mut self,
        u: Value,
        next: Value,
        dn: Value,
        vn1: Value,
        vn0: Value,
    ) -> (Value, Value) {
        let q = self.b.ins().udiv(u, vn1);
        let qv = self.b.ins().imul(q, vn1);
        let rhat = self.b.ins().isub(u, qv);
        // Too large while q >= 2^32 or q * vn0 > rhat * 2^32 + next (tested only while
        // rhat < 2^32, where that sum fits).
        let too_large = |t: &mut Self, q: Value, rhat: Value| {
            let wide =
                t.b.ins()
                    .icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, q, 1 << 32);
            let qv0 = t.b.ins().imul(q, vn0);
            let r = t.b.ins().ishl_imm_u(rhat, 32);
            let r = t.b.ins().bor(r, next);
            let over = t.b.ins().icmp(IntCC::UnsignedGreaterThan, qv0, r);
            t.b.ins().bor(wide, over)
        };
        let (mut q, mut rhat) = (q, rhat);
        let mut go = self.b.ins().iconst(types::I8, 1);
        for _ in 0..2 {
            let big = too_large(self, q, rhat);
            let fix = self.b.ins().band(go, big);
            let q1 = self.b.ins().iadd_imm_s(q, -1);
            let r1 = self.b.ins().iadd(rhat, vn1);
            q = self.b.ins().select(fix, q1, q);
            rhat = self.b.ins().select(fix, r1, rhat);
            // Another look only after a correction that left rhat below 2^32.
            let small = self
                .b
                .ins()
                .icmp_imm_u(IntCC::UnsignedLessThan, rhat, 1 << 32);
            go = self.b.ins().band(fix, small);
        }
        let top = self.b.ins().ishl_imm_u(u, 32);
        let top = self.b.ins().bor(top, next);
        let qd = self.b.ins().imul(q, dn);
        (q, self.b.ins().isub(top, qd))
    }

    /// NOT (no flags), NEG (a SUB from 0 in the lazy record), INC/DEC (their own records,
    /// with the CF from before in `aux`), as `ops::alu` records them.
    pub(super) fn unary(&mut self, i: &Instruction) {
        let r = i.op_register(0);
        let bits = r.size() as u32 * 8;
        let v = self.operand(i, 0, bits);
        let m = i.mnemonic();
        if m == Mnemonic::Not {
            let res = self.b.ins().bnot(v);
            self.write_reg(r, res);
            return;
        }
        let res = if m == Mnemonic::Neg {
            let zero = self.b.ins().iconst(types::I64, 0);
            let res = self.b.ins().isub(zero, v);
            let res = self.truncate(res, bits);
            self.tracked.flags = Some(PendingFlags::sub(bits, zero, v, res));
            res
        } else {
            self.inc_dec_values(m == Mnemonic::Inc, bits, v)
        };
        self.write_reg(r, res);
    }

    /// INC (`inc`) or DEC of `v` (`bits` wide): the result, with the flags pending (CF from
    /// before kept in the record's `aux`, as the interpreter keeps it).
    pub(super) fn inc_dec_values(&mut self, inc: bool, bits: u32, v: Value) -> Value {
        let cf = self.cond_value(2);
        let cf = self.b.ins().uextend(types::I64, cf);
        let one = self.b.ins().iconst(types::I64, 1);
        let (res, kind) = if inc {
            (self.b.ins().iadd_imm_s(v, 1), CcOp::Inc8)
        } else {
            (self.b.ins().iadd_imm_s(v, -1), CcOp::Dec8)
        };
        let res = self.truncate(res, bits);
        self.tracked.flags = Some(PendingFlags {
            op: CcOp::sized(kind, bits),
            res,
            src: one,
            a: v,
            bits,
            kind,
            aux: Some(cf),
        });
        res
    }

    pub(super) fn alu(&mut self, i: &Instruction) {
        let bits = i.op_register(0).size() as u32 * 8;
        let a = self.operand(i, 0, bits);
        let bv = self.operand(i, 1, bits);
        let m = i.mnemonic();
        if matches!(m, Mnemonic::Adc | Mnemonic::Sbb) {
            // The carry-in is the CF from before, kept in the record's `aux`.
            let c = self.cond_value(2);
            let c = self.b.ins().uextend(types::I64, c);
            let (res, kind) = if m == Mnemonic::Adc {
                let s = self.b.ins().iadd(a, bv);
                (self.b.ins().iadd(s, c), CcOp::Adc8)
            } else {
                let s = self.b.ins().isub(a, bv);
                (self.b.ins().isub(s, c), CcOp::Sbb8)
            };
            let res = self.truncate(res, bits);
            self.tracked.flags = Some(PendingFlags {
                op: CcOp::sized(kind, bits),
                res,
                src: bv,
                a,
                bits,
                kind,
                aux: Some(c),
            });
            self.write_reg(i.op_register(0), res);
            return;
        }
        self.alu_values(i, bits, a, bv);
    }

    /// CMPXCHG of `old` (the destination, zero-extended) with the accumulator: the flags of
    /// CMP accumulator, `old`; RAX gets `old` when they differ (the 32-bit form
    /// zero-extends, the 8/16-bit forms keep the rest), else stays. Returns what the
    /// destination gets: `src` when equal, else `old` (written back unchanged).
    pub(super) fn cmpxchg_values(&mut self, bits: u32, old: Value, src: Value) -> Value {
        let rax = self.gpr(RAX);
        let acc = self.truncate(rax, bits);
        let diff = self.b.ins().isub(acc, old);
        let res = self.truncate(diff, bits);
        self.tracked.flags = Some(PendingFlags::sub(bits, acc, old, res));
        let equal = self.b.ins().icmp(IntCC::Equal, acc, old);
        let loaded = match bits {
            32 | 64 => old,
            _ => {
                let kept = self.b.ins().band_imm_s(rax, !((1i64 << bits) - 1));
                self.b.ins().bor(kept, old)
            }
        };
        let new_rax = self.b.ins().select(equal, rax, loaded);
        self.set_gpr(RAX, new_rax);
        self.b.ins().select(equal, src, old)
    }

    /// The ALU op of `i` on `a` and `bv` (zero-extended `bits`-bit values): pending flags,
    /// and the result written to operand 0 when it is a register and the op writes.
    pub(super) fn alu_values(&mut self, i: &Instruction, bits: u32, a: Value, bv: Value) {
        let ins = self.b.ins();
        let (res, kind, write) = match i.mnemonic() {
            Mnemonic::Add | Mnemonic::Xadd => (ins.iadd(a, bv), CcOp::Add8, true),
            Mnemonic::Sub => (ins.isub(a, bv), CcOp::Sub8, true),
            Mnemonic::Cmp => (ins.isub(a, bv), CcOp::Sub8, false),
            Mnemonic::And => (ins.band(a, bv), CcOp::Logic8, true),
            Mnemonic::Test => (ins.band(a, bv), CcOp::Logic8, false),
            Mnemonic::Or => (ins.bor(a, bv), CcOp::Logic8, true),
            _ => (ins.bxor(a, bv), CcOp::Logic8, true),
        };
        let res = self.truncate(res, bits);
        let src = if kind == CcOp::Logic8 {
            self.b.ins().iconst(types::I64, 0)
        } else {
            bv
        };
        self.tracked.flags = Some(PendingFlags {
            op: CcOp::sized(kind, bits),
            res,
            src,
            a,
            bits,
            kind,
            aux: None,
        });
        if write && i.op0_kind() == OpKind::Register {
            self.write_reg(i.op_register(0), res);
        }
    }
}
