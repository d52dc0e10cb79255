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

record() { echo "$1 $2" >>"$NTA_RESULTS"; }

# stage NAME CMD...: run one stage. A stage that records no verdict of its
# own gets one; a stage that fails without recording a failure gets one, so
# a failure can never end the run looking green.
stage() {
	local name=$1 before fails rc=0
	shift
	say "== $name ($((SECONDS - t0)) s)"
	before=$(wc -l <"$NTA_RESULTS")
	fails=$(grep -c '^fail' "$NTA_RESULTS" || true)
	"$@" || rc=$?
	if [ "$rc" = 0 ]; then
		[ "$(wc -l <"$NTA_RESULTS")" -gt "$before" ] || record pass "$name"
		return 0
	fi
	if [ "$(grep -c '^fail' "$NTA_RESULTS" || true)" -eq "$fails" ]; then
		record fail "$name: exited with status $rc, see the messages above"
	fi
	return 1
}

summary() {
	local passed failed
	echo
	say "results ($((SECONDS - t0)) s):"
	grep '^fail' "$NTA_RESULTS" | sed 's/^/  /' || true
	passed=$(grep -c '^pass' "$NTA_RESULTS" || true)
	failed=$(grep -c '^fail' "$NTA_RESULTS" || true)
	echo "full list: $NTA_RESULTS; logs: $LOGS"
	echo "$passed passed, $failed failed"
	if [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]; then exit 0; else exit 1; fi
}
trap 'summary' EXIT

stage build-root "$H/mkroot.sh" --versions || exit 1
stage host-tests "$H/hosttests.sh" || true
stage vmm-host-tests "$H/vmm.sh" --host || true
stage base "$H/base.sh" || exit 1
stage checkpatch "$H/checkpatch.sh" || true
stage kernel-bisect-build "$H/kbuild.sh" || exit 1
stage rust-lint "$H/rustlint.sh" || true
stage selftests-build "$H/selftests.sh" || exit 1
stage guest-programs "$H/guestprogs.sh" || exit 1
stage vmm-build "$H/vmm.sh" || exit 1
stage initramfs "$H/initramfs.sh" || exit 1
for p in "$H"/profiles/*; do
	stage "boot-$(basename "$p")" "$H/boot.sh" "$(basename "$p")" || true
done
