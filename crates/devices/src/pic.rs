//! The 8259A programmable interrupt controller pair of the PC/AT: master at ports 0x20/0x21,
//! slave at 0xA0/0xA1 cascaded into master input 2, and the PIIX/EISA edge/level control
//! registers (ELCR) at 0x4D0/0x4D1.
//!
//! Implemented: the ICW1–ICW4 initialisation sequence, OCW1 (mask), OCW2 (non-specific,
//! specific and rotating EOI, set priority, rotate in auto-EOI mode), OCW3 (IRR/ISR read select,
//! poll mode, special mask mode), edge and level triggering (per line through the ELCR, or all
//! lines through ICW1.LTIM), auto-EOI, special fully nested mode on the master, and spurious
//! IRQ 7 / IRQ 15 when a request disappeared before the acknowledge.
//!
//! Not modelled: 8080/8085 call-address mode (ICW1.ADI, ICW4.µPM=0: warned about and treated
//! as 8086 mode), buffered mode (ICW4.BUF/M/S: accepted, no effect), and single mode (ICW1.SNGL
//! skips ICW3 as on hardware, but the slave stays wired to master input 2).
//!
//! The logic follows the well-exercised QEMU `i8259.c` model (priorities relative to a rotating
//! `priority_add`, IRR edge detection against the last line level), so Linux, SeaBIOS and DOS
//! programming sequences behave as they do there.

use serde::{Deserialize, Serialize};
use tracing::warn;

/// Port of the master's command register (A0 = 0); data/IMR register is the next port.
pub const MASTER_PORT: u16 = 0x20;
/// Port of the slave's command register; data/IMR register is the next port.
pub const SLAVE_PORT: u16 = 0xA0;
/// ELCR1 (master, IRQ 0–7); ELCR2 (slave, IRQ 8–15) is the next port.
pub const ELCR_PORT: u16 = 0x4D0;

/// Master input the slave's INT output is wired to.
pub const CASCADE_IRQ: u8 = 2;

// ICW1 (written to the command port with bit 4 set).
/// ICW1: ICW4 will follow.
pub const ICW1_IC4: u8 = 1 << 0;
/// ICW1: single controller, no ICW3 (cascade mode when clear).
pub const ICW1_SNGL: u8 = 1 << 1;
/// ICW1: call address interval 4 (8080 mode only; ignored).
pub const ICW1_ADI: u8 = 1 << 2;
/// ICW1: level-triggered mode for every input (edge-triggered when clear).
pub const ICW1_LTIM: u8 = 1 << 3;
/// ICW1: marks the command-port write as ICW1 (starts initialisation).
pub const ICW1_INIT: u8 = 1 << 4;

// ICW4.
/// ICW4: 8086/8088 mode (8080/8085 mode when clear; not modelled).
pub const ICW4_8086: u8 = 1 << 0;
/// ICW4: automatic end of interrupt (the acknowledge does not set ISR).
pub const ICW4_AEOI: u8 = 1 << 1;
/// ICW4: buffered-mode master/slave select (no effect here).
pub const ICW4_MS: u8 = 1 << 2;
/// ICW4: buffered mode (no effect here).
pub const ICW4_BUF: u8 = 1 << 3;
/// ICW4: special fully nested mode (master ignores its cascade ISR bit for priority).
pub const ICW4_SFNM: u8 = 1 << 4;

// OCW2 (command port, bits 4:3 = 00). Bits 2:0 are the IRQ level for specific commands.
/// OCW2: end-of-interrupt.
pub const OCW2_EOI: u8 = 1 << 5;
/// OCW2: specific (the level in bits 2:0 is used).
pub const OCW2_SL: u8 = 1 << 6;
/// OCW2: rotate priorities.
pub const OCW2_R: u8 = 1 << 7;
/// OCW2 command values (bits 7:5).
pub const OCW2_NONSPECIFIC_EOI: u8 = OCW2_EOI;
pub const OCW2_SPECIFIC_EOI: u8 = OCW2_SL | OCW2_EOI;
pub const OCW2_ROTATE_NONSPECIFIC_EOI: u8 = OCW2_R | OCW2_EOI;
pub const OCW2_ROTATE_AEOI_SET: u8 = OCW2_R;
pub const OCW2_ROTATE_AEOI_CLEAR: u8 = 0;
pub const OCW2_ROTATE_SPECIFIC_EOI: u8 = OCW2_R | OCW2_SL | OCW2_EOI;
pub const OCW2_SET_PRIORITY: u8 = OCW2_R | OCW2_SL;

// OCW3 (command port, bits 4:3 = 01).
/// OCW3: read ISR (IRR when clear) on the next command-port read; valid with RR.
pub const OCW3_RIS: u8 = 1 << 0;
/// OCW3: the RIS bit is valid.
pub const OCW3_RR: u8 = 1 << 1;
/// OCW3: poll command: the next read returns 0x80 | level and acknowledges it.
pub const OCW3_P: u8 = 1 << 2;
/// OCW3: identifies an OCW3 (with bit 4 clear).
pub const OCW3_SELECT: u8 = 1 << 3;
/// OCW3: special mask mode value; valid with ESMM.
pub const OCW3_SMM: u8 = 1 << 5;
/// OCW3: the SMM bit is valid.
pub const OCW3_ESMM: u8 = 1 << 6;

/// ELCR bits that can be set on the master (IRQ 0, 1 and 2 are always edge-triggered).
pub const ELCR1_MASK: u8 = 0xF8;
/// ELCR bits that can be set on the slave (IRQ 8 and 13 are always edge-triggered).
pub const ELCR2_MASK: u8 = 0xDE;

/// Where a chip is in its initialisation sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum InitStep {
    /// Initialised: data-port writes are OCW1 (IMR).
    #[default]
    Ready,
    /// ICW1 seen, expecting ICW2 (vector base).
    Icw2,
    /// Expecting ICW3 (cascade wiring).
    Icw3,
    /// Expecting ICW4 (mode).
    Icw4,
}

/// Snapshot of one 8259A.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PicChipState {
    /// Interrupt request register.
    pub irr: u8,
    /// Interrupt mask register (OCW1).
    pub imr: u8,
    /// In-service register.
    pub isr: u8,
    /// Current level of each input line (edge detection).
    pub lines: u8,
    /// Edge/level control register (1 = level-triggered).
    pub elcr: u8,
    /// Which ELCR bits are writable.
    pub elcr_mask: u8,
    /// The lowest-priority level is `priority_add - 1` (rotation).
    pub priority_add: u8,
    /// Vector of input 0 (ICW2 & 0xF8).
    pub irq_base: u8,
    /// OCW3 read-register select: true = ISR, false = IRR.
    pub read_isr: bool,
    /// OCW3 poll command armed for the next read.
    pub poll: bool,
    /// OCW3 special mask mode.
    pub special_mask: bool,
    pub init_step: InitStep,
    /// ICW1.IC4 of the current initialisation.
    pub icw4_needed: bool,
    /// ICW1.SNGL.
    pub single: bool,
    /// ICW1.LTIM: every input level-triggered.
    pub level_all: bool,
    /// ICW3 as written (slave mask on the master, slave id on the slave).
    pub icw3: u8,
    /// ICW4.AEOI.
    pub auto_eoi: bool,
    /// OCW2 rotate-in-auto-EOI mode.
    pub rotate_on_aeoi: bool,
    /// ICW4.SFNM.
    pub special_fully_nested: bool,
    pub is_master: bool,
}

/// One 8259A.
#[derive(Clone, Debug)]
struct Chip {
    s: PicChipState,
}

impl Chip {
    fn new(is_master: bool) -> Chip {
        Chip {
            s: PicChipState {
                // Masked until programmed (as Bochs does; ICW1 clears the mask), so a guest
                // that sets IF before initialising the PIC gets no stray vector.
                imr: 0xFF,
                elcr_mask: if is_master { ELCR1_MASK } else { ELCR2_MASK },
                is_master,
                ..Default::default()
            },
        }
    }

    fn level_mask(&self) -> u8 {
        if self.s.level_all {
            0xFF
        } else {
            self.s.elcr
        }
    }

    /// Priority (0 = highest) of the highest-priority bit in `mask`, 8 if none.
    fn priority(&self, mask: u8) -> u8 {
        if mask == 0 {
            return 8;
        }
        (0..8)
            .find(|p| mask & (1 << ((p + self.s.priority_add) & 7)) != 0)
            .unwrap_or(8)
    }

    /// The input this chip would present to the CPU now, if any.
    fn pending_irq(&self) -> Option<u8> {
        let priority = self.priority(self.s.irr & !self.s.imr);
        if priority == 8 {
            return None;
        }
        let mut in_service = self.s.isr;
        if self.s.special_mask {
            in_service &= !self.s.imr;
        }
        if self.s.special_fully_nested && self.s.is_master {
            in_service &= !(1 << CASCADE_IRQ);
        }
        (priority < self.priority(in_service)).then_some((priority + self.s.priority_add) & 7)
    }

    fn set_line(&mut self, irq: u8, level: bool) {
        let bit = 1u8 << irq;
        if self.level_mask() & bit != 0 {
            if level {
                self.s.irr |= bit;
            } else {
                self.s.irr &= !bit;
            }
        } else if level && self.s.lines & bit == 0 {
            self.s.irr |= bit;
        }
        if level {
            self.s.lines |= bit;
        } else {
            self.s.lines &= !bit;
        }
    }

    /// The INTA cycle for input `irq` of this chip.
    fn intack(&mut self, irq: u8) {
        let bit = 1u8 << irq;
        if self.s.auto_eoi {
            if self.s.rotate_on_aeoi {
                self.s.priority_add = (irq + 1) & 7;
            }
        } else {
            self.s.isr |= bit;
        }
        // A level-triggered request stays in IRR while its line is high.
        if self.level_mask() & bit == 0 {
            self.s.irr &= !bit;
        }
    }

    fn init_reset(&mut self) {
        let s = &mut self.s;
        // Edge-triggered requests are forgotten; level-triggered ones follow their line.
        s.irr &= s.elcr & s.lines;
        s.imr = 0;
        s.isr = 0;
        s.priority_add = 0;
        s.irq_base = 0;
        s.read_isr = false;
        s.poll = false;
        s.special_mask = false;
        s.init_step = InitStep::Ready;
        s.icw4_needed = false;
        s.single = false;
        s.level_all = false;
        s.auto_eoi = false;
        s.rotate_on_aeoi = false;
        s.special_fully_nested = false;
    }

    fn write(&mut self, offset: u16, val: u8) {
        if offset & 1 == 0 {
            if val & ICW1_INIT != 0 {
                self.init_reset();
                self.s.init_step = InitStep::Icw2;
                self.s.icw4_needed = val & ICW1_IC4 != 0;
                self.s.single = val & ICW1_SNGL != 0;
                self.s.level_all = val & ICW1_LTIM != 0;
                if self.s.level_all {
                    self.s.irr = self.s.lines;
                }
                if val & ICW1_ADI != 0 {
                    warn!(val, "8259: ICW1 call-address interval (8080 mode) ignored");
                }
            } else if val & OCW3_SELECT != 0 {
                if val & OCW3_P != 0 {
                    self.s.poll = true;
                }
                if val & OCW3_RR != 0 {
                    self.s.read_isr = val & OCW3_RIS != 0;
                }
                if val & OCW3_ESMM != 0 {
                    self.s.special_mask = val & OCW3_SMM != 0;
                }
            } else {
                self.ocw2(val);
            }
        } else {
            match self.s.init_step {
                InitStep::Ready => self.s.imr = val,
                InitStep::Icw2 => {
                    self.s.irq_base = val & 0xF8;
                    self.s.init_step = match (self.s.single, self.s.icw4_needed) {
                        (false, _) => InitStep::Icw3,
                        (true, true) => InitStep::Icw4,
                        (true, false) => InitStep::Ready,
                    };
                }
                InitStep::Icw3 => {
                    self.s.icw3 = val;
                    self.s.init_step = if self.s.icw4_needed {
                        InitStep::Icw4
                    } else {
                        InitStep::Ready
                    };
                }
                InitStep::Icw4 => {
                    if val & ICW4_8086 == 0 {
                        warn!(
                            val,
                            "8259: ICW4 8080/8085 mode not supported, using 8086 mode"
                        );
                    }
                    self.s.auto_eoi = val & ICW4_AEOI != 0;
                    self.s.special_fully_nested = val & ICW4_SFNM != 0;
                    self.s.init_step = InitStep::Ready;
                }
            }
        }
    }

    fn ocw2(&mut self, val: u8) {
        let level = val & 7;
        match val & 0xE0 {
            OCW2_ROTATE_AEOI_CLEAR => self.s.rotate_on_aeoi = false,
            OCW2_ROTATE_AEOI_SET => self.s.rotate_on_aeoi = true,
            OCW2_NONSPECIFIC_EOI | OCW2_ROTATE_NONSPECIFIC_EOI => {
                let priority = self.priority(self.s.isr);
                if priority != 8 {
                    let irq = (priority + self.s.priority_add) & 7;
                    self.s.isr &= !(1 << irq);
                    if val & OCW2_R != 0 {
                        self.s.priority_add = (irq + 1) & 7;
                    }
                }
            }
            OCW2_SPECIFIC_EOI => self.s.isr &= !(1 << level),
            OCW2_SET_PRIORITY => self.s.priority_add = (level + 1) & 7,
            OCW2_ROTATE_SPECIFIC_EOI => {
                self.s.isr &= !(1 << level);
                self.s.priority_add = (level + 1) & 7;
            }
            _ => {} // 0x40: no operation
        }
    }

    fn read(&mut self, offset: u16) -> u8 {
        if self.s.poll {
            self.s.poll = false;
            return match self.pending_irq() {
                Some(irq) => {
                    self.intack(irq);
                    0x80 | irq
                }
                None => 0,
            };
        }
        if offset & 1 == 0 {
            if self.s.read_isr {
                self.s.isr
            } else {
                self.s.irr
            }
        } else {
            self.s.imr
        }
    }
}

/// Snapshot of the PIC pair.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PicState {
    pub master: PicChipState,
    pub slave: PicChipState,
}

/// Which chip of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PicChip {
    Master = 0,
    Slave = 1,
}

/// The cascaded master/slave 8259A pair.
#[derive(Clone, Debug)]
pub struct Pic {
    chips: [Chip; 2],
    /// The master's INT output (the CPU's INTR line), kept current after every change.
    intr: bool,
}

impl Default for Pic {
    fn default() -> Self {
        Pic::new()
    }
}

impl Pic {
    /// The pair at power-on: vector bases 0, every input masked and edge-triggered.
    pub fn new() -> Pic {
        Pic {
            chips: [Chip::new(true), Chip::new(false)],
            intr: false,
        }
    }

    /// Recompute the cascade input and the INTR output.
    fn update(&mut self) {
        let slave_out = self.chips[1].pending_irq().is_some();
        self.chips[0].set_line(CASCADE_IRQ, slave_out);
        self.intr = self.chips[0].pending_irq().is_some();
    }

    /// Drive input `line` (0–15; 8–15 are the slave's) to `level`.
    pub fn set_irq(&mut self, line: u8, level: bool) {
        match line {
            0..=7 => self.chips[0].set_line(line, level),
            8..=15 => self.chips[1].set_line(line - 8, level),
            _ => {
                warn!(line, "8259: IRQ line out of range");
                return;
            }
        }
        self.update();
    }

    /// The INTR line: an unmasked request is waiting for the CPU.
    #[inline]
    pub fn interrupt_pending(&self) -> bool {
        self.intr
    }

    /// The INTA cycle: returns the vector of the highest-priority request and puts it in
    /// service. Like the hardware, it always answers: if the request went away after INTR was
    /// raised, the master answers with its IRQ 7 vector (nothing put in service), or, when the
    /// master saw the cascade input, the slave answers with its IRQ 7 (IRQ 15) vector with the
    /// master's cascade bit in service. Callers should only acknowledge while
    /// [`Pic::interrupt_pending`] is true ([`crate::pc::PcPlatform`] does so); the `Option` is
    /// never `None` today and is kept for the `Platform` boundary.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let vector = match self.chips[0].pending_irq() {
            Some(CASCADE_IRQ) => {
                let vector = match self.chips[1].pending_irq() {
                    Some(irq) => {
                        self.chips[1].intack(irq);
                        self.chips[1].s.irq_base | irq
                    }
                    None => self.chips[1].s.irq_base | 7,
                };
                self.chips[0].intack(CASCADE_IRQ);
                vector
            }
            Some(irq) => {
                self.chips[0].intack(irq);
                self.chips[0].s.irq_base | irq
            }
            None => self.chips[0].s.irq_base | 7,
        };
        self.update();
        Some(vector)
    }

    /// Port read at `offset` (0 = command/status, 1 = data/IMR) of `chip`.
    pub fn read(&mut self, chip: PicChip, offset: u16) -> u8 {
        let v = self.chips[chip as usize].read(offset);
        self.update();
        v
    }

    /// Port write at `offset` (0 = command, 1 = data) of `chip`.
    pub fn write(&mut self, chip: PicChip, offset: u16, value: u8) {
        self.chips[chip as usize].write(offset, value);
        self.update();
    }

    /// ELCR read; `offset` 0 = ELCR1 (master), 1 = ELCR2 (slave).
    pub fn read_elcr(&self, offset: u16) -> u8 {
        self.chips[usize::from(offset & 1 != 0)].s.elcr
    }

    /// ELCR write; bits for IRQ 0, 1, 2, 8 and 13 stay 0 (edge-triggered).
    pub fn write_elcr(&mut self, offset: u16, value: u8) {
        let chip = &mut self.chips[usize::from(offset & 1 != 0)];
        chip.s.elcr = value & chip.s.elcr_mask;
        // A line that became level-triggered requests while high; one that became
        // edge-triggered keeps what it latched.
        let level = chip.level_mask();
        chip.s.irr = (chip.s.irr & !level) | (chip.s.lines & level);
        self.update();
    }

    /// Interrupt request register of `chip` (for tests and debugging).
    pub fn irr(&self, chip: PicChip) -> u8 {
        self.chips[chip as usize].s.irr
    }

    /// In-service register of `chip`.
    pub fn isr(&self, chip: PicChip) -> u8 {
        self.chips[chip as usize].s.isr
    }

    /// Mask register of `chip`.
    pub fn imr(&self, chip: PicChip) -> u8 {
        self.chips[chip as usize].s.imr
    }

    /// Vector base of `chip` (ICW2).
    pub fn vector_base(&self, chip: PicChip) -> u8 {
        self.chips[chip as usize].s.irq_base
    }

    pub fn state(&self) -> PicState {
        PicState {
            master: self.chips[0].s.clone(),
            slave: self.chips[1].s.clone(),
        }
    }

    pub fn from_state(state: &PicState) -> Pic {
        let mut pic = Pic {
            chips: [
                Chip {
                    s: state.master.clone(),
                },
                Chip {
                    s: state.slave.clone(),
                },
            ],
            intr: false,
        };
        pic.update();
        pic
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PicChip::{Master, Slave};

    /// The sequence Linux's `init_8259A` uses (vectors 0x30 / 0x38, no auto-EOI).
    fn linux_pic() -> Pic {
        let mut pic = Pic::new();
        pic.write(Master, 1, 0xFF); // mask all
        pic.write(Slave, 1, 0xFF);
        pic.write(Master, 0, 0x11); // ICW1: edge, cascade, ICW4
        pic.write(Master, 1, 0x30); // ICW2: vector base
        pic.write(Master, 1, 0x04); // ICW3: slave on IR2
        pic.write(Master, 1, 0x01); // ICW4: 8086, normal EOI
        pic.write(Slave, 0, 0x11);
        pic.write(Slave, 1, 0x38);
        pic.write(Slave, 1, 0x02); // slave id 2
        pic.write(Slave, 1, 0x01);
        pic.write(Master, 1, 0x00);
        pic.write(Slave, 1, 0x00);
        pic
    }

    /// SeaBIOS's `pic_setup` (vectors 0x08 / 0x70), everything but the cascade masked.
    fn seabios_pic() -> Pic {
        let mut pic = Pic::new();
        pic.write(Master, 0, 0x11);
        pic.write(Slave, 0, 0x11);
        pic.write(Master, 1, 0x08);
        pic.write(Slave, 1, 0x70);
        pic.write(Master, 1, 0x04);
        pic.write(Slave, 1, 0x02);
        pic.write(Master, 1, 0x01);
        pic.write(Slave, 1, 0x01);
        pic.write(Master, 1, !(1 << 2));
        pic.write(Slave, 1, 0xFF);
        pic
    }

    fn pulse(pic: &mut Pic, line: u8) {
        pic.set_irq(line, true);
        pic.set_irq(line, false);
    }

    fn read_isr(pic: &mut Pic, chip: PicChip) -> u8 {
        pic.write(chip, 0, OCW3_SELECT | OCW3_RR | OCW3_RIS);
        let v = pic.read(chip, 0);
        pic.write(chip, 0, OCW3_SELECT | OCW3_RR);
        v
    }

    #[test]
    fn linux_init_timer_interrupt_and_eoi() {
        let mut pic = linux_pic();
        assert_eq!(pic.vector_base(Master), 0x30);
        assert_eq!(pic.vector_base(Slave), 0x38);
        assert!(!pic.interrupt_pending());
        pulse(&mut pic, 0);
        assert!(pic.interrupt_pending());
        // IRR read (the default read register).
        assert_eq!(pic.read(Master, 0), 0x01);
        assert_eq!(pic.acknowledge(), Some(0x30));
        assert!(!pic.interrupt_pending());
        assert_eq!(read_isr(&mut pic, Master), 0x01);
        assert_eq!(pic.read(Master, 0), 0x00, "IRR cleared by the acknowledge");
        pic.write(Master, 0, OCW2_NONSPECIFIC_EOI);
        assert_eq!(pic.isr(Master), 0);
    }

    #[test]
    fn seabios_init_and_slave_cascade() {
        let mut pic = seabios_pic();
        pic.write(Slave, 1, 0xFE); // unmask IRQ 8
        pic.set_irq(8, true);
        assert!(pic.interrupt_pending());
        assert_eq!(pic.irr(Master), 1 << 2);
        assert_eq!(pic.acknowledge(), Some(0x70));
        assert_eq!(pic.isr(Master), 1 << 2);
        assert_eq!(pic.isr(Slave), 1 << 0);
        pic.set_irq(8, false);
        // EOI slave then master, as interrupt handlers do.
        pic.write(Slave, 0, OCW2_NONSPECIFIC_EOI);
        pic.write(Master, 0, OCW2_NONSPECIFIC_EOI);
        assert_eq!((pic.isr(Master), pic.isr(Slave)), (0, 0));
        assert!(!pic.interrupt_pending());
        // IRQ 14 on the slave too.
        pic.write(Slave, 1, 0x00);
        pulse(&mut pic, 14);
        assert_eq!(pic.acknowledge(), Some(0x76));
    }

    #[test]
    fn masked_lines_do_not_interrupt() {
        let mut pic = seabios_pic();
        pulse(&mut pic, 0);
        assert!(!pic.interrupt_pending(), "IRQ 0 masked");
        assert_eq!(pic.read(Master, 1), 0xFB);
        assert_eq!(pic.irr(Master), 0x01, "request latched while masked");
        pic.write(Master, 1, 0xFA);
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), Some(0x08));
    }

    #[test]
    fn priorities_and_nesting() {
        let mut pic = linux_pic();
        pulse(&mut pic, 3);
        pulse(&mut pic, 1);
        assert_eq!(pic.acknowledge(), Some(0x31));
        // IRQ 3 is lower priority than the in-service IRQ 1: held back.
        assert!(!pic.interrupt_pending());
        // IRQ 0 is higher: nests.
        pulse(&mut pic, 0);
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), Some(0x30));
        assert_eq!(pic.isr(Master), 0b11);
        pic.write(Master, 0, OCW2_NONSPECIFIC_EOI); // ends IRQ 0 (highest in service)
        assert_eq!(pic.isr(Master), 0b10);
        assert!(!pic.interrupt_pending());
        pic.write(Master, 0, OCW2_NONSPECIFIC_EOI);
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), Some(0x33));
        // Slave interrupts rank at the cascade input's priority (between IRQ 1 and 3).
        pic.write(Master, 0, OCW2_NONSPECIFIC_EOI);
        pulse(&mut pic, 4);
        pulse(&mut pic, 12);
        assert_eq!(pic.acknowledge(), Some(0x3C));
    }

    #[test]
    fn edge_triggered_needs_a_new_edge() {
        let mut pic = linux_pic();
        pic.set_irq(4, true);
        assert_eq!(pic.acknowledge(), Some(0x34));
        pic.write(Master, 0, OCW2_NONSPECIFIC_EOI);
        pic.set_irq(4, true); // still high: no new edge
        assert!(!pic.interrupt_pending());
        pic.set_irq(4, false);
        pic.set_irq(4, true);
        assert!(pic.interrupt_pending());
    }

    #[test]
    fn level_triggered_via_elcr() {
        let mut pic = linux_pic();
        pic.write_elcr(1, 1 << 2); // IRQ 10 level
        assert_eq!(pic.read_elcr(1), 0x04);
        pic.set_irq(10, true);
        assert_eq!(pic.acknowledge(), Some(0x3A));
        pic.write(Slave, 0, OCW2_NONSPECIFIC_EOI);
        pic.write(Master, 0, OCW2_NONSPECIFIC_EOI);
        // Line still high: requests again.
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), Some(0x3A));
        pic.set_irq(10, false);
        pic.write(Slave, 0, OCW2_NONSPECIFIC_EOI);
        pic.write(Master, 0, OCW2_NONSPECIFIC_EOI);
        assert!(!pic.interrupt_pending());
        assert_eq!(pic.irr(Slave), 0);
    }

    #[test]
    fn power_on_masks_everything_until_icw1() {
        let mut pic = Pic::new();
        assert_eq!((pic.imr(Master), pic.imr(Slave)), (0xFF, 0xFF));
        pulse(&mut pic, 0);
        assert!(
            !pic.interrupt_pending(),
            "no stray vector before initialisation"
        );
        pic.write(Master, 0, 0x11);
        assert_eq!(pic.imr(Master), 0x00, "ICW1 clears the mask");
        assert_eq!(pic.irr(Master), 0x00, "and forgets edge requests");
    }

    #[test]
    fn elcr_masks() {
        let mut pic = Pic::new();
        pic.write_elcr(0, 0xFF);
        pic.write_elcr(1, 0xFF);
        assert_eq!(pic.read_elcr(0), ELCR1_MASK);
        assert_eq!(pic.read_elcr(1), ELCR2_MASK);
    }

    #[test]
    fn ltim_makes_all_inputs_level_triggered() {
        let mut pic = Pic::new();
        pic.write(Master, 0, ICW1_INIT | ICW1_IC4 | ICW1_LTIM);
        pic.write(Master, 1, 0x20);
        pic.write(Master, 1, 0x04);
        pic.write(Master, 1, ICW4_8086);
        pic.set_irq(5, true);
        assert_eq!(pic.acknowledge(), Some(0x25));
        pic.write(Master, 0, OCW2_NONSPECIFIC_EOI);
        assert!(pic.interrupt_pending());
        pic.set_irq(5, false);
        assert!(!pic.interrupt_pending());
    }

    #[test]
    fn spurious_master_irq7() {
        let mut pic = linux_pic();
        pic.write_elcr(0, 1 << 5);
        pic.set_irq(5, true);
        assert!(pic.interrupt_pending());
        pic.set_irq(5, false); // request vanishes before INTA
        assert_eq!(pic.acknowledge(), Some(0x37));
        assert_eq!(pic.isr(Master), 0, "spurious IRQ 7 is not put in service");
    }

    #[test]
    fn spurious_slave_irq15() {
        let mut pic = linux_pic();
        pic.write_elcr(1, 1 << 3); // IRQ 11 level
        pic.set_irq(11, true);
        assert_eq!(pic.irr(Master), 1 << 2);
        pic.set_irq(11, false);
        // The master latched the cascade edge; the slave has nothing left.
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), Some(0x3F));
        assert_eq!(pic.isr(Slave), 0);
        assert_eq!(pic.isr(Master), 1 << 2, "master still needs its EOI");
    }

    #[test]
    fn auto_eoi() {
        let mut pic = Pic::new();
        pic.write(Master, 0, 0x11);
        pic.write(Master, 1, 0x08);
        pic.write(Master, 1, 0x04);
        pic.write(Master, 1, ICW4_8086 | ICW4_AEOI);
        pulse(&mut pic, 1);
        assert_eq!(pic.acknowledge(), Some(0x09));
        assert_eq!(pic.isr(Master), 0);
        pulse(&mut pic, 3);
        assert_eq!(pic.acknowledge(), Some(0x0B), "no EOI needed");
    }

    #[test]
    fn rotate_in_auto_eoi_mode() {
        let mut pic = Pic::new();
        pic.write(Master, 0, 0x13); // single, ICW4
        pic.write(Master, 1, 0x20);
        pic.write(Master, 1, ICW4_8086 | ICW4_AEOI); // no ICW3 in single mode
        pic.write(Master, 0, OCW2_ROTATE_AEOI_SET);
        pulse(&mut pic, 1);
        assert_eq!(pic.acknowledge(), Some(0x21));
        // IRQ 1 now lowest priority: IRQ 2 ranks first, IRQ 0 after IRQ 7.
        pulse(&mut pic, 0);
        pulse(&mut pic, 6);
        assert_eq!(pic.acknowledge(), Some(0x26));
        assert_eq!(pic.acknowledge(), Some(0x20));
    }

    #[test]
    fn specific_eoi() {
        let mut pic = linux_pic();
        pulse(&mut pic, 5);
        assert_eq!(pic.acknowledge(), Some(0x35));
        pulse(&mut pic, 3);
        assert_eq!(pic.acknowledge(), Some(0x33));
        assert_eq!(pic.isr(Master), 0b10_1000);
        pic.write(Master, 0, OCW2_SPECIFIC_EOI | 5);
        assert_eq!(pic.isr(Master), 0b00_1000);
    }

    #[test]
    fn rotate_on_nonspecific_eoi_and_set_priority() {
        let mut pic = linux_pic();
        pulse(&mut pic, 0);
        assert_eq!(pic.acknowledge(), Some(0x30));
        pic.write(Master, 0, OCW2_ROTATE_NONSPECIFIC_EOI);
        // IRQ 0 is now the lowest priority: IRQ 7 beats it.
        pulse(&mut pic, 0);
        pulse(&mut pic, 7);
        assert_eq!(pic.acknowledge(), Some(0x37));
        pic.write(Master, 0, OCW2_NONSPECIFIC_EOI);
        assert_eq!(pic.acknowledge(), Some(0x30));
        pic.write(Master, 0, OCW2_NONSPECIFIC_EOI);
        // Set priority: IRQ 4 lowest, so IRQ 5 highest.
        pic.write(Master, 0, OCW2_SET_PRIORITY | 4);
        pulse(&mut pic, 4);
        pulse(&mut pic, 5);
        pulse(&mut pic, 3);
        assert_eq!(pic.acknowledge(), Some(0x35));
        pic.write(Master, 0, OCW2_ROTATE_SPECIFIC_EOI | 7); // 7 lowest: 0 highest again
        pic.write(Master, 0, OCW2_SPECIFIC_EOI | 5);
        assert_eq!(pic.acknowledge(), Some(0x33));
    }

    #[test]
    fn poll_mode() {
        let mut pic = linux_pic();
        pulse(&mut pic, 6);
        pic.write(Master, 0, OCW3_SELECT | OCW3_P);
        assert_eq!(pic.read(Master, 1), 0x86);
        assert_eq!(pic.isr(Master), 1 << 6);
        assert!(!pic.interrupt_pending());
        // Poll with nothing pending returns 0, and the poll is one-shot.
        pic.write(Master, 0, OCW3_SELECT | OCW3_P);
        assert_eq!(pic.read(Master, 0), 0x00);
        assert_eq!(pic.read(Master, 1), 0x00, "IMR read again");
    }

    #[test]
    fn special_mask_mode() {
        let mut pic = linux_pic();
        pulse(&mut pic, 3);
        assert_eq!(pic.acknowledge(), Some(0x33));
        pulse(&mut pic, 5);
        assert!(!pic.interrupt_pending(), "blocked by IRQ 3 in service");
        // Mask IRQ 3 and enter special mask mode: lower priorities get through.
        pic.write(Master, 1, 1 << 3);
        pic.write(Master, 0, OCW3_SELECT | OCW3_ESMM | OCW3_SMM);
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), Some(0x35));
        pic.write(Master, 0, OCW3_SELECT | OCW3_ESMM);
        pic.write(Master, 0, OCW2_SPECIFIC_EOI | 5);
        pic.write(Master, 0, OCW2_SPECIFIC_EOI | 3);
        assert_eq!(pic.isr(Master), 0);
    }

    #[test]
    fn special_fully_nested_mode() {
        let mut pic = Pic::new();
        pic.write(Master, 0, 0x11);
        pic.write(Master, 1, 0x30);
        pic.write(Master, 1, 0x04);
        pic.write(Master, 1, ICW4_8086 | ICW4_SFNM);
        pic.write(Slave, 0, 0x11);
        pic.write(Slave, 1, 0x38);
        pic.write(Slave, 1, 0x02);
        pic.write(Slave, 1, ICW4_8086);
        pulse(&mut pic, 12);
        assert_eq!(pic.acknowledge(), Some(0x3C));
        // A higher-priority slave request nests although IR2 is in service on the master.
        pulse(&mut pic, 9);
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), Some(0x39));
    }

    #[test]
    fn reinit_clears_state_and_reads_irr_by_default() {
        let mut pic = linux_pic();
        pulse(&mut pic, 1);
        pic.acknowledge();
        pic.write(Master, 1, 0x55);
        pic.write(Master, 0, 0x11);
        assert_eq!(pic.isr(Master), 0);
        assert_eq!(pic.imr(Master), 0);
        pic.write(Master, 1, 0x50);
        pic.write(Master, 1, 0x04);
        pic.write(Master, 1, 0x01);
        pulse(&mut pic, 0);
        assert_eq!(pic.acknowledge(), Some(0x50));
    }

    #[test]
    fn state_round_trip() {
        let mut pic = linux_pic();
        pulse(&mut pic, 3);
        let restored = Pic::from_state(&pic.state());
        assert!(restored.interrupt_pending());
        assert_eq!(restored.state(), pic.state());
    }
}
