// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The crate's error type.

use std::fmt;

use crate::host::PauseError;
use crate::{Backing, Policy};

/// A feature the host or KVM lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Feature {
    /// `KVM_CAP_ARM_MTE`.
    Mte,
    /// `KVM_CAP_ARM_MTE_PERM` (no `FEAT_MTE_PERM`, or `arm64.nomteperm`).
    MtePerm,
    /// The requested `KVM_CAP_ARM_MTE_PERM` policy.
    MtePermPolicy,
    /// Injecting an abort (only on arm64).
    AbortInjection,
    /// Anonymous memory that can hold tags (`VM_MTE_ALLOWED` on an MTE host), which
    /// `make-taggable` swaps in.
    TagCapableAnonMemory,
}

/// The KVM operation that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvmOp {
    /// `KVM_ENABLE_CAP(KVM_CAP_ARM_MTE)`.
    EnableMte,
    /// `KVM_ENABLE_CAP(KVM_CAP_ARM_MTE_PERM)`.
    EnableMtePerm,
    /// `KVM_GET_VCPU_EVENTS`.
    GetVcpuEvents,
    /// `KVM_SET_VCPU_EVENTS`.
    SetVcpuEvents,
    /// `KVM_RUN`.
    Run,
    /// `KVM_SET_USER_MEMORY_REGION2` of this memslot.
    SetUserMemoryRegion2 {
        /// The memslot.
        slot: u32,
    },
}

/// The system call that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Syscall {
    /// `sysconf(_SC_PAGESIZE)`.
    Sysconf,
    /// `mmap()` of the replacement memory.
    Mmap,
    /// `mprotect()`: write-protecting the range, or restoring a protection.
    Mprotect,
    /// `mremap(MREMAP_FIXED)` of the replacement over the range.
    Mremap,
    /// `fstat()` of a region's file.
    Fstat,
    /// `fstatfs()` of a region's file.
    Fstatfs,
    /// Reading `/proc/self/smaps`.
    ReadSmaps,
    /// `get_mempolicy()` of the range.
    GetMempolicy,
    /// `process_vm_readv()`: the copy of the range.
    ProcessVmReadv,
}

/// A property of a range's mapping that a swap cannot give the new memory, so it refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unkeepable {
    /// `mlock()`ed: the new pages would not be locked.
    Mlock,
    /// Registered with userfaultfd: the registration would not follow.
    Userfaultfd,
    /// A memory policy (`mbind()`): the new pages would get the default one.
    MemPolicy,
    /// The range spans mappings whose properties differ.
    MixedMappings,
    /// Part of the range is not mapped.
    NotMapped,
}

/// Why a region was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegionProblem {
    /// It has no bytes.
    Empty,
    /// Its guest address, size or host address is not page-aligned.
    Unaligned,
    /// It wraps around the guest or host address space.
    Wraps,
    /// It overlaps the region of this memslot.
    Overlaps(u32),
    /// Its memslot number is registered already.
    DuplicateSlot,
    /// Its host mapping is neither readable nor writable (`PROT_NONE`).
    Inaccessible,
}

/// What can go wrong; every variant carries what is needed to act on it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The host or KVM does not offer this.
    Unsupported(Feature),
    /// A KVM ioctl failed.
    Kvm {
        /// Which one.
        op: KvmOp,
        /// The error it returned.
        source: std::io::Error,
    },
    /// `KVM_CAP_ARM_MTE_PERM` reports policies this crate does not know: the kernel's UAPI is
    /// not the one this crate was built for (see the `unstable-uapi` feature).
    UnknownPolicies(u64),
    /// A tag-access exit, though no resolver was given to handle it.
    NoResolver {
        /// Guest address of the access's page.
        gpa: u64,
    },
    /// A system call failed.
    Os {
        /// Which one.
        op: Syscall,
        /// The error it returned.
        source: std::io::Error,
    },
    /// Swapping `[gpa, gpa + size)` needs one more mapping than the process may have
    /// (`vm.max_map_count`): the range is unchanged; a larger chunk size needs fewer mappings.
    MapCountExhausted {
        /// First guest address of the range.
        gpa: u64,
        /// Its size.
        size: u64,
        /// The `ENOMEM` of `mmap()` or `mremap()`.
        source: std::io::Error,
    },
    /// Memory ran short (`ENOMEM` not explained by `vm.max_map_count`, e.g. the commit limit)
    /// while swapping `[gpa, gpa + size)`: the range is unchanged.
    OutOfMemory {
        /// First guest address of the range.
        gpa: u64,
        /// Its size.
        size: u64,
        /// The `ENOMEM`.
        source: std::io::Error,
    },
    /// Part of `[gpa, gpa + size)` cannot be read (a file truncated under its mapping): the
    /// range is unchanged, and the guest's own access to it fails as well.
    Unreadable {
        /// First guest address of the range.
        gpa: u64,
        /// Its size.
        size: u64,
    },
    /// The kernel unmapped `[gpa, gpa + size)` and then failed to move the new memory there:
    /// the range holds nothing now. Fatal for the VM.
    RangeLost {
        /// First guest address of the range.
        gpa: u64,
        /// Its size.
        size: u64,
        /// The `mremap()` error.
        source: std::io::Error,
    },
    /// A swap of `[gpa, gpa + size)` failed (`cause`), and giving the range its protection
    /// back failed too: it stays read-only, and the guest's writes to it fail. Fatal for the
    /// VM.
    ProtectionLost {
        /// First guest address of the range.
        gpa: u64,
        /// Its size.
        size: u64,
        /// The restoring `mprotect()`'s error.
        source: std::io::Error,
        /// Why the swap failed.
        cause: Box<Error>,
    },
    /// A swap of `[gpa, gpa + size)` would lose a property of its mapping: refused, nothing
    /// changed.
    CannotKeep {
        /// First guest address of the range.
        gpa: u64,
        /// Its size.
        size: u64,
        /// The property.
        what: Unkeepable,
    },
    /// The region is DMA-registered and the VMM's [`crate::HostUsers`] does not cover DMA:
    /// a swap would leave the DMA users on the old pages; refused, nothing changed.
    DmaRegistered {
        /// Guest address of the access's page.
        gpa: u64,
        /// Its memslot.
        slot: u32,
    },
    /// [`crate::HostUsers::pause`] failed: the swap did not start.
    PauseFailed {
        /// First guest address of the range.
        gpa: u64,
        /// Its size.
        size: u64,
        /// Why.
        source: PauseError,
    },
    /// The swap budget ([`crate::ResolverBuilder::max_swapped_bytes`]) is spent and its
    /// fallback is `kill`.
    SwapBudgetExhausted {
        /// Guest address of the access's page.
        gpa: u64,
        /// Its memslot.
        slot: u32,
        /// Bytes swapped so far.
        swapped: u64,
    },
    /// A policy that cannot be a fallback or a region's policy here.
    BadFallback(Policy),
    /// A tag-access exit whose page is not a power-of-two size, or not aligned to it.
    MalformedFault {
        /// Guest address of the exit.
        gpa: u64,
        /// Size of the exit.
        size: u64,
    },
    /// The address is in no registered region.
    NoRegion {
        /// The guest address.
        gpa: u64,
    },
    /// A region was refused.
    BadRegion {
        /// Its memslot number.
        slot: u32,
        /// Why.
        problem: RegionProblem,
    },
    /// A page size that is zero or not a power of two.
    BadPageSize(u64),
    /// A chunk size that is not a power of two, or smaller than the page size.
    BadChunkSize {
        /// The chunk size asked for.
        chunk: u64,
        /// The page size.
        page: u64,
    },
    /// A range that is empty or not page-aligned.
    BadRange {
        /// Its start.
        addr: u64,
        /// Its size.
        size: u64,
    },
    /// A fault whose page extends beyond its region.
    OutsideRegion {
        /// Guest address of the page.
        gpa: u64,
        /// Its size.
        size: u64,
        /// The memslot of the region that holds `gpa`.
        slot: u32,
    },
    /// The `kill` policy: the guest accessed the tags of memory that has none.
    Killed {
        /// Guest address of the access's page.
        gpa: u64,
        /// Its memslot.
        slot: u32,
        /// What backs it.
        backing: Backing,
    },
    /// `make-taggable` would replace a shared file or device page by private memory, cutting
    /// the guest off from the file or device; see [`crate::ResolverBuilder::allow_unshare`].
    WouldUnshare {
        /// Guest address of the access's page.
        gpa: u64,
        /// Its memslot.
        slot: u32,
        /// What backs it.
        backing: Backing,
    },
    /// KVM keeps reporting tag accesses to a page that is tag-capable already.
    StillFaulting {
        /// Guest address of the page.
        gpa: u64,
        /// How many times in a row it was reported.
        attempts: u32,
    },
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Feature::Mte => "KVM_CAP_ARM_MTE",
            Feature::MtePerm => "KVM_CAP_ARM_MTE_PERM (no FEAT_MTE_PERM?)",
            Feature::MtePermPolicy => "this KVM_CAP_ARM_MTE_PERM policy",
            Feature::AbortInjection => "abort injection outside arm64",
            Feature::TagCapableAnonMemory => {
                "tag-capable anonymous memory (PROT_MTE refused: no MTE on this host?)"
            }
        })
    }
}

impl fmt::Display for KvmOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvmOp::EnableMte => f.write_str("KVM_ENABLE_CAP(KVM_CAP_ARM_MTE)"),
            KvmOp::EnableMtePerm => f.write_str("KVM_ENABLE_CAP(KVM_CAP_ARM_MTE_PERM)"),
            KvmOp::GetVcpuEvents => f.write_str("KVM_GET_VCPU_EVENTS"),
            KvmOp::SetVcpuEvents => f.write_str("KVM_SET_VCPU_EVENTS"),
            KvmOp::Run => f.write_str("KVM_RUN"),
            KvmOp::SetUserMemoryRegion2 { slot } => {
                write!(f, "KVM_SET_USER_MEMORY_REGION2(slot {slot})")
            }
        }
    }
}

impl fmt::Display for Syscall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Syscall::Sysconf => "sysconf(_SC_PAGESIZE)",
            Syscall::Mmap => "mmap of the replacement memory",
            Syscall::Mprotect => "mprotect",
            Syscall::Mremap => "mremap of the replacement over the range",
            Syscall::Fstat => "fstat of the region's file",
            Syscall::Fstatfs => "fstatfs of the region's file",
            Syscall::ReadSmaps => "reading /proc/self/smaps",
            Syscall::GetMempolicy => "get_mempolicy of the range",
            Syscall::ProcessVmReadv => "process_vm_readv (the copy of the range)",
        })
    }
}

impl fmt::Display for RegionProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionProblem::Empty => f.write_str("it is empty"),
            RegionProblem::Unaligned => f.write_str("it is not page-aligned"),
            RegionProblem::Wraps => f.write_str("it wraps around the address space"),
            RegionProblem::Overlaps(s) => write!(f, "it overlaps memslot {s}"),
            RegionProblem::DuplicateSlot => f.write_str("its memslot is registered already"),
            RegionProblem::Inaccessible => f.write_str("its mapping is PROT_NONE"),
        }
    }
}

impl fmt::Display for Unkeepable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unkeepable::Mlock => "it is mlock()ed",
            Unkeepable::Userfaultfd => "it is registered with userfaultfd",
            Unkeepable::MemPolicy => "it has a memory policy (mbind)",
            Unkeepable::MixedMappings => "it spans mappings with different properties",
            Unkeepable::NotMapped => "part of it is not mapped",
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unsupported(what) => write!(f, "not supported here: {what}"),
            Error::Kvm { op, .. } => write!(f, "{op} failed"),
            Error::Os { op, .. } => write!(f, "{op} failed"),
            Error::MapCountExhausted { gpa, size, .. } => write!(
                f,
                "swapping gpa {gpa:#x}+{size:#x} needs more mappings than vm.max_map_count \
                 allows (the range is unchanged; use a larger chunk size)"
            ),
            Error::UnknownPolicies(m) => write!(
                f,
                "KVM_CAP_ARM_MTE_PERM offers policies {m:#x}, beyond the EXIT and SEA bits this \
                 crate knows: a kernel with another UAPI"
            ),
            Error::NoResolver { gpa } => {
                write!(f, "tag-access exit at gpa {gpa:#x}, but no resolver handles them")
            }
            Error::OutOfMemory { gpa, size, .. } => write!(
                f,
                "out of memory swapping gpa {gpa:#x}+{size:#x} (the range is unchanged)"
            ),
            Error::Unreadable { gpa, size } => write!(
                f,
                "gpa {gpa:#x}+{size:#x} cannot be read (file truncated?); the range is unchanged"
            ),
            Error::RangeLost { gpa, size, .. } => write!(
                f,
                "swapping gpa {gpa:#x}+{size:#x} failed after the kernel unmapped it: the \
                 range is lost"
            ),
            Error::ProtectionLost { gpa, size, cause, .. } => write!(
                f,
                "{cause}; and restoring the protection of gpa {gpa:#x}+{size:#x} failed: it \
                 stays read-only"
            ),
            Error::CannotKeep { gpa, size, what } => write!(
                f,
                "refusing to swap gpa {gpa:#x}+{size:#x}: {what}, which the new memory would \
                 not keep"
            ),
            Error::DmaRegistered { gpa, slot } => write!(
                f,
                "refusing to swap gpa {gpa:#x} in memslot {slot}: it is DMA-registered, and the \
                 VMM's HostUsers does not cover DMA"
            ),
            Error::PauseFailed { gpa, size, .. } => write!(
                f,
                "pausing the host's users of gpa {gpa:#x}+{size:#x} failed; nothing swapped"
            ),
            Error::SwapBudgetExhausted { gpa, slot, swapped } => write!(
                f,
                "guest killed: tag access at gpa {gpa:#x} in memslot {slot} after {swapped:#x} \
                 bytes were swapped, the budget"
            ),
            Error::BadFallback(p) => write!(f, "{p:?} cannot be used here"),
            Error::MalformedFault { gpa, size } => write!(
                f,
                "tag-access exit at gpa {gpa:#x} with size {size:#x}: not an aligned power-of-two page"
            ),
            Error::NoRegion { gpa } => write!(f, "gpa {gpa:#x} is in no registered region"),
            Error::BadRegion { slot, problem } => {
                write!(f, "region of memslot {slot} refused: {problem}")
            }
            Error::BadPageSize(p) => write!(f, "page size {p:#x} is not a power of two"),
            Error::BadChunkSize { chunk, page } => write!(
                f,
                "chunk size {chunk:#x} is not a power of two of at least the page size {page:#x}"
            ),
            Error::BadRange { addr, size } => {
                write!(f, "range {addr:#x}+{size:#x} is empty or not page-aligned")
            }
            Error::OutsideRegion { gpa, size, slot } => write!(
                f,
                "page {gpa:#x}+{size:#x} extends beyond the region of memslot {slot}"
            ),
            Error::Killed { gpa, slot, backing } => write!(
                f,
                "guest killed: tag access at gpa {gpa:#x} in memslot {slot}, backed by {backing}, \
                 which has no tag storage"
            ),
            Error::WouldUnshare { gpa, slot, backing } => write!(
                f,
                "refusing to make gpa {gpa:#x} in memslot {slot} taggable: it is {backing}, and \
                 private memory in its place would cut the guest off from it"
            ),
            Error::StillFaulting { gpa, attempts } => write!(
                f,
                "KVM reported {attempts} tag accesses in a row to gpa {gpa:#x}, which is \
                 tag-capable already"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Kvm { source, .. }
            | Error::Os { source, .. }
            | Error::MapCountExhausted { source, .. }
            | Error::OutOfMemory { source, .. }
            | Error::RangeLost { source, .. }
            | Error::ProtectionLost { source, .. } => Some(source),
            Error::PauseFailed { source, .. } => Some(&**source),
            _ => None,
        }
    }
}
