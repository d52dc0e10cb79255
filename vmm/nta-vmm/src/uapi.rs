// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The UAPI of `KVM_CAP_ARM_MTE_PERM`, until kvm-bindings carries it (feature `unstable-uapi`).
//!
//! Values from `include/uapi/linux/kvm.h` and `arch/arm64/include/uapi/asm/kvm.h` of the kernel
//! series in this repository (`series/`), which is not merged: numbers can change before it is,
//! and a wrong capability number enables another capability. Constants that kvm-bindings has
//! (`KVM_CAP_ARM_MTE`, `KVM_MEMORY_EXIT_FLAG_PRIVATE`) are taken from it.

/// `KVM_CAP_ARM_MTE_PERM`: memory without tag storage, mapped `NoTagAccess`.
pub const KVM_CAP_ARM_MTE_PERM: u32 = 252;
/// Policy: a tag access exits with `KVM_EXIT_MEMORY_FAULT`.
pub const KVM_ARM_MTE_PERM_EXIT: u64 = 1 << 0;
/// Policy: a tag access raises a synchronous external abort in the guest.
pub const KVM_ARM_MTE_PERM_SEA: u64 = 1 << 1;
/// Every policy this crate knows; `KVM_CHECK_EXTENSION` must report no other.
pub const KVM_ARM_MTE_PERM_POLICIES: u64 = KVM_ARM_MTE_PERM_EXIT | KVM_ARM_MTE_PERM_SEA;
/// `kvm_run.memory_fault.flags`: the fault is a tag access to `NoTagAccess` memory (bit 8:
/// bits 4 and 5 are taken by posted series, see `series/`'s cover letter).
pub const KVM_MEMORY_EXIT_FLAG_ARM_TAG_ACCESS: u64 = 1 << 8;
/// `KVM_SET_USER_MEMORY_REGION2` flag: the memslot's memory may lack tag storage and may be
/// mapped `NoTagAccess`; accepted once `KVM_CAP_ARM_MTE_PERM` is enabled, fixed for the slot's
/// life. Memslots without it must be tag-capable, as without the capability.
pub const KVM_MEM_ARM_NOTAGACCESS: u32 = 1 << 7;
