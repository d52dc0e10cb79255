/* SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause */
/*
 * The demo's guest: bare-metal AArch64 at EL1, loaded at RAM_BASE by nta-demo,
 * which also writes its level-1 translation table at TABLE (1 GiB blocks:
 * [0, 1G) Device, [1G, 2G) RAM and [2G, 3G) the file image, both Tagged Normal).
 *
 * It reports each step to the VMM by storing to MMIO_BASE + 8 * event, which
 * KVM turns into an MMIO exit (the address is in no memslot):
 *   event 1: first word of the file image, read through the slot
 *   event 2: tag read back (LDG) from its own RAM after STG of tag 5
 *   event 3: tag read back from the file image after STG of tag 7 (0xff: the
 *            LDG did not complete, the guest took an abort)
 *   event 4/5: ESR_EL1/FAR_EL1 of a synchronous abort it handled (skipped)
 *   event 6: first word of the file image after the tag accesses
 *   event 7: done
 *   event 8: an unexpected exception (ESR_EL1); the guest then stops
 */
#include "el1.h"

#define FILE_BASE	IMAGE_BASE
#define SCRATCH		(RAM_BASE + 0x20000)

	.text
	.global	_start
_start:
	el1_mmu_on vectors

	ldr	x20, =MMIO_BASE
	ldr	x21, =FILE_BASE
	ldr	x22, =SCRATCH

	/* 1: the file's data, read through the NoTagAccess slot */
	ldr	x1, [x21]
	str	x1, [x20, #8]

	/* 2: tags in its own (tag-capable) RAM */
	mov	x2, #5
	orr	x3, x22, x2, lsl #56
	stg	x3, [x3]
	ldg	x4, [x22]
	ubfx	x4, x4, #56, #4
	str	x4, [x20, #16]

	/* 3: tags in the file image: the VMM decides what happens */
	mov	x2, #7
	orr	x3, x21, x2, lsl #56
	stg	x3, [x3]
	mov	x4, #0xff << 56
	ldg	x4, [x21]
	ubfx	x4, x4, #56, #8
	cmp	x4, #0xff
	b.eq	1f
	and	x4, x4, #0xf
1:	str	x4, [x20, #24]

	/* 6: the data is still there */
	ldr	x1, [x21]
	str	x1, [x20, #48]

	/* 7: done */
	str	xzr, [x20, #56]
2:	wfi
	b	2b

/* A synchronous exception at EL1: report it, skip the instruction */
sync_el1:
	mrs	x10, esr_el1
	str	x10, [x20, #32]
	mrs	x11, far_el1
	str	x11, [x20, #40]
	el1_skip_eret

unexpected:
	el1_report_stop 64

	.balign	2048
vectors:
	el1_vectors sync_el1, unexpected
	.ltorg
