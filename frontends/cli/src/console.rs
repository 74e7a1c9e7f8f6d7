//! The interactive serial console (`--serial stdio` on a terminal): the terminal goes into raw
//! mode while the guest runs — keys, Ctrl-C included, reach the guest unprocessed — and is
//! restored on every exit path: [`RawTerminal`]'s `Drop` (normal exit, guest power-off, an
//! error returned to `main`), a panic hook, and handlers for SIGINT/SIGTERM/SIGHUP/SIGQUIT
//! that restore and then die of the signal as before. Keystrokes go through [`EscapeParser`]
//! (QEMU's escape keys: Ctrl-A x quits, Ctrl-A h prints help, Ctrl-A Ctrl-A sends Ctrl-A) into
//! the COM1 input channel. Guest output needs nothing here: the stdio sink writes and flushes
//! every byte (`crane86_machine::platform::serial_writer`).

use std::io::{Read, Write};
use std::sync::OnceLock;

/// Ctrl-A, the escape key.
pub const ESCAPE: u8 = 0x01;

/// What one input byte does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAction {
    /// Send this byte to the guest.
    Send(u8),
    /// Ctrl-A x: stop the emulator.
    Quit,
    /// Ctrl-A h: print the escape-key help.
    Help,
    /// Nothing yet (Ctrl-A seen) or an unknown escape command (ignored, as QEMU does).
    None,
}

/// The escape-key state machine.
#[derive(Clone, Copy, Debug, Default)]
pub struct EscapeParser {
    after_escape: bool,
}

impl EscapeParser {
    pub fn feed(&mut self, byte: u8) -> KeyAction {
        if !self.after_escape {
            if byte == ESCAPE {
                self.after_escape = true;
                return KeyAction::None;
            }
            return KeyAction::Send(byte);
        }
        self.after_escape = false;
        match byte {
            ESCAPE => KeyAction::Send(ESCAPE),
            b'x' | b'X' => KeyAction::Quit,
            b'h' | b'H' | b'?' => KeyAction::Help,
            _ => KeyAction::None,
        }
    }
}

/// The escape-key help (CR LF line ends: the terminal is raw).
pub const HELP: &str = "\r\ncrane86 console escape keys:\r\n  C-a h    print this help\r\n  C-a x    exit crane86\r\n  C-a C-a  send C-a to the guest\r\n";

/// The terminal settings to restore (saved once, before raw mode).
static SAVED_TERMIOS: OnceLock<libc::termios> = OnceLock::new();

/// Put the saved settings back on stdin. Async-signal-safe (`tcsetattr` is, and the saved
/// copy is only read).
fn restore_terminal() {
    if let Some(saved) = SAVED_TERMIOS.get() {
        // SAFETY: fd 0 is stdin; `saved` is a valid termios obtained from tcgetattr.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
        }
    }
}

/// Restores the terminal, then lets the signal kill the process as it would have.
extern "C" fn on_fatal_signal(signal: libc::c_int) {
    restore_terminal();
    // SAFETY: signal() and raise() are async-signal-safe; restoring the default action and
    // re-raising ends the process with the original signal status.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

/// Is stdin a terminal?
pub fn stdin_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 }
}

/// Raw mode on stdin for as long as this value lives.
#[derive(Debug)]
pub struct RawTerminal(());

impl RawTerminal {
    /// Switch stdin to raw mode (no line editing, echo, or signal keys; output post-processing
    /// kept so "\n" still starts a new line) and install the restore-on-exit hooks.
    pub fn enable() -> std::io::Result<RawTerminal> {
        // SAFETY: termios is plain data; zeroed is a valid value to be overwritten.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0, and `saved` is a valid out-pointer.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let _ = SAVED_TERMIOS.set(saved);
        let mut raw = saved;
        // SAFETY: `raw` is a valid termios.
        unsafe { libc::cfmakeraw(&mut raw) };
        raw.c_oflag |= libc::OPOST | libc::ONLCR;
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: fd 0 and a valid termios.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        install_restore_hooks();
        Ok(RawTerminal(()))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn install_restore_hooks() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
    }));
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: the handler only calls async-signal-safe functions (tcsetattr, signal,
        // raise) and reads an already-initialised OnceLock.
        unsafe {
            libc::signal(
                signal,
                on_fatal_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// Read stdin on a thread, run each byte through the escape keys, and feed the guest's COM1
/// through the returned channel. Ctrl-A x restores the terminal and exits with status 0.
pub fn spawn_console_reader() -> std::io::Result<crossbeam_channel::Receiver<u8>> {
    let (tx, rx) = crane86_machine::config::serial_channel();
    std::thread::Builder::new()
        .name("serial-console".into())
        .spawn(move || {
            let mut parser = EscapeParser::default();
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 256];
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                };
                for &byte in &buf[..n] {
                    match parser.feed(byte) {
                        KeyAction::Send(b) => {
                            if tx.send(b).is_err() {
                                return;
                            }
                        }
                        KeyAction::Help => {
                            let _ = std::io::stderr().write_all(HELP.as_bytes());
                        }
                        KeyAction::Quit => {
                            restore_terminal();
                            eprintln!("\ncrane86: terminated (C-a x)");
                            std::process::exit(0);
                        }
                        KeyAction::None => {}
                    }
                }
            }
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(bytes: &[u8]) -> Vec<KeyAction> {
        let mut p = EscapeParser::default();
        bytes.iter().map(|&b| p.feed(b)).collect()
    }

    #[test]
    fn plain_bytes_pass_through() {
        assert_eq!(
            feed_all(b"ls\r\x03"),
            vec![
                KeyAction::Send(b'l'),
                KeyAction::Send(b's'),
                KeyAction::Send(b'\r'),
                KeyAction::Send(0x03)
            ]
        );
    }

    #[test]
    fn escape_commands() {
        assert_eq!(feed_all(b"\x01x"), vec![KeyAction::None, KeyAction::Quit]);
        assert_eq!(feed_all(b"\x01h"), vec![KeyAction::None, KeyAction::Help]);
        assert_eq!(
            feed_all(b"\x01\x01a"),
            vec![
                KeyAction::None,
                KeyAction::Send(ESCAPE),
                KeyAction::Send(b'a')
            ]
        );
    }

    #[test]
    fn unknown_escape_is_dropped_and_state_resets() {
        assert_eq!(
            feed_all(b"\x01zx"),
            vec![KeyAction::None, KeyAction::None, KeyAction::Send(b'x')]
        );
    }

    #[test]
    fn help_text_uses_crlf() {
        assert!(HELP.contains("C-a x"));
        assert!(!HELP.replace("\r\n", "").contains('\n'));
    }
}
