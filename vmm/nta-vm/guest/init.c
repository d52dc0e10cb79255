// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
/*
 * PID 1 of nta-vm's test guest: an MTE workload, a check of the pmem filesystem, then
 * power-off with the verdict written to nta-vm's status register.
 *
 * The workload takes nearly all free memory as PROT_MTE pages, so that the kernel gives it
 * the pages it freed from its own image (the __init sections, in the part of RAM that the
 * map layout backs with the Image file, which has no tag storage). One process per CPU:
 * each maps its share with MAP_POPULATE (the kernel clears the tags of every page), tags one
 * granule of every page with STG, reads every tag back with LDG, and on the pages that lie
 * in the kernel image or in device memory, and on a sample of the others, checks that a
 * load through the right tag works and one through a wrong tag faults with SEGV_MTESERR.
 *
 * Output lines start with "nta-guest: "; the last is the verdict.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef PROT_MTE
#define PROT_MTE 0x20
#endif
#ifndef SEGV_MTESERR
#define SEGV_MTESERR 9
#endif
#ifndef PR_MTE_TCF_SYNC
#define PR_MTE_TCF_SYNC (1UL << 1)
#endif
#ifndef PR_MTE_TAG_SHIFT
#define PR_MTE_TAG_SHIFT 3
#endif

#define PAGE 4096UL
#define MIB (1UL << 20)
/* Left free for the kernel (page tables of the workload, the page cache of pmem). */
#define RESERVE (24 * MIB)
#define SAMPLE_EVERY 256
#define PMEM_PAYLOAD "/pmem/payload.bin"

static volatile uint32_t *status_reg;

static void say(const char *fmt, ...)
{
	va_list ap;
	char buf[512];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	printf("nta-guest: %s\n", buf);
	fflush(stdout);
}

/* nta-vm's status page, found in the device tree: offset 0 exit status, 4 "init reached". */
static void map_status(void)
{
	glob_t g;
	unsigned char reg[16];
	uint64_t addr = 0;
	int fd, i;

	if (glob("/proc/device-tree/nta-status@*/reg", 0, NULL, &g) || g.gl_pathc != 1) {
		say("no nta-status node in the device tree: not under nta-vm?");
		return;
	}
	fd = open(g.gl_pathv[0], O_RDONLY);
	globfree(&g);
	if (fd < 0 || read(fd, reg, sizeof(reg)) != sizeof(reg)) {
		say("cannot read the nta-status node: %s", strerror(errno));
		return;
	}
	close(fd);
	for (i = 0; i < 8; i++)
		addr = addr << 8 | reg[i];
	fd = open("/dev/mem", O_RDWR | O_SYNC);
	if (fd < 0) {
		say("/dev/mem: %s", strerror(errno));
		return;
	}
	status_reg = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, addr);
	close(fd);
	if (status_reg == MAP_FAILED) {
		say("mapping the status register at %#llx: %s", (unsigned long long)addr,
		    strerror(errno));
		status_reg = NULL;
	}
}

static void power_off(int status)
{
	if (status_reg)
		status_reg[0] = status;
	sync();
	reboot(RB_POWER_OFF);
	say("reboot(RB_POWER_OFF): %s", strerror(errno));
	for (;;)
		pause();
}

/* A range of physical memory from /proc/iomem. */
struct range {
	uint64_t start, end; /* [start, end] */
};

/*
 * The kernel image: from "Kernel code" to the end of "Kernel data" (text, rodata, the
 * freed init sections, data and BSS); and device memory: the System RAM at 0x140000000.
 */
static void find_ranges(struct range *image, struct range *dev)
{
	FILE *f = fopen("/proc/iomem", "r");
	char line[256];
	unsigned long long s, e;

	memset(image, 0, sizeof(*image));
	memset(dev, 0, sizeof(*dev));
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, " %llx-%llx", &s, &e) != 2)
			continue;
		if (strstr(line, "Kernel code"))
			image->start = s;
		else if (strstr(line, "Kernel data"))
			image->end = e;
		else if (strstr(line, "System RAM") && s == 0x140000000ULL)
			*dev = (struct range){ s, e };
	}
	fclose(f);
}

static uint64_t pfn_of(int pagemap, void *va)
{
	uint64_t e;
	off_t off = ((uintptr_t)va / PAGE) * sizeof(e);

	if (pread(pagemap, &e, sizeof(e), off) != sizeof(e) || !(e >> 63))
		return 0;
	return e & ((1ULL << 55) - 1);
}

static inline void *tagged(void *p, unsigned int tag)
{
	return (void *)(((uintptr_t)p & ~(0xfUL << 56)) | ((uintptr_t)tag << 56));
}

static inline void stg(void *p)
{
	asm volatile(".arch_extension memtag\n stg %0, [%0]" : : "r"(p) : "memory");
}

static inline unsigned int ldg(void *p)
{
	uintptr_t v = (uintptr_t)p;

	asm volatile(".arch_extension memtag\n ldg %0, [%0]" : "+r"(v) : : "memory");
	return (v >> 56) & 0xf;
}

static sigjmp_buf fault_jmp;
static volatile int fault_code;

static void on_segv(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	fault_code = si->si_code;
	siglongjmp(fault_jmp, 1);
}

/* 0 if a load through the right tag works and one through a wrong tag faults as MTE says. */
static int check_tags(void *page, unsigned int tag)
{
	volatile uint64_t *right = tagged(page, tag);
	volatile uint64_t *wrong = tagged(page, tag ^ 0x5);

	*right = 0x6e74615f6775657eULL;
	if (*right != 0x6e74615f6775657eULL)
		return -1;
	fault_code = 0;
	if (sigsetjmp(fault_jmp, 1) == 0) {
		(void)*wrong;
		return -2; /* no fault */
	}
	return fault_code == SEGV_MTESERR ? 0 : -3;
}

struct result {
	unsigned long pages, in_image, in_device, checked, bad_ldg, bad_check;
};

static int workload(size_t len, int cpu, struct result *r)
{
	struct range image, dev;
	struct sigaction sa = { .sa_sigaction = on_segv, .sa_flags = SA_SIGINFO };
	cpu_set_t set;
	char *mem;
	unsigned long i;
	int pagemap;

	memset(r, 0, sizeof(*r));
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		say("cpu %d: sched_setaffinity: %s", cpu, strerror(errno));
	if (prctl(PR_SET_TAGGED_ADDR_CTRL,
		  PR_TAGGED_ADDR_ENABLE | PR_MTE_TCF_SYNC | (0xfffeUL << PR_MTE_TAG_SHIFT), 0, 0,
		  0)) {
		say("cpu %d: PR_SET_TAGGED_ADDR_CTRL: %s (no MTE?)", cpu, strerror(errno));
		return 1;
	}
	sigaction(SIGSEGV, &sa, NULL);
	find_ranges(&image, &dev);
	pagemap = open("/proc/self/pagemap", O_RDONLY);
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE | PROT_MTE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (mem == MAP_FAILED) {
		say("cpu %d: mmap(PROT_MTE) of %zu MiB: %s", cpu, len / MIB, strerror(errno));
		return 1;
	}
	r->pages = len / PAGE;
	for (i = 0; i < r->pages; i++)
		stg(tagged(mem + i * PAGE, 1 + i % 15));
	for (i = 0; i < r->pages; i++) {
		char *p = mem + i * PAGE;
		uint64_t pa = pfn_of(pagemap, p) * PAGE;
		int special = 0;

		if (ldg(p) != 1 + i % 15)
			r->bad_ldg++;
		if (pa && pa >= image.start && pa <= image.end) {
			r->in_image++;
			special = 1;
		} else if (pa && dev.start && pa >= dev.start && pa <= dev.end) {
			r->in_device++;
			special = 1;
		}
		if (special || i % SAMPLE_EVERY == 0) {
			r->checked++;
			if (check_tags(p, 1 + i % 15))
				r->bad_check++;
		}
	}
	return r->bad_ldg || r->bad_check;
}

static unsigned long mem_available(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[128];
	unsigned long kib = 0;

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %lu kB", &kib) == 1)
			break;
	if (f)
		fclose(f);
	return kib * 1024;
}

/* The workload on every CPU at once; 0 if every check passed. */
static int run_workload(void)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned long avail = mem_available();
	struct result *res;
	struct result sum = { 0 };
	size_t share;
	int cpu, failed = 0;

	if (ncpu < 1 || avail < RESERVE + 4 * MIB) {
		say("mte: %ld CPUs, %lu MiB available: nothing to test", ncpu, avail / MIB);
		return 1;
	}
	share = ((avail - RESERVE) / ncpu) & ~(PAGE - 1);
	say("mte: %ld CPU(s), %lu MiB available, %zu MiB of PROT_MTE memory per CPU", ncpu,
	    avail / MIB, share / MIB);
	res = mmap(NULL, ncpu * sizeof(*res), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		   -1, 0);
	if (res == MAP_FAILED)
		return 1;
	for (cpu = 0; cpu < ncpu; cpu++) {
		pid_t pid = fork();

		if (pid == 0)
			_exit(workload(share, cpu, &res[cpu]));
		if (pid < 0)
			failed = 1;
	}
	for (cpu = 0; cpu < ncpu; cpu++) {
		int st;

		if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st))
			failed = 1;
	}
	for (cpu = 0; cpu < ncpu; cpu++) {
		sum.pages += res[cpu].pages;
		sum.in_image += res[cpu].in_image;
		sum.in_device += res[cpu].in_device;
		sum.checked += res[cpu].checked;
		sum.bad_ldg += res[cpu].bad_ldg;
		sum.bad_check += res[cpu].bad_check;
	}
	say("mte: %lu pages tagged, %lu of them in the kernel image (freed init memory), %lu in "
	    "device memory", sum.pages, sum.in_image, sum.in_device);
	say("mte: tags read back: %lu wrong; right/wrong tag checks on %lu pages: %lu failed",
	    sum.bad_ldg, sum.checked, sum.bad_check);
	return failed || !sum.pages;
}

/* One line naming the entries of a sysfs directory, for a missing device. */
static void list_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	char buf[400] = "";

	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.' && strlen(buf) + strlen(e->d_name) + 2 < sizeof(buf)) {
			strcat(buf, " ");
			strcat(buf, e->d_name);
		}
	if (d)
		closedir(d);
	say("%s:%s", path, d ? buf : " missing");
}

/* The pmem filesystem's payload: xorshift64 from a fixed seed, as harness/vmguest.sh writes. */
static int check_pmem(void)
{
	uint64_t x = 0x6e74612d706d656dULL, w;
	unsigned long n = 0;
	FILE *f;

	if (access("/dev/pmem0", F_OK)) {
		if (access("/proc/device-tree/pmem@10000000", F_OK)) {
			say("pmem: none in the device tree");
			return -1;
		}
		say("pmem: the device tree has a pmem region, but there is no /dev/pmem0");
		list_dir("/sys/bus/platform/devices");
		list_dir("/sys/bus/nd/devices");
		{
			FILE *io = fopen("/proc/iomem", "r");
			char l[200];
			while (io && fgets(l, sizeof(l), io))
				say("iomem: %s", l);
		}
		return 1;
	}
	mkdir("/pmem", 0755);
	if (mount("/dev/pmem0", "/pmem", "ext4", MS_RDONLY, "noload")) {
		say("pmem: mounting /dev/pmem0 (ext4): %s", strerror(errno));
		return 1;
	}
	f = fopen(PMEM_PAYLOAD, "r");
	if (!f) {
		say("pmem: %s: %s", PMEM_PAYLOAD, strerror(errno));
		return 1;
	}
	while (fread(&w, sizeof(w), 1, f) == 1) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		if (w != x) {
			say("pmem: %s differs at byte %lu", PMEM_PAYLOAD, n * 8);
			fclose(f);
			return 1;
		}
		n++;
	}
	fclose(f);
	if (!n) {
		say("pmem: %s is empty", PMEM_PAYLOAD);
		return 1;
	}
	say("pmem: /dev/pmem0 mounted (ext4), %s: %lu bytes as expected", PMEM_PAYLOAD, n * 8);
	return 0;
}

int main(void)
{
	int mte, pmem;
	struct timespec t;

	mount("proc", "/proc", "proc", 0, NULL);
	mount("sysfs", "/sys", "sysfs", 0, NULL);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	map_status();
	if (status_reg)
		status_reg[1] = 1;
	clock_gettime(CLOCK_BOOTTIME, &t);
	say("init started %ld.%02ld s after boot, %ld CPU(s) online", (long)t.tv_sec,
	    t.tv_nsec / 10000000, sysconf(_SC_NPROCESSORS_ONLN));
	mte = run_workload();
	pmem = check_pmem();
	say("verdict %s (mte %s, pmem %s)", mte || pmem > 0 ? "FAIL" : "PASS",
	    mte ? "failed" : "passed", pmem < 0 ? "absent" : pmem ? "failed" : "passed");
	power_off(mte || pmem > 0);
	return 0;
}
