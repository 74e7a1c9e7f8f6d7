//! The Cranelift side of the JIT: the host ISA, the module that holds translated blocks
//! ([`Backend`], dropped whole when full: a JIT module cannot free single functions), the
//! permanent entry trampoline ([`Entry`]: Rust cannot call the blocks' tail calling
//! convention), the helper thunks of each module ([`Helpers`]), and [`Backend::compile`],
//! which turns a [`Job`] into host code. A job is a copy of what translation needs from a
//! block, so it can be compiled on another thread.

use crate::context::BlockCtx;
use crate::perf_map;
use crate::translate::{indirect_exit, Chain, ChainPlaceholders, Translator};
use crane86_interp::block::{ChainSite, BLOCK_LINKS};
use crane86_x86::cpuid::CpuModel;
use crane86_x86::flags::CcOp;
use cranelift_codegen::ir::{
    self, types, AbiParam, InstBuilder, MemFlagsData, Signature, Type, UserFuncName,
};
use cranelift_codegen::isa::{CallConv, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, FuncId, Module};
use iced_x86::Instruction;
use std::ffi::c_void;
use std::mem::offset_of;
use std::time::{Duration, Instant};

/// What translating one block needs (plain data, `Send`).
pub struct Job {
    pub insns: Vec<Instruction>,
    /// The block's own instructions: the first `own_len` of `insns`. The rest are the
    /// blocks after it that a translation may go on into (see `superblock` in the
    /// compiler); the compile thread's first translation of a job leaves them out, its
    /// re-optimization takes them in (see `worker`).
    pub own_len: usize,
    /// Code size (16, 32, 64).
    pub bits: u32,
    /// The block's RIP and physical address (names in the perf map).
    pub rip: u64,
    pub paddr: u64,
    /// Address of the [`Block`] the code is compiled for, when it has links (a cached
    /// block): the code's exit reads its link cells (`Block::links`) to enter a successor
    /// itself, and the code stores the address in `BlockCtx::block` where Rust reads it
    /// (before a helper call and when it returns). `None`: the code always returns at its
    /// end.
    ///
    /// [`Block`]: crane86_interp::block::Block
    pub linked_block: Option<usize>,
    /// Count TLB hits and chained transitions in the code (see [`Compiler::native_counters`]
    /// in the compiler).
    ///
    /// [`Compiler::native_counters`]: crate::compiler::Compiler::native_counters
    pub counters: bool,
    /// The lazy-flags op in `CpuState` when the block became hot (`LazyFlags::op`, the
    /// record the block starts with): where the block reads flags it did not set, the code
    /// evaluates them inline when the record has that op at run time (else a helper does).
    /// `None`: always the helper.
    pub entry_flags: Option<CcOp>,
    /// What the CPU model decides about instructions the translator inlines.
    pub features: ModelFeatures,
}

/// What the CPU model decides about instructions the translator inlines: encodings whose
/// meaning depends on a CPUID feature (the interpreter asks the model each time).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelFeatures {
    /// BMI1: TZCNT counts trailing zeros (without it, F3 0F BC is BSF).
    pub tzcnt: bool,
    /// ABM: LZCNT counts leading zeros (without it, F3 0F BD is BSR).
    pub lzcnt: bool,
}

impl ModelFeatures {
    pub fn of(model: &CpuModel) -> ModelFeatures {
        use crane86_x86::cpuid::{ebx7, ext1};
        ModelFeatures {
            tzcnt: model.ebx7 & ebx7::BMI1 != 0,
            lzcnt: model.ext_ecx & ext1::ECX_ABM != 0,
        }
    }
}

/// How much work Cranelift spends on a translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effort {
    /// `opt_level=speed`: the e-graph pass (constant folding, value numbering, redundant
    /// load removal) runs. The default.
    Optimized,
    /// `opt_level=none`: no e-graph pass. On the Linux corpus a third less compile time per
    /// block, for slower code: for every block, the boot took 10% longer. What the compile
    /// thread uses while a backlog waits (see `worker::QUICK_BACKLOG`).
    Quick,
}

impl Effort {
    /// The effort every translation uses when `CRANE86_JIT_EFFORT` is `optimized` or
    /// `quick` (to test or measure one kind of code); `None` when unset. Another value is
    /// reported once and ignored.
    pub fn forced() -> Option<Effort> {
        static FORCED: std::sync::OnceLock<Option<Effort>> = std::sync::OnceLock::new();
        *FORCED.get_or_init(|| match std::env::var("CRANE86_JIT_EFFORT").as_deref() {
            Ok("optimized") => Some(Effort::Optimized),
            Ok("quick") => Some(Effort::Quick),
            Ok(other) => {
                tracing::warn!(
                    value = other,
                    "CRANE86_JIT_EFFORT must be `optimized` or `quick`; ignored"
                );
                None
            }
            Err(_) => None,
        })
    }
}

/// A translated block.
pub struct Compiled {
    /// The entry of the code (in the tail calling convention; see [`block_signature`]).
    pub code: usize,
    /// Guest instructions translated (a prefix of the job's: see [`Backend::compile_prefix`]).
    pub insns: u32,
    pub inlined: u32,
    /// Host code bytes.
    pub bytes: u32,
    pub time: Duration,
    pub effort: Effort,
    /// Where the code's direct-successor entries hold their patchable immediates, by link
    /// slot (none where the module's code cannot be patched).
    pub chain_sites: [ChainSite; BLOCK_LINKS],
    /// The module's code may be patched (see [`crate::code_memory::configure`]).
    pub patchable: bool,
}

fn host_isa() -> OwnedTargetIsa {
    host_isa_at(Effort::Optimized)
}

/// The host ISA for translations made with `effort`; the flags differ only in
/// `opt_level`, so code of both kinds runs in one module.
fn host_isa_at(effort: Effort) -> OwnedTargetIsa {
    let mut flags = settings::builder();
    // Measured on the Linux workload: "none" for every block compiles 20-33% faster but the
    // run takes 5-10% longer overall (see `Effort`); the single-pass register allocator is
    // worse still (+19%).
    let opt = match effort {
        Effort::Optimized => "speed",
        Effort::Quick => "none",
    };
    flags.set("opt_level", opt).expect("opt_level");
    flags.set("is_pic", "false").expect("is_pic");
    // Cranelift's x86-64 tail calls (blocks entering their successors) need frame pointers.
    flags
        .set("preserve_frame_pointers", "true")
        .expect("preserve_frame_pointers");
    // The pinned register (r15 on x86-64, x21 on AArch64) holds the guest's `CpuState`
    // pointer while native code runs: blocks neither load it nor save and restore one more
    // callee-saved register. The entry trampoline sets it and restores the caller's value.
    flags
        .set("enable_pinned_reg", "true")
        .expect("enable_pinned_reg");
    // The IR is generated, not hand-written: skip the verifier (it showed up in profiles).
    flags
        .set("enable_verifier", "false")
        .expect("enable_verifier");
    let isa = cranelift_native::builder()
        .unwrap_or_else(|e| panic!("crane86 jit: Cranelift has no backend for this host ({e})"));
    isa.finish(settings::Flags::new(flags))
        .expect("crane86 jit: host ISA flags")
}

/// The Rust helpers native code calls, each entered through a thunk of the translation
/// module in Cranelift's `preserve_all` convention: the thunk saves every register the
/// helper (host C convention) may clobber, calls it, and leaves its result in
/// `BlockCtx::ret`. So a call clobbers nothing, and guest values stay in host registers
/// across the slow paths of inline code instead of being spilled or kept in the
/// callee-saved registers that every block's prologue would then have to save. A thunk
/// costs its saves only when it runs (slow paths, helper-run instructions).
#[derive(Clone, Copy, Debug)]
pub struct Helpers {
    /// `(ctx, ctx, index)`: [`crate::context::step_helper`].
    pub step: usize,
    /// `(ctx, state, cc)`: [`crate::translate::cond_helper`].
    pub cond: usize,
    /// `(ctx, state)`: [`crate::translate::arith_flags_helper`].
    pub flags: usize,
    /// Not a thunk: the shared exit of quick translations whose RIP is known only at run
    /// time (see [`crate::translate::indirect_exit`]), without and with native counters.
    pub indirect_exit: [usize; 2],
}

/// The signature of a helper thunk: `(ctx, helper arguments...)`, no results.
pub fn thunk_signature(ptr: Type, args: &[Type]) -> Signature {
    let mut sig = Signature::new(CallConv::PreserveAll);
    sig.params.push(AbiParam::new(ptr));
    sig.params.extend(args.iter().map(|&t| AbiParam::new(t)));
    sig
}

/// Define the thunk of `helper` (which takes `args` and returns a `ret`) in `module`.
fn define_thunk(
    module: &mut JITModule,
    helper: usize,
    args: &[Type],
    ret: Type,
) -> Result<(FuncId, u32), String> {
    let ptr = module.target_config().pointer_type();
    let mut helper_sig = Signature::new(module.target_config().default_call_conv);
    helper_sig
        .params
        .extend(args.iter().map(|&t| AbiParam::new(t)));
    helper_sig.returns.push(AbiParam::new(ret));
    define_small(module, thunk_signature(ptr, args), |b, params| {
        let sig = b.import_signature(helper_sig);
        let f = b.ins().iconst(ptr, helper as i64);
        let call = b.ins().call_indirect(sig, f, &params[1..]);
        let r = b.inst_results(call)[0];
        let r = if ret == types::I64 {
            r
        } else {
            b.ins().uextend(types::I64, r)
        };
        b.ins().store(
            MemFlagsData::trusted(),
            r,
            params[0],
            offset_of!(BlockCtx, ret) as i32,
        );
        b.ins().return_(&[]);
    })
}

/// Define a one-block function of signature `sig` in `module`, whose IR `body` emits from
/// the function's parameters (its return included).
fn define_small(
    module: &mut JITModule,
    sig: Signature,
    body: impl FnOnce(&mut FunctionBuilder, &[ir::Value]),
) -> Result<(FuncId, u32), String> {
    define_built(module, sig, |b| {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let params = b.block_params(entry).to_vec();
        body(b, &params);
    })
}

/// Define a function of signature `sig` in `module`, whose IR `build` emits (its blocks
/// included). Returns it with its code size.
fn define_built(
    module: &mut JITModule,
    sig: Signature,
    build: impl FnOnce(&mut FunctionBuilder),
) -> Result<(FuncId, u32), String> {
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        build(&mut b);
        b.finalize(module.target_config());
    }
    let id = define(module, &mut ctx)?;
    let size = ctx.compiled_code().map_or(0, |c| c.code_info().total_size);
    module.clear_context(&mut ctx);
    Ok((id, size))
}

/// A translation module with its helper thunks defined and finalized, and whether its
/// code may be patched (see [`crate::code_memory::configure`]).
fn new_translation_module() -> (JITModule, Helpers, bool) {
    let (mut module, patchable) = new_module(true);
    let ptr = module.target_config().pointer_type();
    // (helper, its arguments, its result), in the order of `Helpers`' fields.
    let thunks: [(usize, &[Type], Type); 3] = [
        (
            crate::context::step_helper as *const () as usize,
            &[ptr, types::I32],
            types::I32,
        ),
        (
            crate::translate::cond_helper as *const () as usize,
            &[ptr, types::I32],
            types::I32,
        ),
        (
            crate::translate::arith_flags_helper as *const () as usize,
            &[ptr],
            types::I64,
        ),
    ];
    let built = (|| {
        let mut ids = Vec::new();
        for (helper, args, ret) in thunks {
            ids.push(define_thunk(&mut module, helper, args, ret)?);
        }
        for counting in [false, true] {
            ids.push(define_built(
                &mut module,
                indirect_exit::signature(ptr),
                |b| indirect_exit::build(b, ptr, counting),
            )?);
        }
        module.finalize_definitions().map_err(|e| e.to_string())?;
        Ok::<_, String>(ids)
    })();
    let ids = built.unwrap_or_else(|e| panic!("crane86 jit: the helper thunks failed: {e}"));
    if perf_map::enabled() {
        let names = [
            "step_thunk",
            "cond_thunk",
            "flags_thunk",
            "indirect_exit",
            "indirect_exit_counting",
        ];
        for (&(id, size), name) in ids.iter().zip(names) {
            perf_map::record_named(module.get_finalized_function(id), size, name);
        }
    }
    let [step, cond, flags, exit, counted_exit] =
        [0, 1, 2, 3, 4].map(|k| module.get_finalized_function(ids[k].0) as usize);
    (
        module,
        Helpers {
            step,
            cond,
            flags,
            indirect_exit: [exit, counted_exit],
        },
        patchable,
    )
}

/// A module; `for_blocks`: with the code memory of [`crate::code_memory`] (and whether
/// that code may be patched).
fn new_module(for_blocks: bool) -> (JITModule, bool) {
    let mut builder = JITBuilder::with_isa(host_isa(), default_libcall_names());
    let patchable = for_blocks && crate::code_memory::configure(&mut builder);
    (JITModule::new(builder), patchable)
}

/// Declare and compile the function in `ctx` (errors as text).
fn define(module: &mut JITModule, ctx: &mut Context) -> Result<FuncId, String> {
    let id = module
        .declare_anonymous_function(&ctx.func.signature)
        .map_err(|e| e.to_string())?;
    module
        .define_function(id, ctx)
        .map_err(|e| format!("{e:?}"))?;
    Ok(id)
}

/// [`define`] with another ISA than the module's (one of the same flags but `opt_level`):
/// what `JITModule::define_function` does, compiling with `isa`.
fn define_with_isa(
    module: &mut JITModule,
    ctx: &mut Context,
    isa: &dyn cranelift_codegen::isa::TargetIsa,
) -> Result<FuncId, String> {
    let id = module
        .declare_anonymous_function(&ctx.func.signature)
        .map_err(|e| e.to_string())?;
    let mut plane = cranelift_codegen::control::ControlPlane::default();
    ctx.compile(isa, &mut plane)
        .map_err(|e| format!("{:?}", e.inner))?;
    let code = ctx.compiled_code().expect("compiled just now");
    let align = code.buffer.alignment as u64;
    let relocs: Vec<cranelift_module::ModuleReloc> = code
        .buffer
        .relocs()
        .iter()
        .map(|r| cranelift_module::ModuleReloc::from_mach_reloc(r, &ctx.func, id))
        .collect();
    module
        .define_function_bytes(id, align, code.code_buffer(), &relocs)
        .map_err(|e| format!("{e:?}"))?;
    Ok(id)
}

/// The signature of every native block: `(ctx)`, tail calling convention, so that a block can
/// end by tail-calling its successor (`return_call_indirect`) with a constant stack.
pub fn block_signature(ptr: Type) -> Signature {
    let mut sig = Signature::new(CallConv::Tail);
    sig.params.push(AbiParam::new(ptr));
    sig
}

/// Calls native block `code` with `ctx`, from Rust.
pub type EnterFn = unsafe extern "C" fn(ctx: *mut c_void, code: *const u8);

/// A module holding only the entry trampoline. It lives as long as the JIT (translation
/// modules come and go; the trampoline is the same for all).
pub struct Entry {
    module: Option<JITModule>,
    pub enter: EnterFn,
}

impl Entry {
    pub fn new() -> Entry {
        let (mut module, _) = new_module(false);
        let ptr = module.target_config().pointer_type();
        let mut sig = Signature::new(module.target_config().default_call_conv);
        sig.params.push(AbiParam::new(ptr));
        sig.params.push(AbiParam::new(ptr));
        let built = define_small(&mut module, sig, |b, params| {
            let (block_ctx, code) = (params[0], params[1]);
            let sig = b.import_signature(block_signature(ptr));
            let callers = b.ins().get_pinned_reg(ptr);
            let state = b.ins().load(
                ptr,
                MemFlagsData::trusted(),
                block_ctx,
                offset_of!(BlockCtx, state) as i32,
            );
            b.ins().set_pinned_reg(state);
            b.ins().call_indirect(sig, code, &[block_ctx]);
            b.ins().set_pinned_reg(callers);
            b.ins().return_(&[]);
        })
        .and_then(|(id, _)| {
            module
                .finalize_definitions()
                .map(|()| id)
                .map_err(|e| e.to_string())
        });
        let id = built.unwrap_or_else(|e| panic!("crane86 jit: the entry trampoline failed: {e}"));
        let code = module.get_finalized_function(id);
        // SAFETY: `code` is the function just defined with the `EnterFn` signature in the
        // host's default calling convention.
        let enter = unsafe { std::mem::transmute::<*const u8, EnterFn>(code) };
        Entry {
            module: Some(module),
            enter,
        }
    }
}

impl Default for Entry {
    fn default() -> Self {
        Entry::new()
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: the trampoline's owner (the compiler) is going away; nothing calls
            // `enter` after this.
            unsafe { m.free_memory() };
        }
    }
}

/// The translation module and Cranelift's reusable contexts.
pub struct Backend {
    module: Option<JITModule>,
    /// The thunks of `module`.
    helpers: Helpers,
    ctx: Context,
    builder_ctx: FunctionBuilderContext,
    /// The ISA of [`Effort::Quick`] translations (the module's own is the optimizing one).
    quick_isa: OwnedTargetIsa,
    /// The module's code may be patched: direct successors are entered through patchable
    /// immediates ([`Compiled::chain_sites`]).
    patchable: bool,
    /// The state of the generator the placeholders of those immediates come from
    /// (xorshift64*, seeded from the clock: guest code cannot predict them).
    random: u64,
}

impl Default for Backend {
    fn default() -> Self {
        let (module, helpers, patchable) = new_translation_module();
        let ctx = module.make_context();
        Backend {
            module: Some(module),
            helpers,
            patchable,
            random: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x2545_F491, |d| d.as_nanos() as u64)
                | 1,
            ctx,
            builder_ctx: FunctionBuilderContext::new(),
            quick_isa: host_isa_at(Effort::Quick),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: the owner drops the backend only when no code of it can run any more
            // (the JIT and its block cache are going away, or the cache was cleared first).
            unsafe { m.free_memory() };
        }
    }
}

impl Backend {
    /// Free every translation and start an empty module.
    ///
    /// # Safety
    /// No code of this module may run after this: every block pointing at it must have been
    /// dropped or have had its code removed.
    pub unsafe fn reset(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: the caller's guarantee.
            unsafe { m.free_memory() };
        }
        let (module, helpers, patchable) = new_translation_module();
        self.module = Some(module);
        self.helpers = helpers;
        self.patchable = patchable;
    }

    /// Translate `job`. A panic inside Cranelift (a translator bug, which guest code may
    /// trigger) is caught and reported as a failed translation: the block stays
    /// interpreted.
    pub fn compile(&mut self, job: &Job, effort: Effort) -> Result<Compiled, String> {
        self.compile_prefix(job, effort, job.insns.len())
    }

    /// [`Self::compile`] for the first `len` of the job's instructions only (the block's
    /// own, [`Job::own_len`], say).
    pub fn compile_prefix(
        &mut self,
        job: &Job,
        effort: Effort,
        len: usize,
    ) -> Result<Compiled, String> {
        let insns = &job.insns[..len.min(job.insns.len())];
        let effort = Effort::forced().unwrap_or(effort);
        if crate::corpus::enabled() {
            crate::corpus::record(job);
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.compile_inner(job, insns, effort)
        })) {
            Ok(result) => result,
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                // The contexts may be half-used: start them afresh.
                if let Some(m) = self.module.as_mut() {
                    self.ctx = m.make_context();
                }
                self.builder_ctx = FunctionBuilderContext::new();
                Err(format!(
                    "Cranelift panicked on the block at {:#x}: {why}",
                    job.rip
                ))
            }
        }
    }

    fn compile_inner(
        &mut self,
        job: &Job,
        insns: &[Instruction],
        effort: Effort,
    ) -> Result<Compiled, String> {
        let start = Instant::now();
        let Some(module) = self.module.as_mut() else {
            return Err("no translation module".to_string());
        };
        let ptr = module.target_config().pointer_type();
        self.ctx.func.signature = block_signature(ptr);
        self.ctx.func.name = UserFuncName::user(0, 0);
        let frontend = module.target_config();
        let patch_chains = self.patchable && job.linked_block.is_some();
        let placeholders = if patch_chains {
            let random = &mut self.random;
            ChainPlaceholders::pick(insns, || {
                *random ^= *random >> 12;
                *random ^= *random << 25;
                *random ^= *random >> 27;
                random.wrapping_mul(0x2545_F491_4F6C_DD1D)
            })
        } else {
            ChainPlaceholders::default()
        };
        let inlined = {
            let mut b = FunctionBuilder::new(&mut self.ctx.func, &mut self.builder_ctx);
            let mut t = Translator::new(
                &mut b,
                ptr,
                self.helpers,
                job.counters,
                job.entry_flags,
                job.features,
            );
            let chain = job.linked_block.map(|block| Chain {
                block,
                rip: job.rip,
                paddr: job.paddr,
            });
            t.shared_indirect_exit = effort == Effort::Quick;
            t.patch_chains = patch_chains;
            t.chain_placeholders = placeholders;
            t.block(insns, job.bits, chain.as_ref());
            let n = t.inlined;
            b.finalize(frontend);
            n
        };
        let dump = dump_requested(job.rip);
        if dump {
            eprintln!(
                "jit dump: Cranelift IR of the block at {:#x}:\n{}",
                job.rip,
                self.ctx.func.display()
            );
        }
        self.ctx.set_disasm(dump);
        let result = match effort {
            Effort::Optimized => define(module, &mut self.ctx),
            Effort::Quick => define_with_isa(module, &mut self.ctx, &*self.quick_isa),
        };
        let size = self
            .ctx
            .compiled_code()
            .map_or(0, |c| c.code_info().total_size);
        if dump {
            let mut text = String::new();
            let mut f = iced_x86::NasmFormatter::new();
            for i in insns {
                iced_x86::Formatter::format(&mut f, i, &mut text);
                text.push('\n');
            }
            let host = self.ctx.compiled_code().and_then(|c| c.vcode.clone());
            eprintln!(
                "jit dump: block at {:#x} ({} bytes of host code)\n{text}{}",
                job.rip,
                size,
                host.unwrap_or_default()
            );
        }
        module.clear_context(&mut self.ctx);
        let id = result?;
        module.finalize_definitions().map_err(|e| e.to_string())?;
        let code = module.get_finalized_function(id);
        let chain_sites = if patch_chains {
            // SAFETY: the `size` bytes of host code just finalized, alive until the module
            // is dropped (not before this returns).
            let bytes = unsafe { std::slice::from_raw_parts(code, size as usize) };
            placeholders.sites(bytes)
        } else {
            [ChainSite::default(); BLOCK_LINKS]
        };
        if perf_map::enabled() {
            perf_map::record(code, size, job.rip, job.paddr);
        }
        if dump {
            // SAFETY: `code` is the start of the `size` bytes of host code just finalized
            // (readable and alive until the module is dropped, which cannot happen here).
            let bytes = unsafe { std::slice::from_raw_parts(code, size as usize) };
            eprintln!(
                "jit dump: host code of the block at {:#x}, as placed:\n{}",
                job.rip,
                disassemble(bytes, code as u64)
            );
        }
        Ok(Compiled {
            code: code as usize,
            insns: insns.len() as u32,
            inlined,
            bytes: size,
            time: start.elapsed(),
            effort,
            chain_sites,
            patchable: self.patchable,
        })
    }
}

/// x86-64 host code `bytes` at address `at`, one instruction per line with its address
/// (what `perf script` IPs point at). Other hosts get the bytes in hex.
fn disassemble(bytes: &[u8], at: u64) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    if !cfg!(target_arch = "x86_64") {
        for chunk in bytes.chunks(16) {
            let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
            let _ = writeln!(text, "{}", hex.join(" "));
        }
        return text;
    }
    let mut decoder = iced_x86::Decoder::with_ip(64, bytes, at, iced_x86::DecoderOptions::NONE);
    let mut f = iced_x86::NasmFormatter::new();
    for i in &mut decoder {
        let mut line = String::new();
        iced_x86::Formatter::format(&mut f, &i, &mut line);
        let _ = writeln!(text, "{:x}: {line}", i.ip());
    }
    text
}

/// `CRANE86_JIT_DUMP=<hex RIP>[,<hex RIP>...]`: print the Cranelift IR, the guest
/// instructions and Cranelift's host code of the blocks starting there when they are translated, then the code as placed,
/// disassembled with its addresses.
fn dump_requested(rip: u64) -> bool {
    static RIPS: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
    RIPS.get_or_init(|| {
        std::env::var("CRANE86_JIT_DUMP")
            .unwrap_or_default()
            .split(',')
            .filter_map(|v| u64::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok())
            .collect()
    })
    .contains(&rip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_features_follow_the_cpuid_bits() {
        use crane86_x86::cpuid::{ebx7, ext1};
        let model = CpuModel::default();
        assert_eq!(
            ModelFeatures::of(&model),
            ModelFeatures {
                tzcnt: true,
                lzcnt: true
            }
        );
        let mut old = model;
        old.ebx7 &= !ebx7::BMI1;
        old.ext_ecx &= !ext1::ECX_ABM;
        assert_eq!(ModelFeatures::of(&old), ModelFeatures::default());
    }
}
