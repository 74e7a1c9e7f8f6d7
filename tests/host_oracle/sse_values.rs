//! Initial values for SSE sequences: XMM register contents (and the 16 bytes patched over a
//! memory operand) mixing random bits, interesting single- and double-precision lanes (zeros,
//! ones, values near integers and halfway cases, the largest and smallest normals, denormals,
//! infinities, quiet and signalling NaNs, conversion boundaries), integer edge lanes and short
//! "strings" for the SSE4.2 string instructions; and MXCSR values with every exception masked
//! (rounding mode, FTZ, DAZ and the sticky flags vary).

use crate::rng::Rng;

/// Interesting single-precision values (bit patterns).
fn f32_special(rng: &mut Rng) -> u32 {
    const NAMED: [f32; 19] = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -0.5,
        1.5,
        2.5,
        -2.5,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        2_147_483_648.0,             // 2^31
        -2_147_483_648.0,            // -2^31
        2_147_483_520.0,             // largest below 2^31
        4_294_967_296.0,             // 2^32
        8_388_608.0,                 // 2^23: no fraction bits left
        9_223_372_036_854_775_808.0, // 2^63
    ];
    const BITS: [u32; 14] = [
        0x3EFF_FFFF, // largest below 0.5
        0x3F7F_FFFF, // largest below 1.0
        0x0000_0001, // smallest denormal
        0x007F_FFFF, // largest denormal
        0x8040_0000, // negative denormal
        0x7F80_0000, // +inf
        0xFF80_0000, // -inf
        0x7FC0_0000, // QNaN
        0xFFC0_0000, // default NaN (QNaN indefinite)
        0x7FC1_2345, // QNaN with payload
        0x7F80_0001, // SNaN
        0xFFA0_0000, // negative SNaN
        0x7FBF_FFFF, // SNaN, all payload bits
        0xDF00_0000, // -2^63
    ];
    if rng.chance(55) {
        rng.pick(&NAMED).to_bits()
    } else {
        *rng.pick(&BITS)
    }
}

/// Interesting double-precision values (bit patterns).
fn f64_special(rng: &mut Rng) -> u64 {
    const NAMED: [f64; 24] = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -0.5,
        1.5,
        2.5,
        -2.5,
        1.0e300,
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        -f64::MIN_POSITIVE,
        2_147_483_648.0,
        -2_147_483_648.0,
        2_147_483_647.5,
        -2_147_483_648.5,
        4_294_967_296.0,
        9_223_372_036_854_775_808.0,
        -9_223_372_036_854_775_808.0,
        f32::MAX as f64,
        f32::MIN_POSITIVE as f64,
        1.0e-45, // single-precision denormal range
    ];
    const BITS: [u64; 13] = [
        0x3FDF_FFFF_FFFF_FFFF, // largest below 0.5
        0x47EF_FFFF_F000_0000, // f32::MAX + half an f32 ulp (rounds to infinity)
        0x36A0_0000_0000_0000, // 2^-149, the smallest single-precision denormal
        0x0000_0000_0000_0001, // smallest denormal
        0x000F_FFFF_FFFF_FFFF, // largest denormal
        0x8008_0000_0000_0000, // negative denormal
        0x7FF0_0000_0000_0000, // +inf
        0xFFF0_0000_0000_0000, // -inf
        0x7FF8_0000_0000_0000, // QNaN
        0xFFF8_0000_0000_0000, // default NaN
        0x7FF8_0000_1234_5678, // QNaN with payload
        0x7FF0_0000_0000_0001, // SNaN
        0xFFF4_0000_0000_0000, // negative SNaN
    ];
    if rng.chance(60) {
        rng.pick(&NAMED).to_bits()
    } else {
        *rng.pick(&BITS)
    }
}

/// A small integer plus 0, ±1/4, ±1/2 or 3/4: rounding and conversion corners.
fn near_integer(rng: &mut Rng) -> f64 {
    let whole = rng.below(201) as f64 - 100.0;
    let frac = *rng.pick(&[0.0, 0.25, 0.5, 0.75, -0.25, -0.5]);
    whole + frac
}

/// A single-precision lane: special, near an integer (maybe one ulp off), a random value of
/// moderate magnitude, or random bits.
pub fn f32_lane(rng: &mut Rng) -> u32 {
    match rng.below(10) {
        0..=3 => f32_special(rng),
        4 | 5 => {
            let bits = (near_integer(rng) as f32).to_bits();
            match rng.below(4) {
                0 => bits.wrapping_add(1),
                1 => bits.wrapping_sub(1),
                _ => bits,
            }
        }
        6..=8 => {
            let sign = (rng.next_u64() as u32) & 0x8000_0000;
            let exp = (127 + rng.below(41) as u32 - 20) << 23;
            sign | exp | (rng.next_u64() as u32 & 0x007F_FFFF)
        }
        _ => rng.next_u64() as u32,
    }
}

/// A double-precision lane, like [`f32_lane`].
pub fn f64_lane(rng: &mut Rng) -> u64 {
    match rng.below(10) {
        0..=3 => f64_special(rng),
        4 | 5 => {
            let bits = near_integer(rng).to_bits();
            match rng.below(4) {
                0 => bits.wrapping_add(1),
                1 => bits.wrapping_sub(1),
                _ => bits,
            }
        }
        6..=8 => {
            let sign = rng.next_u64() & (1 << 63);
            let exp = (1023 + rng.below(81) - 40) << 52;
            sign | exp | (rng.next_u64() & 0x000F_FFFF_FFFF_FFFF)
        }
        _ => rng.next_u64(),
    }
}

/// A 128-bit value for an XMM register or a memory operand.
pub fn xmm_value(rng: &mut Rng) -> u128 {
    match rng.below(100) {
        0..=19 => u128::from(rng.next_u64()) | u128::from(rng.next_u64()) << 64,
        20..=44 => (0..4).fold(0u128, |v, k| v | u128::from(f32_lane(rng)) << (32 * k)),
        45..=69 => u128::from(f64_lane(rng)) | u128::from(f64_lane(rng)) << 64,
        70..=81 => u128::from(rng.value()) | u128::from(rng.value()) << 64,
        82..=89 => {
            const EDGES: [u16; 9] = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0xFF80];
            (0..8).fold(0u128, |v, k| {
                let w = if rng.chance(75) {
                    *rng.pick(&EDGES)
                } else {
                    rng.next_u64() as u16
                };
                v | u128::from(w) << (16 * k)
            })
        }
        _ => {
            // A short string over a small alphabet, sometimes NUL-terminated early.
            const ALPHABET: &[u8] = b"aabcAZ09 \x80\xff";
            let end = if rng.chance(50) { rng.below(17) } else { 16 };
            (0..16u64).fold(0u128, |v, k| {
                let b = if k >= end {
                    0
                } else {
                    ALPHABET[rng.below(ALPHABET.len() as u64) as usize]
                };
                v | u128::from(b) << (8 * k)
            })
        }
    }
}

/// All sixteen initial XMM registers; some are copies of others (so equal operands, equal
/// strings and unordered pairs of the same NaN come up).
pub fn xmm_file(rng: &mut Rng) -> [u128; 16] {
    let mut x = [0u128; 16];
    for v in x.iter_mut() {
        *v = xmm_value(rng);
    }
    for _ in 0..rng.below(4) {
        let (a, b) = (rng.below(16) as usize, rng.below(16) as usize);
        x[a] = x[b];
    }
    x
}

/// MXCSR with every exception masked: usually the reset value, sometimes another rounding
/// mode, FTZ, DAZ, or sticky flags already set.
pub fn mxcsr(rng: &mut Rng) -> u32 {
    let mut m = crate::gen::MXCSR_DEFAULT;
    if rng.chance(30) {
        m |= (rng.below(4) as u32) << 13;
    }
    if rng.chance(15) {
        m |= 1 << 15; // FTZ
    }
    if rng.chance(15) {
        m |= 1 << 6; // DAZ
    }
    if rng.chance(25) {
        m |= rng.next_u64() as u32 & 0x3F;
    }
    m
}
