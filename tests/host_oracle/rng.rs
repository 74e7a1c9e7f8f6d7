//! A small seeded PRNG (xorshift64*) for the generator and the scratch-memory fill. No
//! allocation, so the forked child can use it too.

#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Avoid the all-zero state and decorrelate nearby seeds.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// An "interesting" 64-bit value: edge cases, small numbers, sign boundaries, or random.
    pub fn value(&mut self) -> u64 {
        match self.below(10) {
            0 => *self.pick(&[0, 1, u64::MAX, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF]),
            1 => *self.pick(&[
                0x7FFF_FFFF,
                0x8000_0000,
                0xFFFF_FFFF,
                0x1_0000_0000,
                0x7FFF_FFFF_FFFF_FFFF,
                0x8000_0000_0000_0000,
            ]),
            2 => self.below(64),
            3 => self.below(64).wrapping_neg(),
            4 => 1u64 << self.below(64),
            _ => self.next_u64(),
        }
    }
}

/// Fill `len` bytes at `dst` from a PRNG seeded with `seed` (used identically on the host and
/// for the emulated guest).
///
/// # Safety
/// `dst..dst+len` must be writable.
pub unsafe fn fill(dst: *mut u8, len: usize, seed: u64) {
    let mut r = Rng::new(seed);
    let mut k = 0;
    while k < len {
        let v = r.next_u64().to_le_bytes();
        let n = (len - k).min(8);
        // SAFETY: the caller guarantees `dst..dst+len` is writable and `k + n <= len`.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), dst.add(k), n) };
        k += n;
    }
}
