//! Exceptions as values: every fallible guest operation returns `Result<_, Exception>` and
//! delivery happens in one place (the engine's exception-delivery code).

use thiserror::Error;

/// Exception and interrupt vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Vector {
    DivideError = 0,
    Debug = 1,
    Nmi = 2,
    Breakpoint = 3,
    Overflow = 4,
    BoundRange = 5,
    InvalidOpcode = 6,
    DeviceNotAvailable = 7,
    DoubleFault = 8,
    InvalidTss = 10,
    SegmentNotPresent = 11,
    StackFault = 12,
    GeneralProtection = 13,
    PageFault = 14,
    X87Fpu = 16,
    AlignmentCheck = 17,
    MachineCheck = 18,
    SimdFp = 19,
}

impl Vector {
    pub fn mnemonic(v: u8) -> &'static str {
        match v {
            0 => "#DE",
            1 => "#DB",
            2 => "NMI",
            3 => "#BP",
            4 => "#OF",
            5 => "#BR",
            6 => "#UD",
            7 => "#NM",
            8 => "#DF",
            10 => "#TS",
            11 => "#NP",
            12 => "#SS",
            13 => "#GP",
            14 => "#PF",
            16 => "#MF",
            17 => "#AC",
            18 => "#MC",
            19 => "#XM",
            _ => "INT",
        }
    }

    /// Contributory exceptions, for the double-fault rules (SDM Vol. 3 Table 6-5).
    pub fn is_contributory(v: u8) -> bool {
        matches!(v, 0 | 10 | 11 | 12 | 13)
    }
}

/// A fault or trap raised by an instruction. `#PF` has already written CR2 when raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("{} (vector {vector}){}", Vector::mnemonic(*vector), match error_code { Some(e) => format!(" error code {e:#x}"), None => String::new() })]
pub struct Exception {
    pub vector: u8,
    pub error_code: Option<u32>,
}

impl Exception {
    pub const fn new(vector: Vector) -> Exception {
        Exception {
            vector: vector as u8,
            error_code: None,
        }
    }
    pub const fn with_code(vector: Vector, code: u32) -> Exception {
        Exception {
            vector: vector as u8,
            error_code: Some(code),
        }
    }
    pub const fn de() -> Exception {
        Self::new(Vector::DivideError)
    }
    pub const fn ud() -> Exception {
        Self::new(Vector::InvalidOpcode)
    }
    pub const fn nm() -> Exception {
        Self::new(Vector::DeviceNotAvailable)
    }
    pub const fn gp(code: u32) -> Exception {
        Self::with_code(Vector::GeneralProtection, code)
    }
    pub const fn gp0() -> Exception {
        Self::gp(0)
    }
    pub const fn ss(code: u32) -> Exception {
        Self::with_code(Vector::StackFault, code)
    }
    pub const fn np(code: u32) -> Exception {
        Self::with_code(Vector::SegmentNotPresent, code)
    }
    pub const fn ts(code: u32) -> Exception {
        Self::with_code(Vector::InvalidTss, code)
    }
    pub const fn pf(code: u32) -> Exception {
        Self::with_code(Vector::PageFault, code)
    }
}

/// #PF error-code bits.
pub mod pf_err {
    pub const PRESENT: u32 = 1 << 0;
    pub const WRITE: u32 = 1 << 1;
    pub const USER: u32 = 1 << 2;
    pub const RSVD: u32 = 1 << 3;
    pub const FETCH: u32 = 1 << 4;
}
