// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Policies for tag accesses, and the resolver that applies them; hypervisor-neutral.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::{Feature, Syscall, Unkeepable};
use crate::host::{HostUsers, MemfdRange, SwapWindow, Swapped};
use crate::swap::{self, Libc, Mm, NewMemory, Step, SwapError};
use crate::vma::{self, VmaError};
use crate::{Error, Region, Result, TagAccessFault, TagMemory};

/// What the VMM does about a tag access that KVM reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Policy {
    /// Stop the guest with an error naming the address, memslot and backing.
    Kill,
    /// Deliver a synchronous external data abort to the guest, from userspace.
    Inject,
    /// Replace the faulting chunk with tag-capable memory holding the same data.
    MakeTaggable,
}

/// A policy name that is not `kill`, `inject` or `make-taggable`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsePolicyError(pub String);

impl std::fmt::Display for ParsePolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown policy '{}' (expected kill, inject or make-taggable)",
            self.0
        )
    }
}

impl std::error::Error for ParsePolicyError {}

impl FromStr for Policy {
    type Err = ParsePolicyError;

    fn from_str(s: &str) -> std::result::Result<Self, ParsePolicyError> {
        match s {
            "kill" => Ok(Policy::Kill),
            "inject" => Ok(Policy::Inject),
            "make-taggable" => Ok(Policy::MakeTaggable),
            _ => Err(ParsePolicyError(s.to_string())),
        }
    }
}

/// What the resolver needs of a vCPU: the hypervisor-specific part of the `inject` policy
/// ([`crate::kvm`] implements it for kvm-ioctls' `VcpuFd`).
pub trait Vcpu {
    /// Makes a synchronous external data abort pending, reported at the faulting address.
    ///
    /// # Errors
    ///
    /// The hypervisor's, if it refuses.
    fn inject_data_abort(&self) -> Result<()>;
}

/// What a swap puts in place of memory without tag storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Replacement {
    /// Private anonymous memory (the default).
    #[default]
    Anonymous,
    /// A memfd (shmem, which holds tags) per swap, mapped shared: a vhost-user back-end can
    /// map the new memory from [`Swapped::memfd`].
    Memfd,
}

/// How a tag access was resolved; the vCPU can be re-entered after each.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Resolution {
    /// A data abort is pending for the guest.
    Injected,
    /// The window is tag-capable memory now, holding the same data at the same host address;
    /// but it is new memory, which [`HostUsers::resume`] was given.
    Swapped(Swapped),
    /// The page is tag-capable already (another vCPU's swap, or a stale exit): re-enter.
    Retry,
}

/// A range of a region without tag storage that was swapped for tag-capable memory: what a
/// migration sends the target, which makes the same ranges taggable before it restores tags
/// ([`Resolver::make_taggable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SwappedRange {
    /// First guest address.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
    /// The memslot.
    pub slot: u32,
}

/// The swap epoch: even when no swap is running, odd while one is.
#[derive(Debug, Default)]
struct Epoch {
    value: Mutex<u64>,
    changed: Condvar,
    /// Threads that found a swap running and wait for it (for tests).
    #[cfg(test)]
    waiting: std::sync::atomic::AtomicUsize,
}

/// The state a swap changes, under one lock.
#[derive(Debug)]
struct State {
    mem: TagMemory,
    /// Tag-access exits to a tag-capable page in a row, by page, with the epoch of the last.
    repeats: HashMap<u64, (u32, u64)>,
    /// Bytes swapped so far.
    swapped_bytes: u64,
}

/// The default chunk: 2 MiB, a stage-2 block with 4 KiB pages.
pub const DEFAULT_CHUNK: u64 = 2 << 20;
/// The default bound of repeated tag-access exits to a page that is tag-capable already.
pub const DEFAULT_MAX_REPEATS: u32 = 16;
/// How long [`Resolver::retry_after_efault`] waits for a swap at most.
const SWAP_WAIT: Duration = Duration::from_secs(10);

/// Options of a [`Resolver`].
#[derive(Debug)]
#[must_use]
pub struct ResolverBuilder {
    policy: Policy,
    chunk: u64,
    max_repeats: u32,
    allow_unshare: bool,
    host_probe: bool,
    replacement: Replacement,
    huge: bool,
    budget: Option<(u64, Policy)>,
}

impl ResolverBuilder {
    /// Whether [`ResolverBuilder::build`] checks, for `make-taggable`, that the host's
    /// anonymous memory can hold tags ([`crate::probe_host`]), which the swap relies on
    /// (default: yes). Tests of the swap's mechanics on hosts without MTE turn it off.
    pub fn host_probe(mut self, probe: bool) -> Self {
        self.host_probe = probe;
        self
    }

    /// Swap `chunk` bytes at a time, aligned (a power of two, at least the page size; default
    /// 2 MiB), clipped at the edges of the region and of its parts swapped already.
    pub fn chunk(mut self, chunk: u64) -> Self {
        self.chunk = chunk;
        self
    }

    /// Fail with [`Error::StillFaulting`] after this many exits in a row to a page that is
    /// tag-capable already, with no swap in between (default 16, at least 1).
    pub fn max_repeats(mut self, n: u32) -> Self {
        self.max_repeats = n.max(1);
        self
    }

    /// Allow `make-taggable` on shared file and device memory (default: refused with
    /// [`Error::WouldUnshare`]). The guest then no longer sees the file or device there; its
    /// writes stay private to the VM.
    pub fn allow_unshare(mut self, allow: bool) -> Self {
        self.allow_unshare = allow;
        self
    }

    /// What swaps put in place (default [`Replacement::Anonymous`]).
    pub fn replacement(mut self, r: Replacement) -> Self {
        self.replacement = r;
        self
    }

    /// Whether swapped chunks that are multiples of 2 MiB ask for transparent huge pages
    /// (`MADV_HUGEPAGE`), unless their range has `MADV_NOHUGEPAGE` (default: yes). With a host
    /// address congruent to the guest address modulo 2 MiB, KVM then maps them with stage-2
    /// blocks.
    pub fn huge_pages(mut self, huge: bool) -> Self {
        self.huge = huge;
        self
    }

    /// Swap at most `bytes` in all; a tag access that would need more is handled by
    /// `fallback` (`Kill` or `Inject`) instead, so that a guest tagging all its memory cannot
    /// make the VMM allocate without bound (default: no bound).
    pub fn max_swapped_bytes(mut self, bytes: u64, fallback: Policy) -> Self {
        self.budget = Some((bytes, fallback));
        self
    }

    /// The resolver, for the regions of `mem`.
    ///
    /// # Errors
    ///
    /// [`Error::BadChunkSize`], [`Error::BadFallback`] (a fallback that swaps), and
    /// [`Error::Unsupported`] for `make-taggable` on a host whose anonymous memory cannot hold
    /// tags (see [`ResolverBuilder::host_probe`]).
    pub fn build(self, mem: TagMemory) -> Result<Resolver> {
        let page = mem.page_size();
        if !self.chunk.is_power_of_two() || self.chunk < page {
            return Err(Error::BadChunkSize {
                chunk: self.chunk,
                page,
            });
        }
        if let Some((_, fallback @ Policy::MakeTaggable)) = self.budget {
            return Err(Error::BadFallback(fallback));
        }
        let swaps = self.policy == Policy::MakeTaggable || mem.any_policy(Policy::MakeTaggable);
        if swaps && self.host_probe && !crate::probe_host()?.anon_tag_capable {
            return Err(Error::Unsupported(Feature::TagCapableAnonMemory));
        }
        Ok(Resolver {
            policy: self.policy,
            chunk: self.chunk,
            max_repeats: self.max_repeats,
            allow_unshare: self.allow_unshare,
            replacement: self.replacement,
            huge: self.huge,
            budget: self.budget,
            state: Mutex::new(State {
                mem,
                repeats: HashMap::new(),
                swapped_bytes: 0,
            }),
            epoch: Epoch::default(),
        })
    }
}

/// Applies a [`Policy`] to tag-access faults. One per VM, shared by its vCPU threads (it is
/// `Sync`); [`crate::kvm::run_vcpu`] is the vCPU loop that uses it:
///
/// ```text
/// loop {
///     let epoch = resolver.epoch();
///     match run(vcpu) {
///         tag-access exit  => resolver.resolve(&vcpu, &fault, &host_users)?,
///         EFAULT           => if !resolver.retry_after_efault(epoch) { fail },
///         ...
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Resolver {
    policy: Policy,
    chunk: u64,
    max_repeats: u32,
    allow_unshare: bool,
    replacement: Replacement,
    huge: bool,
    budget: Option<(u64, Policy)>,
    state: Mutex<State>,
    epoch: Epoch,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave State half-updated: every update is one assignment after
    // the fallible work.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Resolver {
    /// Options for a resolver applying `policy` (to regions without a policy of their own).
    pub fn builder(policy: Policy) -> ResolverBuilder {
        ResolverBuilder {
            policy,
            chunk: DEFAULT_CHUNK,
            max_repeats: DEFAULT_MAX_REPEATS,
            allow_unshare: false,
            host_probe: true,
            replacement: Replacement::Anonymous,
            huge: true,
            budget: None,
        }
    }

    /// The policy of regions without one of their own.
    #[must_use]
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Runs `f` on the memory map, e.g. to add or remove a region (memory hotplug): no swap
    /// runs meanwhile.
    pub fn with_memory<T>(&self, f: impl FnOnce(&mut TagMemory) -> T) -> T {
        f(&mut lock(&self.state).mem)
    }

    /// The swap epoch; read it before each `KVM_RUN`, for [`Resolver::retry_after_efault`].
    #[must_use]
    pub fn epoch(&self) -> u64 {
        *lock(&self.epoch.value)
    }

    /// Bytes swapped so far.
    #[must_use]
    pub fn swapped_bytes(&self) -> u64 {
        lock(&self.state).swapped_bytes
    }

    /// For a vCPU whose `KVM_RUN` failed with `EFAULT`: whether that may be a write to a range
    /// being swapped (write-protected), in which case this waits for the swap to finish and
    /// the vCPU must simply run again. `before` is [`Resolver::epoch`] read before `KVM_RUN`.
    /// `false`: no swap ran meanwhile, the `EFAULT` is a real error.
    #[must_use]
    pub fn retry_after_efault(&self, before: u64) -> bool {
        let mut e = lock(&self.epoch.value);
        let start = std::time::Instant::now();
        #[cfg(test)]
        if *e % 2 == 1 {
            self.epoch
                .waiting
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        while *e % 2 == 1 && start.elapsed() < SWAP_WAIT {
            e = match self.epoch.changed.wait_timeout(e, SWAP_WAIT) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        *e != before || before % 2 == 1
    }

    /// Runs `op`, a VMM call that makes KVM write guest memory through its host address
    /// (`KVM_DEV_ARM_ITS_SAVE_TABLES`, `KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES`), again while it
    /// fails with `EFAULT` because a swap ran meanwhile (at most 8 times).
    ///
    /// # Errors
    ///
    /// `op`'s error, when it is not an `EFAULT` across a swap.
    pub fn retry_across_swaps<T>(
        &self,
        mut op: impl FnMut() -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        let mut tries = 0;
        loop {
            let epoch = self.epoch();
            match op() {
                Err(e)
                    if e.raw_os_error() == Some(libc::EFAULT)
                        && tries < 8
                        && self.retry_after_efault(epoch) =>
                {
                    tries += 1;
                }
                r => return r,
            }
        }
    }

    fn bump_epoch(&self) {
        *lock(&self.epoch.value) += 1;
        self.epoch.changed.notify_all();
    }

    /// The range `make-taggable` swaps for `fault`: the aligned chunk around it, clipped to
    /// the part of its region it lies in.
    ///
    /// # Errors
    ///
    /// [`Error::NoRegion`], or [`Error::OutsideRegion`] if the fault's page is not in one part.
    pub fn swap_range(&self, fault: &TagAccessFault) -> Result<(u64, u64)> {
        let st = lock(&self.state);
        Self::range_in(&st.mem, self.chunk, fault)
    }

    fn range_in(mem: &TagMemory, chunk: u64, fault: &TagAccessFault) -> Result<(u64, u64)> {
        let found = mem.lookup(fault.gpa())?;
        let (start, end) = found.part;
        let fend = fault.gpa() + fault.size(); // TagAccessFault::new checked it does not wrap
        if fend > end || fault.size() < mem.page_size() {
            return Err(Error::OutsideRegion {
                gpa: fault.gpa(),
                size: fault.size(),
                slot: found.region.slot,
            });
        }
        let chunk = chunk.max(fault.size());
        let lo = (fault.gpa() & !(chunk - 1)).max(start);
        let hi = (fault.gpa() & !(chunk - 1)).saturating_add(chunk).min(end);
        Ok((lo, hi - lo))
    }

    /// Resolves `fault`, reported by `vcpu`, by the policy of its region. A swap pauses the
    /// host's users of the range with `host` around the replacement; vCPUs may go on running.
    ///
    /// # Errors
    ///
    /// The `kill` policy's [`Error::Killed`]; [`Error::WouldUnshare`],
    /// [`Error::DmaRegistered`], [`Error::CannotKeep`] for swaps refused up front (nothing
    /// changed); the swap's own failures, of which only [`Error::RangeLost`] and
    /// [`Error::ProtectionLost`] leave the range unusable; [`Error::StillFaulting`].
    pub fn resolve<H: HostUsers + ?Sized>(
        &self,
        vcpu: &impl Vcpu,
        fault: &TagAccessFault,
        host: &H,
    ) -> Result<Resolution> {
        self.resolve_with(&Libc, vcpu, fault, host)
    }

    pub(crate) fn resolve_with<H: HostUsers + ?Sized>(
        &self,
        mm: &impl Mm,
        vcpu: &impl Vcpu,
        fault: &TagAccessFault,
        host: &H,
    ) -> Result<Resolution> {
        let mut st = lock(&self.state);
        let found = st.mem.lookup(fault.gpa())?;
        let region = found.region.clone();
        if found.tag_capable {
            let epoch = self.epoch();
            let n = st.repeats.entry(fault.gpa()).or_insert((0, epoch));
            // Exits across a swap may be stale; count only those with no swap in between.
            *n = if n.1 == epoch {
                (n.0.saturating_add(1), epoch)
            } else {
                (1, epoch)
            };
            if n.0 > self.max_repeats {
                return Err(Error::StillFaulting {
                    gpa: fault.gpa(),
                    attempts: n.0,
                });
            }
            return Ok(Resolution::Retry);
        }
        let inject = || {
            vcpu.inject_data_abort()?;
            Ok(Resolution::Injected)
        };
        match region.policy.unwrap_or(self.policy) {
            Policy::Kill => Err(Error::Killed {
                gpa: fault.gpa(),
                slot: region.slot,
                backing: region.backing,
            }),
            Policy::Inject => inject(),
            Policy::MakeTaggable => {
                let (gpa, size) = Self::range_in(&st.mem, self.chunk, fault)?;
                match self.budget {
                    Some((max, fallback)) if st.swapped_bytes.saturating_add(size) > max => {
                        match fallback {
                            Policy::Inject => inject(),
                            // Kill; build() refuses MakeTaggable as a fallback.
                            _ => Err(Error::SwapBudgetExhausted {
                                gpa: fault.gpa(),
                                slot: region.slot,
                                swapped: st.swapped_bytes,
                            }),
                        }
                    }
                    _ => {
                        let swapped = self.swap(&mut st, mm, &region, gpa, size, host)?;
                        Ok(Resolution::Swapped(swapped))
                    }
                }
            }
        }
    }

    /// Swaps `[gpa, gpa + size)` of `region`, one part of it that is not tag-capable.
    fn swap<H: HostUsers + ?Sized>(
        &self,
        st: &mut State,
        mm: &impl Mm,
        region: &Region,
        gpa: u64,
        size: u64,
        host: &H,
    ) -> Result<Swapped> {
        if region.backing.shared() && !self.allow_unshare {
            return Err(Error::WouldUnshare {
                gpa,
                slot: region.slot,
                backing: region.backing.clone(),
            });
        }
        if region.dma_registered && !host.covers_dma() {
            return Err(Error::DmaRegistered {
                gpa,
                slot: region.slot,
            });
        }
        // In the region (the callers' lookups), whose host range add() checked does not wrap.
        let host_addr = region.host_addr + (gpa - region.gpa);
        let cannot = |what| Error::CannotKeep { gpa, size, what };
        let flags = match vma::flags_of_self(host_addr, size) {
            Ok(f) => f,
            Err(VmaError::Io(source)) => {
                return Err(Error::Os {
                    op: Syscall::ReadSmaps,
                    source,
                })
            }
            Err(VmaError::Hole) => return Err(cannot(Unkeepable::NotMapped)),
            Err(VmaError::Mixed) => return Err(cannot(Unkeepable::MixedMappings)),
        };
        if flags.locked {
            return Err(cannot(Unkeepable::Mlock));
        }
        if flags.userfaultfd {
            return Err(cannot(Unkeepable::Userfaultfd));
        }
        match vma::default_mempolicy(host_addr) {
            Ok(true) => {}
            Ok(false) => return Err(cannot(Unkeepable::MemPolicy)),
            Err(source) => {
                return Err(Error::Os {
                    op: Syscall::GetMempolicy,
                    source,
                })
            }
        }
        let window = SwapWindow {
            gpa,
            size,
            slot: region.slot,
            host_addr,
            dma_registered: region.dma_registered,
        };
        let (Ok(host_usize), Ok(size_usize)) = (usize::try_from(host_addr), usize::try_from(size))
        else {
            return Err(Error::BadRange {
                addr: host_addr,
                size,
            });
        };
        host.pause(&window)
            .map_err(|source| Error::PauseFailed { gpa, size, source })?;
        let new = NewMemory {
            memfd: self.replacement == Replacement::Memfd,
            flags,
            huge: self.huge,
        };
        self.bump_epoch();
        // SAFETY: [host_addr, host_addr + size) is page-aligned memory of the region, which the
        // VMM registered as its guest memory (TagMemory::add's contract, checked aligned and
        // non-wrapping); `host.pause` returned Ok, so no host thread writes it, no pinner
        // writes it and nothing remaps it until `resume` (HostUsers' contract), and for a
        // DMA-registered region `covers_dma` says the same of its DMA users; vCPU threads may
        // run: the swap write-protects the range first, so their writes fault and are retried
        // after the swap (retry_after_efault, which the odd epoch makes them wait in).
        let r = unsafe { swap::swap_range(mm, host_usize, size_usize, region.access.prot(), &new) };
        self.bump_epoch();
        let r = r.map(|fd| Swapped {
            window,
            memfd: fd.map(|fd| MemfdRange {
                fd: Arc::new(fd),
                offset: 0,
            }),
        });
        host.resume(&window, r.as_ref().ok());
        let swapped = r.map_err(|e| swap_error(e, gpa, size))?;
        st.mem.mark_tag_capable(gpa, size)?;
        st.swapped_bytes += size;
        Ok(swapped)
    }

    /// The ranges swapped so far, in guest address order.
    #[must_use]
    pub fn swapped_ranges(&self) -> Vec<SwappedRange> {
        lock(&self.state).mem.swapped_parts()
    }

    /// Makes `[gpa, gpa + size)` tag-capable now, whatever the policy, swapping the parts of it
    /// that are not (a migration target does this for the source's [`SwappedRange`]s before
    /// it restores their tags: tags written to `NoTagAccess` memory are refused). The range
    /// must lie in one region; parts tag-capable already are left alone. Returns what was
    /// swapped, which `host` was told of.
    ///
    /// # Errors
    ///
    /// As [`Resolver::resolve`]'s swaps, and [`Error::BadRange`] or [`Error::OutsideRegion`]
    /// for a range not in one region. Parts swapped before an error stay swapped.
    pub fn make_taggable<H: HostUsers + ?Sized>(
        &self,
        gpa: u64,
        size: u64,
        host: &H,
    ) -> Result<Vec<Swapped>> {
        let mut st = lock(&self.state);
        let page = st.mem.page_size();
        let end = gpa
            .checked_add(size)
            .filter(|_| size > 0 && (gpa | size) & (page - 1) == 0);
        let end = end.ok_or(Error::BadRange { addr: gpa, size })?;
        let region = st.mem.lookup(gpa)?.region.clone();
        if end > region.gpa + region.size {
            return Err(Error::OutsideRegion {
                gpa,
                size,
                slot: region.slot,
            });
        }
        let mut done = Vec::new();
        let mut at = gpa;
        while at < end {
            let found = st.mem.lookup(at)?;
            let (tag_capable, part_end) = (found.tag_capable, found.part.1.min(end));
            if !tag_capable {
                done.push(self.swap(&mut st, &Libc, &region, at, part_end - at, host)?);
            }
            at = part_end;
        }
        Ok(done)
    }
}

fn swap_error(e: SwapError, gpa: u64, size: u64) -> Error {
    let op = match e.step {
        Step::Protect | Step::Reprotect => Syscall::Mprotect,
        Step::Map => Syscall::Mmap,
        Step::Copy => Syscall::ProcessVmReadv,
        Step::Remap => Syscall::Mremap,
    };
    let source = e.source;
    let err = if e.lost {
        Error::RangeLost { gpa, size, source }
    } else if e.step == Step::Copy && source.raw_os_error() == Some(libc::EFAULT) {
        Error::Unreadable { gpa, size }
    } else if source.raw_os_error() == Some(libc::ENOMEM) {
        // mmap, mremap and an mprotect that splits a mapping fail with ENOMEM past
        // vm.max_map_count, and mmap and the copy's page faults when memory is short.
        match vma::map_count() {
            Some((n, max)) if n + 4 >= max => Error::MapCountExhausted { gpa, size, source },
            _ => Error::OutOfMemory { gpa, size, source },
        }
    } else {
        Error::Os { op, source }
    };
    match e.restore {
        Some(source) => Error::ProtectionLost {
            gpa,
            size,
            source,
            cause: Box::new(err),
        },
        None => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swap::tests::{Failing, TestMap};
    use crate::{Access, Backing, Region};
    use std::cell::Cell;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};

    const RW: i32 = libc::PROT_READ | libc::PROT_WRITE;

    /// A vCPU that counts the aborts it was given.
    #[derive(Default)]
    struct FakeVcpu {
        aborts: Cell<u32>,
    }

    impl Vcpu for FakeVcpu {
        fn inject_data_abort(&self) -> Result<()> {
            self.aborts.set(self.aborts.get() + 1);
            Ok(())
        }
    }

    fn page() -> u64 {
        crate::host_page_size().unwrap()
    }

    /// Host users of a test's mappings: none but the test thread, which does not touch them
    /// while it resolves; counts the calls.
    #[derive(Default)]
    struct NoUsers {
        pauses: AtomicUsize,
        resumes: AtomicUsize,
        swapped: AtomicUsize,
        dma: bool,
        fail: bool,
    }

    // SAFETY: the tests using it write their mappings only outside resolve() (or with
    // process_vm_writev only while paused by PausedDevice), hold no reference into them, and
    // have no pinner or DMA user (`dma` only claims to cover one that does not exist).
    unsafe impl HostUsers for NoUsers {
        fn pause(&self, _: &SwapWindow) -> std::result::Result<(), crate::PauseError> {
            if self.fail {
                return Err("the device would not stop".into());
            }
            self.pauses.fetch_add(1, SeqCst);
            Ok(())
        }
        fn resume(&self, _: &SwapWindow, swapped: Option<&Swapped>) {
            self.resumes.fetch_add(1, SeqCst);
            if swapped.is_some() {
                self.swapped.fetch_add(1, SeqCst);
            }
        }
        fn covers_dma(&self) -> bool {
            self.dma
        }
    }

    fn quiesced() -> NoUsers {
        NoUsers::default()
    }

    fn swapped(gpa: u64, size: u64, slot: u32) -> impl Fn(&Resolution) -> bool {
        move |r| matches!(r, Resolution::Swapped(s) if (s.window.gpa, s.window.size, s.window.slot) == (gpa, size, slot))
    }

    const GPA: u64 = 0x8000_0000;

    /// The memory map of one region at GPA (memslot `slot`), backed by `m`.
    fn memory(m: &TestMap, slot: u32, backing: Backing, prot: i32) -> Result<TagMemory> {
        let access = crate::Access::from_prot(prot).expect("a readable test mapping");
        region_memory(Region::new(
            slot,
            GPA,
            m.len as u64,
            m.addr as u64,
            backing,
            access,
        ))
    }

    /// The memory map of `r`, a test's own mapping.
    fn region_memory(r: Region) -> Result<TagMemory> {
        let mut mem = TagMemory::for_host()?;
        // SAFETY: the region is the test's own mapping, alive while the map is used, and may be
        // replaced.
        unsafe { mem.add(r)? };
        Ok(mem)
    }

    /// A resolver over one region of `pages` real pages at GPA, backed by `m`.
    fn resolver(m: &TestMap, backing: Backing, prot: i32, b: ResolverBuilder) -> Result<Resolver> {
        b.host_probe(false).build(memory(m, 3, backing, prot)?)
    }

    fn fault(gpa: u64) -> TagAccessFault {
        TagAccessFault::new(gpa, page()).unwrap()
    }

    fn private() -> Backing {
        Backing::PrivateFile("/x".into())
    }

    #[test]
    fn policies_parse_and_refuse_unknown_names() {
        assert_eq!("kill".parse::<Policy>().unwrap(), Policy::Kill);
        assert_eq!("inject".parse::<Policy>().unwrap(), Policy::Inject);
        assert_eq!("make-taggable".parse::<Policy>(), Ok(Policy::MakeTaggable));
        let e = "swap".parse::<Policy>().unwrap_err();
        assert!(e.to_string().contains("unknown policy 'swap'"));
    }

    #[test]
    fn bad_chunk_sizes_are_refused() {
        let m = TestMap::new(4 * page() as usize, RW, false);
        for chunk in [0, 3 * page(), page() / 2, page() + 1] {
            let b = Resolver::builder(Policy::MakeTaggable).chunk(chunk);
            assert!(matches!(
                resolver(&m, private(), RW, b),
                Err(Error::BadChunkSize { .. })
            ));
        }
    }

    #[test]
    fn make_taggable_needs_tag_capable_anonymous_memory() {
        let m = TestMap::new(page() as usize, RW, false);
        let mem = memory(&m, 1, private(), RW).unwrap();
        let r = Resolver::builder(Policy::MakeTaggable).build(mem);
        if crate::probe_host().unwrap().anon_tag_capable {
            assert!(r.is_ok());
        } else {
            assert!(matches!(
                r,
                Err(Error::Unsupported(Feature::TagCapableAnonMemory))
            ));
        }
    }

    #[test]
    fn kill_names_address_slot_and_backing() {
        let m = TestMap::new(4 * page() as usize, RW, false);
        let r = resolver(&m, private(), RW, Resolver::builder(Policy::Kill)).unwrap();
        let e = r.resolve(&FakeVcpu::default(), &fault(GPA + page()), &quiesced());
        let e = e.unwrap_err();
        assert!(matches!(e, Error::Killed { slot: 3, .. }));
        let s = e.to_string();
        assert!(s.contains(&format!("{:#x}", GPA + page())) && s.contains("memslot 3"));
        assert!(s.contains("private file mapping of /x"));
    }

    #[test]
    fn inject_injects_once_per_exit() {
        let m = TestMap::new(4 * page() as usize, RW, false);
        let r = resolver(&m, private(), RW, Resolver::builder(Policy::Inject)).unwrap();
        let v = FakeVcpu::default();
        for _ in 0..3 {
            assert!(matches!(
                r.resolve(&v, &fault(GPA), &quiesced()).unwrap(),
                Resolution::Injected
            ));
        }
        assert_eq!(v.aborts.get(), 3);
        assert!(m.pattern_intact());
    }

    #[test]
    fn faults_outside_the_region_are_refused() {
        let m = TestMap::new(4 * page() as usize, RW, false);
        let r = resolver(&m, private(), RW, Resolver::builder(Policy::MakeTaggable)).unwrap();
        let v = FakeVcpu::default();
        let q = quiesced();
        let end = GPA + 4 * page();
        assert!(matches!(
            r.resolve(&v, &fault(end), &q),
            Err(Error::NoRegion { .. })
        ));
        assert!(matches!(
            r.resolve(&v, &fault(GPA - page()), &q),
            Err(Error::NoRegion { .. })
        ));
        // A page larger than the region's rest.
        let big = TagAccessFault::new(GPA, 8 * page()).unwrap();
        assert!(matches!(
            r.resolve(&v, &big, &q),
            Err(Error::OutsideRegion { slot: 3, .. })
        ));
        assert!(m.pattern_intact());
    }

    #[test]
    fn make_taggable_swaps_the_chunk_clipped_to_the_region() {
        // 6 pages at GPA, chunk 4 pages: the aligned chunk around page 5 is pages 4-7, clipped
        // to pages 4-5; around page 1, pages 0-3.
        let m = TestMap::new(6 * page() as usize, RW, false);
        let b = Resolver::builder(Policy::MakeTaggable).chunk(4 * page());
        let r = resolver(&m, private(), RW, b).unwrap();
        let v = FakeVcpu::default();
        let q = quiesced();
        assert_eq!(
            r.swap_range(&fault(GPA + 5 * page())).unwrap(),
            (GPA + 4 * page(), 2 * page())
        );
        let got = r.resolve(&v, &fault(GPA + 5 * page()), &q).unwrap();
        assert!(swapped(GPA + 4 * page(), 2 * page(), 3)(&got), "{got:?}");
        let got = r.resolve(&v, &fault(GPA + page()), &q).unwrap();
        assert!(swapped(GPA, 4 * page(), 3)(&got), "{got:?}");
        assert_eq!((q.pauses.load(SeqCst), q.resumes.load(SeqCst)), (2, 2));
        assert_eq!(r.swapped_bytes(), 6 * page());
        assert!(m.pattern_intact());
        let (perms, path) = TestMap::maps_entry(m.addr);
        assert_eq!((perms.as_str(), path.as_str()), ("rw-p", ""));
        // Tag-capable now: a later exit there is retried, not swapped again.
        assert!(matches!(
            r.resolve(&v, &fault(GPA + 2 * page()), &q).unwrap(),
            Resolution::Retry
        ));
        r.with_memory(|mem| assert!(mem.lookup(GPA + 5 * page()).unwrap().tag_capable));
        assert_eq!(v.aborts.get(), 0);
        // Two swaps, two odd-even epochs.
        assert_eq!(r.epoch(), 4);
    }

    #[test]
    fn chunks_are_clipped_at_parts_swapped_already() {
        let m = TestMap::new(8 * page() as usize, RW, false);
        let b = Resolver::builder(Policy::MakeTaggable).chunk(page());
        let r = resolver(&m, private(), RW, b).unwrap();
        let q = quiesced();
        r.resolve(&FakeVcpu::default(), &fault(GPA + 3 * page()), &q)
            .unwrap();
        // Now with a larger chunk (a new resolver on the same map is not possible; use the
        // range computation of one with the map's parts).
        r.with_memory(|mem| {
            let got = Resolver::range_in(mem, 8 * page(), &fault(GPA + page())).unwrap();
            assert_eq!(got, (GPA, 3 * page()));
            let got = Resolver::range_in(mem, 8 * page(), &fault(GPA + 6 * page())).unwrap();
            assert_eq!(got, (GPA + 4 * page(), 4 * page()));
        });
    }

    #[test]
    fn a_read_only_region_stays_read_only() {
        let m = TestMap::new(4 * page() as usize, libc::PROT_READ, false);
        let r = resolver(
            &m,
            private(),
            libc::PROT_READ,
            Resolver::builder(Policy::MakeTaggable),
        )
        .unwrap();
        r.resolve(&FakeVcpu::default(), &fault(GPA), &quiesced())
            .unwrap();
        assert!(m.pattern_intact());
        assert_eq!(TestMap::maps_entry(m.addr).0, "r--p");
    }

    #[test]
    fn shared_files_and_devices_are_refused_unless_allowed() {
        for backing in [
            Backing::SharedFile("/f".into()),
            Backing::Device("/dev/d".into()),
        ] {
            let m = TestMap::new(2 * page() as usize, RW, true);
            let b = Resolver::builder(Policy::MakeTaggable);
            let r = resolver(&m, backing.clone(), RW, b).unwrap();
            let e = r
                .resolve(&FakeVcpu::default(), &fault(GPA), &quiesced())
                .unwrap_err();
            assert!(matches!(e, Error::WouldUnshare { slot: 3, .. }), "{e:?}");
            assert!(TestMap::maps_entry(m.addr).1.contains("nta-vmm-test"));
            let b = Resolver::builder(Policy::MakeTaggable).allow_unshare(true);
            let r = resolver(&m, backing, RW, b).unwrap();
            assert!(matches!(
                r.resolve(&FakeVcpu::default(), &fault(GPA), &quiesced()),
                Ok(Resolution::Swapped(_))
            ));
            assert!(m.pattern_intact());
            assert_eq!(TestMap::maps_entry(m.addr).1, "");
        }
    }

    #[test]
    fn enomem_is_a_typed_error_and_changes_nothing() {
        for (fail_mmap, fail_mremap) in [(true, false), (false, true)] {
            let m = TestMap::new(4 * page() as usize, RW, false);
            let r = resolver(&m, private(), RW, Resolver::builder(Policy::MakeTaggable)).unwrap();
            let mm = Failing {
                fail_map: fail_mmap,
                fail_mremap,
                ..Default::default()
            };
            let e = r
                .resolve_with(&mm, &FakeVcpu::default(), &fault(GPA), &quiesced())
                .unwrap_err();
            // Far from vm.max_map_count, an ENOMEM is memory running short.
            match &e {
                Error::OutOfMemory { gpa, size, .. } => {
                    assert_eq!((*gpa, *size), (GPA, 4 * page()))
                }
                other => panic!("{other:?}"),
            }
            assert!(std::error::Error::source(&e).is_some());
            assert!(m.pattern_intact());
            assert_eq!(TestMap::maps_entry(m.addr).0, "rw-p");
            // Not recorded as tag-capable: the next exit tries again.
            r.with_memory(|mem| assert!(!mem.lookup(GPA).unwrap().tag_capable));
            // The epoch is even again: no vCPU waits forever.
            assert_eq!(r.epoch() % 2, 0);
        }
    }

    #[test]
    fn a_tag_capable_page_that_keeps_exiting_is_reported() {
        let m = TestMap::new(2 * page() as usize, RW, false);
        let b = Resolver::builder(Policy::MakeTaggable).max_repeats(5);
        let r = resolver(&m, Backing::Anonymous, RW, b).unwrap();
        let v = FakeVcpu::default();
        let q = quiesced();
        for _ in 0..5 {
            assert!(matches!(
                r.resolve(&v, &fault(GPA), &q).unwrap(),
                Resolution::Retry
            ));
        }
        match r.resolve(&v, &fault(GPA), &q) {
            Err(Error::StillFaulting { gpa, attempts }) => assert_eq!((gpa, attempts), (GPA, 6)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn efault_is_retried_only_across_a_swap() {
        let m = TestMap::new(2 * page() as usize, RW, false);
        let r = resolver(&m, private(), RW, Resolver::builder(Policy::MakeTaggable)).unwrap();
        let before = r.epoch();
        assert!(!r.retry_after_efault(before));
        r.resolve(&FakeVcpu::default(), &fault(GPA), &quiesced())
            .unwrap();
        assert!(r.retry_after_efault(before));
        assert!(!r.retry_after_efault(r.epoch()));
    }

    #[test]
    fn a_vcpu_waits_for_a_running_swap() {
        let m = TestMap::new(2 * page() as usize, RW, false);
        let r = resolver(&m, private(), RW, Resolver::builder(Policy::MakeTaggable)).unwrap();
        let before = r.epoch();
        r.bump_epoch(); // a swap starts
        let ended = AtomicBool::new(false);
        std::thread::scope(|s| {
            // The waiter is waiting (it saw the odd epoch) before the swap ends: it must not
            // return before.
            let t = s.spawn(|| {
                let retry = r.retry_after_efault(before);
                (retry, ended.load(SeqCst))
            });
            while r.epoch.waiting.load(SeqCst) == 0 {
                std::thread::yield_now();
            }
            ended.store(true, SeqCst);
            r.bump_epoch(); // and ends
            assert_eq!(t.join().unwrap(), (true, true));
        });
    }

    #[test]
    fn a_budget_falls_back_to_its_policy() {
        let m = TestMap::new(8 * page() as usize, RW, false);
        for fallback in [Policy::Inject, Policy::Kill] {
            let b = Resolver::builder(Policy::MakeTaggable)
                .chunk(2 * page())
                .max_swapped_bytes(4 * page(), fallback);
            let r = resolver(&m, private(), RW, b).unwrap();
            let (v, q) = (FakeVcpu::default(), quiesced());
            for i in [0, 2] {
                let got = r.resolve(&v, &fault(GPA + i * page()), &q).unwrap();
                assert!(matches!(got, Resolution::Swapped(_)), "{got:?}");
            }
            let got = r.resolve(&v, &fault(GPA + 4 * page()), &q);
            match (fallback, got) {
                (Policy::Inject, Ok(Resolution::Injected)) => assert_eq!(v.aborts.get(), 1),
                (Policy::Kill, Err(Error::SwapBudgetExhausted { swapped, .. })) => {
                    assert_eq!(swapped, 4 * page())
                }
                (_, other) => panic!("{fallback:?}: {other:?}"),
            }
            assert_eq!(r.swapped_bytes(), 4 * page());
        }
        let b = Resolver::builder(Policy::Kill).max_swapped_bytes(0, Policy::MakeTaggable);
        assert!(matches!(
            resolver(&m, private(), RW, b),
            Err(Error::BadFallback(Policy::MakeTaggable))
        ));
    }

    #[test]
    fn a_region_policy_overrides_the_resolvers() {
        let m = TestMap::new(4 * page() as usize, RW, false);
        let reg = Region::new(
            3,
            GPA,
            m.len as u64,
            m.addr as u64,
            private(),
            Access::ReadWrite,
        )
        .with_policy(Policy::Inject);
        let r = Resolver::builder(Policy::MakeTaggable)
            .host_probe(false)
            .build(region_memory(reg).unwrap())
            .unwrap();
        let v = FakeVcpu::default();
        let got = r.resolve(&v, &fault(GPA), &quiesced()).unwrap();
        assert!(matches!(got, Resolution::Injected), "{got:?}");
        assert_eq!(r.swapped_bytes(), 0);
    }

    #[test]
    fn dma_registered_regions_need_a_contract_that_covers_dma() {
        let m = TestMap::new(4 * page() as usize, RW, false);
        let reg = Region::new(
            3,
            GPA,
            m.len as u64,
            m.addr as u64,
            private(),
            Access::ReadWrite,
        )
        .with_dma_registered(true);
        let b = Resolver::builder(Policy::MakeTaggable).replacement(Replacement::Memfd);
        let r = b
            .host_probe(false)
            .build(region_memory(reg).unwrap())
            .unwrap();
        let v = FakeVcpu::default();
        let q = quiesced();
        let e = r.resolve(&v, &fault(GPA), &q).unwrap_err();
        assert!(matches!(e, Error::DmaRegistered { slot: 3, .. }), "{e:?}");
        assert_eq!(q.pauses.load(SeqCst), 0);
        let q = NoUsers {
            dma: true,
            ..Default::default()
        };
        let got = r.resolve(&v, &fault(GPA), &q).unwrap();
        let Resolution::Swapped(s) = got else {
            panic!("{got:?}")
        };
        assert!(s.window.dma_registered);
        let fd = s.memfd.expect("a memfd replacement");
        assert_eq!(fd.offset, 0);
        assert_eq!((q.pauses.load(SeqCst), q.swapped.load(SeqCst)), (1, 1));
        assert!(TestMap::maps_entry(m.addr).1.contains("nta-vmm-swap"));
        assert!(m.pattern_intact());
    }

    #[test]
    fn a_failed_pause_swaps_nothing() {
        let m = TestMap::new(4 * page() as usize, RW, false);
        let r = resolver(&m, private(), RW, Resolver::builder(Policy::MakeTaggable)).unwrap();
        let q = NoUsers {
            fail: true,
            ..Default::default()
        };
        let e = r
            .resolve(&FakeVcpu::default(), &fault(GPA), &q)
            .unwrap_err();
        assert!(matches!(e, Error::PauseFailed { .. }), "{e:?}");
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!((q.resumes.load(SeqCst), r.epoch()), (0, 0));
        r.with_memory(|mem| assert!(!mem.lookup(GPA).unwrap().tag_capable));
    }

    #[test]
    fn what_a_swap_cannot_keep_is_refused() {
        let m = TestMap::new(4 * page() as usize, RW, false);
        // SAFETY: locking the test's own mapping.
        assert_eq!(
            unsafe { libc::mlock(m.addr as *const _, m.len) },
            0,
            "mlock (RLIMIT_MEMLOCK?)"
        );
        let r = resolver(&m, private(), RW, Resolver::builder(Policy::MakeTaggable)).unwrap();
        let q = quiesced();
        let e = r
            .resolve(&FakeVcpu::default(), &fault(GPA), &q)
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::CannotKeep {
                    what: Unkeepable::Mlock,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(q.pauses.load(SeqCst), 0);
        assert_eq!(TestMap::maps_entry(m.addr).1, "");
        // SAFETY: unlocking it.
        unsafe { libc::munlock(m.addr as *const _, m.len) };
        assert!(r.resolve(&FakeVcpu::default(), &fault(GPA), &q).is_ok());
    }

    #[test]
    fn swapped_ranges_are_exported_and_made_taggable_again() {
        let m = TestMap::new(8 * page() as usize, RW, false);
        let b = Resolver::builder(Policy::MakeTaggable).chunk(page());
        let r = resolver(&m, private(), RW, b).unwrap();
        let q = quiesced();
        for i in [1, 2, 5] {
            r.resolve(&FakeVcpu::default(), &fault(GPA + i * page()), &q)
                .unwrap();
        }
        let got = r.swapped_ranges();
        let want = [(GPA + page(), 2 * page()), (GPA + 5 * page(), page())];
        let got: Vec<_> = got.iter().map(|s| (s.gpa, s.size, s.slot)).collect();
        assert_eq!(got, want.map(|(g, s)| (g, s, 3)));
        // A target with the same layout makes the same ranges taggable before restoring tags.
        let t = TestMap::new(8 * page() as usize, RW, false);
        let target = resolver(&t, private(), RW, Resolver::builder(Policy::Kill)).unwrap();
        for (gpa, size) in want {
            assert_eq!(target.make_taggable(gpa, size, &q).unwrap().len(), 1);
        }
        let again: Vec<_> = target
            .swapped_ranges()
            .iter()
            .map(|s| (s.gpa, s.size))
            .collect();
        assert_eq!(again, want);
        // Over parts swapped already, only the rest is swapped.
        let done = target.make_taggable(GPA, 8 * page(), &q).unwrap();
        let done: Vec<_> = done.iter().map(|s| (s.window.gpa, s.window.size)).collect();
        assert_eq!(
            done,
            [
                (GPA, page()),
                (GPA + 3 * page(), 2 * page()),
                (GPA + 6 * page(), 2 * page())
            ]
        );
        assert!(t.pattern_intact());
        for (gpa, size) in [(GPA, 9 * page()), (GPA + 1, page()), (GPA, 0)] {
            let e = target.make_taggable(gpa, size, &q).unwrap_err();
            assert!(
                matches!(e, Error::OutsideRegion { .. } | Error::BadRange { .. }),
                "{e:?}"
            );
        }
    }

    /// Writes `v` at host address `at` with `process_vm_writev`: the kernel pins the page, then
    /// writes it. On the write-protected range of a running swap the pin fails (`EFAULT`); a
    /// pin taken just before the write-protection writes the old page, and the write is lost.
    fn vm_write(at: usize, v: u64) -> std::io::Result<()> {
        let local = libc::iovec {
            iov_base: &v as *const u64 as *mut libc::c_void,
            iov_len: 8,
        };
        let remote = libc::iovec {
            iov_base: at as *mut libc::c_void,
            iov_len: 8,
        };
        // SAFETY: reads `v`, writes 8 bytes of this process's test mapping through the kernel,
        // which checks the mapping's protection.
        let n = unsafe { libc::process_vm_writev(libc::getpid(), &local, 1, &remote, 1, 0) };
        if n == 8 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    #[test]
    fn paused_pinning_writers_lose_no_write() {
        const WRITERS: usize = 2;
        const CHUNKS: u64 = 64;
        let chunk = 64 * 1024;
        let m = TestMap::new((CHUNKS * chunk) as usize, RW, false);
        let b = Resolver::builder(Policy::MakeTaggable).chunk(chunk);
        let r = resolver(&m, private(), RW, b).unwrap();
        let words = m.len / 8;
        let chunk_words = (chunk / 8) as usize;
        let (efaults, writes) = (AtomicU64::new(0), AtomicU64::new(0));
        let stop = AtomicBool::new(false);
        // The writers pin (process_vm_writev): HostUsers pauses them around each swap.
        let dev = PausedDevice::default();
        // The chunk being swapped, which the writers aim at.
        let target = AtomicUsize::new(0);
        std::thread::scope(|s| {
            let writers: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let (m, stop, efaults, writes) = (&m, &stop, &efaults, &writes);
                    let (target, dev) = (&target, &dev);
                    s.spawn(move || {
                        // Writer w owns the words w, w + WRITERS, ...; remembers its last value.
                        let mut last = vec![0u64; words / WRITERS];
                        let mut seq = 0u64;
                        while !stop.load(SeqCst) {
                            seq += 1;
                            let k = (seq as usize * 7919) % (chunk_words / WRITERS);
                            let word = target.load(SeqCst) * chunk_words + k * WRITERS + w;
                            let mut res = None;
                            if !dev.try_write(|| res = Some(vm_write(m.addr + word * 8, seq))) {
                                continue;
                            }
                            match res.unwrap() {
                                Ok(()) => {}
                                // Only an unpaused writer meets the write-protected range.
                                Err(e) if e.raw_os_error() == Some(libc::EFAULT) => {
                                    efaults.fetch_add(1, SeqCst);
                                    continue;
                                }
                                Err(e) => panic!("process_vm_writev: {e}"),
                            }
                            writes.fetch_add(1, SeqCst);
                            last[word / WRITERS] = seq;
                        }
                        last
                    })
                })
                .collect();
            let v = FakeVcpu::default();
            for c in 0..CHUNKS {
                target.store(c as usize, SeqCst);
                std::thread::sleep(Duration::from_millis(1));
                let got = r.resolve(&v, &fault(GPA + c * chunk), &dev).unwrap();
                assert!(matches!(got, Resolution::Swapped(_)), "{got:?}");
            }
            stop.store(true, SeqCst);
            let mut lost = 0;
            for (w, t) in writers.into_iter().enumerate() {
                for (i, want) in t.join().unwrap().into_iter().enumerate() {
                    let at = (m.addr + (i * WRITERS + w) * 8) as *const u64;
                    // SAFETY: within the test mapping, no writer runs any more.
                    let got = unsafe { at.read_volatile() };
                    if want != 0 && got != want {
                        lost += 1;
                    }
                }
            }
            let (n, ef) = (writes.load(SeqCst), efaults.load(SeqCst));
            eprintln!("{n} writes, {ef} met a write-protected range, {lost} lost");
            assert_eq!(
                (lost, ef),
                (0, 0),
                "{lost} of {n} writes lost, {ef} EFAULTs"
            );
            assert_eq!(dev.pauses.load(SeqCst), CHUNKS as usize);
            assert_eq!(r.swapped_bytes(), CHUNKS * chunk);
        });
    }

    /// A VMM's device thread writing guest memory with plain stores, paused around swaps: it
    /// stops between writes while `paused`, and `pause` waits for the write in flight.
    #[derive(Default)]
    struct PausedDevice {
        paused: AtomicBool,
        in_flight: AtomicUsize,
        pauses: AtomicUsize,
    }

    impl PausedDevice {
        /// Runs `write` unless paused; false if it did not.
        fn try_write(&self, write: impl FnOnce()) -> bool {
            if self.paused.load(SeqCst) {
                std::thread::yield_now();
                return false;
            }
            self.in_flight.fetch_add(1, SeqCst);
            let go = !self.paused.load(SeqCst);
            if go {
                write();
            }
            self.in_flight.fetch_sub(1, SeqCst);
            go
        }
    }

    // SAFETY: pause() sets `paused`, then waits until no write is in flight; a write that
    // starts later sees `paused` (both SeqCst) and does not happen, until resume(). The device
    // holds no reference into the memory between writes, and has no pin or DMA.
    unsafe impl HostUsers for PausedDevice {
        fn pause(&self, _: &SwapWindow) -> std::result::Result<(), crate::PauseError> {
            self.paused.store(true, SeqCst);
            while self.in_flight.load(SeqCst) != 0 {
                std::hint::spin_loop();
            }
            self.pauses.fetch_add(1, SeqCst);
            Ok(())
        }
        fn resume(&self, _: &SwapWindow, _: Option<&Swapped>) {
            self.paused.store(false, SeqCst);
        }
    }

    #[test]
    fn a_paused_device_thread_neither_faults_nor_loses_writes() {
        let chunk = 64 * 1024;
        let m = TestMap::new((8 * chunk) as usize, RW, false);
        let b = Resolver::builder(Policy::MakeTaggable).chunk(chunk);
        let r = resolver(&m, private(), RW, b).unwrap();
        let dev = PausedDevice::default();
        let stop = AtomicBool::new(false);
        let words = m.len / 8;
        std::thread::scope(|s| {
            let (dev_ref, m_ref, stop_ref) = (&dev, &m, &stop);
            let t = s.spawn(move || {
                let mut last = vec![0u64; words];
                let mut seq = 0u64;
                while !stop_ref.load(SeqCst) {
                    let i = (seq as usize * 7919) % words;
                    let at = (m_ref.addr + i * 8) as *mut u64;
                    // SAFETY: within the test mapping; only while not paused, so never in a
                    // swap's write-protected window.
                    if dev_ref.try_write(|| unsafe { at.write_volatile(seq + 1) }) {
                        last[i] = seq + 1;
                        seq += 1;
                    }
                }
                last
            });
            for c in 0..8 {
                std::thread::sleep(Duration::from_millis(2));
                let got = r.resolve(&FakeVcpu::default(), &fault(GPA + c * chunk), &dev);
                assert!(matches!(got, Ok(Resolution::Swapped(_))), "{got:?}");
            }
            stop.store(true, SeqCst);
            let last = t.join().unwrap();
            let lost = last
                .iter()
                .enumerate()
                .filter(|&(i, &want)| {
                    // SAFETY: within the test mapping; the device thread has ended.
                    want != 0 && unsafe { ((m.addr + i * 8) as *const u64).read_volatile() } != want
                })
                .count();
            assert_eq!(lost, 0);
            assert_eq!(dev.pauses.load(SeqCst), 8);
        });
    }

    #[test]
    fn regions_are_unplugged_and_plugged_while_faults_are_resolved() {
        let pages = 64u64;
        let (a, b) = (
            TestMap::new((pages * page()) as usize, RW, false),
            TestMap::new((pages * page()) as usize, RW, false),
        );
        let gpa_b = GPA + 0x1000_0000;
        let reg_b = || {
            Region::new(
                4,
                gpa_b,
                b.len as u64,
                b.addr as u64,
                private(),
                Access::ReadWrite,
            )
        };
        let mut mem = memory(&a, 3, private(), RW).unwrap();
        // SAFETY: the test's own mapping, alive while the map is used, and may be replaced.
        unsafe { mem.add(reg_b()) }.unwrap();
        let r = Resolver::builder(Policy::MakeTaggable)
            .chunk(page())
            .host_probe(false)
            .build(mem)
            .unwrap();
        let q = quiesced();
        let (unplugs, gone, found) = (
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        );
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            // A vCPU of region A, swapping page by page.
            let vcpu_a = s.spawn(|| {
                for i in 0..pages {
                    let got = r.resolve(&FakeVcpu::default(), &fault(GPA + i * page()), &q);
                    assert!(matches!(got, Ok(Resolution::Swapped(_))), "{got:?}");
                }
            });
            // A vCPU of region B, whose region comes and goes.
            let vcpu_b = s.spawn(|| {
                let mut i = 0;
                while !done.load(SeqCst) {
                    match r.resolve(&FakeVcpu::default(), &fault(gpa_b + i * page()), &q) {
                        Ok(Resolution::Swapped(_)) => {
                            found.fetch_add(1, SeqCst);
                        }
                        Ok(Resolution::Retry) => {}
                        Err(Error::NoRegion { .. }) => {
                            gone.fetch_add(1, SeqCst);
                        }
                        other => panic!("{other:?}"),
                    }
                    i = (i + 1) % pages;
                }
            });
            for _ in 0..20 {
                std::thread::sleep(Duration::from_millis(1));
                let old = r.with_memory(|m| m.remove(4)).expect("region B is there");
                assert_eq!(old.slot, 4);
                unplugs.fetch_add(1, SeqCst);
                std::thread::sleep(Duration::from_millis(1));
                // SAFETY: as above.
                r.with_memory(|m| unsafe { m.add(reg_b()) }).unwrap();
            }
            done.store(true, SeqCst);
            vcpu_a.join().unwrap();
            vcpu_b.join().unwrap();
        });
        assert!(a.pattern_intact() && b.pattern_intact());
        assert_eq!(unplugs.load(SeqCst), 20);
        r.with_memory(|m| {
            assert!(m.lookup(GPA + (pages - 1) * page()).unwrap().tag_capable);
            // Plugged again at the end.
            assert_eq!(m.lookup(gpa_b).unwrap().region.slot, 4);
        });
        eprintln!(
            "{} of region B's faults found it unplugged",
            gone.load(SeqCst)
        );
    }

    #[test]
    fn a_vmm_call_is_retried_across_a_swap_only() {
        let m = TestMap::new(2 * page() as usize, RW, false);
        let r = resolver(&m, private(), RW, Resolver::builder(Policy::MakeTaggable)).unwrap();
        let efault = || std::io::Error::from_raw_os_error(libc::EFAULT);
        // An EFAULT with no swap is the call's own.
        let mut calls = 0;
        let got = r.retry_across_swaps(|| -> std::io::Result<()> {
            calls += 1;
            Err(efault())
        });
        assert_eq!(
            (got.unwrap_err().raw_os_error(), calls),
            (Some(libc::EFAULT), 1)
        );
        // One that raced a swap is made again.
        let mut calls = 0;
        let got = r.retry_across_swaps(|| {
            calls += 1;
            if calls == 1 {
                r.bump_epoch();
                r.bump_epoch();
                return Err(efault());
            }
            Ok(calls)
        });
        assert_eq!(got.unwrap(), 2);
    }

    /// Run alone in a child process by the test below: exhausts the map count for real.
    #[test]
    #[ignore = "run by map_count_exhaustion_is_a_typed_error_and_changes_nothing"]
    fn map_count_exhaustion_child() {
        let m = TestMap::new(4 * page() as usize, RW, false);
        let r = resolver(&m, private(), RW, Resolver::builder(Policy::MakeTaggable)).unwrap();
        let (_, max) = vma::map_count().unwrap();
        // A reservation split into one mapping per page by alternating protections.
        let pages = 2 * max + 2;
        let len = pages * page() as usize;
        // SAFETY: a fresh reservation at an address of the kernel's choosing.
        let res = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(res, libc::MAP_FAILED);
        let mut split = 0;
        for i in (1..pages).step_by(2) {
            let at = res as usize + i * page() as usize;
            // SAFETY: within the reservation, which nothing uses.
            if unsafe { libc::mprotect(at as *mut _, page() as usize, libc::PROT_READ) } != 0 {
                break;
            }
            split += 1;
        }
        let (n, max) = vma::map_count().unwrap();
        assert!(n + 2 >= max, "{n} mappings of {max} after {split} splits");
        let e = r
            .resolve(&FakeVcpu::default(), &fault(GPA), &quiesced())
            .unwrap_err();
        // SAFETY: the reservation, which nothing uses.
        unsafe { libc::munmap(res, len) };
        assert!(matches!(e, Error::MapCountExhausted { .. }), "{e:?}");
        assert!(m.pattern_intact());
        assert_eq!(TestMap::maps_entry(m.addr).0, "rw-p");
        r.with_memory(|mem| assert!(!mem.lookup(GPA).unwrap().tag_capable));
        let got = r.resolve(&FakeVcpu::default(), &fault(GPA), &quiesced());
        assert!(matches!(got, Ok(Resolution::Swapped(_))), "{got:?}");
        println!("map-count child: ok after {split} splits");
    }

    #[test]
    fn map_count_exhaustion_is_a_typed_error_and_changes_nothing() {
        // In a process of its own: the other tests' threads need mappings too.
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "--nocapture", "--test-threads=1"])
            .arg("policy::tests::map_count_exhaustion_child")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("map-count child: ok"), "{text}");
    }
}
