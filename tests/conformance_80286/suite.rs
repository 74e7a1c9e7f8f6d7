//! The SingleStepTests 80286 suite on disk: where it lives, the test-file data model (parsed
//! with serde once per file), and the per-form metadata (`status`, `flags-mask`).

use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Environment variable that overrides the suite directory.
pub const DIR_ENV: &str = "CRANE86_SINGLESTEP_DIR";

/// The suite directory: `$CRANE86_SINGLESTEP_DIR`, else `../shared/conformance/singlestep-80286`
/// next to the workspace.
pub fn suite_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(DIR_ENV) {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/singlestep-80286")
}

/// The 16-bit register file of a test state. In `final`, only changed registers are present.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Regs {
    pub ax: Option<u16>,
    pub bx: Option<u16>,
    pub cx: Option<u16>,
    pub dx: Option<u16>,
    pub cs: Option<u16>,
    pub ss: Option<u16>,
    pub ds: Option<u16>,
    pub es: Option<u16>,
    pub sp: Option<u16>,
    pub bp: Option<u16>,
    pub si: Option<u16>,
    pub di: Option<u16>,
    pub ip: Option<u16>,
    pub flags: Option<u16>,
}

/// Register names in the order [`Regs::get`] indexes them.
pub const REG_NAMES: [&str; 14] = [
    "ax", "bx", "cx", "dx", "cs", "ss", "ds", "es", "sp", "bp", "si", "di", "ip", "flags",
];

/// Index of `ss` in [`REG_NAMES`].
pub const SS_INDEX: usize = 5;
/// Index of `sp` in [`REG_NAMES`].
pub const SP_INDEX: usize = 8;
/// Index of `flags` in [`REG_NAMES`].
pub const FLAGS_INDEX: usize = 13;

impl Regs {
    /// Register `k` of [`REG_NAMES`].
    pub fn get(&self, k: usize) -> Option<u16> {
        [
            self.ax, self.bx, self.cx, self.dx, self.cs, self.ss, self.ds, self.es, self.sp,
            self.bp, self.si, self.di, self.ip, self.flags,
        ][k]
    }

    /// Register `k` of a complete (initial) register file.
    pub fn require(&self, k: usize) -> Result<u16, String> {
        self.get(k)
            .ok_or_else(|| format!("initial state lacks register {}", REG_NAMES[k]))
    }
}

/// A CPU + memory state: registers and (24-bit physical address, byte) pairs.
#[derive(Clone, Debug, Deserialize)]
pub struct State {
    pub regs: Regs,
    pub ram: Vec<(u32, u8)>,
}

/// The exception an instruction raised on the hardware.
#[derive(Clone, Debug, Deserialize)]
pub struct ExceptionInfo {
    pub number: u8,
    /// Physical address where the pushed FLAGS word lies.
    pub flag_address: u32,
}

/// One hardware-recorded test.
#[derive(Clone, Debug, Deserialize)]
pub struct Test {
    pub idx: u32,
    pub name: String,
    pub bytes: Vec<u8>,
    pub initial: State,
    #[serde(rename = "final")]
    pub final_state: State,
    pub exception: Option<ExceptionInfo>,
    pub hash: String,
}

/// Read and parse one gzip JSON test file.
pub fn load_tests(path: &Path) -> Result<Vec<Test>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(std::io::BufReader::new(file))
        .read_to_end(&mut json)
        .map_err(|e| format!("decompressing {}: {e}", path.display()))?;
    serde_json::from_slice(&json).map_err(|e| format!("parsing {}: {e}", path.display()))
}

/// What metadata.json says about one opcode (or opcode + ModRM reg).
#[derive(Clone, Debug)]
pub struct FormInfo {
    pub status: String,
    /// AND both FLAGS values with this before comparing (clears undefined flags).
    pub flags_mask: u16,
}

/// The parsed metadata.json `opcodes` table.
pub struct Metadata {
    opcodes: serde_json::Map<String, serde_json::Value>,
}

impl Metadata {
    pub fn load(dir: &Path) -> Result<Metadata, String> {
        let path = dir.join("metadata.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let mut v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))?;
        match v.get_mut("opcodes").map(serde_json::Value::take) {
            Some(serde_json::Value::Object(opcodes)) => Ok(Metadata { opcodes }),
            _ => Err(format!("{} has no \"opcodes\" object", path.display())),
        }
    }

    /// Metadata of `opcode` (upper-case hex, e.g. "D3") with ModRM reg field `reg` when the
    /// opcode's entry is split by reg.
    pub fn form(&self, opcode: &str, reg: Option<u8>) -> Option<FormInfo> {
        let entry = self.opcodes.get(opcode)?;
        let entry = match entry.get("reg") {
            Some(by_reg) => by_reg.get(reg?.to_string())?,
            None => entry,
        };
        Some(FormInfo {
            status: entry.get("status")?.as_str()?.to_string(),
            flags_mask: entry
                .get("flags-mask")
                .and_then(serde_json::Value::as_u64)
                .map_or(0xFFFF, |m| m as u16),
        })
    }

    /// Whether `opcode`'s entry is split by ModRM reg.
    pub fn split_by_reg(&self, opcode: &str) -> bool {
        self.opcodes
            .get(opcode)
            .is_some_and(|e| e.get("reg").is_some())
    }
}

/// The test files of the suite (`*.json.gz`), sorted by form name.
pub fn test_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("listing {}: {e}", dir.display()))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(form) = name.strip_suffix(".json.gz") {
            files.push((form.to_string(), path.clone()));
        }
    }
    files.sort();
    Ok(files)
}
