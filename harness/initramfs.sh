#!/usr/bin/env bash
# Pack the guest's initramfs: busybox, /init, the test list, the KVM
# selftests, the kernel's modules and whatever extra binaries other stages
# left in $OUT/guest-bin. Rewritten only when one of its inputs is newer.
STAGE=initramfs
# shellcheck source=harness/lib.sh
. "$(dirname "$0")/lib.sh"

IMG=$OUT/initramfs.cpio.gz
STAGING=$OUT/initramfs
KST=$OUT/kselftest/kvm
EXTRA=$OUT/guest-bin
mkdir -p "$EXTRA"

inputs=("$TOP/harness/guest/init" "$TOP"/harness/*.list "$KST" "$EXTRA"
	"$KOUT/arch/arm64/boot/Image" "$ROOT/.complete")
# A rebuilt module does not always relink the Image: look at the modules too.
if [ -s "$IMG" ] && [ -z "$(find "${inputs[@]}" -newer "$IMG" -print -quit)" ] &&
	[ -z "$(find "$KOUT" -name '*.ko' -newer "$IMG" -print -quit)" ]; then
	say "initramfs up to date"
	exit 0
fi

rm -rf "$STAGING"
mkdir -p "$STAGING"/{bin,sbin,proc,sys,dev,tmp,tests/kvm,lib/modules}
cp "$ROOT/usr/bin/busybox" "$STAGING/bin/busybox"
file -L "$STAGING/bin/busybox" | grep -q 'ARM aarch64' ||
	die "busybox in the build root is not the arm64 one"
# /init installs the other applets at boot (busybox --install).
ln -sf busybox "$STAGING/bin/sh"
install -m 0755 "$TOP/harness/guest/init" "$STAGING/init"
cp "$TOP"/harness/*.list "$STAGING/tests/"
(cd "$KST" && find . -type f -perm -u+x ! -name '*.o' -print0 |
	xargs -0 cp --parents -t "$STAGING/tests/kvm")
cp -a "$EXTRA/." "$STAGING/tests/"
if grep -q '^CONFIG_MODULES=y' "$KOUT/.config"; then
	inroot make -C "$KTREE" O="$KOUT" ARCH=arm64 LLVM=1 -s \
		INSTALL_MOD_PATH="$STAGING" modules_install >/dev/null
fi
# cpio comes with the build root, not the host.
# shellcheck disable=SC2016 # expanded by the inner shell
inroot sh -c 'cd "$1" && find . -print0 | cpio -0 -o -H newc --quiet | gzip -1 >"$2"' \
	sh "$STAGING" "$IMG.tmp"
mv "$IMG.tmp" "$IMG"
say "initramfs $(du -h "$IMG" | cut -f1) with $(find "$STAGING/tests" -type f | wc -l) test files"
