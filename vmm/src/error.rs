use std::fmt;

/// What can go wrong; every variant says enough to act on.
#[derive(Debug)]
pub enum Error {
    /// The kernel does not offer `KVM_CAP_ARM_MTE_PERM`, or not this policy.
    Unsupported(&'static str),
    /// A KVM ioctl failed.
    Kvm(&'static str, kvm_ioctls::Error),
    /// A system call failed.
    Os(&'static str, std::io::Error),
    /// A memory fault exit that is not a tag access, or is malformed.
    NotTagAccess { flags: u64, gpa: u64, size: u64 },
    /// The faulting address is in no registered memslot.
    NoSlot { gpa: u64 },
    /// Memslots overlap, or a memslot is empty or not page-aligned.
    BadSlot(String),
    /// The `kill` policy: the guest accessed tags of memory that has none.
    Killed {
        gpa: u64,
        slot: u32,
        backing: String,
    },
    /// A policy name that does not exist.
    UnknownPolicy(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unsupported(what) => write!(f, "not supported by this kernel: {what}"),
            Error::Kvm(what, e) => write!(f, "{what}: {e}"),
            Error::Os(what, e) => write!(f, "{what}: {e}"),
            Error::NotTagAccess { flags, gpa, size } => write!(
                f,
                "memory fault at gpa {gpa:#x} (size {size:#x}, flags {flags:#x}) is not a tag access"
            ),
            Error::NoSlot { gpa } => write!(f, "gpa {gpa:#x} is in no memslot"),
            Error::BadSlot(why) => write!(f, "bad memslot: {why}"),
            Error::Killed { gpa, slot, backing } => write!(
                f,
                "guest killed: tag access at gpa {gpa:#x} in memslot {slot}, backed by {backing}, \
                 which has no tag storage"
            ),
            Error::UnknownPolicy(p) => {
                write!(f, "unknown policy '{p}' (expected kill, inject or make-taggable)")
            }
        }
    }
}

impl std::error::Error for Error {}
