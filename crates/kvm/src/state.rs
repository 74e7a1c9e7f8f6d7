//! `CpuState` ⇄ KVM's register structures, in both directions: `kvm_regs`, `kvm_sregs`
//! (segments, descriptor tables, control registers, EFER, APIC base), the XSAVE image (x87,
//! MXCSR, XMM), XCR0, the debug registers, the interrupt shadow and a queued external
//! interrupt (`kvm_vcpu_events`), and the MSRs crane86 models. Pure functions: the ioctls
//! live in [`crate::vcpu`], so the conversion is testable without `/dev/kvm`.
//!
//! What KVM does not hold is carried over from the previous `CpuState` by [`from_kvm`]:
//! the x87 FCS/FDS selectors (the 64-bit XSAVE layout has none; recent CPUs deprecate them),
//! DR4/DR5 (aliases), the A20 gate (KVM has none), and the halted flag (with a userspace
//! interrupt controller KVM exits on HLT, so the engine owns "halted").

use crane86_x86::fpu::FpuState;
use crane86_x86::fxsave::{self, XSTATE_BV_OFFSET};
use crane86_x86::msr;
use crane86_x86::state::MsrState;
use crane86_x86::{CpuState, Segment, TableReg};
use kvm_bindings::{
    kvm_debugregs, kvm_dtable, kvm_regs, kvm_segment, kvm_sregs, kvm_vcpu_events, kvm_xcrs,
    kvm_xsave, KVM_VCPUEVENT_VALID_SHADOW, KVM_X86_SHADOW_INT_STI,
};

/// The MXCSR_MASK written into images handed to KVM (XRSTOR ignores the field).
const MXCSR_MASK: u32 = 0xFFFF;
/// XSTATE_BV of the images crane86 writes: the x87 and SSE components.
const XSTATE_X87_SSE: u64 = 0b11;

/// Every register structure of one vCPU, as the KVM ioctls take them.
pub struct KvmCpuState {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: Box<kvm_xsave>,
    pub xcrs: kvm_xcrs,
    pub debugregs: kvm_debugregs,
    pub events: kvm_vcpu_events,
    /// (index, value) of every MSR in [`MODELLED_MSRS`] order.
    pub msrs: Vec<(u32, u64)>,
}

/// Every MSR that moves between `CpuState::msr` and KVM, with its field (the TSC is handled
/// by the engine; EFER, FS/GS base and the APIC base travel in `kvm_sregs`).
fn msr_fields(m: &mut MsrState) -> Vec<(u32, &mut u64)> {
    let mut v: Vec<(u32, &mut u64)> = vec![
        (msr::IA32_SYSENTER_CS, &mut m.sysenter_cs),
        (msr::IA32_SYSENTER_ESP, &mut m.sysenter_esp),
        (msr::IA32_SYSENTER_EIP, &mut m.sysenter_eip),
        (msr::IA32_STAR, &mut m.star),
        (msr::IA32_LSTAR, &mut m.lstar),
        (msr::IA32_CSTAR, &mut m.cstar),
        (msr::IA32_FMASK, &mut m.fmask),
        (msr::IA32_KERNEL_GS_BASE, &mut m.kernel_gs_base),
        (msr::IA32_TSC_AUX, &mut m.tsc_aux),
        (msr::IA32_PAT, &mut m.pat),
        (msr::IA32_MISC_ENABLE, &mut m.misc_enable),
        (msr::IA32_MTRR_DEF_TYPE, &mut m.mtrr_def_type),
    ];
    let fixed = [
        msr::IA32_MTRR_FIX64K_00000,
        msr::IA32_MTRR_FIX16K_80000,
        msr::IA32_MTRR_FIX16K_A0000,
    ]
    .into_iter()
    .chain(msr::IA32_MTRR_FIX4K_C0000..=msr::IA32_MTRR_FIX4K_F8000);
    v.extend(fixed.zip(m.mtrr_fixed.iter_mut()));
    v.extend((msr::IA32_MTRR_PHYSBASE0..).zip(m.mtrr_var.iter_mut()));
    v
}

/// The indices of [`msr_fields`], in its order (what [`KvmCpuState::msrs`] holds).
pub fn modelled_msrs() -> Vec<u32> {
    msr_fields(&mut MsrState::default())
        .into_iter()
        .map(|(index, _)| index)
        .collect()
}

/// A segment cache in KVM's form. A segment that is not present is "unusable" (VMX).
pub fn segment_to_kvm(s: &Segment) -> kvm_segment {
    let a = s.attr;
    let bit = |n: u16| ((a >> n) & 1) as u8;
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: (a & 0xF) as u8,
        s: bit(4),
        dpl: ((a >> 5) & 3) as u8,
        present: bit(7),
        avl: bit(12),
        l: bit(13),
        db: bit(14),
        g: bit(15),
        unusable: u8::from(bit(7) == 0),
        padding: 0,
    }
}

pub fn segment_from_kvm(k: &kvm_segment) -> Segment {
    let b = |v: u8, n: u16| u16::from(v & 1) << n;
    Segment {
        base: k.base,
        limit: k.limit,
        selector: k.selector,
        attr: u16::from(k.type_ & 0xF)
            | b(k.s, 4)
            | u16::from(k.dpl & 3) << 5
            | b(k.present & !k.unusable, 7)
            | b(k.avl, 12)
            | b(k.l, 13)
            | b(k.db, 14)
            | b(k.g, 15),
    }
}

fn table_to_kvm(t: &TableReg) -> kvm_dtable {
    kvm_dtable {
        base: t.base,
        limit: t.limit,
        padding: [0; 3],
    }
}

fn table_from_kvm(t: &kvm_dtable) -> TableReg {
    TableReg {
        base: t.base,
        limit: t.limit,
    }
}

/// `CpuState::gpr` order (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15) to `kvm_regs`.
pub fn regs_to_kvm(cpu: &CpuState) -> kvm_regs {
    let g = &cpu.gpr;
    kvm_regs {
        rax: g[0],
        rcx: g[1],
        rdx: g[2],
        rbx: g[3],
        rsp: g[4],
        rbp: g[5],
        rsi: g[6],
        rdi: g[7],
        r8: g[8],
        r9: g[9],
        r10: g[10],
        r11: g[11],
        r12: g[12],
        r13: g[13],
        r14: g[14],
        r15: g[15],
        rip: cpu.rip,
        rflags: cpu.rflags(),
    }
}

fn regs_from_kvm(r: &kvm_regs, cpu: &mut CpuState) {
    cpu.gpr = [
        r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15,
    ];
    cpu.rip = r.rip;
    cpu.lazy = crane86_x86::LazyFlags::default();
    cpu.set_rflags(r.rflags);
}

pub fn sregs_to_kvm(cpu: &CpuState) -> kvm_sregs {
    let seg = |i: usize| segment_to_kvm(&cpu.seg[i]);
    kvm_sregs {
        es: seg(0),
        cs: seg(1),
        ss: seg(2),
        ds: seg(3),
        fs: seg(4),
        gs: seg(5),
        tr: segment_to_kvm(&cpu.tr),
        ldt: segment_to_kvm(&cpu.ldtr),
        gdt: table_to_kvm(&cpu.gdtr),
        idt: table_to_kvm(&cpu.idtr),
        cr0: cpu.cr0,
        cr2: cpu.cr2,
        cr3: cpu.cr3,
        cr4: cpu.cr4,
        cr8: cpu.cr8,
        efer: cpu.efer,
        apic_base: cpu.msr.apic_base,
        // No interrupt is pending inside KVM: crane86's interrupt controller keeps them.
        interrupt_bitmap: [0; 4],
    }
}

fn sregs_from_kvm(s: &kvm_sregs, cpu: &mut CpuState) {
    for (i, k) in [s.es, s.cs, s.ss, s.ds, s.fs, s.gs].iter().enumerate() {
        cpu.seg[i] = segment_from_kvm(k);
    }
    cpu.tr = segment_from_kvm(&s.tr);
    cpu.ldtr = segment_from_kvm(&s.ldt);
    cpu.gdtr = table_from_kvm(&s.gdt);
    cpu.idtr = table_from_kvm(&s.idt);
    cpu.cr0 = s.cr0;
    cpu.cr2 = s.cr2;
    cpu.cr3 = s.cr3;
    cpu.cr4 = s.cr4;
    cpu.cr8 = s.cr8;
    cpu.efer = s.efer;
    cpu.msr.apic_base = s.apic_base;
}

/// The x87/SSE state as a standard-format XSAVE image (64-bit layout, XSTATE_BV = x87|SSE).
pub fn xsave_to_kvm(f: &FpuState) -> Box<kvm_xsave> {
    let mut bytes = [0u8; 4096];
    fxsave::encode_x87(f, true, &mut bytes);
    fxsave::encode_mxcsr(f, MXCSR_MASK, &mut bytes);
    fxsave::encode_sse(f, 16, &mut bytes);
    fxsave::put(&mut bytes, XSTATE_BV_OFFSET, &XSTATE_X87_SSE.to_le_bytes());
    let mut x = Box::<kvm_xsave>::default();
    for (w, chunk) in x.region.iter_mut().zip(bytes.chunks_exact(4)) {
        *w = u32::from_le_bytes(chunk.try_into().expect("4 bytes"));
    }
    x
}

/// Load the x87/SSE state from an XSAVE image. A component whose XSTATE_BV bit is clear is in
/// its initial state (SDM Vol. 1 13.6).
fn xsave_from_kvm(x: &kvm_xsave, f: &mut FpuState) {
    let bytes: Vec<u8> = x.region.iter().flat_map(|w| w.to_le_bytes()).collect();
    let bv = fxsave::get_u64(&bytes, XSTATE_BV_OFFSET);
    let (fcs, fds) = (f.fcs, f.fds);
    if bv & 1 != 0 {
        fxsave::decode_x87(f, true, &bytes);
    } else {
        f.finit();
        f.fip = 0;
        f.fdp = 0;
        f.fop = 0;
    }
    f.fcs = fcs;
    f.fds = fds;
    if bv & 2 != 0 {
        fxsave::decode_sse(f, 16, &bytes);
    } else {
        f.xmm = [0; 16];
    }
    f.mxcsr = fxsave::get_u32(&bytes, 24);
}

fn xcrs_to_kvm(cpu: &CpuState) -> kvm_xcrs {
    let mut x = kvm_xcrs {
        nr_xcrs: 1,
        ..Default::default()
    };
    x.xcrs[0].xcr = 0;
    x.xcrs[0].value = cpu.xcr0;
    x
}

fn debugregs_to_kvm(cpu: &CpuState) -> kvm_debugregs {
    kvm_debugregs {
        db: [cpu.dr[0], cpu.dr[1], cpu.dr[2], cpu.dr[3]],
        dr6: cpu.dr[6],
        dr7: cpu.dr[7],
        ..Default::default()
    }
}

/// The interrupt shadow and a queued external interrupt.
pub fn events_to_kvm(cpu: &CpuState) -> kvm_vcpu_events {
    let mut e = kvm_vcpu_events {
        flags: KVM_VCPUEVENT_VALID_SHADOW,
        ..Default::default()
    };
    if cpu.interrupt_shadow {
        e.interrupt.shadow = KVM_X86_SHADOW_INT_STI as u8;
    }
    if let Some(v) = cpu.pending_external {
        e.interrupt.injected = 1;
        e.interrupt.nr = v;
    }
    e
}

fn events_from_kvm(e: &kvm_vcpu_events, cpu: &mut CpuState) {
    cpu.interrupt_shadow = e.interrupt.shadow != 0;
    cpu.pending_external =
        (e.interrupt.injected != 0 && e.interrupt.soft == 0).then_some(e.interrupt.nr);
    if e.exception.injected != 0 || e.exception.pending != 0 {
        tracing::warn!(
            vector = e.exception.nr,
            "KVM stopped with an exception queued; crane86's CpuState cannot hold it"
        );
    }
}

/// Everything KVM needs for `cpu`.
pub fn to_kvm(cpu: &CpuState) -> KvmCpuState {
    KvmCpuState {
        regs: regs_to_kvm(cpu),
        sregs: sregs_to_kvm(cpu),
        xsave: xsave_to_kvm(&cpu.fpu),
        xcrs: xcrs_to_kvm(cpu),
        debugregs: debugregs_to_kvm(cpu),
        events: events_to_kvm(cpu),
        msrs: msr_fields(&mut cpu.msr.clone())
            .into_iter()
            .map(|(index, value)| (index, *value))
            .collect(),
    }
}

/// The `CpuState` KVM holds; fields KVM does not model come from `prev` (see the module doc).
pub fn from_kvm(k: &KvmCpuState, prev: &CpuState) -> CpuState {
    let mut cpu = prev.clone();
    regs_from_kvm(&k.regs, &mut cpu);
    sregs_from_kvm(&k.sregs, &mut cpu);
    xsave_from_kvm(&k.xsave, &mut cpu.fpu);
    if let Some(x) = k.xcrs.xcrs[..k.xcrs.nr_xcrs.min(16) as usize]
        .iter()
        .find(|x| x.xcr == 0)
    {
        cpu.xcr0 = x.value;
    }
    cpu.dr[..4].copy_from_slice(&k.debugregs.db);
    cpu.dr[6] = k.debugregs.dr6;
    cpu.dr[7] = k.debugregs.dr7;
    events_from_kvm(&k.events, &mut cpu);
    for ((index, field), &(got, value)) in msr_fields(&mut cpu.msr).into_iter().zip(&k.msrs) {
        debug_assert_eq!(index, got, "MSR list order");
        *field = value;
    }
    cpu
}

#[cfg(test)]
mod tests {
    use super::*;
    use crane86_x86::segment::attr;

    #[test]
    fn segments_round_trip_for_code_data_system_and_null() {
        for s in [
            Segment::real_mode(0xF000, true),
            Segment::real_mode(0x1234, false),
            Segment {
                base: 0,
                limit: 0xFFFF_FFFF,
                selector: 0x08,
                attr: attr::PRESENT | attr::S | attr::CODE | attr::RW | attr::L | attr::G,
            },
            Segment {
                base: 0x1000,
                limit: 0x67,
                selector: 0x28,
                attr: attr::PRESENT | 11,
            },
            Segment::default(),
        ] {
            assert_eq!(segment_from_kvm(&segment_to_kvm(&s)), s, "{s:?}");
        }
    }

    #[test]
    fn a_state_survives_the_conversion() {
        let mut cpu = CpuState::reset();
        for (i, g) in cpu.gpr.iter_mut().enumerate() {
            *g = 0x1111_0000_0000_0000 * (i as u64 + 1) + i as u64;
        }
        cpu.rip = 0xFFFF_8000_1234_5678;
        cpu.set_rflags(0x246);
        cpu.fpu.st[3] = crane86_x86::F80::new(0x3FFF, 0x8000_0000_0000_0001);
        cpu.fpu.set_tag(3, crane86_x86::fpu::tag::VALID);
        cpu.fpu.set_top(5);
        cpu.fpu.xmm[15] = 0x0123_4567_89AB_CDEF_FEDC_BA98_7654_3210;
        cpu.fpu.mxcsr = 0x1F80 | 0x8000;
        cpu.xcr0 = 3;
        cpu.msr.lstar = 0xFFFF_FFFF_8100_0000;
        cpu.msr.mtrr_var[15] = 0xF_F000_0800;
        cpu.msr.mtrr_fixed[10] = 0x0606_0606_0606_0606;
        cpu.interrupt_shadow = true;
        cpu.pending_external = Some(0x30);
        cpu.dr[7] = 0x401;
        // What KVM does not hold comes from the previous state: start from RESET.
        let back = from_kvm(&to_kvm(&cpu), &CpuState::reset());
        assert_eq!(back, cpu);
    }
}
