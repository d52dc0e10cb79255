#!/usr/bin/env bash
# Boot the kernel + test initramfs under QEMU on one machine profile, run a
# list of guest tests and judge the run (harness/results.py).
#
#   boot.sh PROFILE [LIST]   LIST defaults to harness/guest-tests.list
#
# Environment: NTA_RESULTS (append verdicts there), NTA_BOOT_TIMEOUT (s),
# NTA_KUNIT=0|1 (override the profile's boot-time KUnit run),
# NTA_CONSOLE=1 (copy the console to the terminal as it runs), NTA_SHOW=1
# (print what the guest's tests printed, after the run), NTA_SMP (vCPUs,
# default 2), NTA_QEMU_EXTRA (more QEMU options, split on spaces).
STAGE=boot
# shellcheck source=harness/lib.sh
. "$(dirname "$0")/lib.sh"

usage() {
	local p names=""
	for p in "$TOP"/harness/profiles/*; do names+=" $(basename "$p")"; done
	die "usage: boot.sh PROFILE [LIST]; profiles:$names"
}
if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
PROFILE=$1
LIST=${2:-$TOP/harness/guest-tests.list}
PFILE=$TOP/harness/profiles/$PROFILE
[ -f "$PFILE" ] || usage
[ -f "$LIST" ] || die "no such test list: $LIST"
STAGE=boot:$PROFILE

DESC="" QEMU_CPU="" CMDLINE="" KUNIT=0 ALLOW_SKIP="" TAG_ACCESS_QUIRK=0 FWB="" KASAN=0
# shellcheck source=harness/profiles/mteperm
. "$PFILE"
KUNIT=${NTA_KUNIT:-$KUNIT}
IMAGE=$KOUT/arch/arm64/boot/Image
INITRD=$OUT/initramfs.cpio.gz
if [ ! -f "$IMAGE" ] || [ ! -f "$INITRD" ]; then
	die "kernel or initramfs missing: run 'make build'"
fi

# The list the guest runs is the file's name under /tests (the initramfs
# holds every list in harness/).
listname=$(basename "$LIST")
[ -f "$OUT/initramfs/tests/$listname" ] ||
	die "$listname is not in the initramfs (lists live in harness/*.list)"
LOG=$LOGS/console-$PROFILE-${listname%.list}.log
TMO=${NTA_BOOT_TIMEOUT:-1800}

append="console=ttyAMA0 panic=-1 loglevel=4 log_buf_len=8M"
append+=" nta.profile=$PROFILE nta.list=$listname kunit.enable=$KUNIT"
# KASAN (hardware tags) only where the profile turns it on: it comes last.
append+=" hugepagesz=1G hugepages=1 hugepagesz=2M hugepages=16 kasan=off $CMDLINE"
say "booting ($DESC), timeout ${TMO}s, console in $LOG"
start=$SECONDS
# shellcheck disable=SC2054 # the commas are QEMU's
qemu=(qemu-system-aarch64 -M virt,virtualization=on,mte=on,gic-version=3,iommu=smmuv3
	-cpu "$QEMU_CPU" -smp "${NTA_SMP:-2}" -m 3G -nographic -no-reboot
	-kernel "$IMAGE" -initrd "$INITRD" -append "$append"
	# Device memory without tag storage: ivshmem-plain's BAR 2 is 2 MiB of
	# host RAM outside the machine's (tagged) RAM, for the Rust sample
	# driver rust_driver_ivshmem (/dev/ivshmem-mem).
	-object memory-backend-ram,id=devmem,size=2M
	-device ivshmem-plain,memdev=devmem,addr=02.0
	# A second one, 0000:00:04.0, for vfio-pci (harness/guest/bind-vfio)
	# behind the SMMUv3 above: a passed-through device's BAR, which
	# KVM maps non-cacheable.
	-object memory-backend-ram,id=vfiomem,size=2M
	-device ivshmem-plain,memdev=vfiomem,addr=04.0
	# A device whose BAR 2 is an I/O port BAR (modern-pio-notify), which
	# the Rust sample driver must refuse (harness/guest/ivshmem-mem-probes);
	# the kernel has no virtio driver, so nothing else binds it.
	-device virtio-rng-pci,modern-pio-notify=on,addr=05.0)
# shellcheck disable=SC2206 # options are split on spaces
qemu+=(${NTA_QEMU_EXTRA:-})
rc=0
if [ "${NTA_CONSOLE:-0}" = 1 ]; then
	inroot timeout --foreground -k 10 "$TMO" "${qemu[@]}" </dev/null 2>&1 | tee "$LOG" || rc=$?
else
	run_logged "qemu-$PROFILE" inroot timeout -k 10 "$TMO" "${qemu[@]}" </dev/null || rc=$?
	cp "$LOGS/qemu-$PROFILE.log" "$LOG"
fi
[ "$rc" = 124 ] && warn "QEMU killed after ${TMO}s"
say "guest ran for $((SECONDS - start)) s"

if [ "${NTA_SHOW:-0}" = 1 ]; then
	sed -n 's/\r$//; s/^NTA: # \{0,1\}/    /p' "$LOG"
fi
args=("$LOG" "$PROFILE" "$LIST" --ktree "$KTREE" --allow-skip "$ALLOW_SKIP"
	--known-failures "$TOP/harness/known-failures")
[ "$KUNIT" = 1 ] && args+=(--kunit)
[ -n "${NTA_RESULTS:-}" ] && args+=(--results "$NTA_RESULTS")
# The QEMU quirk of harness/quirks/ says in the kernel log when it rewrote a
# syndrome. On a profile whose tests make tag accesses it must have: once it
# no longer does, QEMU reports the architectural syndrome and the quirk goes.
if [ "$TAG_ACCESS_QUIRK" = 1 ]; then
	AREA=quirk
	if grep -q "NOT FOR UPSTREAM quirk: QEMU's tag access syndrome" "$LOG"; then
		verdict pass "qemu-tag-access-syndrome: still needed on $PROFILE ($(grep -o \
			"syndrome 0x[0-9a-f]*" "$LOG" | head -n 1) rewritten)"
	else
		verdict fail "qemu-tag-access-syndrome: never used on $PROFILE: either no tag $(
		)access ran or QEMU now reports a Permission fault; if the tests passed, $(
		)drop harness/quirks/ and say so in the cover letter"
	fi
fi
# A profile that names FWB says whether the kernel must have found
# FEAT_S2FWB: the nofwb profile is only worth its boot if it was hidden.
if [ -n "$FWB" ]; then
	AREA=profile
	found=0
	grep -aq "CPU features: detected: Stage-2 Force Write-Back" "$LOG" && found=1
	if [ "$found" = "$FWB" ]; then
		verdict pass "$PROFILE: FEAT_S2FWB $([ "$FWB" = 1 ] && echo used || echo hidden), as the profile says"
	else
		verdict fail "$PROFILE: FEAT_S2FWB $([ "$found" = 1 ] && echo used || echo "not used"), the profile says FWB=$FWB"
	fi
fi
# A profile with KASAN=1 is only worth its boot if KASAN ran.
if [ "$KASAN" = 1 ]; then
	AREA=profile
	if grep -aq "KernelAddressSanitizer initialized (hw-tags" "$LOG"; then
		verdict pass "$PROFILE: KASAN on, hardware tags, as the profile says"
	else
		verdict fail "$PROFILE: KASAN not initialized in hw-tags mode (the log has: $(
		)$(grep -a -m1 -o 'KernelAddressSanitizer.*' "$LOG" || echo nothing))"
	fi
fi
if ! inroot python3 "$TOP/harness/results.py" "${args[@]}"; then
	grep '^NTA: ' "$LOG" | grep -B15 '^NTA: not ok' | tail -n 40 >&2 || true
	die "profile $PROFILE failed; console log: $LOG"
fi
exit "$fail"
