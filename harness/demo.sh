#!/usr/bin/env bash
# "make demo": boot the patched kernel on each machine profile and show what
# the emulated machine offers an MTE guest (harness/demo.list): nta-vm booting a
# real Linux MTE guest on memory without tag storage, and the small guests of
# nta-demo, one per policy.
STAGE=demo
# shellcheck source=harness/lib.sh
. "$(dirname "$0")/lib.sh"

rc=0
for p in mteperm nomteperm n2; do
	echo
	say "=== profile $p: $(sed -n 's/^DESC="\(.*\)"/\1/p' "$TOP/harness/profiles/$p") ==="
	NTA_SHOW=1 NTA_KUNIT=0 NTA_BOOT_TIMEOUT=1200 "$TOP/harness/boot.sh" "$p" "$TOP/harness/demo.list" || rc=1
done
echo
if [ "$rc" = 0 ]; then
	say "verdict: PASS: with FEAT_MTE_PERM a real Linux MTE guest (nta-vm) booted from its kernel"
	say "  image mapped from the file, read its pmem filesystem and passed its MTE workload; its"
	say "  tag accesses to image pages (the zero page, freed init memory) exited and nta-vmm swapped"
	say "  those chunks for tag-capable memory; with the copy layout nothing exited; under the SEA"
	say "  policy the guest kernel died on its first such access; the small assembly guests showed"
	say "  each policy; without FEAT_MTE_PERM (arm64.nomteperm, neoverse-n2) KVM refused the image,"
	say "  as Linux 7.3 does"
else
	say "verdict: FAILED (see the messages above)"
fi
exit "$rc"
