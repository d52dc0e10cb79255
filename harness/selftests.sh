#!/usr/bin/env bash
# Build the KVM selftests named in harness/guest-tests.list (static arm64
# binaries) against the scratch tree's UAPI headers. make's own dependency
# tracking keeps a second run with nothing changed to a no-op.
STAGE=selftests
# shellcheck source=harness/lib.sh
. "$(dirname "$0")/lib.sh"

KST=$OUT/kselftest/kvm
mkdir -p "$KST"
mapfile -t bins < <(awk '!/^#/ && $4 ~ /^kvm\// { sub(/^kvm\//, "", $4); print $4 }' \
	"$TOP/harness/guest-tests.list" | sort -u)
[ "${#bins[@]}" -gt 0 ] || die "no kvm/ tests in harness/guest-tests.list"

run_logged headers inroot make -C "$KTREE" O="$KOUT" ARCH=arm64 LLVM=1 -s headers_install
say "building ${#bins[@]} KVM selftests"
run_logged selftests-build inroot make -C "$KTREE/tools/testing/selftests/kvm" \
	-j"$(nproc)" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- LDFLAGS=-static \
	OUTPUT="$KST" KHDR_INCLUDES="-isystem $KOUT/usr/include" \
	"${bins[@]/#/$KST/}"
say "selftests ready in $KST"
