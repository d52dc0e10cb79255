// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Tag-access faults as KVM reports them.

#[cfg(feature = "unstable-uapi")]
use crate::uapi::KVM_MEMORY_EXIT_FLAG_ARM_TAG_ACCESS;
use crate::{Error, Result};

/// A guest's tag access to memory that KVM maps `NoTagAccess`, as reported by a
/// `KVM_EXIT_MEMORY_FAULT` with `KVM_MEMORY_EXIT_FLAG_ARM_TAG_ACCESS`. The access did not happen;
/// re-entering the vCPU retries it.
///
/// Only [`TagAccessFault::new`] and `TagAccessFault::from_exit` make one, and both check
/// that the page is a power of two in size and aligned to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagAccessFault {
    gpa: u64,
    size: u64,
}

impl TagAccessFault {
    /// A fault on the page `[gpa, gpa + size)`: `size` must be a power of two, `gpa` aligned to
    /// it, and the page must not wrap around the address space.
    ///
    /// # Errors
    ///
    /// [`Error::MalformedFault`].
    pub fn new(gpa: u64, size: u64) -> Result<Self> {
        if !size.is_power_of_two() || gpa % size != 0 || gpa.checked_add(size - 1).is_none() {
            return Err(Error::MalformedFault { gpa, size });
        }
        Ok(Self { gpa, size })
    }

    /// Recognises a tag-access fault among the memory fault exits (`flags`, `gpa`, `size` of
    /// `kvm_run.memory_fault`). `Ok(None)` for memory faults of other kinds (private memory,
    /// say), which the caller handles as before.
    ///
    /// # Errors
    ///
    /// [`Error::MalformedFault`] for a malformed tag access.
    #[cfg(feature = "unstable-uapi")]
    pub fn from_exit(flags: u64, gpa: u64, size: u64) -> Result<Option<Self>> {
        if flags & KVM_MEMORY_EXIT_FLAG_ARM_TAG_ACCESS == 0 {
            return Ok(None);
        }
        Self::new(gpa, size).map(Some)
    }

    /// Guest physical address of the page.
    #[must_use]
    pub fn gpa(&self) -> u64 {
        self.gpa
    }

    /// Size of the page.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }
}

#[cfg(all(test, feature = "unstable-uapi"))]
mod tests {
    use super::*;

    /// `KVM_MEMORY_EXIT_FLAG_PRIVATE` (kvm-bindings has it, as a `u32`).
    const KVM_MEMORY_EXIT_FLAG_PRIVATE: u64 = 1 << 3;

    #[test]
    fn tag_access_is_recognised() {
        let f = TagAccessFault::from_exit(KVM_MEMORY_EXIT_FLAG_ARM_TAG_ACCESS, 0x8000_1000, 0x1000);
        let f = f.unwrap().unwrap();
        assert_eq!((f.gpa(), f.size()), (0x8000_1000, 0x1000));
    }

    #[test]
    fn other_memory_faults_are_not_ours() {
        let f = TagAccessFault::from_exit(KVM_MEMORY_EXIT_FLAG_PRIVATE, 0x8000_1000, 0x1000);
        assert_eq!(f.unwrap(), None);
        assert_eq!(TagAccessFault::from_exit(0, 0, 0x1000).unwrap(), None);
    }

    #[test]
    fn malformed_pages_are_errors() {
        let flags = KVM_MEMORY_EXIT_FLAG_ARM_TAG_ACCESS;
        for (gpa, size) in [
            (0x8000_1008, 0x1000),
            (0x8000_1000, 0x1800),
            (0x8000_1000, 0),
            (!0xfff_u64, 0x2000),
        ] {
            assert!(matches!(
                TagAccessFault::from_exit(flags, gpa, size),
                Err(Error::MalformedFault { .. })
            ));
            assert!(TagAccessFault::new(gpa, size).is_err());
        }
        assert!(TagAccessFault::new(!0xfff_u64, 0x1000).is_ok());
    }
}
