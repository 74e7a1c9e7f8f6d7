//! Where translated code lives: on x86-64 Linux one reserved region, readable, writable and
//! executable from the start, from which blocks are bump-allocated back to back.
//!
//! Cranelift's default provider maps fresh pages for every `finalize_definitions` and then
//! changes their protection. With a block per finalize that is a page (and an mmap, an
//! mprotect and a cross-CPU pipeline flush, which interrupts the vCPU thread) per 200-byte
//! block, and hot chains of blocks spread over thousands of pages. Here consecutive blocks
//! share cache lines and pages, and finalizing costs nothing: x86 keeps instruction fetch
//! coherent with stores, and a block becomes reachable only after the compile thread hands
//! its address over through a channel (a release/acquire pair), after the bytes were
//! written. Elsewhere (other architectures need explicit instruction-cache maintenance) the
//! default provider is used.

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod arena {
    use cranelift_jit::{BranchProtection, JITMemoryKind, JITMemoryProvider};
    use cranelift_module::ModuleResult;
    use std::io;

    /// Address space reserved per translation module (pages are committed as they are
    /// written; [`crate::compiler::MAX_MODULE_BYTES`] keeps a module well below it).
    pub const RESERVED: usize = 512 << 20;

    pub struct CodeArena {
        base: *mut u8,
        len: usize,
        used: usize,
    }

    // SAFETY: the arena is plain memory owned by one JIT module; the module moves between
    // threads only as a whole.
    unsafe impl Send for CodeArena {}

    impl CodeArena {
        pub fn new() -> io::Result<CodeArena> {
            // SAFETY: an anonymous private mapping at an address the kernel chooses; it is
            // unmapped only in `free_memory`.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    RESERVED,
                    libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            Ok(CodeArena {
                base: base.cast(),
                len: RESERVED,
                used: 0,
            })
        }
    }

    impl JITMemoryProvider for CodeArena {
        fn allocate(
            &mut self,
            size: usize,
            align: u64,
            _kind: JITMemoryKind,
        ) -> io::Result<*mut u8> {
            let align = align.max(1) as usize;
            let start = self.used.next_multiple_of(align);
            if self.base.is_null() || start + size > self.len {
                return Err(io::Error::other(format!(
                    "jit code region full ({} of {} bytes used, {size} more wanted)",
                    self.used, self.len
                )));
            }
            self.used = start + size;
            // SAFETY: `start + size` is within the mapping.
            Ok(unsafe { self.base.add(start) })
        }

        unsafe fn free_memory(&mut self) {
            if !self.base.is_null() {
                // SAFETY: the mapping made in `new`; the caller guarantees that no code in it
                // runs any more.
                unsafe { libc::munmap(self.base.cast(), self.len) };
                self.base = std::ptr::null_mut();
            }
        }

        fn finalize(&mut self, _branch_protection: BranchProtection) -> ModuleResult<()> {
            Ok(())
        }
    }
}

use cranelift_jit::JITBuilder;

/// Give `builder` the code memory described in the module doc. Whether the code stays
/// writable after finalizing (the arena): then the compiler may patch the immediates of
/// finished code (`ChainSite`) while none of it runs, with plain stores (x86 keeps
/// instruction fetch coherent with them).
pub fn configure(builder: &mut JITBuilder) -> bool {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    match arena::CodeArena::new() {
        Ok(a) => {
            builder.memory_provider(Box::new(a));
            return true;
        }
        Err(e) => tracing::warn!(
            error = %e,
            "jit: cannot reserve a code region; using Cranelift's page-per-finalize memory"
        ),
    }
    let _ = builder;
    false
}
