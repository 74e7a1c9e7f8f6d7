//! Flag control (CLC/STC/CMC/CLD/STD, CLI/STI and their IOPL rule at CPL 3), CPUID, RDTSC and
//! RDTSCP, IN/OUT (debug-exit port, unclaimed ports) and the TSS I/O permission bitmap at
//! CPL 3 with IOPL 0.
//! The STI interrupt shadow is observed with a platform that raises an interrupt after a port
//! read (see the test for the page-boundary trick); the MOV SS/POP SS shadow is covered
//! through single-step in `stack.rs`.

use crate::common::*;
use crane86::devices::{Platform, PlatformAction};
use crane86::machine::testkit::{TestExit, TSS_BASE};
use std::cell::Cell;
use std::sync::{Arc, Mutex};

const PROTECTED_MODES: [Mode; 4] = [Mode::Protected32, Mode::Paged32, Mode::Pae32, Mode::Long64];

#[test]
fn carry_and_direction_flag_instructions() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let g = run(engine, mode, &[], 0, |a| {
                set_flags(a, (ARITH & !CF) as u32);
                a.stc().unwrap();
                a.std().unwrap();
                save_flags(a, 0); // all arithmetic flags + DF
                a.cmc().unwrap();
                save_flags(a, 1); // CF cleared
                a.cmc().unwrap();
                a.clc().unwrap();
                a.cld().unwrap();
            });
            assert_no_exception(&g, "flag instructions");
            let s = &g.cpu;
            let what = format!("{engine} {mode:?}");
            assert_eq!(s.gpr[RSI] & (ARITH | DF), ARITH | DF, "{what}: stc/std");
            assert_eq!(s.gpr[RDI] & (ARITH | DF), (ARITH | DF) & !CF, "{what}: cmc");
            assert_eq!(flags(&g, ARITH | DF), ARITH & !CF, "{what}: cmc/clc/cld");
        }
    }
}

/// CLI/STI: allowed in real mode and at CPL 0; at CPL 3 they need IOPL 3, else #GP(0) with
/// IF unchanged.
#[test]
fn cli_sti_iopl_rules() {
    for engine in EngineKind::emulators() {
        let g = run(engine, Mode::Real, &[], 0, |a| {
            a.sti().unwrap();
            save_flags(a, 0);
            a.cli().unwrap();
        });
        assert_eq!(g.cpu.gpr[RSI] & IF, IF, "{engine}: real-mode sti");
        assert_eq!(flags(&g, IF), 0, "{engine}: real-mode cli");
        for mode in PROTECTED_MODES {
            for (iopl, cli) in [(0u64, true), (0, false), (3, true), (3, false)] {
                let initial = (iopl << 12) | if cli { IF } else { 0 };
                let g = run_user(engine, mode, &[], initial, |a| {
                    if cli {
                        a.cli().unwrap();
                    } else {
                        a.sti().unwrap();
                    }
                    a.mov(ebx, 0x600Du32).unwrap();
                    if a.bitness() == 64 {
                        a.pushfq().unwrap();
                        a.pop(rsi).unwrap();
                    } else {
                        a.pushfd().unwrap();
                        a.pop(esi).unwrap();
                    }
                });
                let what = format!(
                    "{engine} {mode:?} iopl {iopl} {}",
                    if cli { "cli" } else { "sti" }
                );
                if iopl == 3 {
                    user_exited(&g, &what);
                    let want = if cli { 0 } else { IF };
                    assert_eq!(g.cpu.gpr[RSI] & IF, want, "{what}: IF");
                } else {
                    assert_eq!(exception(&g), Some(13), "{what}: #GP");
                    assert_eq!(
                        g.read_u64(stack_phys(&g)) & 0xFFFF_FFFF,
                        0,
                        "{what}: #GP(0)"
                    );
                    assert_eq!(
                        g.cpu.gpr[RBX] & 0xFFFF,
                        0,
                        "{what}: faulted at the instruction"
                    );
                    // EFLAGS image in the frame (error code, EIP, CS, EFLAGS): IF unchanged.
                    let slot = if mode == Mode::Long64 { 8 } else { 4 };
                    let image = g.read_u64(stack_phys(&g) + 3 * slot);
                    let want = if cli { IF } else { 0 };
                    assert_eq!(image & IF, want, "{what}: IF unchanged");
                }
            }
        }
    }
}

fn cpuid_of(engine: EngineKind, mode: Mode, leaf: u32) -> [u64; 4] {
    let g = run(engine, mode, &[], 0, |a| {
        a.mov(eax, leaf).unwrap();
        a.xor(ecx, ecx).unwrap();
        a.cpuid().unwrap();
    });
    assert_no_exception(&g, "cpuid");
    [
        g.cpu.gpr[RAX],
        g.cpu.gpr[RBX],
        g.cpu.gpr[RCX],
        g.cpu.gpr[RDX],
    ]
}

/// CPUID: the vendor string, a maximum leaf that covers the leaves used, and feature bits
/// that match instructions that work (checked by executing them where cheap).
#[test]
fn cpuid_vendor_max_leaf_and_features() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let what = format!("{engine} {mode:?}");
            let l0 = cpuid_of(engine, mode, 0);
            let mut vendor = Vec::new();
            for r in [l0[1], l0[3], l0[2]] {
                vendor.extend_from_slice(&(r as u32).to_le_bytes());
            }
            assert_eq!(&vendor, b"GenuineIntel", "{what}: vendor");
            assert!(
                l0[0] >= 7,
                "{what}: max basic leaf {:#x} covers leaf 7",
                l0[0]
            );
            let l1 = cpuid_of(engine, mode, 1);
            let (ecx1, edx1) = (l1[2] as u32, l1[3] as u32);
            // Implemented and exercised by this test suite: TSC, MSR, CX8, CMOV, MOVBE, CX16,
            // POPCNT.
            for (bit, name) in [(4, "TSC"), (8, "CX8"), (15, "CMOV"), (5, "MSR")] {
                assert_ne!(edx1 & (1 << bit), 0, "{what}: CPUID.1:EDX.{name}");
            }
            for (bit, name) in [(22, "MOVBE"), (13, "CX16"), (23, "POPCNT")] {
                assert_ne!(ecx1 & (1 << bit), 0, "{what}: CPUID.1:ECX.{name}");
            }
            assert_eq!(
                ecx1 & (1 << 27),
                0,
                "{what}: OSXSAVE off while CR4.OSXSAVE = 0"
            );
            let e0 = cpuid_of(engine, mode, 0x8000_0000);
            assert!(
                e0[0] as u32 >= 0x8000_0001,
                "{what}: max extended leaf {:#x}",
                e0[0]
            );
            let e1 = cpuid_of(engine, mode, 0x8000_0001);
            assert_ne!(e1[3] & (1 << 29), 0, "{what}: LM");
            assert_ne!(e1[3] & (1 << 27), 0, "{what}: RDTSCP");
            assert_ne!(e1[2] & 1, 0, "{what}: LAHF/SAHF in 64-bit mode");
            if mode == Mode::Long64 {
                assert_eq!(e1[0] >> 32, 0, "{what}: CPUID zero-extends RAX");
            }
        }
    }
}

/// A platform whose clock advances by 1000 ns every time it is read.
struct TickingPlatform(Cell<u64>);

impl Platform for TickingPlatform {
    fn pio_read(&mut self, _port: u16, _size: u8) -> u32 {
        u32::MAX
    }
    fn pio_write(&mut self, _port: u16, _size: u8, _value: u32) {}
    fn mmio_read(&mut self, _paddr: u64, _size: u8) -> u64 {
        u64::MAX
    }
    fn mmio_write(&mut self, _paddr: u64, _size: u8, _value: u64) {}
    fn interrupt_pending(&self) -> bool {
        false
    }
    fn ack_interrupt(&mut self) -> Option<u8> {
        None
    }
    fn take_action(&mut self) -> Option<PlatformAction> {
        None
    }
    fn now_ns(&self) -> u64 {
        let t = self.0.get() + 1000;
        self.0.set(t);
        t
    }
}

/// RDTSC is monotonic (EDX:EAX, upper RAX/RDX zero in 64-bit mode); RDTSCP also returns
/// IA32_TSC_AUX in ECX.
#[test]
fn rdtsc_monotonic_and_rdtscp_aux() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let code = assemble(mode, |a| {
                a.mov(ecx, 0xC000_0103u32).unwrap(); // IA32_TSC_AUX
                a.mov(eax, 0x1234_5678u32).unwrap();
                a.xor(edx, edx).unwrap();
                a.wrmsr().unwrap();
                a.rdtsc().unwrap();
                a.mov(esi, eax).unwrap();
                a.mov(edi, edx).unwrap();
                a.rdtscp().unwrap();
            });
            let mut g = guest(engine, mode, &code, &[], 0);
            g.plat = Box::new(TickingPlatform(Cell::new(0x1_0000_0000 - 1500)));
            g.run_to_halt();
            let what = format!("{engine} {mode:?}");
            assert_no_exception(&g, &what);
            let s = &g.cpu;
            let first = (s.gpr[RDI] << 32) | (s.gpr[RSI] & 0xFFFF_FFFF);
            let second = (s.gpr[RDX] << 32) | (s.gpr[RAX] & 0xFFFF_FFFF);
            assert!(second > first, "{what}: TSC {first:#x} then {second:#x}");
            assert!(first > 0, "{what}: TSC from the platform clock");
            assert_eq!(s.gpr[RAX] >> 32, 0, "{what}: RAX high zero");
            assert_eq!(s.gpr[RCX], 0x1234_5678, "{what}: RDTSCP ECX = TSC_AUX");
        }
    }
}

/// OUT to the debug-exit port (0xF4) ends the run with the value; IN from unclaimed ports
/// reads all ones at every width; OUT with DX reaches the platform with port, size, value.
#[test]
fn in_out_debug_exit_and_unclaimed_ports() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let code = assemble(mode, |a| {
                a.xor(eax, eax).unwrap();
                a.in_(al, 0xFFu32).unwrap();
                a.mov(ebx, eax).unwrap();
                a.mov(dx, 0xFFF0u32).unwrap();
                a.in_(ax, dx).unwrap();
                a.mov(ecx, eax).unwrap();
                a.in_(eax, dx).unwrap();
                a.mov(esi, eax).unwrap();
                a.mov(al, 0x2Au32).unwrap();
                a.out(0xF4u32, al).unwrap();
                a.mov(edi, 0xBADu32).unwrap();
            });
            let mut g = guest(engine, mode, &code, &[], 0);
            let what = format!("{engine} {mode:?}");
            assert_eq!(
                g.run(1_000_000),
                TestExit::DebugExit(0x2A),
                "{what}: debug exit"
            );
            let s = &g.cpu;
            assert_eq!(s.gpr[RBX] & 0xFFFF_FFFF, 0xFF, "{what}: in al, 0xFF");
            assert_eq!(s.gpr[RCX] & 0xFFFF_FFFF, 0xFFFF, "{what}: in ax, dx");
            assert_eq!(s.gpr[RSI] & 0xFFFF_FFFF, 0xFFFF_FFFF, "{what}: in eax, dx");
            assert_eq!(
                s.gpr[RDI] & 0xFFFF,
                0,
                "{what}: stopped right after the OUT"
            );

            let log = Arc::new(Mutex::new(PortLog::default()));
            let g = {
                let code = assemble(mode, |a| {
                    a.mov(dx, 0x1234u32).unwrap();
                    a.mov(eax, 0xCAFE_BABEu32).unwrap();
                    a.out(dx, eax).unwrap();
                    a.out(dx, ax).unwrap();
                    a.out(0x80u32, al).unwrap();
                    a.in_(al, 0x60u32).unwrap();
                });
                let mut g = guest(engine, mode, &code, &[], 0);
                g.plat = Box::new(RecordingPlatform(log.clone()));
                g.run_to_halt();
                g
            };
            assert_no_exception(&g, &what);
            let l = log.lock().unwrap();
            assert_eq!(
                l.writes,
                vec![
                    (0x1234, 4, 0xCAFE_BABE),
                    (0x1234, 2, 0xBABE),
                    (0x80, 1, 0xBE)
                ],
                "{what}: OUT traffic"
            );
            assert_eq!(l.reads, 1, "{what}: one IN");
            assert_eq!(
                g.cpu.gpr[RAX] & 0xFF,
                0x10,
                "{what}: IN value from the platform"
            );
        }
    }
}

/// At CPL 3 with IOPL 0, OUT consults the TSS I/O bitmap (at offset 0x68 here): a clear bit
/// allows the access, a set bit is #GP(0), a word access straddling a set bit is #GP(0), and a
/// port whose bitmap byte lies beyond the TSS limit is #GP(0). IOPL 3 bypasses the bitmap.
#[test]
fn tss_io_permission_bitmap_at_cpl3() {
    for engine in EngineKind::emulators() {
        for mode in PROTECTED_MODES {
            // (port, size, iopl, allowed)
            let cases = [
                (0x81u16, 1u8, 0u64, true),
                (0x80, 1, 0, false),
                (0x7F, 1, 0, true),
                (0x7F, 2, 0, false), // 0x7F..0x80 straddles the set bit
                (0x7E, 2, 0, true),
                (0x7D, 4, 0, false),  // 0x7D..0x80
                (0x88, 4, 0, true),   // next byte of the bitmap, all clear
                (0x17F, 1, 0, true),  // last port inside the shortened bitmap
                (0x200, 1, 0, false), // beyond the TSS limit
                (0x80, 1, 3, true),   // IOPL 3: no bitmap check
            ];
            for (port, size, iopl, allowed) in cases {
                let log = Arc::new(Mutex::new(PortLog::default()));
                let mut g = user_guest(engine, mode, &[], iopl << 12, |a| {
                    a.mov(dx, u32::from(port)).unwrap();
                    a.mov(eax, 0x1122_3344u32).unwrap();
                    match size {
                        1 => a.out(dx, al).unwrap(),
                        2 => a.out(dx, ax).unwrap(),
                        _ => a.out(dx, eax).unwrap(),
                    }
                    a.mov(ebx, 0x600Du32).unwrap();
                });
                g.plat = Box::new(RecordingPlatform(log.clone()));
                // Bitmap: port 0x80 denied; limit covers ports 0..0x17F (+ the extra byte
                // the check reads).
                g.write(TSS_BASE + 0x68 + 0x80 / 8, &[1]);
                g.cpu.tr.limit = 0x68 + 0x180 / 8;
                g.run_to_halt();
                let what = format!("{engine} {mode:?} out port {port:#x} size {size} iopl {iopl}");
                let writes = log.lock().unwrap().writes.len();
                if allowed {
                    user_exited(&g, &what);
                    assert_eq!(writes, 1, "{what}: reached the platform");
                    assert_eq!(g.cpu.gpr[RBX] & 0xFFFF, 0x600D, "{what}");
                } else {
                    assert_eq!(exception(&g), Some(13), "{what}: #GP expected");
                    assert_eq!(
                        g.read_u64(stack_phys(&g)) & 0xFFFF_FFFF,
                        0,
                        "{what}: #GP(0)"
                    );
                    assert_eq!(writes, 0, "{what}: no port write");
                }
            }
        }
    }
}

/// STI delays a pending interrupt until after the next instruction. The interpreter looks for
/// interrupts between blocks, so STI is placed last on a code page (a block always ends at a
/// page boundary): without the shadow the interrupt would be taken before the instruction on
/// the next page. The platform raises vector 0x20 after the first port read.
#[test]
fn sti_interrupt_shadow_covers_the_next_instruction() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let mut code = vec![0xE4, 0x60]; // in al, 0x60: the interrupt becomes pending
            code.resize(0xFFF, 0x90);
            code.push(0xFB); // sti at 0xFFF, the last byte of the page
            code.extend_from_slice(&[0xB3, 0x0D, 0xB7, 0x60, 0xF4]); // mov bl; mov bh; hlt
            let log = Arc::new(Mutex::new(PortLog {
                irq_after_reads: Some(1),
                ..PortLog::default()
            }));
            let mut g = guest(engine, mode, &code, &[], 0);
            g.plat = Box::new(RecordingPlatform(log.clone()));
            g.run_to_halt();
            let what = format!("{engine} {mode:?}");
            assert_eq!(
                exception(&g),
                Some(IRQ_VECTOR),
                "{what}: interrupt delivered"
            );
            assert!(log.lock().unwrap().irq_acked, "{what}: acknowledged");
            assert_eq!(
                g.cpu.gpr[RBX] & 0xFF,
                0x0D,
                "{what}: the instruction after STI ran first"
            );
            let ret = faulting_offset(&g, false);
            assert!(
                ret >= 0x1002,
                "{what}: interrupted at {ret:#x}, before STI's successor ended"
            );
        }
    }
}

/// IN at CPL 3 goes through the same bitmap check: a denied port is #GP(0) with AL kept.
#[test]
fn tss_io_permission_bitmap_applies_to_in() {
    for engine in EngineKind::emulators() {
        for mode in PROTECTED_MODES {
            for (port, allowed) in [(0x60u16, true), (0x64, false)] {
                let log = Arc::new(Mutex::new(PortLog::default()));
                let mut g = user_guest(engine, mode, &[], 0, |a| {
                    a.mov(eax, 0x77u32).unwrap();
                    a.mov(dx, u32::from(port)).unwrap();
                    a.in_(al, dx).unwrap();
                });
                g.plat = Box::new(RecordingPlatform(log.clone()));
                g.write(TSS_BASE + 0x68 + 0x64 / 8, &[1 << (0x64 % 8)]);
                g.run_to_halt();
                let what = format!("{engine} {mode:?} in port {port:#x}");
                if allowed {
                    user_exited(&g, &what);
                    assert_eq!(g.cpu.gpr[RAX] & 0xFF, 0x10, "{what}: value read");
                } else {
                    assert_eq!(exception(&g), Some(13), "{what}: #GP");
                    assert_eq!(g.cpu.gpr[RAX] & 0xFF, 0x77, "{what}: AL unchanged");
                    assert_eq!(log.lock().unwrap().reads, 0, "{what}: no port read");
                }
            }
        }
    }
}

/// In V86 mode the I/O bitmap is consulted even with IOPL 3 (IOPL does not grant I/O there);
/// CLI with IOPL < 3 is #GP(0).
#[test]
fn v86_io_always_uses_the_bitmap_and_cli_needs_iopl3() {
    for engine in EngineKind::emulators() {
        // (V86 code, IOPL, expect #GP)
        let cases: [(&[u8], u64, bool); 4] = [
            (&[0xE6, 0x80], 3, true),  // out 0x80, al: bit set
            (&[0xE6, 0x81], 3, false), // out 0x81, al: bit clear
            (&[0xFA], 0, true),        // cli, IOPL 0
            (&[0xFA], 3, false),       // cli, IOPL 3
        ];
        for (body, iopl, faults) in cases {
            let v86_ip = 0x800u64;
            let code = assemble(Mode::Protected32, |a| {
                for v in [0u32, 0, 0, 0] {
                    a.push(v).unwrap(); // GS FS DS ES
                }
                a.push(0x7000u32).unwrap(); // SS
                a.push(0xFF00u32).unwrap(); // SP
                a.push(((1 << 17) | (iopl << 12) | 2) as u32).unwrap(); // EFLAGS with VM
                a.push((CODE_BASE >> 4) as u32).unwrap(); // CS
                a.push(v86_ip as u32).unwrap();
                a.iretd().unwrap();
            });
            let mut g = guest(engine, Mode::Protected32, &code, &[], 0);
            let mut v86 = body.to_vec();
            v86.extend_from_slice(&[0xBB, 0x0D, 0x60, 0xCD, USER_EXIT]); // mov bx; int
            g.write(CODE_BASE + v86_ip, &v86);
            g.write(
                crane86::machine::testkit::IDT_BASE + u64::from(USER_EXIT) * 8 + 5,
                &[0xEE],
            );
            g.write(TSS_BASE + 0x68 + 0x80 / 8, &[1]);
            g.run_to_halt();
            let what = format!("{engine} V86 {body:02x?} iopl {iopl}");
            if faults {
                assert_eq!(exception(&g), Some(13), "{what}: #GP");
                assert_eq!(
                    g.read_u64(stack_phys(&g)) & 0xFFFF_FFFF,
                    0,
                    "{what}: #GP(0)"
                );
            } else {
                assert_eq!(exception(&g), Some(USER_EXIT), "{what}: allowed");
                assert_eq!(g.cpu.gpr[RBX] & 0xFFFF, 0x600D, "{what}");
            }
        }
    }
}
