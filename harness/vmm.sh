#!/usr/bin/env bash
# Build the VMM demo (vmm/, static aarch64, with the build root's cargo) and
# its bare-metal guest program, into $OUT/guest-bin for the initramfs.
#   vmm.sh            build
#   vmm.sh --host     host-side checks of the crate: cargo test, clippy, rustfmt
STAGE=vmm
# shellcheck source=harness/lib.sh
. "$(dirname "$0")/lib.sh"

DST=$OUT/guest-bin
mkdir -p "$DST" "$CACHE/cargo"

if [ "${1:-}" = --host ]; then
	AREA=vmm
	cd "$TOP/vmm"
	if cargo test --locked >"$LOGS/vmm-test.log" 2>&1; then
		verdict pass "cargo test: $(grep -o '[0-9]* passed' "$LOGS/vmm-test.log" | head -1)"
	else
		verdict fail "cargo test: see $LOGS/vmm-test.log"
		tail -n 30 "$LOGS/vmm-test.log" >&2
	fi
	if cargo clippy --locked --all-targets -- -D warnings >"$LOGS/vmm-clippy.log" 2>&1; then
		verdict pass "clippy (host): clean"
	else
		verdict fail "clippy (host): see $LOGS/vmm-clippy.log"
		grep -A8 -E '^(warning|error)' "$LOGS/vmm-clippy.log" | head -n 30 >&2
	fi
	if cargo fmt --check >"$LOGS/vmm-fmt.log" 2>&1; then
		verdict pass "rustfmt: clean"
	else
		verdict fail "rustfmt: see $LOGS/vmm-fmt.log"
		head -n 30 "$LOGS/vmm-fmt.log" >&2
	fi
	exit "$fail"
elif [ -n "${1:-}" ]; then
	die "unknown option '$1' (expected --host)"
fi

say "guest program"
# shellcheck disable=SC2016 # expanded by the inner shell
inroot sh -c 'aarch64-linux-gnu-gcc -nostdlib -static -Wl,-Ttext=0x40000000 \
	-Wl,--build-id=none -o "$2.elf" "$1" && aarch64-linux-gnu-objcopy -O binary "$2.elf" "$2"' \
	sh "$TOP/vmm/guest/demo-guest.S" "$OUT/demo-guest.bin"
cmp -s "$OUT/demo-guest.bin" "$DST/demo-guest.bin" || cp "$OUT/demo-guest.bin" "$DST/demo-guest.bin"

say "nta-demo (aarch64, static)"
# shellcheck disable=SC2016 # expanded by the inner shell
run_logged vmm-build inroot sh -c 'cd "$1/vmm" && CARGO_HOME="$2/cargo" cargo build --release \
	--locked --target aarch64-unknown-linux-gnu --target-dir "$3/vmm-target"' \
	sh "$TOP" "$CACHE" "$OUT"
bin=$OUT/vmm-target/aarch64-unknown-linux-gnu/release/nta-demo
cmp -s "$bin" "$DST/nta-demo" || cp "$bin" "$DST/nta-demo"
say "demo ready: $DST/nta-demo"
