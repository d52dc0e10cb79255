#!/usr/bin/env bash
# Host-side tests of the harness itself: its Python parts (unittest, run
# with the build root's python3: the host needs none), its command-line
# errors, and shellcheck over its shell scripts.
STAGE=host-tests
# shellcheck source=harness/lib.sh
. "$(dirname "$0")/lib.sh"

AREA=host

for t in "$TOP"/harness/tests/test_*.py; do
	n=$(basename "$t" .py)
	if inroot python3 -m unittest -q "$t" >"$LOGS/$n.log" 2>&1; then
		verdict pass "$n: $(grep -o 'Ran [0-9]* tests' "$LOGS/$n.log")"
	else
		verdict fail "$n: see $LOGS/$n.log"
		tail -n 30 "$LOGS/$n.log" >&2
	fi
done

for t in "$TOP"/harness/tests/test_*.sh; do
	n=$(basename "$t" .sh)
	if bash "$t" >"$LOGS/$n.log" 2>&1; then
		verdict pass "$n: $(grep -o 'Ran [0-9]* tests' "$LOGS/$n.log")"
	else
		verdict fail "$n: see $LOGS/$n.log"
		tail -n 30 "$LOGS/$n.log" >&2
	fi
done

# A wrong option or argument must be refused with a message naming it.
expect_error() {
	local what=$1 pattern=$2 out
	shift 2
	if out=$("$@" 2>&1); then
		verdict fail "cli: $what: accepted"
	elif grep -q -- "$pattern" <<<"$out"; then
		verdict pass "cli: $what: refused"
	else
		verdict fail "cli: $what: unclear error: $out"
	fi
}
expect_error "base.sh --bogus" "unknown option '--bogus'" "$TOP/harness/base.sh" --bogus
expect_error "bench.sh --bogus" "takes no arguments" "$TOP/harness/bench.sh" --bogus
expect_error "NTA_BENCH_LIST=nosuch.list bench.sh" "no such list" env NTA_BENCH_LIST=nosuch.list "$TOP/harness/bench.sh" --check-dir
expect_error "make bench NTA_BENCH_DIR=/proc/..." "cannot create that directory" \
	env NTA_BENCH_DIR=/proc/nta-bench-results make -s -C "$TOP" bench-dir
# ... and any directory that can be written is fine, wherever it is.
bdir=$(mktemp -d)
if NTA_BENCH_DIR=$bdir/results make -s -C "$TOP" bench-dir >/dev/null 2>&1 &&
	[ -d "$bdir/results" ] && [ -z "$(ls -A "$bdir/results")" ]; then
	verdict pass "cli: make bench NTA_BENCH_DIR=(outside repo and cache): accepted, left empty"
else
	verdict fail "cli: make bench NTA_BENCH_DIR=$bdir/results: refused or not created"
fi
rm -rf "$bdir"
expect_error "boot.sh nosuchprofile" "profiles: " "$TOP/harness/boot.sh" nosuchprofile
expect_error "make boot PROFILE=nosuch" "is not one of: " make -s -C "$TOP" boot PROFILE=nosuch

# Every guest script: everything in harness/guest/ but the C programs
guest_scripts=()
for f in "$TOP"/harness/guest/*; do
	case $f in *.c) ;; *) guest_scripts+=("$f") ;; esac
done
if command -v shellcheck >/dev/null || { [ -x "$ROOT/usr/bin/shellcheck" ] && SC=inroot; }; then
	if ${SC:-} shellcheck -x -P "$TOP/harness" "$TOP"/harness/*.sh "${guest_scripts[@]}" \
		"$TOP"/harness/tests/*.sh "$TOP"/.ci/run >"$LOGS/shellcheck.log" 2>&1; then
		verdict pass "shellcheck: clean"
	else
		verdict fail "shellcheck: see $LOGS/shellcheck.log"
		head -n 30 "$LOGS/shellcheck.log" >&2
	fi
else
	verdict fail "shellcheck: not installed (it comes with the build root)"
fi
exit "$fail"
