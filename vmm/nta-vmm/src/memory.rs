// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The guest's memory map as far as tags are concerned: regions (one per memslot), what backs
//! them and which parts are tag-capable, looked up in O(log n).

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

#[cfg(feature = "vm-memory")]
use vm_memory::{bitmap::Bitmap, GuestMemoryRegion, GuestRegionMmap, MemoryRegionAddress};

use crate::error::{RegionProblem, Syscall};
use crate::{Error, Policy, Result, SwappedRange};

/// What backs a region.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backing {
    /// Private anonymous memory.
    Anonymous,
    /// shmem, memfd or hugetlbfs memory (shared, and tag-capable).
    Shmem,
    /// A `MAP_PRIVATE` mapping of a file.
    PrivateFile(PathBuf),
    /// A `MAP_SHARED` mapping of a page-cache or DAX file.
    SharedFile(PathBuf),
    /// A `MAP_SHARED` mapping of a device (VFIO BAR, CXL, `/dev/...`).
    Device(PathBuf),
}

impl Backing {
    /// Whether KVM can give this memory Allocation Tags (`VM_MTE_ALLOWED`): anonymous and
    /// shmem memory can; KVM maps everything else `NoTagAccess`.
    #[must_use]
    pub fn tag_capable(&self) -> bool {
        matches!(self, Backing::Anonymous | Backing::Shmem)
    }

    /// Whether others see this memory too (a file or a device), so that replacing it by private
    /// anonymous memory would cut the guest off from them.
    #[must_use]
    pub fn shared(&self) -> bool {
        matches!(
            self,
            Backing::SharedFile(_) | Backing::Device(_) | Backing::Shmem
        )
    }

    /// What backs a mapping of `file` with mmap flags `flags` (`MAP_SHARED` or
    /// `MAP_PRIVATE`): a device for a character or block device; shmem for a file on tmpfs
    /// (memfd included) or hugetlbfs, which hold tags however they are mapped; a private or
    /// shared file otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if `fstat` or `fstatfs` of the file fails.
    pub fn of_file(file: &std::fs::File, flags: i32) -> Result<Self> {
        use std::os::unix::fs::FileTypeExt;
        let fd = file.as_raw_fd();
        let path = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap_or_default();
        let meta = file.metadata().map_err(|source| Error::Os {
            op: Syscall::Fstat,
            source,
        })?;
        // SAFETY: an all-zero statfs is a valid value for fstatfs to overwrite.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: fstatfs writes the file system's description into `st`, nothing else.
        if unsafe { libc::fstatfs(fd, &raw mut st) } != 0 {
            return Err(Error::Os {
                op: Syscall::Fstatfs,
                source: std::io::Error::last_os_error(),
            });
        }
        let ft = meta.file_type();
        Ok(
            // A device node's file system (devtmpfs: tmpfs) says nothing of its memory.
            if ft.is_char_device() || ft.is_block_device() {
                Backing::Device(path)
            } else if st.f_type == libc::TMPFS_MAGIC || st.f_type == libc::HUGETLBFS_MAGIC {
                Backing::Shmem
            } else if flags & libc::MAP_SHARED == 0 {
                Backing::PrivateFile(path)
            } else {
                Backing::SharedFile(path)
            },
        )
    }

    /// What backs a vm-memory mmap region: anonymous unless it maps a file, else as
    /// [`Backing::of_file`].
    ///
    /// # Errors
    ///
    /// As [`Backing::of_file`].
    #[cfg(feature = "vm-memory")]
    pub fn of_mmap_region<B: Bitmap>(region: &GuestRegionMmap<B>) -> Result<Self> {
        let mmap = &**region;
        let Some(fo) = mmap.file_offset() else {
            return Ok(if mmap.flags() & libc::MAP_SHARED != 0 {
                Backing::Shmem
            } else {
                Backing::Anonymous
            });
        };
        Self::of_file(fo.file(), mmap.flags())
    }
}

impl fmt::Display for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backing::Anonymous => write!(f, "anonymous memory"),
            Backing::Shmem => write!(f, "shmem memory"),
            Backing::PrivateFile(p) => write!(f, "a private file mapping of {}", p.display()),
            Backing::SharedFile(p) => write!(f, "a shared file mapping of {}", p.display()),
            Backing::Device(p) => write!(f, "device memory of {}", p.display()),
        }
    }
}

/// How the host maps a region, which a swap keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// `PROT_READ` (a read-only memslot's memory, say).
    ReadOnly,
    /// `PROT_READ | PROT_WRITE`.
    ReadWrite,
}

impl Access {
    /// The access of an mmap protection: `None` for one that is neither readable nor writable
    /// (`PROT_NONE`); `PROT_EXEC` is not kept.
    #[must_use]
    pub fn from_prot(prot: i32) -> Option<Self> {
        if prot & libc::PROT_WRITE != 0 {
            Some(Access::ReadWrite)
        } else if prot & libc::PROT_READ != 0 {
            Some(Access::ReadOnly)
        } else {
            None
        }
    }

    /// The mmap protection.
    #[must_use]
    pub fn prot(self) -> i32 {
        match self {
            Access::ReadOnly => libc::PROT_READ,
            Access::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        }
    }
}

/// A guest memory region as the VMM registered it with KVM (one memslot).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Region {
    /// The memslot number.
    pub slot: u32,
    /// Guest physical address of the first byte.
    pub gpa: u64,
    /// Size in bytes, a multiple of the page size.
    pub size: u64,
    /// Host virtual address of the first byte.
    pub host_addr: u64,
    /// What backs it.
    pub backing: Backing,
    /// How its host mapping may be accessed, which a swap keeps.
    pub access: Access,
    /// Its own policy, instead of the resolver's.
    pub policy: Option<Policy>,
    /// Whether a device or another process has long-term DMA access to it (a VFIO container
    /// mapping, a vhost back-end): a swap needs [`crate::HostUsers::covers_dma`].
    pub dma_registered: bool,
}

impl Region {
    /// Memslot `slot`: `size` bytes at guest address `gpa` and host address `host_addr`,
    /// backed by `backing`, mapped for `access`; the resolver's policy, not DMA-registered.
    #[must_use]
    pub fn new(
        slot: u32,
        gpa: u64,
        size: u64,
        host_addr: u64,
        backing: Backing,
        access: Access,
    ) -> Self {
        Region {
            slot,
            gpa,
            size,
            host_addr,
            backing,
            access,
            policy: None,
            dma_registered: false,
        }
    }

    /// The region with its own policy.
    #[must_use]
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The region, marked DMA-registered or not.
    #[must_use]
    pub fn with_dma_registered(mut self, dma: bool) -> Self {
        self.dma_registered = dma;
        self
    }

    /// Describes a vm-memory region registered as memslot `slot`, with what backs it.
    ///
    /// # Errors
    ///
    /// [`Error::BadRegion`] if the region has no host address.
    #[cfg(feature = "vm-memory")]
    pub fn of<R: GuestMemoryRegion>(
        slot: u32,
        region: &R,
        backing: Backing,
        access: Access,
    ) -> Result<Self> {
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|_| Error::BadRegion {
                slot,
                problem: RegionProblem::Inaccessible,
            })?;
        Ok(Region::new(
            slot,
            region.start_addr().0,
            region.len(),
            host as u64,
            backing,
            access,
        ))
    }

    /// Describes a vm-memory mmap region registered as memslot `slot`, reading what backs it
    /// and its protection from the mapping.
    ///
    /// # Errors
    ///
    /// As [`Backing::of_mmap_region`] and [`Region::of`]; [`Error::BadRegion`] for a
    /// `PROT_NONE` mapping.
    #[cfg(feature = "vm-memory")]
    pub fn of_mmap<B: Bitmap>(slot: u32, region: &GuestRegionMmap<B>) -> Result<Self> {
        let backing = Backing::of_mmap_region(region)?;
        let access = Access::from_prot(region.prot()).ok_or(Error::BadRegion {
            slot,
            problem: RegionProblem::Inaccessible,
        })?;
        Self::of(slot, region, backing, access)
    }
}

/// One contiguous part of a region, tag-capable or not.
#[derive(Clone, Debug)]
struct Part {
    end: u64,
    slot: u32,
    tag_capable: bool,
}

/// What [`TagMemory::lookup`] finds: the region, and whether the address is tag-capable now.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Found<'a> {
    /// The region holding the address.
    pub region: &'a Region,
    /// Whether the part of it holding the address is tag-capable (swapped, or always was).
    pub tag_capable: bool,
    /// The part of the region with this property that holds the address: `[start, end)`.
    pub part: (u64, u64),
}

/// The guest's regions by guest address; regions can be added and removed (hotplug), and a
/// part of a region becomes tag-capable when it is swapped.
#[derive(Debug)]
pub struct TagMemory {
    page_size: u64,
    regions: BTreeMap<u32, Region>,
    /// Start of each part -> the part; parts never overlap.
    parts: BTreeMap<u64, Part>,
}

impl TagMemory {
    /// An empty map for pages of `page_size` bytes (a power of two).
    ///
    /// # Errors
    ///
    /// [`Error::BadPageSize`].
    pub fn new(page_size: u64) -> Result<Self> {
        if !page_size.is_power_of_two() {
            return Err(Error::BadPageSize(page_size));
        }
        Ok(Self {
            page_size,
            regions: BTreeMap::new(),
            parts: BTreeMap::new(),
        })
    }

    /// An empty map for the host's page size.
    ///
    /// # Errors
    ///
    /// As [`crate::host_page_size`].
    pub fn for_host() -> Result<Self> {
        Self::new(crate::host_page_size()?)
    }

    /// A map of vm-memory mmap regions, memslot numbers given by `slot_of` (the VMM's
    /// numbering): `regions` is `guest_memory.iter()` of a `GuestMemoryMmap<B>` (any vm-memory
    /// version this crate takes: the trait that has `iter` changed name in 0.18).
    ///
    /// # Errors
    ///
    /// As [`Region::of_mmap`] and [`TagMemory::add`].
    ///
    /// # Safety
    ///
    /// As [`TagMemory::add`], for each region: the regions must stay mapped while the map is
    /// used to resolve faults, and may be replaced in place.
    #[cfg(feature = "vm-memory")]
    pub unsafe fn from_guest_memory<'a, B: Bitmap + 'a>(
        regions: impl IntoIterator<Item = &'a GuestRegionMmap<B>>,
        mut slot_of: impl FnMut(&GuestRegionMmap<B>) -> u32,
    ) -> Result<Self> {
        let mut map = Self::for_host()?;
        for r in regions {
            // SAFETY: the caller's contract (this function's).
            unsafe { map.add(Region::of_mmap(slot_of(r), r)?)? };
        }
        Ok(map)
    }

    /// The page size the map was made for.
    #[must_use]
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Records a region; refuses empty, unaligned, inaccessible or overlapping ones and reused
    /// memslot numbers.
    ///
    /// # Errors
    ///
    /// [`Error::BadRegion`] saying which of those it is; the map is unchanged.
    ///
    /// # Safety
    ///
    /// From the first tag access a [`crate::Resolver`] resolves in it with `make-taggable`
    /// until the region is removed, `[host_addr, host_addr + size)` must be a mapping of this
    /// process with protection `prot`, holding the guest memory of memslot `slot`, that the
    /// resolver may replace with other memory at the same address (what the VMM's
    /// [`crate::HostUsers`] then pauses and resumes aside, nothing relies on it staying the
    /// same memory).
    pub unsafe fn add(&mut self, region: Region) -> Result<()> {
        let bad = |problem| Error::BadRegion {
            slot: region.slot,
            problem,
        };
        if region.size == 0 {
            return Err(bad(RegionProblem::Empty));
        }
        if (region.gpa | region.size | region.host_addr) & (self.page_size - 1) != 0 {
            return Err(bad(RegionProblem::Unaligned));
        }
        let end = region.gpa.checked_add(region.size);
        if end.is_none() || region.host_addr.checked_add(region.size).is_none() {
            return Err(bad(RegionProblem::Wraps));
        }
        let end = end.unwrap_or_default();
        if self.regions.contains_key(&region.slot) {
            return Err(bad(RegionProblem::DuplicateSlot));
        }
        // The part starting last before `end` is the only one that can overlap.
        if let Some((_, p)) = self.parts.range(..end).next_back() {
            if p.end > region.gpa {
                return Err(bad(RegionProblem::Overlaps(p.slot)));
            }
        }
        self.parts.insert(
            region.gpa,
            Part {
                end,
                slot: region.slot,
                tag_capable: region.backing.tag_capable(),
            },
        );
        self.regions.insert(region.slot, region);
        Ok(())
    }

    /// Forgets the region of memslot `slot` (removed or about to be replaced), returning it.
    pub fn remove(&mut self, slot: u32) -> Option<Region> {
        let r = self.regions.remove(&slot)?;
        let starts: Vec<u64> = self
            .parts
            .range(r.gpa..r.gpa + r.size)
            .map(|(s, _)| *s)
            .collect();
        for s in starts {
            self.parts.remove(&s);
        }
        Some(r)
    }

    /// The region of memslot `slot`.
    #[must_use]
    pub fn region(&self, slot: u32) -> Option<&Region> {
        self.regions.get(&slot)
    }

    /// The number of parts the regions are in (one per region, plus two per swap at most).
    #[must_use]
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// Whether a region has its own policy `p`.
    pub(crate) fn any_policy(&self, p: Policy) -> bool {
        self.regions.values().any(|r| r.policy == Some(p))
    }

    /// The tag-capable parts of regions without tag storage, neighbours merged: the swapped
    /// ranges.
    pub(crate) fn swapped_parts(&self) -> Vec<SwappedRange> {
        let mut out: Vec<SwappedRange> = Vec::new();
        let swapped = self.parts.iter().filter(|(_, p)| {
            p.tag_capable
                && self
                    .regions
                    .get(&p.slot)
                    .is_some_and(|r| !r.backing.tag_capable())
        });
        for (&gpa, p) in swapped {
            match out.last_mut() {
                Some(l) if l.slot == p.slot && l.gpa + l.size == gpa => l.size += p.end - gpa,
                _ => out.push(SwappedRange {
                    gpa,
                    size: p.end - gpa,
                    slot: p.slot,
                }),
            }
        }
        out
    }

    /// The region holding `gpa`, and whether `gpa` is tag-capable now.
    ///
    /// # Errors
    ///
    /// [`Error::NoRegion`].
    pub fn lookup(&self, gpa: u64) -> Result<Found<'_>> {
        let (start, p) = self
            .parts
            .range(..=gpa)
            .next_back()
            .filter(|(_, p)| gpa < p.end)
            .ok_or(Error::NoRegion { gpa })?;
        let region = self.regions.get(&p.slot).ok_or(Error::NoRegion { gpa })?;
        Ok(Found {
            region,
            tag_capable: p.tag_capable,
            part: (*start, p.end),
        })
    }

    /// Records `[gpa, gpa + size)`, which must lie in one part of one region, as tag-capable
    /// from now on. The KVM memslot itself is unchanged.
    ///
    /// # Errors
    ///
    /// [`Error::BadRange`], [`Error::NoRegion`] or [`Error::OutsideRegion`]; the map is
    /// unchanged.
    pub fn mark_tag_capable(&mut self, gpa: u64, size: u64) -> Result<()> {
        if size == 0 || (gpa | size) & (self.page_size - 1) != 0 {
            return Err(Error::BadRange { addr: gpa, size });
        }
        let found = self.lookup(gpa)?;
        let (start, end) = found.part;
        let slot = found.region.slot;
        let last = gpa.checked_add(size).filter(|&e| e <= end);
        let Some(last) = last else {
            return Err(Error::OutsideRegion { gpa, size, slot });
        };
        if found.tag_capable {
            return Ok(());
        }
        self.parts.remove(&start);
        for (s, e, tag_capable) in [(start, gpa, false), (gpa, last, true), (last, end, false)] {
            if s < e {
                self.parts.insert(
                    s,
                    Part {
                        end: e,
                        slot,
                        tag_capable,
                    },
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RW: i32 = libc::PROT_READ | libc::PROT_WRITE;

    fn region(slot: u32, gpa: u64, size: u64, backing: Backing) -> Region {
        let host = 0x7f00_0000_0000_u64.wrapping_add(gpa);
        Region::new(slot, gpa, size, host, backing, Access::ReadWrite)
    }

    fn file() -> Backing {
        Backing::SharedFile("/ramfs/img".into())
    }

    fn map() -> TagMemory {
        let mut m = TagMemory::new(4096).unwrap();
        add(
            &mut m,
            region(0, 0x4000_0000, 0x20_0000, Backing::Anonymous),
        )
        .unwrap();
        add(&mut m, region(1, 0x8000_0000, 0x1_0000, file())).unwrap();
        m
    }

    /// Adds a region no resolver ever swaps in.
    fn add(m: &mut TagMemory, r: Region) -> Result<()> {
        // SAFETY: these tests resolve no fault, so nothing relies on the host addresses.
        unsafe { m.add(r) }
    }

    #[test]
    fn backings_are_told_apart() {
        let null = std::fs::File::open("/dev/null").unwrap();
        // A device node, though devtmpfs is a tmpfs.
        let b = Backing::of_file(&null, libc::MAP_SHARED).unwrap();
        assert_eq!(b, Backing::Device("/dev/null".into()));
        let fd = crate::swap::tests::memfd(4096);
        let memfd = std::fs::File::from(fd);
        assert_eq!(
            Backing::of_file(&memfd, libc::MAP_SHARED).unwrap(),
            Backing::Shmem
        );
        assert_eq!(
            Backing::of_file(&memfd, libc::MAP_PRIVATE).unwrap(),
            Backing::Shmem
        );
        // A hugetlbfs file (no mount needed, no huge page either until it is touched).
        // SAFETY: a NUL-terminated name; the new descriptor is owned below.
        let fd = unsafe { libc::memfd_create(c"nta-vmm-test".as_ptr(), libc::MFD_HUGETLB) };
        let e = std::io::Error::last_os_error();
        assert!(fd >= 0, "memfd_create(MFD_HUGETLB): {e} (no hugetlbfs?)");
        // SAFETY: a new descriptor, owned from here.
        let huge = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        assert_eq!(
            Backing::of_file(&huge, libc::MAP_SHARED).unwrap(),
            Backing::Shmem
        );
        // A file on the file system of this test binary (a disk, not tmpfs, where it is built).
        let exe = std::env::current_exe().unwrap();
        let f = std::fs::File::open(&exe).unwrap();
        match Backing::of_file(&f, libc::MAP_PRIVATE).unwrap() {
            Backing::PrivateFile(p) => assert_eq!(p, exe.canonicalize().unwrap()),
            Backing::Shmem => {} // a test binary on tmpfs (the guest's initramfs)
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_page_sizes_are_refused() {
        for p in [0, 3, 4097] {
            assert!(matches!(TagMemory::new(p), Err(Error::BadPageSize(_))));
        }
        assert!(TagMemory::for_host().is_ok());
    }

    #[test]
    fn lookup_finds_region_and_capability() {
        let m = map();
        let f = m.lookup(0x8000_2010).unwrap();
        assert_eq!(f.region.slot, 1);
        assert!(!f.tag_capable);
        assert!(m.lookup(0x4000_0000).unwrap().tag_capable);
        for gpa in [0, 0x3fff_ffff, 0x4020_0000, 0x8001_0000, u64::MAX] {
            assert!(matches!(m.lookup(gpa), Err(Error::NoRegion { .. })));
        }
    }

    #[test]
    fn bad_regions_are_refused() {
        let mut m = map();
        let dev = || Backing::Device("/dev/x".into());
        let cases = [
            (
                region(2, 0x8000_f000, 0x2000, dev()),
                RegionProblem::Overlaps(1),
            ),
            (
                region(2, 0x7fff_f000, 0x2000, dev()),
                RegionProblem::Overlaps(1),
            ),
            (
                region(2, 0x3000_0000, 0x2000_0000, dev()),
                RegionProblem::Overlaps(0),
            ),
            (
                region(1, 0x9000_0000, 0x1000, dev()),
                RegionProblem::DuplicateSlot,
            ),
            (
                region(2, 0x9000_0800, 0x1000, dev()),
                RegionProblem::Unaligned,
            ),
            (
                region(2, 0x9000_0000, 0x1800, dev()),
                RegionProblem::Unaligned,
            ),
            (region(2, 0x9000_0000, 0, dev()), RegionProblem::Empty),
            (
                region(2, u64::MAX - 0xfff, 0x2000, dev()),
                RegionProblem::Wraps,
            ),
        ];
        for (r, want) in cases {
            match add(&mut m, r) {
                Err(Error::BadRegion { problem, .. }) => assert_eq!(problem, want),
                other => panic!("expected {want:?}, got {other:?}"),
            }
        }
        assert_eq!(Access::from_prot(libc::PROT_NONE), None);
        assert_eq!(Access::from_prot(libc::PROT_READ), Some(Access::ReadOnly));
        assert_eq!(
            Access::from_prot(RW | libc::PROT_EXEC),
            Some(Access::ReadWrite)
        );
        assert!(add(&mut m, region(2, 0x9000_0000, 0x1000, dev())).is_ok());
    }

    #[test]
    fn marking_tag_capable_splits_the_part() {
        let mut m = map();
        m.mark_tag_capable(0x8000_4000, 0x1000).unwrap();
        assert!(!m.lookup(0x8000_3fff).unwrap().tag_capable);
        assert!(m.lookup(0x8000_4000).unwrap().tag_capable);
        assert!(m.lookup(0x8000_4fff).unwrap().tag_capable);
        assert!(!m.lookup(0x8000_5000).unwrap().tag_capable);
        assert_eq!(
            m.lookup(0x8000_5000).unwrap().part,
            (0x8000_5000, 0x8001_0000)
        );
        assert_eq!(m.parts(), 4);
        m.mark_tag_capable(0x8000_4000, 0x1000).unwrap();
        m.mark_tag_capable(0x8000_0000, 0x1000).unwrap();
        assert!(m.lookup(0x8000_0000).unwrap().tag_capable);
        assert!(matches!(
            m.mark_tag_capable(0x8000_f000, 0x2000),
            Err(Error::OutsideRegion { slot: 1, .. })
        ));
        assert!(matches!(
            m.mark_tag_capable(0x8000_f000, 0),
            Err(Error::BadRange { .. })
        ));
        assert!(matches!(
            m.mark_tag_capable(0x8000_f800, 0x800),
            Err(Error::BadRange { .. })
        ));
        assert!(matches!(
            m.mark_tag_capable(0x9000_0000, 0x1000),
            Err(Error::NoRegion { .. })
        ));
    }

    #[test]
    fn regions_can_be_removed_and_replaced() {
        let mut m = map();
        m.mark_tag_capable(0x8000_4000, 0x1000).unwrap();
        let old = m.remove(1).unwrap();
        assert_eq!(old.slot, 1);
        assert!(m.lookup(0x8000_0000).is_err() && m.lookup(0x8000_4000).is_err());
        assert_eq!(m.parts(), 1);
        assert!(m.remove(1).is_none());
        add(&mut m, region(1, 0x8000_0000, 0x2_0000, Backing::Shmem)).unwrap();
        assert!(m.lookup(0x8001_f000).unwrap().tag_capable);
    }

    /// A bounded property test: random adds, removes and marks on a map of 64 pages, checked
    /// page by page against a plain array after every step.
    #[test]
    fn edits_agree_with_a_page_by_page_model() {
        const PAGES: u64 = 64;
        const P: u64 = 4096;
        // xorshift64*: reproducible without a crate.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            seed.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        };
        // Per page: its slot, whether it is tag-capable, and the first page of its part.
        type Page = Option<(u32, bool, u64)>;
        let (mut adds, mut marks) = (0, 0);
        for round in 0..200 {
            let mut m = TagMemory::new(P).unwrap();
            let mut model: Vec<Page> = vec![None; PAGES as usize];
            for step in 0..40 {
                let (a, b) = (next(PAGES), next(PAGES));
                let (first, end) = (a.min(b), a.max(b) + 1);
                let slot = next(6) as u32;
                let at = format!("round {round} step {step}");
                match next(3) {
                    0 => {
                        let backing = if next(2) == 0 {
                            file()
                        } else {
                            Backing::Anonymous
                        };
                        let tc = backing.tag_capable();
                        let free = model[first as usize..end as usize]
                            .iter()
                            .all(Option::is_none);
                        let unused = model.iter().flatten().all(|&(s, _, _)| s != slot);
                        let got = add(&mut m, region(slot, first * P, (end - first) * P, backing));
                        assert_eq!(got.is_ok(), free && unused, "{at}");
                        if got.is_ok() {
                            adds += 1;
                            for e in &mut model[first as usize..end as usize] {
                                *e = Some((slot, tc, first));
                            }
                        }
                    }
                    1 => {
                        let had = model.iter().flatten().any(|&(s, _, _)| s == slot);
                        assert_eq!(m.remove(slot).is_some(), had, "{at}");
                        for e in &mut model {
                            if e.is_some_and(|(s, _, _)| s == slot) {
                                *e = None;
                            }
                        }
                    }
                    _ => {
                        let got = m.mark_tag_capable(first * P, (end - first) * P);
                        let Some((s, tc, part)) = model[first as usize] else {
                            assert!(matches!(got, Err(Error::NoRegion { .. })), "{at}: {got:?}");
                            continue;
                        };
                        let range = &model[first as usize..end as usize];
                        if !range.iter().all(|e| e.is_some_and(|(_, _, p)| p == part)) {
                            assert!(matches!(got, Err(Error::OutsideRegion { .. })), "{at}");
                            continue;
                        }
                        assert!(got.is_ok(), "{at}: {got:?}");
                        if tc {
                            continue;
                        }
                        marks += 1;
                        for e in &mut model[first as usize..end as usize] {
                            *e = Some((s, true, first));
                        }
                        for e in model[end as usize..].iter_mut() {
                            match e {
                                Some((t, false, p)) if *t == s && *p == part => *p = end,
                                _ => break,
                            }
                        }
                    }
                }
                for (p, want) in model.iter().enumerate() {
                    let got = m.lookup(p as u64 * P + 8).ok();
                    let got = got.map(|f| (f.region.slot, f.tag_capable, f.part.0 / P));
                    assert_eq!(got, *want, "{at}, page {p}");
                }
            }
        }
        // The random walk reached what it is for.
        assert!(adds > 500 && marks > 100, "{adds} adds, {marks} marks");
    }

    #[test]
    fn many_regions_are_found() {
        let mut m = TagMemory::new(4096).unwrap();
        for i in 0..20_000u32 {
            let gpa = 0x1_0000_0000 + u64::from(i) * 0x2000;
            add(&mut m, region(i, gpa, 0x1000, file())).unwrap();
        }
        for i in (0..20_000u32).step_by(7) {
            let gpa = 0x1_0000_0000 + u64::from(i) * 0x2000;
            assert_eq!(m.lookup(gpa + 0xff8).unwrap().region.slot, i);
            assert!(m.lookup(gpa + 0x1000).is_err());
        }
    }

    #[test]
    #[cfg(feature = "vm-memory")]
    fn vm_memory_regions_are_described() {
        use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap};
        let gm = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0x4000_0000), 0x10_0000),
            (GuestAddress(0x8000_0000), 0x2_0000),
        ])
        .unwrap();
        let mut n = 0;
        // SAFETY: `gm` outlives the map, and no fault is resolved.
        let m = unsafe {
            TagMemory::from_guest_memory(gm.iter(), |_| {
                n += 1;
                n
            })
        }
        .unwrap();
        let f = m.lookup(0x8001_0000).unwrap();
        assert_eq!(f.region.slot, 2);
        assert_eq!(f.region.backing, Backing::Anonymous);
        assert_eq!(f.region.access, Access::ReadWrite);
        assert!(f.tag_capable);
    }
}
