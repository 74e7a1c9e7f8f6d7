//! Code whose first instruction crosses into the next page: its decoded (and translated)
//! block depends on both pages. After the guest rewrites the bytes in the second page, or
//! maps the second linear page to another physical page, the next run must execute what the
//! second page holds now, also when the call reaching it was chained natively before.

use super::*;
use crane86::machine::testkit::pte_addr;

/// Where the function starts: two bytes before the end of its page, so its first
/// instruction (`mov eax/ax, imm`: B8 and the immediate's low byte) crosses into the page
/// at `SECOND_PAGE`.
const FUNC: u64 = CODE_BASE + 0x1FFE;
const SECOND_PAGE: u64 = CODE_BASE + 0x2000;
/// The physical page the remapping test maps `SECOND_PAGE` to.
const REPLACEMENT: u64 = CODE_BASE + 0x3000;

/// The function's bytes in its first page.
const FIRST_BYTES: [u8; 2] = [0xB8, 0x01];

/// The function's bytes in the second page, whose first byte is the immediate's second
/// byte: the rest of the immediate, then RET (real mode's immediate has two bytes).
fn second_bytes(mode: Mode, second_byte: u8) -> Vec<u8> {
    if mode == Mode::Real {
        vec![second_byte, 0xC3]
    } else {
        vec![second_byte, 0x01, 0x01, 0xC3]
    }
}

/// What the function returns when the second page starts with `second_byte`.
fn value(mode: Mode, second_byte: u8) -> u64 {
    let v = 0x01 | u64::from(second_byte) << 8;
    if mode == Mode::Real {
        v
    } else {
        v | 0x0101_0000
    }
}

/// The guest: one loop calls the function 6 times, adding the results to ESI, and lets
/// `change` alter the function's second page after the third call. By then the call site
/// (the loop's second block) has entered the function through the run loop once and once
/// more through its link, if anything links to it; the fourth call takes that link.
fn program(
    mode: Mode,
    change: impl Fn(&mut CodeAssembler) -> Result<(), IcedError>,
) -> impl FnOnce(&mut CodeAssembler) -> Result<Vec<CodeLabel>, IcedError> {
    let func = FUNC - CODE_BASE + code_origin(mode);
    move |a| {
        let mut again = a.create_label();
        let mut unchanged = a.create_label();
        if mode == Mode::Real {
            a.mov(ax, cs)?;
            a.mov(ds, ax)?;
        }
        a.xor(esi, esi)?;
        a.mov(ecx, 6)?;
        a.set_label(&mut again)?;
        a.call(func)?;
        a.add(esi, eax)?;
        a.cmp(ecx, 4)?;
        a.jne(unchanged)?;
        change(a)?;
        a.set_label(&mut unchanged)?;
        a.dec(ecx)?;
        a.jnz(again)?;
        a.hlt()?;
        Ok(vec![])
    }
}

fn check(g: &TestGuest, engine: EngineKind, mode: Mode, before: u8, after: u8, what: &str) {
    let mask = if mode == Mode::Real {
        0xFFFF
    } else {
        0xFFFF_FFFF
    };
    let want = 3 * value(mode, before) + 3 * value(mode, after);
    assert_eq!(
        g.cpu.gpr[6] & mask,
        want & mask,
        "{what}: {engine} {mode:?}: 3 calls before the change and 3 after"
    );
}

/// The guest stores a new byte into the second page (the immediate's second byte).
#[test]
fn a_write_to_the_second_page_reaches_the_crossing_instruction() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let patch = FUNC + 2 - CODE_BASE + code_origin(mode);
            let (mut g, _) = guest(
                engine,
                mode,
                program(mode, |a| {
                    if mode == Mode::Real {
                        a.mov(bx, patch as u32)?;
                        a.mov(byte_ptr(bx), 0x02)
                    } else if mode == Mode::Long64 {
                        a.mov(ebx, patch as u32)?;
                        a.mov(byte_ptr(rbx), 0x02)
                    } else {
                        a.mov(ebx, patch as u32)?;
                        a.mov(byte_ptr(ebx), 0x02)
                    }
                }),
            );
            g.write(FUNC, &FIRST_BYTES);
            g.write(SECOND_PAGE, &second_bytes(mode, 0x01));
            g.run_to_halt();
            check(&g, engine, mode, 0x01, 0x02, "patched second page");
        }
    }
}

/// The guest maps the second linear page to another physical page (PTE write + INVLPG);
/// the first page and its mapping stay the same.
#[test]
fn a_remapped_second_page_reaches_the_crossing_instruction() {
    for engine in EngineKind::emulators() {
        for mode in PAGED {
            let pte = pte_addr(mode, SECOND_PAGE);
            let (mut g, _) = guest(
                engine,
                mode,
                program(mode, |a| {
                    if mode == Mode::Long64 {
                        a.mov(ebx, pte as u32)?;
                        a.mov(dword_ptr(rbx), (REPLACEMENT | 7) as u32)?;
                        a.mov(ebx, SECOND_PAGE as u32)?;
                        a.invlpg(byte_ptr(rbx))
                    } else {
                        a.mov(ebx, pte as u32)?;
                        a.mov(dword_ptr(ebx), (REPLACEMENT | 7) as u32)?;
                        a.mov(ebx, SECOND_PAGE as u32)?;
                        a.invlpg(byte_ptr(ebx))
                    }
                }),
            );
            g.write(FUNC, &FIRST_BYTES);
            g.write(SECOND_PAGE, &second_bytes(mode, 0x01));
            g.write(REPLACEMENT, &second_bytes(mode, 0x03));
            g.run_to_halt();
            check(&g, engine, mode, 0x01, 0x03, "remapped second page");
        }
    }
}
