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
 *    unbinds and rebinds the PCI driver; a thread's access gets SIGBUS only
 *    if an unbind ran since it mapped, mmap() fails only with ENODEV;
 *  - an unbind revokes every mapping: one made before it, and one made
 *    through a second device node (mknod) of the same device, get SIGBUS
 *    after it and still after the rebind; mmap() of a file opened before it
 *    fails with ENODEV; a file opened after the rebind maps working memory;
 *  - a KVM guest reading the window through a memslot loses it at the
 *    unbind: its next read fails KVM_RUN with EFAULT, and a memslot over a
 *    new mapping after the rebind works. Where KVM cannot map PFNMAP memory
 *    cacheable (KVM_CAP_ARM_CACHEABLE_PFNMAP_SUPPORTED 0: no FEAT_S2FWB),
 *    the memslot must be refused with EINVAL instead;
 *  - the kernel log stays clean (checked by the harness).
 *
 * Usage: ivshmem-mem-stress [WINDOW_BYTES]  (default 2 MiB: harness/boot.sh)
 * Exit status 0 if everything went as documented.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#ifndef PROT_MTE
#define PROT_MTE 0x20
#endif

#define DEV "/dev/ivshmem-mem"
#define ALT_NODE "/dev/ivshmem-mem-alt"	/* a second node of the same misc device */
#define DRV "/sys/bus/pci/drivers/rust_driver_ivshmem"
#define THREADS 4
#define ROUNDS 200
#define REBINDS 5

static size_t page_size, window;
static int failures;
static char bdf[256];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
/* Unbinds started and finished: a SIGBUS is expected once one started */
static int unbinds_started, unbinds_done;
/* Where a SIGBUS returns to, in the thread that armed it */
static __thread sigjmp_buf bus_jmp;
static __thread volatile sig_atomic_t bus_armed;

static void on_sigbus(int sig)
{
	if (!bus_armed) {
		signal(sig, SIG_DFL);
		raise(sig);
	}
	bus_armed = 0;
	siglongjmp(bus_jmp, 1);
}

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

/*
 * Each thread owns window / THREADS bytes. ENODEV is fine while unbound, and
 * so is a SIGBUS once an unbind has started since the thread mapped.
 */
static void *worker(void *arg)
{
	uintptr_t id = (uintptr_t)arg;
	size_t span = window / THREADS, len, i;
	unsigned int seed = id;
	int round, fd, done;

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
		done = __atomic_load_n(&unbinds_done, __ATOMIC_SEQ_CST);
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off);
		if (p == MAP_FAILED) {
			if (errno != ENODEV)
				fail("mmap", errno);
			close(fd);
			continue;
		}
		q = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, off);
		if (q == MAP_FAILED && errno != ENODEV)
			fail("second mmap", errno);
		/* Closing first: the mappings stay */
		if (round & 1)
			close(fd);
		if (sigsetjmp(bus_jmp, 1)) {
			if (__atomic_load_n(&unbinds_started, __ATOMIC_SEQ_CST) == done)
				fail("SIGBUS without an unbind since the mmap()", 0);
			goto unmap;
		}
		bus_armed = 1;
		for (i = 0; i < len / 8; i += 64)
			p[i] = tag + i;
		if (q != MAP_FAILED)
			for (i = 0; i < len / 8; i += 64)
				if (q[i] != tag + i) {
					fail("second mapping does not see the first's writes", 0);
					break;
				}
		bus_armed = 0;
unmap:
		if (q != MAP_FAILED)
			munmap((void *)q, len);
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

static void unbind(void)
{
	int err;

	__atomic_add_fetch(&unbinds_started, 1, __ATOMIC_SEQ_CST);
	err = write_sysfs(DRV "/unbind", bdf);
	__atomic_add_fetch(&unbinds_done, 1, __ATOMIC_SEQ_CST);
	if (err) {
		fail("unbind", err);
		exit(1);
	}
}

static void bind(void)
{
	int err = write_sysfs(DRV "/bind", bdf);

	if (err) {
		fail("bind", err);
		exit(1);
	}
	/* devtmpfs creates the node again */
	while (access(DEV, F_OK))
		usleep(1000);
}

/* A read of @p must get SIGBUS: its mapping was revoked */
static void expect_sigbus(volatile uint64_t *p, const char *what, int quiet)
{
	char msg[160];

	if (sigsetjmp(bus_jmp, 1)) {
		if (!quiet)
			printf("ok: %s gets SIGBUS\n", what);
		return;
	}
	bus_armed = 1;
	(void)p[0];
	bus_armed = 0;
	snprintf(msg, sizeof(msg), "%s still reads", what);
	fail(msg, 0);
}

/* A mapping of the device's first page through a second node, made now */
static volatile uint64_t *map_through_alt_node(int *fd)
{
	struct stat st;
	void *p;

	unlink(ALT_NODE);
	if (stat(DEV, &st) || mknod(ALT_NODE, S_IFCHR | 0600, st.st_rdev)) {
		fail("mknod " ALT_NODE, errno);
		exit(1);
	}
	*fd = open(ALT_NODE, O_RDWR);
	p = *fd < 0 ? MAP_FAILED : mmap(NULL, page_size, PROT_READ, MAP_SHARED, *fd, 0);
	if (p == MAP_FAILED) {
		fail("mapping through " ALT_NODE, errno);
		exit(1);
	}
	return p;
}

static void unbind_rebind(void)
{
	volatile uint64_t *p, *alt, *n;
	int fd, alt_fd, i;

	for (i = 0; i < REBINDS; i++) {
		fd = open_dev();
		p = mmap(NULL, page_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED) {
			fail("mmap before unbind", errno);
			exit(1);
		}
		alt = map_through_alt_node(&alt_fd);
		p[1] = i;
		if (p[1] != (uint64_t)i || alt[1] != (uint64_t)i)
			fail("mappings made before the unbind", 0);
		usleep(20000);
		unbind();
		expect_sigbus(p, "a mapping made before the unbind", i);
		expect_sigbus(alt, "a mapping made through a second device node", i);
		expect_refused(fd, page_size, PROT_READ, MAP_SHARED, 0, ENODEV,
			       "mmap after unbind");
		usleep(20000);
		bind();
		expect_sigbus(p, "after the rebind, a mapping made before the unbind", i);
		close(fd);
		fd = open_dev();
		n = mmap(NULL, page_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (n == MAP_FAILED) {
			fail("mmap after the rebind", errno);
			exit(1);
		}
		n[2] = 0x7265626f756e64ULL + i;
		if (n[2] != 0x7265626f756e64ULL + i)
			fail("a mapping made after the rebind", 0);
		else if (!i)
			printf("ok: a mapping made after the rebind works\n");
		munmap((void *)n, page_size);
		munmap((void *)p, page_size);
		munmap((void *)alt, page_size);
		close(fd);
		close(alt_fd);
		unlink(ALT_NODE);
	}
}

/*
 * The guest's code at CODE_GPA: read the window's first page (x1) into x0,
 * store it to an address without a memslot (x2), which exits to userspace
 * as MMIO with the value read, and again.
 */
#define CODE_GPA 0x10000000ULL
#define WINDOW_GPA 0x20000000ULL
#define MMIO_GPA 0x30000000ULL
static const uint32_t guest_code[] = {
	0xf9400020,	/* ldr x0, [x1] */
	0xf9000040,	/* str x0, [x2] */
	0x17fffffe,	/* b . - 8 */
};

#define CORE_REG(r) (KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | \
		     (offsetof(struct kvm_regs, r) / sizeof(uint32_t)))

static void set_reg(int vcpu, uint64_t id, uint64_t val)
{
	struct kvm_one_reg reg = { .id = id, .addr = (uintptr_t)&val };

	if (ioctl(vcpu, KVM_SET_ONE_REG, &reg)) {
		fail("KVM_SET_ONE_REG", errno);
		exit(1);
	}
}

static int set_slot(int vm, uint32_t slot, uint64_t gpa, size_t size, void *hva)
{
	struct kvm_userspace_memory_region r = {
		.slot = slot, .guest_phys_addr = gpa, .memory_size = size,
		.userspace_addr = (uintptr_t)hva,
	};

	return ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) ? errno : 0;
}

/* Run the guest to its next MMIO store: the value it read from the window */
static int guest_read(int vcpu, struct kvm_run *run, uint64_t *val)
{
	if (ioctl(vcpu, KVM_RUN, 0))
		return errno;
	if (run->exit_reason != KVM_EXIT_MMIO || !run->mmio.is_write ||
	    run->mmio.phys_addr != MMIO_GPA) {
		fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
		return -1;
	}
	memcpy(val, run->mmio.data, sizeof(*val));
	return 0;
}

static volatile uint64_t *map_window_page(int *fd)
{
	void *p;

	*fd = open_dev();
	p = mmap(NULL, page_size, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
	if (p == MAP_FAILED) {
		fail("mmap for the memslot", errno);
		exit(1);
	}
	return p;
}

static void check_kvm(void)
{
	int kvm = open("/dev/kvm", O_RDWR), vm, vcpu, fd, r;
	struct kvm_vcpu_init init;
	volatile uint64_t *w;
	struct kvm_run *run;
	uint64_t val;
	void *code;

	if (kvm < 0) {
		fail("/dev/kvm", errno);
		return;
	}
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	code = mmap(NULL, page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (vm < 0 || code == MAP_FAILED) {
		fail("KVM_CREATE_VM", errno);
		return;
	}
	memcpy(code, guest_code, sizeof(guest_code));
	w = map_window_page(&fd);
	if (set_slot(vm, 0, CODE_GPA, page_size, code)) {
		fail("the code memslot", errno);
		return;
	}
	r = set_slot(vm, 1, WINDOW_GPA, page_size, (void *)w);
	if (!ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_ARM_CACHEABLE_PFNMAP_SUPPORTED)) {
		if (r != EINVAL)
			fail("a memslot over the window without cacheable PFNMAP support: not EINVAL",
			     r);
		else
			printf("ok: KVM cannot map the window cacheable (no FEAT_S2FWB): memslot refused, the guest case needs FWB\n");
		return;
	}
	if (r) {
		fail("a memslot over the window", r);
		return;
	}

	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0 || ioctl(vm, KVM_ARM_PREFERRED_TARGET, &init) ||
	    ioctl(vcpu, KVM_ARM_VCPU_INIT, &init)) {
		fail("creating the vCPU", errno);
		return;
	}
	run = mmap(NULL, ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0), PROT_READ | PROT_WRITE,
		   MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED) {
		fail("mapping kvm_run", errno);
		return;
	}
	set_reg(vcpu, CORE_REG(regs.pc), CODE_GPA);
	set_reg(vcpu, CORE_REG(regs.regs[1]), WINDOW_GPA);
	set_reg(vcpu, CORE_REG(regs.regs[2]), MMIO_GPA);

	w[0] = 0x6b766d2d77696e31ULL;
	if (guest_read(vcpu, run, &val) || val != w[0]) {
		fail("the guest does not read the window through its memslot", 0);
		return;
	}
	printf("ok: a KVM guest reads the window through a memslot\n");

	unbind();
	r = guest_read(vcpu, run, &val);
	if (!r)
		fail("after the unbind, the guest still reads the window", 0);
	else if (r != EFAULT)
		fail("after the unbind, KVM_RUN fails, but not with EFAULT", r > 0 ? r : 0);
	else
		printf("ok: after the unbind the guest's read fails KVM_RUN with EFAULT\n");
	bind();

	/* The guest retries its read on a memslot over a new mapping */
	if (set_slot(vm, 1, WINDOW_GPA, 0, NULL)) {
		fail("deleting the memslot", errno);
		return;
	}
	munmap((void *)w, page_size);
	close(fd);
	w = map_window_page(&fd);
	w[0] = 0x6b766d2d77696e32ULL;
	if (set_slot(vm, 1, WINDOW_GPA, page_size, (void *)w) || guest_read(vcpu, run, &val) ||
	    val != w[0])
		fail("after the rebind, the guest does not read a new memslot", 0);
	else
		printf("ok: after the rebind the guest reads a memslot over a new mapping\n");
	munmap((void *)w, page_size);
	close(fd);
	close(vcpu);
	close(vm);
	close(kvm);
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
	signal(SIGBUS, on_sigbus);
	check_requests();
	find_device();
	for (i = 0; i < THREADS; i++)
		pthread_create(&threads[i], NULL, worker, (void *)i);
	unbind_rebind();
	for (i = 0; i < THREADS; i++)
		pthread_join(threads[i], NULL);
	check_kvm();
	printf("%d threads x up to %d rounds of open/mmap/write/check/munmap/close, %d unbinds: %s\n",
	       THREADS, ROUNDS, REBINDS, failures ? "FAILED" : "ok");
	return failures ? 1 : 0;
}
