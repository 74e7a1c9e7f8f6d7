#!/usr/bin/env bash
# Build the Linux guest used by crane86's boot tests: a stock Debian bookworm kernel (and its
# decompressed vmlinux) and a busybox initramfs, cached under target/guest/. Nothing binary is committed; everything is
# fetched with `apt-get download` from the Debian mirrors the host is configured with.
#
# Usage:
#   scripts/linux-guest.sh                      # kernel + target/guest/initrd.gz (shell on console)
#   scripts/linux-guest.sh --init FILE          # also target/guest/initrd-<FILE name>.gz, whose
#                                               # /init runs FILE (copied as /workload.sh)
#   scripts/linux-guest.sh --out DIR            # cache directory (default target/guest)
#   LINUX_GUEST_ARCHIVER=python scripts/...     # build the cpio with Python even if cpio exists
#
# The /init of every initramfs mounts /proc, /sys and /dev (devtmpfs), installs the busybox
# applets, then runs, in this order of preference:
#   1. the script named by `run=/path` on the kernel command line (unknown `key=value`
#      kernel parameters reach init as environment variables),
#   2. /workload.sh when the initramfs was built with --init,
#   3. an interactive shell on the console (restarted when it exits).
# After a script (1 or 2) returns, /init powers the machine off (`poweroff -f`).
#
# Idempotent: downloads and archives already present are reused; concurrent runs on one
# cache directory wait for each other. Prints the paths last as
#   KERNEL=<path>       the bzImage
#   VMLINUX=<path>      its decompressed ELF payload (boots faster: no guest-side decompression)
#   INITRD=<path>
#   [WORKLOAD_INITRD=<path>]
set -euo pipefail

KERNEL_PACKAGE=linux-image-6.1.0-56-amd64
cd "$(dirname "$0")/.."
out=target/guest
workload=""
while [ $# -gt 0 ]; do
    case "$1" in
        --init) workload="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "linux-guest.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
if [ -n "$workload" ] && [ ! -f "$workload" ]; then
    echo "linux-guest.sh: --init $workload: no such file" >&2
    exit 2
fi
mkdir -p "$out/debs"
out=$(cd "$out" && pwd)
debs="$out/debs"
log() { echo "linux-guest.sh: $*" >&2; }

# One build at a time per cache directory: the boot tests run in parallel and each calls
# this script; without the lock they race on apt-get and on the .tmp files below.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$out/.lock"
    flock 9
else
    log "flock not found: concurrent runs on $out may race"
fi

# `apt-get download PACKAGE` into $debs, refreshing the package lists once if it is unknown.
fetched_update=false
download() {
    local pkg="$1"
    if ls "$debs/${pkg}_"*.deb >/dev/null 2>&1; then
        return 0
    fi
    if ! (cd "$debs" && apt-get download "$pkg" >/dev/null 2>&1); then
        if [ "$fetched_update" = false ]; then
            log "package $pkg not found; running apt-get update"
            apt-get update >/dev/null 2>&1 || log "apt-get update failed (continuing)"
            fetched_update=true
        fi
        (cd "$debs" && apt-get download "$pkg" >/dev/null 2>&1) || return 1
    fi
    log "downloaded $(ls "$debs/${pkg}_"*.deb)"
}

# --- kernel -------------------------------------------------------------------------------
kernel="$out/vmlinuz"
if [ ! -s "$kernel" ]; then
    pkg="$KERNEL_PACKAGE"
    if ! download "$pkg"; then
        pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
            sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1)
        if [ -z "$pkg" ]; then
            log "neither $KERNEL_PACKAGE nor linux-image-amd64's kernel is available"
            exit 1
        fi
        log "$KERNEL_PACKAGE is not available; using $pkg (what linux-image-amd64 depends on)"
        download "$pkg"
    fi
    deb=$(ls "$debs/${pkg}_"*.deb | head -n 1)
    # Only the bzImage is needed: extract ./boot/vmlinuz-* from the package's data archive
    # (dpkg-deb -x would also unpack ~400 MB of modules).
    tmp=$(mktemp -d)
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*'
    mv "$tmp"/boot/vmlinuz-* "$kernel"
    rm -rf "$tmp"
    echo "$pkg" >"$out/vmlinuz.package"
fi
log "kernel from $(cat "$out/vmlinuz.package" 2>/dev/null || echo '?')"

# The bzImage's payload, decompressed: an ELF64 vmlinux crane86 can boot without running
# the kernel's own XZ decompressor (billions of guest instructions on the interpreter).
vmlinux="$out/vmlinux"
if [ ! -s "$vmlinux" ] || [ "$kernel" -nt "$vmlinux" ]; then
    python3 - "$kernel" "$vmlinux.tmp" <<'PY'
import lzma, struct, sys
image = open(sys.argv[1], "rb").read()
setup_sects = image[0x1F1] or 4
kernel = (setup_sects + 1) * 512
offset, length = struct.unpack_from("<II", image, 0x248)
payload = image[kernel + offset : kernel + offset + length]
if not payload.startswith(b"\xfd7zXZ\x00"):
    sys.exit("linux-guest.sh: the kernel payload is not XZ (magic %s); no vmlinux" % payload[:6].hex())
# The build appends the uncompressed size after the XZ stream: decode the first stream only.
elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
if not elf.startswith(b"\x7fELF"):
    sys.exit("linux-guest.sh: the decompressed payload is not an ELF file")
open(sys.argv[2], "wb").write(elf)
PY
    mv "$vmlinux.tmp" "$vmlinux"
fi

# --- busybox ------------------------------------------------------------------------------
busybox="$out/busybox"
if [ ! -x "$busybox" ]; then
    download busybox-static
    tmp=$(mktemp -d)
    dpkg-deb --fsys-tarfile "$(ls "$debs"/busybox-static_*.deb | head -n 1)" |
        tar -x -C "$tmp" ./bin/busybox
    mv "$tmp/bin/busybox" "$busybox"
    chmod 755 "$busybox"
    rm -rf "$tmp"
fi

# --- initramfs ----------------------------------------------------------------------------
write_init() {
    cat >"$1" <<'EOF'
#!/bin/busybox sh
# crane86 guest init (generated by scripts/linux-guest.sh)
/bin/busybox mkdir -p /proc /sys /dev /tmp /usr/bin /usr/sbin /sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
echo "init: reached /init (busybox $(busybox | head -n 1 | cut -d' ' -f2))"
script=""
if [ -n "${run:-}" ]; then
    script="$run"
elif [ -f /workload.sh ]; then
    script=/workload.sh
fi
if [ -n "$script" ]; then
    echo "init: running $script"
    sh "$script"
    echo "init: $script exited with status $?; powering off"
    poweroff -f
fi
while true; do
    setsid cttyhack sh -l
    echo "init: shell exited; starting a new one"
done
EOF
    chmod 755 "$1"
}

# Write a gzip-compressed newc cpio of directory $1 to $2 (cpio if installed, else Python).
pack() {
    local dir="$1" archive="$2"
    # LINUX_GUEST_ARCHIVER=python forces the Python archiver (to test it).
    local use_cpio=true
    if [ "${LINUX_GUEST_ARCHIVER:-}" = python ]; then
        use_cpio=false
    elif ! command -v cpio >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        log "installing cpio"
        apt-get install -y cpio >/dev/null 2>&1 ||
            { apt-get update >/dev/null 2>&1 && apt-get install -y cpio >/dev/null 2>&1; } ||
            log "could not install cpio; using the Python archiver"
    fi
    if [ "$use_cpio" = true ] && command -v cpio >/dev/null 2>&1; then
        (cd "$dir" && find . -mindepth 1 | LC_ALL=C sort |
            cpio --quiet -o -H newc --owner 0:0) | gzip -9 >"$archive.tmp"
    else
        python3 - "$dir" <<'PY' | gzip -9 >"$archive.tmp"
import os, sys
root = sys.argv[1]
out = sys.stdout.buffer
ino = 1
def entry(name, st, data):
    global ino
    name_b = name.encode() + b"\0"
    rdev = getattr(st, "st_rdev", 0)
    fields = [ino, st.st_mode, 0, 0, 1, int(st.st_mtime), len(data), 0, 0,
              os.major(rdev), os.minor(rdev), len(name_b), 0]
    out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + name_b)
    out.write(b"\0" * (-(110 + len(name_b)) % 4) + data + b"\0" * (-len(data) % 4))
    ino += 1
for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for n in sorted(dirnames + filenames):
        path = os.path.join(dirpath, n)
        st = os.lstat(path)
        rel = os.path.relpath(path, root)
        if os.path.islink(path):
            data = os.readlink(path).encode()
        elif os.path.isfile(path):
            data = open(path, "rb").read()
        else:
            data = b""
        entry(rel, st, data)
class End: st_mode = 0; st_mtime = 0; st_rdev = 0
entry("TRAILER!!!", End, b"")
PY
    fi
    mv "$archive.tmp" "$archive"
}

# build_initrd ARCHIVE [WORKLOAD]: rebuilt when missing or older than its inputs.
build_initrd() {
    local archive="$1" script="${2:-}"
    if [ -s "$archive" ] && [ "$archive" -nt "$0" ] && [ "$archive" -nt "$busybox" ] &&
        { [ -z "$script" ] || [ "$archive" -nt "$script" ]; }; then
        return 0
    fi
    local root
    root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys" "$root/tmp" "$root/root"
    cp "$busybox" "$root/bin/busybox"
    ln -s busybox "$root/bin/sh"
    # The kernel opens /dev/console for init's stdio before /init can mount devtmpfs (its
    # built-in initramfs has the node too; this keeps the archive self-sufficient).
    mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || log "mknod /dev/console failed (not root?)"
    write_init "$root/init"
    if [ -n "$script" ]; then
        cp "$script" "$root/workload.sh"
        chmod 755 "$root/workload.sh"
    fi
    pack "$root" "$archive"
    rm -rf "$root"
    log "built $archive"
}

start=$(date +%s)
build_initrd "$out/initrd.gz"
echo "KERNEL=$kernel"
echo "VMLINUX=$vmlinux"
echo "INITRD=$out/initrd.gz"
if [ -n "$workload" ]; then
    name=$(basename "$workload")
    build_initrd "$out/initrd-${name%.*}.gz" "$workload"
    echo "WORKLOAD_INITRD=$out/initrd-${name%.*}.gz"
fi
log "done in $(($(date +%s) - start)) s (initramfs stage)"
