//! The demo workload computed on the host, independently of the guest code: these are the
//! values the guest compares its own results against, and the lines the demo must print.

/// Upper bound (exclusive) of the prime sieve.
pub const SIEVE_LIMIT: u64 = 65_536;
/// Bytes in the hashed / copied buffer (a multiple of 8).
pub const BUFFER_LEN: u64 = 16 * 1024;
/// Seed, multiplier and increment of the 64-bit LCG that fills the buffer.
pub const LCG_SEED: u64 = 0x0123_4567_89AB_CDEF;
pub const LCG_MUL: u64 = 6_364_136_223_846_793_005;
pub const LCG_INC: u64 = 1_442_695_040_888_963_407;
/// FNV-1a 64-bit parameters.
pub const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;
/// Argument of the recursive Fibonacci call.
pub const FIB_N: u64 = 20;
/// Not-present pages touched per iteration (each takes one #PF whose handler maps it).
pub const FAULT_PAGES: u64 = 16;
/// Left-rotate amount of the copy checksum (`c = rotl(c, 5) + q` over every qword).
pub const CHECKSUM_ROTATE: u32 = 5;

/// One self-checked result of the demo workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Text printed before the value, e.g. `"sieve: primes below 65536, summed over 10 runs = "`.
    pub label: String,
    pub expected: u64,
}

impl Check {
    /// The line the guest prints for this check when its result matches.
    pub fn line(&self) -> String {
        format!(
            "{}{} (0x{:016x}) ok",
            self.label, self.expected, self.expected
        )
    }
}

/// The buffer contents: the LCG's successive states, little-endian.
pub fn buffer() -> Vec<u8> {
    let mut x = LCG_SEED;
    let mut out = Vec::with_capacity(BUFFER_LEN as usize);
    for _ in 0..BUFFER_LEN / 8 {
        x = x.wrapping_mul(LCG_MUL).wrapping_add(LCG_INC);
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn primes_below(limit: u64) -> u64 {
    let mut composite = vec![false; limit as usize];
    let mut count = 0;
    for i in 2..limit as usize {
        if !composite[i] {
            count += 1;
            let mut j = i * i;
            while j < limit as usize {
                composite[j] = true;
                j += i;
            }
        }
    }
    count
}

fn fib(n: u64) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a.wrapping_add(b));
    }
    a
}

/// The checks of a run with `iterations` workload iterations, in the order the guest prints
/// them. The bit of check `k` in the debug-exit failure mask is `1 << k`.
pub fn checks(iterations: u64) -> Vec<Check> {
    let buf = buffer();
    let mut hash = FNV_OFFSET;
    let mut checksum = 0u64;
    for _ in 0..iterations {
        for &b in &buf {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
        for q in buf.chunks_exact(8) {
            checksum = checksum
                .rotate_left(CHECKSUM_ROTATE)
                .wrapping_add(u64::from_le_bytes(q.try_into().unwrap()));
        }
    }
    let mut fault_sum = 0u64;
    for it in 0..iterations {
        for p in 0..FAULT_PAGES {
            fault_sum += it * FAULT_PAGES + p + 1;
        }
    }
    vec![
        Check {
            label: format!("sieve: primes below {SIEVE_LIMIT}, summed over {iterations} runs = "),
            expected: primes_below(SIEVE_LIMIT) * iterations,
        },
        Check {
            label: format!("fnv1a-64 over {BUFFER_LEN} bytes x {iterations} = "),
            expected: hash,
        },
        Check {
            label: format!("memcpy {BUFFER_LEN} bytes x {iterations}, rotate-add checksum = "),
            expected: checksum,
        },
        Check {
            label: format!("fib({FIB_N}) recursive, summed over {iterations} runs = "),
            expected: fib(FIB_N) * iterations,
        },
        Check {
            label: "page faults taken and resolved = ".to_string(),
            expected: FAULT_PAGES * iterations,
        },
        Check {
            label: "sum of values stored into faulted-in pages = ".to_string(),
            expected: fault_sum,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values_match_known_facts() {
        assert_eq!(primes_below(100), 25);
        assert_eq!(primes_below(65_536), 6542);
        assert_eq!(fib(20), 6765);
        // FNV-1a 64 of "a" is a published test vector.
        let mut h = FNV_OFFSET;
        h ^= u64::from(b'a');
        h = h.wrapping_mul(FNV_PRIME);
        assert_eq!(h, 0xAF63_DC4C_8601_EC8C);
        let c = checks(3);
        assert_eq!(c[0].expected, 3 * 6542);
        assert_eq!(c[4].expected, 48);
        assert_eq!(buffer().len() as u64, BUFFER_LEN);
        // Two passes must not cancel out (they would with rotate-xor by a multiple of 64).
        assert_ne!(checks(2)[2].expected, 0);
    }
}
