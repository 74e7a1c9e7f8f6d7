//! Guest physical memory and the softmmu: RAM and ROM in one memmap2 backing ([`phys`]), the
//! guest page-table walker ([`paging`]), the per-vCPU software TLB that maps guest-virtual
//! pages straight to host pointers ([`tlb`]), and the code-page bitmap that detects
//! self-modifying code.

pub mod paging;
pub mod phys;
pub mod tlb;

pub use paging::{walk, Access, PagingMode, Translation};
pub use phys::{MemoryError, PhysMem, PhysTarget};
pub use tlb::{SoftTlb, TlbEntry};

/// Guest page size (the TLB granule).
pub const PAGE_SIZE: u64 = 4096;
pub const PAGE_MASK: u64 = !(PAGE_SIZE - 1);
