// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The VMM's side of a swap: pausing the host's own users of the range while it is replaced.

use std::os::fd::OwnedFd;
use std::sync::Arc;

/// A range [`crate::Resolver`] is about to replace, as [`HostUsers`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SwapWindow {
    /// First guest address of the range.
    pub gpa: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Its memslot.
    pub slot: u32,
    /// Host address of its first byte, in this process.
    pub host_addr: u64,
    /// Whether the region was marked DMA-registered ([`crate::Region::dma_registered`]).
    pub dma_registered: bool,
}

/// The memfd a swap put in place, when the resolver was built with
/// [`crate::Replacement::Memfd`]: what a vhost-user back-end needs to map the new memory
/// (`VHOST_USER_SET_MEM_TABLE` or `VHOST_USER_ADD_MEM_REG`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MemfdRange {
    /// The memfd (shmem: it holds tags).
    pub fd: Arc<OwnedFd>,
    /// Offset of the range's first byte in it.
    pub offset: u64,
}

/// The memory now at a [`SwapWindow`]'s host address after a swap.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Swapped {
    /// The window that was replaced.
    pub window: SwapWindow,
    /// The memfd now mapped there, or `None` for private anonymous memory.
    pub memfd: Option<MemfdRange>,
}

/// Why [`HostUsers::pause`] could not pause the users of a range: the swap does not start.
pub type PauseError = Box<dyn std::error::Error + Send + Sync>;

/// The host-side users of guest memory, which a swap must not race.
///
/// A swap write-protects the range, copies it, and moves the copy over it with one `mremap`.
/// vCPUs need no help: their writes in the window fail in KVM, and the vCPU loop retries them
/// ([`crate::Resolver::retry_after_efault`]); KVM maps a page it looked up only if no MMU
/// notifier invalidation (the write-protection, the move) ran meanwhile. The host's other users
/// are the VMM's:
///
/// - **CPU writers** (device emulation writing virtio buffers with `memcpy`, vm-memory's
///   `write_slice`, atomics on a used ring; a live-migration thread that writes the range):
///   a write in the window takes `SIGSEGV`;
/// - **pinners** (VFIO DMA mappings, vhost-kernel or vhost-user back-ends, `O_DIRECT` and AIO
///   reads into guest memory, `io_uring` fixed buffers, RDMA memory regions, and even
///   `process_vm_writev(2)` or writes to `/proc/self/mem`, which pin the page, drop the lock
///   and then write): they hold the old pages, and what they write after the copy is lost.
///   One that pins after the write-protection gets `EFAULT`, but one that pinned just before
///   it does not notice.
///
/// Readers are safe, through the mapping or a pin: the data is the same before, during and
/// after the swap.
///
/// [`Resolver::resolve`](crate::Resolver::resolve) calls [`HostUsers::pause`] before it
/// write-protects the range and [`HostUsers::resume`] once the new memory is in place (or the
/// swap failed), on the vCPU thread that took the fault and with the resolver's lock held (one
/// swap runs at a time): neither may call back into the resolver, and a thread `pause` waits
/// for must not wait for the resolver.
///
/// # Safety
///
/// From the moment `pause(w)` returns `Ok` until `resume(w, ..)` is called, an implementation
/// guarantees for `[w.host_addr, w.host_addr + w.size)`:
///
/// 1. no thread of this process writes it with a CPU access, and none holds a `&mut`
///    reference into it;
/// 2. no pinner that writes it is active: none has a pin taken before `pause` that it writes
///    through later, and none takes one until `resume`;
/// 3. nothing maps, unmaps or changes the protection of it.
///
/// And for a window with `dma_registered`: [`HostUsers::covers_dma`] returns `true` only if
/// `pause` also stops the long-term DMA users of the range (VFIO, vhost) and `resume` gives
/// them the new memory (`VFIO_IOMMU_UNMAP_DMA` and `VFIO_IOMMU_MAP_DMA` of the range, a new
/// vhost-user memory table with [`Swapped::memfd`]), so that none keeps the old pages.
pub unsafe trait HostUsers: Sync {
    /// Pauses (and waits for) the host's writers and writing pinners of `window`.
    ///
    /// # Errors
    ///
    /// Why they could not be paused; the swap is then not made ([`crate::Error::PauseFailed`]).
    fn pause(&self, window: &SwapWindow) -> Result<(), PauseError>;

    /// Lets them go on; `swapped` is the new memory, or `None` if the swap failed (the range
    /// then holds the old memory, or, after [`crate::Error::RangeLost`], nothing).
    fn resume(&self, window: &SwapWindow, swapped: Option<&Swapped>);

    /// Whether `pause` and `resume` also handle the DMA registrations of DMA-registered
    /// regions (see the trait's safety section). Without it, a DMA-registered region is never
    /// swapped ([`crate::Error::DmaRegistered`]).
    fn covers_dma(&self) -> bool {
        false
    }
}
