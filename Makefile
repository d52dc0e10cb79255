# NoTagAccess for MTE guests on arm64 KVM: harness entry points.
# Build products and caches live in $(NTA_CACHE) (default ~/.cache/nta-kvm).
H := harness
PROFILE ?= mteperm
PROFILES := $(notdir $(wildcard $(H)/profiles/*))
ifeq ($(filter $(PROFILE),$(PROFILES)),)
$(error PROFILE=$(PROFILE) is not one of: $(PROFILES))
endif

.PHONY: help demo check root base kernel selftests build boot series \
	reset-tree checkpatch host-tests bench bench-dir clean

help:
	@echo "make demo        build everything and run the end-to-end demo under QEMU"
	@echo "make check       run the whole test suite (ends with 'N passed, N failed')"
	@echo "make build       build root, base + series/, kernel, selftests, initramfs"
	@echo "make boot PROFILE=mteperm|nomteperm   boot and run the guest tests"
	@echo "make bench       measure NoTagAccess against today's workarounds (QEMU -icount)"
	@echo "make series      export the scratch tree's commits to series/"
	@echo "make reset-tree  drop the scratch tree's commits, re-apply series/"
	@echo "make checkpatch  checkpatch.pl --strict over series/"
	@echo "make clean       remove build outputs (keeps build root and base)"

root:
	@$(H)/mkroot.sh --versions
base: root
	@$(H)/base.sh
kernel: base
	@$(H)/kbuild.sh
selftests: kernel
	@$(H)/selftests.sh
build: selftests
	@$(H)/guestprogs.sh
	@$(H)/vmm.sh
	@$(H)/vmguest.sh
	@$(H)/initramfs.sh
boot: build
	@$(H)/boot.sh $(PROFILE)
# The demo needs HEAD's kernel only; make check walks every patch.
demo: export NTA_BISECT := $(or $(NTA_BISECT),none)
demo: build
	@$(H)/demo.sh
check:
	@$(H)/check.sh
bench: export NTA_BISECT := $(or $(NTA_BISECT),none)
# The results directory is checked first: a bad NTA_BENCH_DIR fails at once.
bench: bench-dir build
	@$(H)/bench.sh
bench-dir:
	@$(H)/bench.sh --check-dir
series: root
	@$(H)/base.sh --export
reset-tree: root
	@$(H)/base.sh --reset
checkpatch: base
	@$(H)/checkpatch.sh
host-tests: root
	@$(H)/hosttests.sh
clean:
	rm -rf "$${NTA_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/nta-kvm}/out"
