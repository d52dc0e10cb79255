// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! What nta-demo and nta-bench share: host mappings, memslots, the guest's stage-1 table and
//! its vCPU (arm64 only).

use kvm_bindings::kvm_vcpu_init;
use kvm_ioctls::{VcpuFd, VmFd};
use nta_vmm::{Access, Backing, HostUsers, PauseError, Region, SwapWindow, Swapped, TagMemory};

/// Where the guest program and its RAM start.
pub const RAM_BASE: u64 = 0x4000_0000;
/// Offset of the guest's level-1 translation table in its RAM.
pub const TABLE_OFFSET: usize = 0x1_0000;
/// The second memslot (image, benchmark region) starts here.
pub const IMAGE_BASE: u64 = 0x8000_0000;
/// The guest's MMIO window: in no memslot, so every access exits.
pub const MMIO_BASE: u64 = 0x0900_0000;
/// `KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | (offsetof(pc) / 4)`
const REG_PC: u64 = 0x6030_0000_0010_0040;

/// An mmap()ed range, unmapped on drop.
pub struct Mapping {
    pub addr: *mut u8,
    pub len: usize,
    pub prot: i32,
}

impl Mapping {
    pub fn new(len: usize, prot: i32, flags: i32, fd: i32) -> Result<Self, String> {
        // SAFETY: a fresh mapping at an address of the kernel's choosing.
        let addr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
        if addr == libc::MAP_FAILED {
            return Err(format!(
                "mmap of {len} bytes: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Self {
            addr: addr.cast(),
            len,
            prot,
        })
    }

    /// Private anonymous read-write memory, with extra `flags` (`MAP_POPULATE`, ...).
    pub fn anon(len: usize, flags: i32) -> Result<Self, String> {
        Self::new(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
        )
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is readable, writable and `len` bytes long while `self` lives.
        unsafe { std::slice::from_raw_parts_mut(self.addr, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping what `new` mapped.
        unsafe { libc::munmap(self.addr.cast(), self.len) };
    }
}

/// The region `m` is as memslot `slot` at `gpa`, backed by `backing`.
fn region_of(slot: u32, gpa: u64, m: &Mapping, backing: Backing) -> nta_vmm::Result<Region> {
    let access = Access::from_prot(m.prot).ok_or(nta_vmm::Error::BadRegion {
        slot,
        problem: nta_vmm::RegionProblem::Inaccessible,
    })?;
    Ok(Region::new(
        slot,
        gpa,
        m.len as u64,
        m.addr as u64,
        backing,
        access,
    ))
}

/// The tools' host users of guest memory while vCPUs run: none.
pub struct NoHostUsers;

// SAFETY: while vCPU threads run (and so while faults are resolved), a tool's other threads
// only wait for them: nta-demo and nta-bench read or check guest memory only before the vCPUs
// start and after they end; no tool has a device thread, a pinner (VFIO, vhost, O_DIRECT) or a
// DMA user, and the image files are mapped by this process only. Nothing to pause.
unsafe impl HostUsers for NoHostUsers {
    fn pause(&self, _: &SwapWindow) -> Result<(), PauseError> {
        Ok(())
    }

    fn resume(&self, _: &SwapWindow, _: Option<&Swapped>) {}
}

/// Registers `m`, backed by `backing`, as memslot `slot` at `gpa`, with
/// `KVM_MEM_ARM_NOTAGACCESS` if it lacks tags and `mte_perm` (`KVM_CAP_ARM_MTE_PERM` is enabled).
pub fn set_slot(
    vm: &VmFd,
    slot: u32,
    gpa: u64,
    m: &Mapping,
    backing: Backing,
    mte_perm: bool,
) -> nta_vmm::Result<()> {
    // SAFETY: the caller keeps the mapping alive as long as the VM.
    unsafe { nta_vmm::kvm::set_memslot(vm, &region_of(slot, gpa, m, backing)?, mte_perm, 0) }
}

/// `e` with the errors under it, as one line: "KVM_SET_USER_MEMORY_REGION2(slot 1) failed:
/// Invalid argument (os error 22)".
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s = format!("{s}: {c}");
        cause = c.source();
    }
    s
}

/// Registers `ram` (tag-capable) as memslot 0 at `RAM_BASE` and `image`, backed by `backing`,
/// as memslot 1 at `IMAGE_BASE` (see [`set_slot`] for `mte_perm`); returns the map of both, for
/// resolving faults.
///
/// The caller keeps both mappings alive, and touches the image only as [`NoHostUsers`] says,
/// as long as it resolves faults with the map.
pub fn two_slots(
    vm: &VmFd,
    ram: &Mapping,
    image: &Mapping,
    backing: Backing,
    mte_perm: bool,
) -> Result<TagMemory, String> {
    let mut mem = TagMemory::for_host().map_err(|e| e.to_string())?;
    for (slot, gpa, m, b) in [
        (0, RAM_BASE, ram, Backing::Anonymous),
        (1, IMAGE_BASE, image, backing),
    ] {
        set_slot(vm, slot, gpa, m, b.clone(), mte_perm).map_err(|e| describe(&e))?;
        // SAFETY: `m` is this process's mapping with protection `m.prot` holding memslot
        // `slot`, which the caller keeps alive while it resolves faults (see above) and which
        // nothing else relies on staying the same memory.
        unsafe { mem.add(region_of(slot, gpa, m, b).map_err(|e| e.to_string())?) }
            .map_err(|e| e.to_string())?;
    }
    Ok(mem)
}

/// The little-endian value of up to 8 bytes of an MMIO access.
pub fn le(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(b)
}

/// A level-1 block descriptor: address | AF | SH inner | AttrIndx << 2 | block (0b01).
pub fn block(addr: u64, attr: u64) -> u64 {
    addr | (1 << 10) | (3 << 8) | (attr << 2) | 1
}

/// Copies the guest program to the start of `ram`, its level-1 table (`blocks`, one per GiB
/// from 0) to `TABLE_OFFSET`, and creates vCPU 0 starting at `RAM_BASE`.
pub fn setup_vcpu(
    vm: &VmFd,
    guest: &[u8],
    ram: &mut Mapping,
    blocks: &[u64],
) -> Result<VcpuFd, String> {
    let ram_bytes = ram.as_mut_slice();
    if guest.len() > TABLE_OFFSET {
        return Err(format!("guest program too big ({} bytes)", guest.len()));
    }
    ram_bytes[..guest.len()].copy_from_slice(guest);
    for (i, d) in blocks.iter().enumerate() {
        let off = TABLE_OFFSET + i * 8;
        ram_bytes[off..off + 8].copy_from_slice(&d.to_le_bytes());
    }

    add_vcpu(vm, 0)
}

/// Creates vCPU `id`, starting at `RAM_BASE` (powered on: no PSCI call needed).
pub fn add_vcpu(vm: &VmFd, id: u64) -> Result<VcpuFd, String> {
    let vcpu = vm
        .create_vcpu(id)
        .map_err(|e| format!("KVM_CREATE_VCPU({id}): {e}"))?;
    let mut init = kvm_vcpu_init::default();
    vm.get_preferred_target(&mut init)
        .map_err(|e| format!("KVM_ARM_PREFERRED_TARGET: {e}"))?;
    vcpu.vcpu_init(&init)
        .map_err(|e| format!("KVM_ARM_VCPU_INIT: {e}"))?;
    vcpu.set_one_reg(REG_PC, &RAM_BASE.to_le_bytes())
        .map_err(|e| format!("KVM_SET_ONE_REG(PC): {e}"))?;
    Ok(vcpu)
}
