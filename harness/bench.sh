#!/usr/bin/env bash
# "make bench": boot the series' kernel once on the FEAT_MTE_PERM CPU under
# QEMU -icount, run nta-bench there (harness/bench.list), and write the raw
# CSV, the tables and the plot to bench-results/ (NTA_BENCH_DIR overrides).
#
#   bench.sh              boot and measure
#   bench.sh --check-dir  only check that NTA_BENCH_DIR can take the results
#                         (make bench does this before it builds anything)
#
# Environment: NTA_ICOUNT (QEMU's -icount options, default shift=0,sleep=off),
# NTA_BENCH_LIST (the list to run, default harness/bench.list; harness/bench-vm.list
# is nta-vm's real-guest part alone).
STAGE=bench
# shellcheck source=harness/lib.sh
. "$(dirname "$0")/lib.sh"

check_only=0
case "$*" in
"") ;;
--check-dir) check_only=1 ;;
*) die "bench.sh takes no arguments but --check-dir (got '$*'); see docs/bench.md" ;;
esac
RES=${NTA_BENCH_DIR:-$TOP/bench-results}
LIST=${NTA_BENCH_LIST:-$TOP/harness/bench.list}
case $LIST in */*) ;; *) LIST=$TOP/harness/$LIST ;; esac
[ -f "$LIST" ] || die "NTA_BENCH_LIST=$LIST: no such list (the lists are harness/bench*.list)"
ICOUNT=${NTA_ICOUNT:-shift=0,sleep=off}
# Any directory will do, but find out now, not after the boot: the results
# are made in the cache (which the build root sees) and copied there.
mkdir -p -- "$RES" 2>/dev/null || die "NTA_BENCH_DIR=$RES: cannot create that directory"
probe=$(mktemp -p "$RES" .nta-bench-probe.XXXXXX 2>/dev/null) ||
	die "NTA_BENCH_DIR=$RES: cannot write there"
rm -f -- "$probe"
[ "$check_only" = 0 ] || exit 0
WORK=$OUT/bench-results
rm -rf "$WORK"
mkdir -p "$WORK"

say "one boot, -icount $ICOUNT, 1 vCPU; progress lines come from the guest's console"
NTA_SMP=1 NTA_KUNIT=0 NTA_BOOT_TIMEOUT=${NTA_BOOT_TIMEOUT:-5400} \
	NTA_QEMU_EXTRA="-icount $ICOUNT" "$TOP/harness/boot.sh" mteperm "$LIST"

LOG=$LOGS/console-mteperm-$(basename "$LIST" .list).log
sed -n 's/\r$//; s/^NTA: # csv,//p' "$LOG" >"$WORK/raw.csv"
[ "$(wc -l <"$WORK/raw.csv")" -gt 1 ] || die "no measurements in $LOG"

{
	echo "QEMU:    $(inroot qemu-system-aarch64 --version | head -n 1)"
	echo "machine: -M virt,virtualization=on,mte=on,gic-version=3 -cpu max -smp 1 -m 3G"
	echo "timing:  -icount $ICOUNT (guest CNTVCT and CLOCK_MONOTONIC follow executed instructions)"
	echo "kernel:  $(sed -n 's/\r$//; s/^NTA: # profile [^,]*, kernel //p' "$LOG" | head -n 1)," \
		"config/kernel.config $(hash_of "$TOP/config/kernel.config"), series $(git -C "$KTREE" rev-parse --short HEAD)"
	echo "host:    $(nproc) cores, $(date -u +%Y-%m-%d)"
} >"$WORK/conditions.txt"

inroot python3 "$TOP/harness/benchreport.py" "$WORK/raw.csv" "$WORK" --conditions "$WORK/conditions.txt"
cp -- "$WORK"/* "$RES"/
say "raw numbers: $RES/raw.csv; tables: $RES/tables.md; plot: $RES/bench.png"
