// SPDX-License-Identifier: GPL-2.0
/*
 * kvm-state: print what this (L1) kernel and its KVM offer an MTE guest:
 * MTE hwcaps, KVM mode and capabilities, and the ID registers a vCPU sees.
 * Exit status: 0 on success, 1 if /dev/kvm or a KVM ioctl is unusable.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/ioctl.h>
#include <unistd.h>

#ifndef HWCAP2_MTE
#define HWCAP2_MTE (1UL << 18)
#endif
#ifndef HWCAP2_MTE3
#define HWCAP2_MTE3 (1UL << 22)
#endif

/* op0=3, op1=0, CRn=0, CRm=4, op2=1/2: ID_AA64PFR1_EL1 / ID_AA64PFR2_EL1 */
#define ID_REG(op2) ARM64_SYS_REG(3, 0, 0, 4, (op2))

static int check(int fd, const char *name, long cap)
{
	int r = ioctl(fd, KVM_CHECK_EXTENSION, cap);

	printf("  %-24s %d\n", name, r);
	return r;
}

static int get_reg(int vcpu, uint64_t id, uint64_t *val)
{
	struct kvm_one_reg reg = { .id = id, .addr = (uint64_t)(uintptr_t)val };

	return ioctl(vcpu, KVM_GET_ONE_REG, &reg);
}

int main(void)
{
	unsigned long hw2 = getauxval(AT_HWCAP2);
	struct kvm_vcpu_init init;
	uint64_t pfr1, pfr2;
	int kvm, vm, vcpu;

	printf("host (L1) MTE: %s, MTE3: %s\n", hw2 & HWCAP2_MTE ? "yes" : "no",
	       hw2 & HWCAP2_MTE3 ? "yes" : "no");

	kvm = open("/dev/kvm", O_RDWR);
	if (kvm < 0) {
		printf("/dev/kvm: %s\n", strerror(errno));
		return 1;
	}
	printf("KVM API %d, capabilities:\n", ioctl(kvm, KVM_GET_API_VERSION, 0));
	check(kvm, "KVM_CAP_ARM_EL2", KVM_CAP_ARM_EL2);
	check(kvm, "KVM_CAP_ARM_MTE", KVM_CAP_ARM_MTE);
#ifdef KVM_CAP_ARM_MTE_PERM
	check(kvm, "KVM_CAP_ARM_MTE_PERM", KVM_CAP_ARM_MTE_PERM);
#else
	printf("  %-24s not in this kernel's UAPI\n", "KVM_CAP_ARM_MTE_PERM");
#endif

	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0) {
		printf("KVM_CREATE_VM: %s\n", strerror(errno));
		return 1;
	}
	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0 || ioctl(vm, KVM_ARM_PREFERRED_TARGET, &init) ||
	    ioctl(vcpu, KVM_ARM_VCPU_INIT, &init)) {
		printf("vCPU setup: %s\n", strerror(errno));
		return 1;
	}
	if (get_reg(vcpu, ID_REG(1), &pfr1) || get_reg(vcpu, ID_REG(2), &pfr2)) {
		printf("KVM_GET_ONE_REG: %s\n", strerror(errno));
		return 1;
	}
	printf("a guest's ID_AA64PFR1_EL1 = 0x%016llx (MTE field %llu)\n",
	       (unsigned long long)pfr1, (unsigned long long)(pfr1 >> 8) & 0xf);
	printf("a guest's ID_AA64PFR2_EL1 = 0x%016llx (MTEPERM field %llu)\n",
	       (unsigned long long)pfr2, (unsigned long long)pfr2 & 0xf);
	return 0;
}
