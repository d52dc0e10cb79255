#!/usr/bin/env bash
# Fetch the pinned linux-source-7.3 package, verify it, unpack it into the
# scratch git tree ($CACHE/linux, tag "base"), apply series/ (the KVM series)
# with git am, then series-rust/ (the Rust-for-Linux series on top of it),
# then the test platform's quirks (harness/quirks/, not for upstream: see
# its README).
#
#   base.sh            make sure the tree is base + series/ + quirks (default)
#   base.sh --export   regenerate series/, series-rust/ and harness/quirks/
#                      from the tree's commits on base
#   base.sh --reset    throw away the tree's commits and re-apply both
STAGE=base
# shellcheck source=harness/lib.sh
. "$(dirname "$0")/lib.sh"

mode=apply
case "${1:-}" in
"") ;;
--export) mode="export" ;;
--reset) mode="reset" ;;
*) die "unknown option '$1' (expected --export or --reset)" ;;
esac

SERIES=$TOP/series
RSERIES=$TOP/series-rust
QUIRKS=$TOP/harness/quirks
# The series' posting versions: their subjects read "[PATCH vN nn/mm]".
SERIES_VERSION=3
RSERIES_VERSION=2
STAMP=$CACHE/linux.series-stamp
DL=$CACHE/dl
mkdir -p "$DL"

patches_in() { find "$1" -maxdepth 1 -name '0*.patch' ! -name '0000-*' 2>/dev/null | sort; }
series_patches() { patches_in "$SERIES"; }
rseries_patches() { patches_in "$RSERIES"; }
quirk_patches() { find "$QUIRKS" -maxdepth 1 -name '0*.patch' 2>/dev/null | sort; }
series_hash() {
	local p
	p=$(series_patches; rseries_patches; quirk_patches)
	if [ -n "$p" ]; then
		# shellcheck disable=SC2086
		hash_of $p
	else
		echo empty
	fi
}
g() { git -C "$KTREE" "$@"; }

fetch_deb() {
	local ver=$BASE_VER offered deb sum
	offered=$(inroot sh -c "apt-get update -qq >/dev/null 2>&1;
		apt-cache madison $BASE_PKG | awk '{print \$3}'")
	if ! grep -qxF "$BASE_VER" <<<"$offered"; then
		ver=$(head -n 1 <<<"$offered")
		[ -n "$ver" ] || die "$BASE_PKG is not offered by the Debian archive"
		warn "pinned $BASE_PKG $BASE_VER is no longer offered;" \
			"using the newest one, $ver (verified by apt's signed index only)"
	fi
	deb=$DL/${BASE_PKG}_${ver//:/%3a}_all.deb
	if [ ! -s "$deb" ]; then
		say "downloading $BASE_PKG $ver" >&2
		inroot sh -c "cd '$DL' && apt-get download -q '$BASE_PKG=$ver'" >&2 ||
			die "could not download $BASE_PKG $ver"
	fi
	sum=$(sha256sum "$deb" | cut -d' ' -f1)
	if [ "$ver" = "$BASE_VER" ] && [ "$sum" != "$BASE_SHA256" ]; then
		rm -f "$deb"
		die "$deb: sha256 $sum does not match the pinned $BASE_SHA256"
	fi
	say "base: $BASE_PKG $ver sha256 $sum" >&2
	echo "$ver $deb"
}

make_tree() {
	local ver deb tmp
	read -r ver deb < <(fetch_deb)
	tmp=$KTREE.tmp
	rm -rf "$tmp"
	mkdir -p "$tmp"
	say "unpacking $(basename "$deb")"
	dpkg-deb --fsys-tarfile "$deb" | tar -xO --wildcards './usr/src/linux-source-*.tar.*' |
		tar -xJ --strip-components=1 -C "$tmp"
	# Debian's tarball ignores everything at the top level (its packaging
	# repository's rule); drop that stanza so the tree behaves like upstream.
	sed -i '/^# Debian packaging: ignore everything/,$d' "$tmp/.gitignore"
	sed -i '${/^#$/d}' "$tmp/.gitignore"
	git -C "$tmp" init -q -b main
	# No background "gc --auto" after the big first commit: it would hold
	# the repository's locks while this script goes on using it.
	git -C "$tmp" config gc.auto 0
	git -C "$tmp" config maintenance.auto false
	git -C "$tmp" add -A -f
	git -C "$tmp" -c user.name=nta -c user.email=nta@localhost \
		commit -q -m "Linux base: Debian $BASE_PKG $ver"
	git -C "$tmp" tag base
	rm -rf "$KTREE"
	mv "$tmp" "$KTREE"
	echo "none $(g rev-parse HEAD)" >"$STAMP"
}

# am_patch FILE WHERE: git am one patch; WHERE says what it should apply to.
am_patch() {
	g -c user.name=nta -c user.email=nta@localhost am -q --keep-cr "$1" || {
		g am --abort || true
		die "${1#"$TOP"/}: does not apply to $2"
	}
}

# apply_all DIR SUBJECT-RE WHAT ONTO: git am every patch of DIR, each of
# whose subjects must match SUBJECT-RE (WHAT says how), on top of ONTO.
apply_all() {
	local dir=$1 re=$2 what=$3 onto=$4 n=0 p
	for p in $(patches_in "$dir"); do
		n=$((n + 1))
		grep -qE "^Subject: \[PATCH[^]]*\] ($re)" "$p" ||
			die "${p#"$TOP"/}: subject must start with $what"
		am_patch "$p" "$onto"
	done
	echo "$n"
}

apply_series() {
	local n
	g reset -q --hard base
	g clean -qfdx
	n=$(apply_all "$SERIES" "[^]]" "anything" "the base")
	say "applied $n patch(es) from series/"
	n=$(apply_all "$RSERIES" "rust: |samples: rust: " "'rust: ' or 'samples: rust: '" \
		"the top of series/")
	say "applied $n patch(es) from series-rust/"
	n=$(apply_all "$QUIRKS" "$QUIRK_PREFIX" "'$QUIRK_PREFIX'" "the top of series-rust/")
	[ "$n" -eq 0 ] || say "applied $n test-platform quirk(s) from harness/quirks/ (not for upstream)"
	echo "$(series_hash) $(g rev-parse HEAD)" >"$STAMP"
}

# export_series DIR VERSION RANGE: format-patch RANGE into DIR, keeping the
# hand-written text of DIR's cover letter (its shortlog/diffstat refreshed).
export_series() {
	local dir=$1 ver=$2 range=$3 cover tmp
	cover=$(find "$dir" -maxdepth 1 -name '0000-cover-letter.patch' 2>/dev/null || true)
	# In the cache, which the build root (cover.py's python3) sees.
	tmp=$(mktemp -d "$CACHE/export.XXXXXX")
	g format-patch -q --cover-letter --subject-prefix="PATCH v$ver" -o "$tmp" "$range"
	if [ -n "$cover" ]; then
		inroot python3 "$TOP/harness/cover.py" "$cover" "$tmp/0000-cover-letter.patch"
	fi
	rm -f "$dir"/*.patch
	mkdir -p "$dir"
	mv "$tmp"/*.patch "$dir"/
	rmdir "$tmp"
}

[ -d "$KTREE/.git" ] || make_tree
read -r s_hash s_head <"$STAMP"
head=$(g rev-parse HEAD)
dirty=$(g status --porcelain --untracked-files=no)

case $mode in
apply)
	if [ "$s_hash" = "$(series_hash)" ] && [ "$s_head" = "$head" ] && [ -z "$dirty" ]; then
		say "tree is base + series/ ($(g rev-list --count "base..$(series_top)") patches)" \
			"+ $(quirk_patches | wc -l) quirk(s)"
	elif [ "$s_head" = "$head" ] && [ -z "$dirty" ]; then
		apply_series
	else
		die "$KTREE has work not exported to series/ (commits or edits);" \
			"run 'make series' to export it or 'make reset-tree' to drop it"
	fi
	;;
reset) apply_series ;;
export)
	[ -z "$dirty" ] || die "$KTREE has uncommitted edits; commit them first"
	[ "$(g rev-list --count base..HEAD)" -gt 0 ] || die "no commits on base to export"
	top=$(series_top)
	ktop=$(kvm_top)
	export_series "$SERIES" "$SERIES_VERSION" "base..$ktop"
	if [ "$(g rev-parse "$ktop")" != "$(g rev-parse "$top")" ]; then
		export_series "$RSERIES" "$RSERIES_VERSION" "$ktop..$top"
	else
		rm -f "$RSERIES"/*.patch
	fi
	rm -f "$QUIRKS"/0*.patch
	if [ "$(g rev-parse "$top")" != "$head" ]; then
		g format-patch -q -o "$QUIRKS" "$top..HEAD"
	fi
	echo "$(series_hash) $head" >"$STAMP"
	say "exported $(series_patches | wc -l) patch(es) to series/," \
		"$(rseries_patches | wc -l) to series-rust/, $(quirk_patches | wc -l) to harness/quirks/"
	;;
esac
