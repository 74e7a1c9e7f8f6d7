//! COM1 input reaches the guest: bytes sent on `MachineConfig::serial_input` are moved into the
//! UART between engine slices; a guest polling LSR.DR echoes them back in upper case.

use crane86::machine::config::{
    serial_channel, FlatEntryMode, ImageSource, KernelConfig, KernelFormat, MachineConfig,
    SerialBuffer, SerialSink,
};
use crane86::machine::{EngineKind, ExitReason, PcMachine};
use iced_x86::code_asm::*;

const LOAD: u64 = 0x20_0000;

/// Read bytes from COM1 (polling LSR bit 0), echo them upper-cased until '\n', exit with the
/// number of bytes echoed.
fn echo_kernel() -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    let (mut poll, mut tx_wait, mut done) = (a.create_label(), a.create_label(), a.create_label());
    a.xor(ecx, ecx).unwrap();
    a.set_label(&mut poll).unwrap();
    a.mov(dx, 0x3FDu32).unwrap();
    a.in_(al, dx).unwrap();
    a.test(al, 1).unwrap();
    a.jz(poll).unwrap();
    a.mov(dx, 0x3F8u32).unwrap();
    a.in_(al, dx).unwrap();
    a.mov(bl, al).unwrap();
    a.mov(dx, 0x3FDu32).unwrap();
    a.set_label(&mut tx_wait).unwrap();
    a.in_(al, dx).unwrap();
    a.test(al, 0x20).unwrap();
    a.jz(tx_wait).unwrap();
    a.mov(al, bl).unwrap();
    a.cmp(al, b'\n' as i32).unwrap();
    a.je(done).unwrap();
    a.and(al, 0xDF).unwrap(); // upper case (letters)
    a.mov(dx, 0x3F8u32).unwrap();
    a.out(dx, al).unwrap();
    a.inc(ecx).unwrap();
    a.jmp(poll).unwrap();
    a.set_label(&mut done).unwrap();
    a.mov(eax, ecx).unwrap();
    a.out(0xF4u32, al).unwrap();
    a.hlt().unwrap();
    a.assemble(LOAD).unwrap()
}

#[test]
fn serial_input_reaches_a_polling_guest() {
    for engine in EngineKind::emulators() {
        let (tx, rx) = serial_channel();
        for b in b"hello\n" {
            tx.send(*b).unwrap();
        }
        let serial = SerialBuffer::new();
        let config = MachineConfig {
            engine,
            ram_size: 16 << 20,
            serial: SerialSink::Buffer(serial.clone()),
            serial_input: Some(rx),
            kernel: Some(KernelConfig {
                image: ImageSource::Memory {
                    name: "echo.bin".into(),
                    bytes: echo_kernel(),
                },
                modules: vec![],
                cmdline: String::new(),
                format: KernelFormat::Flat {
                    load_addr: LOAD,
                    entry: None,
                    mode: FlatEntryMode::Protected32,
                },
            }),
            max_instructions: Some(20_000_000),
            ..MachineConfig::default()
        };
        let s = PcMachine::new(config).unwrap().run().unwrap();
        assert_eq!(
            s.reason,
            ExitReason::DebugExit(5),
            "{engine}: {}",
            serial.text()
        );
        assert_eq!(serial.text(), "HELLO", "{engine}");
    }
}
