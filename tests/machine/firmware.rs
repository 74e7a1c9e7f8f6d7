//! Firmware images at the reset vector: the CPU starts at F000:FFF0, and the image's end is
//! also visible below 1 MiB, so the classic far jump into segment F000 works for 64 KiB and
//! 128 KiB images alike.

use crane86::machine::config::{ImageSource, MachineConfig, SerialBuffer, SerialSink};
use crane86::machine::{EngineKind, ExitReason, PcMachine};
use iced_x86::code_asm::*;

/// An image of `size` bytes: at F000:FFF0 `jmp far F000:E000`; at F000:E000 print "B" and
/// exit with 9.
fn firmware(size: usize) -> Vec<u8> {
    let mut rom = vec![0xF4u8; size];
    let mut a = CodeAssembler::new(16).unwrap();
    a.mov(dx, 0x3F8u32).unwrap();
    a.mov(al, b'B' as u32).unwrap();
    a.out(dx, al).unwrap();
    a.mov(al, 9u32).unwrap();
    a.out(0xF4u32, al).unwrap();
    a.hlt().unwrap();
    let body = a.assemble(0xE000).unwrap();
    let body_off = size - 0x1_0000 + 0xE000;
    rom[body_off..body_off + body.len()].copy_from_slice(&body);
    let reset = size - 0x10;
    rom[reset..reset + 5].copy_from_slice(&[0xEA, 0x00, 0xE0, 0x00, 0xF0]);
    rom
}

#[test]
fn firmware_starts_at_the_reset_vector_and_reaches_segment_f000() {
    for engine in EngineKind::emulators() {
        for size in [0x1_0000, 0x2_0000, 0x4_0000] {
            let serial = SerialBuffer::new();
            let config = MachineConfig {
                engine,
                ram_size: 16 << 20,
                serial: SerialSink::Buffer(serial.clone()),
                firmware: Some(ImageSource::Memory {
                    name: "test.rom".into(),
                    bytes: firmware(size),
                }),
                max_instructions: Some(1000),
                ..MachineConfig::default()
            };
            let s = PcMachine::new(config)
                .unwrap()
                .run()
                .unwrap_or_else(|e| panic!("{engine} {size:#x}: {e}"));
            assert_eq!(s.reason, ExitReason::DebugExit(9), "{engine} {size:#x}");
            assert_eq!(serial.text(), "B", "{engine} {size:#x}");
        }
    }
}
