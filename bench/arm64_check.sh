#!/usr/bin/env bash
# The small-board path checked on arm64 under emulation (`make arm64-check`, as root): an arm64
# Debian bookworm root made by debootstrap and run through qemu-user-static (binfmt), `.[edge]`
# installed there from aarch64 wheels, and a simulator bag replayed on the onnx backend to the same
# commands as on this x86_64 machine (within 1e-5), through one script, bench/arm64_replay.py.
# Exit status: 0 same commands, 1 different commands, 2 cannot run here (it says why and how).
# Timings under emulation mean nothing; the commands do.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROOTFS=${ARM64_ROOT:-$HOME/.cache/liquid_control/arm64-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
VPY=.venv/bin/python
TOOLS="apt-get install -y qemu-user-static binfmt-support debootstrap"

cannot() { echo "arm64-check: cannot run here: $*" >&2; exit 2; }

[ "$(uname -m)" = x86_64 ] || cannot "this check emulates arm64 on an x86_64 host (this is $(uname -m)); on an arm64 board run bench/arm64_replay.py in a venv with .[edge]"
[ "$(id -u)" = 0 ] || cannot "debootstrap and chroot need root: sudo make arm64-check"
[ -x "$VPY" ] || cannot "no $VPY: make venv first (the x86 side replays with it)"
command -v debootstrap >/dev/null || cannot "debootstrap is not installed: $TOOLS"
command -v qemu-aarch64-static >/dev/null || cannot "qemu-user-static is not installed: $TOOLS"
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
        || cannot "binfmt_misc cannot be mounted here (a container without it cannot run foreign binaries)"
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && command -v update-binfmts >/dev/null; then
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
fi
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || cannot "no qemu-aarch64 handler in binfmt_misc: $TOOLS"

work=$(mktemp -d /tmp/arm64-check.XXXXXX)
mounted=()
cleanup() {
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start=$(date +%s)
echo "== inputs on $(uname -m): the shipped model exported to ONNX, a 5 s simulator bag, their commands"
MODEL=$($VPY -c 'from liquid_control.paths import DEFAULT_MODEL; print(DEFAULT_MODEL)')
$VPY -m liquid_control.cli export "$MODEL" --onnx "$work/model.onnx" >/dev/null
$VPY -m liquid_control.cli collect --track kidney --episodes 1 --seconds 5 --seed 5 --output "$work/bag" >/dev/null
$VPY bench/arm64_replay.py "$work/model.onnx" "$work/bag" "$work/x86_64.npy"

if [ ! -e "$ROOTFS/.complete" ]; then
    echo "== an arm64 Debian bookworm root in $ROOTFS (debootstrap, once; a few minutes)"
    rm -rf "$ROOTFS"
    mkdir -p "$(dirname "$ROOTFS")"
    t=$(date +%s)
    debootstrap --arch arm64 --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$ROOTFS" "$MIRROR" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    touch "$ROOTFS/.complete"
    echo "   debootstrap: $(($(date +%s) - t)) s"
fi
# The registry from inside the root: the host's resolver and CA bundle (the root's own is refused here).
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
for fs in proc dev; do
    mount --bind "/$fs" "$ROOTFS/$fs"
    mounted+=("$ROOTFS/$fs")
done

echo "== the source (as a clone holds it) and the inputs into the root; .[edge] from aarch64 wheels"
rm -rf "$ROOTFS/check/src" "$ROOTFS/check/in"
mkdir -p "$ROOTFS/check/src" "$ROOTFS/check/in"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$ROOTFS/check/src"
cp -r "$work/model.onnx" "$work/bag" "$ROOTFS/check/in/"
in_root() { chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
t=$(date +%s)
[ -x "$ROOTFS/check/venv/bin/python" ] || in_root python3 -m venv /check/venv
in_root /check/venv/bin/pip install -q --disable-pip-version-check -c /check/src/requirements/constraints.txt \
    "/check/src[edge]" >"$work/pip.log" 2>&1 || { tail -20 "$work/pip.log" >&2; exit 1; }
echo "   pip install: $(($(date +%s) - t)) s"
in_root /check/venv/bin/python -c 'import platform, torch' 2>/dev/null && { echo "torch is in the edge install" >&2; exit 1; }
t=$(date +%s)
in_root /check/venv/bin/python /check/src/bench/arm64_replay.py /check/in/model.onnx /check/in/bag /check/in/aarch64.npy
echo "   replay under emulation: $(($(date +%s) - t)) s"

echo "== x86_64 against aarch64 (total $(($(date +%s) - start)) s)"
$VPY bench/arm64_replay.py --compare "$work/x86_64.npy" "$ROOTFS/check/in/aarch64.npy"
