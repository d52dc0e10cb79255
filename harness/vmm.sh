#!/usr/bin/env bash
# Build the VMM demo, benchmark and microVM (the vmm/ workspace, static aarch64, with the build
# root's cargo) and their bare-metal guest programs (vmm/guest/*.S), into
# $OUT/guest-bin for the initramfs; under make check also clippy them.
#   vmm.sh            build
#   vmm.sh --host     host-side checks of the workspace: cargo test, clippy,
#                     rustfmt (in the build root, for the build machine's arch)
STAGE=vmm
# shellcheck source=harness/lib.sh
. "$(dirname "$0")/lib.sh"

DST=$OUT/guest-bin
mkdir -p "$DST" "$CACHE/cargo"

# cargo_root CMD...: CMD (cargo ...) with the build root's cargo in the workspace vmm/, its registry
# cache in $CACHE/cargo, its output in $OUT (the host needs no Rust).
cargo_root() {
	# shellcheck disable=SC2016 # expanded by the inner shell
	inroot sh -c 'top=$1 target=$2; shift 2; cd "$top/vmm" &&
		CARGO_HOME="$0/cargo" CARGO_TARGET_DIR="$target" exec "$@"' \
		"$CACHE" "$TOP" "$OUT/vmm-host-target" "$@"
}

# rust_vmm_patches: copies the workspace and the registry's kvm-bindings and kvm-ioctls into
# $OUT/rust-vmm, applies vmm/rust-vmm's patches, builds check/ and the workspace against them.
rust_vmm_patches() {
	local rv=$OUT/rust-vmm reg crate patch
	cargo_root cargo fetch --locked || return
	rm -rf "$rv" && mkdir -p "$rv" && cp -r "$TOP/vmm" "$rv/ws" || return
	# The .crate archives as the registry delivered them (cargo fetch keeps them).
	reg=$(find "$CACHE/cargo/registry/cache" -mindepth 1 -maxdepth 1 -type d | head -n 1)
	for patch in "$TOP"/vmm/rust-vmm/*.patch; do
		crate=$(basename "$patch" -mte-perm.patch)
		[ -f "$reg/$crate.crate" ] || { echo "error: $crate.crate is not in $reg"; return 1; }
		tar -xzf "$reg/$crate.crate" -C "$rv" &&
			(cd "$rv/$crate" && git apply --verbose "$patch") || return
	done
	# shellcheck disable=SC2016 # expanded by the inner shell
	inroot sh -c 'rv=$1 cache=$2; for d in "$rv/ws/rust-vmm/check" "$rv/ws"; do
		(cd "$d" && CARGO_HOME="$cache/cargo" cargo build --offline --release \
			--target aarch64-unknown-linux-gnu --target-dir "$rv/target" \
			--config "patch.crates-io.kvm-bindings.path=\"$rv/kvm-bindings-0.14.2\"" \
			--config "patch.crates-io.kvm-ioctls.path=\"$rv/kvm-ioctls-0.25.1\"") || exit 1
		# A path dependency has no "source" in the lock file.
		if grep -A2 -E "name = \"kvm-(ioctls|bindings)\"" "$d/Cargo.lock" | grep -q "^source"; then
			echo "error: $d was not built against the patched crates"
			exit 1
		fi
	done' sh "$rv" "$CACHE"
}

if [ "${1:-}" = --host ]; then
	AREA=vmm
	if cargo_root cargo test --locked --workspace >"$LOGS/vmm-test.log" 2>&1; then
		verdict pass "cargo test: $(grep -o '[0-9]* passed' "$LOGS/vmm-test.log" | awk '{ n += $1 } END { print n }') passed"
	else
		verdict fail "cargo test: see $LOGS/vmm-test.log"
		tail -n 30 "$LOGS/vmm-test.log" >&2
	fi
	if cargo_root cargo clippy --locked --workspace --all-targets -- -D warnings >"$LOGS/vmm-clippy.log" 2>&1; then
		verdict pass "clippy (host): clean"
	else
		verdict fail "clippy (host): see $LOGS/vmm-clippy.log"
		grep -A8 -E '^(warning|error)' "$LOGS/vmm-clippy.log" | head -n 30 >&2
	fi
	# The hypervisor-neutral part alone (no kvm-ioctls, no vm-memory), as crosvm would use it.
	# And with its default features alone (kvm, vm-memory; no unstable-uapi).
	if cargo_root sh -c 'cargo clippy --locked -p nta-vmm --no-default-features --all-targets \
		-- -D warnings && cargo clippy --locked -p nta-vmm --no-default-features \
		--features unstable-uapi --all-targets -- -D warnings &&
		cargo clippy --locked -p nta-vmm --all-targets -- -D warnings' \
		>"$LOGS/vmm-neutral.log" 2>&1; then
		verdict pass "nta-vmm without kvm and vm-memory, and without unstable-uapi: clippy clean"
	else
		verdict fail "nta-vmm's feature combinations: see $LOGS/vmm-neutral.log"
		grep -A8 -E '^(warning|error)' "$LOGS/vmm-neutral.log" | head -n 30 >&2
	fi
	# Publishable, but for publish = false until the series is merged: cargo package packs
	# and builds it as crates.io would (cargo publish --dry-run stops at publish = false).
	if cargo_root cargo package --offline -p nta-vmm >"$LOGS/vmm-package.log" 2>&1; then
		verdict pass "nta-vmm: cargo package builds the packed crate"
	else
		verdict fail "nta-vmm: cargo package: see $LOGS/vmm-package.log"
		grep -A8 -E '^(warning|error)' "$LOGS/vmm-package.log" | head -n 30 >&2
	fi
	# The oldest and newest vm-memory nta-vmm claims (its Cargo.toml), with the build root's
	# Rust, through vmm/version-check (a VMM's use of it, with its own lock file).
	for v in 0.16.0 0.18.0; do
		# shellcheck disable=SC2016 # expanded by the inner shell
		if cargo_root sh -c 'cd version-check && cargo generate-lockfile -q &&
			cargo update -q -p vm-memory --precise "$1" && cargo build -q' sh "$v" \
			>"$LOGS/vmm-vm-memory-$v.log" 2>&1; then
			verdict pass "nta-vmm builds against vm-memory $v"
		else
			verdict fail "nta-vmm against vm-memory $v: see $LOGS/vmm-vm-memory-$v.log"
			grep -A8 -E '^(warning|error)' "$LOGS/vmm-vm-memory-$v.log" | head -n 30 >&2
		fi
	done
	# The rust-vmm patches (vmm/rust-vmm): applied to kvm-bindings and kvm-ioctls as fetched
	# from the registry, then their check and the whole workspace built for arm64 against them.
	if rust_vmm_patches >"$LOGS/vmm-rust-vmm.log" 2>&1; then
		verdict pass "rust-vmm patches apply; check/ and the workspace build against them (arm64)"
	else
		verdict fail "rust-vmm patches: see $LOGS/vmm-rust-vmm.log"
		grep -A8 -E '^(warning|error)' "$LOGS/vmm-rust-vmm.log" | head -n 30 >&2
	fi
	if cargo_root cargo fmt --all --check >"$LOGS/vmm-fmt.log" 2>&1; then
		verdict pass "rustfmt: clean"
	else
		verdict fail "rustfmt: see $LOGS/vmm-fmt.log"
		head -n 30 "$LOGS/vmm-fmt.log" >&2
	fi
	exit "$fail"
elif [ -n "${1:-}" ]; then
	die "unknown option '$1' (expected --host)"
fi

for src in "$TOP"/vmm/guest/*.S; do
	name=$(basename "$src" .S)
	say "guest program $name"
	# shellcheck disable=SC2016 # expanded by the inner shell
	inroot sh -c 'aarch64-linux-gnu-gcc -nostdlib -static -Wl,-Ttext=0x40000000 \
		-Wl,--build-id=none -o "$2.elf" "$1" && aarch64-linux-gnu-objcopy -O binary "$2.elf" "$2"' \
		sh "$src" "$OUT/$name.bin"
	cmp -s "$OUT/$name.bin" "$DST/$name.bin" || cp "$OUT/$name.bin" "$DST/$name.bin"
done

say "nta-demo, nta-bench, nta-vm (aarch64, static)"
# shellcheck disable=SC2016 # expanded by the inner shell
run_logged vmm-build inroot sh -c 'cd "$1/vmm" && CARGO_HOME="$2/cargo" cargo build --release \
	--locked --target aarch64-unknown-linux-gnu --target-dir "$3/vmm-target"' \
	sh "$TOP" "$CACHE" "$OUT"
for b in nta-demo nta-bench nta-vm; do
	bin=$OUT/vmm-target/aarch64-unknown-linux-gnu/release/$b
	cmp -s "$bin" "$DST/$b" || cp "$bin" "$DST/$b"
done

# nta-vmm's unit tests, for the guest (its MTE branch never runs on an x86 build machine).
say "nta-vmm unit tests (aarch64, static)"
# shellcheck disable=SC2016 # expanded by the inner shell
run_logged vmm-unit-build inroot sh -c 'cd "$1/vmm" && CARGO_HOME="$2/cargo" cargo test --release \
	--locked --no-run -p nta-vmm --features unstable-uapi --target aarch64-unknown-linux-gnu \
	--target-dir "$3/vmm-target"' sh "$TOP" "$CACHE" "$OUT"
unit=$(sed -n 's|.*Executable unittests src/lib.rs (\(.*\))$|\1|p' "$LOGS/vmm-unit-build.log" | tail -n 1)
[ -n "$unit" ] || die "no nta-vmm unit test binary in $LOGS/vmm-unit-build.log"
cmp -s "$unit" "$DST/nta-vmm-tests" || cp "$unit" "$DST/nta-vmm-tests"

# The host's clippy (vmm.sh --host) does not see the arm64-only code.
if [ -n "${NTA_RESULTS:-}" ]; then
	AREA=vmm
	# shellcheck disable=SC2016 # expanded by the inner shell
	if inroot sh -c 'cd "$1/vmm" && CARGO_HOME="$2/cargo" cargo clippy --release --locked \
		--target aarch64-unknown-linux-gnu --target-dir "$3/vmm-target" --all-targets \
		-- -D warnings' sh "$TOP" "$CACHE" "$OUT" >"$LOGS/vmm-clippy-arm64.log" 2>&1; then
		verdict pass "clippy (aarch64): clean"
	else
		verdict fail "clippy (aarch64): see $LOGS/vmm-clippy-arm64.log"
		grep -A8 -E '^(warning|error)' "$LOGS/vmm-clippy-arm64.log" | head -n 30 >&2
	fi
	exit "$fail"
fi
say "ready: $DST/nta-demo, $DST/nta-bench, $DST/nta-vm"
