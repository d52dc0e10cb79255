// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! What the kvm-bindings and kvm-ioctls patches add, used as nta-vmm would use it once they
//! are merged (arm64: the additions are arm64-only).
#![cfg(target_arch = "aarch64")]

use kvm_bindings::kvm_arm_copy_mte_tags;
use kvm_ioctls::{Cap, VmFd};
use nta_vmm::uapi;

// The patched kvm-bindings and nta-vmm's own constants agree.
const _: () = assert!(kvm_bindings::KVM_CAP_ARM_MTE_PERM == uapi::KVM_CAP_ARM_MTE_PERM);
const _: () = assert!(kvm_bindings::KVM_MEM_ARM_NOTAGACCESS == uapi::KVM_MEM_ARM_NOTAGACCESS);
const _: () = assert!(
    kvm_bindings::KVM_MEMORY_EXIT_FLAG_ARM_TAG_ACCESS as u64
        == uapi::KVM_MEMORY_EXIT_FLAG_ARM_TAG_ACCESS
);
const _: () = assert!(kvm_bindings::KVM_ARM_MTE_PERM_EXIT as u64 == uapi::KVM_ARM_MTE_PERM_EXIT);
const _: () = assert!(kvm_bindings::KVM_ARM_MTE_PERM_SEA as u64 == uapi::KVM_ARM_MTE_PERM_SEA);

/// Whether the VM offers MTE and `KVM_CAP_ARM_MTE_PERM`, through kvm-ioctls' `Cap`.
pub fn offers(vm: &VmFd) -> (bool, bool) {
    (
        vm.check_extension(Cap::ArmMte),
        vm.check_extension(Cap::ArmMtePerm),
    )
}

/// Reads the tags of the page at `ipa` into `tags` (256 bytes for a 4 KiB page).
pub fn page_tags(vm: &VmFd, ipa: u64, tags: &mut [u8; 256]) -> Result<u64, kvm_ioctls::Error> {
    let copy = kvm_arm_copy_mte_tags {
        guest_ipa: ipa,
        length: 4096,
        addr: tags.as_mut_ptr().cast(),
        flags: kvm_bindings::KVM_ARM_TAGS_FROM_GUEST as u64,
        ..Default::default()
    };
    // SAFETY: `tags` is a writable buffer of length / 16 bytes, borrowed mutably for the call.
    unsafe { vm.arm_mte_copy_tags(&copy) }
}
