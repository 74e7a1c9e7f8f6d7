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
