//! ACPI power-off as a guest OS does it: find the RSDP through the BIOS data area's EBDA
//! pointer, follow XSDT → FADT, read the PM1a control port from the FADT and the `_S5`
//! sleep type from the DSDT, write SLP_TYP | SLP_EN: the machine powers off with status 0.

use crane86::machine::config::{
    ClockMode, FlatEntryMode, ImageSource, KernelConfig, KernelFormat, MachineConfig, SerialSink,
};
use crane86::machine::{EngineKind, ExitReason, PcMachine};
use iced_x86::code_asm::*;

const LOAD: u64 = 0x20_0000;

/// Little-endian dword of a 4-character signature.
fn sig(s: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*s)
}

/// Debug-exit codes of the failure paths (status `(code << 1) | 1`).
const NO_RSDP: u32 = 1;
const NO_FADT: u32 = 2;
const NO_S5: u32 = 3;
const BAD_S5: u32 = 4;
const STILL_RUNNING: u32 = 5;

fn fail(a: &mut CodeAssembler, label: &mut CodeLabel, code: u32) {
    a.set_label(label).unwrap();
    a.mov(al, code).unwrap();
    a.out(0xF4u32, al).unwrap();
    a.hlt().unwrap();
}

fn poweroff_kernel() -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    let mut scan_rsdp = a.create_label();
    let mut next_rsdp = a.create_label();
    let mut found_rsdp = a.create_label();
    let mut scan_xsdt = a.create_label();
    let mut found_fadt = a.create_label();
    let mut have_dsdt = a.create_label();
    let mut scan_dsdt = a.create_label();
    let mut found_s5 = a.create_label();
    let mut byte_prefix = a.create_label();
    let mut have_typ = a.create_label();
    let mut no_rsdp = a.create_label();
    let mut no_fadt = a.create_label();
    let mut no_s5 = a.create_label();
    let mut bad_s5 = a.create_label();
    let mut still_running = a.create_label();

    // RSDP: 16-byte steps through the first KiB of the EBDA.
    a.movzx(esi, word_ptr(0x40E)).unwrap();
    a.shl(esi, 4).unwrap();
    a.lea(ecx, ptr(esi + 1024)).unwrap();
    a.set_label(&mut scan_rsdp).unwrap();
    a.cmp(dword_ptr(esi), sig(b"RSD ") as i32).unwrap();
    a.jne(next_rsdp).unwrap();
    a.cmp(dword_ptr(esi + 4), sig(b"PTR ") as i32).unwrap();
    a.je(found_rsdp).unwrap();
    a.set_label(&mut next_rsdp).unwrap();
    a.add(esi, 16).unwrap();
    a.cmp(esi, ecx).unwrap();
    a.jb(scan_rsdp).unwrap();
    a.jmp(no_rsdp).unwrap();

    // XSDT: entries (64-bit addresses) after the 36-byte header; find "FACP".
    a.set_label(&mut found_rsdp).unwrap();
    a.mov(ebx, dword_ptr(esi + 24)).unwrap();
    a.mov(ecx, dword_ptr(ebx + 4)).unwrap();
    a.add(ecx, ebx).unwrap(); // end of the XSDT
    a.lea(edi, ptr(ebx + 36)).unwrap();
    a.set_label(&mut scan_xsdt).unwrap();
    a.cmp(edi, ecx).unwrap();
    a.jae(no_fadt).unwrap();
    a.mov(edx, dword_ptr(edi)).unwrap();
    a.add(edi, 8).unwrap();
    a.cmp(dword_ptr(edx), sig(b"FACP") as i32).unwrap();
    a.jne(scan_xsdt).unwrap();

    // FADT: PM1a_CNT_BLK at 64, X_DSDT at 140 (or DSDT at 40).
    a.set_label(&mut found_fadt).unwrap();
    a.mov(ebp, dword_ptr(edx + 64)).unwrap();
    a.mov(esi, dword_ptr(edx + 140)).unwrap();
    a.test(esi, esi).unwrap();
    a.jnz(have_dsdt).unwrap();
    a.mov(esi, dword_ptr(edx + 40)).unwrap();
    a.set_label(&mut have_dsdt).unwrap();
    a.mov(ecx, dword_ptr(esi + 4)).unwrap();
    a.add(ecx, esi).unwrap();
    a.sub(ecx, 4).unwrap();
    a.add(esi, 36).unwrap();
    a.set_label(&mut scan_dsdt).unwrap();
    a.cmp(esi, ecx).unwrap();
    a.jae(no_s5).unwrap();
    a.cmp(dword_ptr(esi), sig(b"_S5_") as i32).unwrap();
    a.je(found_s5).unwrap();
    a.inc(esi).unwrap();
    a.jmp(scan_dsdt).unwrap();

    // _S5_ PackageOp PkgLength NumElements SLP_TYPa ...
    a.set_label(&mut found_s5).unwrap();
    a.cmp(byte_ptr(esi + 4), 0x12).unwrap();
    a.jne(bad_s5).unwrap();
    a.movzx(eax, byte_ptr(esi + 5)).unwrap();
    a.shr(eax, 6).unwrap(); // extra PkgLength bytes
    a.lea(esi, ptr(esi + eax + 7)).unwrap(); // first element
    a.movzx(eax, byte_ptr(esi)).unwrap();
    a.cmp(eax, 0x0A).unwrap();
    a.je(byte_prefix).unwrap();
    a.cmp(eax, 1).unwrap(); // ZeroOp / OneOp
    a.ja(bad_s5).unwrap();
    a.jmp(have_typ).unwrap();
    a.set_label(&mut byte_prefix).unwrap();
    a.movzx(eax, byte_ptr(esi + 1)).unwrap();
    // ACPICA's legacy sleep: read PM1a control, write SLP_TYP, flush caches, then write
    // SLP_TYP | SLP_EN.
    a.set_label(&mut have_typ).unwrap();
    a.shl(eax, 10).unwrap();
    a.mov(ebx, eax).unwrap();
    a.mov(edx, ebp).unwrap();
    a.in_(ax, dx).unwrap();
    a.and(eax, !(0x1C00u32 | 0x2000) as i32).unwrap();
    a.or(eax, ebx).unwrap();
    a.out(dx, ax).unwrap();
    a.wbinvd().unwrap();
    a.or(eax, 1 << 13).unwrap(); // SLP_EN
    a.out(dx, ax).unwrap();
    a.jmp(still_running).unwrap();

    fail(&mut a, &mut no_rsdp, NO_RSDP);
    fail(&mut a, &mut no_fadt, NO_FADT);
    fail(&mut a, &mut no_s5, NO_S5);
    fail(&mut a, &mut bad_s5, BAD_S5);
    fail(&mut a, &mut still_running, STILL_RUNNING);
    a.assemble(LOAD).unwrap()
}

#[test]
fn guest_finds_fadt_and_powers_off_through_pm1a_control() {
    for engine in EngineKind::emulators() {
        let config = MachineConfig {
            engine,
            ram_size: 16 << 20,
            serial: SerialSink::None,
            kernel: Some(KernelConfig {
                image: ImageSource::Memory {
                    name: "acpi-poweroff.bin".into(),
                    bytes: poweroff_kernel(),
                },
                modules: vec![],
                cmdline: String::new(),
                format: KernelFormat::Flat {
                    load_addr: LOAD,
                    entry: None,
                    mode: FlatEntryMode::Protected32,
                },
            }),
            clock: ClockMode::Icount { shift: 0 },
            max_instructions: Some(1_000_000),
            ..MachineConfig::default()
        };
        let s = PcMachine::new(config)
            .unwrap()
            .run()
            .unwrap_or_else(|e| panic!("{engine}: {e}"));
        assert_eq!(s.reason, ExitReason::PowerOff, "{engine}: {s}");
        assert_eq!(s.status, 0, "{engine}");
    }
}
