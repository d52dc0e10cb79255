// SPDX-License-Identifier: MIT OR Apache-2.0
//! The KVM-specific part, on kvm-ioctls: enabling the capabilities, decoding the exit,
//! injecting an abort. Everything else in this crate is hypervisor-neutral.

use kvm_bindings::kvm_enable_cap;
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use crate::error::{Feature, KvmOp};
use crate::uapi::{
    KVM_ARM_MTE_PERM_EXIT, KVM_ARM_MTE_PERM_SEA, KVM_CAP_ARM_MTE, KVM_CAP_ARM_MTE_PERM,
};
use crate::{Error, Result, TagAccessFault, Vcpu};

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
