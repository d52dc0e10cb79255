// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The KVM-specific part, on kvm-ioctls (feature `kvm`): enabling the capabilities, registering
//! memslots, the vCPU loop, injecting an abort. Everything else in this crate is
//! hypervisor-neutral.
//!
//! This module's signatures name kvm-ioctls types (`VmFd`, `VcpuFd`, `VcpuExit`): its major
//! version is part of this module's API, and the crate re-exports the versions it uses as
//! [`kvm_ioctls`] and [`kvm_bindings`]. Errors carry `std::io::Error`, not kvm-ioctls' type.

#[cfg(feature = "unstable-uapi")]
use std::ops::ControlFlow;

pub use kvm_bindings;
pub use kvm_ioctls;

use kvm_bindings::{kvm_enable_cap, KVM_CAP_ARM_MTE};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use crate::error::{Feature, KvmOp};
#[cfg(feature = "unstable-uapi")]
use crate::{
    uapi::{
        KVM_ARM_MTE_PERM_EXIT, KVM_ARM_MTE_PERM_POLICIES, KVM_ARM_MTE_PERM_SEA,
        KVM_CAP_ARM_MTE_PERM, KVM_MEMORY_EXIT_FLAG_ARM_TAG_ACCESS, KVM_MEM_ARM_NOTAGACCESS,
    },
    Backing, Region,
};
use crate::{Error, Resolution, Result, TagAccessFault, Vcpu};
#[cfg(feature = "unstable-uapi")]
use crate::{HostUsers, Resolver};

#[allow(clippy::trivially_copy_pass_by_ref)] // a reference to what kvm-ioctls returns
fn kvm_error(op: KvmOp, e: &kvm_ioctls::Error) -> Error {
    Error::Kvm {
        op,
        source: std::io::Error::from_raw_os_error(e.errno()),
    }
}

/// What KVM itself does on a tag access (the argument of `KVM_ENABLE_CAP`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KernelPolicy {
    /// Exit to the VMM (`KVM_EXIT_MEMORY_FAULT`), which applies a [`crate::Policy`].
    Exit,
    /// Inject a synchronous external abort, without exiting.
    Sea,
}

#[cfg(feature = "unstable-uapi")]
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
    vm.enable_cap(&c).map_err(|e| kvm_error(op, &e))
}

fn check_mte(vm: &VmFd) -> Result<()> {
    if vm.check_extension_raw(KVM_CAP_ARM_MTE.into()) <= 0 {
        return Err(Error::Unsupported(Feature::Mte));
    }
    Ok(())
}

/// Enables MTE (`KVM_CAP_ARM_MTE`) on a VM without vCPUs: memory must then be tag-capable,
/// unless `enable_mte_perm` (feature `unstable-uapi`) is used instead.
///
/// # Errors
///
/// [`Error::Unsupported`] without MTE, [`Error::Kvm`] if enabling fails (vCPUs exist).
pub fn enable_mte(vm: &VmFd) -> Result<()> {
    check_mte(vm)?;
    enable_cap(vm, KVM_CAP_ARM_MTE, 0, KvmOp::EnableMte)
}

/// The `KVM_CAP_ARM_MTE_PERM` policies KVM offers (`KVM_CHECK_EXTENSION`): 0 without it.
///
/// # Errors
///
/// [`Error::UnknownPolicies`] if it reports bits this crate does not know: the kernel's UAPI is
/// not the one this crate was built for, and its capability number may mean something else.
#[cfg(feature = "unstable-uapi")]
pub fn mte_perm_policies(vm: &VmFd) -> Result<u64> {
    let r = vm.check_extension_raw(KVM_CAP_ARM_MTE_PERM.into());
    let Ok(mask) = u64::try_from(r) else {
        return Ok(0);
    };
    if mask & !KVM_ARM_MTE_PERM_POLICIES != 0 {
        return Err(Error::UnknownPolicies(mask));
    }
    Ok(mask)
}

/// Enables MTE, then `KVM_CAP_ARM_MTE_PERM` with `policy`, on a VM without vCPUs. Nothing is
/// enabled unless both are supported.
///
/// # Errors
///
/// [`Error::Unsupported`] without MTE, the capability or the policy; as
/// [`mte_perm_policies`]; [`Error::Kvm`] if enabling fails.
#[cfg(feature = "unstable-uapi")]
pub fn enable_mte_perm(vm: &VmFd, policy: KernelPolicy) -> Result<()> {
    check_mte(vm)?;
    let policies = mte_perm_policies(vm)?;
    if policies == 0 {
        return Err(Error::Unsupported(Feature::MtePerm));
    }
    if policies & policy.bit() == 0 {
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
#[cfg(feature = "unstable-uapi")]
#[must_use]
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
/// # Errors
///
/// [`Error::Kvm`] if KVM refuses the memslot.
///
/// # Safety
///
/// `[region.host_addr, region.host_addr + region.size)` is mapped in this process and stays
/// mapped, or is replaced in place by memory with the same contents (a [`crate::Resolver`]
/// swap), until the memslot is deleted or the VM is closed: KVM and the guest read and write
/// it at any time from then on.
#[cfg(feature = "unstable-uapi")]
pub unsafe fn set_memslot(vm: &VmFd, region: &Region, mte_perm: bool, extra: u32) -> Result<()> {
    let r = kvm_bindings::kvm_userspace_memory_region2 {
        slot: region.slot,
        flags: memslot_flags(&region.backing, mte_perm) | extra,
        guest_phys_addr: region.gpa,
        memory_size: region.size,
        userspace_addr: region.host_addr,
        ..Default::default()
    };
    // SAFETY: the caller keeps the range mapped for as long as the memslot exists (above).
    unsafe { vm.set_user_memory_region2(r) }
        .map_err(|e| kvm_error(KvmOp::SetUserMemoryRegion2 { slot: region.slot }, &e))
}

/// What [`run_vcpu`] hands the VMM after each `KVM_RUN`.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// An exit for the VMM (MMIO, a system event, a memory fault that is not a tag access).
    Exit(VcpuExit<'a>),
    /// A tag access, resolved by the resolver's policy; the vCPU runs again.
    TagAccess {
        /// The access.
        fault: TagAccessFault,
        /// What the resolver did.
        resolution: Resolution,
    },
    /// `KVM_RUN` failed with `EFAULT` while a swap ran: a write to the range being swapped,
    /// which the vCPU retries now.
    SwapRetry,
    /// `KVM_RUN` returned `EINTR` (a signal, or `immediate_exit`): the VMM's chance to stop.
    Interrupted,
}

/// The vCPU loop: runs `vcpu` until `on_event` breaks, handling what the `NoTagAccess` protocol
/// needs on the way:
///
/// - it reads the swap epoch and clears a memory-fault exit reason before each `KVM_RUN`
///   (kvm-ioctls reads an `EFAULT` with exit reason `KVM_EXIT_MEMORY_FAULT` as a memory fault
///   exit, so a plain `EFAULT` after a tag-access exit would otherwise repeat that exit; other
///   exit reasons are kept: KVM completes an MMIO read on re-entry only after `KVM_EXIT_MMIO`);
/// - a tag-access exit goes to `resolver` ([`Resolver::resolve`] with `host`), and is
///   reported as [`Event::TagAccess`];
/// - an `EFAULT`, unannotated or annotated without the tag-access flag (with
///   `KVM_CAP_MEMORY_FAULT_INFO` any `EFAULT` may carry an annotation), is retried if a swap
///   ran since the epoch was read ([`Event::SwapRetry`]); otherwise an annotated one is an
///   [`Event::Exit`] and an unannotated one an error.
///
/// # Errors
///
/// [`Error::Kvm`] for a failed `KVM_RUN` (other than `EINTR`, `EAGAIN` and a retried
/// `EFAULT`), [`Error::NoResolver`] for a tag-access exit without a resolver, and the
/// resolver's errors.
#[cfg(feature = "unstable-uapi")]
pub fn run_vcpu<T, H: HostUsers + ?Sized>(
    vcpu: &mut VcpuFd,
    resolver: Option<&Resolver>,
    host: &H,
    mut on_event: impl FnMut(Event<'_>) -> ControlFlow<T>,
) -> Result<T> {
    /// What the exit was, once its borrow of the vCPU is over.
    enum Next {
        Done,
        Tag(TagAccessFault),
        Efault(Option<(u64, u64, u64)>),
    }
    loop {
        let epoch = resolver.map_or(0, Resolver::epoch);
        let run = vcpu.get_kvm_run();
        if run.exit_reason == kvm_bindings::KVM_EXIT_MEMORY_FAULT {
            run.exit_reason = kvm_bindings::KVM_EXIT_UNKNOWN;
        }
        let flow = match vcpu.run() {
            Ok(VcpuExit::MemoryFault { flags, gpa, size }) => {
                let private = u64::from(kvm_bindings::KVM_MEMORY_EXIT_FLAG_PRIVATE);
                if flags & KVM_MEMORY_EXIT_FLAG_ARM_TAG_ACCESS != 0 {
                    ControlFlow::Continue(Next::Tag(TagAccessFault::new(gpa, size)?))
                } else if flags & private == 0 {
                    ControlFlow::Continue(Next::Efault(Some((flags, gpa, size))))
                } else {
                    on_event(Event::Exit(VcpuExit::MemoryFault { flags, gpa, size }))
                        .map_continue(|()| Next::Done)
                }
            }
            Ok(exit) => on_event(Event::Exit(exit)).map_continue(|()| Next::Done),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                on_event(Event::Interrupted).map_continue(|()| Next::Done)
            }
            Err(e) if e.errno() == libc::EFAULT => ControlFlow::Continue(Next::Efault(None)),
            Err(e) => return Err(kvm_error(KvmOp::Run, &e)),
        };
        let next = match flow {
            ControlFlow::Break(t) => return Ok(t),
            ControlFlow::Continue(n) => n,
        };
        let event = match next {
            Next::Done => continue,
            Next::Tag(fault) => {
                let Some(r) = resolver else {
                    return Err(Error::NoResolver { gpa: fault.gpa() });
                };
                let resolution = r.resolve(&*vcpu, &fault, host)?;
                Event::TagAccess { fault, resolution }
            }
            Next::Efault(_) if resolver.is_some_and(|r| r.retry_after_efault(epoch)) => {
                Event::SwapRetry
            }
            Next::Efault(Some((flags, gpa, size))) => {
                Event::Exit(VcpuExit::MemoryFault { flags, gpa, size })
            }
            Next::Efault(None) => {
                return Err(Error::Kvm {
                    op: KvmOp::Run,
                    source: std::io::Error::from_raw_os_error(libc::EFAULT),
                })
            }
        };
        if let ControlFlow::Break(t) = on_event(event) {
            return Ok(t);
        }
    }
}

impl Vcpu for VcpuFd {
    /// Makes a synchronous external data abort pending (`KVM_SET_VCPU_EVENTS`); KVM reports the
    /// address of the last fault in the guest's FAR.
    #[cfg(target_arch = "aarch64")]
    fn inject_data_abort(&self) -> Result<()> {
        let mut events = self
            .get_vcpu_events()
            .map_err(|e| kvm_error(KvmOp::GetVcpuEvents, &e))?;
        events.exception.ext_dabt_pending = 1;
        self.set_vcpu_events(&events)
            .map_err(|e| kvm_error(KvmOp::SetVcpuEvents, &e))
    }

    #[cfg(not(target_arch = "aarch64"))]
    fn inject_data_abort(&self) -> Result<()> {
        Err(Error::Unsupported(Feature::AbortInjection))
    }
}

#[cfg(all(test, feature = "unstable-uapi"))]
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
