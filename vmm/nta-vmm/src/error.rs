// SPDX-License-Identifier: MIT OR Apache-2.0
//! The crate's error type.

use std::fmt;

use crate::Backing;

/// A feature the host or KVM lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Feature {
    /// `KVM_CAP_ARM_MTE`.
    Mte,
    /// `KVM_CAP_ARM_MTE_PERM` (no FEAT_MTE_PERM, or `arm64.nomteperm`).
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
        source: kvm_ioctls::Error,
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
            Error::Kvm { source, .. } => Some(source),
            Error::Os { source, .. } | Error::MapCountExhausted { source, .. } => Some(source),
            _ => None,
        }
    }
}
