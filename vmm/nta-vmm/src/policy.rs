// SPDX-License-Identifier: MIT OR Apache-2.0
//! Policies for tag accesses, and the resolver that applies them; hypervisor-neutral.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::{Feature, Syscall};
use crate::swap::{self, Libc, Mm, SwapError};
use crate::{Error, Result, TagAccessFault, TagMemory};

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
    fn inject_data_abort(&self) -> Result<()>;
}

/// A promise that no host thread touches guest memory while the resolver swaps it.
///
/// The resolver write-protects a range before copying it, so a vCPU's write to it faults in
/// KVM and is retried after the swap (see [`Resolver::retry_after_efault`]); a host thread has
/// no such retry: its write would be a `SIGSEGV`, its read of the old pages a read of memory
/// that is about to go. This token is the caller's proof that there is none.
#[derive(Debug)]
pub struct HostQuiesced(());

impl HostQuiesced {
    /// # Safety
    ///
    /// While the token lives, no thread of this process other than vCPU threads inside
    /// `KVM_RUN` reads, writes, maps or unmaps memory of regions that [`Resolver::resolve`] may
    /// swap (device emulation threads, block I/O, live migration's copy are paused or do not
    /// touch those regions), and no thread holds a Rust reference into them; and no other
    /// process or device writes them (vhost-user back-ends, VFIO DMA), or, if one does, it is
    /// re-registered with the new mapping after each swap (see [`Resolution::Swapped`]).
    pub unsafe fn new() -> Self {
        HostQuiesced(())
    }
}

/// How a tag access was resolved; the vCPU can be re-entered after each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resolution {
    /// A data abort is pending for the guest.
    Injected,
    /// `[gpa, gpa + size)` of memslot `slot` is tag-capable memory now, holding the same data,
    /// at the same host address; but it is new memory: a vhost-user back-end or VFIO mapping
    /// that had the old one must be given the new (`VHOST_USER_SET_MEM_TABLE`,
    /// `VFIO_IOMMU_MAP_DMA` again).
    Swapped {
        /// First guest address swapped.
        gpa: u64,
        /// Bytes swapped.
        size: u64,
        /// Its memslot.
        slot: u32,
    },
    /// The page is tag-capable already (another vCPU's swap, or a stale exit): re-enter.
    Retry,
}

/// The swap epoch: even when no swap is running, odd while one is.
#[derive(Debug, Default)]
struct Epoch {
    value: Mutex<u64>,
    changed: Condvar,
}

/// The state a swap changes, under one lock.
#[derive(Debug)]
struct State {
    mem: TagMemory,
    /// Tag-access exits to a tag-capable page in a row, by page, with the epoch of the last.
    repeats: HashMap<u64, (u32, u64)>,
}

/// The default chunk: 2 MiB, a stage-2 block with 4 KiB pages.
pub const DEFAULT_CHUNK: u64 = 2 << 20;
/// The default bound of repeated tag-access exits to a page that is tag-capable already.
pub const DEFAULT_MAX_REPEATS: u32 = 16;
/// How long [`Resolver::retry_after_efault`] waits for a swap at most.
const SWAP_WAIT: Duration = Duration::from_secs(10);

/// Options of a [`Resolver`].
#[derive(Debug)]
pub struct ResolverBuilder {
    policy: Policy,
    chunk: u64,
    max_repeats: u32,
    allow_unshare: bool,
    host_probe: bool,
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

    /// The resolver, for the regions of `mem`.
    pub fn build(self, mem: TagMemory) -> Result<Resolver> {
        let page = mem.page_size();
        if !self.chunk.is_power_of_two() || self.chunk < page {
            return Err(Error::BadChunkSize {
                chunk: self.chunk,
                page,
            });
        }
        if self.policy == Policy::MakeTaggable
            && self.host_probe
            && !crate::probe_host()?.anon_tag_capable
        {
            return Err(Error::Unsupported(Feature::TagCapableAnonMemory));
        }
        Ok(Resolver {
            policy: self.policy,
            chunk: self.chunk,
            max_repeats: self.max_repeats,
            allow_unshare: self.allow_unshare,
            state: Mutex::new(State {
                mem,
                repeats: HashMap::new(),
            }),
            epoch: Epoch::default(),
        })
    }
}

/// Applies a [`Policy`] to tag-access faults. One per VM, shared by its vCPU threads (it is
/// `Sync`); each vCPU thread runs:
///
/// ```text
/// loop {
///     let epoch = resolver.epoch();
///     match run(vcpu) {
///         tag-access exit  => resolver.resolve(&vcpu, &fault, &quiesced)?,
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
    state: Mutex<State>,
    epoch: Epoch,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave State half-updated: every update is one assignment after
    // the fallible work.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Resolver {
    /// Options for a resolver applying `policy`.
    pub fn builder(policy: Policy) -> ResolverBuilder {
        ResolverBuilder {
            policy,
            chunk: DEFAULT_CHUNK,
            max_repeats: DEFAULT_MAX_REPEATS,
            allow_unshare: false,
            host_probe: true,
        }
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Runs `f` on the memory map, e.g. to add or remove a region (memory hotplug): no swap
    /// runs meanwhile.
    pub fn with_memory<T>(&self, f: impl FnOnce(&mut TagMemory) -> T) -> T {
        f(&mut lock(&self.state).mem)
    }

    /// The swap epoch; read it before each `KVM_RUN`, for [`Resolver::retry_after_efault`].
    pub fn epoch(&self) -> u64 {
        *lock(&self.epoch.value)
    }

    /// For a vCPU whose `KVM_RUN` failed with `EFAULT`: whether that may be a write to a range
    /// being swapped (write-protected), in which case this waits for the swap to finish and
    /// the vCPU must simply run again. `before` is [`Resolver::epoch`] read before `KVM_RUN`.
    /// `false`: no swap ran meanwhile, the `EFAULT` is a real error.
    pub fn retry_after_efault(&self, before: u64) -> bool {
        let mut e = lock(&self.epoch.value);
        let start = std::time::Instant::now();
        while *e % 2 == 1 && start.elapsed() < SWAP_WAIT {
            e = match self.epoch.changed.wait_timeout(e, SWAP_WAIT) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        *e != before || before % 2 == 1
    }

    fn bump_epoch(&self) {
        *lock(&self.epoch.value) += 1;
        self.epoch.changed.notify_all();
    }

    /// The range `make-taggable` swaps for `fault`: the aligned chunk around it, clipped to
    /// the part of its region it lies in. Checks the fault's page lies in that part.
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

    /// Resolves `fault`, reported by `vcpu`, by the policy. `host` proves that no host thread
    /// touches the memory a swap replaces (see [`HostQuiesced`]); vCPUs may go on running.
    pub fn resolve(
        &self,
        vcpu: &impl Vcpu,
        fault: &TagAccessFault,
        host: &HostQuiesced,
    ) -> Result<Resolution> {
        self.resolve_with(&Libc, vcpu, fault, host)
    }

    pub(crate) fn resolve_with(
        &self,
        mm: &impl Mm,
        vcpu: &impl Vcpu,
        fault: &TagAccessFault,
        _host: &HostQuiesced,
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
        match self.policy {
            Policy::Kill => Err(Error::Killed {
                gpa: fault.gpa(),
                slot: region.slot,
                backing: region.backing,
            }),
            Policy::Inject => {
                vcpu.inject_data_abort()?;
                Ok(Resolution::Injected)
            }
            Policy::MakeTaggable => {
                if region.backing.shared() && !self.allow_unshare {
                    return Err(Error::WouldUnshare {
                        gpa: fault.gpa(),
                        slot: region.slot,
                        backing: region.backing,
                    });
                }
                let (gpa, size) = Self::range_in(&st.mem, self.chunk, fault)?;
                // In the region (range_in), whose host range add() checked does not wrap.
                let host = region.host_addr + (gpa - region.gpa);
                self.bump_epoch();
                // SAFETY: [host, host + size) is page-aligned memory of the region, which the
                // VMM registered as its guest memory (TagMemory::add's contract of the region
                // description, checked aligned and non-wrapping); `_host` proves that no host
                // thread uses it meanwhile; vCPU threads may run: the swap write-protects the
                // range first, so their writes fault and are retried after the swap
                // (retry_after_efault, which the odd epoch makes them wait in).
                let r = unsafe { swap::swap_range(mm, host as usize, size as usize, region.prot) };
                self.bump_epoch();
                r.map_err(|e| swap_error(e, gpa, size))?;
                st.mem.mark_tag_capable(gpa, size)?;
                Ok(Resolution::Swapped {
                    gpa,
                    size,
                    slot: region.slot,
                })
            }
        }
    }
}

fn swap_error(e: SwapError, gpa: u64, size: u64) -> Error {
    let (op, source) = match e {
        SwapError::Protect(e) | SwapError::Reprotect(e) => (Syscall::Mprotect, e),
        SwapError::Map(e) => (Syscall::Mmap, e),
        SwapError::Remap(e) => (Syscall::Mremap, e),
    };
    // mmap, mremap and an mprotect that splits a mapping fail with ENOMEM past
    // vm.max_map_count.
    if source.raw_os_error() == Some(libc::ENOMEM) {
        Error::MapCountExhausted { gpa, size, source }
    } else {
        Error::Os { op, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swap::tests::{Failing, TestMap};
    use crate::{Backing, Region};
    use std::cell::Cell;

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

    fn quiesced() -> HostQuiesced {
        // SAFETY: the tests' mappings are used by the test thread alone, which does not touch
        // them while resolving.
        unsafe { HostQuiesced::new() }
    }

    const GPA: u64 = 0x8000_0000;

    /// The memory map of one region at GPA (memslot `slot`), backed by `m`.
    fn memory(m: &TestMap, slot: u32, backing: Backing, prot: i32) -> Result<TagMemory> {
        let mut mem = TagMemory::for_host()?;
        // SAFETY: `m` is the test's own mapping, alive while the map is used, and may be
        // replaced.
        unsafe {
            mem.add(Region {
                slot,
                gpa: GPA,
                size: m.len as u64,
                host_addr: m.addr as u64,
                backing,
                prot,
            })?
        };
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
            assert_eq!(
                r.resolve(&v, &fault(GPA), &quiesced()).unwrap(),
                Resolution::Injected
            );
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
        assert_eq!(
            got,
            Resolution::Swapped {
                gpa: GPA + 4 * page(),
                size: 2 * page(),
                slot: 3
            }
        );
        let got = r.resolve(&v, &fault(GPA + page()), &q).unwrap();
        assert_eq!(
            got,
            Resolution::Swapped {
                gpa: GPA,
                size: 4 * page(),
                slot: 3
            }
        );
        assert!(m.pattern_intact());
        let (perms, path) = TestMap::maps_entry(m.addr);
        assert_eq!((perms.as_str(), path.as_str()), ("rw-p", ""));
        // Tag-capable now: a later exit there is retried, not swapped again.
        assert_eq!(
            r.resolve(&v, &fault(GPA + 2 * page()), &q).unwrap(),
            Resolution::Retry
        );
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
                Ok(Resolution::Swapped { .. })
            ));
            assert!(m.pattern_intact());
            assert_eq!(TestMap::maps_entry(m.addr).1, "");
        }
    }

    #[test]
    fn map_count_exhaustion_is_a_typed_error_and_changes_nothing() {
        for (fail_mmap, fail_mremap) in [(true, false), (false, true)] {
            let m = TestMap::new(4 * page() as usize, RW, false);
            let r = resolver(&m, private(), RW, Resolver::builder(Policy::MakeTaggable)).unwrap();
            let mm = Failing {
                fail_mmap,
                fail_mremap,
                calls: Cell::new(0),
            };
            let e = r
                .resolve_with(&mm, &FakeVcpu::default(), &fault(GPA), &quiesced())
                .unwrap_err();
            match &e {
                Error::MapCountExhausted { gpa, size, .. } => {
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
            assert_eq!(r.resolve(&v, &fault(GPA), &q).unwrap(), Resolution::Retry);
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
        std::thread::scope(|s| {
            let t = s.spawn(|| r.retry_after_efault(before));
            std::thread::sleep(Duration::from_millis(50));
            assert!(!t.is_finished());
            r.bump_epoch(); // and ends
            assert!(t.join().unwrap());
        });
    }
}
