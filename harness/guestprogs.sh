#!/usr/bin/env bash
# Build the small guest-side helpers in harness/guest/ (static arm64 C
# programs and shell scripts, everything but init) into $OUT/guest-bin.
STAGE=guestprogs
# shellcheck source=harness/lib.sh
. "$(dirname "$0")/lib.sh"

DST=$OUT/guest-bin
mkdir -p "$DST"
for src in "$TOP"/harness/guest/*; do
	name=$(basename "$src")
	case $name in
	init) continue ;;
	*.c)
		bin=$DST/${name%.c}
		[ "$bin" -nt "$src" ] && [ "$bin" -nt "$KOUT/usr/include/linux/kvm.h" ] && continue
		say "compiling $name"
		inroot aarch64-linux-gnu-gcc -static -pthread -O2 -Wall -Werror \
			-isystem "$KOUT/usr/include" -o "$bin" "$src"
		;;
	*) cmp -s "$src" "$DST/$name" || install -m 0755 "$src" "$DST/$name" ;;
	esac
done
