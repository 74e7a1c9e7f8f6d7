//! Instruction-family tests: tiny guests per family, in every CPU mode where the
//! instructions exist, on every engine. Results and the flags the SDM defines are checked;
//! exceptions are observed through per-vector halt stubs (see [`common`]).

mod alu;
mod atomic;
mod bcd;
mod bits;
mod branch;
mod common;
mod data;
mod flags_io;
mod jit_inline;
mod jit_rmw;
mod jit_sse;
mod jit_sse_scalar;
mod jit_stack_runs;
mod jit_state_flags;
mod muldiv;
mod shift;
mod sse;
mod stack;
mod string;
mod x87;
