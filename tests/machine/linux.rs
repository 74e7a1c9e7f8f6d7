//! The Linux bzImage loader with synthetic images built in the test: a setup header with the
//! fields the loader reads, and a protected-mode "kernel" whose 64-bit entry (load address +
//! 0x200) checks the boot-protocol entry state, prints the command line and the initrd through
//! COM1 and exits through debug-exit. Also the zero page's fields and e820 map read back from
//! RAM, the automatic choice of this loader over Multiboot, and the error messages for bad
//! images and placements that do not fit.

use crane86::machine::config::{
    ImageSource, KernelConfig, KernelFormat, MachineConfig, SerialBuffer, SerialSink,
};
use crane86::machine::loader::bzimage::{
    self, EntryProtocol, BOOT_CS, BOOT_DS, BOOT_PARAMS_ADDR, CMDLINE_ADDR, KERNEL_LOAD_ADDR,
};
use crane86::machine::{EngineKind, ExitReason, MachineError, PcMachine};
use crane86::memory::PhysMem;
use crane86::x86::{CpuMode, CpuState, SegReg};
use iced_x86::code_asm::*;

/// Debug-exit value of a kernel that found the entry state it expected.
const KERNEL_OK: u32 = 0x42;
/// Debug-exit value of a kernel that found something wrong.
const KERNEL_BAD: u32 = 0x66;

/// Setup-header fields of a synthetic image.
#[derive(Clone, Copy)]
struct Header {
    version: u16,
    xloadflags: u16,
    initrd_addr_max: u32,
    init_size: u32,
    pref_address: u64,
    cmdline_size: u32,
}

impl Default for Header {
    fn default() -> Self {
        Header {
            version: 0x020F,
            xloadflags: 0x1 | 0x2, // XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
            initrd_addr_max: 0x7FFF_FFFF,
            init_size: 0x40_0000,
            pref_address: 0x100_0000,
            cmdline_size: 2047,
        }
    }
}

/// A bzImage: 4 setup sectors + boot sector holding the header, then `kernel`.
fn bzimage(h: Header, kernel: &[u8]) -> Vec<u8> {
    let mut img = vec![0u8; 5 * 512];
    let put = |img: &mut Vec<u8>, off: usize, bytes: &[u8]| {
        img[off..off + bytes.len()].copy_from_slice(bytes)
    };
    put(&mut img, 0x1F1, &[4]); // setup_sects
    put(&mut img, 0x1FE, &0xAA55u16.to_le_bytes());
    put(&mut img, 0x202, b"HdrS");
    put(&mut img, 0x206, &h.version.to_le_bytes());
    put(&mut img, 0x211, &[0x01]); // loadflags: LOADED_HIGH
    put(&mut img, 0x22C, &h.initrd_addr_max.to_le_bytes());
    put(&mut img, 0x230, &0x20_0000u32.to_le_bytes()); // kernel_alignment
    put(&mut img, 0x234, &[1]); // relocatable_kernel
    put(&mut img, 0x236, &h.xloadflags.to_le_bytes());
    put(&mut img, 0x238, &h.cmdline_size.to_le_bytes());
    put(&mut img, 0x258, &h.pref_address.to_le_bytes());
    put(&mut img, 0x260, &h.init_size.to_le_bytes());
    img.extend_from_slice(kernel);
    img
}

/// A bzImage's protected-mode kernel: HLT at the 32-bit entry, [`entry64_code`] at +0x200.
fn kernel64() -> Vec<u8> {
    let mut kernel = vec![0xF4u8; 0x200]; // HLT: the 32-bit entry is not used here
    kernel.extend_from_slice(&entry64_code(KERNEL_LOAD_ADDR + 0x200));
    kernel
}

/// 64-bit code at `entry` that checks CS/DS selectors, that RSI points at a zero page with
/// type_of_loader 0xFF, prints the command line, '|', the initrd's first bytes (a
/// NUL-terminated string), then exits with [`KERNEL_OK`] (or [`KERNEL_BAD`]).
fn entry64_code(entry: u64) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    let mut bad = a.create_label();
    let mut putc = a.create_label();
    let mut puts = a.create_label();
    a.mov(ax, cs).unwrap();
    a.cmp(ax, i32::from(BOOT_CS)).unwrap();
    a.jne(bad).unwrap();
    a.mov(ax, ds).unwrap();
    a.cmp(ax, i32::from(BOOT_DS)).unwrap();
    a.jne(bad).unwrap();
    a.cmp(byte_ptr(rsi + 0x210), 0xFF).unwrap();
    a.jne(bad).unwrap();
    a.mov(rbx, rsi).unwrap();
    a.mov(esi, dword_ptr(rbx + 0x228)).unwrap(); // cmd_line_ptr
    a.call(puts).unwrap();
    a.mov(al, b'|' as u32).unwrap();
    a.call(putc).unwrap();
    a.mov(esi, dword_ptr(rbx + 0x218)).unwrap(); // ramdisk_image
    a.call(puts).unwrap();
    a.mov(al, KERNEL_OK).unwrap();
    a.out(0xF4, al).unwrap();
    a.hlt().unwrap();
    a.set_label(&mut bad).unwrap();
    a.mov(al, KERNEL_BAD).unwrap();
    a.out(0xF4, al).unwrap();
    a.hlt().unwrap();
    // putc: AL to COM1 after LSR.THRE.
    let mut wait = a.create_label();
    a.set_label(&mut putc).unwrap();
    a.push(rax).unwrap();
    a.mov(dx, 0x3FDu32).unwrap();
    a.set_label(&mut wait).unwrap();
    a.in_(al, dx).unwrap();
    a.test(al, 0x20).unwrap();
    a.jz(wait).unwrap();
    a.pop(rax).unwrap();
    a.mov(dx, 0x3F8u32).unwrap();
    a.out(dx, al).unwrap();
    a.ret().unwrap();
    // puts: NUL-terminated string at RSI.
    let mut done = a.create_label();
    a.set_label(&mut puts).unwrap();
    a.mov(al, byte_ptr(rsi)).unwrap();
    a.test(al, al).unwrap();
    a.jz(done).unwrap();
    a.call(putc).unwrap();
    a.inc(rsi).unwrap();
    a.jmp(puts).unwrap();
    a.set_label(&mut done).unwrap();
    a.ret().unwrap();
    a.assemble(entry).unwrap()
}

/// An x86-64 ELF `vmlinux` with one PT_LOAD of `code` at physical (and entry) address `paddr`
/// and `bss` zeroed bytes after it.
pub(crate) fn vmlinux_elf(paddr: u64, code: &[u8], bss: u64) -> Vec<u8> {
    const CODE_OFFSET: usize = 0x1000;
    let mut elf = vec![0u8; CODE_OFFSET];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // ELFCLASS64
    elf[5] = 1; // little-endian
    elf[6] = 1; // EV_CURRENT
    elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf[24..32].copy_from_slice(&paddr.to_le_bytes()); // e_entry
    elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    let ph = 64;
    elf[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf[ph + 8..ph + 16].copy_from_slice(&(CODE_OFFSET as u64).to_le_bytes());
    elf[ph + 16..ph + 24].copy_from_slice(&(0xFFFF_FFFF_8000_0000 + paddr).to_le_bytes());
    elf[ph + 24..ph + 32].copy_from_slice(&paddr.to_le_bytes());
    elf[ph + 32..ph + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
    elf[ph + 40..ph + 48].copy_from_slice(&(code.len() as u64 + bss).to_le_bytes());
    elf.extend_from_slice(code);
    elf
}

pub(crate) fn kernel_config(image: Vec<u8>, initrd: &[u8], cmdline: &str) -> KernelConfig {
    KernelConfig {
        image: ImageSource::Memory {
            name: "synthetic-bzImage".into(),
            bytes: image,
        },
        modules: if initrd.is_empty() {
            vec![]
        } else {
            vec![ImageSource::Memory {
                name: "initrd".into(),
                bytes: initrd.to_vec(),
            }]
        },
        cmdline: cmdline.into(),
        // The default: the loader must recognise the bzImage by its magic.
        format: KernelFormat::Multiboot,
    }
}

fn machine_config(engine: EngineKind, ram: u64, kernel: KernelConfig) -> MachineConfig {
    MachineConfig {
        engine,
        ram_size: ram,
        serial: SerialSink::None,
        kernel: Some(kernel),
        max_instructions: engine.counts_instructions().then_some(1_000_000),
        ..MachineConfig::default()
    }
}

fn u32_at(mem: &PhysMem, addr: u64) -> u32 {
    let mut b = [0; 4];
    mem.read_ram(addr, &mut b).unwrap();
    u32::from_le_bytes(b)
}

fn u64_at(mem: &PhysMem, addr: u64) -> u64 {
    let mut b = [0; 8];
    mem.read_ram(addr, &mut b).unwrap();
    u64::from_le_bytes(b)
}

#[test]
fn bzimage_boots_through_the_64_bit_entry_on_every_engine() {
    for engine in EngineKind::available() {
        let serial = SerialBuffer::new();
        let kernel = kernel_config(
            bzimage(Header::default(), &kernel64()),
            b"initrd-data\0",
            "console=ttyS0 quiet",
        );
        let config = MachineConfig {
            serial: SerialSink::Buffer(serial.clone()),
            ..machine_config(engine, 64 << 20, kernel)
        };
        let summary = PcMachine::new(config)
            .and_then(|mut m| m.run())
            .unwrap_or_else(|e| panic!("{engine}: {e}"));
        assert_eq!(
            summary.reason,
            ExitReason::DebugExit(KERNEL_OK),
            "{engine}: serial {:?}",
            serial.text()
        );
        assert_eq!(serial.text(), "console=ttyS0 quiet|initrd-data", "{engine}");
    }
}

#[test]
fn vmlinux_elf_boots_at_its_entry_on_every_engine() {
    const PADDR: u64 = 0x100_0000;
    for engine in EngineKind::available() {
        let serial = SerialBuffer::new();
        let image = vmlinux_elf(PADDR, &entry64_code(PADDR), 0x10_0000);
        let kernel = kernel_config(image, b"rd\0", "root=/dev/ram0");
        let config = MachineConfig {
            serial: SerialSink::Buffer(serial.clone()),
            ..machine_config(engine, 64 << 20, kernel)
        };
        let summary = PcMachine::new(config)
            .and_then(|mut m| m.run())
            .unwrap_or_else(|e| panic!("{engine}: {e}"));
        assert_eq!(
            summary.reason,
            ExitReason::DebugExit(KERNEL_OK),
            "{engine}: serial {:?}",
            serial.text()
        );
        assert_eq!(serial.text(), "root=/dev/ram0|rd", "{engine}");
    }
    // A segment beyond RAM is a clear error.
    let e = load_error(vmlinux_elf(0x800_0000, &[0xF4], 0), &[], "", 64 << 20);
    assert!(e.contains("lies outside RAM"), "{e}");
}

#[test]
fn zero_page_fields_and_entry_state() {
    let mut mem = PhysMem::new(256 << 20, &[]).unwrap();
    let mut cpu = CpuState::reset();
    let initrd = vec![0xA5u8; 3 << 20];
    let image = bzimage(Header::default(), &kernel64());
    let layout = bzimage::load(
        &mut mem,
        &mut cpu,
        &image,
        "root=/dev/ram0",
        &initrd,
        Some(0xE_0000),
    )
    .unwrap();
    assert_eq!(layout.protocol, EntryProtocol::Bits64);
    let zp = BOOT_PARAMS_ADDR;
    let mut hdr = [0u8; 4];
    mem.read_ram(zp + 0x202, &mut hdr).unwrap();
    assert_eq!(&hdr, b"HdrS", "setup header copied into the zero page");
    let mut byte = [0u8; 1];
    mem.read_ram(zp + 0x210, &mut byte).unwrap();
    assert_eq!(byte[0], 0xFF, "type_of_loader");
    mem.read_ram(zp + 0x211, &mut byte).unwrap();
    assert_eq!(byte[0] & 0x81, 0x81, "loadflags LOADED_HIGH | CAN_USE_HEAP");
    assert_eq!(
        u32_at(&mem, zp + 0x228),
        CMDLINE_ADDR as u32,
        "cmd_line_ptr"
    );
    let mut cmd = [0u8; 15];
    mem.read_ram(CMDLINE_ADDR, &mut cmd).unwrap();
    assert_eq!(&cmd, b"root=/dev/ram0\0");
    // The initrd: page-aligned, as high as possible in 256 MiB, above the kernel's area.
    let rd_addr = u64::from(u32_at(&mem, zp + 0x218));
    let rd_size = u64::from(u32_at(&mem, zp + 0x21C));
    assert_eq!(rd_size, initrd.len() as u64);
    assert_eq!(rd_addr % 4096, 0);
    assert_eq!(rd_addr, ((256 << 20) - rd_size) & !0xFFF);
    assert!(rd_addr >= layout.runtime_addr + layout.init_size);
    let mut first = [0u8; 4];
    mem.read_ram(rd_addr + rd_size - 4, &mut first).unwrap();
    assert_eq!(first, [0xA5; 4]);
    assert_eq!(u64_at(&mem, zp + 0x70), 0xE_0000, "acpi_rsdp_addr");
    // e820: conventional RAM, the reserved EBDA/legacy hole, RAM from 1 MiB to the end.
    let mut n = [0u8; 1];
    mem.read_ram(zp + 0x1E8, &mut n).unwrap();
    let entries: Vec<(u64, u64, u32)> = (0..u64::from(n[0]))
        .map(|i| {
            let e = zp + 0x2D0 + i * 20;
            (u64_at(&mem, e), u64_at(&mem, e + 8), u32_at(&mem, e + 16))
        })
        .collect();
    assert_eq!(
        entries,
        vec![
            (0, 0x9_FC00, 1),
            (0x9_FC00, 0x10_0000 - 0x9_FC00, 2),
            (0x10_0000, (256 << 20) - 0x10_0000, 1),
        ]
    );
    // The protected-mode kernel at 1 MiB; entry state of the 64-bit protocol.
    let mut k = [0u8; 4];
    mem.read_ram(KERNEL_LOAD_ADDR + 0x200, &mut k).unwrap();
    assert_eq!(k, kernel64()[0x200..0x204]);
    assert_eq!(cpu.rip, KERNEL_LOAD_ADDR + 0x200);
    assert_eq!(cpu.gpr[6], BOOT_PARAMS_ADDR, "RSI");
    assert_eq!(cpu.mode(), CpuMode::Long64);
    assert_eq!(cpu.seg[SegReg::Cs as usize].selector, BOOT_CS);
    assert_eq!(cpu.seg[SegReg::Ss as usize].selector, BOOT_DS);
    assert_eq!(cpu.rflags & 0x200, 0, "interrupts off");
}

#[test]
fn e820_covers_ram_above_4_gib() {
    let mut mem = PhysMem::new((3 << 30) + (512 << 20), &[]).unwrap();
    let map: Vec<(u64, u64, u32)> = bzimage::e820_map(&mem)
        .iter()
        .map(|e| (e.addr, e.size, e.r#type))
        .collect();
    let low = mem.low_ram();
    assert_eq!(map[2], (0x10_0000, low - 0x10_0000, 1));
    assert_eq!(map[3], (1 << 32, (3 << 30) + (512 << 20) - low, 1));
    // And the loader still boots in that layout.
    let mut cpu = CpuState::reset();
    let image = bzimage(Header::default(), &kernel64());
    bzimage::load(&mut mem, &mut cpu, &image, "", b"x", None).unwrap();
}

#[test]
fn old_kernels_use_the_32_bit_entry() {
    let mut mem = PhysMem::new(64 << 20, &[]).unwrap();
    let mut cpu = CpuState::reset();
    let h = Header {
        version: 0x020A,
        xloadflags: 0,
        ..Header::default()
    };
    let layout =
        bzimage::load(&mut mem, &mut cpu, &bzimage(h, &[0xF4; 64]), "", &[], None).unwrap();
    assert_eq!(layout.protocol, EntryProtocol::Bits32);
    assert_eq!(cpu.rip, KERNEL_LOAD_ADDR);
    assert_eq!(cpu.mode(), CpuMode::Protected);
    assert_eq!(cpu.seg[SegReg::Cs as usize].selector, BOOT_CS);
    assert_eq!(cpu.gpr[6], BOOT_PARAMS_ADDR, "ESI");
}

fn load_error(image: Vec<u8>, initrd: &[u8], cmdline: &str, ram: u64) -> String {
    let config = machine_config(
        EngineKind::Interp,
        ram,
        kernel_config(image, initrd, cmdline),
    );
    match PcMachine::new(config) {
        Ok(_) => panic!("loading should have failed"),
        Err(e @ MachineError::Kernel { .. }) => e.to_string(),
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

#[test]
fn bad_images_and_placements_are_clear_errors() {
    // A kernel file without the magic, forced through the Linux loader API.
    let mut mem = PhysMem::new(64 << 20, &[]).unwrap();
    let mut cpu = CpuState::reset();
    let e = bzimage::load(&mut mem, &mut cpu, &[0u8; 4096], "", &[], None).unwrap_err();
    assert_eq!(e.to_string(), "not a bzImage (no HdrS magic at 0x202)");

    let old = Header {
        version: 0x0204,
        ..Header::default()
    };
    let e = load_error(bzimage(old, &kernel64()), &[], "", 64 << 20);
    assert!(e.contains("synthetic-bzImage") && e.contains("2.04"), "{e}");

    // Initrd larger than the RAM left above the kernel: the message gives the sizes.
    let big = vec![0u8; 60 << 20];
    let e = load_error(bzimage(Header::default(), &kernel64()), &big, "", 64 << 20);
    assert!(
        e.contains("initrd of 62914560 bytes (60 MiB) does not fit"),
        "{e}"
    );
    assert!(e.contains("0x4000000"), "RAM end in the message: {e}");

    // A decompression area beyond RAM.
    let huge = Header {
        init_size: 0x800_0000,
        ..Header::default()
    };
    let e = load_error(bzimage(huge, &kernel64()), &[], "", 64 << 20);
    assert!(e.contains("needs 0x8000000 bytes at 0x1000000"), "{e}");

    // Initrd below initrd_addr_max even with plenty of RAM.
    let low_max = Header {
        initrd_addr_max: 0x12F_FFFF, // 19 MiB - 1: below the kernel's end at 16 + 4 MiB
        ..Header::default()
    };
    let e = load_error(bzimage(low_max, &kernel64()), &[0; 8192], "", 64 << 20);
    assert!(e.contains("initrd of 8192 bytes"), "{e}");

    let long = "x".repeat(3000);
    let e = load_error(
        bzimage(Header::default(), &kernel64()),
        &[],
        &long,
        64 << 20,
    );
    assert!(e.contains("3000 bytes") && e.contains("2047"), "{e}");
}
