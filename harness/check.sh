#!/usr/bin/env bash
# "make check": the whole test suite. Runs every stage, records one verdict
# per check in $OUT/results.txt and ends with "N passed, N failed".
STAGE=check
# shellcheck source=harness/lib.sh
. "$(dirname "$0")/lib.sh"

export NTA_RESULTS=$OUT/results.txt
: >"$NTA_RESULTS"
H=$TOP/harness
t0=$SECONDS

# shellcheck source=harness/stages.sh
. "$H/stages.sh"
trap 'summary' EXIT

stage build-root "$H/mkroot.sh" --versions || exit 1
stage host-tests "$H/hosttests.sh" || true
stage vmm-host-tests "$H/vmm.sh" --host || true
stage base "$H/base.sh" || exit 1
stage checkpatch "$H/checkpatch.sh" || true
stage kernel env NTA_BISECT=none "$H/kbuild.sh" || exit 1
stage rust-lint "$H/rustlint.sh" || true
stage selftests-build "$H/selftests.sh" || exit 1
stage guest-programs "$H/guestprogs.sh" || exit 1
stage vmm-build "$H/vmm.sh" || exit 1
stage vm-guest "$H/vmguest.sh" || exit 1
stage initramfs "$H/initramfs.sh" || exit 1

# The per-patch walk needs only the tree, the boots only what was built
# above: they run side by side (a boot keeps about one core busy, the
# walk's make the rest), each with a results file of its own, appended to
# the run's in this order once both are done. Of the tree the boots read
# only tools/testing/kunit (results.py), which no patch changes; the walk
# leaves the tree on main.
walk_lane() {
	NTA_RESULTS=$OUT/results-walk.txt
	: >"$NTA_RESULTS"
	stage kernel-bisect-build "$H/kbuild.sh" || true
}
boot_lane() {
	local p
	NTA_RESULTS=$OUT/results-boots.txt
	: >"$NTA_RESULTS"
	for p in "$H"/profiles/*; do
		stage "boot-$(basename "$p")" "$H/boot.sh" "$(basename "$p")" || true
	done
}
walk_lane &
walk=$!
boot_lane &
boots=$!
wait "$walk" || true
wait "$boots" || true
cat "$OUT/results-walk.txt" "$OUT/results-boots.txt" >>"$NTA_RESULTS"
