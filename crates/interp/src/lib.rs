//! The interpreter engine: iced-x86 decodes guest code into cached blocks; each instruction's
//! handler (resolved once at decode time) executes it against [`cpu::Cpu`]. The interpreter
//! owns the meaning of every instruction; the JIT calls the same handlers for what it does not
//! emit inline.
//!
//! Layout: [`cpu`] (context, registers, operands), [`mem`] (segmentation + softmmu access),
//! [`block`] (decoded-block cache), [`run`] (the execution loop), [`exec`] (mnemonic →
//! handler), [`interrupt`] (exception and interrupt delivery), and one module per
//! instruction family under [`ops`].

pub mod block;
pub mod cpu;
pub mod descriptor;
pub mod exec;
pub mod interrupt;
pub mod mem;
pub mod ops;
pub mod run;
pub mod segments;
pub mod stack;

pub use run::{cached_block_key, step_insn, Interpreter, RunExit, Step, Tier};

/// Counters for `--stats`.
#[derive(Clone, Copy, Debug, Default)]
pub struct InterpStats {
    pub instructions: u64,
    pub blocks_decoded: u64,
    pub block_cache_hits: u64,
    pub smc_invalidations: u64,
    pub exceptions: u64,
    pub interrupts: u64,
}
