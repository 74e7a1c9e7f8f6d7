#!/usr/bin/env python3
"""Boot the Linux guest under crane86 and under QEMU TCG in the same run and compare.

Both emulators get the same kernel (the bzImage), initramfs (the workload one built by
`scripts/linux-guest.sh --init tests/linux/workload.sh`), command line and memory size, and
boot straight from the kernel (QEMU runs its firmware first; that is part of its time). The
console is read as it arrives; the script notes the host time at which `/init` starts
("init: reached /init") and at which each workload step's RESULT line appears, and when the
emulator exits. It prints one table: seconds for each, and the ratio crane86 / QEMU (below 1
means crane86 is faster).

Usage:
    scripts/linux-bench.py [--accel interp] [--runs N] [--crane86 PATH] [--qemu PATH]

QEMU is `qemu-system-x86_64 -accel tcg` with a CPU model that has the same SIMD extensions
crane86 advertises (SSE4.2, no AVX), so the guest's libc picks comparable string routines.
Install it with `apt-get install qemu-system-x86`.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CMDLINE = "console=ttyS0"
MEMORY = "256M"
# Workload steps in the order tests/linux/workload.sh prints them, with what each one times.
STEPS = [
    ("uname-r", "boot to first RESULT"),
    ("interrupts-end", "cat /proc/cpuinfo, /proc/interrupts"),
    ("seq-lines", "seq 1 100000 > file"),
    ("seq-sha256", "sha256sum"),
    ("gzip-roundtrip-sha256", "gzip -9 and gzip -d"),
    ("sort-rn-sha256", "sort -rn"),
    ("execs", "100 fork+exec"),
]


def guest_image():
    out = subprocess.run(
        ["bash", os.path.join(ROOT, "scripts/linux-guest.sh"), "--init",
         os.path.join(ROOT, "tests/linux/workload.sh")],
        check=True, capture_output=True, text=True, cwd=ROOT).stdout
    vars_ = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return vars_["KERNEL"], vars_["WORKLOAD_INITRD"]


def timed_run(argv):
    """Run argv, timestamping console lines; returns {marker: seconds} and the exit code."""
    start = time.monotonic()
    marks = {}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    for raw in proc.stdout:
        line = raw.decode("utf-8", "replace").strip()
        now = time.monotonic() - start
        if "init: reached /init" in line and "init" not in marks:
            marks["init"] = now
        if line.startswith("RESULT "):
            key = line.split()[1]
            marks.setdefault(key, now)
    code = proc.wait()
    marks["total"] = time.monotonic() - start
    return marks, code


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accel", default="interp", help="crane86 engine (default interp)")
    ap.add_argument("--runs", type=int, default=1, help="runs of each emulator (median kept)")
    ap.add_argument("--crane86", default=os.path.join(ROOT, "target/release/crane86"))
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    args = ap.parse_args()
    if not os.access(args.crane86, os.X_OK):
        sys.exit(f"linux-bench: {args.crane86} not found: run `cargo build --release` first")
    kernel, initrd = guest_image()
    crane = [args.crane86, "run", "--accel", args.accel, "-m", MEMORY, "--kernel", kernel,
             "--initrd", initrd, "--append", CMDLINE, "--serial", "stdio"]
    qemu = [args.qemu, "-accel", "tcg", "-cpu", "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt",
            "-m", MEMORY, "-kernel", kernel, "-initrd", initrd, "-append", CMDLINE,
            "-nographic", "-serial", "stdio", "-monitor", "none", "-no-reboot"]
    results = {}
    for name, argv in (("crane86 " + args.accel, crane), ("qemu tcg", qemu)):
        runs = []
        for _ in range(args.runs):
            marks, code = timed_run(argv)
            if code != 0 or "done" not in marks:
                sys.exit(f"linux-bench: {name} exited with status {code} before the workload "
                         f"finished (markers seen: {sorted(marks)})")
            runs.append(marks)
        results[name] = runs

    def median(name, key):
        return statistics.median(r[key] for r in results[name])

    def step_time(name, i):
        prev = STEPS[i - 1][0] if i > 0 else "init"
        return statistics.median(r[STEPS[i][0]] - r[prev] for r in results[name])

    names = list(results)
    rows = [("time to /init", median(names[0], "init"), median(names[1], "init"))]
    for i, (_, what) in enumerate(STEPS):
        rows.append((what, step_time(names[0], i), step_time(names[1], i)))
    rows.append(("total (launch to exit)", median(names[0], "total"), median(names[1], "total")))
    print(f"{'':40} {names[0]:>16} {names[1]:>16} {'ratio':>8}")
    for what, a, b in rows:
        ratio = a / b if b > 0 else float("inf")
        print(f"{what:40} {a:15.2f}s {b:15.2f}s {ratio:8.2f}")


if __name__ == "__main__":
    main()
