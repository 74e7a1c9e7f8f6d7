//! Mnemonic → handler resolution, done once per instruction at decode time. Each family
//! module under [`crate::ops`] offers `handler(&Instruction) -> Option<Handler>`; the first
//! that claims the instruction wins. Anything unclaimed raises #UD with a warning naming it.

use crate::cpu::Cpu;
use crate::ops;
use crane86_x86::Exception;
use iced_x86::Instruction;

/// An instruction's semantics. On success the handler has set `cpu.next_rip` if it branches.
pub type Handler = fn(&mut Cpu, &Instruction) -> Result<(), Exception>;

/// Find the handler for a decoded instruction.
pub fn resolve(i: &Instruction) -> Handler {
    ops::FAMILIES
        .iter()
        .find_map(|family| family(i))
        .unwrap_or(unimplemented)
}

/// Handler of encodings the decoder rejects.
pub fn invalid_opcode(_cpu: &mut Cpu, _i: &Instruction) -> Result<(), Exception> {
    Err(Exception::ud())
}

/// Handler of valid instructions crane86 does not implement: #UD, loudly.
pub fn unimplemented(cpu: &mut Cpu, i: &Instruction) -> Result<(), Exception> {
    tracing::warn!(
        rip = format_args!("{:#x}", cpu.s.rip),
        instruction = %i,
        code = ?i.code(),
        "unimplemented instruction: raising #UD"
    );
    Err(Exception::ud())
}
