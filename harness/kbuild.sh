#!/usr/bin/env bash
# Build the kernel (Image + modules, LLVM=1) after every commit of the
# scratch tree on top of base, ending at HEAD: the series is bisectable when
# this passes. A commit whose tree and config already built is skipped.
#
# HEAD always gets a full build. An earlier commit gets the directories its
# patch touches compiled (plus arch/arm64/{kernel,kvm,mm} for a header under
# include/), since a full rebuild per header-touching patch does not fit
# CI's time; NTA_BISECT=full builds Image + modules at every commit, and
# NTA_BISECT=none builds HEAD only (make demo).
#
# The test platform's quirks (harness/quirks/, not for upstream) sit on top of
# the series: the series' last patch then gets a full build of its own, so
# the series is shown to build without them, and HEAD (what QEMU boots) is
# series + quirks. The KVM series' last patch (below the Rust series,
# series-rust/) gets a full build too: the KVM series builds on its own.
STAGE=kernel
# shellcheck source=harness/lib.sh
. "$(dirname "$0")/lib.sh"

FRAG=$TOP/config/kernel.config
CFG_KEY=$(hash_of "$FRAG")
OKDIR=$OUT/built-ok
mkdir -p "$OKDIR" "$KOUT"
KMAKE=(make -C "$KTREE" O="$KOUT" ARCH=arm64 LLVM=1 -j"$(nproc)")

# Configure the checked-out tree: allnoconfig + the fragment. Done before
# every build, since building an older commit drops the symbols that later
# patches add (Kconfig regenerates its outputs only when they change).
# With "verify", every option of the fragment must have survived.
configure() {
	run_logged kconfig inroot "${KMAKE[@]}" KCONFIG_ALLCONFIG="$FRAG" allnoconfig
	[ "${1:-}" = verify ] || return 0
	local want sym missing=()
	while read -r want; do
		grep -qxF "$want" "$KOUT/.config" && continue
		# An option of a later patch (the Rust series' sample, say) does
		# not exist yet at the KVM series' last patch.
		sym=${want%%=*}
		git -C "$KTREE" grep -qE "^(menu)?config ${sym#CONFIG_}\$" -- '*Kconfig*' ||
			continue
		missing+=("$want")
	done < <(grep -E '^CONFIG_[A-Z0-9_]+=' "$FRAG")
	if [ "${#missing[@]}" -gt 0 ]; then
		die "config/kernel.config options dropped by Kconfig (unmet dependencies):" \
			"${missing[*]}"
	fi
}

verdict() { [ -z "${NTA_RESULTS:-}" ] || echo "$1 build/$2" >>"$NTA_RESULTS"; }

# Make targets that compile what commit $1 changes.
touched_dirs() {
	local f d
	git -C "$KTREE" diff --name-only "$1^" "$1" | while read -r f; do
		case $f in
		Documentation/* | tools/* | scripts/* | MAINTAINERS) continue ;;
		include/* | arch/arm64/include/*)
			echo arch/arm64/kernel/ arch/arm64/kvm/ arch/arm64/mm/
			continue
			;;
		esac
		d=$(dirname "$f")
		while [ "$d" != . ] && [ ! -e "$KTREE/$d/Makefile" ] && [ ! -e "$KTREE/$d/Kbuild" ]; do
			d=$(dirname "$d")
		done
		[ "$d" = . ] || echo "$d/"
	done | tr ' ' '\n' | sort -u
}

build_one() {
	local c=$1 what=$2 key targets=(Image modules) sha
	key=$(git -C "$KTREE" rev-parse "$c^{tree}")-$CFG_KEY
	if [ -e "$OKDIR/$key" ]; then
		verdict pass "$what: builds (cached)"
		return 0
	fi
	sha=$(git -C "$KTREE" rev-parse "$c")
	if [ "$sha" != "$(git -C "$KTREE" rev-parse main)" ] && [ "$sha" != "$series_top" ] &&
		[ "$sha" != "$kvm_top" ] &&
		[ "${NTA_BISECT:-dirs}" != full ]; then
		mapfile -t targets < <(touched_dirs "$c")
		[ "${#targets[@]}" -gt 0 ] || targets=(prepare)
		key=$key-dirs
		if [ -e "$OKDIR/$key" ]; then
			verdict pass "$what: builds (cached)"
			return 0
		fi
	fi
	git -C "$KTREE" checkout -q --detach "$c"
	if [ "${targets[*]}" = "Image modules" ]; then configure verify; else configure; fi
	say "building $what: ${targets[*]}"
	if ! run_logged kernel-build inroot "${KMAKE[@]}" "${targets[@]}"; then
		git -C "$KTREE" checkout -q main
		verdict fail "$what: does not build, see $LOGS/kernel-build.log"
		die "the tree does not build at $what"
	fi
	verdict pass "$what: builds"
	touch "$OKDIR/$key"
	if [ "${targets[*]}" = "Image modules" ]; then
		git -C "$KTREE" rev-parse "$c" >"$KOUT/.nta-head"
	fi
}

series_top=$(series_top)
kvm_top=$(kvm_top)
mapfile -t commits < <(git -C "$KTREE" rev-list --reverse "base..$series_top")
mapfile -t quirks < <(git -C "$KTREE" rev-list --reverse "$series_top..main")
n=${#commits[@]}
if [ "$n" -eq 0 ] && [ "${#quirks[@]}" -eq 0 ]; then
	build_one main "base (series/ is empty)"
elif [ "${NTA_BISECT:-dirs}" = none ]; then
	build_one main "HEAD ($n patches + ${#quirks[@]} quirk(s); the per-patch walk is make check's)"
else
	i=0
	for c in "${commits[@]}"; do
		i=$((i + 1))
		build_one "$c" "patch $i/$n: $(git -C "$KTREE" log -1 --format=%s "$c")"
	done
	i=0
	for c in "${quirks[@]}"; do
		i=$((i + 1))
		build_one "$c" "quirk $i/${#quirks[@]}: $(git -C "$KTREE" log -1 --format=%s "$c")"
	done
fi
git -C "$KTREE" checkout -q main
# When HEAD itself was stamped, the output may hold an older commit's build.
if [ "$(cat "$KOUT/.nta-head" 2>/dev/null)" != "$(git -C "$KTREE" rev-parse main)" ]; then
	configure verify
	run_logged kernel-build inroot "${KMAKE[@]}" Image modules
	git -C "$KTREE" rev-parse main >"$KOUT/.nta-head"
fi
say "kernel ready: $KOUT/arch/arm64/boot/Image ($(git -C "$KTREE" log -1 --format=%s main))"
