# shellcheck shell=bash disable=SC2154 # t0, LOGS: set by the sourcing script
# The bookkeeping of "make check": one verdict line per check in
# $NTA_RESULTS, stages, and the closing "N passed, N failed" line. Sourced by
# check.sh (and by the harness's own tests); needs say(), $LOGS and $t0.

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
