//! Instruction families. Each module owns the semantics of one group of instructions and
//! exposes `handler(&Instruction) -> Option<Handler>`, consulted in [`FAMILIES`] order once
//! per decoded instruction.

use crate::exec::Handler;
use iced_x86::Instruction;

pub mod alu;
pub mod atomic;
pub mod bcd;
pub mod bits;
pub mod branch;
pub mod data;
pub mod far;
pub mod misc;
pub mod msr;
pub mod muldiv;
pub mod shift;
pub mod sse;
pub mod stack;
pub mod string;
pub mod system;
pub mod tasking;
pub mod x87;

/// The family resolvers, in lookup order.
pub const FAMILIES: &[fn(&Instruction) -> Option<Handler>] = &[
    data::handler,
    alu::handler,
    branch::handler,
    stack::handler,
    misc::handler,
    shift::handler,
    muldiv::handler,
    bits::handler,
    bcd::handler,
    string::handler,
    atomic::handler,
    far::handler,
    system::handler,
    msr::handler,
    x87::handler,
    sse::handler,
];
