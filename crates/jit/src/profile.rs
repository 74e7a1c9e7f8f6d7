//! `CRANE86_JIT_PROFILE=1`: count the instructions native code hands to the step helper (by
//! iced `Code`, weighted by execution) and print the most frequent ones to stderr when the
//! compiler is dropped. The measurement that picks the next inline forms.

use crate::EnvSwitch;
use iced_x86::{Code, Formatter, Instruction, NasmFormatter};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

const CODES: usize = 8192;
static COUNTS: [AtomicU64; CODES] = [const { AtomicU64::new(0) }; CODES];
/// One decoded example of each code (for the printout).
static EXAMPLES: Mutex<Vec<Option<Instruction>>> = Mutex::new(Vec::new());

static SWITCH: EnvSwitch = EnvSwitch::new("CRANE86_JIT_PROFILE");

pub fn enabled() -> bool {
    SWITCH.on()
}

pub fn count(i: &Instruction) {
    let c = i.code() as usize;
    if c < CODES && COUNTS[c].fetch_add(1, Ordering::Relaxed) == 0 {
        if let Ok(mut ex) = EXAMPLES.lock() {
            if ex.len() < CODES {
                ex.resize(CODES, None);
            }
            ex[c] = Some(*i);
        }
    }
}

/// Print the top 60 helper-called codes (if profiling is on).
pub fn report() {
    if !enabled() {
        return;
    }
    let mut v: Vec<(u64, usize)> = (0..CODES)
        .map(|c| (COUNTS[c].load(Ordering::Relaxed), c))
        .filter(|&(n, _)| n > 0)
        .collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    let total: u64 = v.iter().map(|x| x.0).sum();
    eprintln!("jit profile: {total} helper calls");
    let ex = EXAMPLES.lock().map(|e| e.clone()).unwrap_or_default();
    let mut f = NasmFormatter::new();
    for &(n, c) in v.iter().take(60) {
        let mut text = String::new();
        if let Some(Some(i)) = ex.get(c) {
            f.format(i, &mut text);
        }
        let code: Option<Code> = ex.get(c).and_then(|i| i.map(|i| i.code()));
        eprintln!(
            "{:>12} {:5.2}% {:?}  e.g. {}",
            n,
            100.0 * n as f64 / total.max(1) as f64,
            code,
            text
        );
    }
}
