#!/usr/bin/env bash
# Build the kernel (Image + modules, LLVM=1) after every commit of the
# scratch tree on top of base, ending at HEAD: the series is bisectable when
# this passes. A commit whose tree and config already built is skipped.
#
# HEAD, the kernel QEMU boots, is built with config/kernel.config into
# $OUT/kernel. Every earlier commit is built with config/kernel-walk.config
# (what the series touches, no debugging options, no filesystems) into
# $OUT/kernel-walk: a commit gets the directories its patch touches compiled
# (plus arch/arm64/{kernel,kvm,mm} for a header under include/), and the
# KVM series' last patch and the Rust series' last patch get a full build,
# so each series is shown to build on its own, without the test platform's
# quirks (harness/quirks/, not for upstream) that sit on top of them; of
# the quirks only HEAD, the tree QEMU boots, is built.
# NTA_BISECT=full builds Image + modules at every commit, NTA_BISECT=none
# builds HEAD only (make demo).
STAGE=kernel
# shellcheck source=harness/lib.sh
. "$(dirname "$0")/lib.sh"

FRAG=$TOP/config/kernel.config
WALK_FRAG=$TOP/config/kernel-walk.config
WOUT=$OUT/kernel-walk
OKDIR=$OUT/built-ok
mkdir -p "$OKDIR" "$KOUT" "$WOUT"

# kmake OUTDIR ARGS...: make in the scratch tree with OUTDIR as its output.
kmake() {
	local o=$1
	shift
	inroot make -C "$KTREE" O="$o" ARCH=arm64 LLVM=1 -j"$(nproc)" "$@"
}

# kconfig_key: what the configuration of the checked-out tree depends on:
# its Kconfig files and scripts/kconfig (the build root and the fragment are
# keyed by the caller).
kconfig_key() {
	git -C "$KTREE" ls-tree -r HEAD |
		awk '$4 ~ /(^|\/)Kconfig/ || $4 ~ /^scripts\/kconfig\//' | sha256sum | cut -c1-16
}

# configure OUTDIR FRAGMENT [verify]: configure the checked-out tree:
# allnoconfig + the fragment. Done before every build whose Kconfig inputs
# differ from the last one in OUTDIR, since building an older commit drops
# the symbols that later patches add (Kconfig regenerates its outputs only
# when they change). With "verify", every option of the fragment must have
# survived.
configure() {
	local o=$1 frag=$2 want sym missing=() key last
	key=$(kconfig_key)-$(hash_of "$frag")-$ROOT_KEY
	last=$(cat "$o/.nta-kconfig" 2>/dev/null || true)
	# A verified configuration serves both kinds of call, unless something
	# rewrote .config since (a build of an older commit in the same
	# directory drops the symbols later patches add).
	if [ -f "$o/.config" ] && [ ! "$o/.config" -nt "$o/.nta-kconfig" ] &&
		{ [ "$last" = "$key verified" ] ||
		{ [ "${3:-}" != verify ] && [ "$last" = "$key" ]; }; }; then
		return 0
	fi
	rm -f "$o/.nta-kconfig"
	run_logged kconfig kmake "$o" KCONFIG_ALLCONFIG="$frag" allnoconfig
	[ "${3:-}" = verify ] || { echo "$key" >"$o/.nta-kconfig"; return 0; }
	while read -r want; do
		grep -qxF "$want" "$o/.config" && continue
		# An option of a later patch (the Rust series' sample, say) does
		# not exist yet at the KVM series' last patch.
		sym=${want%%=*}
		git -C "$KTREE" grep -qE "^(menu)?config ${sym#CONFIG_}\$" -- '*Kconfig*' ||
			continue
		missing+=("$want")
	done < <(grep -E '^CONFIG_[A-Z0-9_]+=' "$frag")
	if [ "${#missing[@]}" -gt 0 ]; then
		die "${frag#"$TOP"/} options dropped by Kconfig (unmet dependencies):" \
			"${missing[*]}"
	fi
	echo "$key verified" >"$o/.nta-kconfig"
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
	local c=$1 what=$2 key targets=(Image modules) sha o=$WOUT frag=$WALK_FRAG
	sha=$(git -C "$KTREE" rev-parse "$c")
	if [ "$sha" = "$(git -C "$KTREE" rev-parse main)" ]; then
		o=$KOUT
		frag=$FRAG
	elif [ "$sha" != "$series_top" ] && [ "$sha" != "$kvm_top" ] &&
		[ "${NTA_BISECT:-dirs}" != full ]; then
		mapfile -t targets < <(touched_dirs "$c")
		[ "${#targets[@]}" -gt 0 ] || targets=(prepare)
	fi
	key=$(git -C "$KTREE" rev-parse "$c^{tree}")-$(hash_of "$frag")
	[ "${targets[*]}" = "Image modules" ] || key=$key-dirs
	if [ -e "$OKDIR/$key" ]; then
		verdict pass "$what: builds (cached)"
		return 0
	fi
	git -C "$KTREE" checkout -q --detach "$c"
	if [ "${targets[*]}" = "Image modules" ]; then
		configure "$o" "$frag" verify
	else
		configure "$o" "$frag"
	fi
	say "building $what (${frag#"$TOP"/}): ${targets[*]}"
	if ! run_logged kernel-build kmake "$o" "${targets[@]}"; then
		git -C "$KTREE" checkout -q main
		verdict fail "$what: does not build, see $LOGS/kernel-build.log"
		die "the tree does not build at $what"
	fi
	verdict pass "$what: builds"
	touch "$OKDIR/$key"
	[ "$o" != "$KOUT" ] || echo "$sha" >"$KOUT/.nta-head"
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
	# The quirks are not for upstream: only the tree QEMU boots, all of them
	# on top, has to build.
	[ "${#quirks[@]}" -eq 0 ] ||
		build_one main "HEAD: the series + ${#quirks[@]} quirk(s) (harness/quirks/)"
fi
git -C "$KTREE" checkout -q main
# $OUT/kernel may hold an older HEAD's build (make reset-tree), cached above,
# or a .config that a build of another commit there rewrote.
[ "$KOUT/.config" -nt "$KOUT/.nta-kconfig" ] && rm -f "$KOUT/.nta-head"
if [ "$(cat "$KOUT/.nta-head" 2>/dev/null)" != "$(git -C "$KTREE" rev-parse main)" ]; then
	configure "$KOUT" "$FRAG" verify
	run_logged kernel-build kmake "$KOUT" Image modules
	git -C "$KTREE" rev-parse main >"$KOUT/.nta-head"
fi
say "kernel ready: $KOUT/arch/arm64/boot/Image ($(git -C "$KTREE" log -1 --format=%s main))"
