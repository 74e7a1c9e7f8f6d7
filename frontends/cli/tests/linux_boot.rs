//! A real Linux guest end to end: the Debian bookworm kernel (the bzImage, through the Linux
//! boot protocol) with a busybox initramfs whose `/init` runs `tests/linux/workload.sh` and
//! then powers the machine off through ACPI. The guest image is fetched and cached by
//! `scripts/linux-guest.sh` (Debian packages via `apt-get download`; nothing binary is in the
//! repository), which this test runs itself, so `cargo test` works on a fresh machine with
//! apt. The test checks the exit status (0 after `poweroff -f`), every workload result against
//! values computed outside crane86, the CPU features and interrupt sources the kernel
//! reports, and that no instruction was left unimplemented. It runs on interp and jit, and
//! on kvm where the host has hardware virtualization.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// sha256 of `seq 1 100000` (one number per line), from GNU coreutils on the host.
const SEQ_SHA256: &str = "b2bc7d3f8b652d2ec96865b68ad8f80e22cca174abe1aed7889e242a747d590f";
/// sha256 of `seq 100000 -1 1`: what `sort -rn` of the file must produce.
const SORTED_DESC_SHA256: &str = "be33f4b44bc224c0caf0abb0be9ac87ec08da023c4b56b7459848eef46d57021";
/// Guest-instruction ceiling: a guest that hangs ends with status 124 instead of hanging CI.
const MAX_INSNS: &str = "80000000000";

/// Wall-clock ceiling of the kvm boot (hardware KVM boots in seconds).
const KVM_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Run `cmd`, killing it after `limit` (its output so far is kept).
fn output_within(mut cmd: Command, limit: std::time::Duration) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running crane86");
    let start = std::time::Instant::now();
    while child.try_wait().expect("waiting for crane86").is_none() {
        if start.elapsed() > limit {
            eprintln!("crane86 still running after {limit:?}: killed");
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    child.wait_with_output().expect("collecting crane86 output")
}

/// The workspace root (this crate lives in `frontends/cli`).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct GuestImage {
    kernel: PathBuf,
    initrd: PathBuf,
    /// The Debian package the kernel came from (`linux-image-<release>`).
    package: String,
}

/// Build (or reuse) the guest image with the workload initramfs.
fn guest_image() -> GuestImage {
    let root = workspace();
    let out = Command::new("bash")
        .arg(root.join("scripts/linux-guest.sh"))
        .arg("--init")
        .arg(root.join("tests/linux/workload.sh"))
        .current_dir(&root)
        .output()
        .expect("running scripts/linux-guest.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scripts/linux-guest.sh failed ({}): it needs apt-get and access to the Debian \
         package mirrors\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let vars: HashMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once('=')).collect();
    let path =
        |k: &str| PathBuf::from(vars.get(k).unwrap_or_else(|| panic!("no {k}= in {stdout}")));
    let kernel = path("KERNEL");
    let package = std::fs::read_to_string(kernel.with_file_name("vmlinuz.package"))
        .expect("vmlinuz.package next to the kernel")
        .trim()
        .to_string();
    GuestImage {
        kernel,
        initrd: path("WORKLOAD_INITRD"),
        package,
    }
}

/// The `RESULT key value` lines of the console log.
fn results(console: &str) -> HashMap<String, String> {
    console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("RESULT "))
        .map(|l| match l.split_once(' ') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

/// The console text between `RESULT <name>-begin` and `RESULT <name>-end`.
fn section<'a>(console: &'a str, name: &str) -> &'a str {
    let begin = format!("RESULT {name}-begin");
    let end = format!("RESULT {name}-end");
    let start = console.find(&begin).unwrap_or_else(|| panic!("no {begin}"));
    let stop = console[start..]
        .find(&end)
        .unwrap_or_else(|| panic!("no {end}"));
    &console[start + begin.len()..start + stop]
}

fn boot_and_check(engine: &str) {
    let image = guest_image();
    let console_path = std::env::temp_dir().join(format!(
        "crane86-linux-boot-{engine}-{}.log",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&console_path);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crane86"));
    cmd.args(["run", "--accel", engine, "-m", "256M", "--stats"])
        .arg("--kernel")
        .arg(&image.kernel)
        .arg("--initrd")
        .arg(&image.initrd)
        .args(["--append", "console=ttyS0"])
        .arg("--serial")
        .arg(format!("file:{}", console_path.display()));
    let out = if engine == "kvm" {
        // kvm cannot count instructions: a wall-clock limit instead of --max-insns.
        output_within(cmd, KVM_TIME_LIMIT)
    } else {
        cmd.args(["--max-insns", MAX_INSNS])
            .output()
            .expect("running crane86")
    };
    let console = std::fs::read_to_string(&console_path).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = {
        let lines: Vec<&str> = console.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    };
    eprintln!("{engine}: crane86 stderr:\n{stderr}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{engine}: crane86 exit status (0 = guest powered off)\nconsole tail:\n{tail}"
    );
    let r = results(&console);
    let get = |k: &str| {
        r.get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{engine}: no RESULT {k}\nconsole tail:\n{tail}"))
    };
    let release = image.package.trim_start_matches("linux-image-");
    assert_eq!(get("uname-r"), release, "{engine}: uname -r");
    assert_eq!(get("seq-lines"), "100000", "{engine}: wc -l of seq");
    assert_eq!(get("seq-sha256"), SEQ_SHA256, "{engine}: sha256sum of seq");
    assert_eq!(
        get("gzip-roundtrip-sha256"),
        SEQ_SHA256,
        "{engine}: gzip | gzip -d"
    );
    assert_eq!(
        get("sort-rn-sha256"),
        SORTED_DESC_SHA256,
        "{engine}: sort -rn"
    );
    assert_eq!(get("execs"), "100", "{engine}: fork/exec loop");
    get("done");

    let cpuinfo = section(&console, "cpuinfo");
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_else(|| panic!("{engine}: no flags line in /proc/cpuinfo:\n{cpuinfo}"));
    for f in [
        "fpu", "mmx", "fxsr", "sse", "sse2", "pni", "ssse3", "cx16", "sse4_1", "sse4_2", "popcnt",
        "xsave", "nx", "syscall", "rdtscp", "pat", "pge", "lm",
    ] {
        assert!(
            flags.split_whitespace().any(|w| w == f),
            "{engine}: /proc/cpuinfo lacks {f}: {flags}"
        );
    }
    let interrupts = section(&console, "interrupts");
    for source in ["IO-APIC", "ttyS0", "LOC"] {
        assert!(
            interrupts.contains(source),
            "{engine}: /proc/interrupts lacks {source}:\n{interrupts}"
        );
    }
    assert!(
        !stderr.contains("unimplemented instruction"),
        "{engine}: an instruction was left unimplemented:\n{stderr}"
    );
    if engine == "jit" {
        // The run means something for the JIT only if translated code ran.
        let runs: u64 = stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix("native block runs"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("jit: no \"native block runs\" in --stats:\n{stderr}"));
        assert!(runs > 1_000_000, "jit: only {runs} native block runs");
        // Quick translations (made during the boot's compile backlog) are compiled again,
        // optimized, once the compile thread is idle, and the workload runs that code.
        let stat = |name: &str| -> u64 {
            stderr
                .lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("jit: no \"{name}\" in --stats:\n{stderr}"))
        };
        let quick = stat("blocks translated quick (unoptimized)");
        let reoptimized = stat("blocks re-translated optimized");
        if std::env::var_os("CRANE86_JIT_EFFORT").is_none() && quick > 0 {
            assert!(
                reoptimized > 0,
                "jit: none of {quick} quick translations was re-optimized"
            );
        }
    }
    let _ = std::fs::remove_file(&console_path);
}

#[test]
fn linux_boots_and_runs_the_workload_on_interp() {
    boot_and_check("interp");
}

#[test]
fn linux_boots_and_runs_the_workload_on_jit() {
    boot_and_check("jit");
}

/// Where hardware virtualization exists. A software `/dev/kvm` (no vmx/svm, such as this
/// project's CI machines' kvm_pvm) runs unmodified guests about a thousand times slower, far
/// too slow for a Linux boot: the test says why it skips.
#[test]
fn linux_boots_and_runs_the_workload_on_kvm() {
    if let Err(why) = crane86_machine::engine::kvm_usable() {
        eprintln!("skipping the kvm Linux boot: the kvm engine cannot run here: {why}");
        return;
    }
    if !crane86_machine::engine::hardware_virtualization() {
        eprintln!(
            "skipping the kvm Linux boot: /dev/kvm works but the CPU has no vmx/svm flag \
             (a software KVM, too slow to boot Linux in a test)"
        );
        return;
    }
    boot_and_check("kvm");
}
