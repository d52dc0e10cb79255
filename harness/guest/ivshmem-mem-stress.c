// SPDX-License-Identifier: GPL-2.0
/*
 * ivshmem-mem-stress: check /dev/ivshmem-mem (the Rust sample driver for
 * ivshmem-plain's shared memory) as the driver documents it, bounded:
 *
 *  - bad mmap() requests fail with EINVAL: MAP_PRIVATE, PROT_EXEC,
 *    PROT_MTE, an offset at or past the end of the window, a length past it;
 *  - it is device memory, not an allocator: two mappings of one offset,
 *    from two open files, see the same bytes, also when the second file
 *    was opened read-only (its MAP_SHARED mapping lacks VM_SHARED);
 *  - several threads open, map (at their own offsets), write, check through
 *    a second mapping, unmap and close in parallel, while the main thread
 *    unbinds and rebinds the PCI driver: a mapping made before an unbind
 *    keeps working, mmap() of a file opened before it fails with ENODEV,
 *    nothing else fails, and the kernel log stays clean (checked by the
 *    harness).
 *
 * Usage: ivshmem-mem-stress [WINDOW_BYTES]  (default 2 MiB: harness/boot.sh)
 * Exit status 0 if everything went as documented.
 */
#include <dirent.h>
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

#define DEV "/dev/ivshmem-mem"
#define DRV "/sys/bus/pci/drivers/rust_driver_ivshmem"
#define THREADS 4
#define ROUNDS 200
#define REBINDS 5

static size_t page_size, window;
static int failures;
static char bdf[256];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void fail(const char *what, int err)
{
	pthread_mutex_lock(&lock);
	failures++;
	fprintf(stderr, "FAIL: %s%s%s\n", what, err ? ": " : "", err ? strerror(err) : "");
	pthread_mutex_unlock(&lock);
}

static int open_dev(void)
{
	int fd = open(DEV, O_RDWR);

	if (fd < 0) {
		perror(DEV);
		exit(1);
	}
	return fd;
}

/* mmap() of @len bytes at @off must fail with @err */
static void expect_refused(int fd, size_t len, int prot, int flags, off_t off, int err,
			   const char *what)
{
	void *p = mmap(NULL, len, prot, flags, fd, off);
	char msg[160];

	if (p != MAP_FAILED) {
		munmap(p, len);
		snprintf(msg, sizeof(msg), "%s: accepted", what);
		fail(msg, 0);
	} else if (errno != err) {
		snprintf(msg, sizeof(msg), "%s: errno %d, expected %d (%s)", what, errno, err,
			 strerror(err));
		fail(msg, 0);
	} else {
		printf("ok: %s refused (%s)\n", what, strerror(err));
	}
}

static void check_requests(void)
{
	int fd = open_dev(), fd2 = open(DEV, O_RDONLY);
	volatile uint64_t *a, *b;

	if (fd2 < 0) {
		perror(DEV " (read-only)");
		exit(1);
	}

	expect_refused(fd, page_size, PROT_READ, MAP_PRIVATE, 0, EINVAL, "MAP_PRIVATE");
	expect_refused(fd, page_size, PROT_READ | PROT_EXEC, MAP_SHARED, 0, EINVAL, "PROT_EXEC");
	expect_refused(fd, page_size, PROT_READ | PROT_MTE, MAP_SHARED, 0, EINVAL, "PROT_MTE");
	expect_refused(fd, page_size, PROT_READ, MAP_SHARED, window, EINVAL,
		       "offset at the end of the window");
	expect_refused(fd, 2 * page_size, PROT_READ, MAP_SHARED, window - page_size, EINVAL,
		       "length past the end of the window");
	expect_refused(fd, window + page_size, PROT_READ, MAP_SHARED, 0, EINVAL,
		       "window + 1 page");

	/* The whole window, and its last page from a read-only file: the same memory */
	a = mmap(NULL, window, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	b = mmap(NULL, page_size, PROT_READ, MAP_SHARED, fd2, window - page_size);
	if (a == MAP_FAILED || b == MAP_FAILED) {
		fail("mapping the window", errno);
		exit(1);
	}
	a[(window - page_size) / 8 + 3] = 0x6976736873686d65ULL;
	if (b[3] != 0x6976736873686d65ULL)
		fail("two mappings of the last page disagree", 0);
	else
		printf("ok: two mappings of one offset see the same memory (one read-only)\n");
	expect_refused(fd2, page_size, PROT_READ | PROT_WRITE, MAP_SHARED, 0, EACCES,
		       "PROT_WRITE on a read-only file");
	if (!mprotect((void *)b, page_size, PROT_READ | PROT_WRITE))
		fail("mprotect(PROT_WRITE) of the read-only file's mapping: accepted", 0);
	else if (errno != EACCES)
		fail("mprotect(PROT_WRITE) of the read-only file's mapping", errno);
	else
		printf("ok: mprotect(PROT_WRITE) of the read-only file's mapping refused\n");
	munmap((void *)a, window);
	munmap((void *)b, page_size);
	close(fd);
	close(fd2);
}

/* Each thread owns window / THREADS bytes; ENODEV is fine while unbound */
static void *worker(void *arg)
{
	uintptr_t id = (uintptr_t)arg;
	size_t span = window / THREADS, len, i;
	unsigned int seed = id;
	int round, fd;

	for (round = 0; round < ROUNDS; round++) {
		off_t off = id * span + (rand_r(&seed) % (span / page_size)) * page_size;
		uint64_t tag = ((uint64_t)id << 32) | round;
		volatile uint64_t *p, *q;

		len = page_size * (1 + rand_r(&seed) % ((id * span + span - off) / page_size));
		fd = open(DEV, O_RDWR);
		if (fd < 0) {
			if (errno != ENOENT && errno != ENODEV)
				fail("open", errno);
			continue;	/* unbound: the misc device is gone */
		}
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off);
		if (p == MAP_FAILED) {
			if (errno != ENODEV)
				fail("mmap", errno);
			close(fd);
			continue;
		}
		q = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, off);
		/* Closing first: the mappings stay */
		if (round & 1)
			close(fd);
		for (i = 0; i < len / 8; i += 64)
			p[i] = tag + i;
		if (q != MAP_FAILED) {
			for (i = 0; i < len / 8; i += 64)
				if (q[i] != tag + i) {
					fail("second mapping does not see the first's writes", 0);
					break;
				}
			munmap((void *)q, len);
		} else if (errno != ENODEV) {
			fail("second mmap", errno);
		}
		munmap((void *)p, len);
		if (!(round & 1))
			close(fd);
	}
	return NULL;
}

static int write_sysfs(const char *file, const char *val)
{
	int fd = open(file, O_WRONLY), ret = 0;

	if (fd < 0 || write(fd, val, strlen(val)) != (ssize_t)strlen(val))
		ret = errno;
	if (fd >= 0)
		close(fd);
	return ret;
}

/* The bound device's address, the one entry of the driver's directory with a ':' */
static void find_device(void)
{
	struct dirent *e;
	DIR *d = opendir(DRV);

	if (!d) {
		fail("opendir " DRV, errno);
		exit(1);
	}
	while ((e = readdir(d)))
		if (strchr(e->d_name, ':'))
			snprintf(bdf, sizeof(bdf), "%s", e->d_name);
	closedir(d);
	if (!bdf[0]) {
		fail("no device bound to " DRV, 0);
		exit(1);
	}
}

static void unbind_rebind(void)
{
	volatile uint64_t *p;
	int fd, i, err;

	for (i = 0; i < REBINDS; i++) {
		fd = open_dev();
		p = mmap(NULL, page_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED) {
			fail("mmap before unbind", errno);
			exit(1);
		}
		usleep(20000);
		err = write_sysfs(DRV "/unbind", bdf);
		if (err) {
			fail("unbind", err);
			exit(1);
		}
		/* The old mapping still works; new ones from the old file do not */
		p[1] = i;
		if (p[1] != (uint64_t)i)
			fail("mapping made before the unbind", 0);
		expect_refused(fd, page_size, PROT_READ, MAP_SHARED, 0, ENODEV,
			       "mmap after unbind");
		munmap((void *)p, page_size);
		close(fd);
		usleep(20000);
		err = write_sysfs(DRV "/bind", bdf);
		if (err) {
			fail("bind", err);
			exit(1);
		}
		/* devtmpfs creates the node again */
		while (access(DEV, F_OK))
			usleep(1000);
	}
}

int main(int argc, char **argv)
{
	pthread_t threads[THREADS];
	uintptr_t i;

	page_size = sysconf(_SC_PAGESIZE);
	window = argc > 1 ? strtoul(argv[1], NULL, 0) : 2UL << 20;
	if (!window || window % (THREADS * page_size)) {
		fprintf(stderr, "bad window size %zu\n", window);
		return 2;
	}
	check_requests();
	find_device();
	for (i = 0; i < THREADS; i++)
		pthread_create(&threads[i], NULL, worker, (void *)i);
	unbind_rebind();
	for (i = 0; i < THREADS; i++)
		pthread_join(threads[i], NULL);
	printf("%d threads x up to %d rounds of open/mmap/write/check/munmap/close, %d unbinds: %s\n",
	       THREADS, ROUNDS, REBINDS, failures ? "FAILED" : "ok");
	return failures ? 1 : 0;
}
