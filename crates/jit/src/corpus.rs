//! `CRANE86_JIT_CORPUS=<file>`: append every block the backend compiles to `file`, one line
//! per block, so that the compile cost of a real guest's blocks can be measured offline and
//! repeatably (`benches/jit_compile.rs` reads the file back with [`parse_line`]).
//!
//! A line is `rip paddr bits entry-flags tzcnt lzcnt insn...`: addresses in hex, the lazy-flags
//! op the block starts with by name (`-` for none), the model features as `0`/`1`, then each
//! instruction as `ip:bytes` (hex), re-encoded by iced-x86 from the decoded form (the same
//! instruction, not always the same bytes: redundant prefixes are dropped).

use crate::backend::{Job, ModelFeatures};
use crane86_x86::flags::CcOp;
use iced_x86::{Decoder, DecoderOptions, Encoder, Instruction};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

static FILE: Mutex<Option<BufWriter<File>>> = Mutex::new(None);
/// Set when the file cannot be opened: recording stops after one warning.
static FAILED: AtomicBool = AtomicBool::new(false);

fn path() -> Option<&'static str> {
    static PATH: OnceLock<Option<String>> = OnceLock::new();
    PATH.get_or_init(|| std::env::var("CRANE86_JIT_CORPUS").ok())
        .as_deref()
}

pub fn enabled() -> bool {
    path().is_some() && !FAILED.load(Ordering::Relaxed)
}

/// Append `job` to the corpus file (opened on first use; a failure is reported once and
/// recording stops).
pub fn record(job: &Job) {
    let Some(path) = path() else { return };
    let Ok(mut file) = FILE.lock() else { return };
    if file.is_none() {
        match OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => *file = Some(BufWriter::new(f)),
            Err(e) => {
                tracing::warn!(%path, error = %e, "jit: cannot write the block corpus");
                FAILED.store(true, Ordering::Relaxed);
                return;
            }
        }
    }
    let Some(f) = file.as_mut() else { return };
    let Some(line) = line(job) else { return };
    // Flushed per line: the process may end by exit() without dropping the writer.
    let _ = writeln!(f, "{line}").and_then(|()| f.flush());
}

/// The corpus line of `job` (`None` if an instruction does not re-encode, which should not
/// happen for decoded code).
pub fn line(job: &Job) -> Option<String> {
    let mut line = format!(
        "{:x} {:x} {} {} {} {}",
        job.rip,
        job.paddr,
        job.bits,
        job.entry_flags
            .map_or("-".to_string(), |op| format!("{op:?}")),
        u8::from(job.features.tzcnt),
        u8::from(job.features.lzcnt),
    );
    for i in &job.insns {
        let mut enc = Encoder::new(job.bits);
        enc.encode(i, i.ip()).ok()?;
        let _ = write!(line, " {:x}:", i.ip());
        for b in enc.take_buffer() {
            let _ = write!(line, "{b:02x}");
        }
    }
    Some(line)
}

/// One corpus block: its instructions, code size, RIP, physical address, entry flags op and
/// model features (what a [`Job`] needs besides its block and counters).
pub struct CorpusBlock {
    pub insns: Vec<Instruction>,
    pub bits: u32,
    pub rip: u64,
    pub paddr: u64,
    pub entry_flags: Option<CcOp>,
    pub features: ModelFeatures,
}

/// Parse one line written by [`record`]; the error names the field that is wrong.
/// `flags_by_name` maps an op's name back to the op (the caller's serde, say).
pub fn parse_line(
    line: &str,
    flags_by_name: impl Fn(&str) -> Option<CcOp>,
) -> Result<CorpusBlock, String> {
    let mut f = line.split_ascii_whitespace();
    let mut field = |what: &str| f.next().ok_or_else(|| format!("no {what} in {line:?}"));
    let hex = |s: &str, what: &str| {
        u64::from_str_radix(s, 16).map_err(|e| format!("bad {what} {s:?}: {e}"))
    };
    let rip = hex(field("rip")?, "rip")?;
    let paddr = hex(field("paddr")?, "paddr")?;
    let bits_text = field("bits")?;
    let bits: u32 = bits_text
        .parse()
        .map_err(|e| format!("bad bits {bits_text:?}: {e}"))?;
    let flags_text = field("entry flags")?;
    let entry_flags = match flags_text {
        "-" => None,
        name => Some(flags_by_name(name).ok_or_else(|| format!("unknown flags op {name:?}"))?),
    };
    let tzcnt = field("tzcnt")? == "1";
    let lzcnt = field("lzcnt")? == "1";
    let mut insns = Vec::new();
    for chunk in f {
        let (ip, bytes) = chunk
            .split_once(':')
            .ok_or_else(|| format!("bad instruction {chunk:?}"))?;
        let ip = hex(ip, "instruction address")?;
        let bytes = (0..bytes.len() / 2)
            .map(|k| u8::from_str_radix(&bytes[2 * k..2 * k + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| format!("bad instruction bytes {chunk:?}: {e}"))?;
        let insn = Decoder::with_ip(bits, &bytes, ip, DecoderOptions::NONE).decode();
        if insn.is_invalid() {
            return Err(format!("instruction {chunk:?} does not decode"));
        }
        insns.push(insn);
    }
    Ok(CorpusBlock {
        insns,
        bits,
        rip,
        paddr,
        entry_flags,
        features: ModelFeatures { tzcnt, lzcnt },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_line_parses_back_to_the_same_block() {
        // mov rax, [rbx+8]; add rax, rcx; jne $+0x12
        let code: &[u8] = &[0x48, 0x8B, 0x43, 0x08, 0x48, 0x01, 0xC8, 0x75, 0x10];
        let insns: Vec<Instruction> = Decoder::with_ip(64, code, 0x1000, DecoderOptions::NONE)
            .into_iter()
            .collect();
        let job = Job {
            insns: insns.clone(),
            own_len: insns.len(),
            bits: 64,
            rip: 0x1000,
            paddr: 0x7000,
            linked_block: None,
            counters: false,
            entry_flags: Some(CcOp::Sub32),
            features: ModelFeatures {
                tzcnt: true,
                lzcnt: false,
            },
        };
        let text = line(&job).expect("decoded code re-encodes");
        let by_name = |n: &str| (n == "Sub32").then_some(CcOp::Sub32);
        let b = parse_line(&text, by_name).expect("the line parses");
        assert_eq!(b.insns, insns);
        assert_eq!((b.rip, b.paddr, b.bits), (0x1000, 0x7000, 64));
        assert_eq!(b.entry_flags, Some(CcOp::Sub32));
        assert_eq!(b.features, job.features);
        let none = text.replace(" Sub32 ", " - ");
        assert_eq!(
            parse_line(&none, by_name).expect("parses").entry_flags,
            None
        );
        assert!(parse_line(&text.replace(" Sub32 ", " Nope "), by_name).is_err());
        assert!(parse_line("1000 7000", by_name).is_err());
    }
}
