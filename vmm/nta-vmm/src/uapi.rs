// SPDX-License-Identifier: MIT OR Apache-2.0
//! The UAPI of `KVM_CAP_ARM_MTE_PERM`, until kvm-bindings carries it.
//!
//! Values from `include/uapi/linux/kvm.h` and `arch/arm64/include/uapi/asm/kvm.h` of the kernel
//! series in this repository (`series/`).

/// `KVM_CAP_ARM_MTE`: MTE for guests.
pub const KVM_CAP_ARM_MTE: u32 = 205;
/// `KVM_CAP_ARM_MTE_PERM`: memory without tag storage, mapped `NoTagAccess`.
pub const KVM_CAP_ARM_MTE_PERM: u32 = 252;
/// Policy: a tag access exits with `KVM_EXIT_MEMORY_FAULT`.
pub const KVM_ARM_MTE_PERM_EXIT: u64 = 1 << 0;
/// Policy: a tag access raises a synchronous external abort in the guest.
pub const KVM_ARM_MTE_PERM_SEA: u64 = 1 << 1;
/// `kvm_run.memory_fault.flags`: the fault is a tag access to `NoTagAccess` memory.
pub const KVM_MEMORY_EXIT_FLAG_TAG_ACCESS: u64 = 1 << 4;
/// `kvm_run.memory_fault.flags`: the fault is on private memory (not ours, but known).
pub const KVM_MEMORY_EXIT_FLAG_PRIVATE: u64 = 1 << 3;
