//! First smoke tests of the test-guest kit: a tiny program per mode, on every engine.

use crane86::machine::testkit::{Mode, TestGuest, CODE_BASE, DATA_BASE};
use crane86::machine::EngineKind;
use iced_x86::code_asm::*;

fn assemble(mode: Mode, f: impl FnOnce(&mut CodeAssembler)) -> Vec<u8> {
    let mut a = CodeAssembler::new(mode.bitness()).unwrap();
    f(&mut a);
    a.assemble(if mode == Mode::Real { 0 } else { CODE_BASE })
        .unwrap()
}

#[test]
fn sum_loop_in_every_mode_on_every_engine() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let code = assemble(mode, |a| {
                if mode.bitness() == 16 {
                    a.xor(ax, ax).unwrap();
                    a.mov(cx, 100u32).unwrap();
                    let mut top = a.create_label();
                    a.set_label(&mut top).unwrap();
                    a.add(ax, cx).unwrap();
                    a.loop_(top).unwrap();
                    a.mov(word_ptr(0x100), ax).unwrap();
                } else {
                    a.xor(eax, eax).unwrap();
                    a.mov(ecx, 100u32).unwrap();
                    let mut top = a.create_label();
                    a.set_label(&mut top).unwrap();
                    a.add(eax, ecx).unwrap();
                    a.dec(ecx).unwrap();
                    a.jnz(top).unwrap();
                    a.mov(dword_ptr(DATA_BASE as u32), eax).unwrap();
                }
                a.hlt().unwrap();
            });
            let mut g = TestGuest::new(engine, mode, &code);
            let s = g.run_to_halt();
            assert_eq!(s.gpr[0] & 0xFFFF, 5050, "{engine} {mode:?}");
            let stored = if mode == Mode::Real {
                g.read_u64(0x100) & 0xFFFF
            } else {
                g.read_u64(DATA_BASE) & 0xFFFF_FFFF
            };
            assert_eq!(stored, 5050, "{engine} {mode:?}");
        }
    }
}
