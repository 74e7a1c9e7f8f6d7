//! SSE..SSE4.2 and MMX sequences for the host oracle. Templates are every 64-bit-mode iced
//! `Code` with a legacy encoding (no VEX/EVEX) whose CPUID features are all among MMX, SSE,
//! SSE2, SSE3, SSSE3, SSE4.1 and SSE4.2 (and which the host supports), in two families:
//! [`Family::Sse`] without MMX registers, and [`Family::Mmx`], the forms with an MM register
//! operand (MMX itself, the SSE/SSE2/SSSE3 instructions on MM registers, CVTPI2PS & co.,
//! MOVQ2DQ and MOVDQ2Q) plus EMMS; see [`crate::mmx`] for its values and setups. Operands are
//! random XMM and MM registers, GPRs (never RSP), absolute memory operands in the scratch
//! buffer (128-bit ones 16-byte aligned, except for the forms that allow misalignment, which
//! get both) and random immediates (predicates and rounding controls kept to their defined
//! bits).
//!
//! Each sequence holds exactly one SIMD instruction (with its setup) between a few optional
//! integer instructions from the integer generator, so a mismatch names its mnemonic (with an
//! `(mm)` suffix for the MMX-register forms, see [`SseGenerator::name`]). Special cases:
//! LDMXCSR loads a value stored just before it (all exceptions masked, so no #XM); MASKMOVDQU
//! and MASKMOVQ get RDI pointed into the scratch buffer; PCMPESTRx often get small explicit
//! lengths in RAX/RDX. CRC32 (an SSE4.2 integer instruction) is generated here too.
//!
//! RCPPS/RCPSS/RSQRTPS/RSQRTSS results are approximations that differ between CPU vendors:
//! their destination lanes are compared with a relative tolerance. DPPS/DPPD lanes where both
//! sides are NaN count as equal: which NaN operand a dot product propagates depends on the
//! order in which the CPU adds the products, and that order differs between Intel cores (see
//! [`tolerated`]).

use crate::gen::{
    FlagTrack, Generator, MemPatch, Sequence, DATA_SIZE, FIXED_FLAGS, INITIAL_RSP, SCRATCH_BASE,
};
use crate::mmx::{maskmovq, mm_file, mm_patch, random_mm};
use crate::operands::{
    abs_displ_size, blank, data_addr, mov_imm, random_reg, register_addressing, set_abs_mem,
    set_imm, set_reg,
};
use crate::rng::Rng;
use crate::sse_values::{mxcsr, xmm_file, xmm_value};
use crate::tables::{bits_of_kind, RSP_INDEX, XMM};
use iced_x86::{
    Code, CpuidFeature, Encoder, EncodingKind, Instruction, Mnemonic, OpCodeOperandKind as K,
    OpKind, Register,
};

/// The extensions covered, with their `/proc/cpuinfo`-style names.
const FEATURES: [(CpuidFeature, &str); 7] = [
    (CpuidFeature::MMX, "mmx"),
    (CpuidFeature::SSE, "sse"),
    (CpuidFeature::SSE2, "sse2"),
    (CpuidFeature::SSE3, "sse3"),
    (CpuidFeature::SSSE3, "ssse3"),
    (CpuidFeature::SSE4_1, "sse4.1"),
    (CpuidFeature::SSE4_2, "sse4.2"),
];

fn host_has(f: CpuidFeature) -> bool {
    match f {
        CpuidFeature::MMX => std::arch::is_x86_feature_detected!("mmx"),
        CpuidFeature::SSE => std::arch::is_x86_feature_detected!("sse"),
        CpuidFeature::SSE2 => std::arch::is_x86_feature_detected!("sse2"),
        CpuidFeature::SSE3 => std::arch::is_x86_feature_detected!("sse3"),
        CpuidFeature::SSSE3 => std::arch::is_x86_feature_detected!("ssse3"),
        CpuidFeature::SSE4_1 => std::arch::is_x86_feature_detected!("sse4.1"),
        CpuidFeature::SSE4_2 => std::arch::is_x86_feature_detected!("sse4.2"),
        _ => false,
    }
}

/// Which instructions a generator covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// SSE..SSE4.2 (and CRC32) without MM register operands.
    Sse,
    /// Every form with an MM register operand (MMX, SSE, SSE2, SSSE3), and EMMS.
    Mmx,
}

fn is_mm_kind(k: K) -> bool {
    matches!(k, K::mm_reg | K::mm_rm | K::mm_or_mem)
}

/// Whether `code` belongs to `family` (its features and operand kinds are checked apart).
fn in_family(code: Code, family: Family) -> bool {
    let mm = code.op_code().op_kinds().iter().any(|&k| is_mm_kind(k));
    match family {
        Family::Sse => !mm && !code.cpuid_features().contains(&CpuidFeature::MMX),
        Family::Mmx => mm || code == Code::Emms,
    }
}

fn supported_kind(k: K) -> bool {
    matches!(
        k,
        K::xmm_reg
            | K::xmm_rm
            | K::xmm_or_mem
            | K::mm_reg
            | K::mm_rm
            | K::mm_or_mem
            | K::mem
            | K::r8_or_mem
            | K::r16_or_mem
            | K::r32_or_mem
            | K::r64_or_mem
            | K::r32_reg
            | K::r64_reg
            | K::imm8
            | K::seg_rDI
    )
}

/// Legacy SSE forms whose 128-bit memory operand need not be 16-byte aligned.
fn unaligned_ok(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Movups
            | Movupd
            | Movdqu
            | Lddqu
            | Pcmpestri
            | Pcmpestri64
            | Pcmpestrm
            | Pcmpestrm64
            | Pcmpistri
            | Pcmpistrm
    )
}

fn is_pcmpestr(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(m, Pcmpestri | Pcmpestri64 | Pcmpestrm | Pcmpestrm64)
}

/// The approximate-reciprocal instructions (vendor-specific results).
fn is_approximation(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(m, Rcpps | Rcpss | Rsqrtps | Rsqrtss)
}

#[derive(Clone, Debug)]
struct Template {
    code: Code,
    kinds: Vec<K>,
}

/// One generated SSE case: the sequence and the mnemonic of its one SSE instruction.
#[derive(Clone, Debug)]
pub struct SseCase {
    pub seq: Sequence,
    pub mnemonic: Mnemonic,
}

/// Upper-case name of a mnemonic, as in the reports and `CRANE86_ORACLE_SSE_ONLY`.
pub fn mnemonic_name(m: Mnemonic) -> String {
    format!("{m:?}").to_uppercase()
}

/// Suffix of the MMX-register forms in reports (PADDB(mm) vs PADDB on XMM registers).
const MM_SUFFIX: &str = "(mm)";

pub struct SseGenerator {
    family: Family,
    /// Templates grouped by mnemonic (chosen uniformly by mnemonic, then by template).
    groups: Vec<(Mnemonic, Vec<Template>)>,
    /// Extensions the host lacks (left out of the generation).
    pub missing: Vec<&'static str>,
}

impl SseGenerator {
    /// All templates of `family`, or (when `only` is not empty) those of the named mnemonics
    /// (matched case-insensitively, with or without the `(mm)` suffix). Panics on a name
    /// that matches nothing.
    pub fn new(only: &[String], family: Family) -> SseGenerator {
        let wanted = |m: Mnemonic, o: &String| {
            let o = o.to_ascii_lowercase();
            let o = o.strip_suffix(MM_SUFFIX).unwrap_or(&o);
            o.eq_ignore_ascii_case(&format!("{m:?}"))
        };
        let missing: Vec<CpuidFeature> = FEATURES
            .iter()
            .map(|&(f, _)| f)
            .filter(|&f| !host_has(f))
            .collect();
        let mut groups: Vec<(Mnemonic, Vec<Template>)> = Vec::new();
        for code in Code::values() {
            let oc = code.op_code();
            let features = code.cpuid_features();
            if !oc.is_instruction()
                || !oc.mode64()
                || code.encoding() != EncodingKind::Legacy
                || features.is_empty()
                || !in_family(code, family)
                || !features
                    .iter()
                    .all(|f| FEATURES.iter().any(|(g, _)| g == f) && !missing.contains(f))
                || !oc.op_kinds().iter().all(|&k| supported_kind(k))
            {
                continue;
            }
            let m = code.mnemonic();
            if !only.is_empty() && !only.iter().any(|o| wanted(m, o)) {
                continue;
            }
            let t = Template {
                code,
                kinds: oc.op_kinds().to_vec(),
            };
            match groups.iter_mut().find(|(g, _)| *g == m) {
                Some((_, v)) => v.push(t),
                None => groups.push((m, vec![t])),
            }
        }
        for o in only {
            assert!(
                groups.iter().any(|(m, _)| wanted(*m, o)),
                "no {family:?} template has the mnemonic {o:?}"
            );
        }
        // Report only the extensions this family would have used.
        let missing = FEATURES
            .iter()
            .filter(|(f, _)| {
                missing.contains(f) && (family == Family::Mmx || *f != CpuidFeature::MMX)
            })
            .map(|&(_, name)| name)
            .collect();
        SseGenerator {
            family,
            groups,
            missing,
        }
    }

    /// The report name of mnemonic `m` in this family: upper case, with `(mm)` appended for
    /// the MMX-register forms (not for EMMS, which has no operand).
    pub fn name(&self, m: Mnemonic) -> String {
        if self.family == Family::Mmx && m != Mnemonic::Emms {
            mnemonic_name(m) + MM_SUFFIX
        } else {
            mnemonic_name(m)
        }
    }

    pub fn template_count(&self) -> usize {
        self.groups.iter().map(|(_, v)| v.len()).sum()
    }

    pub fn mnemonics(&self) -> impl Iterator<Item = Mnemonic> + '_ {
        self.groups.iter().map(|(m, _)| *m)
    }

    /// One case: up to two integer instructions, the SSE instruction with its setup, and
    /// perhaps one or two more integer instructions, from random GPRs, RFLAGS, XMM registers,
    /// MXCSR and memory.
    pub fn case(&self, int: &Generator, rng: &mut Rng) -> SseCase {
        loop {
            let (mnemonic, templates) = rng.pick(&self.groups);
            let t = rng.pick(templates);
            let Some((group, mem_patch)) = instantiate(rng, t, self.family) else {
                continue;
            };
            let mut enc = Encoder::new(64);
            if group.iter().any(|i| enc.encode(i, 0).is_err()) {
                continue;
            }
            let mut gpr = [0u64; 16];
            for g in gpr.iter_mut() {
                *g = rng.value();
            }
            gpr[RSP_INDEX] = INITIAL_RSP;
            let rflags = (rng.next_u64() & 0x8D5) | FIXED_FLAGS;
            let mut insns = Vec::new();
            let mut track = FlagTrack::default();
            let before = if rng.chance(50) { 0 } else { 1 + rng.below(2) };
            int.append(rng, before as usize, &mut insns, &mut track);
            let Some(t) = track.apply_all(&group) else {
                continue;
            };
            track = t;
            insns.extend(group);
            let after = if rng.chance(75) { 0 } else { 1 + rng.below(2) };
            int.append(rng, after as usize, &mut insns, &mut track);
            let mut enc = Encoder::new(64);
            for i in &insns {
                enc.encode(i, 0).expect("instruction encoded once already");
            }
            let seq = Sequence {
                bytes: enc.take_buffer(),
                insns,
                gpr,
                rflags,
                mem_seed: rng.next_u64(),
                undefined_flags: track.undefined,
                xmm: xmm_file(rng),
                mxcsr: mxcsr(rng),
                mm: match self.family {
                    Family::Sse => [0; 8],
                    Family::Mmx => mm_file(rng),
                },
                mem_patch,
            };
            return SseCase {
                seq,
                mnemonic: *mnemonic,
            };
        }
    }
}

fn random_xmm(rng: &mut Rng) -> Register {
    XMM[rng.below(16) as usize]
}

/// An address for a memory operand of `size` bytes: 128-bit operands 16-byte aligned unless
/// the instruction allows misalignment (then half of the time misaligned).
fn sse_addr(rng: &mut Rng, m: Mnemonic, size: u64) -> u64 {
    if size >= 16 {
        let a = SCRATCH_BASE + (rng.below(DATA_SIZE - 32) & !15);
        if unaligned_ok(m) && rng.chance(50) {
            a + rng.below(16)
        } else {
            a
        }
    } else {
        data_addr(rng, size)
    }
}

/// An immediate: comparison predicates and rounding controls within their defined bits
/// (the reserved bits are ignored differently by different CPUs), small counts and indexes
/// often, otherwise any byte.
fn imm8(rng: &mut Rng, m: Mnemonic) -> u64 {
    use Mnemonic::*;
    match m {
        Cmpps | Cmpss | Cmppd | Cmpsd => rng.below(8),
        Roundps | Roundss | Roundpd | Roundsd => rng.below(16),
        Pcmpestri | Pcmpestri64 | Pcmpestrm | Pcmpestrm64 | Pcmpistri | Pcmpistrm => rng.below(128),
        _ => match rng.below(10) {
            0..=3 => rng.below(20),
            4 | 5 => rng.below(70),
            _ => rng.below(256),
        },
    }
}

/// `mov dword [addr], imm32`.
fn store32(addr: u64, v: u32) -> Instruction {
    let mut i = blank(Code::Mov_rm32_imm32);
    set_abs_mem(&mut i, 0, addr, 8);
    set_imm(&mut i, 1, u64::from(v), K::imm32);
    i
}

/// Interesting bytes for the memory operand at `addr`, more often than not (for the MMX
/// family, the first 8 bytes often an MM-style value).
pub fn patch_for(rng: &mut Rng, addr: u64, family: Family) -> Option<MemPatch> {
    rng.chance(60).then(|| {
        let v = match family {
            Family::Sse => xmm_value(rng),
            Family::Mmx => mm_patch(rng),
        };
        ((addr - SCRATCH_BASE) as u32, v.to_le_bytes())
    })
}

/// MASKMOVDQU: the implicit destination DS:[RDI] inside the scratch data.
fn maskmovdqu(rng: &mut Rng) -> Option<(Vec<Instruction>, Option<MemPatch>)> {
    let asz = if rng.chance(20) { 32 } else { 64 };
    let ins =
        Instruction::with_maskmovdqu(asz, random_xmm(rng), random_xmm(rng), Register::None).ok()?;
    let a = SCRATCH_BASE + rng.below(DATA_SIZE - 32);
    let patch = patch_for(rng, a, Family::Sse);
    Some((vec![mov_imm(Register::RDI, a), ins], patch))
}

/// Fill the operands of `t` and add its setup.
fn instantiate(
    rng: &mut Rng,
    t: &Template,
    family: Family,
) -> Option<(Vec<Instruction>, Option<MemPatch>)> {
    let m = t.code.mnemonic();
    if t.kinds.contains(&K::seg_rDI) {
        return match t.code {
            Code::Maskmovdqu_rDI_xmm_xmm => maskmovdqu(rng),
            Code::Maskmovq_rDI_mm_mm => maskmovq(rng),
            _ => None,
        };
    }
    let mut ins = blank(t.code);
    let mem_size = u64::from(ins.memory_size().size() as u32);
    let mut mem_addr = None;
    for (n, &k) in t.kinds.iter().enumerate() {
        let n = n as u32;
        let use_mem = match k {
            K::mem => true,
            K::xmm_or_mem
            | K::mm_or_mem
            | K::r8_or_mem
            | K::r16_or_mem
            | K::r32_or_mem
            | K::r64_or_mem => rng.chance(40),
            _ => false,
        };
        if use_mem {
            let a = sse_addr(rng, m, mem_size);
            set_abs_mem(&mut ins, n, a, abs_displ_size(rng));
            mem_addr = Some(a);
            continue;
        }
        match k {
            K::xmm_reg | K::xmm_rm | K::xmm_or_mem => set_reg(&mut ins, n, random_xmm(rng)),
            K::mm_reg | K::mm_rm | K::mm_or_mem => set_reg(&mut ins, n, random_mm(rng)),
            K::imm8 => set_imm(&mut ins, n, imm8(rng, m), k),
            _ => set_reg(&mut ins, n, random_reg(rng, bits_of_kind(k), false)),
        }
    }
    let mut setup = Vec::new();
    let mut patch = None;
    if m == Mnemonic::Ldmxcsr {
        // A controlled value: exceptions masked, reserved bits clear.
        setup.push(store32(mem_addr?, mxcsr(rng)));
    } else if let Some(a) = mem_addr {
        patch = patch_for(rng, a, family);
    }
    if is_pcmpestr(m) {
        // Explicit lengths: often small (either sign), otherwise the random register value
        // (saturating at 16 or 8 elements).
        for r in [Register::RAX, Register::RDX] {
            if rng.chance(60) {
                setup.push(mov_imm(r, (rng.below(41) as i64 - 20) as u64));
            }
        }
    }
    if rng.chance(30)
        && !setup
            .iter()
            .any(|i| (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory))
    {
        register_addressing(rng, &mut ins, &mut setup);
    }
    setup.push(ins);
    Some((setup, patch))
}

/// Whether XMM register `k` may differ between the host (`host`) and crane86 (`emu`) after
/// `s`: only the destination of
///
/// - RCPPS/RCPSS/RSQRTPS/RSQRTSS, whose result lanes need only be within 3 * 2^-12 relative
///   of each other (each CPU is within 1.5 * 2^-12 of the exact value); other lanes, and
///   non-normal results (zeros, infinities, NaNs), must be equal;
/// - DPPS/DPPD, in lanes where both results are NaN. The SDM adds the products as
///   (p0 + p1) + (p2 + p3) and an SSE addition of two NaNs returns the first, so crane86
///   propagates the NaN that order gives; some Intel cores (seen on a family 6 model 167 host:
///   `dpps` of products 0, QNaN 7fffffff, QNaN ffc01223, QNaN 7fff8000 gave ffc01223, the SDM
///   order 7fffffff) pick another. Every non-NaN lane must still be bit-equal.
pub fn tolerated(s: &Sequence, k: usize, host: u128, emu: u128) -> bool {
    let writes_k = |i: &&Instruction| {
        i.op0_kind() == OpKind::Register && XMM.get(k) == Some(&i.op0_register())
    };
    if let Some(i) = s
        .insns
        .iter()
        .find(|i| matches!(i.mnemonic(), Mnemonic::Dpps | Mnemonic::Dppd))
        .filter(writes_k)
    {
        let (width, count) = if i.mnemonic() == Mnemonic::Dpps {
            (32, 4)
        } else {
            (64, 2)
        };
        return (0..count).all(|lane| {
            let field = |v: u128| (v >> (width * lane)) as u64 & (u64::MAX >> (64 - width));
            let (h, e) = (field(host), field(emu));
            h == e || (is_nan(h, width) && is_nan(e, width))
        });
    }
    let Some(i) = s.insns.iter().find(|i| is_approximation(i.mnemonic())) else {
        return false;
    };
    if !writes_k(&i) {
        return false;
    }
    let lanes = if matches!(i.mnemonic(), Mnemonic::Rcpss | Mnemonic::Rsqrtss) {
        1
    } else {
        4
    };
    (0..4).all(|lane| {
        let h = (host >> (32 * lane)) as u32;
        let e = (emu >> (32 * lane)) as u32;
        h == e || (lane < lanes && approximately_equal(h, e))
    })
}

/// Whether the low `width` (32 or 64) bits of `v` are a NaN of that width.
fn is_nan(v: u64, width: u32) -> bool {
    if width == 32 {
        f32::from_bits(v as u32).is_nan()
    } else {
        f64::from_bits(v).is_nan()
    }
}

fn approximately_equal(h: u32, e: u32) -> bool {
    let (hf, ef) = (f32::from_bits(h), f32::from_bits(e));
    if !hf.is_normal() || !ef.is_normal() || (h ^ e) >> 31 != 0 {
        return false;
    }
    let (hf, ef) = (f64::from(hf), f64::from(ef));
    (hf - ef).abs() <= 3.0 * (-12f64).exp2() * hf.abs().max(ef.abs())
}

#[test]
fn tolerance_covers_only_approximations_and_dot_product_nans() {
    use iced_x86::code_asm::*;
    let seq = |build: fn(&mut CodeAssembler)| {
        let mut a = CodeAssembler::new(64).unwrap();
        build(&mut a);
        Sequence::fixed(a.instructions().to_vec(), [0; 16], 0, 0)
    };
    let lanes = |l: [u32; 4]| (0..4).fold(0u128, |v, k| v | u128::from(l[k]) << (32 * k));
    let dpps = seq(|a| a.dpps(xmm5, xmm6, 0xEA).unwrap());
    let host = lanes([0, 0xFFC0_1223, 0, 0x7FFF_8000]);
    let nan_elsewhere = lanes([0, 0x7FFF_FFFF, 0, 0x7FFF_8000]);
    assert!(tolerated(&dpps, 5, host, nan_elsewhere), "another NaN");
    assert!(
        !tolerated(&dpps, 4, host, nan_elsewhere),
        "not the destination"
    );
    let number = lanes([0, 0x3F80_0000, 0, 0x7FFF_8000]);
    assert!(!tolerated(&dpps, 5, host, number), "NaN vs 1.0");
    let zero_lane = lanes([1, 0xFFC0_1223, 0, 0x7FFF_8000]);
    assert!(
        !tolerated(&dpps, 5, host, zero_lane),
        "a non-NaN lane differs"
    );
    let dppd = seq(|a| a.dppd(xmm2, xmm3, 0x33).unwrap());
    let nan = |hi: u64| u128::from(0x7FF8_0000_0000_0001u64) | u128::from(hi) << 64;
    assert!(tolerated(&dppd, 2, nan(0), nan(0) | 2));
    assert!(!tolerated(&dppd, 2, nan(0), nan(1)), "upper lane differs");
    let rcpps = seq(|a| a.rcpps(xmm1, xmm2).unwrap());
    let one = 1.0f32.to_bits();
    assert!(tolerated(&rcpps, 1, lanes([one; 4]), lanes([one + 1; 4])));
    assert!(!tolerated(
        &rcpps,
        1,
        lanes([one; 4]),
        lanes([one + 0x10000; 4])
    ));
    let addps = seq(|a| a.addps(xmm1, xmm2).unwrap());
    assert!(!tolerated(&addps, 1, lanes([one; 4]), lanes([one + 1; 4])));
}

#[test]
fn sse_templates_cover_the_extensions() {
    let g = SseGenerator::new(&[], Family::Sse);
    let ms: Vec<Mnemonic> = g.mnemonics().collect();
    if g.missing.is_empty() {
        for m in [
            Mnemonic::Addps,
            Mnemonic::Movsd,
            Mnemonic::Cvttsd2si,
            Mnemonic::Addsubpd,
            Mnemonic::Lddqu,
            Mnemonic::Pshufb,
            Mnemonic::Palignr,
            Mnemonic::Dpps,
            Mnemonic::Ptest,
            Mnemonic::Pcmpestri64,
            Mnemonic::Pcmpistrm,
            Mnemonic::Crc32,
            Mnemonic::Maskmovdqu,
            Mnemonic::Ldmxcsr,
            Mnemonic::Stmxcsr,
        ] {
            assert!(ms.contains(&m), "no template for {m:?}");
        }
        assert!(
            g.template_count() > 300,
            "only {} SSE templates",
            g.template_count()
        );
    }
    // No MMX forms, no VEX forms.
    for (m, v) in &g.groups {
        assert_ne!(*m, Mnemonic::Emms);
        for t in v {
            assert_eq!(t.code.encoding(), EncodingKind::Legacy);
            assert!(!t.kinds.iter().any(|&k| is_mm_kind(k)));
        }
    }
    let only = SseGenerator::new(&["pshufb".to_string(), "ADDPS".to_string()], Family::Sse);
    let mut names: Vec<String> = only.mnemonics().map(|m| only.name(m)).collect();
    names.sort();
    assert_eq!(names, ["ADDPS", "PSHUFB"]);
}

#[test]
fn mmx_templates_cover_the_mm_forms() {
    let g = SseGenerator::new(&[], Family::Mmx);
    if g.missing.is_empty() {
        let codes: Vec<Code> = g
            .groups
            .iter()
            .flat_map(|(_, v)| v.iter().map(|t| t.code))
            .collect();
        for c in [
            Code::Paddb_mm_mmm64,
            Code::Movd_mm_rm32,
            Code::Movq_mm_rm64,
            Code::Movq_rm64_mm,
            Code::Movq_mmm64_mm,
            Code::Psrlq_mm_imm8,
            Code::Pshufw_mm_mmm64_imm8,
            Code::Pextrw_r32_mm_imm8,
            Code::Pinsrw_mm_r32m16_imm8,
            Code::Pmovmskb_r32_mm,
            Code::Maskmovq_rDI_mm_mm,
            Code::Movntq_m64_mm,
            Code::Psadbw_mm_mmm64,
            Code::Paddq_mm_mmm64,
            Code::Pmuludq_mm_mmm64,
            Code::Movq2dq_xmm_mm,
            Code::Movdq2q_mm_xmm,
            Code::Cvtpi2ps_xmm_mmm64,
            Code::Cvtps2pi_mm_xmmm64,
            Code::Cvttps2pi_mm_xmmm64,
            Code::Cvtpi2pd_xmm_mmm64,
            Code::Cvtpd2pi_mm_xmmm128,
            Code::Cvttpd2pi_mm_xmmm128,
            Code::Pshufb_mm_mmm64,
            Code::Palignr_mm_mmm64_imm8,
            Code::Emms,
        ] {
            assert!(codes.contains(&c), "no MMX template {c:?}");
        }
    }
    for (m, v) in &g.groups {
        for t in v {
            assert_eq!(t.code.encoding(), EncodingKind::Legacy);
            assert!(
                *m == Mnemonic::Emms || t.kinds.iter().any(|&k| is_mm_kind(k)),
                "{:?} has no MM operand",
                t.code
            );
        }
    }
    let only = SseGenerator::new(&["paddb(mm)".to_string(), "EMMS".to_string()], Family::Mmx);
    let mut names: Vec<String> = only.mnemonics().map(|m| only.name(m)).collect();
    names.sort();
    assert_eq!(names, ["EMMS", "PADDB(mm)"]);
}
