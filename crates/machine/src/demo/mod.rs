//! The built-in demo guest: a firmware image generated at run time with iced-x86 `code_asm`
//! that walks the CPU from RESET (real mode, F000:FFF0) through A20, a GDT, 32-bit protected
//! mode and PAE paging into 64-bit long mode, installs a #PF handler, runs an integer
//! workload and checks every result against the values the Rust side computed independently
//! ([`reference`](mod@reference)).
//!
//! Exit protocol: the guest writes a failure bitmask to the debug-exit port 0xF4 (bit `k` set
//! = check `k` of [`reference::checks`] mismatched, [`guest::UNEXPECTED_FAULT_BIT`] = a page
//! fault outside the fault region). So 0 means "all passed". The machine reports any
//! debug-exit as QEMU's status `(v << 1) | 1`; [`exit_status`] maps the demo's exit to a
//! process status: 0 when the mask is 0, otherwise the QEMU-style status (always odd, so never
//! 0).

pub mod guest;
pub mod reference;

use crate::machine::{ExitReason, RunSummary};

/// Workload iterations of `crane86 demo` without `--iterations`.
pub const DEFAULT_ITERATIONS: u64 = 10;
/// RAM the demo needs (it uses up to 18 MiB).
pub const RAM_SIZE: u64 = 64 << 20;

/// The demo firmware image for `iterations` workload iterations (128 KiB, to be mapped at the
/// reset vector).
pub fn firmware(iterations: u64) -> Vec<u8> {
    guest::build_image(iterations.max(1)).expect("demo guest assembles")
}

/// Every line the demo prints on COM1 when all checks pass, in order.
pub fn expected_lines(iterations: u64) -> Vec<String> {
    let mut lines: Vec<String> = guest::BANNERS.iter().map(|s| s.to_string()).collect();
    lines.extend(
        reference::checks(iterations.max(1))
            .iter()
            .map(reference::Check::line),
    );
    lines.push(guest::PASS_LINE.to_string());
    lines
}

/// Process exit status of a demo run: 0 when the guest reported success through debug-exit
/// with value 0, the machine's status otherwise (non-zero).
pub fn exit_status(summary: &RunSummary) -> i32 {
    match summary.reason {
        ExitReason::DebugExit(0) => 0,
        _ if summary.status == 0 => 1,
        _ => summary.status,
    }
}
