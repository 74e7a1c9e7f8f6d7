//! Fast system calls: SYSCALL/SYSRET (64-bit and compatibility-mode returns, FMASK) and
//! SYSENTER/SYSEXIT (32-bit and 64-bit) round trips.

use super::*;
use crane86::machine::testkit::RING0_STACK_TOP;
use crane86_x86::flags;

const USER_STACK: u64 = 0x7_0000;

fn wrmsr64(a: &mut CodeAssembler, msr: u32, v: u64) -> Result<(), IcedError> {
    a.mov(ecx, msr)?;
    a.mov(eax, v as u32)?;
    a.mov(edx, (v >> 32) as u32)?;
    a.wrmsr()
}

#[test]
fn syscall_sysret_round_trip_64_and_compat() {
    for engine in EngineKind::emulators() {
        for to64 in [true, false] {
            let user_at = CODE_BASE + 0x1000;
            let handler_at = CODE_BASE + 0x2000;
            let start = build(64, CODE_BASE, |a| {
                wrmsr64(a, 0xC000_0081, (0x30u64 << 48) | (0x28u64 << 32))?;
                wrmsr64(a, 0xC000_0082, handler_at)?; // LSTAR
                wrmsr64(a, 0xC000_0083, handler_at)?; // CSTAR
                wrmsr64(a, 0xC000_0084, flags::DF)?; // FMASK
                a.mov(rcx, user_at)?;
                a.mov(r11, 0x2u64)?;
                if to64 {
                    a.sysretq()?;
                } else {
                    a.sysret()?;
                }
                Ok(vec![])
            });
            let user = build(if to64 { 64 } else { 32 }, user_at, |a| {
                let mut ret = a.create_label();
                a.mov(ebp, cs)?;
                a.mov(edi, ss)?;
                a.std()?;
                a.mov(eax, 42)?;
                a.syscall()?;
                a.set_label(&mut ret)?;
                a.hlt()?;
                Ok(vec![ret])
            });
            let handler = build(64, handler_at, |a| {
                a.mov(r8, rcx)?;
                a.mov(r9, r11)?;
                a.pushfq()?;
                a.pop(r10)?;
                a.mov(r14d, cs)?;
                a.mov(r15d, ss)?;
                a.hlt()?;
                Ok(vec![])
            });
            let mut g = TestGuest::new(engine, Mode::Long64, &start.bytes);
            g.write(user_at, &user.bytes);
            g.write(handler_at, &handler.bytes);
            g.run_to_halt();
            let tag = format!("{engine} to64={to64}");
            let user_cs = if to64 { 0x43 } else { 0x33 };
            assert_eq!(g.cpu.gpr[5], user_cs, "{tag}: SYSRET CS");
            assert_eq!(g.cpu.gpr[7], 0x3B, "{tag}: SYSRET SS");
            assert_eq!(g.cpu.gpr[8], user.labels[0], "{tag}: RCX = return RIP");
            assert_ne!(g.cpu.gpr[9] & flags::DF, 0, "{tag}: R11 = user RFLAGS");
            assert_eq!(g.cpu.gpr[10] & flags::DF, 0, "{tag}: FMASK cleared DF");
            assert_eq!(g.cpu.gpr[14], 0x28, "{tag}: SYSCALL CS");
            assert_eq!(g.cpu.gpr[15], 0x30, "{tag}: SYSCALL SS");
            assert_eq!(g.cpu.cpl(), 0);
            assert!(g.cpu.seg[1].long(), "{tag}: 64-bit kernel code");
        }
    }
}

#[test]
fn sysret_to_non_canonical_rip_raises_gp() {
    for engine in EngineKind::emulators() {
        let (mut g, labels) = guest(engine, Mode::Long64, |a| {
            let mut handler = a.create_label();
            wrmsr64(a, 0xC000_0081, (0x30u64 << 48) | (0x28u64 << 32))?;
            a.mov(rcx, 0x8000_0000_0000u64)?;
            a.sysretq()?;
            a.hlt()?;
            a.set_label(&mut handler)?;
            a.pop(rax)?;
            a.mov(r12d, cs)?;
            a.hlt()?;
            Ok(vec![handler])
        });
        g.set_gate(13, labels[0], 0);
        g.run_to_halt();
        assert_eq!(g.cpu.gpr[12], 0x28, "{engine}: #GP taken at CPL 0");
        assert_eq!(g.cpu.gpr[0], 0, "{engine}: #GP(0)");
    }
}

#[test]
fn sysenter_sysexit_round_trip() {
    for engine in EngineKind::emulators() {
        for mode in [Mode::Protected32, Mode::Long64] {
            let long = mode == Mode::Long64;
            let user_at = CODE_BASE + 0x1000;
            let handler_at = CODE_BASE + 0x2000;
            let kernel_cs: u64 = if long { 0x28 } else { 0x08 };
            let start = build(mode.bitness(), CODE_BASE, |a| {
                for (msr, v) in [
                    (0x174, kernel_cs),
                    (0x175, RING0_STACK_TOP),
                    (0x176, handler_at),
                ] {
                    wrmsr64(a, msr, v)?;
                }
                if long {
                    a.mov(rdx, user_at)?;
                    a.mov(rcx, USER_STACK)?;
                    a.sysexitq()?;
                } else {
                    a.mov(edx, user_at as u32)?;
                    a.mov(ecx, USER_STACK as u32)?;
                    a.sysexit()?;
                }
                Ok(vec![])
            });
            let user = build(mode.bitness(), user_at, |a| {
                a.mov(ebp, cs)?;
                a.mov(edi, ss)?;
                if long {
                    a.mov(rsi, rsp)?;
                } else {
                    a.mov(esi, esp)?;
                }
                a.sysenter()?;
                Ok(vec![])
            });
            let handler = build(mode.bitness(), handler_at, |a| {
                if long {
                    a.mov(rbx, rsp)?;
                } else {
                    a.mov(ebx, esp)?;
                }
                a.mov(eax, cs)?;
                a.hlt()?;
                Ok(vec![])
            });
            let mut g = TestGuest::new(engine, mode, &start.bytes);
            g.write(user_at, &user.bytes);
            g.write(handler_at, &handler.bytes);
            g.run_to_halt();
            let tag = format!("{engine} {mode:?}");
            let (ucs, uss) = if long {
                (kernel_cs + 32 + 3, kernel_cs + 40 + 3)
            } else {
                (kernel_cs + 16 + 3, kernel_cs + 24 + 3)
            };
            assert_eq!(g.cpu.gpr[5], ucs, "{tag}: SYSEXIT CS");
            assert_eq!(g.cpu.gpr[7], uss, "{tag}: SYSEXIT SS");
            assert_eq!(g.cpu.gpr[6], USER_STACK, "{tag}: SYSEXIT stack = rCX");
            assert_eq!(g.cpu.gpr[3], RING0_STACK_TOP, "{tag}: SYSENTER_ESP");
            assert_eq!(g.cpu.gpr[0], kernel_cs, "{tag}: SYSENTER CS");
            assert_eq!(g.cpu.seg[1].long(), long, "{tag}");
        }
    }
}
