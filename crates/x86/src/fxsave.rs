//! The FXSAVE legacy region (SDM Vol. 1 Tables 10-2 and 10-3): encoding and decoding an
//! [`FpuState`] to and from the 512-byte image that FXSAVE/XSAVE store and that KVM's
//! `kvm_xsave` carries. `wide` selects the 64-bit layout (64-bit FIP/FDP) over the 32-bit one
//! (32-bit offsets with FCS/FDS). The x87 registers are stored in stack order (ST(0) first).

use crate::fpu::FpuState;
use crate::F80;

/// Offset of the XSAVE header's XSTATE_BV in an XSAVE image.
pub const XSTATE_BV_OFFSET: usize = 512;
/// Offset of the XSAVE header's XCOMP_BV.
pub const XCOMP_BV_OFFSET: usize = 520;

/// Copy `bytes` into `buf` at `at`.
pub fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Little-endian u16 at `at`.
pub fn get_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([buf[at], buf[at + 1]])
}

/// Little-endian u32 at `at`.
pub fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

/// Little-endian u64 at `at`.
pub fn get_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// Write the x87 part of the legacy region (bytes 0..24 and the registers at 32..160).
pub fn encode_x87(f: &FpuState, wide: bool, buf: &mut [u8]) {
    put(buf, 0, &f.fcw.to_le_bytes());
    put(buf, 2, &f.fsw.to_le_bytes());
    buf[4] = f.abridged_tags();
    buf[5] = 0;
    put(buf, 6, &f.fop.to_le_bytes());
    if wide {
        put(buf, 8, &f.fip.to_le_bytes());
        put(buf, 16, &f.fdp.to_le_bytes());
    } else {
        put(buf, 8, &(f.fip as u32).to_le_bytes());
        put(buf, 12, &f.fcs.to_le_bytes());
        put(buf, 14, &[0, 0]);
        put(buf, 16, &(f.fdp as u32).to_le_bytes());
        put(buf, 20, &f.fds.to_le_bytes());
        put(buf, 22, &[0, 0]);
    }
    for k in 0..8u8 {
        let at = 32 + 16 * usize::from(k);
        put(buf, at, &f.st(k).to_le_bytes());
        put(buf, at + 10, &[0; 6]);
    }
}

/// Load the x87 part of the legacy region.
pub fn decode_x87(f: &mut FpuState, wide: bool, buf: &[u8]) {
    f.fcw = get_u16(buf, 0);
    f.fsw = get_u16(buf, 2);
    f.fop = get_u16(buf, 6) & 0x7FF;
    if wide {
        f.fip = get_u64(buf, 8);
        f.fdp = get_u64(buf, 16);
    } else {
        f.fip = u64::from(get_u32(buf, 8));
        f.fcs = get_u16(buf, 12);
        f.fdp = u64::from(get_u32(buf, 16));
        f.fds = get_u16(buf, 20);
    }
    let top = f.top();
    for k in 0..8usize {
        let at = 32 + 16 * k;
        let signif = get_u64(buf, at);
        let sign_exp = get_u16(buf, at + 8);
        f.st[(usize::from(top) + k) & 7] = F80::new(sign_exp, signif);
    }
    f.set_abridged_tags(buf[4]);
    f.recompute_summary();
}

/// Write the first `xmms` XMM registers (bytes 160..).
pub fn encode_sse(f: &FpuState, xmms: usize, buf: &mut [u8]) {
    for (k, x) in f.xmm.iter().take(xmms).enumerate() {
        put(buf, 160 + 16 * k, &x.to_le_bytes());
    }
}

/// Load the first `xmms` XMM registers.
pub fn decode_sse(f: &mut FpuState, xmms: usize, buf: &[u8]) {
    for k in 0..xmms {
        let at = 160 + 16 * k;
        f.xmm[k] = u128::from_le_bytes(buf[at..at + 16].try_into().expect("16 bytes"));
    }
}

/// Write MXCSR and MXCSR_MASK (bytes 24..32).
pub fn encode_mxcsr(f: &FpuState, mxcsr_mask: u32, buf: &mut [u8]) {
    put(buf, 24, &f.mxcsr.to_le_bytes());
    put(buf, 28, &mxcsr_mask.to_le_bytes());
}
