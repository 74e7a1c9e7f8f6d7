//! The decoded-block cache: guest code decoded once by iced-x86 into blocks of instructions
//! with their handlers resolved, keyed by physical address, RIP and code size, invalidated per
//! physical page when guest code is overwritten.

use crate::exec::{resolve, Handler};
use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction};
use std::collections::HashMap;
use std::rc::Rc;

/// Longest block (instructions).
pub const MAX_BLOCK_INSNS: usize = 64;

pub struct DecodedInsn {
    pub insn: Instruction,
    pub handler: Handler,
}

pub struct Block {
    pub insns: Vec<DecodedInsn>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockKey {
    pub paddr: u64,
    pub rip: u64,
    pub bits: u32,
}

#[derive(Default)]
pub struct BlockCache {
    blocks: HashMap<BlockKey, Rc<Block>>,
    /// Physical page → keys of the blocks that start in it.
    by_page: HashMap<u64, Vec<BlockKey>>,
}

impl BlockCache {
    pub fn get(&self, key: &BlockKey) -> Option<Rc<Block>> {
        self.blocks.get(key).cloned()
    }

    pub fn insert(&mut self, key: BlockKey, block: Rc<Block>) {
        self.by_page.entry(key.paddr >> 12).or_default().push(key);
        self.blocks.insert(key, block);
    }

    /// Drop every block of physical page `paddr_page`. Returns how many were dropped.
    pub fn invalidate_page(&mut self, paddr_page: u64) -> usize {
        let Some(keys) = self.by_page.remove(&(paddr_page >> 12)) else {
            return 0;
        };
        for k in &keys {
            self.blocks.remove(k);
        }
        keys.len()
    }

    pub fn clear(&mut self) {
        self.blocks.clear();
        self.by_page.clear();
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

/// Decode a block from `bytes` (the code from `rip` to the end of its page). Stops after a
/// control-flow instruction, at `MAX_BLOCK_INSNS`, or before an instruction that does not fit
/// in `bytes` (it crosses the page and is decoded on its own). An invalid encoding is kept as
/// the block's last instruction so executing it raises #UD.
pub fn decode_block(bytes: &[u8], rip: u64, bits: u32) -> Vec<DecodedInsn> {
    let mut dec = Decoder::with_ip(bits, bytes, rip, DecoderOptions::NONE);
    let mut out = Vec::new();
    let mut insn = Instruction::default();
    while dec.can_decode() && out.len() < MAX_BLOCK_INSNS {
        let pos = dec.position();
        dec.decode_out(&mut insn);
        if insn.is_invalid() {
            if dec.last_error() == iced_x86::DecoderError::NoMoreBytes {
                // Runs past the page: leave it for the page-crossing path.
                let _ = pos;
                break;
            }
            out.push(DecodedInsn {
                insn,
                handler: crate::exec::invalid_opcode,
            });
            break;
        }
        let flow = insn.flow_control();
        out.push(DecodedInsn {
            handler: resolve(&insn),
            insn,
        });
        if flow != FlowControl::Next {
            break;
        }
    }
    out
}
