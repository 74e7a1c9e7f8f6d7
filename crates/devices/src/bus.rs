//! Port-I/O and MMIO range maps: devices see offsets within their range, never absolute
//! addresses (the Firecracker / cloud-hypervisor bus habit).
//!
//! [`RangeMap`] is the building block: an ordered list of non-overlapping `(base, len)` ranges,
//! each carrying a value, with checked arithmetic and binary-search lookup. It is generic in
//! what a range carries so that two ownership schemes share one implementation:
//!
//! * [`PioBus`] / [`MmioBus`] hold boxed trait objects ([`PioDevice`] / [`MmioDevice`]); a
//!   device added this way is reached only through the bus. This is for devices plugged in at
//!   run time (PCI functions, virtio).
//! * [`crate::pc::PcPlatform`] owns its legacy devices (PIC, PIT, RTC, UART, …) as concrete
//!   struct fields, because the machine also needs them for non-I/O calls (timer updates,
//!   interrupt acknowledge, serial input). Its port map is a `RangeMap` of small `Copy` ids that
//!   a `match` turns into the right field. No `Rc<RefCell<…>>`, no locks, and the platform
//!   stays `Send` so the machine may build it on one thread and run it on the vCPU thread.
//!
//! Unclaimed reads return all ones (an ISA bus with nothing driving the data lines); unclaimed
//! writes are dropped.

use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;

/// A device on the port-I/O bus. `offset` is relative to the base of the device's range,
/// `size` is 1, 2 or 4 bytes. Values are right-aligned; the bus masks reads to `size` bytes.
pub trait PioDevice {
    fn read(&mut self, offset: u16, size: u8) -> u32;
    fn write(&mut self, offset: u16, size: u8, value: u32);
}

/// A device on the MMIO bus. `offset` is relative to the base of the device's range, `size` is
/// 1, 2, 4 or 8 bytes. The bus masks reads to `size` bytes.
pub trait MmioDevice {
    fn read(&mut self, offset: u64, size: u8) -> u64;
    fn write(&mut self, offset: u64, size: u8, value: u64);
}

impl<T: PioDevice + ?Sized> PioDevice for Box<T> {
    fn read(&mut self, offset: u16, size: u8) -> u32 {
        (**self).read(offset, size)
    }
    fn write(&mut self, offset: u16, size: u8, value: u32) {
        (**self).write(offset, size, value)
    }
}

impl<T: MmioDevice + ?Sized> MmioDevice for Box<T> {
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        (**self).read(offset, size)
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        (**self).write(offset, size, value)
    }
}

/// Last valid port number.
pub const PIO_MAX_PORT: u64 = 0xFFFF;

/// All-ones value of a `size`-byte port read (1 → 0xFF, 2 → 0xFFFF, 4 or more → 0xFFFF_FFFF).
#[inline]
pub fn pio_ones(size: u8) -> u32 {
    if size >= 4 || size == 0 {
        u32::MAX
    } else {
        (1u32 << (u32::from(size) * 8)) - 1
    }
}

/// All-ones value of a `size`-byte MMIO read (8 or more → `u64::MAX`).
#[inline]
pub fn mmio_ones(size: u8) -> u64 {
    if size >= 8 || size == 0 {
        u64::MAX
    } else {
        (1u64 << (u64::from(size) * 8)) - 1
    }
}

/// A non-empty address range `base ..= base + len - 1` that does not wrap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BusRange {
    base: u64,
    len: u64,
}

impl BusRange {
    /// A range of `len` addresses from `base`. Fails for `len == 0` or when the range would
    /// wrap past `u64::MAX`.
    pub fn new(base: u64, len: u64) -> Result<BusRange, BusError> {
        if len == 0 {
            return Err(BusError::ZeroLength { base });
        }
        if base.checked_add(len - 1).is_none() {
            return Err(BusError::OutOfSpace {
                base,
                len,
                max: u64::MAX,
            });
        }
        Ok(BusRange { base, len })
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: a `BusRange` is never empty (here for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The last address inside the range (inclusive).
    pub fn last(&self) -> u64 {
        // Cannot overflow: checked in `new`.
        self.base + (self.len - 1)
    }

    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr - self.base < self.len
    }

    pub fn overlaps(&self, other: &BusRange) -> bool {
        self.base <= other.last() && other.base <= self.last()
    }
}

impl fmt::Display for BusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}..={:#x}]", self.base, self.last())
    }
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range at {base:#x} has zero length")]
    ZeroLength { base: u64 },
    #[error("bus range {base:#x}+{len:#x} runs past the last address of its space ({max:#x})")]
    OutOfSpace { base: u64, len: u64, max: u64 },
    #[error("bus range {new} overlaps the already registered range {existing}")]
    Overlap { new: BusRange, existing: BusRange },
}

/// An ordered map of non-overlapping ranges to values, looked up by address.
#[derive(Clone, Debug)]
pub struct RangeMap<T> {
    /// Sorted by base; no two ranges overlap.
    entries: Vec<(BusRange, T)>,
    /// Last valid address of the space (0xFFFF for ports, `u64::MAX` for memory).
    max_addr: u64,
}

impl<T> RangeMap<T> {
    /// An empty map over the address space `0 ..= max_addr`.
    pub fn new(max_addr: u64) -> RangeMap<T> {
        RangeMap {
            entries: Vec::new(),
            max_addr,
        }
    }

    /// Register `value` for `len` addresses from `base`. Rejects empty ranges, ranges past the
    /// end of the space, and ranges overlapping a registered one (the error names both).
    pub fn insert(&mut self, base: u64, len: u64, value: T) -> Result<BusRange, BusError> {
        let range = BusRange::new(base, len)?;
        if range.last() > self.max_addr {
            return Err(BusError::OutOfSpace {
                base,
                len,
                max: self.max_addr,
            });
        }
        let idx = self.entries.partition_point(|(r, _)| r.base < range.base);
        let neighbours = idx.checked_sub(1).into_iter().chain(std::iter::once(idx));
        for i in neighbours {
            if let Some((existing, _)) = self.entries.get(i) {
                if existing.overlaps(&range) {
                    return Err(BusError::Overlap {
                        new: range,
                        existing: *existing,
                    });
                }
            }
        }
        self.entries.insert(idx, (range, value));
        Ok(range)
    }

    /// Remove the range starting exactly at `base`.
    pub fn remove(&mut self, base: u64) -> Option<(BusRange, T)> {
        let idx = self
            .entries
            .binary_search_by_key(&base, |(r, _)| r.base)
            .ok()?;
        Some(self.entries.remove(idx))
    }

    fn index_of(&self, addr: u64) -> Option<usize> {
        let idx = self.entries.partition_point(|(r, _)| r.base <= addr);
        let i = idx.checked_sub(1)?;
        self.entries[i].0.contains(addr).then_some(i)
    }

    /// The range holding `addr`, the offset of `addr` in it, and its value.
    pub fn find(&self, addr: u64) -> Option<(BusRange, u64, &T)> {
        let i = self.index_of(addr)?;
        let (r, v) = &self.entries[i];
        Some((*r, addr - r.base, v))
    }

    /// Like [`RangeMap::find`], with mutable access to the value.
    pub fn find_mut(&mut self, addr: u64) -> Option<(BusRange, u64, &mut T)> {
        let i = self.index_of(addr)?;
        let (r, v) = &mut self.entries[i];
        Some((*r, addr - r.base, v))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&BusRange, &T)> {
        self.entries.iter().map(|(r, v)| (r, v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A port-I/O bus of boxed devices.
pub struct PioBus {
    map: RangeMap<Box<dyn PioDevice + Send>>,
}

impl Default for PioBus {
    fn default() -> Self {
        PioBus::new()
    }
}

impl fmt::Debug for PioBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.map.iter().map(|(r, _)| r))
            .finish()
    }
}

impl PioBus {
    pub fn new() -> PioBus {
        PioBus {
            map: RangeMap::new(PIO_MAX_PORT),
        }
    }

    /// Register `device` for ports `base .. base + len`.
    pub fn insert(
        &mut self,
        base: u16,
        len: u16,
        device: Box<dyn PioDevice + Send>,
    ) -> Result<BusRange, BusError> {
        self.map.insert(u64::from(base), u64::from(len), device)
    }

    /// Remove the device whose range starts at `base`.
    pub fn remove(&mut self, base: u16) -> Option<Box<dyn PioDevice + Send>> {
        self.map.remove(u64::from(base)).map(|(_, d)| d)
    }

    pub fn is_claimed(&self, port: u16) -> bool {
        self.map.find(u64::from(port)).is_some()
    }

    /// Read `size` bytes from `port`; `None` when no device claims the port. The device is
    /// chosen by the first port of the access.
    pub fn try_read(&mut self, port: u16, size: u8) -> Option<u32> {
        let (_, off, dev) = self.map.find_mut(u64::from(port))?;
        Some(dev.read(off as u16, size) & pio_ones(size))
    }

    /// Read `size` bytes from `port`; all ones when unclaimed.
    pub fn read(&mut self, port: u16, size: u8) -> u32 {
        self.try_read(port, size).unwrap_or_else(|| pio_ones(size))
    }

    /// Write `size` bytes to `port`. Returns false (and drops the write) when unclaimed.
    pub fn write(&mut self, port: u16, size: u8, value: u32) -> bool {
        match self.map.find_mut(u64::from(port)) {
            Some((_, off, dev)) => {
                dev.write(off as u16, size, value & pio_ones(size));
                true
            }
            None => false,
        }
    }

    pub fn ranges(&self) -> impl Iterator<Item = BusRange> + '_ {
        self.map.iter().map(|(r, _)| *r)
    }
}

/// An MMIO bus of boxed devices.
pub struct MmioBus {
    map: RangeMap<Box<dyn MmioDevice + Send>>,
}

impl Default for MmioBus {
    fn default() -> Self {
        MmioBus::new()
    }
}

impl fmt::Debug for MmioBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.map.iter().map(|(r, _)| r))
            .finish()
    }
}

impl MmioBus {
    pub fn new() -> MmioBus {
        MmioBus {
            map: RangeMap::new(u64::MAX),
        }
    }

    /// Register `device` for physical addresses `base .. base + len`.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Box<dyn MmioDevice + Send>,
    ) -> Result<BusRange, BusError> {
        self.map.insert(base, len, device)
    }

    pub fn remove(&mut self, base: u64) -> Option<Box<dyn MmioDevice + Send>> {
        self.map.remove(base).map(|(_, d)| d)
    }

    pub fn is_claimed(&self, paddr: u64) -> bool {
        self.map.find(paddr).is_some()
    }

    /// Read `size` bytes at `paddr`; `None` when unclaimed.
    pub fn try_read(&mut self, paddr: u64, size: u8) -> Option<u64> {
        let (_, off, dev) = self.map.find_mut(paddr)?;
        Some(dev.read(off, size) & mmio_ones(size))
    }

    /// Read `size` bytes at `paddr`; all ones when unclaimed.
    pub fn read(&mut self, paddr: u64, size: u8) -> u64 {
        self.try_read(paddr, size)
            .unwrap_or_else(|| mmio_ones(size))
    }

    /// Write `size` bytes at `paddr`. Returns false (and drops the write) when unclaimed.
    pub fn write(&mut self, paddr: u64, size: u8, value: u64) -> bool {
        match self.map.find_mut(paddr) {
            Some((_, off, dev)) => {
                dev.write(off, size, value & mmio_ones(size));
                true
            }
            None => false,
        }
    }

    pub fn ranges(&self) -> impl Iterator<Item = BusRange> + '_ {
        self.map.iter().map(|(r, _)| *r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// One access: ('r' or 'w', offset, size, value written).
    type Access = (char, u64, u8, u64);

    /// Records accesses and answers reads with `offset * 0x11 + size`.
    #[derive(Clone, Default)]
    struct Probe {
        log: Arc<Mutex<Vec<Access>>>,
    }

    impl PioDevice for Probe {
        fn read(&mut self, offset: u16, size: u8) -> u32 {
            self.log.lock().unwrap().push(('r', offset.into(), size, 0));
            u32::from(offset) * 0x11 + u32::from(size)
        }
        fn write(&mut self, offset: u16, size: u8, value: u32) {
            self.log
                .lock()
                .unwrap()
                .push(('w', offset.into(), size, value.into()));
        }
    }

    impl MmioDevice for Probe {
        fn read(&mut self, offset: u64, size: u8) -> u64 {
            self.log.lock().unwrap().push(('r', offset, size, 0));
            0xDEAD_BEEF_CAFE_F00D
        }
        fn write(&mut self, offset: u64, size: u8, value: u64) {
            self.log.lock().unwrap().push(('w', offset, size, value));
        }
    }

    #[test]
    fn ones() {
        assert_eq!(pio_ones(1), 0xFF);
        assert_eq!(pio_ones(2), 0xFFFF);
        assert_eq!(pio_ones(4), 0xFFFF_FFFF);
        assert_eq!(mmio_ones(1), 0xFF);
        assert_eq!(mmio_ones(4), 0xFFFF_FFFF);
        assert_eq!(mmio_ones(8), u64::MAX);
    }

    #[test]
    fn range_basics() {
        let r = BusRange::new(0x3F8, 8).unwrap();
        assert_eq!(r.last(), 0x3FF);
        assert!(r.contains(0x3F8) && r.contains(0x3FF));
        assert!(!r.contains(0x3F7) && !r.contains(0x400));
        assert_eq!(r.to_string(), "[0x3f8..=0x3ff]");
        assert_eq!(BusRange::new(5, 0), Err(BusError::ZeroLength { base: 5 }));
        assert!(matches!(
            BusRange::new(u64::MAX, 2),
            Err(BusError::OutOfSpace { .. })
        ));
        // A range ending exactly at u64::MAX is fine.
        let top = BusRange::new(u64::MAX - 0xFFF, 0x1000).unwrap();
        assert_eq!(top.last(), u64::MAX);
        assert!(top.contains(u64::MAX));
    }

    #[test]
    fn overlap_rejected_with_both_ranges_named() {
        let mut m = RangeMap::new(PIO_MAX_PORT);
        m.insert(0x20, 2, 'a').unwrap();
        m.insert(0xA0, 2, 'b').unwrap();
        m.insert(0x40, 4, 'c').unwrap();
        let err = m.insert(0x21, 4, 'x').unwrap_err();
        assert_eq!(
            err,
            BusError::Overlap {
                new: BusRange::new(0x21, 4).unwrap(),
                existing: BusRange::new(0x20, 2).unwrap(),
            }
        );
        assert_eq!(
            err.to_string(),
            "bus range [0x21..=0x24] overlaps the already registered range [0x20..=0x21]"
        );
        // Overlap with the following range.
        let err = m.insert(0x3E, 3, 'x').unwrap_err();
        assert!(err.to_string().contains("[0x40..=0x43]"), "{err}");
        // Enclosing range.
        assert!(m.insert(0x00, 0x100, 'x').is_err());
        // Adjacent ranges are fine.
        m.insert(0x22, 2, 'd').unwrap();
        m.insert(0x1E, 2, 'e').unwrap();
        assert_eq!(m.len(), 5);
        let bases: Vec<u64> = m.iter().map(|(r, _)| r.base()).collect();
        assert_eq!(bases, vec![0x1E, 0x20, 0x22, 0x40, 0xA0]);
    }

    #[test]
    fn space_limit_is_checked() {
        let mut m = RangeMap::new(PIO_MAX_PORT);
        m.insert(0xFFFF, 1, ()).unwrap();
        let err = m.insert(0xFFF0, 0x20, ()).unwrap_err();
        assert_eq!(
            err,
            BusError::OutOfSpace {
                base: 0xFFF0,
                len: 0x20,
                max: 0xFFFF
            }
        );
        assert!(m.insert(0x10, 0, ()).is_err());
    }

    #[test]
    fn lookup_by_offset() {
        let mut m = RangeMap::new(u64::MAX);
        m.insert(0x1000, 0x100, 1).unwrap();
        m.insert(0x2000, 0x10, 2).unwrap();
        assert!(m.find(0xFFF).is_none());
        let (r, off, v) = m.find(0x10FF).unwrap();
        assert_eq!((r.base(), off, *v), (0x1000, 0xFF, 1));
        assert!(m.find(0x1100).is_none());
        let (_, off, v) = m.find_mut(0x2003).unwrap();
        *v = 7;
        assert_eq!(off, 3);
        assert_eq!(*m.find(0x2000).unwrap().2, 7);
        assert_eq!(m.remove(0x1000).map(|(_, v)| v), Some(1));
        assert!(m.remove(0x1000).is_none());
        assert!(m.find(0x1000).is_none());
    }

    #[test]
    fn pio_bus_dispatch_and_unclaimed() {
        let probe = Probe::default();
        let mut bus = PioBus::new();
        bus.insert(0x3F8, 8, Box::new(probe.clone())).unwrap();
        assert!(bus.is_claimed(0x3FF));
        assert!(!bus.is_claimed(0x400));
        assert_eq!(bus.read(0x3FA, 1), 2 * 0x11 + 1);
        assert_eq!(bus.read(0x2F8, 1), 0xFF);
        assert_eq!(bus.read(0x2F8, 2), 0xFFFF);
        assert_eq!(bus.read(0x2F8, 4), 0xFFFF_FFFF);
        assert_eq!(bus.try_read(0x2F8, 1), None);
        assert!(bus.write(0x3F9, 1, 0x1234));
        assert!(!bus.write(0x2F9, 1, 0x12));
        let log = probe.log.lock().unwrap().clone();
        // The write was masked to one byte and arrived at offset 1.
        assert_eq!(log, vec![('r', 2, 1, 0), ('w', 1, 1, 0x34)]);
        assert!(bus.insert(0x3FC, 8, Box::new(Probe::default())).is_err());
        assert!(bus.remove(0x3F8).is_some());
        assert!(!bus.is_claimed(0x3F8));
    }

    #[test]
    fn mmio_bus_dispatch_and_unclaimed() {
        let probe = Probe::default();
        let mut bus = MmioBus::new();
        bus.insert(0xFEC0_0000, 0x1000, Box::new(probe.clone()))
            .unwrap();
        assert_eq!(bus.read(0xFEC0_0010, 4), 0xCAFE_F00D);
        assert_eq!(bus.read(0xFEC0_0010, 8), 0xDEAD_BEEF_CAFE_F00D);
        assert_eq!(bus.read(0xFEE0_0000, 4), 0xFFFF_FFFF);
        assert_eq!(bus.read(0xFEE0_0000, 8), u64::MAX);
        assert!(bus.write(0xFEC0_0FFF, 1, 0x1FF));
        assert!(!bus.write(0xFEC0_1000, 1, 0));
        let log = probe.log.lock().unwrap().clone();
        assert_eq!(log[2], ('w', 0xFFF, 1, 0xFF));
        assert_eq!(bus.ranges().count(), 1);
    }
}
