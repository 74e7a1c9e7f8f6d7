//! First smoke tests of the test-guest kit: a tiny program per mode, on every engine.

use crane86::machine::testkit::{sum_loop_program, sum_loop_stored, Mode, TestGuest};
use crane86::machine::EngineKind;

#[test]
fn sum_loop_in_every_mode_on_every_engine() {
    for engine in EngineKind::emulators() {
        for mode in Mode::ALL {
            let mut g = TestGuest::new(engine, mode, &sum_loop_program(mode));
            let s = g.run_to_halt();
            assert_eq!(s.gpr[0] & 0xFFFF, 5050, "{engine} {mode:?}");
            assert_eq!(sum_loop_stored(&g), 5050, "{engine} {mode:?}");
        }
    }
}
