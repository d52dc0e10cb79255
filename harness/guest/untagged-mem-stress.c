// SPDX-License-Identifier: GPL-2.0
/*
 * untagged-mem-stress: check /dev/untagged-mem (the Rust sample device)
 * refuses bad mmap() requests with the documented errno, then have several
 * threads open, map, fill, check, unmap and close it in parallel for a
 * bounded number of rounds. Exit status: 0 if all went as documented.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef PROT_MTE
#define PROT_MTE 0x20
#endif

#define DEV "/dev/untagged-mem"
#define MAX_MAP_PAGES 256
#define MAX_FILE_PAGES (4 * MAX_MAP_PAGES)
#define THREADS 4
#define ROUNDS 100

static long page_size;
static int failures;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void fail(const char *what)
{
	pthread_mutex_lock(&lock);
	failures++;
	fprintf(stderr, "FAIL: %s\n", what);
	pthread_mutex_unlock(&lock);
}

/* mmap() must fail with @err; @what names the request in the report. */
static void expect_refused(int fd, size_t pages, int prot, int flags, off_t off,
			   int err, const char *what)
{
	void *p = mmap(NULL, pages * page_size, prot, flags, fd, off);
	char msg[160];

	if (p != MAP_FAILED) {
		munmap(p, pages * page_size);
		snprintf(msg, sizeof(msg), "%s: accepted", what);
		fail(msg);
	} else if (errno != err) {
		snprintf(msg, sizeof(msg), "%s: errno %d (%s), expected %d", what,
			 errno, strerror(errno), err);
		fail(msg);
	} else {
		printf("ok: %s refused (%s)\n", what, strerror(err));
	}
}

static void check_errors(void)
{
	int fd = open(DEV, O_RDWR);
	void *maps[MAX_FILE_PAGES / MAX_MAP_PAGES];
	size_t i;

	if (fd < 0) {
		perror(DEV);
		exit(1);
	}
	expect_refused(fd, 1, PROT_READ, MAP_PRIVATE, 0, EINVAL, "MAP_PRIVATE");
	expect_refused(fd, 1, PROT_READ, MAP_SHARED, page_size, EINVAL, "offset 1 page");
	expect_refused(fd, 1, PROT_READ | PROT_EXEC, MAP_SHARED, 0, EINVAL, "PROT_EXEC");
	expect_refused(fd, MAX_MAP_PAGES + 1, PROT_READ, MAP_SHARED, 0, EINVAL,
		       "257 pages");
	/*
	 * PROT_MTE is refused by the core after the driver's mmap handler
	 * ran, whose pages then count against this file's budget until
	 * close: check the budget on a fresh file.
	 */
	expect_refused(fd, 1, PROT_READ | PROT_MTE, MAP_SHARED, 0, EINVAL, "PROT_MTE");
	close(fd);
	fd = open(DEV, O_RDWR);
	if (fd < 0) {
		perror(DEV);
		exit(1);
	}

	/* The per-file budget: four full mappings, then no more */
	for (i = 0; i < MAX_FILE_PAGES / MAX_MAP_PAGES; i++) {
		maps[i] = mmap(NULL, MAX_MAP_PAGES * page_size, PROT_READ, MAP_SHARED, fd, 0);
		if (maps[i] == MAP_FAILED)
			fail("full mapping within the per-file budget");
	}
	expect_refused(fd, 1, PROT_READ, MAP_SHARED, 0, ENOMEM, "past the per-file budget");
	for (i = 0; i < MAX_FILE_PAGES / MAX_MAP_PAGES; i++)
		if (maps[i] != MAP_FAILED)
			munmap(maps[i], MAX_MAP_PAGES * page_size);
	close(fd);
}

static void *worker(void *arg)
{
	unsigned int seed = (uintptr_t)arg;
	int round;

	for (round = 0; round < ROUNDS; round++) {
		size_t pages = 1 + rand_r(&seed) % 16, i;
		uint64_t *p, tag = ((uint64_t)(uintptr_t)arg << 32) | round;
		int fd = open(DEV, O_RDWR);

		if (fd < 0) {
			fail("open");
			break;
		}
		p = mmap(NULL, pages * page_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED) {
			fail("mmap");
			close(fd);
			break;
		}
		/* Fresh memory is zeroed, and holds what we write */
		for (i = 0; i < pages * page_size / 8; i += 512)
			if (p[i])
				fail("fresh page not zeroed");
		for (i = 0; i < pages * page_size / 8; i++)
			p[i] = tag + i;
		/* Closing first: the mapping must keep its pages alive */
		if (round & 1)
			close(fd);
		for (i = 0; i < pages * page_size / 8; i++)
			if (p[i] != tag + i) {
				fail("data changed under us");
				break;
			}
		munmap(p, pages * page_size);
		if (!(round & 1))
			close(fd);
	}
	return NULL;
}

int main(void)
{
	pthread_t threads[THREADS];
	long i;

	page_size = sysconf(_SC_PAGESIZE);
	check_errors();
	for (i = 0; i < THREADS; i++)
		pthread_create(&threads[i], NULL, worker, (void *)(i + 1));
	for (i = 0; i < THREADS; i++)
		pthread_join(threads[i], NULL);
	printf("%d threads x %d rounds of open/mmap/fill/check/munmap/close: %s\n",
	       THREADS, ROUNDS, failures ? "FAILED" : "ok");
	return failures ? 1 : 0;
}
