//! What the vCPU loop needs from the device model beyond the engine-facing [`Platform`]
//! ([`MachinePlatform`]: retired-instruction reporting, timer servicing, the next deadline, an
//! icount time skip for HLT, system reset), its implementation for `crane86-devices`'
//! [`PcPlatform`], and the serial plumbing built from a [`SerialSink`].

use crate::config::{ClockMode, MachineConfig, SerialSink};
use crate::error::MachineError;
use crane86_devices::{Clock, ClockState, PcConfig, PcPlatform, Platform};
use std::io::Write;

/// The device model as the machine's vCPU loop drives it. The platform owns the guest clock;
/// [`Platform::now_ns`] is guest time.
pub trait MachinePlatform: Platform {
    /// Report the engine's retired-instruction count (icount clocks derive time from it).
    fn set_retired_instructions(&mut self, retired: u64);
    /// Bring device time up to `now_ns` (fire due timers, raise IRQs, drain serial input).
    fn service(&mut self, now_ns: u64);
    /// Guest time of the next timer event, if any is armed.
    fn next_deadline_ns(&self) -> Option<u64>;
    /// For icount clocks, instructions until guest time reaches `deadline_ns` (at least 1);
    /// `None` for host clocks.
    fn instructions_until(&self, deadline_ns: u64) -> Option<u64>;
    /// Icount clocks: jump guest time forward to `ns` (a halted CPU skips idle time). Host
    /// clocks ignore it.
    fn skip_time_to(&mut self, ns: u64);
    /// System reset (devices back to power-on state; the serial sink is kept).
    fn reset(&mut self);
}

impl MachinePlatform for PcPlatform {
    fn set_retired_instructions(&mut self, retired: u64) {
        PcPlatform::set_retired_instructions(self, retired);
    }
    fn service(&mut self, now_ns: u64) {
        PcPlatform::service(self, now_ns);
    }
    fn next_deadline_ns(&self) -> Option<u64> {
        PcPlatform::next_deadline_ns(self)
    }
    fn instructions_until(&self, deadline_ns: u64) -> Option<u64> {
        self.clock()
            .instructions_until(self.retired_instructions(), deadline_ns)
    }
    fn skip_time_to(&mut self, ns: u64) {
        if !self.clock().is_deterministic() || ns <= self.now_ns() {
            return;
        }
        let retired = self.retired_instructions();
        let state = ClockState {
            mode: self.clock().mode(),
            now_ns: ns,
        };
        self.set_clock(Clock::restore(&state, retired));
    }
    fn reset(&mut self) {
        PcPlatform::reset(self);
    }
}

/// Unbuffered standard output: every write is flushed at once, so guest prompts appear.
struct UnbufferedStdout;

impl Write for UnbufferedStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = std::io::stdout().lock();
        out.write_all(buf)?;
        out.flush()?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

/// Open the writer COM1's output goes to.
pub fn serial_writer(sink: &SerialSink) -> Result<Box<dyn Write + Send>, MachineError> {
    Ok(match sink {
        SerialSink::Stdio => Box::new(UnbufferedStdout),
        SerialSink::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|reason| MachineError::SerialFile {
                    path: path.clone(),
                    reason,
                })?,
        ),
        SerialSink::None => Box::new(std::io::sink()),
        SerialSink::Buffer(b) => Box::new(b.clone()),
    })
}

/// Build the PC platform for `config`: COM1 to the serial sink; COM1 input from
/// `config.serial_input`, or else for [`SerialSink::Stdio`] from stdin through a reader thread
/// and a crossbeam channel; the clock, CMOS memory
/// sizes. Icount runs start the RTC at a fixed date (2000-01-01) so they are reproducible.
pub fn pc_platform(
    config: &MachineConfig,
    low_ram: u64,
    high_ram: u64,
) -> Result<PcPlatform, MachineError> {
    let mut pc = PcConfig::new(config.ram_size);
    pc.ram_below_4g = low_ram;
    pc.ram_above_4g = high_ram;
    pc.serial_out = serial_writer(&config.serial)?;
    pc.serial_in = match (&config.serial_input, &config.serial) {
        (Some(rx), _) => Some(rx.clone()),
        (None, SerialSink::Stdio) => {
            Some(crane86_devices::spawn_stdin_reader(None).map_err(MachineError::StdinReader)?)
        }
        (None, _) => None,
    };
    pc.clock = match config.clock {
        ClockMode::Host => Clock::host(),
        ClockMode::Icount { shift } => {
            pc.start_time_unix = FIXED_RTC_START;
            Clock::icount(shift)
        }
    };
    Ok(PcPlatform::new(pc))
}

/// RTC time at guest time 0 in icount runs: 2000-01-01 00:00:00 UTC.
pub const FIXED_RTC_START: i64 = 946_684_800;
