#!/usr/bin/env bash
# Run the tree's own checkpatch.pl --strict over every patch in series/
# and series-rust/.
# Prints one verdict per patch; with NTA_RESULTS set, appends them there.
STAGE=checkpatch
# shellcheck source=harness/lib.sh
. "$(dirname "$0")/lib.sh"

mapfile -t patches < <(find "$TOP/series" "$TOP/series-rust" -maxdepth 1 -name '0*.patch' \
	! -name '0000-*' 2>/dev/null | sort)
if [ "${#patches[@]}" -eq 0 ]; then
	say "series/ and series-rust/ are empty: nothing to check"
	exit 0
fi
AREA=checkpatch
for p in "${patches[@]}"; do
	name=$(basename "$(dirname "$p")")/$(basename "$p")
	log=$LOGS/checkpatch-${name%.patch}.log
	log=${log%/*}-${log##*/}
	# In the build root, where spdxcheck.py finds python3-ply. The base is
	# a Debian tarball without upstream history, so checkpatch cannot look
	# up the commit ids of Fixes: tags (UNKNOWN_COMMIT_ID); they were
	# checked against the upstream history instead (the series' notes).
	# shellcheck disable=SC2016 # expanded by the inner shell
	if inroot sh -c 'cd "$1" && shift && exec ./scripts/checkpatch.pl "$@"' sh "$KTREE" --strict -q \
		--ignore FILE_PATH_CHANGES,UNKNOWN_COMMIT_ID "$p" >"$log" 2>&1; then
		verdict pass "$name: clean"
	else
		grep -E -A3 '^(ERROR|WARNING|CHECK):' "$log" | head -n 20 >&2
		verdict fail "$name: $(grep -cE '^(ERROR|WARNING|CHECK):' "$log") issue(s), see $log"
	fi
done
exit "$fail"
