/* SPDX-License-Identifier: GPL-2.0 */
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
	.arch	armv8.5-a+memtag

#define RAM_BASE	0x40000000
#define FILE_BASE	0x80000000
#define MMIO_BASE	0x09000000
#define TABLE		(RAM_BASE + 0x10000)
#define SCRATCH		(RAM_BASE + 0x20000)

/* MAIR: attr0 Device-nGnRE, attr1 Tagged Normal Write-Back */
#define MAIR		0xf004
/* TCR: T0SZ=25, IRGN0/ORGN0 WB, SH0 inner, 4K, EPD1, IPS 40 bits, TBI0 */
#define TCR		((25) | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23) | \
			 (2 << 32) | (1 << 37))
/* SCTLR: RES1 bits, M, C, I, ATA; tag check faults off (TCF=0) */
#define SCTLR		(0x30d00800 | (1 << 0) | (1 << 2) | (1 << 12) | (1 << 43))

	.text
	.global	_start
_start:
	ldr	x0, =vectors
	msr	vbar_el1, x0
	ldr	x0, =MAIR
	msr	mair_el1, x0
	ldr	x0, =TCR
	msr	tcr_el1, x0
	ldr	x0, =TABLE
	msr	ttbr0_el1, x0
	isb
	tlbi	vmalle1
	dsb	nsh
	isb
	ldr	x0, =SCTLR
	msr	sctlr_el1, x0
	isb

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
	mrs	x12, elr_el1
	add	x12, x12, #4
	msr	elr_el1, x12
	eret

unexpected:
	mrs	x10, esr_el1
	ldr	x20, =MMIO_BASE
	str	x10, [x20, #64]
3:	wfi
	b	3b

	.balign	2048
vectors:
	.rept	4			/* EL1t: sync, IRQ, FIQ, SError */
	.balign	128
	b	unexpected
	.endr
	.balign	128			/* EL1h sync, at 0x200 */
	b	sync_el1
	.rept	11			/* the rest of EL1h, then lower ELs */
	.balign	128
	b	unexpected
	.endr
	.ltorg
