/* SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause */
/*
 * What the bare-metal guests in this directory share: the memory map the
 * VMM gives them (vmm/src/bin/common/arm64.rs), turning on their MMU with
 * the VMM's level-1 table at TABLE, and their EL1 vector table.
 */
	.arch	armv8.5-a+memtag

#define RAM_BASE	0x40000000
#define IMAGE_BASE	0x80000000
#define MMIO_BASE	0x09000000
#define TABLE		(RAM_BASE + 0x10000)

/* MAIR: attr0 Device-nGnRE, attr1 Tagged Normal WB, attr2 Normal WB */
#define MAIR		0xfff004
/* TCR: T0SZ=25, IRGN0/ORGN0 WB, SH0 inner, 4K, EPD1, IPS 40 bits, TBI0 */
#define TCR		((25) | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23) | \
			 (2 << 32) | (1 << 37))
/* SCTLR: RES1 bits, M, C, I, ATA; tag check faults off (TCF=0) */
#define SCTLR		(0x30d00800 | (1 << 0) | (1 << 2) | (1 << 12) | (1 << 43))

/* Install the vectors at \vectors and turn the MMU on; clobbers x0. */
	.macro	el1_mmu_on vectors
	ldr	x0, =\vectors
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
	.endm

/*
 * A vector table (place it after .balign 2048) sending EL1h synchronous
 * exceptions to \sync and everything else to \other.
 */
	.macro	el1_vectors sync, other
	.rept	4			/* EL1t: sync, IRQ, FIQ, SError */
	.balign	128
	b	\other
	.endr
	.balign	128			/* EL1h sync, at 0x200 */
	b	\sync
	.rept	11			/* the rest of EL1h, then lower ELs */
	.balign	128
	b	\other
	.endr
	.endm

/* Return from an exception past the instruction that took it; clobbers x12. */
	.macro	el1_skip_eret
	mrs	x12, elr_el1
	add	x12, x12, #4
	msr	elr_el1, x12
	eret
	.endm

/* Report ESR_EL1 to the VMM at MMIO_BASE + \off, then stop for good. */
	.macro	el1_report_stop off
	mrs	x10, esr_el1
	mov	x20, #MMIO_BASE
	str	x10, [x20, #\off]
1:	wfi
	b	1b
	.endm
