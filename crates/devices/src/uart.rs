//! The 16550A UART (COM1 at 0x3F8–0x3FF, IRQ 4).
//!
//! Registers: RBR/THR, IER, IIR/FCR, LCR, MCR, LSR, MSR, SCR, and the divisor latch (DLL/DLM)
//! behind LCR.DLAB. The device logic is separate from its plumbing: transmitted bytes go to a
//! `Box<dyn Write + Send>` sink, written and flushed byte by byte (no line buffering, so a
//! guest's prompt shows up at once); received bytes come from [`Uart::push_input`], which the
//! platform feeds from a `crossbeam_channel::Receiver<u8>` (see [`spawn_stdin_reader`]).
//!
//! The line is infinitely fast: a byte written to THR is on the wire at once, so THRE and TEMT
//! always read as 1 and a THR write re-arms the THRE interrupt immediately. Input waits in an
//! unbounded backlog and moves into the receiver FIFO (16 bytes, or the 1-byte holding
//! register with FIFOs off) as the guest drains it, so no host input is lost to overruns.
//!
//! Interrupts in priority order: receiver line status (overrun; only loopback can overrun
//! here), received data available / character timeout, THR empty, modem status. The THRE
//! interrupt is re-armed when IER.ETBEI goes 0 → 1 while THR is empty, as on real parts and in
//! QEMU (Windows and Linux's THRE probing rely on it). The character timeout (IIR 0xC) is
//! reported as soon as the FIFO holds fewer bytes than the trigger level, instead of after
//! four character times. As on a PC board, the IRQ output reaches the PIC only while MCR.OUT2
//! is set. Loopback mode (MCR.LOOP) routes THR to the receiver and MCR's DTR/RTS/OUT1/OUT2 to
//! MSR's DSR/CTS/RI/DCD; outside loopback, CTS, DSR and DCD read as asserted.
//!
//! Not modelled: parity/framing errors and break reception (never happen on this line), FIFO
//! DMA mode signalling, baud-rate timing.

use crate::bus::PioDevice;
use crossbeam_channel::Receiver;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::{Read, Write};
use tracing::warn;

/// Base port of COM1.
pub const COM1_PORT: u16 = 0x3F8;
/// IRQ line of COM1.
pub const COM1_IRQ: u8 = 4;
/// Number of ports a 16550 decodes.
pub const UART_PORTS: u16 = 8;
/// Depth of the receive and transmit FIFOs.
pub const FIFO_SIZE: usize = 16;

// Register offsets.
/// RBR (read) / THR (write); DLL with LCR.DLAB.
pub const REG_DATA: u16 = 0;
/// IER; DLM with LCR.DLAB.
pub const REG_IER: u16 = 1;
/// IIR (read) / FCR (write).
pub const REG_IIR_FCR: u16 = 2;
pub const REG_LCR: u16 = 3;
pub const REG_MCR: u16 = 4;
pub const REG_LSR: u16 = 5;
pub const REG_MSR: u16 = 6;
/// Scratch register.
pub const REG_SCR: u16 = 7;

// IER.
/// IER: received data available (and character timeout) interrupt.
pub const IER_ERBFI: u8 = 1 << 0;
/// IER: transmitter holding register empty interrupt.
pub const IER_ETBEI: u8 = 1 << 1;
/// IER: receiver line status interrupt.
pub const IER_ELSI: u8 = 1 << 2;
/// IER: modem status interrupt.
pub const IER_EDSSI: u8 = 1 << 3;
const IER_MASK: u8 = 0x0F;

// IIR.
/// IIR: no interrupt pending (active low "pending" bit).
pub const IIR_NO_INT: u8 = 0x01;
/// IIR bits 3:1: interrupt identification.
pub const IIR_ID_MASK: u8 = 0x0E;
/// IIR id: modem status (lowest priority).
pub const IIR_MODEM_STATUS: u8 = 0x00;
/// IIR id: transmitter holding register empty.
pub const IIR_THR_EMPTY: u8 = 0x02;
/// IIR id: received data available (FIFO at or above the trigger level).
pub const IIR_RX_DATA: u8 = 0x04;
/// IIR id: receiver line status (highest priority).
pub const IIR_LINE_STATUS: u8 = 0x06;
/// IIR id: character timeout (FIFO mode, data below the trigger level).
pub const IIR_TIMEOUT: u8 = 0x0C;
/// IIR bits 7:6: both set when FIFOs are enabled.
pub const IIR_FIFO_ENABLED: u8 = 0xC0;

// FCR.
/// FCR: enable FIFOs.
pub const FCR_ENABLE: u8 = 1 << 0;
/// FCR: clear the receive FIFO (self-clearing).
pub const FCR_CLEAR_RX: u8 = 1 << 1;
/// FCR: clear the transmit FIFO (self-clearing).
pub const FCR_CLEAR_TX: u8 = 1 << 2;
/// FCR: DMA mode select (accepted, no effect).
pub const FCR_DMA_MODE: u8 = 1 << 3;
/// FCR bits 7:6: receive trigger level 1, 4, 8 or 14 bytes.
pub const FCR_TRIGGER_MASK: u8 = 0xC0;

// LCR.
/// LCR bits 1:0: word length 5–8 bits.
pub const LCR_WORD_LENGTH_MASK: u8 = 0x03;
/// LCR: two stop bits (1.5 with 5-bit words).
pub const LCR_STOP_BITS: u8 = 1 << 2;
/// LCR: parity enable.
pub const LCR_PARITY_ENABLE: u8 = 1 << 3;
/// LCR: even parity.
pub const LCR_EVEN_PARITY: u8 = 1 << 4;
/// LCR: stick parity.
pub const LCR_STICK_PARITY: u8 = 1 << 5;
/// LCR: send break.
pub const LCR_BREAK: u8 = 1 << 6;
/// LCR: divisor latch access (offsets 0/1 address DLL/DLM).
pub const LCR_DLAB: u8 = 1 << 7;

// MCR.
/// MCR: data terminal ready.
pub const MCR_DTR: u8 = 1 << 0;
/// MCR: request to send.
pub const MCR_RTS: u8 = 1 << 1;
/// MCR: user output 1.
pub const MCR_OUT1: u8 = 1 << 2;
/// MCR: user output 2; on a PC it gates the IRQ line to the interrupt controller.
pub const MCR_OUT2: u8 = 1 << 3;
/// MCR: local loopback.
pub const MCR_LOOP: u8 = 1 << 4;
const MCR_MASK: u8 = 0x1F;

// LSR.
/// LSR: data ready (receiver holds at least one byte).
pub const LSR_DR: u8 = 1 << 0;
/// LSR: overrun error.
pub const LSR_OE: u8 = 1 << 1;
/// LSR: parity error.
pub const LSR_PE: u8 = 1 << 2;
/// LSR: framing error.
pub const LSR_FE: u8 = 1 << 3;
/// LSR: break interrupt.
pub const LSR_BI: u8 = 1 << 4;
/// LSR: transmitter holding register (or FIFO) empty.
pub const LSR_THRE: u8 = 1 << 5;
/// LSR: transmitter empty (holding and shift register).
pub const LSR_TEMT: u8 = 1 << 6;
/// LSR: error in receiver FIFO.
pub const LSR_RX_FIFO_ERROR: u8 = 1 << 7;
const LSR_ERRORS: u8 = LSR_OE | LSR_PE | LSR_FE | LSR_BI;

// MSR.
/// MSR: delta clear to send.
pub const MSR_DCTS: u8 = 1 << 0;
/// MSR: delta data set ready.
pub const MSR_DDSR: u8 = 1 << 1;
/// MSR: trailing edge of ring indicator.
pub const MSR_TERI: u8 = 1 << 2;
/// MSR: delta data carrier detect.
pub const MSR_DDCD: u8 = 1 << 3;
/// MSR: clear to send.
pub const MSR_CTS: u8 = 1 << 4;
/// MSR: data set ready.
pub const MSR_DSR: u8 = 1 << 5;
/// MSR: ring indicator.
pub const MSR_RI: u8 = 1 << 6;
/// MSR: data carrier detect.
pub const MSR_DCD: u8 = 1 << 7;
const MSR_DELTAS: u8 = 0x0F;

/// Snapshot of the UART (the output sink is not part of it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UartState {
    pub ier: u8,
    pub lcr: u8,
    pub mcr: u8,
    /// Pending LSR error bits (OE, PE, FE, BI), cleared by an LSR read.
    pub lsr_errors: u8,
    /// Modem lines (bits 7:4) and delta bits (3:0).
    pub msr: u8,
    pub scr: u8,
    pub dll: u8,
    pub dlm: u8,
    /// FCR as it matters after the write: enable, DMA mode, trigger level.
    pub fcr: u8,
    pub rx_fifo: VecDeque<u8>,
    /// Input not yet received (waits for room in the receiver).
    pub rx_backlog: VecDeque<u8>,
    /// THR-empty interrupt pending (cleared by an IIR read reporting it or a THR write).
    pub thr_pending: bool,
}

impl Default for UartState {
    fn default() -> Self {
        UartState {
            ier: 0,
            lcr: 0x03,
            mcr: 0,
            lsr_errors: 0,
            msr: MSR_CTS | MSR_DSR | MSR_DCD,
            scr: 0,
            dll: 0x0C, // 9600 baud
            dlm: 0,
            fcr: 0,
            rx_fifo: VecDeque::new(),
            rx_backlog: VecDeque::new(),
            thr_pending: false,
        }
    }
}

/// A 16550A.
pub struct Uart {
    s: UartState,
    out: Box<dyn Write + Send>,
    /// The sink failed once; later failures are not logged again.
    out_failed: bool,
}

impl std::fmt::Debug for Uart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uart").field("state", &self.s).finish()
    }
}

impl Uart {
    /// A UART after reset, transmitting into `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Uart {
        Uart::from_state(UartState::default(), out)
    }

    pub fn from_state(state: UartState, out: Box<dyn Write + Send>) -> Uart {
        Uart {
            s: state,
            out,
            out_failed: false,
        }
    }

    pub fn state(&self) -> UartState {
        self.s.clone()
    }

    /// Restore registers and FIFOs, keeping the current output sink.
    pub fn restore_state(&mut self, state: UartState) {
        self.s = state;
    }

    /// Replace the output sink, returning the old one.
    pub fn set_output(&mut self, out: Box<dyn Write + Send>) -> Box<dyn Write + Send> {
        self.out_failed = false;
        std::mem::replace(&mut self.out, out)
    }

    fn fifo_enabled(&self) -> bool {
        self.s.fcr & FCR_ENABLE != 0
    }

    fn rx_capacity(&self) -> usize {
        if self.fifo_enabled() {
            FIFO_SIZE
        } else {
            1
        }
    }

    fn rx_trigger(&self) -> usize {
        match self.s.fcr >> 6 {
            0 => 1,
            1 => 4,
            2 => 8,
            _ => 14,
        }
    }

    fn loopback(&self) -> bool {
        self.s.mcr & MCR_LOOP != 0
    }

    /// Divisor latch value (baud = 115200 / divisor).
    pub fn divisor(&self) -> u16 {
        u16::from(self.s.dll) | u16::from(self.s.dlm) << 8
    }

    /// Queue host input for the guest. Bytes enter the receiver FIFO as room allows.
    pub fn push_input(&mut self, bytes: &[u8]) {
        self.s.rx_backlog.extend(bytes);
        self.fill_rx();
    }

    /// Host input waiting for room in the receiver.
    pub fn input_backlog(&self) -> usize {
        self.s.rx_backlog.len()
    }

    /// Bytes in the receiver FIFO.
    pub fn rx_len(&self) -> usize {
        self.s.rx_fifo.len()
    }

    fn fill_rx(&mut self) {
        if self.loopback() {
            return; // the external line is disconnected
        }
        let cap = self.rx_capacity();
        while self.s.rx_fifo.len() < cap {
            match self.s.rx_backlog.pop_front() {
                Some(b) => self.s.rx_fifo.push_back(b),
                None => break,
            }
        }
    }

    /// A byte arrives at the receiver (loopback path): overruns when the receiver is full.
    fn receive(&mut self, byte: u8) {
        if self.s.rx_fifo.len() >= self.rx_capacity() {
            self.s.lsr_errors |= LSR_OE;
        } else {
            self.s.rx_fifo.push_back(byte);
        }
    }

    fn transmit(&mut self, byte: u8) {
        let bits = 5 + (self.s.lcr & LCR_WORD_LENGTH_MASK);
        let byte = byte & ((1u16 << bits) - 1) as u8;
        if self.loopback() {
            self.receive(byte);
        } else if let Err(e) = self.out.write_all(&[byte]).and_then(|()| self.out.flush()) {
            if !self.out_failed {
                self.out_failed = true;
                warn!(error = %e, "16550: serial output sink failed; output is being dropped");
            }
        }
        // The byte left at once: THR is empty again.
        self.s.thr_pending = true;
    }

    /// Modem input lines as MSR bits 7:4.
    fn modem_lines(&self) -> u8 {
        if self.loopback() {
            let m = self.s.mcr;
            let mut v = 0;
            if m & MCR_RTS != 0 {
                v |= MSR_CTS;
            }
            if m & MCR_DTR != 0 {
                v |= MSR_DSR;
            }
            if m & MCR_OUT1 != 0 {
                v |= MSR_RI;
            }
            if m & MCR_OUT2 != 0 {
                v |= MSR_DCD;
            }
            v
        } else {
            MSR_CTS | MSR_DSR | MSR_DCD
        }
    }

    fn update_msr(&mut self) {
        let old = self.s.msr & !MSR_DELTAS;
        let new = self.modem_lines();
        let changed = old ^ new;
        let mut delta = self.s.msr & MSR_DELTAS;
        if changed & MSR_CTS != 0 {
            delta |= MSR_DCTS;
        }
        if changed & MSR_DSR != 0 {
            delta |= MSR_DDSR;
        }
        if old & MSR_RI != 0 && new & MSR_RI == 0 {
            delta |= MSR_TERI;
        }
        if changed & MSR_DCD != 0 {
            delta |= MSR_DDCD;
        }
        self.s.msr = new | delta;
    }

    /// The highest-priority pending interrupt as an IIR id, or [`IIR_NO_INT`].
    fn interrupt_id(&self) -> u8 {
        let ier = self.s.ier;
        if ier & IER_ELSI != 0 && self.s.lsr_errors != 0 {
            IIR_LINE_STATUS
        } else if ier & IER_ERBFI != 0 && !self.s.rx_fifo.is_empty() {
            if self.fifo_enabled() && self.s.rx_fifo.len() < self.rx_trigger() {
                IIR_TIMEOUT
            } else {
                IIR_RX_DATA
            }
        } else if ier & IER_ETBEI != 0 && self.s.thr_pending {
            IIR_THR_EMPTY
        } else if ier & IER_EDSSI != 0 && self.s.msr & MSR_DELTAS != 0 {
            IIR_MODEM_STATUS
        } else {
            IIR_NO_INT
        }
    }

    /// The UART's interrupt output as the PIC sees it (gated by MCR.OUT2).
    pub fn irq_level(&self) -> bool {
        self.s.mcr & MCR_OUT2 != 0 && self.interrupt_id() != IIR_NO_INT
    }

    fn lsr(&self) -> u8 {
        let mut v = LSR_THRE | LSR_TEMT | (self.s.lsr_errors & LSR_ERRORS);
        if !self.s.rx_fifo.is_empty() {
            v |= LSR_DR;
        }
        v
    }

    /// Register read at `offset` 0–7.
    pub fn read(&mut self, offset: u16) -> u8 {
        let dlab = self.s.lcr & LCR_DLAB != 0;
        match offset & 7 {
            REG_DATA if dlab => self.s.dll,
            REG_DATA => {
                let b = self.s.rx_fifo.pop_front().unwrap_or(0);
                self.fill_rx();
                b
            }
            REG_IER if dlab => self.s.dlm,
            REG_IER => self.s.ier,
            REG_IIR_FCR => {
                let id = self.interrupt_id();
                if id == IIR_THR_EMPTY {
                    self.s.thr_pending = false;
                }
                let fifo = if self.fifo_enabled() {
                    IIR_FIFO_ENABLED
                } else {
                    0
                };
                id | fifo
            }
            REG_LCR => self.s.lcr,
            REG_MCR => self.s.mcr,
            REG_LSR => {
                let v = self.lsr();
                self.s.lsr_errors = 0;
                v
            }
            REG_MSR => {
                let v = self.s.msr;
                self.s.msr &= !MSR_DELTAS;
                v
            }
            _ => self.s.scr,
        }
    }

    /// Register write at `offset` 0–7.
    pub fn write(&mut self, offset: u16, value: u8) {
        let dlab = self.s.lcr & LCR_DLAB != 0;
        match offset & 7 {
            REG_DATA if dlab => self.s.dll = value,
            REG_DATA => {
                self.s.thr_pending = false;
                self.transmit(value);
            }
            REG_IER if dlab => self.s.dlm = value,
            REG_IER => {
                let old = self.s.ier;
                self.s.ier = value & IER_MASK;
                if (old ^ self.s.ier) & IER_ETBEI != 0 {
                    // THR is always empty here, so enabling ETBEI raises the interrupt.
                    self.s.thr_pending = self.s.ier & IER_ETBEI != 0;
                }
            }
            REG_IIR_FCR => {
                let enable = value & FCR_ENABLE != 0;
                if enable != self.fifo_enabled() {
                    self.s.rx_fifo.clear();
                }
                if value & FCR_CLEAR_RX != 0 {
                    self.s.rx_fifo.clear();
                }
                self.s.fcr = if enable {
                    value & (FCR_ENABLE | FCR_DMA_MODE | FCR_TRIGGER_MASK)
                } else {
                    0
                };
                self.fill_rx();
            }
            REG_LCR => self.s.lcr = value,
            REG_MCR => {
                let was_loop = self.loopback();
                self.s.mcr = value & MCR_MASK;
                self.update_msr();
                if was_loop && !self.loopback() {
                    self.fill_rx();
                }
            }
            REG_LSR | REG_MSR => {} // read-only (factory test writes ignored)
            _ => self.s.scr = value,
        }
    }
}

impl PioDevice for Uart {
    fn read(&mut self, offset: u16, _size: u8) -> u32 {
        u32::from(Uart::read(self, offset))
    }
    fn write(&mut self, offset: u16, _size: u8, value: u32) {
        Uart::write(self, offset, value as u8)
    }
}

/// Spawn a thread that reads `reader` and sends every byte into the returned channel
/// (bounded, so a fast producer blocks instead of growing memory). `notify` runs after each
/// chunk is queued, e.g. to kick the vCPU out of its run so input is seen promptly. The thread
/// ends at end of input, on a read error, or when the receiver is dropped.
pub fn spawn_input_reader<R: Read + Send + 'static>(
    mut reader: R,
    notify: Option<Box<dyn Fn() + Send>>,
) -> std::io::Result<Receiver<u8>> {
    let (tx, rx) = crossbeam_channel::bounded(4096);
    std::thread::Builder::new()
        .name("serial-input".into())
        .spawn(move || {
            let mut buf = [0u8; 256];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        warn!(error = %e, "serial input: read failed; input closed");
                        return;
                    }
                };
                for &b in &buf[..n] {
                    if tx.send(b).is_err() {
                        return;
                    }
                }
                if let Some(f) = &notify {
                    f();
                }
            }
        })?;
    Ok(rx)
}

/// [`spawn_input_reader`] on the process's standard input. Putting the terminal in raw mode
/// (so keys arrive unbuffered and Ctrl-C reaches the guest) is the front end's job.
pub fn spawn_stdin_reader(notify: Option<Box<dyn Fn() + Send>>) -> std::io::Result<Receiver<u8>> {
    spawn_input_reader(std::io::stdin(), notify)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A sink that records bytes and how many flushes followed them.
    #[derive(Clone, Default)]
    struct Capture {
        inner: Arc<Mutex<(Vec<u8>, usize)>>,
    }

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.inner.lock().unwrap().0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.inner.lock().unwrap().1 += 1;
            Ok(())
        }
    }

    impl Capture {
        fn bytes(&self) -> Vec<u8> {
            self.inner.lock().unwrap().0.clone()
        }
        fn flushes(&self) -> usize {
            self.inner.lock().unwrap().1
        }
    }

    fn uart() -> (Uart, Capture) {
        let cap = Capture::default();
        (Uart::new(Box::new(cap.clone())), cap)
    }

    #[test]
    fn transmit_goes_to_sink_flushed_per_byte() {
        let (mut u, cap) = uart();
        for &b in b"hi\n" {
            assert_ne!(u.read(REG_LSR) & LSR_THRE, 0);
            u.write(REG_DATA, b);
        }
        assert_eq!(cap.bytes(), b"hi\n");
        assert_eq!(cap.flushes(), 3);
        assert_eq!(u.read(REG_LSR), LSR_THRE | LSR_TEMT);
    }

    #[test]
    fn word_length_masks_transmitted_bits() {
        let (mut u, cap) = uart();
        u.write(REG_LCR, 0x02); // 7 bits
        u.write(REG_DATA, 0xC1);
        assert_eq!(cap.bytes(), vec![0x41]);
    }

    #[test]
    fn divisor_latch() {
        let (mut u, cap) = uart();
        // The usual init: DLAB, 115200 baud, 8N1.
        u.write(REG_LCR, LCR_DLAB);
        u.write(REG_DATA, 0x01);
        u.write(REG_IER, 0x00);
        assert_eq!(u.read(REG_DATA), 0x01);
        assert_eq!(u.read(REG_IER), 0x00);
        u.write(REG_LCR, 0x03);
        assert_eq!(u.divisor(), 1);
        assert!(cap.bytes().is_empty(), "DLL write is not a transmit");
        u.write(REG_IER, IER_ERBFI);
        assert_eq!(u.read(REG_IER), IER_ERBFI);
        u.write(REG_LCR, LCR_DLAB | 0x03);
        assert_eq!(u.read(REG_IER), 0x00, "DLM again");
        assert_eq!(u.read(REG_LCR), LCR_DLAB | 0x03);
    }

    #[test]
    fn receive_from_host_input() {
        let (mut u, _) = uart();
        assert_eq!(u.read(REG_LSR) & LSR_DR, 0);
        u.push_input(b"ab");
        // FIFOs off: a one-byte holding register, the rest waits.
        assert_eq!((u.rx_len(), u.input_backlog()), (1, 1));
        assert_ne!(u.read(REG_LSR) & LSR_DR, 0);
        assert_eq!(u.read(REG_DATA), b'a');
        assert_eq!(u.read(REG_DATA), b'b');
        assert_eq!(u.read(REG_LSR) & LSR_DR, 0);
        // FIFOs on: up to 16 bytes at once, nothing lost.
        u.write(REG_IIR_FCR, FCR_ENABLE);
        let input: Vec<u8> = (0..40).collect();
        u.push_input(&input);
        assert_eq!((u.rx_len(), u.input_backlog()), (16, 24));
        let got: Vec<u8> = (0..40).map(|_| u.read(REG_DATA)).collect();
        assert_eq!(got, input);
        assert_eq!(u.read(REG_LSR) & (LSR_DR | LSR_OE), 0);
    }

    #[test]
    fn loopback() {
        let (mut u, cap) = uart();
        u.write(REG_MCR, MCR_LOOP);
        u.write(REG_DATA, 0x5A);
        assert!(cap.bytes().is_empty(), "loopback keeps TX off the wire");
        assert_ne!(u.read(REG_LSR) & LSR_DR, 0);
        assert_eq!(u.read(REG_DATA), 0x5A);
        // Host input waits while in loopback.
        u.push_input(b"x");
        assert_eq!(u.rx_len(), 0);
        // Modem lines follow MCR: RTS→CTS, DTR→DSR, OUT1→RI, OUT2→DCD.
        u.read(REG_MSR);
        u.write(REG_MCR, MCR_LOOP | MCR_RTS | MCR_OUT1);
        assert_eq!(u.read(REG_MSR), MSR_CTS | MSR_RI | MSR_DCTS);
        u.write(REG_MCR, MCR_LOOP | MCR_DTR | MCR_OUT2);
        assert_eq!(
            u.read(REG_MSR),
            MSR_DSR | MSR_DCD | MSR_DCTS | MSR_DDSR | MSR_TERI | MSR_DDCD
        );
        assert_eq!(u.read(REG_MSR) & MSR_DELTAS, 0, "deltas clear on read");
        // Overrun: the holding register is full.
        u.write(REG_DATA, 1);
        u.write(REG_DATA, 2);
        assert_eq!(u.read(REG_LSR) & (LSR_OE | LSR_DR), LSR_OE | LSR_DR);
        assert_eq!(u.read(REG_LSR) & LSR_OE, 0, "OE clears on read");
        assert_eq!(u.read(REG_DATA), 1);
        // Leaving loopback connects the line again.
        u.write(REG_MCR, 0);
        assert_eq!(u.read(REG_DATA), b'x');
        assert_eq!(u.read(REG_MSR), MSR_CTS | MSR_DSR | MSR_DCD | MSR_DCTS);
    }

    #[test]
    fn iir_priorities() {
        let (mut u, _) = uart();
        assert_eq!(u.read(REG_IIR_FCR), IIR_NO_INT);
        u.write(REG_MCR, MCR_LOOP | MCR_OUT2);
        u.read(REG_MSR);
        // Make every source pending: an overrun, data, THRE, a modem-status delta.
        u.write(REG_DATA, 1);
        u.write(REG_DATA, 2);
        u.write(REG_MCR, MCR_LOOP | MCR_OUT2 | MCR_RTS);
        u.write(REG_IER, IER_ERBFI | IER_ETBEI | IER_ELSI | IER_EDSSI);
        assert!(u.irq_level());
        assert_eq!(u.read(REG_IIR_FCR), IIR_LINE_STATUS);
        u.read(REG_LSR);
        assert_eq!(u.read(REG_IIR_FCR), IIR_RX_DATA);
        u.read(REG_DATA);
        assert_eq!(u.read(REG_IIR_FCR), IIR_THR_EMPTY);
        // Reading IIR cleared THRE.
        assert_eq!(u.read(REG_IIR_FCR), IIR_MODEM_STATUS);
        u.read(REG_MSR);
        assert_eq!(u.read(REG_IIR_FCR), IIR_NO_INT);
        assert!(!u.irq_level());
    }

    #[test]
    fn thre_interrupt_rearm_on_ier_write() {
        let (mut u, _) = uart();
        u.write(REG_MCR, MCR_OUT2);
        u.write(REG_IER, IER_ETBEI);
        assert!(u.irq_level(), "enabling ETBEI with THR empty interrupts");
        assert_eq!(u.read(REG_IIR_FCR), IIR_THR_EMPTY);
        assert!(!u.irq_level());
        // Writing the same IER value again does not re-arm.
        u.write(REG_IER, IER_ETBEI);
        assert!(!u.irq_level());
        // Toggling does (Linux's THRE test, Windows' IER 0 → 0x0F dance).
        u.write(REG_IER, 0);
        u.write(REG_IER, IER_ETBEI);
        assert!(u.irq_level());
        u.read(REG_IIR_FCR);
        // A transmitted byte re-arms it too.
        u.write(REG_DATA, b'a');
        assert_eq!(u.read(REG_IIR_FCR), IIR_THR_EMPTY);
    }

    #[test]
    fn irq_gated_by_out2() {
        let (mut u, _) = uart();
        u.write(REG_IER, IER_ERBFI);
        u.push_input(b"z");
        assert_eq!(u.read(REG_IIR_FCR), IIR_RX_DATA);
        assert!(!u.irq_level(), "OUT2 clear: no IRQ on a PC");
        u.write(REG_MCR, MCR_DTR | MCR_RTS | MCR_OUT2);
        assert!(u.irq_level());
        u.read(REG_DATA);
        assert!(!u.irq_level());
    }

    #[test]
    fn fifo_trigger_level_and_timeout() {
        let (mut u, _) = uart();
        u.write(REG_MCR, MCR_OUT2);
        u.write(REG_IER, IER_ERBFI);
        // Linux: FIFO on, clear both, trigger at 8 bytes.
        u.write(REG_IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX | FCR_CLEAR_TX | 0x80);
        assert_eq!(u.read(REG_IIR_FCR), IIR_FIFO_ENABLED | IIR_NO_INT);
        u.push_input(b"abc");
        assert_eq!(u.read(REG_IIR_FCR), IIR_FIFO_ENABLED | IIR_TIMEOUT);
        u.push_input(b"defgh");
        assert_eq!(u.read(REG_IIR_FCR), IIR_FIFO_ENABLED | IIR_RX_DATA);
        // Clearing the receive FIFO drops what it held.
        u.write(REG_IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX | 0x80);
        assert_eq!(u.rx_len(), 0);
        assert_eq!(u.read(REG_IIR_FCR), IIR_FIFO_ENABLED | IIR_NO_INT);
        // Disabling the FIFOs.
        u.write(REG_IIR_FCR, 0);
        assert_eq!(u.read(REG_IIR_FCR), IIR_NO_INT);
    }

    #[test]
    fn scratch_register() {
        let (mut u, _) = uart();
        u.write(REG_SCR, 0xA5);
        assert_eq!(u.read(REG_SCR), 0xA5);
    }

    #[test]
    fn failing_sink_is_tolerated() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("gone"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut u = Uart::new(Box::new(Broken));
        u.write(REG_DATA, b'a');
        u.write(REG_DATA, b'b');
        assert_ne!(u.read(REG_LSR) & LSR_THRE, 0);
    }

    #[test]
    fn input_reader_thread() {
        let notified = Arc::new(Mutex::new(0usize));
        let n2 = notified.clone();
        let rx = spawn_input_reader(
            std::io::Cursor::new(b"hello".to_vec()),
            Some(Box::new(move || *n2.lock().unwrap() += 1)),
        )
        .unwrap();
        let got: Vec<u8> = rx.iter().collect(); // ends when the thread drops the sender
        assert_eq!(got, b"hello");
        assert!(*notified.lock().unwrap() >= 1);
    }

    #[test]
    fn state_round_trip_keeps_sink() {
        let (mut u, cap) = uart();
        u.write(REG_IIR_FCR, FCR_ENABLE);
        u.push_input(b"queued");
        let st = u.state();
        let (mut v, _) = uart();
        v.restore_state(st.clone());
        assert_eq!(v.state(), st);
        assert_eq!(v.read(REG_DATA), b'q');
        u.write(REG_DATA, b'!');
        assert_eq!(cap.bytes(), b"!");
    }
}
