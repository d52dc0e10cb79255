// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! nta-vmm used with the guest memory types of Firecracker (`GuestMemoryMmap<Option<
//! AtomicBitmap>>`) and cloud-hypervisor (`GuestMemoryMmap<AtomicBitmap>`), for whichever
//! vm-memory version the lock file holds.

// vm-memory 0.18 moved `iter()` from `GuestMemory` to `GuestMemoryBackend`: import both.
#[allow(unused_imports)]
use vm_memory::*;

use nta_vmm::{Result, TagMemory};
use vm_memory::bitmap::AtomicBitmap;

/// The map of a Firecracker-style guest memory, memslot = region index.
///
/// # Safety
///
/// As `TagMemory::from_guest_memory`.
pub unsafe fn firecracker(mem: &GuestMemoryMmap<Option<AtomicBitmap>>) -> Result<TagMemory> {
    let mut slot = 0;
    // SAFETY: the caller's contract.
    unsafe {
        TagMemory::from_guest_memory(mem.iter(), |_| {
            slot += 1;
            slot - 1
        })
    }
}

/// The map of a cloud-hypervisor-style guest memory, memslot = region index.
///
/// # Safety
///
/// As `TagMemory::from_guest_memory`.
pub unsafe fn cloud_hypervisor(mem: &GuestMemoryMmap<AtomicBitmap>) -> Result<TagMemory> {
    let mut slot = 0;
    // SAFETY: the caller's contract.
    unsafe {
        TagMemory::from_guest_memory(mem.iter(), |_| {
            slot += 1;
            slot - 1
        })
    }
}
