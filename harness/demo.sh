#!/usr/bin/env bash
# "make demo": boot the patched kernel on each machine profile and show what
# the emulated machine offers an MTE guest (harness/demo.list).
STAGE=demo
# shellcheck source=harness/lib.sh
. "$(dirname "$0")/lib.sh"

rc=0
for p in mteperm nomteperm n2; do
	echo
	say "=== profile $p: $(sed -n 's/^DESC="\(.*\)"/\1/p' "$TOP/harness/profiles/$p") ==="
	NTA_SHOW=1 NTA_KUNIT=0 NTA_BOOT_TIMEOUT=600 "$TOP/harness/boot.sh" "$p" "$TOP/harness/demo.list" || rc=1
done
echo
if [ "$rc" = 0 ]; then
	say "verdict: PASS: with FEAT_MTE_PERM the MTE guest used the file image directly and"
	say "  each policy did what it says; without it (arm64.nomteperm, neoverse-n2) KVM refused"
	say "  the image, as Linux 7.3 does"
else
	say "verdict: FAILED (see the messages above)"
fi
exit "$rc"
