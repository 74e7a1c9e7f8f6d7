//! Lane arithmetic over vectors held in a `u128` (an MMX value uses the low 8 bytes): lane
//! get/set, lane-wise maps, sign extension and signed/unsigned saturation.

/// Lane `k` of width `w` bytes, zero-extended.
#[inline]
pub fn get(v: u128, w: usize, k: usize) -> u64 {
    let bits = 8 * w;
    let lane = v >> (bits * k);
    if bits == 64 {
        lane as u64
    } else {
        (lane as u64) & ((1u64 << bits) - 1)
    }
}

/// `v` with lane `k` of width `w` replaced by the low bits of `x`.
#[inline]
pub fn set(v: u128, w: usize, k: usize, x: u64) -> u128 {
    let bits = 8 * w;
    let m: u128 = if bits == 64 {
        u64::MAX.into()
    } else {
        ((1u64 << bits) - 1).into()
    };
    let shift = bits * k;
    (v & !(m << shift)) | ((u128::from(x) & m) << shift)
}

/// Lane `k` of width `w` sign-extended.
#[inline]
pub fn sget(v: u128, w: usize, k: usize) -> i64 {
    sx(get(v, w, k), w)
}

/// Sign-extend the low `w` bytes of `x`.
#[inline]
pub fn sx(x: u64, w: usize) -> i64 {
    let shift = 64 - 8 * w as u32;
    ((x << shift) as i64) >> shift
}

/// Saturate to a signed lane of `w` bytes (returned as its unsigned bit pattern).
#[inline]
pub fn sat_s(x: i64, w: usize) -> u64 {
    let bits = 8 * w as u32;
    let max = (1i64 << (bits - 1)) - 1;
    let min = -(1i64 << (bits - 1));
    x.clamp(min, max) as u64
}

/// Saturate to an unsigned lane of `w` bytes.
#[inline]
pub fn sat_u(x: i64, w: usize) -> u64 {
    let max = (1i64 << (8 * w as u32)) - 1;
    x.clamp(0, max) as u64
}

/// Lane-wise `f(a_k, b_k)` over `bytes` bytes with lanes of `w` bytes.
#[inline]
pub fn map2(a: u128, b: u128, bytes: usize, w: usize, f: impl Fn(u64, u64) -> u64) -> u128 {
    let mut r = 0u128;
    for k in 0..bytes / w {
        r = set(r, w, k, f(get(a, w, k), get(b, w, k)));
    }
    r
}

/// Lane-wise `f(b_k)`.
#[inline]
pub fn map1(b: u128, bytes: usize, w: usize, f: impl Fn(u64) -> u64) -> u128 {
    let mut r = 0u128;
    for k in 0..bytes / w {
        r = set(r, w, k, f(get(b, w, k)));
    }
    r
}

/// The low `bytes` bytes of `v` (MMX results keep only 8 bytes).
#[inline]
pub fn trunc(v: u128, bytes: usize) -> u128 {
    if bytes >= 16 {
        v
    } else {
        v & ((1u128 << (8 * bytes)) - 1)
    }
}

/// All ones in a lane of `w` bytes.
#[inline]
pub fn ones(w: usize) -> u64 {
    if w == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * w)) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_and_saturation() {
        let v = 0x8899_AABB_CCDD_EEFF_0011_2233_4455_6677u128;
        assert_eq!(get(v, 2, 0), 0x6677);
        assert_eq!(get(v, 8, 1), 0x8899_AABB_CCDD_EEFF);
        assert_eq!(sget(v, 1, 15), -0x78);
        assert_eq!(set(0, 4, 3, 0x1_2345_6789), 0x2345_6789u128 << 96);
        assert_eq!(sat_s(200, 1), 127);
        assert_eq!(sat_s(-200, 1) as u8, 0x80);
        assert_eq!(sat_u(-5, 2), 0);
        assert_eq!(sat_u(70000, 2), 0xFFFF);
        assert_eq!(map2(3, 4, 8, 2, |a, b| a + b), 7);
    }
}
