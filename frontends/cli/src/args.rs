//! Command-line syntax (clap derive) and its translation into a [`MachineConfig`]. Flag names
//! follow QEMU where QEMU has one (`-m`, `--kernel`, `--initrd`, `--append`, `--bios`,
//! `--accel`, `--serial`, `--icount`).

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use crane86_machine::config::{
    parse_mem_size, ClockMode, EngineSwitch, FlatEntryMode, ImageSource, KernelConfig,
    KernelFormat, MachineConfig, SerialSink, TripleFaultPolicy, DEFAULT_MAX_RESETS,
};
use crane86_machine::{choose_auto, demo, EngineKind};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "crane86",
    version,
    about = "crane86: a full-system x86 PC emulator",
    long_about = "crane86: a full-system x86 PC emulator.\n\n\
        Exit status: the guest's debug-exit status ((value << 1) | 1, as QEMU's isa-debug-exit \
        on port 0xf4), 0 when the guest powers off, 2 on an error (bad arguments, a kernel that \
        does not load, a triple fault, a guest halted forever; the CPU state is printed), 124 \
        when --max-insns ran out. `crane86 demo` exits 0 when every self-check passed."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Boot a kernel (Linux bzImage, Multiboot v1 or a flat binary) or a firmware image.
    Run(RunArgs),
    /// Run the built-in self-checking demo guest (real mode → long mode, integer workload).
    Demo(DemoArgs),
}

/// Options shared by `run` and `demo`.
#[derive(Args, Debug)]
pub struct CommonArgs {
    /// Execution engine: `interp` (the interpreter), `jit` (Cranelift translation of hot
    /// blocks), `kvm` (the host CPU through /dev/kvm), or `auto`: kvm when /dev/kvm works and
    /// the CPU has hardware virtualization (vmx/svm), else jit. The choice and its reason are
    /// logged at info level (RUST_LOG=info) and shown by --stats.
    #[arg(long, value_name = "ENGINE", default_value = "auto", value_parser = accel_parser())]
    pub accel: Accel,
    /// Continue the running guest under another engine: `ENGINE@N` after N guest
    /// instructions in all (k/M/G suffixes: ×10^3/10^6/10^9), `ENGINE@500ms` / `ENGINE@2s`
    /// after that much host time on the current engine (the only count-free point after kvm,
    /// which cannot count instructions), or `ENGINE@signal` when the process receives
    /// SIGUSR1. Repeat for several switches, in order. The CPU state, devices and RAM carry
    /// over at an instruction boundary.
    #[arg(long, value_name = "ENGINE@N|ENGINE@Tms|ENGINE@signal", value_parser = parse_switch)]
    pub switch_engine: Vec<EngineSwitch>,
    /// Where COM1 goes: `stdio` (guest output on stdout, unbuffered; stdin forwarded to the
    /// UART), `file:PATH` (output appended to PATH), or `none`.
    #[arg(long, value_name = "stdio|file:PATH|none", default_value = "stdio", value_parser = parse_serial)]
    pub serial: SerialSink,
    /// Print retired instructions, guest MIPS, wall time, TLB figures and the block-cache hit
    /// rate to stderr at exit. Under jit it also makes translated code count its TLB hits
    /// and chained block transitions, which costs about 2% of the run time.
    #[arg(long)]
    pub stats: bool,
    /// Deterministic guest time: every instruction takes 2^SHIFT ns (default SHIFT 0) and HLT
    /// jumps to the next timer deadline instead of sleeping (QEMU's -icount shift=N).
    #[arg(long, value_name = "SHIFT", num_args = 0..=1, default_missing_value = "0",
          value_parser = clap::value_parser!(u8).range(0..=30))]
    pub icount: Option<u8>,
    /// Stop after this many guest instructions (exit status 124).
    #[arg(long, value_name = "N")]
    pub max_insns: Option<u64>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Kernel image: a Linux bzImage (recognised by its HdrS magic; 64-bit boot protocol),
    /// else Multiboot v1 (ELF32 or a.out kludge), or a flat binary when --load-addr is given.
    /// Booted directly: no firmware runs first.
    #[arg(long, value_name = "FILE", required_unless_present = "bios")]
    pub kernel: Option<PathBuf>,
    /// Linux: the initramfs (several files are concatenated). Multiboot: modules,
    /// comma-separated (each module's string is its file name).
    #[arg(long, value_name = "FILE[,FILE...]", value_delimiter = ',')]
    pub initrd: Vec<PathBuf>,
    /// Kernel command line (a Multiboot kernel receives "<kernel path> <STR>", as with QEMU;
    /// Linux receives STR).
    #[arg(long, value_name = "STR", default_value = "")]
    pub append: String,
    /// Guest RAM: a number of MiB, or with a K/M/G/T suffix (e.g. 256M, 1G).
    #[arg(
        short = 'm',
        long = "memory",
        value_name = "SIZE",
        default_value = "128M"
    )]
    pub memory: String,
    /// Firmware image mapped at the reset vector (size a multiple of 64 KiB, ending at 4 GiB,
    /// last 128 KiB shadowed below 1 MiB). Without --kernel the CPU starts in it at F000:FFF0.
    #[arg(long, value_name = "FILE")]
    pub bios: Option<PathBuf>,
    /// Treat --kernel as a flat binary loaded at ADDR (hex with 0x, or decimal).
    #[arg(long, value_name = "ADDR", value_parser = parse_addr, requires = "kernel")]
    pub load_addr: Option<u64>,
    /// Entry point of a flat binary (default: the load address).
    #[arg(long, value_name = "ADDR", value_parser = parse_addr, requires = "load_addr")]
    pub entry: Option<u64>,
    /// Enter a flat binary in real mode (CS = DS = ES = the 64 KiB segment holding the entry,
    /// SS:SP = 0:7000) instead of 32-bit flat protected mode.
    #[arg(long, requires = "load_addr")]
    pub real_mode: bool,
    /// What a triple fault does: `shutdown` stops with the CPU state and exit status 2,
    /// `reset` resets the machine like a real PC (at most --max-resets times).
    #[arg(long, value_name = "shutdown|reset", default_value = "shutdown", value_parser = parse_policy)]
    pub triple_fault: TripleFaultPolicy,
    /// Guest resets allowed before crane86 stops with a "reset loop" error.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_RESETS)]
    pub max_resets: u32,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Workload iterations (each: a prime sieve, FNV-1a, memcpy + checksum, recursive fib,
    /// 16 page faults).
    #[arg(long, value_name = "N", default_value_t = demo::DEFAULT_ITERATIONS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub iterations: u64,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `--accel`: an engine, or `auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Auto,
    Engine(EngineKind),
}

/// Accepts `auto` and every engine name (an engine this host cannot run is refused with
/// the reason when the machine is built).
fn accel_parser() -> impl clap::builder::TypedValueParser<Value = Accel> {
    use clap::builder::TypedValueParser;
    let names: Vec<&'static str> = std::iter::once("auto")
        .chain(EngineKind::ALL.iter().map(|k| k.name()))
        .collect();
    clap::builder::PossibleValuesParser::new(names).map(|s| match s.as_str() {
        "auto" => Accel::Auto,
        name => Accel::Engine(name.parse::<EngineKind>().expect("listed engines parse")),
    })
}

fn parse_switch(s: &str) -> Result<EngineSwitch, String> {
    s.parse::<EngineSwitch>().map_err(|e| e.to_string())
}

/// The engine `--accel` names, or `auto`'s choice with its reason (logged at info level).
fn engine(common: &CommonArgs) -> (EngineKind, Option<String>) {
    match common.accel {
        Accel::Engine(kind) => (kind, None),
        Accel::Auto if common.icount.is_some() || common.max_insns.is_some() => (
            EngineKind::Jit,
            Some("--icount and --max-insns need an engine that counts instructions".to_string()),
        ),
        Accel::Auto => {
            let choice = choose_auto();
            tracing::info!(engine = %choice.engine, reason = %choice.reason, "--accel auto");
            (choice.engine, Some(choice.reason))
        }
    }
}

fn parse_serial(s: &str) -> Result<SerialSink, String> {
    match s {
        "stdio" => Ok(SerialSink::Stdio),
        "none" | "null" => Ok(SerialSink::None),
        _ => match s.strip_prefix("file:") {
            Some(p) if !p.is_empty() => Ok(SerialSink::File(PathBuf::from(p))),
            _ => Err(format!(
                "unknown serial backend {s:?} (expected stdio, file:PATH or none)"
            )),
        },
    }
}

fn parse_policy(s: &str) -> Result<TripleFaultPolicy, String> {
    match s {
        "shutdown" => Ok(TripleFaultPolicy::Shutdown),
        "reset" => Ok(TripleFaultPolicy::Reset),
        _ => Err(format!(
            "unknown triple-fault policy {s:?} (expected shutdown or reset)"
        )),
    }
}

fn parse_addr(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => s.replace('_', "").parse(),
    };
    r.map_err(|e| format!("invalid address {s:?}: {e}"))
}

fn clock(common: &CommonArgs) -> ClockMode {
    match common.icount {
        Some(shift) => ClockMode::Icount { shift },
        None => ClockMode::Host,
    }
}

impl RunArgs {
    pub fn config(&self) -> Result<MachineConfig> {
        let ram_size = parse_mem_size(&self.memory).context("parsing -m")?;
        let kernel = self.kernel.as_ref().map(|path| KernelConfig {
            image: ImageSource::File(path.clone()),
            modules: self.initrd.iter().cloned().map(ImageSource::File).collect(),
            cmdline: self.append.clone(),
            format: match self.load_addr {
                Some(load_addr) => KernelFormat::Flat {
                    load_addr,
                    entry: self.entry,
                    mode: if self.real_mode {
                        FlatEntryMode::Real
                    } else {
                        FlatEntryMode::Protected32
                    },
                },
                None => KernelFormat::Multiboot,
            },
        });
        if kernel.is_none() && !self.initrd.is_empty() {
            bail!("--initrd needs --kernel");
        }
        let (engine, engine_reason) = engine(&self.common);
        Ok(MachineConfig {
            ram_size,
            engine,
            engine_reason,
            switches: self.common.switch_engine.clone(),
            serial: self.common.serial.clone(),
            serial_input: None,
            firmware: self.bios.clone().map(ImageSource::File),
            kernel,
            clock: clock(&self.common),
            triple_fault: self.triple_fault,
            max_resets: self.max_resets,
            max_instructions: self.common.max_insns,
            detailed_stats: self.common.stats,
        })
    }
}

impl DemoArgs {
    pub fn config(&self) -> MachineConfig {
        let (engine, engine_reason) = engine(&self.common);
        MachineConfig {
            engine,
            engine_reason,
            switches: self.common.switch_engine.clone(),
            serial: self.common.serial.clone(),
            clock: clock(&self.common),
            max_instructions: self.common.max_insns,
            detailed_stats: self.common.stats,
            ..MachineConfig::demo(self.iterations)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_into_a_config() {
        let cli = Cli::try_parse_from([
            "crane86",
            "run",
            "--kernel",
            "k.elf",
            "--initrd",
            "a,b",
            "--append",
            "x y",
            "-m",
            "256M",
            "--serial",
            "file:/tmp/out",
            "--icount",
            "--stats",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        let c = r.config().unwrap();
        assert_eq!(c.ram_size, 256 << 20);
        assert!(matches!(c.serial, SerialSink::File(ref p) if p == &PathBuf::from("/tmp/out")));
        assert_eq!(c.clock, ClockMode::Icount { shift: 0 });
        let k = c.kernel.unwrap();
        assert_eq!(k.modules.len(), 2);
        assert_eq!(k.cmdline, "x y");
        assert_eq!(k.format, KernelFormat::Multiboot);
        assert!(r.common.stats);
    }

    #[test]
    fn bad_flags_are_rejected() {
        assert!(Cli::try_parse_from(["crane86", "run", "--kernel", "k", "--bogus"]).is_err());
        assert!(
            Cli::try_parse_from(["crane86", "run"]).is_err(),
            "kernel or bios required"
        );
        let e = Cli::try_parse_from(["crane86", "demo", "--accel", "warp"]).unwrap_err();
        assert!(e.to_string().contains("interp"), "{e}");
        assert!(Cli::try_parse_from(["crane86", "demo", "--serial", "tcp:1"]).is_err());
        assert_eq!(parse_addr("0x100000"), Ok(0x10_0000));
        assert_eq!(parse_addr("4096"), Ok(4096));
        assert!(parse_addr("0xZZ").is_err());
    }
}
