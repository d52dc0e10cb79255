// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! VMM-side support for `KVM_CAP_ARM_MTE_PERM`: giving an MTE guest memory that cannot hold
//! Allocation Tags, which KVM maps `NoTagAccess`, and resolving the guest's tag accesses to it.
//!
//! The flow for a VMM on kvm-ioctls and vm-memory (features `kvm`, `vm-memory` and
//! `unstable-uapi`):
//!
//! 1. `kvm::enable_mte_perm` with a `kvm::KernelPolicy`, before creating vCPUs;
//! 2. describe the memslots in a [`TagMemory`] (from a vm-memory `GuestMemoryMmap` with
//!    `TagMemory::from_guest_memory`, or region by region), then build one [`Resolver`] per
//!    VM for a [`Policy`], shared by the vCPU threads;
//! 3. implement [`HostUsers`]: how to pause the VMM's own writers of a range (device threads,
//!    DMA) while a swap replaces it;
//! 4. run each vCPU with `kvm::run_vcpu`, which resolves tag accesses (kill the guest with a
//!    clear error, inject a data abort, or swap in tag-capable memory keeping the data) and
//!    retries the writes that raced a swap, and hands every other exit to the VMM.
//!
//! Without the `kvm` feature, the crate is hypervisor-neutral: a VMM on another binding
//! implements [`Vcpu`], builds [`TagAccessFault`]s from its exits and follows the epoch
//! protocol of [`Resolver::retry_after_efault`] itself.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
// The library (not its tests) is clippy::pedantic clean; CI builds with -D warnings.
#![cfg_attr(not(test), warn(clippy::pedantic))]

mod error;
mod fault;
mod host;
#[cfg(feature = "kvm")]
pub mod kvm;
mod memory;
mod policy;
mod swap;
#[cfg(feature = "unstable-uapi")]
pub mod uapi;
mod vma;

pub use error::{Error, Feature, KvmOp, RegionProblem, Syscall, Unkeepable};
pub use fault::TagAccessFault;
pub use host::{HostUsers, MemfdRange, PauseError, SwapWindow, Swapped};
pub use memory::{Access, Backing, Found, Region, TagMemory};
pub use policy::{
    ParsePolicyError, Policy, Replacement, Resolution, Resolver, ResolverBuilder, SwappedRange,
    Vcpu, DEFAULT_CHUNK, DEFAULT_MAX_REPEATS,
};

/// The README's example, compiled as a doctest.
#[cfg(all(
    doctest,
    feature = "kvm",
    feature = "vm-memory",
    feature = "unstable-uapi"
))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// The host's page size (`sysconf(_SC_PAGESIZE)`).
///
/// # Errors
///
/// [`Error::Os`] or [`Error::BadPageSize`] if the system reports none or a strange one.
pub fn host_page_size() -> Result<u64> {
    // SAFETY: sysconf reads a system value and touches no memory of ours.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p <= 0 {
        return Err(Error::Os {
            op: Syscall::Sysconf,
            source: std::io::Error::last_os_error(),
        });
    }
    let p = u64::try_from(p).map_err(|_| Error::BadPageSize(0))?;
    if !p.is_power_of_two() {
        return Err(Error::BadPageSize(p));
    }
    Ok(p)
}

/// What the host offers the swap, probed once up front.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostSupport {
    /// The page size.
    pub page_size: u64,
    /// Whether anonymous memory accepts `PROT_MTE`, i.e. is `VM_MTE_ALLOWED` on an MTE host:
    /// what KVM needs of the memory a swap puts in (the swap itself does not use `PROT_MTE`).
    pub anon_tag_capable: bool,
}

/// `PROT_MTE` (arm64).
const PROT_MTE: libc::c_int = 0x20;

/// Probes the host: its page size, and whether its anonymous memory can hold tags.
///
/// # Errors
///
/// As [`host_page_size`].
pub fn probe_host() -> Result<HostSupport> {
    let page_size = host_page_size()?;
    let len = usize::try_from(page_size).map_err(|_| Error::BadPageSize(page_size))?;
    // SAFETY: a fresh mapping at an address of the kernel's choosing, unmapped at once.
    let anon_tag_capable = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | PROT_MTE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            false
        } else {
            libc::munmap(p, len);
            cfg!(target_arch = "aarch64")
        }
    };
    Ok(HostSupport {
        page_size,
        anon_tag_capable,
    })
}
