use std::str::FromStr;

use kvm_bindings::kvm_enable_cap;
use kvm_ioctls::{VcpuFd, VmFd};

use crate::uapi::{
    KVM_ARM_MTE_PERM_EXIT, KVM_ARM_MTE_PERM_SEA, KVM_CAP_ARM_MTE, KVM_CAP_ARM_MTE_PERM,
};
use crate::{Error, GuestMemory, Result, Slot, TagAccessFault};

/// `PROT_MTE` (arm64): map anonymous memory with tags.
const PROT_MTE: libc::c_int = 0x20;

/// What KVM itself does on a tag access (the argument of `KVM_ENABLE_CAP`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelPolicy {
    /// Exit to the VMM, which applies a [`Policy`].
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

/// `KVM_ENABLE_CAP` of `cap` with `args[0] = arg` on the VM; `what` names it in errors.
fn enable_cap(vm: &VmFd, cap: u32, arg: u64, what: &'static str) -> Result<()> {
    let mut c = kvm_enable_cap {
        cap,
        ..Default::default()
    };
    c.args[0] = arg;
    vm.enable_cap(&c).map_err(|e| Error::Kvm(what, e))
}

fn check_mte(vm: &VmFd) -> Result<()> {
    if vm.check_extension_raw(KVM_CAP_ARM_MTE.into()) <= 0 {
        return Err(Error::Unsupported("KVM_CAP_ARM_MTE"));
    }
    Ok(())
}

/// Enables MTE (`KVM_CAP_ARM_MTE`) on a VM without vCPUs: memory must then hold tags, unless
/// [`enable_mte_perm`] is used instead.
pub fn enable_mte(vm: &VmFd) -> Result<()> {
    check_mte(vm)?;
    enable_cap(vm, KVM_CAP_ARM_MTE, 0, "KVM_ENABLE_CAP(KVM_CAP_ARM_MTE)")
}

/// Enables MTE, then `KVM_CAP_ARM_MTE_PERM` with `policy`, on a VM without vCPUs. Nothing is
/// enabled unless both are supported.
pub fn enable_mte_perm(vm: &VmFd, policy: KernelPolicy) -> Result<()> {
    check_mte(vm)?;
    let policies = vm.check_extension_raw(KVM_CAP_ARM_MTE_PERM.into());
    if policies <= 0 {
        return Err(Error::Unsupported(
            "KVM_CAP_ARM_MTE_PERM (no FEAT_MTE_PERM?)",
        ));
    }
    if (policies as u64) & policy.bit() == 0 {
        return Err(Error::Unsupported("this KVM_CAP_ARM_MTE_PERM policy"));
    }
    enable_cap(vm, KVM_CAP_ARM_MTE, 0, "KVM_ENABLE_CAP(KVM_CAP_ARM_MTE)")?;
    enable_cap(
        vm,
        KVM_CAP_ARM_MTE_PERM,
        policy.bit(),
        "KVM_ENABLE_CAP(KVM_CAP_ARM_MTE_PERM)",
    )
}

/// What the VMM does about a tag access that KVM reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Stop the guest with an error naming the address, memslot and backing.
    Kill,
    /// Deliver a synchronous external data abort to the guest, from userspace.
    Inject,
    /// Replace the faulting page (or chunk) with tag-capable memory holding the same data.
    MakeTaggable,
}

impl FromStr for Policy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "kill" => Ok(Policy::Kill),
            "inject" => Ok(Policy::Inject),
            "make-taggable" => Ok(Policy::MakeTaggable),
            _ => Err(Error::UnknownPolicy(s.to_string())),
        }
    }
}

/// How a tag access was resolved; the vCPU can be re-entered after each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// A data abort is pending for the guest.
    Injected,
    /// `[gpa, gpa + size)` is tag-capable memory now, holding the same data.
    Swapped { gpa: u64, size: u64, slot: u32 },
}

/// Applies a [`Policy`] to tag-access faults.
#[derive(Debug)]
pub struct Resolver {
    policy: Policy,
    chunk: u64,
}

impl Resolver {
    /// A resolver for `policy`; `make-taggable` swaps `chunk` bytes at a time (a power of two,
    /// at least a page; the faulting page alone if smaller).
    pub fn new(policy: Policy, chunk: u64) -> Self {
        Self { policy, chunk }
    }

    /// The range `make-taggable` swaps for `fault`: the aligned chunk around it, clipped to the
    /// slot, never less than the faulting page.
    pub fn swap_range(&self, slot: &Slot, fault: &TagAccessFault) -> (u64, u64) {
        let chunk = if self.chunk.is_power_of_two() {
            self.chunk.max(fault.size)
        } else {
            fault.size
        };
        let start = (fault.gpa & !(chunk - 1)).max(slot.gpa);
        let end = (fault.gpa & !(chunk - 1))
            .saturating_add(chunk)
            .min(slot.gpa + slot.size);
        (start, end - start)
    }

    /// Resolves `fault` on `vcpu`. Other vCPUs must not run meanwhile for `make-taggable`: a
    /// write to the old page between the copy and the swap would be lost.
    pub fn resolve(
        &self,
        mem: &mut GuestMemory,
        vcpu: &VcpuFd,
        fault: &TagAccessFault,
    ) -> Result<Resolution> {
        let slot = mem.lookup(fault.gpa)?.clone();
        if slot.backing.tag_capable() {
            // Swapped already (a stale fault, or another vCPU's): just retry.
            return Ok(Resolution::Swapped {
                gpa: fault.gpa,
                size: 0,
                slot: slot.id,
            });
        }
        match self.policy {
            Policy::Kill => Err(Error::Killed {
                gpa: fault.gpa,
                slot: slot.id,
                backing: slot.backing.to_string(),
            }),
            Policy::Inject => {
                inject_dabt(vcpu)?;
                Ok(Resolution::Injected)
            }
            Policy::MakeTaggable => {
                let (gpa, size) = self.swap_range(&slot, fault);
                // SAFETY: the range lies within the slot's host mapping, which the VMM owns
                // and does not otherwise use while the vCPUs are stopped.
                unsafe { swap_in_tagged(slot.host_addr_of(gpa), size)? };
                mem.mark_tag_capable(gpa, size)?;
                Ok(Resolution::Swapped {
                    gpa,
                    size,
                    slot: slot.id,
                })
            }
        }
    }
}

/// Makes a synchronous external data abort pending for `vcpu` (`KVM_SET_VCPU_EVENTS`); KVM
/// reports the address of the last fault in the guest's FAR.
#[cfg(target_arch = "aarch64")]
fn inject_dabt(vcpu: &VcpuFd) -> Result<()> {
    let mut events = vcpu
        .get_vcpu_events()
        .map_err(|e| Error::Kvm("KVM_GET_VCPU_EVENTS", e))?;
    events.exception.ext_dabt_pending = 1;
    vcpu.set_vcpu_events(&events)
        .map_err(|e| Error::Kvm("KVM_SET_VCPU_EVENTS", e))
}

#[cfg(not(target_arch = "aarch64"))]
fn inject_dabt(_vcpu: &VcpuFd) -> Result<()> {
    Err(Error::Unsupported("abort injection outside arm64"))
}

/// Replaces `[addr, addr + size)` of this process with anonymous `PROT_MTE` memory holding the
/// same data, in one step (the new memory is filled first, then moved over the old).
///
/// # Safety
///
/// The range must be a page-aligned part of a mapping this process owns, and nothing may use
/// it concurrently.
unsafe fn swap_in_tagged(addr: u64, size: u64) -> Result<()> {
    let len = size as usize;
    let new = libc::mmap(
        std::ptr::null_mut(),
        len,
        libc::PROT_READ | libc::PROT_WRITE | PROT_MTE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
        0,
    );
    if new == libc::MAP_FAILED {
        return Err(Error::Os(
            "mmap(PROT_MTE) of the replacement",
            std::io::Error::last_os_error(),
        ));
    }
    // The replacement's tags are zero, as are the pointers' here: plain copies work.
    std::ptr::copy_nonoverlapping(addr as *const u8, new as *mut u8, len);
    let moved = libc::mremap(
        new,
        len,
        len,
        libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
        addr as *mut libc::c_void,
    );
    if moved == libc::MAP_FAILED {
        let err = std::io::Error::last_os_error();
        libc::munmap(new, len);
        return Err(Error::Os("mremap over the old memory", err));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backing;

    fn slot() -> Slot {
        Slot {
            id: 1,
            gpa: 0x8000_0000,
            size: 0x3_0000,
            host_addr: 0x7f00_0000_0000,
            backing: Backing::PrivateFile("/ramfs/x".into()),
        }
    }

    fn fault(gpa: u64) -> TagAccessFault {
        TagAccessFault { gpa, size: 0x1000 }
    }

    #[test]
    fn policies_parse_and_refuse_unknown_names() {
        assert_eq!("kill".parse::<Policy>().unwrap(), Policy::Kill);
        assert_eq!("inject".parse::<Policy>().unwrap(), Policy::Inject);
        assert_eq!(
            "make-taggable".parse::<Policy>().unwrap(),
            Policy::MakeTaggable
        );
        let e = "swap".parse::<Policy>().unwrap_err();
        assert!(e.to_string().contains("unknown policy 'swap'"));
    }

    #[test]
    fn swap_range_is_the_page_by_default() {
        let r = Resolver::new(Policy::MakeTaggable, 0);
        assert_eq!(
            r.swap_range(&slot(), &fault(0x8001_2000)),
            (0x8001_2000, 0x1000)
        );
        let r = Resolver::new(Policy::MakeTaggable, 0x3000); // not a power of two
        assert_eq!(
            r.swap_range(&slot(), &fault(0x8001_2000)),
            (0x8001_2000, 0x1000)
        );
    }

    #[test]
    fn swap_range_is_the_aligned_chunk_clipped_to_the_slot() {
        let r = Resolver::new(Policy::MakeTaggable, 0x1_0000);
        assert_eq!(
            r.swap_range(&slot(), &fault(0x8001_2000)),
            (0x8001_0000, 0x1_0000)
        );
        let r = Resolver::new(Policy::MakeTaggable, 0x4_0000);
        assert_eq!(
            r.swap_range(&slot(), &fault(0x8002_f000)),
            (0x8000_0000, 0x3_0000)
        );
    }

    #[test]
    fn kill_names_address_slot_and_backing() {
        let e = Error::Killed {
            gpa: 0x8000_1000,
            slot: 1,
            backing: slot().backing.to_string(),
        };
        let s = e.to_string();
        assert!(s.contains("0x80001000") && s.contains("memslot 1"));
        assert!(s.contains("private file mapping of /ramfs/x"));
        assert!(!slot().backing.tag_capable());
        assert!(Backing::TagCapable.tag_capable());
    }
}
