#!/bin/bash
# Guest side of the sched_ext guest harness (xtask/src/vm.rs): runs one job
# inside the guest and hands its exit status and output back to the host
# through the --rwdir directory (vng's own exit status is always 255).
#
# Usage (from vng --exec): run.sh OUT_DIR TIMEOUT_SECS NONCE
#   OUT_DIR/job.sh     the job, written by the host
#   OUT_DIR/output     its stdout and stderr, copied there at the end
#   OUT_DIR/timed-out  created if the job hit TIMEOUT_SECS
#   OUT_DIR/status     its exit status, written last
# The host finds the job's start and end on the console by the lines
# "@@scx-hints-guest NONCE start@@" and "@@scx-hints-guest NONCE exit N@@".
#
# The job's output goes to tmpfs while it runs, not to 9p: the 9p root is
# involved in user-space stalls when a sched_ext scheduler detaches under load.

out=$1
secs=$2
nonce=$3

export GUEST_OUT="$out"
export GUEST_TMP=/dev/shm/scx-hints
mkdir -p "$GUEST_TMP/bin"
# A static busybox (Debian's busybox-static) with its applets in tmpfs.
if bb=$(command -v busybox); then
    cp "$bb" "$GUEST_TMP/bin/busybox" &&
        "$GUEST_TMP/bin/busybox" --install -s "$GUEST_TMP/bin"
fi
if [ -x "$GUEST_TMP/bin/busybox" ]; then
    tee=("$GUEST_TMP/bin/busybox" tee)
else
    tee=(tee)
fi

# libbpf resolves __kconfig externs from /boot/config-$(uname -r), which the
# host's read-only /boot lacks for the guest kernel: give the guest its own.
if [ ! -e "/boot/config-$(uname -r)" ] && [ -e "/lib/modules/$(uname -r)/config" ] &&
    mount -t tmpfs -o size=8m guest-boot /boot 2>/dev/null; then
    cp "/lib/modules/$(uname -r)/config" "/boot/config-$(uname -r)"
fi

echo "@@scx-hints-guest $nonce start@@"
SECONDS=0
timeout -k 5 "$secs" bash "$out/job.sh" </dev/null 2>&1 | "${tee[@]}" "$GUEST_TMP/output"
rc=${PIPESTATUS[0]}
if { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && [ "$SECONDS" -ge "$secs" ]; then
    : >"$out/timed-out"
fi
cp "$GUEST_TMP/output" "$out/output"
echo "$rc" >"$out/status.tmp" && mv "$out/status.tmp" "$out/status"
sync
echo "@@scx-hints-guest $nonce exit $rc@@"
exit "$rc"
