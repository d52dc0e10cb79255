#!/usr/bin/env bash
# Make the Debian trixie build root (toolchains, QEMU) once; reuse it while
# harness/buildroot.packages and this script are unchanged.
STAGE=root
# shellcheck source=harness/lib.sh
. "$(dirname "$0")/lib.sh"

# The Debian mirror this machine already uses (never hard-coded here).
mirror() {
	if [ -n "${NTA_MIRROR:-}" ]; then
		echo "$NTA_MIRROR"
		return
	fi
	local m
	m=$(awk '/^URIs:/ && $2 !~ /security/ { print $2; exit }' \
		/etc/apt/sources.list.d/*.sources 2>/dev/null || true)
	[ -n "$m" ] || m=$(awk '$1 == "deb" && $0 !~ /security/ { print $2; exit }' \
		/etc/apt/sources.list 2>/dev/null || true)
	[ -n "$m" ] || die "no Debian mirror found in /etc/apt; set NTA_MIRROR"
	echo "$m"
}

versions() {
	# shellcheck disable=SC2016 # expanded by the inner shell
	inroot sh -c 'clang --version | head -1; rustc --version; bindgen --version;
		aarch64-linux-gnu-gcc --version | head -1;
		qemu-system-aarch64 --version | head -1;
		dpkg-query -W -f="libstd-rust-dev:arm64 \${Version}\n" libstd-rust-dev:arm64'
}

if [ -e "$ROOT/.complete" ]; then
	say "build root $ROOT (cached)"
	[ "${1:-}" = --versions ] && versions
	exit 0
fi

command -v mmdebstrap >/dev/null || {
	say "installing mmdebstrap on the host"
	apt-get update -qq && apt-get install -y -qq mmdebstrap >/dev/null
}
M=$(mirror)
mapfile -t PKGS < <(sed -e 's/#.*//' -e '/^\s*$/d' "$TOP/harness/buildroot.packages")
plain=() hooks=()
for p in "${PKGS[@]}"; do
	case $p in
	*/*) hooks+=(--customize-hook="chroot \"\$1\" apt-get install -y -q \
		--no-install-recommends -t ${p#*/} ${p%/*}") ;;
	*) plain+=("$p") ;;
	esac
done

tmp=$ROOT.tmp
rm -rf "$tmp"
say "creating trixie build root (${#PKGS[@]} packages) in $ROOT"
run_logged mmdebstrap mmdebstrap --variant=apt --architectures=amd64,arm64 \
	--include="$(
		IFS=,
		echo "${plain[*]}"
	)" \
	"${hooks[@]}" \
	trixie "$tmp" \
	"deb $M trixie main" "deb $M trixie-backports main"
touch "$tmp/.complete"
# Old roots are dead weight once a new one is complete.
for old in "$CACHE"/root-*; do
	[ "$old" = "$tmp" ] || [ "$old" = "$ROOT" ] || rm -rf "$old"
done
mv "$tmp" "$ROOT"
say "build root ready"
versions
