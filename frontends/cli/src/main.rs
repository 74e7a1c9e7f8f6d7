//! The `crane86` command: parse the command line ([`args`]), build a `PcMachine`, run it, and
//! turn the outcome into the process exit status (see `crane86 --help`).

mod args;
mod console;

use args::{Cli, Command};
use clap::Parser;
use crane86_machine::config::SerialSink;
use crane86_machine::{demo, PcMachine};
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// Exit status of an emulator-side error (bad input, triple fault, dead halt).
const ERROR_STATUS: u8 = 2;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(status) => ExitCode::from(status.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("crane86: error: {e:#}");
            ExitCode::from(ERROR_STATUS)
        }
    }
}

/// `RUST_LOG` (default `warn`). Cranelift's own info-level output (every compiled function)
/// stays off unless `RUST_LOG` names cranelift.
fn log_filter() -> EnvFilter {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_string());
    let spec = if spec.contains("cranelift") {
        spec
    } else {
        format!("{spec},cranelift_jit=warn,cranelift_codegen=warn")
    };
    EnvFilter::try_new(&spec).unwrap_or_else(|e| {
        eprintln!("crane86: ignoring RUST_LOG={spec:?}: {e}");
        EnvFilter::new("warn")
    })
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let (mut config, stats, is_demo) = match &cli.command {
        Command::Run(r) => (r.config()?, r.common.stats, false),
        Command::Demo(d) => (d.config(), d.common.stats, true),
    };
    // An interactive console on a terminal: raw mode until this guard drops (every return
    // from here; signals and panics are covered by the hooks it installs).
    let _raw_terminal = if matches!(config.serial, SerialSink::Stdio)
        && config.serial_input.is_none()
        && console::stdin_is_tty()
    {
        let raw = console::RawTerminal::enable()
            .map_err(|e| anyhow::anyhow!("putting the terminal in raw mode: {e}"))?;
        config.serial_input = Some(
            console::spawn_console_reader()
                .map_err(|e| anyhow::anyhow!("starting the console reader thread: {e}"))?,
        );
        Some(raw)
    } else {
        None
    };
    let mut machine = PcMachine::new(config)?;
    let result = machine.run();
    match result {
        Ok(summary) => {
            let status = if is_demo {
                demo::exit_status(&summary)
            } else {
                summary.status
            };
            if stats {
                eprint!("{summary}");
                if is_demo {
                    eprintln!(
                        "  {:<36} {status}",
                        "demo exit status (0 = all checks passed)"
                    );
                }
            }
            Ok(status)
        }
        Err(e) => {
            if stats {
                eprintln!(
                    "crane86 stats: {} instructions retired before the error",
                    machine.instructions()
                );
            }
            Err(e.into())
        }
    }
}
