//! Self-modifying code: a guest that patches an instruction ahead of itself in the same
//! block, one that rewrites a function (in another page) it already executed, and one that
//! rewrites code through a second linear alias of the same physical page. The interpreter
//! must execute the new bytes.

use super::*;
use crane86::machine::testkit::pte_addr;

/// Assemble twice: the first pass finds the label addresses, the second gets them as
/// `addrs` (fixed-size encodings keep them stable).
fn two_pass(
    mode: Mode,
    f: impl Fn(&mut CodeAssembler, &[u64]) -> Result<Vec<CodeLabel>, IcedError>,
) -> Built {
    let origin = code_origin(mode);
    let first = build(mode.bitness(), origin, |a| f(a, &[0; 8]));
    let second = build(mode.bitness(), origin, |a| f(a, &first.labels));
    assert_eq!(first.labels, second.labels, "label addresses are stable");
    second
}

/// `mov ebx/bx, imm` with a fixed-size encoding.
fn mov_bx_addr(a: &mut CodeAssembler, mode: Mode, v: u64) -> Result<(), IcedError> {
    if mode == Mode::Real {
        a.mov(bx, v as u32)
    } else {
        a.mov(ebx, v as u32)
    }
}

fn store_byte_at_bx(a: &mut CodeAssembler, mode: Mode, v: u32) -> Result<(), IcedError> {
    match mode {
        Mode::Real => a.mov(byte_ptr(bx), v),
        Mode::Long64 => a.mov(byte_ptr(rbx), v),
        _ => a.mov(byte_ptr(ebx), v),
    }
}

/// Real mode runs with DS = CS so code offsets address the code.
fn ds_is_cs(a: &mut CodeAssembler, mode: Mode) -> Result<(), IcedError> {
    if mode == Mode::Real {
        a.mov(ax, cs)?;
        a.mov(ds, ax)?;
    }
    Ok(())
}

#[test]
fn patch_ahead_in_the_same_block() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let b = two_pass(mode, |a, addrs| {
                let mut patch = a.create_label();
                ds_is_cs(a, mode)?;
                mov_bx_addr(a, mode, addrs[0] + 1)?;
                store_byte_at_bx(a, mode, 0x42)?;
                a.nop()?;
                a.set_label(&mut patch)?;
                a.mov(al, 0x11)?;
                a.hlt()?;
                Ok(vec![patch])
            });
            let mut g = TestGuest::new(engine, mode, &b.bytes);
            g.run_to_halt();
            assert_eq!(g.cpu.gpr[0] & 0xFF, 0x42, "{engine} {mode:?}");
        }
    }
}

/// The function lives in the next page (offset 0x1000): `mov eax/ax, 1; ret`. The guest
/// calls it, patches its immediate to 2, calls it again.
#[test]
fn rewrite_an_already_executed_function_in_another_page() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let origin = code_origin(mode);
            let func = origin + 0x1000;
            let b = build(mode.bitness(), origin, |a| {
                ds_is_cs(a, mode)?;
                a.call(func)?;
                a.mov(esi, eax)?;
                mov_bx_addr(a, mode, func + 1)?;
                store_byte_at_bx(a, mode, 2)?;
                a.call(func)?;
                a.mov(edi, eax)?;
                a.hlt()?;
                Ok(vec![])
            });
            let f = build(mode.bitness(), func, |a| {
                if mode == Mode::Real {
                    a.mov(ax, 1)?;
                } else {
                    a.mov(eax, 1)?;
                }
                a.ret()?;
                Ok(vec![])
            });
            let mut g = TestGuest::new(engine, mode, &b.bytes);
            g.write(CODE_BASE + 0x1000, &f.bytes);
            g.run_to_halt();
            let tag = format!("{engine} {mode:?}");
            assert_eq!(g.cpu.gpr[6] & 0xFFFF, 1, "{tag}: first call");
            assert_eq!(g.cpu.gpr[7] & 0xFFFF, 2, "{tag}: the patched function ran");
        }
    }
}

/// With paging, patch the function through a second linear mapping of its physical page.
#[test]
fn rewrite_code_through_an_alias_mapping() {
    const ALIAS: u64 = 0x5_0000;
    for engine in EngineKind::emulators() {
        for mode in PAGED {
            let func = CODE_BASE + 0x1000;
            let b = build(mode.bitness(), CODE_BASE, |a| {
                a.call(func)?;
                a.mov(esi, eax)?;
                mov_bx_addr(a, mode, ALIAS + 1)?;
                store_byte_at_bx(a, mode, 3)?;
                a.call(func)?;
                a.mov(edi, eax)?;
                a.hlt()?;
                Ok(vec![])
            });
            let f = build(mode.bitness(), func, |a| {
                a.mov(eax, 1)?;
                a.ret()?;
                Ok(vec![])
            });
            let mut g = TestGuest::new(engine, mode, &b.bytes);
            g.write(func, &f.bytes);
            let pte = pte_addr(mode, ALIAS);
            if mode == Mode::Paged32 {
                g.mem.write_u32(pte, (func | 7) as u32);
            } else {
                g.mem.write_u64(pte, func | 7);
            }
            g.run_to_halt();
            let tag = format!("{engine} {mode:?}");
            assert_eq!(g.cpu.gpr[6], 1, "{tag}: first call");
            assert_eq!(g.cpu.gpr[7], 3, "{tag}: patched through the alias");
        }
    }
}
