//! The `crane86` binary end to end: help, argument errors, the demo's exit status and output,
//! a kernel that does not load.

use std::process::Command;

fn crane86() -> Command {
    Command::new(env!("CARGO_BIN_EXE_crane86"))
}

#[test]
fn help_describes_the_commands_and_flags() {
    let out = crane86().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("run") && text.contains("demo"), "{text}");
    let out = crane86().args(["run", "--help"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--kernel",
        "--initrd",
        "--append",
        "--memory",
        "--accel",
        "--serial",
        "--bios",
        "--stats",
        "--icount",
        "--switch-engine",
        "auto",
        "kvm",
    ] {
        assert!(text.contains(flag), "run --help lacks {flag}:\n{text}");
    }
}

#[test]
fn unknown_flag_fails() {
    let out = crane86().args(["demo", "--no-such-flag"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
}

#[test]
fn demo_exits_zero_and_prints_its_checks() {
    for engine in crane86_machine::EngineKind::available() {
        let out = crane86()
            .args([
                "demo",
                "--iterations",
                "2",
                "--stats",
                "--accel",
                engine.name(),
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{engine}: stdout:\n{stdout}\nstderr:\n{stderr}"
        );
        let expected = crane86_machine::demo::expected_lines(2);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines, expected, "{engine}");
        assert!(stderr.contains("retired instructions"), "{stderr}");
        if engine.counts_instructions() {
            assert!(stderr.contains("guest MIPS"), "{stderr}");
            assert!(stderr.contains("block cache hit rate"), "{stderr}");
        } else {
            assert!(stderr.contains("KVM_RUN calls"), "{stderr}");
            assert!(stderr.contains("port I/O exits"), "{stderr}");
        }
    }
}

#[test]
fn kernel_that_is_not_multiboot_fails_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("crane86-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("garbage.bin");
    std::fs::write(&path, vec![0x90u8; 9000]).unwrap();
    let out = crane86()
        .args(["run", "--serial", "none", "--kernel"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("not a Multiboot image (no header magic in the first 8192 bytes)"),
        "{stderr}"
    );
    assert!(stderr.contains("garbage.bin"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("crane86-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn run_exit_status_follows_debug_exit_and_serial_goes_to_a_file() {
    let dir = temp_dir("flat");
    // mov al, 'K'; out 0x3f8 via dx; mov al, 5; out 0xf4, al; hlt
    let code = [
        0xB0, b'K', 0x66, 0xBA, 0xF8, 0x03, 0xEE, 0xB0, 0x05, 0xE6, 0xF4, 0xF4,
    ];
    let kernel = dir.join("exit5.bin");
    std::fs::write(&kernel, code).unwrap();
    let serial = dir.join("serial.txt");
    let out = crane86()
        .args(["run", "--load-addr", "0x100000", "--icount", "--kernel"])
        .arg(&kernel)
        .arg("--serial")
        .arg(format!("file:{}", serial.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5 << 1 | 1), "{stderr}");
    assert_eq!(std::fs::read_to_string(&serial).unwrap(), "K");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn triple_fault_exits_with_status_2_and_the_cpu_state() {
    let dir = temp_dir("ud2");
    let kernel = dir.join("ud2.bin");
    std::fs::write(&kernel, [0x0F, 0x0B]).unwrap();
    for engine in crane86_machine::EngineKind::available() {
        let out = crane86()
            .args([
                "run",
                "--accel",
                engine.name(),
                "--serial",
                "none",
                "--load-addr",
                "0x100000",
                "--kernel",
            ])
            .arg(&kernel)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{engine}: {stderr}");
        assert!(stderr.contains("triple fault"), "{engine}: {stderr}");
        assert!(
            stderr.contains("rip 0x0000000000100000"),
            "{engine}: {stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn accel_auto_says_what_it_chose_and_why() {
    let out = crane86()
        .args(["demo", "--iterations", "1", "--stats", "--serial", "none"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let chosen = if crane86_machine::choose_auto().engine == crane86_machine::EngineKind::Kvm {
        "kvm"
    } else {
        "jit"
    };
    let stats_line = stderr
        .lines()
        .find(|l| l.trim_start().starts_with("engine choice (--accel auto)"))
        .unwrap_or_else(|| panic!("no engine choice in --stats:\n{stderr}"));
    assert!(stats_line.len() > 40, "a reason is given: {stats_line}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("--accel auto") && l.contains(&format!("engine={chosen}"))),
        "the choice is logged at info level:\n{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.trim_start().starts_with("engine") && l.trim_end().ends_with(chosen)),
        "{stderr}"
    );
}

#[test]
fn switch_engine_continues_the_demo_under_another_engine() {
    let out = crane86()
        .args([
            "demo",
            "--iterations",
            "2",
            "--stats",
            "--accel",
            "jit",
            "--switch-engine",
            "interp@1M",
            "--switch-engine",
            "jit@2000000",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        crane86_machine::demo::expected_lines(2)
    );
    assert!(
        stderr.contains("to interp at 1000000 instructions"),
        "{stderr}"
    );
    assert!(
        stderr.contains("to jit at 2000000 instructions"),
        "{stderr}"
    );
}

#[test]
fn bad_engine_switches_are_refused_with_the_reason() {
    for (spec, expect) in [
        ("interp", "ENGINE@N"),
        ("warp@5", "unknown engine"),
        ("jit@soon", "neither an instruction count"),
    ] {
        let out = crane86()
            .args(["demo", "--switch-engine", spec])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{spec}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expect), "{spec}: {stderr}");
    }
    // Instruction points after kvm (which cannot count) are refused before the guest runs.
    let out = crane86()
        .args([
            "demo",
            "--accel",
            "jit",
            "--switch-engine",
            "kvm@1000",
            "--switch-engine",
            "jit@5000",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot count guest instructions"),
        "{stderr}"
    );
}

#[test]
fn switch_engine_on_sigusr1() {
    let child = crane86()
        .args([
            "demo",
            "--iterations",
            "150",
            "--stats",
            "--serial",
            "none",
            "--accel",
            "interp",
            "--switch-engine",
            "jit@signal",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let kill = std::process::Command::new("kill")
        .args(["-USR1", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("engine switch") && l.contains("to jit at")),
        "the signal switched the engine:\n{stderr}"
    );
    assert!(
        stderr.contains("native block runs"),
        "jit ran to the end:\n{stderr}"
    );
}
