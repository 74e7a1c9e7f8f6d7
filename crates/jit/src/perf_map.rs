//! `CRANE86_PERF_MAP=1`: write `/tmp/perf-<pid>.map` (the format `perf report` reads for JIT
//! code), one line per translated block named by its guest RIP and physical address, so host
//! profiles attribute the time inside translated code to guest code (and one per helper
//! thunk and shared exit of each translation module, by name).

use crate::EnvSwitch;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Mutex;

static FILE: Mutex<Option<BufWriter<File>>> = Mutex::new(None);

static SWITCH: EnvSwitch = EnvSwitch::new("CRANE86_PERF_MAP");

pub fn enabled() -> bool {
    SWITCH.on()
}

/// One translated block: its code address and size, and the guest RIP and physical address
/// it was translated from.
pub fn record(code: *const u8, size: u32, rip: u64, paddr: u64) {
    record_named(code, size, &format!("guest_{rip:x}_p{paddr:x}"));
}

/// Code of the translation module that is not a block (a helper thunk, the shared exit),
/// under `name`.
pub fn record_named(code: *const u8, size: u32, name: &str) {
    let Ok(mut file) = FILE.lock() else { return };
    if file.is_none() {
        let path = format!("/tmp/perf-{}.map", std::process::id());
        match File::create(&path) {
            Ok(f) => *file = Some(BufWriter::new(f)),
            Err(e) => {
                tracing::warn!(%path, error = %e, "jit: cannot write the perf map");
                SWITCH.turn_off();
                return;
            }
        }
    }
    if let Some(f) = file.as_mut() {
        // Flushed per line: the process may end by exit() without dropping the writer.
        let _ = writeln!(f, "{:x} {:x} {name}", code as usize, size).and_then(|()| f.flush());
    }
}
