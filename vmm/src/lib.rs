//! VMM-side support for `KVM_CAP_ARM_MTE_PERM`: giving an MTE guest memory that cannot hold
//! Allocation Tags, which KVM maps `NoTagAccess`, and resolving the guest's tag accesses to it.
//!
//! The flow for a VMM built on kvm-ioctls:
//!
//! 1. enable `KVM_CAP_ARM_MTE`, then [`enable_mte_perm`] with a [`KernelPolicy`], before
//!    creating vCPUs;
//! 2. register every memslot in a [`GuestMemory`], saying what backs it ([`Backing`]);
//! 3. when `VcpuFd::run()` returns `VcpuExit::MemoryFault { flags, gpa, size }`, pass it to
//!    [`TagAccessFault::from_exit`]; a `Some` is a tag access to memory without tag storage;
//! 4. resolve it with [`Resolver::resolve`] according to a [`Policy`]: kill the guest with a
//!    clear error, inject a data abort, or swap in tag-capable memory keeping the data.

mod error;
mod fault;
mod memory;
mod policy;
pub mod uapi;

pub use error::Error;
pub use fault::TagAccessFault;
pub use memory::{Backing, GuestMemory, Slot};
pub use policy::{enable_mte, enable_mte_perm, KernelPolicy, Policy, Resolution, Resolver};

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;
