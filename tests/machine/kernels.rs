//! Multiboot kernels built in the test (code assembled with `code_asm`, wrapped in an ELF32 or
//! a.out-kludge image in Rust) boot, print through COM1 and exit through debug-exit; flat
//! binaries boot in both entry modes; bad inputs give the documented errors.

use crane86::machine::config::{
    FlatEntryMode, ImageSource, KernelConfig, KernelFormat, MachineConfig, SerialBuffer,
    SerialSink, TripleFaultPolicy,
};
use crane86::machine::loader::images::{elf32, multiboot_aout, ElfSegment};
use crane86::machine::{EngineKind, ExitReason, MachineError, PcMachine};
use iced_x86::code_asm::*;

const KERNEL_BASE: u32 = 0x10_0000;
/// Debug-exit value of a kernel that found everything as expected.
const KERNEL_OK: u32 = 0x21;
/// Debug-exit value when EAX did not hold the Multiboot magic.
const KERNEL_BAD_MAGIC: u32 = 0x55;

/// A 32-bit kernel that checks EAX, prints the command line, `message` (at `message_addr`)
/// and the first module (a NUL-terminated string) to COM1, then exits with `KERNEL_OK`.
fn kernel_code(ip: u64, message_addr: u32) -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    let mut putc = a.create_label();
    let mut puts = a.create_label();
    let mut bad = a.create_label();
    let mut no_mods = a.create_label();
    a.cmp(eax, 0x2BAD_B002u32 as i32).unwrap();
    a.jne(bad).unwrap();
    a.mov(esi, dword_ptr(ebx + 16)).unwrap();
    a.call(puts).unwrap();
    a.mov(al, b'\n' as u32).unwrap();
    a.call(putc).unwrap();
    a.mov(esi, message_addr).unwrap();
    a.call(puts).unwrap();
    a.test(dword_ptr(ebx), 8).unwrap();
    a.jz(no_mods).unwrap();
    a.mov(ecx, dword_ptr(ebx + 24)).unwrap();
    a.mov(esi, dword_ptr(ecx)).unwrap();
    a.call(puts).unwrap();
    a.set_label(&mut no_mods).unwrap();
    a.mov(al, KERNEL_OK).unwrap();
    a.out(0xF4, al).unwrap();
    a.hlt().unwrap();
    a.set_label(&mut bad).unwrap();
    a.mov(al, KERNEL_BAD_MAGIC).unwrap();
    a.out(0xF4, al).unwrap();
    a.hlt().unwrap();
    // putc: AL to COM1 after LSR.THRE.
    let mut wait = a.create_label();
    a.set_label(&mut putc).unwrap();
    a.push(eax).unwrap();
    a.mov(dx, 0x3FDu32).unwrap();
    a.set_label(&mut wait).unwrap();
    a.in_(al, dx).unwrap();
    a.test(al, 0x20).unwrap();
    a.jz(wait).unwrap();
    a.pop(eax).unwrap();
    a.mov(dx, 0x3F8u32).unwrap();
    a.out(dx, al).unwrap();
    a.ret().unwrap();
    // puts: NUL-terminated string at ESI.
    let (mut next, mut done) = (a.create_label(), a.create_label());
    a.set_label(&mut puts).unwrap();
    a.nop().unwrap();
    a.set_label(&mut next).unwrap();
    a.mov(al, byte_ptr(esi)).unwrap();
    a.test(al, al).unwrap();
    a.jz(done).unwrap();
    a.call(putc).unwrap();
    a.inc(esi).unwrap();
    a.jmp(next).unwrap();
    a.set_label(&mut done).unwrap();
    a.ret().unwrap();
    a.assemble(ip).unwrap()
}

fn kernel_config(image: Vec<u8>, modules: Vec<ImageSource>, cmdline: &str) -> KernelConfig {
    KernelConfig {
        image: ImageSource::Memory {
            name: "test-kernel".into(),
            bytes: image,
        },
        modules,
        cmdline: cmdline.into(),
        format: KernelFormat::Multiboot,
    }
}

fn boot(
    engine: EngineKind,
    kernel: KernelConfig,
) -> (Result<crane86::machine::RunSummary, MachineError>, String) {
    let serial = SerialBuffer::new();
    let config = MachineConfig {
        engine,
        ram_size: 32 << 20,
        serial: SerialSink::Buffer(serial.clone()),
        kernel: Some(kernel),
        max_instructions: Some(10_000_000),
        ..MachineConfig::default()
    };
    let result = PcMachine::new(config).and_then(|mut m| m.run());
    (result, serial.text())
}

fn module(text: &str) -> ImageSource {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    ImageSource::Memory {
        name: "initrd.txt".into(),
        bytes,
    }
}

#[test]
fn multiboot_elf_kernel_boots_and_exits() {
    for engine in EngineKind::emulators() {
        let message = b"hello from an ELF kernel\n\0";
        let msg_addr = KERNEL_BASE + 0x1000;
        let code = kernel_code(u64::from(KERNEL_BASE), msg_addr);
        let image = elf32(
            KERNEL_BASE,
            &[
                ElfSegment {
                    paddr: KERNEL_BASE,
                    data: &code,
                    memsz: code.len() as u32,
                },
                ElfSegment {
                    paddr: msg_addr,
                    data: message,
                    memsz: 0x2000,
                },
            ],
        );
        let k = kernel_config(
            image,
            vec![module("module says hi\n")],
            "console=ttyS0 quiet",
        );
        let (result, out) = boot(engine, k);
        let summary = result.unwrap_or_else(|e| panic!("{engine}: {e}\n{out}"));
        assert_eq!(
            summary.reason,
            ExitReason::DebugExit(KERNEL_OK),
            "{engine}\n{out}"
        );
        assert_eq!(summary.status, (KERNEL_OK << 1 | 1) as i32);
        assert_eq!(
            out, "test-kernel console=ttyS0 quiet\nhello from an ELF kernel\nmodule says hi\n",
            "{engine}"
        );
    }
}

#[test]
fn multiboot_aout_kludge_kernel_boots_and_exits() {
    for engine in EngineKind::emulators() {
        // Layout: 32-byte header, code, then the message.
        let code_ip = u64::from(KERNEL_BASE) + 32;
        let probe = kernel_code(code_ip, 0);
        let msg_addr = (code_ip + probe.len() as u64) as u32;
        let mut code = kernel_code(code_ip, msg_addr);
        assert_eq!(code.len(), probe.len());
        code.extend_from_slice(b"hello from an a.out kernel\n\0");
        let image = multiboot_aout(KERNEL_BASE, &code, 0x4000, 0);
        let (result, out) = boot(engine, kernel_config(image, vec![], ""));
        let summary = result.unwrap_or_else(|e| panic!("{engine}: {e}\n{out}"));
        assert_eq!(
            summary.reason,
            ExitReason::DebugExit(KERNEL_OK),
            "{engine}\n{out}"
        );
        assert_eq!(out, "test-kernel\nhello from an a.out kernel\n", "{engine}");
    }
}

fn flat(code: Vec<u8>, load_addr: u64, mode: FlatEntryMode) -> KernelConfig {
    KernelConfig {
        image: ImageSource::Memory {
            name: "flat.bin".into(),
            bytes: code,
        },
        modules: vec![],
        cmdline: String::new(),
        format: KernelFormat::Flat {
            load_addr,
            entry: None,
            mode,
        },
    }
}

fn exit_with(bits: u32, value: u32) -> Vec<u8> {
    let mut a = CodeAssembler::new(bits).unwrap();
    a.mov(al, value).unwrap();
    a.out(0xF4, al).unwrap();
    a.hlt().unwrap();
    a.assemble(0).unwrap()
}

#[test]
fn flat_binaries_boot_in_both_entry_modes() {
    for engine in EngineKind::emulators() {
        for (bits, mode, addr) in [
            (32, FlatEntryMode::Protected32, 0x20_0000),
            (16, FlatEntryMode::Real, 0x7C00),
        ] {
            let (result, _) = boot(engine, flat(exit_with(bits, 7), addr, mode));
            let s = result.unwrap_or_else(|e| panic!("{engine} {mode:?}: {e}"));
            assert_eq!(s.reason, ExitReason::DebugExit(7), "{engine} {mode:?}");
            assert_eq!(s.status, 15);
        }
    }
}

#[test]
fn corrupt_kernel_is_rejected_with_its_name() {
    let (result, _) = boot(
        EngineKind::Interp,
        kernel_config(vec![0x90; 10_000], vec![], ""),
    );
    let e = result.unwrap_err().to_string();
    assert_eq!(
        e,
        "loading kernel test-kernel: not a Multiboot image (no header magic in the first 8192 bytes)"
    );
    let missing = KernelConfig {
        image: ImageSource::File("/nonexistent/kernel.elf".into()),
        ..kernel_config(vec![], vec![], "")
    };
    let (result, _) = boot(EngineKind::Interp, missing);
    let e = result.unwrap_err().to_string();
    assert!(e.contains("/nonexistent/kernel.elf"), "{e}");
}

#[test]
fn bad_machine_configs_are_rejected() {
    let e = PcMachine::new(MachineConfig {
        serial: SerialSink::None,
        ..MachineConfig::default()
    })
    .err()
    .unwrap();
    assert!(matches!(e, MachineError::NothingToBoot), "{e}");
    let e = PcMachine::new(MachineConfig {
        serial: SerialSink::None,
        firmware: Some(ImageSource::Memory {
            name: "odd.rom".into(),
            bytes: vec![0; 3000],
        }),
        ..MachineConfig::default()
    })
    .err()
    .unwrap();
    assert_eq!(
        e.to_string(),
        "firmware image odd.rom: 3000 bytes is not a non-zero multiple of 64 KiB (at most 16 MiB)"
    );
    let e = PcMachine::new(MachineConfig {
        ram_size: 1000,
        serial: SerialSink::None,
        ..MachineConfig::demo(1)
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("0x3e8"), "{e}");
}

#[test]
fn triple_fault_stops_with_a_register_dump_or_resets() {
    // No IDT (limit 0): UD2 cannot be delivered, nor can the double fault.
    let mut a = CodeAssembler::new(32).unwrap();
    a.mov(ebx, 0x1234_5678u32).unwrap();
    a.ud2().unwrap();
    let code = a.assemble(0x20_0000).unwrap();
    for engine in EngineKind::emulators() {
        let (result, _) = boot(
            engine,
            flat(code.clone(), 0x20_0000, FlatEntryMode::Protected32),
        );
        let e = result.unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, MachineError::TripleFault { .. }),
            "{engine}: {msg}"
        );
        assert!(msg.contains("rbx 0000000012345678"), "{engine}: {msg}");
        assert!(msg.contains("mode Protected"), "{engine}: {msg}");

        let config = MachineConfig {
            engine,
            serial: SerialSink::None,
            kernel: Some(flat(code.clone(), 0x20_0000, FlatEntryMode::Protected32)),
            triple_fault: TripleFaultPolicy::Reset,
            max_resets: 3,
            ..MachineConfig::default()
        };
        let e = PcMachine::new(config).unwrap().run().unwrap_err();
        assert!(
            matches!(
                e,
                MachineError::ResetLoop {
                    resets: 4,
                    limit: 3
                }
            ),
            "{engine}: {e}"
        );
    }
}

#[test]
fn halt_with_interrupts_disabled_is_reported() {
    let mut a = CodeAssembler::new(32).unwrap();
    a.cli().unwrap();
    a.hlt().unwrap();
    let code = a.assemble(0x20_0000).unwrap();
    for engine in EngineKind::emulators() {
        let (result, _) = boot(
            engine,
            flat(code.clone(), 0x20_0000, FlatEntryMode::Protected32),
        );
        let e = result.unwrap_err();
        assert!(
            matches!(e, MachineError::HaltedForever { .. }),
            "{engine}: {e}"
        );
        assert!(e.to_string().contains("(halted)"), "{engine}: {e}");
    }
}

#[test]
fn debug_exit_status_keeps_8_odd_bits_like_qemu() {
    for (value, status) in [
        (0u32, 1),
        (0x21, 0x43),
        (0x80, 1),
        (0x8000_0000, 1),
        (0xFFFF_FFFF, 0xFF),
    ] {
        let mut a = CodeAssembler::new(32).unwrap();
        a.mov(eax, value).unwrap();
        a.out(0xF4u32, eax).unwrap();
        a.hlt().unwrap();
        let code = a.assemble(0x20_0000).unwrap();
        let (result, _) = boot(
            EngineKind::Interp,
            flat(code, 0x20_0000, FlatEntryMode::Protected32),
        );
        let s = result.unwrap();
        assert_eq!(s.reason, ExitReason::DebugExit(value));
        assert_eq!(s.status, status, "value {value:#x}");
    }
}
