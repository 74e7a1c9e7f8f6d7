//! `MachineConfig`: everything needed to build a [`crate::PcMachine`] — RAM size, engine,
//! serial sink, what to boot (firmware image, kernel + modules + command line), the clock
//! mode and the triple-fault policy — plus the QEMU-style size parser (`256M`, `1G`, `512`).

use crate::engine::EngineKind;
use crate::error::MachineError;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Default guest RAM (QEMU's default is 128 MiB).
pub const DEFAULT_RAM: u64 = 128 << 20;
/// Default number of guest resets before the machine gives up (a reset loop).
pub const DEFAULT_MAX_RESETS: u32 = 16;

/// An image to load: a file, or bytes already in memory (tests, embedders, the demo).
#[derive(Clone, Debug)]
pub enum ImageSource {
    File(PathBuf),
    Memory { name: String, bytes: Vec<u8> },
}

impl ImageSource {
    /// The name used in error messages: the path, or the given name.
    pub fn name(&self) -> String {
        match self {
            ImageSource::File(p) => p.display().to_string(),
            ImageSource::Memory { name, .. } => name.clone(),
        }
    }

    /// The image bytes.
    pub fn read(&self) -> Result<Vec<u8>, MachineError> {
        match self {
            ImageSource::File(p) => std::fs::read(p).map_err(|reason| MachineError::ReadImage {
                path: p.clone(),
                reason,
            }),
            ImageSource::Memory { bytes, .. } => Ok(bytes.clone()),
        }
    }
}

/// CPU mode a flat binary kernel is entered in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlatEntryMode {
    /// 32-bit protected mode, flat 4 GiB CS (0x08) and DS/ES/FS/GS/SS (0x10), paging off,
    /// ESP = load address (the stack grows down below the image), EAX = EBX = 0.
    #[default]
    Protected32,
    /// Real mode: CS = DS = ES = the 64 KiB-aligned segment containing the entry
    /// (`(entry & !0xFFFF) >> 4`), IP = entry & 0xFFFF, SS:SP = 0:0x7000. The entry must be
    /// below 1 MiB.
    Real,
}

/// How to interpret the kernel image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelFormat {
    /// Multiboot v1 (header in the first 8 KiB). The default.
    #[default]
    Multiboot,
    /// A raw binary copied to `load_addr` and entered at `entry` (default: `load_addr`).
    Flat {
        load_addr: u64,
        entry: Option<u64>,
        mode: FlatEntryMode,
    },
}

/// A kernel to boot directly (no firmware runs first).
#[derive(Clone, Debug)]
pub struct KernelConfig {
    pub image: ImageSource,
    /// Multiboot modules (`--initrd a,b,c`), in order.
    pub modules: Vec<ImageSource>,
    /// Kernel command line (`--append`).
    pub cmdline: String,
    pub format: KernelFormat,
}

/// Where COM1's output goes.
#[derive(Clone, Debug, Default)]
pub enum SerialSink {
    /// Guest output to stdout (unbuffered); stdin is forwarded to the UART.
    #[default]
    Stdio,
    /// Guest output appended to a file; no input.
    File(PathBuf),
    /// Output discarded; no input.
    None,
    /// Output collected in memory (tests and embedders); no input.
    Buffer(SerialBuffer),
}

/// A shared in-memory serial capture.
#[derive(Clone, Debug, Default)]
pub struct SerialBuffer(pub Arc<Mutex<Vec<u8>>>);

impl SerialBuffer {
    pub fn new() -> SerialBuffer {
        SerialBuffer::default()
    }

    /// Everything written so far, lossily decoded as UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl Write for SerialBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A channel for [`MachineConfig::serial_input`]: send bytes on the `Sender` to type them
/// into COM1.
pub fn serial_channel() -> (
    crossbeam_channel::Sender<u8>,
    crossbeam_channel::Receiver<u8>,
) {
    crossbeam_channel::unbounded()
}

/// Where guest time comes from: the host monotonic clock (HLT sleeps until the next device
/// deadline), or `Icount { shift }` — every retired instruction takes `2^shift` ns of guest
/// time and HLT jumps straight to the next deadline (QEMU's `-icount shift=N`), so runs are
/// deterministic.
pub use crane86_devices::ClockMode;

/// What a triple fault does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TripleFaultPolicy {
    /// Stop with an error that dumps the CPU state (non-zero exit status).
    #[default]
    Shutdown,
    /// Reset the machine and continue, as a real PC does.
    Reset,
}

/// Everything needed to build a [`crate::PcMachine`].
#[derive(Clone, Debug)]
pub struct MachineConfig {
    pub ram_size: u64,
    pub engine: EngineKind,
    pub serial: SerialSink,
    /// COM1 input from this channel (embedders, tests). When `None`, [`SerialSink::Stdio`]
    /// forwards the process's stdin and the other sinks have no input.
    pub serial_input: Option<crossbeam_channel::Receiver<u8>>,
    /// Firmware mapped at the reset vector (`--bios`). Without a kernel the CPU starts in it.
    pub firmware: Option<ImageSource>,
    /// A kernel booted directly (Multiboot or flat binary).
    pub kernel: Option<KernelConfig>,
    pub clock: ClockMode,
    pub triple_fault: TripleFaultPolicy,
    /// Guest resets (port 0x92 / 8042 / 0xCF9 / triple-fault policy) allowed in a row, each
    /// within `machine::RESET_LOOP_WINDOW` instructions of the last, before giving up.
    pub max_resets: u32,
    /// Stop after this many instructions (None = unlimited).
    pub max_instructions: Option<u64>,
    /// Why `engine` was chosen when `--accel auto` chose it (shown in `--stats`).
    pub engine_reason: Option<String>,
    /// Engine switches during the run, in order (`--switch-engine`).
    pub switches: Vec<EngineSwitch>,
    /// Collect the counters that cost time in translated code (`--stats`): the JIT's TLB
    /// hits and chained transitions. Without them those figures leave native code out.
    pub detailed_stats: bool,
}

/// When an engine switch happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchPoint {
    /// When this many guest instructions have retired since the start (all engines).
    Instructions(u64),
    /// When the current engine has run this long (host time): the switch point for kvm,
    /// which cannot count instructions.
    AfterTime(std::time::Duration),
    /// When the process receives SIGUSR1.
    Signal,
}

/// `--switch-engine ENGINE@WHEN`: stop the guest at an instruction boundary and continue it
/// under `engine` with its full state (CPU, devices, RAM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineSwitch {
    pub engine: EngineKind,
    pub at: SwitchPoint,
}

impl std::str::FromStr for EngineSwitch {
    type Err = MachineError;

    /// `ENGINE@N` (N guest instructions, with an optional k/M/G suffix: ×10^3, 10^6, 10^9),
    /// `ENGINE@Tms` / `ENGINE@Ts` (after T of host time on the current engine), or
    /// `ENGINE@signal` (on SIGUSR1).
    fn from_str(spec: &str) -> Result<EngineSwitch, MachineError> {
        let bad = |reason: String| MachineError::BadEngineSwitch {
            spec: spec.to_string(),
            reason,
        };
        let (engine, when) = spec
            .split_once('@')
            .ok_or_else(|| bad("expected ENGINE@N or ENGINE@signal, e.g. interp@5M".into()))?;
        let engine: EngineKind = engine.parse().map_err(bad)?;
        let time = |digits: &str, unit_ms: u64| {
            digits
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(unit_ms))
                .map(|ms| SwitchPoint::AfterTime(std::time::Duration::from_millis(ms)))
        };
        let at = if when == "signal" {
            SwitchPoint::Signal
        } else if let Some(t) = when.strip_suffix("ms").and_then(|d| time(d, 1)) {
            t
        } else if let Some(t) = when.strip_suffix('s').and_then(|d| time(d, 1000)) {
            t
        } else {
            let (digits, scale) = match when.as_bytes().last() {
                Some(b'k' | b'K') => (&when[..when.len() - 1], 1_000),
                Some(b'M') => (&when[..when.len() - 1], 1_000_000),
                Some(b'G') => (&when[..when.len() - 1], 1_000_000_000),
                _ => (when, 1),
            };
            let n: u64 = digits.parse().map_err(|_| {
                bad(format!(
                    "{when:?} is neither an instruction count (e.g. 5000, 5M) nor \"signal\""
                ))
            })?;
            SwitchPoint::Instructions(
                n.checked_mul(scale)
                    .ok_or_else(|| bad(format!("{when:?} is too large")))?,
            )
        };
        Ok(EngineSwitch { engine, at })
    }
}

/// Check that a run starting on `first` can make `switches`: instruction points strictly
/// increase, and each follows an engine that counts instructions (kvm cannot).
pub fn check_switches(first: EngineKind, switches: &[EngineSwitch]) -> Result<(), MachineError> {
    let mut engine = first;
    let mut last = 0;
    for s in switches {
        if let SwitchPoint::Instructions(n) = s.at {
            let spec = format!("{}@{n}", s.engine);
            if !engine.counts_instructions() {
                return Err(MachineError::BadEngineSwitch {
                    spec,
                    reason: format!(
                        "the engine running before it ({engine}) cannot count guest instructions; use a time ({}@500ms) or {}@signal",
                        s.engine, s.engine
                    ),
                });
            }
            if n <= last && last > 0 {
                return Err(MachineError::BadEngineSwitch {
                    spec,
                    reason: format!(
                        "instruction points must increase (the previous one is {last})"
                    ),
                });
            }
            last = n;
        }
        engine = s.engine;
    }
    Ok(())
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            ram_size: DEFAULT_RAM,
            engine: EngineKind::Interp,
            serial: SerialSink::Stdio,
            serial_input: None,
            firmware: None,
            kernel: None,
            clock: ClockMode::Host,
            triple_fault: TripleFaultPolicy::Shutdown,
            max_resets: DEFAULT_MAX_RESETS,
            max_instructions: None,
            engine_reason: None,
            switches: Vec::new(),
            detailed_stats: false,
        }
    }
}

impl MachineConfig {
    /// The built-in demo guest with `iterations` workload iterations.
    pub fn demo(iterations: u64) -> MachineConfig {
        MachineConfig {
            ram_size: crate::demo::RAM_SIZE,
            firmware: Some(ImageSource::Memory {
                name: "built-in demo firmware".to_string(),
                bytes: crate::demo::firmware(iterations),
            }),
            ..MachineConfig::default()
        }
    }
}

/// Parse a memory size the way QEMU's `-m` does: a plain number is MiB; suffixes `K`, `M`,
/// `G`, `T` (optionally followed by `B`/`iB`, case-insensitive) scale by powers of 1024.
pub fn parse_mem_size(text: &str) -> Result<u64, MachineError> {
    let bad = || MachineError::BadMemSize(text.to_string());
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits_end == 0 {
        return Err(bad());
    }
    let n: u64 = t[..digits_end].parse().map_err(|_| bad())?;
    let suffix = t[digits_end..].to_ascii_uppercase();
    let shift = match suffix.trim_end_matches("IB").trim_end_matches('B') {
        "" if suffix.is_empty() => 20,
        "" => 0, // "512B": bytes
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_switches_parse_and_are_checked() {
        let sw = |s: &str| s.parse::<EngineSwitch>();
        assert_eq!(
            sw("interp@5M").unwrap(),
            EngineSwitch {
                engine: EngineKind::Interp,
                at: SwitchPoint::Instructions(5_000_000)
            }
        );
        assert_eq!(sw("jit@1200").unwrap().at, SwitchPoint::Instructions(1200));
        assert_eq!(
            sw("kvm@250ms").unwrap().at,
            SwitchPoint::AfterTime(std::time::Duration::from_millis(250))
        );
        assert_eq!(
            sw("jit@2s").unwrap().at,
            SwitchPoint::AfterTime(std::time::Duration::from_secs(2))
        );
        assert_eq!(sw("interp@signal").unwrap().at, SwitchPoint::Signal);
        for bad in [
            "interp",
            "warp@5",
            "jit@soon",
            "jit@99999999999999999999G",
            "jit@",
        ] {
            let e = sw(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
        let ok = [
            sw("interp@1000").unwrap(),
            sw("kvm@2000").unwrap(),
            sw("jit@1s").unwrap(),
        ];
        check_switches(EngineKind::Jit, &ok).unwrap();
        let after_kvm = [sw("kvm@1000").unwrap(), sw("jit@5000").unwrap()];
        let e = check_switches(EngineKind::Jit, &after_kvm)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot count"), "{e}");
        let backwards = [sw("interp@5000").unwrap(), sw("jit@5000").unwrap()];
        assert!(check_switches(EngineKind::Jit, &backwards).is_err());
    }

    #[test]
    fn mem_sizes_parse_like_qemu() {
        assert_eq!(parse_mem_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_mem_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_mem_size("512").unwrap(), 512 << 20);
        assert_eq!(parse_mem_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_mem_size("2g").unwrap(), 2 << 30);
        let e = parse_mem_size("12Q").unwrap_err();
        assert!(e.to_string().contains("12Q"), "{e}");
        assert!(parse_mem_size("M").is_err());
        assert!(parse_mem_size("99999999999999T").is_err());
    }
}
