//! Firmware images (`--bios FILE`): checked here, then handed to `PhysMem`, which maps the
//! image so that it ends at 4 GiB (the reset vector 0xFFFFFFF0 is its last 16 bytes) and
//! shadows its last 128 KiB below 1 MiB. The CPU starts at RESET: F000:FFF0 in real mode.

use crate::error::MachineError;

/// Largest firmware image (`PhysMem`'s limit).
pub const MAX_FIRMWARE: usize = 16 << 20;

/// Check that a firmware image can be mapped: a non-zero multiple of 64 KiB, at most 16 MiB.
pub fn check_image(name: &str, image: &[u8]) -> Result<(), MachineError> {
    if image.is_empty() || image.len() & 0xFFFF != 0 || image.len() > MAX_FIRMWARE {
        return Err(MachineError::BadFirmwareSize {
            name: name.to_string(),
            size: image.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_must_be_64k_multiples() {
        assert!(check_image("x", &vec![0; 0x2_0000]).is_ok());
        let e = check_image("bios.bin", &vec![0; 1000]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("bios.bin") && msg.contains("1000 bytes"),
            "{msg}"
        );
        assert!(check_image("x", &[]).is_err());
    }
}
