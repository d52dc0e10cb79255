# shellcheck shell=bash
# Common helpers for the harness scripts: cache layout, logging, build root.
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${NTA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nta-kvm}
LOGS=${NTA_LOGS:-$CACHE/logs}
OUT=$CACHE/out
mkdir -p "$CACHE" "$LOGS" "$OUT"

# Pinned kernel base (see docs/kernel-tree.md). These and the paths below are
# used by the scripts that source this file.
# shellcheck disable=SC2034
BASE_PKG=linux-source-7.3
# shellcheck disable=SC2034
BASE_VER=7.3.4-1~bpo13+1
# shellcheck disable=SC2034
BASE_SHA256=703e369ddd4cce971452f5a593ee55df3a5c10c83caf0fa0df039633ed181ee3
# shellcheck disable=SC2034
KTREE=$CACHE/linux
# shellcheck disable=SC2034
KOUT=$OUT/kernel

say() { printf '\033[1m[%s]\033[0m %s\n' "${STAGE:-nta}" "$*"; }
warn() { printf '\033[1;33m[%s] warning:\033[0m %s\n' "${STAGE:-nta}" "$*" >&2; }
die() {
	printf '\033[1;31m[%s] error:\033[0m %s\n' "${STAGE:-nta}" "$*" >&2
	exit 1
}

# Print the lines of a log that matter, then where the whole log is.
show_log_tail() {
	local log=$1 n=${2:-15}
	echo "---- lines of $log that matter ----" >&2
	grep -nE 'error|Error|ERROR|FAIL|not ok|undefined|BUG|WARNING' "$log" |
		tail -n 12 | cut -c1-240 >&2 || true
	echo "---- last lines ----" >&2
	tail -n "$n" "$log" | cut -c1-240 >&2
	echo "---- full log: $log ----" >&2
}

# run_logged NAME CMD...: run CMD with output into $LOGS/NAME.log, printing a
# heartbeat with the newest log line every 30 s; on failure show the log.
run_logged() {
	local name=$1 log rc=0 pid start
	shift
	log=$LOGS/$name.log
	start=$SECONDS
	"$@" >"$log" 2>&1 &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		for _ in $(seq 30); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 1
		done
		if kill -0 "$pid" 2>/dev/null; then
			say "$name: $((SECONDS - start)) s ... $(tail -n 1 "$log" | cut -c1-90)"
		fi
	done
	wait "$pid" || rc=$?
	if [ "$rc" -ne 0 ]; then
		show_log_tail "$log"
		return "$rc"
	fi
}

# verdict pass|fail TEXT: one check's verdict, printed, recorded in
# $NTA_RESULTS under the script's $AREA (make check), and a failure
# remembered in $fail for the script's exit status.
# shellcheck disable=SC2034 # read by the scripts that source this file
fail=0
verdict() {
	echo "$1 $AREA/$2"
	[ -z "${NTA_RESULTS:-}" ] || echo "$1 $AREA/$2" >>"$NTA_RESULTS"
	# shellcheck disable=SC2034
	[ "$1" = pass ] || fail=1
}

# Commits of the scratch tree whose subject starts with this are the test
# platform's quirks (harness/quirks/): applied last, never part of series/.
# shellcheck disable=SC2034
QUIRK_PREFIX="NOT FOR UPSTREAM: "
# The last commit of the series proper in the scratch tree: HEAD less the
# quirk commits on top. Fails if a quirk sits below a series commit.
series_top() {
	local c top=""
	while read -r c; do
		if git -C "$KTREE" log -1 --format=%s "$c" | grep -q "^$QUIRK_PREFIX"; then
			[ -n "$top" ] || top=$c^
		elif [ -n "$top" ]; then
			die "commit $(git -C "$KTREE" log -1 --format='%h %s' "$c") sits above a quirk;" \
				"quirks (subject '$QUIRK_PREFIX...') must be the last commits"
		fi
	done < <(git -C "$KTREE" rev-list --reverse base..main)
	git -C "$KTREE" rev-parse "${top:-main}"
}

# Commits of the Rust-for-Linux series (series-rust/): their subjects start
# so, and they sit above the KVM series (series/), below the quirks.
# shellcheck disable=SC2034
RUST_SUBJECT_RE='^(rust|samples: rust): '

# The last commit of the KVM series: series_top less the Rust series on top.
# Fails if a KVM commit sits above a Rust one.
kvm_top() {
	local c top="" s
	while read -r c; do
		s=$(git -C "$KTREE" log -1 --format=%s "$c")
		if grep -qE "$RUST_SUBJECT_RE" <<<"$s"; then
			[ -n "$top" ] || top=$c^
		elif [ -n "$top" ]; then
			die "commit $(git -C "$KTREE" log -1 --format='%h %s' "$c") sits above a Rust" \
				"commit; the Rust series (subjects 'rust: ...', 'samples: rust: ...') goes last"
		fi
	done < <(git -C "$KTREE" rev-list --reverse "base..$(series_top)")
	git -C "$KTREE" rev-parse "${top:-$(series_top)}"
}

hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# Keyed on what goes into the root and how it is made, comments aside.
ROOT_KEY=$(sed -e '/^[[:space:]]*#/d' "$TOP/harness/buildroot.packages" "$TOP/harness/mkroot.sh" |
	sha256sum | cut -c1-16)
ROOT=$CACHE/root-$ROOT_KEY

# inroot CMD...: run CMD inside the build root, with the repository and the
# cache visible at the same paths, in a private mount namespace so nothing
# stays mounted when it returns.
inroot() {
	[ -x "$ROOT/usr/bin/clang" ] || die "build root missing: run 'make root'"
	# shellcheck disable=SC2016 # expanded by the inner shells
	unshare --mount --propagation private -- bash -c '
		set -e
		r=$1; shift
		for d in dev proc sys; do mkdir -p "$r/$d"; done
		mount --rbind /dev "$r/dev"
		mount -t proc proc "$r/proc"
		mount --rbind /sys "$r/sys"
		# /tmp first: the repository or the cache may live below it.
		mount -t tmpfs tmpfs "$r/tmp"
		for d in "$TOP" "$CACHE"; do
			mkdir -p "$r$d"; mount --bind "$d" "$r$d"
		done
		# Trust what the host trusts (cargo reaches its registry through it).
		ca=/etc/ssl/certs/ca-certificates.crt
		if [ -f "$ca" ] && [ -f "$r$ca" ]; then mount --bind "$ca" "$r$ca"; fi
		exec chroot "$r" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
			PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
			/bin/sh -c '\''cd "$0" 2>/dev/null || cd /; exec "$@"'\'' "$@"
	' inroot "$ROOT" "$PWD" "$@"
}
export TOP CACHE
