//! Instruction families. Each module owns the semantics of one group of instructions and
//! exposes `handler(&Instruction) -> Option<Handler>`, consulted in [`FAMILIES`] order once
//! per decoded instruction.

use crate::exec::Handler;
use iced_x86::Instruction;

pub mod alu;
pub mod branch;
pub mod data;
pub mod misc;
pub mod stack;

/// The family resolvers, in lookup order.
pub const FAMILIES: &[fn(&Instruction) -> Option<Handler>] = &[
    data::handler,
    alu::handler,
    branch::handler,
    stack::handler,
    misc::handler,
];
