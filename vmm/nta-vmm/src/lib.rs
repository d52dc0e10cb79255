// SPDX-License-Identifier: MIT OR Apache-2.0
//! VMM-side support for `KVM_CAP_ARM_MTE_PERM`: giving an MTE guest memory that cannot hold
//! Allocation Tags, which KVM maps `NoTagAccess`, and resolving the guest's tag accesses to it.
//!
//! The flow for a VMM on kvm-ioctls and vm-memory:
//!
//! 1. [`kvm::enable_mte_perm`] with a [`kvm::KernelPolicy`], before creating vCPUs;
//! 2. describe the memslots in a [`TagMemory`] (from a vm-memory `GuestMemoryMmap` with
//!    [`TagMemory::from_guest_memory`], or region by region), then build one [`Resolver`] per
//!    VM for a [`Policy`], shared by the vCPU threads;
//! 3. before each `KVM_RUN`, read [`Resolver::epoch`] and [`kvm::clear_exit_reason`];
//! 4. on a tag-access exit ([`kvm::tag_fault`]), [`Resolver::resolve`]: kill the guest with a
//!    clear error, inject a data abort, or swap in tag-capable memory keeping the data; on an
//!    `EFAULT`, [`Resolver::retry_after_efault`] tells whether it was a write racing a swap.
//!
//! Only [`kvm`] knows KVM; a VMM on another hypervisor binding implements [`Vcpu`] and decodes
//! its exits into [`TagAccessFault`] itself.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod error;
mod fault;
pub mod kvm;
mod memory;
mod policy;
mod swap;
pub mod uapi;

pub use error::{Error, Feature, KvmOp, RegionProblem, Syscall};
pub use fault::TagAccessFault;
pub use memory::{Backing, Found, Region, TagMemory};
pub use policy::{
    HostQuiesced, ParsePolicyError, Policy, Resolution, Resolver, ResolverBuilder, Vcpu,
    DEFAULT_CHUNK, DEFAULT_MAX_REPEATS,
};

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// The host's page size (`sysconf(_SC_PAGESIZE)`).
pub fn host_page_size() -> Result<u64> {
    // SAFETY: sysconf reads a system value and touches no memory of ours.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p <= 0 {
        return Err(Error::Os {
            op: Syscall::Sysconf,
            source: std::io::Error::last_os_error(),
        });
    }
    let p = p as u64;
    if !p.is_power_of_two() {
        return Err(Error::BadPageSize(p));
    }
    Ok(p)
}

/// What the host offers the swap, probed once up front.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
pub fn probe_host() -> Result<HostSupport> {
    let page_size = host_page_size()?;
    // SAFETY: a fresh mapping at an address of the kernel's choosing, unmapped at once.
    let anon_tag_capable = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            page_size as usize,
            libc::PROT_READ | PROT_MTE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            false
        } else {
            libc::munmap(p, page_size as usize);
            cfg!(target_arch = "aarch64")
        }
    };
    Ok(HostSupport {
        page_size,
        anon_tag_capable,
    })
}
