//! [`KvmVcpu`]: one VM with one vCPU and the `KVM_RUN` loop.
//!
//! Interrupt controller: **userspace** — no `KVM_CREATE_IRQCHIP`. The PIC, IOAPIC and LAPIC
//! stay crane86's own devices, so
//! - every engine runs the same device model, and a guest moves between engines with no
//!   irqchip state to convert (the KVM in-kernel irqchip has its own state format, which
//!   would need a lossless two-way mapping onto crane86's LAPIC/IOAPIC/PIC);
//! - LAPIC and IOAPIC registers are MMIO exits to the shared bus, HLT exits to the machine,
//!   and interrupts are injected with `KVM_INTERRUPT` when KVM reports the guest can take
//!   one (or an interrupt window is requested).
//!
//! The cost: interrupt-heavy guests pay an exit per LAPIC access (EOI, timer programming),
//! where the in-kernel irqchip would not. For the guests crane86 targets (and for switching
//! engines, which the in-kernel irqchip would make much harder) the shared model wins.
//!
//! State ownership: the engine keeps the `CpuState` it last copied out of KVM. When a run
//! starts with a different `CpuState` (first run, a reset, another engine ran, a test set
//! registers), the whole state is written into KVM; at the end of every run it is read back,
//! so between runs `CpuState` is always current.

use crate::cpuid::vcpu_cpuid;
use crate::kick::Kicker;
use crate::memory;
use crate::state::{self, KvmCpuState};
use crate::{KvmError, KvmExit};
use crane86_devices::{Platform, PlatformAction};
use crane86_memory::PhysMem;
use crane86_x86::{flags, msr, CpuState};
use kvm_bindings::{kvm_msr_entry, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd, VmFd};
use std::time::Duration;

/// Where KVM's real-mode helper structures go (the VMX TSS needs three pages, the identity
/// map one): just below the 16 MiB that firmware may occupy under 4 GiB, above the LAPIC.
const TSS_ADDRESS: usize = 0xFEFF_D000;
const IDENTITY_MAP_ADDRESS: u64 = 0xFEFF_C000;
/// The TSC rate crane86's other engines give the guest (CPUID leaf 0x15): 1 GHz.
const TSC_KHZ: u32 = 1_000_000;

/// `KVM_INTERRUPT` = `_IOW(KVMIO, 0x86, struct kvm_interrupt)` (kvm-ioctls has no wrapper).
const KVM_INTERRUPT: libc::c_ulong = 0x4004_AE86;

/// Counters for `--stats`.
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmStats {
    pub runs: u64,
    pub io_exits: u64,
    pub mmio_exits: u64,
    pub hlt_exits: u64,
    pub interrupts_injected: u64,
    pub slice_kicks: u64,
    pub state_loads: u64,
}

/// A VM with one vCPU over a `PhysMem`.
pub struct KvmVcpu {
    // Field order is drop order: the vCPU goes before the VM.
    vcpu: VcpuFd,
    vm: VmFd,
    kicker: Option<Kicker>,
    /// The backing whose slots are registered (pointer, length).
    mapped: Option<(usize, usize)>,
    readonly_mem: bool,
    tsc_is_1ghz: bool,
    /// A TSC written with KVM_SET_MSRS reads back (software KVMs may keep the host's).
    tsc_writable: bool,
    /// The `CpuState` as last written to or read from KVM.
    synced: Option<CpuState>,
    pub stats: KvmStats,
}

fn err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmError {
    move |e| KvmError::Ioctl {
        what,
        errno: e.errno(),
    }
}

impl KvmVcpu {
    /// Open `/dev/kvm`, create the VM and its vCPU, and set the vCPU's CPUID.
    pub fn new() -> Result<KvmVcpu, KvmError> {
        let kvm = Kvm::new().map_err(|e| KvmError::Open { errno: e.errno() })?;
        let vm = kvm.create_vm().map_err(err("KVM_CREATE_VM"))?;
        if let Err(e) = vm.set_tss_address(TSS_ADDRESS) {
            tracing::debug!(errno = e.errno(), "KVM_SET_TSS_ADDR refused");
        }
        if let Err(e) = vm.set_identity_map_address(IDENTITY_MAP_ADDRESS) {
            tracing::debug!(errno = e.errno(), "KVM_SET_IDENTITY_MAP_ADDR refused");
        }
        let readonly_mem = vm.check_extension(Cap::ReadonlyMem);
        let vcpu = vm.create_vcpu(0).map_err(err("KVM_CREATE_VCPU"))?;
        let tsc_is_1ghz = vcpu.set_tsc_khz(TSC_KHZ).is_ok();
        let tsc_writable = tsc_write_sticks(&vcpu);
        if !tsc_writable {
            tracing::info!("this KVM ignores TSC writes: the guest sees the host's TSC");
        }
        if !tsc_is_1ghz {
            tracing::info!("KVM cannot run the TSC at 1 GHz here: the guest calibrates it");
        }
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(err("KVM_GET_SUPPORTED_CPUID"))?;
        let entries = vcpu_cpuid(supported.as_slice(), tsc_is_1ghz);
        let table = CpuId::from_entries(&entries).map_err(|_| KvmError::TableTooLarge)?;
        vcpu.set_cpuid2(&table).map_err(err("KVM_SET_CPUID2"))?;
        Ok(KvmVcpu {
            vcpu,
            vm,
            kicker: None,
            mapped: None,
            readonly_mem,
            tsc_is_1ghz,
            tsc_writable,
            synced: None,
            stats: KvmStats::default(),
        })
    }

    /// The vCPU TSC runs at crane86's 1 GHz.
    pub fn tsc_is_1ghz(&self) -> bool {
        self.tsc_is_1ghz
    }

    /// A TSC value written into KVM is what the guest then reads (so the TSC carries over
    /// between engines).
    pub fn tsc_writable(&self) -> bool {
        self.tsc_writable
    }

    /// Register `mem` as memory slots (once; a backing that moved is refused).
    pub fn map_memory(&mut self, mem: &PhysMem) -> Result<(), KvmError> {
        let key = (mem.backing().as_ptr() as usize, mem.backing().len());
        if self.mapped == Some(key) {
            return Ok(());
        }
        if let Some((_, _)) = self.mapped {
            return Err(KvmError::MemoryMoved);
        }
        for (i, slot) in memory::slots(mem).iter().enumerate() {
            let region = memory::region(mem, i as u32, slot, self.readonly_mem);
            // SAFETY: the region lies inside `mem`'s mapping, which lives as long as the
            // machine that owns both `mem` and this engine; if it ever moves, the check
            // above refuses to run rather than let KVM write through stale addresses.
            unsafe { self.vm.set_user_memory_region(region) }.map_err(|e| {
                KvmError::MemorySlot {
                    guest_phys: slot.guest_phys,
                    size: slot.size,
                    errno: e.errno(),
                }
            })?;
        }
        self.mapped = Some(key);
        Ok(())
    }

    /// Write the whole `cpu` into KVM (the TSC as `now_ns + tsc_offset`).
    pub fn load_state(&mut self, cpu: &CpuState, now_ns: u64) -> Result<(), KvmError> {
        let k = state::to_kvm(cpu);
        // CR4.OSXSAVE and XCR0 first: the XSAVE image is checked against them.
        self.vcpu
            .set_sregs(&k.sregs)
            .map_err(err("KVM_SET_SREGS"))?;
        self.vcpu.set_xcrs(&k.xcrs).map_err(err("KVM_SET_XCRS"))?;
        self.vcpu.set_regs(&k.regs).map_err(err("KVM_SET_REGS"))?;
        // SAFETY: `xsave` is a full 4 KiB kvm_xsave, the size KVM_SET_XSAVE reads.
        unsafe { self.vcpu.set_xsave(&k.xsave) }.map_err(err("KVM_SET_XSAVE"))?;
        self.vcpu
            .set_debug_regs(&k.debugregs)
            .map_err(err("KVM_SET_DEBUGREGS"))?;
        self.vcpu
            .set_vcpu_events(&k.events)
            .map_err(err("KVM_SET_VCPU_EVENTS"))?;
        let mut entries: Vec<kvm_msr_entry> = k
            .msrs
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        entries.push(kvm_msr_entry {
            index: msr::IA32_TSC,
            data: now_ns.wrapping_add(cpu.msr.tsc_offset),
            ..Default::default()
        });
        self.set_msrs(&entries)?;
        // A KVM may accept the state yet drop a mode it cannot run (a software KVM without
        // non-PAE paging clears CR0.PG): refuse to run rather than run wrongly.
        let got = self.vcpu.get_sregs().map_err(err("KVM_GET_SREGS"))?;
        for (register, wanted, held) in [
            ("CR0", k.sregs.cr0, got.cr0),
            ("CR3", k.sregs.cr3, got.cr3),
            ("CR4", k.sregs.cr4, got.cr4),
            ("EFER", k.sregs.efer, got.efer),
        ] {
            if wanted != held {
                return Err(KvmError::StateRefused {
                    register,
                    wanted,
                    held,
                });
            }
        }
        self.stats.state_loads += 1;
        Ok(())
    }

    /// Write MSRs; one KVM refuses is reported by index and value.
    fn set_msrs(&self, entries: &[kvm_msr_entry]) -> Result<(), KvmError> {
        let msrs = Msrs::from_entries(entries).map_err(|_| KvmError::TableTooLarge)?;
        let done = self.vcpu.set_msrs(&msrs).map_err(err("KVM_SET_MSRS"))?;
        if let Some(bad) = entries.get(done) {
            return Err(KvmError::MsrRefused {
                index: bad.index,
                value: bad.data,
            });
        }
        Ok(())
    }

    /// Read the whole state back; what KVM does not hold comes from `prev`.
    pub fn save_state(&mut self, prev: &CpuState, now_ns: u64) -> Result<CpuState, KvmError> {
        let mut indices = state::modelled_msrs();
        indices.push(msr::IA32_TSC);
        let entries: Vec<kvm_msr_entry> = indices
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| KvmError::TableTooLarge)?;
        let got = self.vcpu.get_msrs(&mut msrs).map_err(err("KVM_GET_MSRS"))?;
        if got != indices.len() {
            return Err(KvmError::MsrUnreadable {
                index: indices[got],
            });
        }
        let values: Vec<(u32, u64)> = msrs.as_slice().iter().map(|e| (e.index, e.data)).collect();
        let (tsc, modelled) = values.split_last().expect("the TSC is in the list");
        let k = KvmCpuState {
            regs: self.vcpu.get_regs().map_err(err("KVM_GET_REGS"))?,
            sregs: self.vcpu.get_sregs().map_err(err("KVM_GET_SREGS"))?,
            xsave: Box::new(self.vcpu.get_xsave().map_err(err("KVM_GET_XSAVE"))?),
            xcrs: self.vcpu.get_xcrs().map_err(err("KVM_GET_XCRS"))?,
            debugregs: self
                .vcpu
                .get_debug_regs()
                .map_err(err("KVM_GET_DEBUGREGS"))?,
            events: self
                .vcpu
                .get_vcpu_events()
                .map_err(err("KVM_GET_VCPU_EVENTS"))?,
            msrs: modelled.to_vec(),
        };
        let mut cpu = state::from_kvm(&k, prev);
        cpu.msr.tsc_offset = tsc.1.wrapping_sub(now_ns);
        Ok(cpu)
    }

    /// Run the guest for about `slice` of host time, servicing its port and MMIO accesses
    /// through `plat`, until the slice ends, it halts, or a device asks for a machine action.
    pub fn run(
        &mut self,
        cpu: &mut CpuState,
        mem: &mut PhysMem,
        plat: &mut dyn Platform,
        slice: Duration,
    ) -> Result<KvmExit, KvmError> {
        self.map_memory(mem)?;
        if cpu.halted && cpu.pending_external.is_none() {
            if cpu.rflags & flags::IF == 0 || !plat.interrupt_pending() {
                return Ok(KvmExit::Halted);
            }
            cpu.halted = false;
        }
        // KVM holds everything but `halted` (which this engine owns) and the A20 gate (which
        // KVM does not model): reload only when something else changed.
        let unchanged = self.synced.as_ref().is_some_and(|s| {
            let mut held = s.clone();
            held.halted = cpu.halted;
            held.a20 = cpu.a20;
            held == *cpu
        });
        if !unchanged {
            self.load_state(cpu, plat.now_ns())?;
        }
        if self.kicker.as_ref().is_some_and(|k| !k.on_this_thread()) {
            self.kicker = None;
        }
        if self.kicker.is_none() {
            self.kicker = Some(Kicker::new().map_err(|e| KvmError::Timer(e.to_string()))?);
        }
        self.vcpu.set_kvm_immediate_exit(0);
        let immediate_exit = &mut self.vcpu.get_kvm_run().immediate_exit as *mut u8;
        self.kicker
            .as_ref()
            .expect("created above")
            .arm(slice, immediate_exit);
        let exit = self.run_slice(plat);
        self.kicker.as_ref().expect("created above").disarm();
        self.vcpu.set_kvm_immediate_exit(0);
        let exit = match exit {
            Ok(exit) => exit,
            Err(e) => {
                // Best effort: the error's register dump shows where the guest was.
                if let Ok(now) = self.save_state(cpu, plat.now_ns()) {
                    *cpu = now;
                }
                self.synced = None;
                return Err(e);
            }
        };
        let mut now = self.save_state(cpu, plat.now_ns())?;
        if exit == KvmExit::Halted {
            now.halted = true;
        }
        *cpu = now;
        self.synced = Some(cpu.clone());
        Ok(exit)
    }

    /// The `KVM_RUN` loop of one slice.
    fn run_slice(&mut self, plat: &mut dyn Platform) -> Result<KvmExit, KvmError> {
        // The access size of an I/O exit is not part of `VcpuExit`; read it from kvm_run
        // through a pointer taken before `run()` borrows the vCPU.
        let kvm_run = self.vcpu.get_kvm_run() as *const kvm_bindings::kvm_run;
        let io_size = || {
            // SAFETY: read only while handling KVM_EXIT_IO, when `io` is the union member
            // KVM filled; kvm_run stays mapped for the vCPU's lifetime.
            usize::from(unsafe { (*kvm_run).__bindgen_anon_1.io.size }).clamp(1, 4)
        };
        loop {
            self.offer_interrupt(plat)?;
            self.stats.runs += 1;
            let exit = match self.vcpu.run() {
                Ok(exit) => exit,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.stats.slice_kicks += 1;
                    return Ok(KvmExit::SliceEnd);
                }
                Err(e) => return Err(err("KVM_RUN")(e)),
            };
            match exit {
                VcpuExit::IoIn(port, data) => {
                    self.stats.io_exits += 1;
                    // String I/O: `data` holds `count` elements of the access size.
                    let size = io_size();
                    for chunk in data.chunks_mut(size) {
                        let v = plat.pio_read(port, size as u8);
                        chunk.copy_from_slice(&v.to_le_bytes()[..size]);
                    }
                }
                VcpuExit::IoOut(port, data) => {
                    self.stats.io_exits += 1;
                    let size = io_size();
                    let values: Vec<u32> = data.chunks(size).map(le_u32).collect();
                    for v in values {
                        plat.pio_write(port, size as u8, v);
                    }
                    if let Some(exit) = take_action(plat) {
                        return Ok(exit);
                    }
                }
                VcpuExit::MmioRead(addr, data) => {
                    self.stats.mmio_exits += 1;
                    let v = plat.mmio_read(addr, data.len() as u8);
                    let n = data.len();
                    data.copy_from_slice(&v.to_le_bytes()[..n]);
                }
                VcpuExit::MmioWrite(addr, data) => {
                    self.stats.mmio_exits += 1;
                    let mut b = [0u8; 8];
                    b[..data.len()].copy_from_slice(data);
                    plat.mmio_write(addr, data.len() as u8, u64::from_le_bytes(b));
                    if let Some(exit) = take_action(plat) {
                        return Ok(exit);
                    }
                }
                VcpuExit::Hlt => {
                    self.stats.hlt_exits += 1;
                    return Ok(KvmExit::Halted);
                }
                VcpuExit::IrqWindowOpen | VcpuExit::Intr => {}
                VcpuExit::Shutdown => return Ok(KvmExit::TripleFault),
                VcpuExit::FailEntry(reason, _) => {
                    return Err(KvmError::EntryFailed { reason });
                }
                VcpuExit::InternalError => {
                    // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the
                    // union member KVM filled.
                    let internal = unsafe { self.vcpu.get_kvm_run().__bindgen_anon_1.internal };
                    let n = (internal.ndata as usize).min(internal.data.len());
                    let data = &internal.data[..n];
                    if internal.suberror == kvm_bindings::KVM_INTERNAL_ERROR_EMULATION {
                        return Err(KvmError::EmulationFailed {
                            instruction: emulation_failure_bytes(data),
                        });
                    }
                    return Err(KvmError::Internal {
                        suberror: internal.suberror,
                        data: data.to_vec(),
                    });
                }
                VcpuExit::SystemEvent(kind, _) => {
                    return Ok(match kind {
                        kvm_bindings::KVM_SYSTEM_EVENT_RESET => {
                            KvmExit::Action(PlatformAction::Reset)
                        }
                        _ => KvmExit::Action(PlatformAction::PowerOff),
                    });
                }
                other => {
                    return Err(KvmError::UnexpectedExit(format!("{other:?}")));
                }
            }
        }
    }

    /// Inject the platform's pending interrupt if the guest can take one now; otherwise ask
    /// KVM to exit as soon as it can.
    fn offer_interrupt(&mut self, plat: &mut dyn Platform) -> Result<(), KvmError> {
        let run = self.vcpu.get_kvm_run();
        if !plat.interrupt_pending() {
            run.request_interrupt_window = 0;
            return Ok(());
        }
        if run.ready_for_interrupt_injection != 0 && run.if_flag != 0 {
            run.request_interrupt_window = 0;
            if let Some(vector) = plat.ack_interrupt() {
                let irq = kvm_bindings::kvm_interrupt {
                    irq: u32::from(vector),
                };
                // SAFETY: KVM_INTERRUPT takes a pointer to a kvm_interrupt, valid for the
                // call; the fd is this VM's vCPU.
                let rc = unsafe {
                    libc::ioctl(
                        std::os::fd::AsRawFd::as_raw_fd(&self.vcpu),
                        KVM_INTERRUPT as _,
                        &irq as *const kvm_bindings::kvm_interrupt,
                    )
                };
                if rc != 0 {
                    return Err(KvmError::Ioctl {
                        what: "KVM_INTERRUPT",
                        errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
                    });
                }
                self.stats.interrupts_injected += 1;
            }
        } else {
            run.request_interrupt_window = 1;
        }
        Ok(())
    }
}

fn le_u32(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w[..b.len()].copy_from_slice(b);
    u32::from_le_bytes(w)
}

/// A machine-level action the last write caused. A20 changes are passed on too (the machine
/// records the gate in `CpuState`), although KVM keeps the A20 line enabled.
fn take_action(plat: &mut dyn Platform) -> Option<KvmExit> {
    let action = plat.take_action()?;
    if action == PlatformAction::SetA20(false) {
        tracing::warn!("the guest disabled A20: KVM keeps the A20 line enabled");
    }
    Some(KvmExit::Action(action))
}

/// Write a TSC value far from the host's and read it back.
fn tsc_write_sticks(vcpu: &VcpuFd) -> bool {
    const PROBE: u64 = 1 << 20;
    let entry = |data| kvm_msr_entry {
        index: msr::IA32_TSC,
        data,
        ..Default::default()
    };
    let (Ok(set), Ok(mut get)) = (
        Msrs::from_entries(&[entry(PROBE)]),
        Msrs::from_entries(&[entry(0)]),
    ) else {
        return false;
    };
    vcpu.set_msrs(&set).is_ok_and(|n| n == 1)
        && vcpu.get_msrs(&mut get).is_ok_and(|n| n == 1)
        // Within a second of guest time at any plausible TSC rate.
        && get.as_slice()[0].data.wrapping_sub(PROBE) < 10_000_000_000
}

/// The instruction bytes of a KVM_INTERNAL_ERROR_EMULATION report (`data[0]` flags with
/// KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES, then a length byte and up to 15
/// bytes), as hex; empty when KVM did not include them.
fn emulation_failure_bytes(data: &[u64]) -> String {
    if data.len() < 3 || data[0] & 1 == 0 {
        return String::new();
    }
    let bytes: Vec<u8> = data[1..3].iter().flat_map(|w| w.to_le_bytes()).collect();
    let len = usize::from(bytes[0]).min(15);
    bytes[1..=len]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulation_failure_shows_the_instruction_bytes() {
        // What kvm_pvm reported for Linux's `lock cmpxchg16b [rbp+0x20]`.
        let data = [1, 0x7420_4dc7_0f48_f00f, 0x894d_0824_448b_4c66, 0x1000];
        assert_eq!(
            emulation_failure_bytes(&data),
            "f0 48 0f c7 4d 20 74 66 4c 8b 44 24 08 4d 89"
        );
        assert_eq!(emulation_failure_bytes(&[0, 0, 0]), "");
    }
}
