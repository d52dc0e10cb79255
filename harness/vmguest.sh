#!/usr/bin/env bash
# Build what nta-vm boots in the test guest, into $OUT/guest-bin/vm (the initramfs
# puts it in /tests/vm): the kernel Image (the harness's own), a tiny initramfs whose
# /init is vmm/nta-vm/guest/init.c (static), and pmem.img, an ext4 image holding the
# payload that init checks. The initramfs is packed with the kernel's gen_init_cpio.
STAGE=vmguest
# shellcheck source=harness/lib.sh
. "$(dirname "$0")/lib.sh"

DST=$OUT/guest-bin/vm
WORK=$OUT/vmguest
SRC=$TOP/vmm/nta-vm/guest/init.c
mkdir -p "$DST" "$WORK"

cmp -s "$KOUT/arch/arm64/boot/Image" "$DST/Image" || cp "$KOUT/arch/arm64/boot/Image" "$DST/Image"

if ! [ "$DST/initramfs.cpio" -nt "$SRC" ] || ! [ "$DST/initramfs.cpio" -nt "$KOUT/usr/gen_init_cpio" ]; then
	say "guest init (static arm64) and its initramfs"
	inroot aarch64-linux-gnu-gcc -static -O2 -Wall -Werror -o "$WORK/init" "$SRC"
	cat >"$WORK/initramfs.list" <<LIST
dir /dev 0755 0 0
nod /dev/console 0600 0 0 c 5 1
dir /proc 0755 0 0
dir /sys 0755 0 0
file /init $WORK/init 0755 0 0
LIST
	inroot "$KOUT/usr/gen_init_cpio" "$WORK/initramfs.list" >"$WORK/initramfs.cpio"
	mv "$WORK/initramfs.cpio" "$DST/initramfs.cpio"
fi

# The payload: 1 MiB of xorshift64 from the seed init.c checks it against.
if ! [ "$DST/pmem.img" -nt "$0" ]; then
	say "pmem.img: ext4 with the payload init checks"
	rm -rf "$WORK/pmem" && mkdir -p "$WORK/pmem"
	inroot python3 -c '
import struct, sys
x, m, out = 0x6e74612d706d656d, (1 << 64) - 1, []
for _ in range(1 << 17):
    x ^= (x << 13) & m; x ^= x >> 7; x ^= (x << 17) & m
    out.append(struct.pack("<Q", x))
open(sys.argv[1], "wb").write(b"".join(out))' "$WORK/pmem/payload.bin"
	rm -f "$WORK/pmem.img"
	inroot mke2fs -q -t ext4 -O ^has_journal -b 4096 -L nta-pmem -d "$WORK/pmem" "$WORK/pmem.img" 8M
	mv "$WORK/pmem.img" "$DST/pmem.img"
fi
say "ready: $DST (Image, initramfs.cpio, pmem.img)"
