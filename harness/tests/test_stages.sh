#!/usr/bin/env bash
# Host-side test of harness/stages.sh: a stage that fails must leave a
# failure behind even when it recorded passes first, and the summary must
# then say so and exit non-zero. Prints "Ran N tests"; exits 1 on a failure.
# The conditions are single-quoted on purpose (expect() evaluates them), and
# the helpers are called through stage():
# shellcheck disable=SC2016,SC2317,SC2034
set -u
H=$(cd "$(dirname "$0")/.." && pwd)
say() { :; }
LOGS=/nonexistent
t0=$SECONDS
# shellcheck source=harness/stages.sh
. "$H/stages.sh"
NTA_RESULTS=$(mktemp)
trap 'rm -f "$NTA_RESULTS"' EXIT
n=0 bad=0
# expect WHAT CONDITION: CONDITION is shell code, evaluated here.
expect() {
	n=$((n + 1))
	if ! eval "$2"; then
		echo "FAIL: $1" >&2
		bad=1
	fi
}
passes_then_fails() {
	echo "pass x/one" >>"$NTA_RESULTS"
	return 3
}

stage quiet true
expect "a silent passing stage gets a pass" 'grep -qx "pass quiet" "$NTA_RESULTS"'
stage loud passes_then_fails
expect "a failing stage that recorded only passes gets a failure" \
	'grep -q "^fail loud: exited with status 3" "$NTA_RESULTS"'
out=$(summary 2>&1) && rc=0 || rc=$?
expect "the summary counts it" '[[ "$out" == *"2 passed, 1 failed"* ]]'
expect "and exits non-zero" '[ "$rc" -ne 0 ]'
: >"$NTA_RESULTS"
out=$(summary 2>&1) && rc=0 || rc=$?
expect "an empty run is not a pass" '[ "$rc" -ne 0 ]'
echo "Ran $n tests"
exit "$bad"
