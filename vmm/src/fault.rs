use crate::uapi::KVM_MEMORY_EXIT_FLAG_TAG_ACCESS;
use crate::{Error, Result};

/// A guest's tag access to memory that KVM maps `NoTagAccess`, as reported by a
/// `KVM_EXIT_MEMORY_FAULT` with `KVM_MEMORY_EXIT_FLAG_TAG_ACCESS`.
///
/// The access did not happen; re-entering the vCPU retries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagAccessFault {
    /// Guest physical address of the page, aligned to `size`.
    pub gpa: u64,
    /// Size of the page, a power of two.
    pub size: u64,
}

impl TagAccessFault {
    /// Recognises a tag-access fault among memory fault exits.
    ///
    /// Returns `Ok(None)` for memory faults of other kinds (private memory, say), which the
    /// caller handles as before, and an error for a tag access whose page is malformed.
    pub fn from_exit(flags: u64, gpa: u64, size: u64) -> Result<Option<Self>> {
        if flags & KVM_MEMORY_EXIT_FLAG_TAG_ACCESS == 0 {
            return Ok(None);
        }
        if !size.is_power_of_two() || gpa % size != 0 {
            return Err(Error::NotTagAccess { flags, gpa, size });
        }
        Ok(Some(Self { gpa, size }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uapi::KVM_MEMORY_EXIT_FLAG_PRIVATE;

    #[test]
    fn tag_access_is_recognised() {
        let f = TagAccessFault::from_exit(KVM_MEMORY_EXIT_FLAG_TAG_ACCESS, 0x8000_1000, 0x1000);
        assert_eq!(
            f.unwrap(),
            Some(TagAccessFault {
                gpa: 0x8000_1000,
                size: 0x1000
            })
        );
    }

    #[test]
    fn other_memory_faults_are_not_ours() {
        let f = TagAccessFault::from_exit(KVM_MEMORY_EXIT_FLAG_PRIVATE, 0x8000_1000, 0x1000);
        assert_eq!(f.unwrap(), None);
        assert_eq!(TagAccessFault::from_exit(0, 0, 0x1000).unwrap(), None);
    }

    #[test]
    fn malformed_pages_are_errors() {
        let flags = KVM_MEMORY_EXIT_FLAG_TAG_ACCESS;
        assert!(TagAccessFault::from_exit(flags, 0x8000_1008, 0x1000).is_err());
        assert!(TagAccessFault::from_exit(flags, 0x8000_1000, 0x1800).is_err());
        assert!(TagAccessFault::from_exit(flags, 0x8000_1000, 0).is_err());
    }
}
