//! The 8042 keyboard controller at ports 0x60 (data) and 0x64 (status / command), with a
//! minimal PS/2 keyboard behind it and an empty auxiliary (mouse) port.
//!
//! What matters to a PC guest that boots: the status register, the command byte (0x20/0x60),
//! the controller self-test (0xAA → 0x55) and interface tests (0xAB, 0xA9 → 0x00), keyboard
//! and aux port enable/disable (0xAD/0xAE, 0xA7/0xA8), the output port (read 0xD0, write
//! 0xD1) whose bit 1 gates A20 and whose bit 0 low resets the CPU, the A20 shortcuts 0xDD/0xDF,
//! pulse-output commands (0xF0–0xFF; 0xFE pulses reset), the loopback writes 0xD2/0xD3, and
//! the keyboard's reset (0xFF → ACK 0xFA, then BAT 0xAA) and common commands (LEDs, typematic,
//! scan-code set, identify, enable/disable, echo). A20 and reset requests leave through
//! [`I8042::take_action`] as [`PlatformAction`]s.
//!
//! Every command completes instantly, so the input buffer is never full. Responses of the
//! controller are delivered before keyboard data; keyboard data waits while the keyboard
//! interface is disabled (command byte bit 4). IRQ 1 / IRQ 12 follow "output buffer full with
//! keyboard / aux data" gated by command byte bits 0 / 1.
//!
//! No mouse is attached: bytes sent to the aux device (0xD4) are answered with 0xFE and the
//! timeout status bit, which is what a controller with an empty port reports and makes guests
//! give up the mouse probe quickly. Key input from the host is injected as raw bytes with
//! [`I8042::push_scancodes`]; no set-2 → set-1 translation is applied to them (the one
//! translated reply modelled is the identify answer 0xAB 0x41).

use crate::platform::PlatformAction;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use tracing::{debug, warn};

/// Data port.
pub const DATA_PORT: u16 = 0x60;
/// Status (read) / command (write) port.
pub const COMMAND_PORT: u16 = 0x64;
/// IRQ of keyboard data.
pub const KBD_IRQ: u8 = 1;
/// IRQ of aux (mouse) data.
pub const AUX_IRQ: u8 = 12;

// Status register (port 0x64 read).
/// Status: output buffer full (a byte waits at port 0x60).
pub const STATUS_OBF: u8 = 1 << 0;
/// Status: input buffer full (never: commands complete instantly).
pub const STATUS_IBF: u8 = 1 << 1;
/// Status: system flag (set after a successful self-test; mirrors command byte bit 2).
pub const STATUS_SYS: u8 = 1 << 2;
/// Status: the last write went to the command port (A2 line).
pub const STATUS_CMD: u8 = 1 << 3;
/// Status: keyboard not inhibited by the key lock.
pub const STATUS_UNLOCKED: u8 = 1 << 4;
/// Status: the output buffer holds aux (mouse) data.
pub const STATUS_AUX_OBF: u8 = 1 << 5;
/// Status: timeout talking to the device.
pub const STATUS_TIMEOUT: u8 = 1 << 6;
/// Status: parity error.
pub const STATUS_PARITY: u8 = 1 << 7;

// Command byte (controller RAM byte 0).
/// Command byte: IRQ 1 on keyboard data.
pub const CCB_KBD_INT: u8 = 1 << 0;
/// Command byte: IRQ 12 on aux data.
pub const CCB_AUX_INT: u8 = 1 << 1;
/// Command byte: system flag.
pub const CCB_SYS: u8 = 1 << 2;
/// Command byte: ignore the keyboard lock (AT).
pub const CCB_IGNORE_LOCK: u8 = 1 << 3;
/// Command byte: keyboard interface disabled (clock held low).
pub const CCB_KBD_DISABLE: u8 = 1 << 4;
/// Command byte: aux interface disabled.
pub const CCB_AUX_DISABLE: u8 = 1 << 5;
/// Command byte: translate keyboard scan codes to set 1.
pub const CCB_TRANSLATE: u8 = 1 << 6;

// Controller commands (port 0x64 write).
/// Read controller RAM byte 0 (command byte); 0x21–0x3F read bytes 1–31.
pub const CMD_READ_RAM: u8 = 0x20;
/// Write controller RAM byte 0 with the next data byte; 0x61–0x7F write bytes 1–31.
pub const CMD_WRITE_RAM: u8 = 0x60;
/// Password installed test (answers 0xF1: none).
pub const CMD_PASSWORD_TEST: u8 = 0xA4;
/// Disable the aux interface.
pub const CMD_AUX_DISABLE: u8 = 0xA7;
/// Enable the aux interface.
pub const CMD_AUX_ENABLE: u8 = 0xA8;
/// Aux interface test (answers 0x00: OK).
pub const CMD_AUX_TEST: u8 = 0xA9;
/// Controller self-test (answers 0x55).
pub const CMD_SELF_TEST: u8 = 0xAA;
/// Keyboard interface test (answers 0x00: OK).
pub const CMD_KBD_TEST: u8 = 0xAB;
/// Disable the keyboard interface.
pub const CMD_KBD_DISABLE: u8 = 0xAD;
/// Enable the keyboard interface.
pub const CMD_KBD_ENABLE: u8 = 0xAE;
/// Read the input port.
pub const CMD_READ_INPUT: u8 = 0xC0;
/// Read the output port.
pub const CMD_READ_OUTPUT: u8 = 0xD0;
/// Write the output port with the next data byte.
pub const CMD_WRITE_OUTPUT: u8 = 0xD1;
/// Put the next data byte in the output buffer as keyboard data.
pub const CMD_WRITE_KBD_OBUF: u8 = 0xD2;
/// Put the next data byte in the output buffer as aux data.
pub const CMD_WRITE_AUX_OBUF: u8 = 0xD3;
/// Send the next data byte to the aux device.
pub const CMD_WRITE_AUX: u8 = 0xD4;
/// A20 gate off (output port bit 1 clear).
pub const CMD_A20_DISABLE: u8 = 0xDD;
/// A20 gate on.
pub const CMD_A20_ENABLE: u8 = 0xDF;
/// 0xF0–0xFF: pulse the output lines whose bit in the low nibble is 0 (bit 0 = reset).
pub const CMD_PULSE_BASE: u8 = 0xF0;
/// Pulse the reset line.
pub const CMD_RESET: u8 = 0xFE;
/// Self-test passed.
pub const SELF_TEST_OK: u8 = 0x55;

// Output port (read 0xD0, write 0xD1).
/// Output port: CPU reset line, active low (0 = reset).
pub const OUT_RESET: u8 = 1 << 0;
/// Output port: A20 gate.
pub const OUT_A20: u8 = 1 << 1;
/// Output port: aux data line.
pub const OUT_AUX_DATA: u8 = 1 << 2;
/// Output port: aux clock line.
pub const OUT_AUX_CLOCK: u8 = 1 << 3;
/// Output port: output buffer full with keyboard data (IRQ 1).
pub const OUT_KBD_OBF: u8 = 1 << 4;
/// Output port: output buffer full with aux data (IRQ 12).
pub const OUT_AUX_OBF: u8 = 1 << 5;
/// Output port: keyboard clock line.
pub const OUT_KBD_CLOCK: u8 = 1 << 6;
/// Output port: keyboard data line.
pub const OUT_KBD_DATA: u8 = 1 << 7;

// Keyboard commands (port 0x60 write with no controller command pending).
/// Keyboard: set LEDs (parameter byte follows).
pub const KBD_CMD_SET_LEDS: u8 = 0xED;
/// Keyboard: echo (answers 0xEE).
pub const KBD_CMD_ECHO: u8 = 0xEE;
/// Keyboard: get/set scan-code set (parameter byte follows; 0 = get).
pub const KBD_CMD_SCANCODE_SET: u8 = 0xF0;
/// Keyboard: identify (answers ACK, 0xAB, 0x83 or 0x41 translated).
pub const KBD_CMD_IDENTIFY: u8 = 0xF2;
/// Keyboard: set typematic rate (parameter byte follows).
pub const KBD_CMD_SET_RATE: u8 = 0xF3;
/// Keyboard: enable scanning.
pub const KBD_CMD_ENABLE: u8 = 0xF4;
/// Keyboard: disable scanning and restore defaults.
pub const KBD_CMD_DISABLE: u8 = 0xF5;
/// Keyboard: restore defaults.
pub const KBD_CMD_DEFAULTS: u8 = 0xF6;
/// Keyboard: resend the last byte.
pub const KBD_CMD_RESEND: u8 = 0xFE;
/// Keyboard: reset and self-test (answers ACK, then 0xAA).
pub const KBD_CMD_RESET: u8 = 0xFF;
/// Keyboard reply: acknowledge.
pub const KBD_ACK: u8 = 0xFA;
/// Keyboard reply: basic assurance test passed.
pub const KBD_BAT_OK: u8 = 0xAA;
/// Keyboard / aux reply: resend (error).
pub const KBD_RESEND: u8 = 0xFE;

/// A byte waiting to be read at port 0x60.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutByte {
    pub data: u8,
    /// From the aux port (sets STATUS_AUX_OBF, raises IRQ 12).
    pub aux: bool,
    /// Delivered with STATUS_TIMEOUT (no device answered).
    pub timeout: bool,
}

impl OutByte {
    fn kbd(data: u8) -> OutByte {
        OutByte {
            data,
            aux: false,
            timeout: false,
        }
    }
}

/// Snapshot of the controller and keyboard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct I8042State {
    /// Controller RAM; byte 0 is the command byte.
    pub ram: Vec<u8>,
    pub outport: u8,
    pub sys_flag: bool,
    /// Last write went to the command port.
    pub last_was_command: bool,
    /// Controller command waiting for its data byte.
    pub pending_command: Option<u8>,
    /// The output buffer.
    pub obuf: Option<OutByte>,
    /// Last byte read from the output buffer (read again when it is empty).
    pub last_data: u8,
    pub timeout: bool,
    /// Controller replies (delivered first).
    pub controller_queue: VecDeque<OutByte>,
    /// Bytes from the keyboard.
    pub keyboard_queue: VecDeque<u8>,
    /// Keyboard command waiting for its parameter byte.
    pub keyboard_pending: Option<u8>,
    pub keyboard_scanning: bool,
    pub keyboard_scancode_set: u8,
    pub keyboard_leds: u8,
    pub keyboard_last: u8,
}

impl Default for I8042State {
    fn default() -> Self {
        let mut ram = vec![0u8; 32];
        ram[0] = CCB_KBD_INT | CCB_AUX_INT;
        I8042State {
            ram,
            outport: OUT_RESET
                | OUT_A20
                | OUT_AUX_CLOCK
                | OUT_AUX_DATA
                | OUT_KBD_CLOCK
                | OUT_KBD_DATA,
            sys_flag: false,
            last_was_command: true,
            pending_command: None,
            obuf: None,
            last_data: 0,
            timeout: false,
            controller_queue: VecDeque::new(),
            keyboard_queue: VecDeque::new(),
            keyboard_pending: None,
            keyboard_scanning: true,
            keyboard_scancode_set: 2,
            keyboard_leds: 0,
            keyboard_last: 0,
        }
    }
}

/// The keyboard controller.
#[derive(Clone, Debug, Default)]
pub struct I8042 {
    s: I8042State,
    actions: VecDeque<PlatformAction>,
}

impl I8042 {
    /// Power-on state: command byte 0x03, A20 enabled, reset line released.
    pub fn new() -> I8042 {
        I8042::default()
    }

    pub fn state(&self) -> I8042State {
        self.s.clone()
    }

    pub fn from_state(state: &I8042State) -> I8042 {
        let mut s = state.clone();
        s.ram.resize(32, 0);
        I8042 {
            s,
            actions: VecDeque::new(),
        }
    }

    /// The next machine-level action (A20 change, reset) the controller asked for.
    pub fn take_action(&mut self) -> Option<PlatformAction> {
        self.actions.pop_front()
    }

    fn ccb(&self) -> u8 {
        self.s.ram[0]
    }

    /// The A20 bit of the output port.
    pub fn a20(&self) -> bool {
        self.s.outport & OUT_A20 != 0
    }

    /// IRQ 1 line: keyboard data waiting and enabled.
    pub fn kbd_irq_level(&self) -> bool {
        matches!(self.s.obuf, Some(b) if !b.aux) && self.ccb() & CCB_KBD_INT != 0
    }

    /// IRQ 12 line: aux data waiting and enabled.
    pub fn aux_irq_level(&self) -> bool {
        matches!(self.s.obuf, Some(b) if b.aux) && self.ccb() & CCB_AUX_INT != 0
    }

    /// Inject bytes from the keyboard (scan codes in the set the guest selected). Dropped
    /// while the keyboard has scanning disabled.
    pub fn push_scancodes(&mut self, bytes: &[u8]) {
        if self.s.keyboard_scanning {
            self.s.keyboard_queue.extend(bytes);
            self.refill();
        }
    }

    /// Move the next byte into the empty output buffer.
    fn refill(&mut self) {
        if self.s.obuf.is_some() {
            return;
        }
        let next = self.s.controller_queue.pop_front().or_else(|| {
            if self.ccb() & CCB_KBD_DISABLE == 0 {
                self.s.keyboard_queue.pop_front().map(OutByte::kbd)
            } else {
                None
            }
        });
        if let Some(b) = next {
            self.s.timeout = b.timeout;
            self.s.obuf = Some(b);
        }
    }

    fn reply(&mut self, data: u8) {
        self.s.controller_queue.push_back(OutByte::kbd(data));
        self.refill();
    }

    fn keyboard_reply(&mut self, bytes: &[u8]) {
        self.s.keyboard_queue.extend(bytes);
        if let Some(&b) = bytes.last() {
            self.s.keyboard_last = b;
        }
        self.refill();
    }

    fn status(&self) -> u8 {
        let mut st = STATUS_UNLOCKED;
        if let Some(b) = self.s.obuf {
            st |= STATUS_OBF;
            if b.aux {
                st |= STATUS_AUX_OBF;
            }
        }
        if self.s.sys_flag {
            st |= STATUS_SYS;
        }
        if self.s.last_was_command {
            st |= STATUS_CMD;
        }
        if self.s.timeout {
            st |= STATUS_TIMEOUT;
        }
        st
    }

    fn output_port(&self) -> u8 {
        let mut v = self.s.outport & !(OUT_KBD_OBF | OUT_AUX_OBF);
        match self.s.obuf {
            Some(b) if b.aux => v |= OUT_AUX_OBF,
            Some(_) => v |= OUT_KBD_OBF,
            None => {}
        }
        v
    }

    fn write_output_port(&mut self, value: u8) {
        self.s.outport = value;
        // The A20 line is driven on every write; the last writer (8042 or port 0x92) wins.
        self.actions
            .push_back(PlatformAction::SetA20(value & OUT_A20 != 0));
        if value & OUT_RESET == 0 {
            self.actions.push_back(PlatformAction::Reset);
        }
    }

    fn set_a20(&mut self, on: bool) {
        if on {
            self.s.outport |= OUT_A20;
        } else {
            self.s.outport &= !OUT_A20;
        }
        self.actions.push_back(PlatformAction::SetA20(on));
    }

    fn write_ram(&mut self, index: u8, value: u8) {
        self.s.ram[usize::from(index & 0x1F)] = value;
        if index & 0x1F == 0 {
            self.s.sys_flag = value & CCB_SYS != 0;
            self.refill();
        }
    }

    fn command(&mut self, cmd: u8) {
        match cmd {
            0x20..=0x3F => {
                let v = self.s.ram[usize::from(cmd & 0x1F)];
                self.reply(v);
            }
            0x60..=0x7F
            | CMD_WRITE_OUTPUT
            | CMD_WRITE_KBD_OBUF
            | CMD_WRITE_AUX_OBUF
            | CMD_WRITE_AUX => self.s.pending_command = Some(cmd),
            CMD_PASSWORD_TEST => self.reply(0xF1),
            CMD_AUX_DISABLE => self.s.ram[0] |= CCB_AUX_DISABLE,
            CMD_AUX_ENABLE => self.s.ram[0] &= !CCB_AUX_DISABLE,
            CMD_AUX_TEST | CMD_KBD_TEST => self.reply(0x00),
            CMD_SELF_TEST => {
                self.s.sys_flag = true;
                self.s.ram[0] |= CCB_SYS;
                self.reply(SELF_TEST_OK);
            }
            CMD_KBD_DISABLE => self.s.ram[0] |= CCB_KBD_DISABLE,
            CMD_KBD_ENABLE => {
                self.s.ram[0] &= !CCB_KBD_DISABLE;
                self.refill();
            }
            CMD_READ_INPUT => self.reply(0x80), // keyboard not inhibited
            CMD_READ_OUTPUT => {
                let v = self.output_port();
                self.reply(v);
            }
            CMD_A20_DISABLE => self.set_a20(false),
            CMD_A20_ENABLE => self.set_a20(true),
            0xF0..=0xFF => {
                if cmd & OUT_RESET == 0 {
                    self.actions.push_back(PlatformAction::Reset);
                }
            }
            _ => warn!(cmd, "8042: unimplemented controller command ignored"),
        }
    }

    fn command_data(&mut self, cmd: u8, value: u8) {
        match cmd {
            0x60..=0x7F => self.write_ram(cmd, value),
            CMD_WRITE_OUTPUT => self.write_output_port(value),
            CMD_WRITE_KBD_OBUF => self.reply(value),
            CMD_WRITE_AUX_OBUF => {
                self.s.controller_queue.push_back(OutByte {
                    data: value,
                    aux: true,
                    timeout: false,
                });
                self.refill();
            }
            CMD_WRITE_AUX => {
                debug!(value, "8042: byte for the aux port, no device attached");
                self.s.controller_queue.push_back(OutByte {
                    data: KBD_RESEND,
                    aux: true,
                    timeout: true,
                });
                self.refill();
            }
            _ => {}
        }
    }

    fn keyboard_defaults(&mut self) {
        self.s.keyboard_scancode_set = 2;
        self.s.keyboard_leds = 0;
    }

    fn keyboard_write(&mut self, value: u8) {
        if let Some(cmd) = self.s.keyboard_pending.take() {
            match cmd {
                KBD_CMD_SET_LEDS => {
                    self.s.keyboard_leds = value & 7;
                    self.keyboard_reply(&[KBD_ACK]);
                }
                KBD_CMD_SCANCODE_SET => {
                    if value == 0 {
                        let set = self.s.keyboard_scancode_set;
                        // Translated set numbers as an XT-translating controller reports them.
                        let reported = if self.ccb() & CCB_TRANSLATE != 0 {
                            [0, 0x43, 0x41, 0x3F][usize::from(set & 3)]
                        } else {
                            set
                        };
                        self.keyboard_reply(&[KBD_ACK, reported]);
                    } else {
                        if (1..=3).contains(&value) {
                            self.s.keyboard_scancode_set = value;
                        }
                        self.keyboard_reply(&[KBD_ACK]);
                    }
                }
                _ => self.keyboard_reply(&[KBD_ACK]), // typematic rate
            }
            return;
        }
        match value {
            KBD_CMD_SET_LEDS | KBD_CMD_SCANCODE_SET | KBD_CMD_SET_RATE => {
                self.s.keyboard_pending = Some(value);
                self.keyboard_reply(&[KBD_ACK]);
            }
            KBD_CMD_ECHO => self.keyboard_reply(&[KBD_CMD_ECHO]),
            KBD_CMD_IDENTIFY => {
                let id2 = if self.ccb() & CCB_TRANSLATE != 0 {
                    0x41
                } else {
                    0x83
                };
                self.keyboard_reply(&[KBD_ACK, 0xAB, id2]);
            }
            KBD_CMD_ENABLE => {
                self.s.keyboard_scanning = true;
                self.keyboard_reply(&[KBD_ACK]);
            }
            KBD_CMD_DISABLE => {
                self.s.keyboard_scanning = false;
                self.keyboard_defaults();
                self.keyboard_reply(&[KBD_ACK]);
            }
            KBD_CMD_DEFAULTS => {
                self.keyboard_defaults();
                self.keyboard_reply(&[KBD_ACK]);
            }
            KBD_CMD_RESEND => {
                let last = self.s.keyboard_last;
                self.keyboard_reply(&[last]);
            }
            KBD_CMD_RESET => {
                self.s.keyboard_queue.clear();
                self.s.keyboard_scanning = true;
                self.keyboard_defaults();
                self.keyboard_reply(&[KBD_ACK, KBD_BAT_OK]);
            }
            _ => {
                debug!(value, "PS/2 keyboard: unknown command, answering resend");
                self.keyboard_reply(&[KBD_RESEND]);
            }
        }
    }

    /// Port read; `offset` is the port minus 0x60 (0 = data, 4 = status).
    pub fn read(&mut self, offset: u16) -> u8 {
        if offset == 4 {
            return self.status();
        }
        match self.s.obuf.take() {
            Some(b) => {
                self.s.last_data = b.data;
                self.refill();
                b.data
            }
            None => self.s.last_data,
        }
    }

    /// Port write; `offset` is the port minus 0x60 (0 = data, 4 = command).
    pub fn write(&mut self, offset: u16, value: u8) {
        if offset == 4 {
            self.s.last_was_command = true;
            self.s.pending_command = None;
            self.command(value);
            return;
        }
        self.s.last_was_command = false;
        match self.s.pending_command.take() {
            Some(cmd) => self.command_data(cmd, value),
            None => {
                // Sending to the keyboard enables its interface again.
                self.s.ram[0] &= !CCB_KBD_DISABLE;
                self.keyboard_write(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: u16 = 0;
    const CMD: u16 = 4;

    fn actions(k: &mut I8042) -> Vec<PlatformAction> {
        std::iter::from_fn(|| k.take_action()).collect()
    }

    /// Send a controller command and read its one-byte reply, polling OBF like firmware does.
    fn command_reply(k: &mut I8042, cmd: u8) -> u8 {
        k.write(CMD, cmd);
        assert_ne!(k.read(CMD) & STATUS_OBF, 0, "reply to {cmd:#x}");
        k.read(DATA)
    }

    #[test]
    fn power_on_status() {
        let mut k = I8042::new();
        let st = k.read(CMD);
        assert_eq!(st & (STATUS_OBF | STATUS_IBF), 0);
        assert_ne!(st & STATUS_UNLOCKED, 0);
        assert!(k.a20());
    }

    #[test]
    fn self_test_and_interface_tests() {
        let mut k = I8042::new();
        assert_eq!(command_reply(&mut k, CMD_SELF_TEST), SELF_TEST_OK);
        assert_ne!(k.read(CMD) & STATUS_SYS, 0);
        assert_eq!(command_reply(&mut k, CMD_KBD_TEST), 0x00);
        assert_eq!(command_reply(&mut k, CMD_AUX_TEST), 0x00);
        assert_eq!(k.read(CMD) & STATUS_OBF, 0);
    }

    #[test]
    fn command_byte_read_write() {
        let mut k = I8042::new();
        assert_eq!(
            command_reply(&mut k, CMD_READ_RAM),
            CCB_KBD_INT | CCB_AUX_INT
        );
        k.write(CMD, CMD_WRITE_RAM);
        assert_ne!(k.read(CMD) & STATUS_CMD, 0);
        k.write(DATA, 0x65); // SeaBIOS-like: translate, kbd disabled, sys, kbd int
        assert_eq!(k.read(CMD) & STATUS_CMD, 0);
        assert_eq!(command_reply(&mut k, CMD_READ_RAM), 0x65);
        assert_ne!(
            k.read(CMD) & STATUS_SYS,
            0,
            "SYS follows command byte bit 2"
        );
        k.write(CMD, CMD_KBD_ENABLE);
        assert_eq!(command_reply(&mut k, CMD_READ_RAM), 0x65 & !CCB_KBD_DISABLE);
        k.write(CMD, CMD_AUX_DISABLE);
        assert_ne!(command_reply(&mut k, CMD_READ_RAM) & CCB_AUX_DISABLE, 0);
        k.write(CMD, CMD_AUX_ENABLE);
        assert_eq!(command_reply(&mut k, CMD_READ_RAM) & CCB_AUX_DISABLE, 0);
        // Other RAM bytes.
        k.write(CMD, 0x65);
        k.write(DATA, 0x42);
        assert_eq!(command_reply(&mut k, 0x25), 0x42);
    }

    #[test]
    fn a20_through_output_port() {
        let mut k = I8042::new();
        // The classic enable: D1, then DF (A20 on, reset line high).
        k.write(CMD, CMD_WRITE_OUTPUT);
        k.write(DATA, 0xDD);
        assert_eq!(actions(&mut k), vec![PlatformAction::SetA20(false)]);
        assert!(!k.a20());
        assert_eq!(command_reply(&mut k, CMD_READ_OUTPUT) & OUT_A20, 0);
        k.write(CMD, CMD_WRITE_OUTPUT);
        k.write(DATA, 0xDF);
        assert_eq!(actions(&mut k), vec![PlatformAction::SetA20(true)]);
        assert_eq!(
            command_reply(&mut k, CMD_READ_OUTPUT) & (OUT_A20 | OUT_RESET),
            0x03
        );
    }

    #[test]
    fn a20_shortcut_commands() {
        let mut k = I8042::new();
        k.write(CMD, CMD_A20_DISABLE);
        k.write(CMD, CMD_A20_ENABLE);
        assert_eq!(
            actions(&mut k),
            vec![PlatformAction::SetA20(false), PlatformAction::SetA20(true)]
        );
        assert!(k.a20());
    }

    #[test]
    fn reset_by_pulse_and_output_port() {
        let mut k = I8042::new();
        k.write(CMD, CMD_RESET);
        assert_eq!(actions(&mut k), vec![PlatformAction::Reset]);
        k.write(CMD, 0xFF); // pulse nothing
        assert_eq!(actions(&mut k), vec![]);
        k.write(CMD, CMD_WRITE_OUTPUT);
        k.write(DATA, OUT_A20); // reset bit low
        assert_eq!(
            actions(&mut k),
            vec![PlatformAction::SetA20(true), PlatformAction::Reset]
        );
    }

    #[test]
    fn keyboard_reset_and_commands() {
        let mut k = I8042::new();
        k.write(DATA, KBD_CMD_RESET);
        assert_eq!(k.read(CMD) & (STATUS_OBF | STATUS_AUX_OBF), STATUS_OBF);
        assert_eq!(k.read(DATA), KBD_ACK);
        assert_eq!(k.read(DATA), KBD_BAT_OK);
        assert_eq!(k.read(CMD) & STATUS_OBF, 0);
        // LEDs: ACK for the command and for the parameter.
        k.write(DATA, KBD_CMD_SET_LEDS);
        assert_eq!(k.read(DATA), KBD_ACK);
        k.write(DATA, 0x07);
        assert_eq!(k.read(DATA), KBD_ACK);
        // Identify.
        k.write(DATA, KBD_CMD_IDENTIFY);
        assert_eq!(
            [k.read(DATA), k.read(DATA), k.read(DATA)],
            [KBD_ACK, 0xAB, 0x83]
        );
        // Scan-code set query.
        k.write(DATA, KBD_CMD_SCANCODE_SET);
        k.write(DATA, 0);
        assert_eq!(
            [k.read(DATA), k.read(DATA), k.read(DATA)],
            [KBD_ACK, KBD_ACK, 2]
        );
        k.write(DATA, KBD_CMD_ECHO);
        assert_eq!(k.read(DATA), KBD_CMD_ECHO);
        k.write(DATA, 0x01);
        assert_eq!(k.read(DATA), KBD_RESEND);
        // An empty buffer reads the last byte again.
        assert_eq!(k.read(DATA), KBD_RESEND);
    }

    #[test]
    fn keyboard_irq_and_disable() {
        let mut k = I8042::new();
        k.push_scancodes(&[0x1C, 0xF0, 0x1C]);
        assert!(k.kbd_irq_level());
        assert!(!k.aux_irq_level());
        assert_eq!(k.read(DATA), 0x1C);
        // Keyboard interface disabled: the next byte waits (the one already latched stays).
        k.write(CMD, CMD_KBD_DISABLE);
        assert_eq!(k.read(DATA), 0xF0);
        assert_eq!(k.read(CMD) & STATUS_OBF, 0);
        // Controller replies still get through.
        assert_eq!(
            command_reply(&mut k, CMD_READ_RAM) & CCB_KBD_DISABLE,
            CCB_KBD_DISABLE
        );
        k.write(CMD, CMD_KBD_ENABLE);
        assert_eq!(k.read(DATA), 0x1C);
        // Interrupts off in the command byte: no IRQ 1.
        k.write(CMD, CMD_WRITE_RAM);
        k.write(DATA, 0x00);
        k.push_scancodes(&[0x5A]);
        assert!(!k.kbd_irq_level());
        assert_ne!(k.read(CMD) & STATUS_OBF, 0);
    }

    #[test]
    fn aux_port_empty() {
        let mut k = I8042::new();
        // Loopback into the aux output buffer.
        k.write(CMD, CMD_WRITE_AUX_OBUF);
        k.write(DATA, 0x5A);
        assert_eq!(k.read(CMD) & STATUS_AUX_OBF, STATUS_AUX_OBF);
        assert!(k.aux_irq_level());
        assert_eq!(k.read(DATA), 0x5A);
        // A byte for the mouse times out.
        k.write(CMD, CMD_WRITE_AUX);
        k.write(DATA, 0xFF);
        let st = k.read(CMD);
        assert_eq!(
            st & (STATUS_OBF | STATUS_AUX_OBF | STATUS_TIMEOUT),
            STATUS_OBF | STATUS_AUX_OBF | STATUS_TIMEOUT
        );
        assert_eq!(k.read(DATA), KBD_RESEND);
        // Keyboard loopback.
        k.write(CMD, CMD_WRITE_KBD_OBUF);
        k.write(DATA, 0x33);
        assert_eq!(k.read(CMD) & (STATUS_AUX_OBF | STATUS_TIMEOUT), 0);
        assert_eq!(k.read(DATA), 0x33);
    }

    #[test]
    fn unknown_command_is_ignored() {
        let mut k = I8042::new();
        k.write(CMD, 0x02);
        assert_eq!(k.read(CMD) & STATUS_OBF, 0);
        assert_eq!(actions(&mut k), vec![]);
    }

    #[test]
    fn state_round_trip() {
        let mut k = I8042::new();
        k.write(DATA, KBD_CMD_RESET);
        let copy = I8042::from_state(&k.state());
        assert_eq!(copy.state(), k.state());
    }
}
