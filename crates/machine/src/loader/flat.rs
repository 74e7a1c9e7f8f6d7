//! Flat binary kernels (`--kernel FILE --load-addr A [--entry E]`): the file is copied to
//! `load_addr` and entered at `entry` in the mode [`FlatEntryMode`] describes (32-bit flat
//! protected mode by default, or real mode).

use super::{check_not_boot_area, enter_protected32, write_flat_gdt, write_ram, LoadError};
use crate::config::FlatEntryMode;
use crane86_memory::PhysMem;
use crane86_x86::segment::Segment;
use crane86_x86::{CpuState, SegReg};

/// Real-mode initial stack pointer (SS = 0).
pub const REAL_MODE_SP: u64 = 0x7000;

pub fn load(
    mem: &mut PhysMem,
    cpu: &mut CpuState,
    image: &[u8],
    load_addr: u64,
    entry: u64,
    mode: FlatEntryMode,
) -> Result<(), LoadError> {
    if image.is_empty() {
        return Err(LoadError::Empty);
    }
    if mode == FlatEntryMode::Protected32 {
        // Only the GDT is needed from the loader's low-memory area.
        check_not_boot_area("flat image", load_addr, image.len() as u64)?;
    }
    write_ram(mem, "flat image", load_addr, image)?;
    match mode {
        FlatEntryMode::Protected32 => {
            write_flat_gdt(mem)?;
            enter_protected32(cpu, entry, load_addr);
        }
        FlatEntryMode::Real => {
            if entry >= 0x10_0000 {
                return Err(LoadError::RealModeEntryTooHigh { entry });
            }
            *cpu = CpuState::reset();
            cpu.gpr = [0; 16];
            let seg = ((entry & !0xFFFF) >> 4) as u16;
            cpu.seg[SegReg::Cs as usize] = Segment::real_mode(seg, true);
            for s in [SegReg::Ds, SegReg::Es, SegReg::Fs, SegReg::Gs] {
                cpu.seg[s as usize] = Segment::real_mode(seg, false);
            }
            cpu.seg[SegReg::Ss as usize] = Segment::real_mode(0, false);
            cpu.gpr[4] = REAL_MODE_SP;
            cpu.rip = entry & 0xFFFF;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crane86_x86::CpuMode;

    #[test]
    fn flat_image_lands_and_cpu_enters_requested_mode() {
        let mut mem = PhysMem::new(4 << 20, &[]).unwrap();
        let mut cpu = CpuState::reset();
        load(
            &mut mem,
            &mut cpu,
            &[0x90, 0xF4],
            0x10_0000,
            0x10_0001,
            FlatEntryMode::Protected32,
        )
        .unwrap();
        assert_eq!(cpu.mode(), CpuMode::Protected);
        assert_eq!(cpu.rip, 0x10_0001);
        let mut b = [0u8; 2];
        mem.read_ram(0x10_0000, &mut b).unwrap();
        assert_eq!(b, [0x90, 0xF4]);

        load(
            &mut mem,
            &mut cpu,
            &[0xF4],
            0x1_7C00,
            0x1_7C00,
            FlatEntryMode::Real,
        )
        .unwrap();
        assert_eq!(cpu.mode(), CpuMode::Real);
        assert_eq!(cpu.seg(SegReg::Cs).base + cpu.rip, 0x1_7C00);

        let e = load(
            &mut mem,
            &mut cpu,
            &[0xF4],
            0x20_0000,
            0x20_0000,
            FlatEntryMode::Real,
        )
        .unwrap_err();
        assert_eq!(e, LoadError::RealModeEntryTooHigh { entry: 0x20_0000 });
        let e = load(
            &mut mem,
            &mut cpu,
            &[1; 16],
            0x3F_FFF8,
            0x3F_FFF8,
            FlatEntryMode::Protected32,
        )
        .unwrap_err();
        assert!(e.to_string().contains("outside RAM"), "{e}");
    }
}
