//! Running sequences in crane86: one reusable Long64 test guest per engine, with the scratch
//! buffer at the same linear address as on the host (the test kit identity-maps it). Every
//! exception vector points at its own `hlt` stub, so an unexpected exception shows up as a
//! halt at a known address. CR4.OSFXSR and CR4.OSXMMEXCPT are set (CR0.EM and CR0.TS are
//! clear), so SSE instructions are enabled as under a 64-bit OS. MMi is the significand of
//! physical x87 register Ri; each run starts from the x87 state the host harness sets up
//! ([`X87::INITIAL`]: TOP 5, every register empty, fixed sign/exponent fields).

use crate::gen::{Sequence, COMPARE_SIZE, SCRATCH_BASE, X87};
use crane86::machine::testkit::{Mode, TestExit, TestGuest, CODE_BASE};
use crane86::machine::EngineKind;
use crane86::x86::regs::cr4;

/// Exception stubs live here: vector v halts at `STUB_BASE + v` (one `hlt` byte each).
const STUB_BASE: u64 = CODE_BASE + 0x8000;
const HLT: u8 = 0xF4;

pub enum EmuResult {
    Done {
        gpr: [u64; 16],
        rflags: u64,
        xmm: Box<[u128; 16]>,
        mxcsr: u32,
        mm: Box<[u64; 8]>,
        x87: X87,
        mem: Vec<u8>,
    },
    /// The guest raised an exception (vector) or did not halt.
    Failed(String),
}

pub struct Emu {
    guest: TestGuest,
}

impl Emu {
    pub fn new(engine: EngineKind) -> Emu {
        let mut guest = TestGuest::new(engine, Mode::Long64, &[HLT]);
        guest.cpu.cr4 |= cr4::OSFXSR | cr4::OSXMMEXCPT;
        guest.write(STUB_BASE, &[HLT; 32]);
        for v in 0..32u8 {
            guest.set_gate(v, STUB_BASE + u64::from(v), 0);
        }
        Emu { guest }
    }

    pub fn run(&mut self, s: &Sequence) -> EmuResult {
        let g = &mut self.guest;
        let mut code = s.bytes.clone();
        code.push(HLT);
        g.write(CODE_BASE, &code);
        let mut mem = vec![0u8; COMPARE_SIZE];
        // SAFETY: `mem` has exactly COMPARE_SIZE writable bytes.
        unsafe { crate::rng::fill(mem.as_mut_ptr(), COMPARE_SIZE, s.mem_seed) };
        if let Some((off, bytes)) = s.mem_patch {
            mem[off as usize..off as usize + 16].copy_from_slice(&bytes);
        }
        g.write(SCRATCH_BASE, &mem);
        g.cpu.gpr = s.gpr;
        g.cpu.fpu.xmm = s.xmm;
        g.cpu.fpu.mxcsr = s.mxcsr;
        for (k, st) in g.cpu.fpu.st.iter_mut().enumerate() {
            st.signif = s.mm[k];
            st.sign_exp = X87::INITIAL.exp[k];
        }
        g.cpu.fpu.fsw = 0;
        g.cpu.fpu.set_top(X87::INITIAL.top);
        g.cpu.fpu.ftw = 0xFFFF;
        g.cpu.set_rflags(s.rflags);
        g.cpu.rip = CODE_BASE;
        g.cpu.halted = false;
        let exit = g.run(100_000);
        let end = CODE_BASE + code.len() as u64;
        if exit != TestExit::Halted {
            return EmuResult::Failed(format!("guest did not halt: {exit:?}"));
        }
        if g.cpu.rip != end {
            let rip = g.cpu.rip;
            return EmuResult::Failed(if (STUB_BASE + 1..=STUB_BASE + 32).contains(&rip) {
                let v = rip - STUB_BASE - 1;
                format!(
                    "guest raised exception vector {v} ({})",
                    crane86_x86_vector_name(v as u8)
                )
            } else {
                format!("guest halted at unexpected rip {rip:#x}")
            });
        }
        let mut out = vec![0u8; COMPARE_SIZE];
        for (k, chunk) in out.chunks_mut(8).enumerate() {
            let v = g.read_u64(SCRATCH_BASE + 8 * k as u64);
            chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
        }
        EmuResult::Done {
            gpr: g.cpu.gpr,
            rflags: g.cpu.rflags(),
            xmm: Box::new(g.cpu.fpu.xmm),
            mxcsr: g.cpu.fpu.mxcsr,
            mm: Box::new(std::array::from_fn(|k| g.cpu.fpu.st[k].signif)),
            x87: X87::from_full_tags(
                g.cpu.fpu.fsw,
                g.cpu.fpu.ftw,
                std::array::from_fn(|k| g.cpu.fpu.st[k].sign_exp),
            ),
            mem: out,
        }
    }
}

fn crane86_x86_vector_name(v: u8) -> &'static str {
    match v {
        0 => "#DE",
        6 => "#UD",
        7 => "#NM",
        19 => "#XM",
        13 => "#GP",
        12 => "#SS",
        14 => "#PF",
        _ => "other",
    }
}
