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
        "--kernel", "--initrd", "--append", "--memory", "--accel", "--serial", "--bios", "--stats",
        "--icount",
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
    let out = crane86()
        .args(["demo", "--iterations", "2", "--stats"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let expected = crane86_machine::demo::expected_lines(2);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, expected);
    assert!(stderr.contains("retired instructions"), "{stderr}");
    assert!(stderr.contains("guest MIPS"), "{stderr}");
    assert!(stderr.contains("block cache hit rate"), "{stderr}");
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
    let out = crane86()
        .args([
            "run",
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
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("triple fault"), "{stderr}");
    assert!(stderr.contains("rip 0x0000000000100000"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
