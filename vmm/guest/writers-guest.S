/* SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause */
/*
 * The concurrent writers' guest: bare-metal AArch64 at EL1 on several vCPUs,
 * loaded at RAM_BASE by nta-demo --writers, which starts every vCPU there.
 * The image at IMAGE_BASE (8 MiB, no tag storage, zero-filled) has 16 pages
 * of interest, 512 KiB apart: four in each 2 MiB chunk, the chunk's first
 * page among them.
 *
 * vCPU 1..N (writers) count: the k-th increments the word at offset 8 * k of
 * page i % 16 for i = 0, 1, ... (load, add, store) until vCPU 0 says stop or
 * MAX_WRITES, keeping the count of its writes in a register; then it sums
 * its 16 words: every write it made must be there.
 * vCPU 0 (tagger) waits for all writers, then, each time writer 1 has made
 * another DELTA writes, tags (STG) the first page of the next chunk: with the
 * make-taggable policy each is a KVM exit and a swap of that chunk while the
 * writers go on writing it. Then it reads the tags back and says stop.
 *
 * MMIO at MMIO_BASE (in no memslot: every access exits):
 *   read  +0x18: the number of writers
 *   write +0x20: tag read back from a chunk (4 times), +0x28: writer 1's
 *         count when the last tag access completed, +0x30: the tagger is done
 *   write +0x38: an unexpected exception (ESR_EL1); the vCPU then stops
 *   write +0x100 + 16 * k: writer k's count of writes, then +0x108 + 16 * k:
 *         the writes it did not find again (0: all there), its last access
 * Shared RAM at SHARED: +0 writers started, +8 stop, +0x40 + 8 * k writer k's
 * count so far.
 */
#include "el1.h"

#define SHARED		(RAM_BASE + 0x30000)
#define NPAGES		16
#define STRIDE		0x80000
#define NCHUNKS		4
#define DELTA		20000
#define MAX_WRITES	4000000

	.text
	.global	_start
_start:
	el1_mmu_on vectors
	mov	x20, #MMIO_BASE
	ldr	x21, =IMAGE_BASE
	ldr	x22, =SHARED
	mrs	x0, mpidr_el1
	and	x19, x0, #0xff
	cbz	x19, tagger

writer:
	mov	x1, #1
	stadd	x1, [x22]
	mov	x2, #0
	ldr	x9, =MAX_WRITES
	lsl	x3, x19, #3
	add	x23, x22, #0x40
	add	x23, x23, x3
1:	ldr	x4, [x22, #8]
	cbnz	x4, 2f
	cmp	x2, x9
	b.eq	2f
	and	x5, x2, #(NPAGES - 1)
	lsl	x5, x5, #19
	add	x5, x5, x21
	ldr	x6, [x5, x3]
	add	x6, x6, #1
	str	x6, [x5, x3]
	add	x2, x2, #1
	str	x2, [x23]
	b	1b
2:	dsb	sy
	mov	x7, #0
	mov	x5, x21
	mov	x8, #NPAGES
3:	ldr	x6, [x5, x3]
	add	x7, x7, x6
	add	x5, x5, #STRIDE
	subs	x8, x8, #1
	b.ne	3b
	lsl	x10, x19, #4
	add	x10, x10, x20
	str	x2, [x10, #0x100]
	sub	x11, x2, x7
	str	x11, [x10, #0x108]
	b	halt

tagger:
	ldr	x8, [x20, #0x18]
1:	ldr	x1, [x22]
	cmp	x1, x8
	b.lo	1b
	mov	x12, #0
	mov	x13, #7
2:	ldr	x14, [x22, #0x48]
	ldr	x1, =DELTA
	add	x14, x14, x1
3:	ldr	x15, [x22, #0x48]
	cmp	x15, x14
	b.lo	3b
	lsl	x5, x12, #21
	add	x5, x5, x21
	orr	x3, x5, x13, lsl #56
	stg	x3, [x3]
	add	x12, x12, #1
	cmp	x12, #NCHUNKS
	b.ne	2b
	ldr	x15, [x22, #0x48]
	str	x15, [x20, #0x28]
	mov	x12, #0
4:	lsl	x5, x12, #21
	add	x5, x5, x21
	mov	x4, #0
	ldg	x4, [x5]
	ubfx	x4, x4, #56, #4
	str	x4, [x20, #0x20]
	add	x12, x12, #1
	cmp	x12, #NCHUNKS
	b.ne	4b
	mov	x1, #1
	str	x1, [x22, #8]
	str	xzr, [x20, #0x30]

halt:
	wfi
	b	halt

unexpected:
	el1_report_stop 0x38

	.balign	2048
vectors:
	el1_vectors unexpected, unexpected
	.ltorg
