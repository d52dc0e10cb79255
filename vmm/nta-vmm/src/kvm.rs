// SPDX-License-Identifier: MIT OR Apache-2.0
//! The KVM-specific part, on kvm-ioctls: enabling the capabilities, decoding the exit,
//! injecting an abort. Everything else in this crate is hypervisor-neutral.

use kvm_bindings::{kvm_enable_cap, kvm_userspace_memory_region2};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use crate::error::{Feature, KvmOp};
use crate::uapi::{
    KVM_ARM_MTE_PERM_EXIT, KVM_ARM_MTE_PERM_SEA, KVM_CAP_ARM_MTE, KVM_CAP_ARM_MTE_PERM,
    KVM_MEM_ARM_NOTAGACCESS,
};
use crate::{Backing, Error, Region, Result, TagAccessFault, Vcpu};

/// What KVM itself does on a tag access (the argument of `KVM_ENABLE_CAP`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KernelPolicy {
    /// Exit to the VMM (`KVM_EXIT_MEMORY_FAULT`), which applies a [`crate::Policy`].
    Exit,
    /// Inject a synchronous external abort, without exiting.
    Sea,
}

impl KernelPolicy {
    fn bit(self) -> u64 {
        match self {
            KernelPolicy::Exit => KVM_ARM_MTE_PERM_EXIT,
            KernelPolicy::Sea => KVM_ARM_MTE_PERM_SEA,
        }
    }
}

fn enable_cap(vm: &VmFd, cap: u32, arg: u64, op: KvmOp) -> Result<()> {
    let mut c = kvm_enable_cap {
        cap,
        ..Default::default()
    };
    c.args[0] = arg;
    vm.enable_cap(&c)
        .map_err(|source| Error::Kvm { op, source })
}

fn check_mte(vm: &VmFd) -> Result<()> {
    if vm.check_extension_raw(KVM_CAP_ARM_MTE.into()) <= 0 {
        return Err(Error::Unsupported(Feature::Mte));
    }
    Ok(())
}

/// Enables MTE (`KVM_CAP_ARM_MTE`) on a VM without vCPUs: memory must then be tag-capable,
/// unless [`enable_mte_perm`] is used instead.
pub fn enable_mte(vm: &VmFd) -> Result<()> {
    check_mte(vm)?;
    enable_cap(vm, KVM_CAP_ARM_MTE, 0, KvmOp::EnableMte)
}

/// Enables MTE, then `KVM_CAP_ARM_MTE_PERM` with `policy`, on a VM without vCPUs. Nothing is
/// enabled unless both are supported.
pub fn enable_mte_perm(vm: &VmFd, policy: KernelPolicy) -> Result<()> {
    check_mte(vm)?;
    let policies = vm.check_extension_raw(KVM_CAP_ARM_MTE_PERM.into());
    if policies <= 0 {
        return Err(Error::Unsupported(Feature::MtePerm));
    }
    if (policies as u64) & policy.bit() == 0 {
        return Err(Error::Unsupported(Feature::MtePermPolicy));
    }
    enable_cap(vm, KVM_CAP_ARM_MTE, 0, KvmOp::EnableMte)?;
    enable_cap(vm, KVM_CAP_ARM_MTE_PERM, policy.bit(), KvmOp::EnableMtePerm)
}

/// The memslot flags memory of `backing` needs in a VM on which `mte_perm` says whether
/// [`enable_mte_perm`] succeeded: with it, `KVM_MEM_ARM_NOTAGACCESS` where the memory cannot
/// hold tags and none where it can; without it, none (KVM refuses the flag). Leaving the flag off
/// tag-capable memory (the guest's RAM) keeps KVM's check that it really is: a VMM bug that
/// backs RAM with a file is then refused instead of mapped `NoTagAccess`.
pub fn memslot_flags(backing: &Backing, mte_perm: bool) -> u32 {
    if mte_perm && !backing.tag_capable() {
        KVM_MEM_ARM_NOTAGACCESS
    } else {
        0
    }
}

/// Registers `region` as its memslot with `KVM_SET_USER_MEMORY_REGION2`, with the flags of
/// [`memslot_flags`] plus `extra` (`KVM_MEM_LOG_DIRTY_PAGES`, say). In an MTE VM, memory that
/// cannot hold tags is refused (`EINVAL`) unless `mte_perm` ([`enable_mte_perm`] succeeded).
///
/// # Safety
///
/// `[region.host_addr, region.host_addr + region.size)` is mapped in this process and stays
/// mapped, or is replaced in place by memory with the same contents (a [`crate::Resolver`]
/// swap), until the memslot is deleted or the VM is closed: KVM and the guest read and write
/// it at any time from then on.
pub unsafe fn set_memslot(vm: &VmFd, region: &Region, mte_perm: bool, extra: u32) -> Result<()> {
    let r = kvm_userspace_memory_region2 {
        slot: region.slot,
        flags: memslot_flags(&region.backing, mte_perm) | extra,
        guest_phys_addr: region.gpa,
        memory_size: region.size,
        userspace_addr: region.host_addr,
        ..Default::default()
    };
    // SAFETY: the caller keeps the range mapped for as long as the memslot exists (above).
    unsafe { vm.set_user_memory_region2(r) }.map_err(|source| Error::Kvm {
        op: KvmOp::SetUserMemoryRegion2 { slot: region.slot },
        source,
    })
}

/// The tag-access fault of a `VcpuFd::run()` exit, if it is one.
pub fn tag_fault(exit: &VcpuExit<'_>) -> Result<Option<TagAccessFault>> {
    match *exit {
        VcpuExit::MemoryFault { flags, gpa, size } => TagAccessFault::from_exit(flags, gpa, size),
        _ => Ok(None),
    }
}

/// Forgets a memory fault exit before the next `KVM_RUN`: kvm-ioctls reads an `EFAULT` with
/// exit reason `KVM_EXIT_MEMORY_FAULT` as a memory fault exit, so a plain `EFAULT` (a write to a
/// range being swapped) after a tag-access exit would otherwise repeat that exit's fault. Other
/// exit reasons are kept: KVM completes an MMIO read on re-entry only after `KVM_EXIT_MMIO`.
pub fn clear_exit_reason(vcpu: &mut VcpuFd) {
    let run = vcpu.get_kvm_run();
    if run.exit_reason == kvm_bindings::KVM_EXIT_MEMORY_FAULT {
        run.exit_reason = kvm_bindings::KVM_EXIT_UNKNOWN;
    }
}

/// Whether `KVM_RUN` failed with `EFAULT` (see [`crate::Resolver::retry_after_efault`]).
pub fn is_efault(e: &kvm_ioctls::Error) -> bool {
    e.errno() == libc::EFAULT
}

impl Vcpu for VcpuFd {
    /// Makes a synchronous external data abort pending (`KVM_SET_VCPU_EVENTS`); KVM reports the
    /// address of the last fault in the guest's FAR.
    #[cfg(target_arch = "aarch64")]
    fn inject_data_abort(&self) -> Result<()> {
        let mut events = self.get_vcpu_events().map_err(|source| Error::Kvm {
            op: KvmOp::GetVcpuEvents,
            source,
        })?;
        events.exception.ext_dabt_pending = 1;
        self.set_vcpu_events(&events).map_err(|source| Error::Kvm {
            op: KvmOp::SetVcpuEvents,
            source,
        })
    }

    #[cfg(not(target_arch = "aarch64"))]
    fn inject_data_abort(&self) -> Result<()> {
        Err(Error::Unsupported(Feature::AbortInjection))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn only_memory_without_tags_is_flagged_and_only_with_the_capability() {
        let file = Backing::SharedFile(PathBuf::from("/img"));
        assert_eq!(memslot_flags(&file, true), KVM_MEM_ARM_NOTAGACCESS);
        assert_eq!(
            memslot_flags(&Backing::Device(PathBuf::new()), true),
            KVM_MEM_ARM_NOTAGACCESS
        );
        assert_eq!(memslot_flags(&Backing::Anonymous, true), 0);
        assert_eq!(memslot_flags(&Backing::Shmem, true), 0);
        assert_eq!(memslot_flags(&file, false), 0);
    }
}
