#!/usr/bin/env bash
# Lint the Rust code that series/ touches: rustfmt --check, a CLIPPY=1 build
# of rust/ and samples/rust/ (in its own output directory) and rustdoc. A
# warning located in a file the series touches fails the stage; warnings
# the base tree already has elsewhere are not the series' business. A tree
# that passed is remembered and not linted again.
STAGE=rust-lint
# shellcheck source=harness/lib.sh
. "$(dirname "$0")/lib.sh"

mapfile -t files < <(git -C "$KTREE" diff --name-only base..main -- '*.rs')
if [ "${#files[@]}" -eq 0 ]; then
	say "series/ touches no Rust file"
	exit 0
fi
OKDIR=$OUT/rust-lint-ok
KEY=$(git -C "$KTREE" rev-parse 'main^{tree}')-$(hash_of "$TOP/config/kernel.config")
mkdir -p "$OKDIR"
AREA=rust
if [ -e "$OKDIR/$KEY" ]; then
	verdict pass "rustfmt, clippy, rustdoc: clean (cached for this tree)"
	exit 0
fi

# Warnings of a log that point into the touched files, where they are
# reported ("--> path:line") or where a macro expanding to them is used
# ("::: path:line").
touched_warnings() {
	local f
	for f in "${files[@]}"; do
		grep -B4 -A8 -E -- "(-->|:::) (.*/)?$f:" "$1" || true
	done
}

# shellcheck disable=SC2016 # expanded by the inner shell
if inroot sh -c 'cd "$1" && shift && rustfmt --check --edition 2021 "$@"' sh "$KTREE" \
	"${files[@]}" >"$LOGS/rustfmt.log" 2>&1; then
	verdict pass "rustfmt: ${#files[@]} files clean"
else
	verdict fail "rustfmt: see $LOGS/rustfmt.log"
	head -n 30 "$LOGS/rustfmt.log" >&2
fi

CLIPPY_OUT=$OUT/kernel-clippy
mkdir -p "$CLIPPY_OUT"
cmp -s "$KOUT/.config" "$CLIPPY_OUT/.config" || cp "$KOUT/.config" "$CLIPPY_OUT/.config"
# lint_build NAME CMD...: run a build; it fails, or passes with no warning
# in the touched files.
lint_build() {
	local name=$1 w
	shift
	say "$name"
	if ! run_logged "$name" "$@"; then
		verdict fail "$name: build failed, see $LOGS/$name.log"
		return
	fi
	w=$(touched_warnings "$LOGS/$name.log")
	if [ -z "$w" ]; then
		verdict pass "$name: no warning in the series' Rust files"
	else
		verdict fail "$name: warnings, see $LOGS/$name.log"
		echo "$w" | head -n 40 >&2
	fi
}

lint_build clippy inroot make -C "$KTREE" O="$CLIPPY_OUT" ARCH=arm64 LLVM=1 CLIPPY=1 \
	-j"$(nproc)" olddefconfig rust/ samples/rust/
lint_build rustdoc inroot make -C "$KTREE" O="$KOUT" ARCH=arm64 LLVM=1 rustdoc

[ "$fail" = 0 ] && touch "$OKDIR/$KEY"
exit "$fail"
