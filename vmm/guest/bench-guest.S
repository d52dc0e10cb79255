/* SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause */
/*
 * The benchmark's guest: bare-metal AArch64 at EL1, loaded at RAM_BASE by
 * nta-bench, which also writes its level-1 translation table at TABLE
 * (1 GiB blocks; the VMM picks each block's attribute index).
 *
 * It talks to the VMM through MMIO at MMIO_BASE (no memslot there, so every
 * access is an MMIO exit):
 *   write +0x00: ready, with CNTFRQ_EL0 (its first store: "first instruction")
 *   read  +0x08: next operation (0: stop), +0x10: base address, +0x18: pages
 *   write +0x20: elapsed CNTVCT_EL0 ticks of the operation,
 *         +0x28: synchronous aborts taken during it, +0x30: sum of the words
 *         read (the last write of an operation)
 *   write +0x38: an unexpected exception (ESR_EL1); the guest then stops
 * Operations touch one word in each 4 KiB page of [base, base + pages * 4K):
 *   1: load (summing the words), 2: STG of tag 7 (a tag access).
 */
#include "el1.h"

	.text
	.global	_start
_start:
	mov	x20, #MMIO_BASE
	mrs	x0, cntfrq_el0
	str	x0, [x20]
	el1_mmu_on vectors

next:
	ldr	x0, [x20, #0x08]
	ldr	x1, [x20, #0x10]
	ldr	x2, [x20, #0x18]
	cbz	x0, stop
	mov	x15, #0
	mov	x4, #0
	mov	x5, #7
	isb
	mrs	x10, cntvct_el0
	cbz	x2, done
	cmp	x0, #1
	b.eq	load
	cmp	x0, #2
	b.eq	tag
	b	done
load:
	ldr	x3, [x1]
	add	x4, x4, x3
	add	x1, x1, #0x1000
	subs	x2, x2, #1
	b.ne	load
	b	done
tag:
	orr	x3, x1, x5, lsl #56
	stg	x3, [x3]
	add	x1, x1, #0x1000
	subs	x2, x2, #1
	b.ne	tag
done:
	isb
	mrs	x11, cntvct_el0
	sub	x12, x11, x10
	str	x12, [x20, #0x20]
	str	x15, [x20, #0x28]
	str	x4, [x20, #0x30]
	b	next

stop:
	wfi
	b	stop

/* A synchronous exception at EL1 (the SEA policy): count it, skip the access */
sync_el1:
	add	x15, x15, #1
	el1_skip_eret

unexpected:
	el1_report_stop 0x38

	.balign	2048
vectors:
	el1_vectors sync_el1, unexpected
	.ltorg
