// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Replacing a range of this process's memory by tag-capable memory with the same data, in a
//! way that a concurrent writer cannot lose a write.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::vma::VmaFlags;

/// A 2 MiB stage-2 block (and PMD) with 4 KiB pages.
pub(crate) const HUGE: usize = 2 << 20;

/// What the replacement is made of, and the properties of the range it must keep.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct NewMemory {
    /// A memfd (`MAP_SHARED`) rather than private anonymous memory.
    pub(crate) memfd: bool,
    /// The range's mapping properties, given to the replacement.
    pub(crate) flags: VmaFlags,
    /// Ask for transparent huge pages (`MADV_HUGEPAGE`) unless the range has `nohugepage`.
    pub(crate) huge: bool,
}

/// A replacement, mapped but not yet in place.
#[derive(Debug)]
pub(crate) struct NewMap {
    pub(crate) addr: usize,
    pub(crate) memfd: Option<OwnedFd>,
}

/// The memory-management calls a swap makes; the library uses [`Libc`], tests inject failures.
pub(crate) trait Mm {
    /// `mprotect(addr, len, prot)`.
    ///
    /// # Safety
    /// As `mprotect(2)` on memory the caller may change the protection of.
    unsafe fn mprotect(&self, addr: usize, len: usize, prot: i32) -> io::Result<()>;
    /// A fresh read-write mapping of `len` bytes of `new`'s kind with `new`'s properties,
    /// 2 MiB-aligned if `len` is a multiple of 2 MiB.
    fn map_new(&self, len: usize, new: &NewMemory) -> io::Result<NewMap>;
    /// Copies `len` bytes from `from` to `to`, failing with `EFAULT` (not a signal) where `from`
    /// cannot be read (a file truncated under a mapping).
    ///
    /// # Safety
    /// `to` is a writable mapping of the caller's that no one else uses.
    unsafe fn copy(&self, from: usize, to: usize, len: usize) -> io::Result<()>;
    /// `mremap(from, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to)`.
    ///
    /// # Safety
    /// As `mremap(2)`: `from` is the caller's own mapping, `to` memory the caller may replace.
    unsafe fn mremap_fixed(&self, from: usize, len: usize, to: usize) -> io::Result<()>;
    /// `munmap(addr, len)` of a mapping `map_new` returned.
    ///
    /// # Safety
    /// `addr` is a mapping of `map_new` that no one else knows of.
    unsafe fn munmap(&self, addr: usize, len: usize);
    /// Whether all of `[addr, addr + len)` is mapped.
    fn is_mapped(&self, addr: usize, len: usize) -> bool;
}

/// The real system calls.
pub(crate) struct Libc;

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A fresh mapping of `len` bytes at an address of the kernel's choosing.
fn mmap(len: usize, prot: i32, flags: i32, fd: i32) -> io::Result<usize> {
    // SAFETY: a new mapping where the kernel chooses overlaps nothing anyone uses.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p as usize)
}

impl Libc {
    /// Reserves `len` bytes aligned to `align` (`PROT_NONE`), trimming the slack.
    fn reserve(len: usize, align: usize, noreserve: bool) -> io::Result<usize> {
        let extra = if align > 1 { align } else { 0 };
        let flags = libc::MAP_PRIVATE
            | libc::MAP_ANONYMOUS
            | if noreserve { libc::MAP_NORESERVE } else { 0 };
        let p = mmap(len + extra, libc::PROT_NONE, flags, -1)?;
        let a = if extra > 0 {
            (p + align - 1) & !(align - 1)
        } else {
            p
        };
        // SAFETY: the head and tail of the fresh reservation, which only this function knows.
        unsafe {
            if a > p {
                libc::munmap(p as *mut libc::c_void, a - p);
            }
            if p + extra > a {
                libc::munmap((a + len) as *mut libc::c_void, p + extra - a);
            }
        }
        Ok(a)
    }

    fn advise(addr: usize, len: usize, new: &NewMemory) -> io::Result<()> {
        let f = &new.flags;
        let huge = new.huge && !f.nohugepage && len % HUGE == 0;
        for (want, advice) in [
            (huge || f.hugepage, libc::MADV_HUGEPAGE),
            (f.nohugepage, libc::MADV_NOHUGEPAGE),
            (f.dontfork, libc::MADV_DONTFORK),
            (f.dontdump, libc::MADV_DONTDUMP),
            (f.mergeable, libc::MADV_MERGEABLE),
        ] {
            if want {
                // SAFETY: advice on the caller's fresh mapping, which changes no data.
                check(unsafe { libc::madvise(addr as *mut libc::c_void, len, advice) })?;
            }
        }
        Ok(())
    }

    fn map_new_at(addr: usize, len: usize, new: &NewMemory) -> io::Result<Option<OwnedFd>> {
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let fixed = libc::MAP_FIXED
            | if new.flags.noreserve {
                libc::MAP_NORESERVE
            } else {
                0
            };
        let (flags, fd) = if new.memfd {
            let name = c"nta-vmm-swap";
            // SAFETY: a NUL-terminated name; the new descriptor is owned below.
            let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is a new descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let size = libc::off_t::try_from(len)
                .map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
            // SAFETY: sizing our own memfd.
            check(unsafe { libc::ftruncate(fd.as_raw_fd(), size) })?;
            (libc::MAP_SHARED | fixed, Some(fd))
        } else {
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | fixed, None)
        };
        let raw = fd.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        // SAFETY: MAP_FIXED over the caller's reservation of exactly this range, which no one
        // else knows of.
        let p = unsafe { libc::mmap(addr as *mut libc::c_void, len, rw, flags, raw, 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Self::advise(addr, len, new)?;
        Ok(fd)
    }
}

impl Mm for Libc {
    unsafe fn mprotect(&self, addr: usize, len: usize, prot: i32) -> io::Result<()> {
        // SAFETY: the caller's contract (this function's).
        check(unsafe { libc::mprotect(addr as *mut libc::c_void, len, prot) })
    }

    fn map_new(&self, len: usize, new: &NewMemory) -> io::Result<NewMap> {
        let align = if len % HUGE == 0 { HUGE } else { 1 };
        let addr = Self::reserve(len, align, new.flags.noreserve)?;
        match Self::map_new_at(addr, len, new) {
            Ok(memfd) => Ok(NewMap { addr, memfd }),
            Err(e) => {
                // SAFETY: the reservation made above, which no one else knows of.
                unsafe { libc::munmap(addr as *mut libc::c_void, len) };
                Err(e)
            }
        }
    }

    unsafe fn copy(&self, from: usize, to: usize, len: usize) -> io::Result<()> {
        // process_vm_readv of this process: a page that cannot be read is an EFAULT, where a
        // plain copy would take SIGBUS. Without it (CONFIG_CROSS_MEMORY_ATTACH=n), a read of
        // /proc/self/mem, which fails with EIO there.
        let mut done = 0;
        while done < len {
            let local = libc::iovec {
                iov_base: (to + done) as *mut libc::c_void,
                iov_len: len - done,
            };
            let remote = libc::iovec {
                iov_base: (from + done) as *mut libc::c_void,
                iov_len: len - done,
            };
            // SAFETY: `local` is the caller's writable mapping (contract); `remote` is only read,
            // by the kernel, which reports what it cannot read.
            let n = unsafe {
                libc::process_vm_readv(libc::getpid(), &raw const local, 1, &raw const remote, 1, 0)
            };
            match usize::try_from(n) {
                Ok(0) => return Err(io::Error::from_raw_os_error(libc::EFAULT)),
                Ok(n) => done += n,
                Err(_) => {
                    let e = io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::EINTR) => {}
                        // SAFETY: the caller's contract (this function's).
                        Some(libc::ENOSYS) => {
                            return unsafe { copy_by_proc_mem(from + done, to + done, len - done) }
                        }
                        _ => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    unsafe fn mremap_fixed(&self, from: usize, len: usize, to: usize) -> io::Result<()> {
        // SAFETY: the caller's contract (this function's).
        let p = unsafe {
            libc::mremap(
                from as *mut libc::c_void,
                len,
                len,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                to as *mut libc::c_void,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    unsafe fn munmap(&self, addr: usize, len: usize) {
        // SAFETY: the caller's contract (this function's).
        unsafe { libc::munmap(addr as *mut libc::c_void, len) };
    }

    fn is_mapped(&self, addr: usize, len: usize) -> bool {
        // msync fails with ENOMEM where any part of the range is unmapped; MS_ASYNC writes
        // nothing back.
        // SAFETY: msync reads the range's mappings and changes no memory.
        unsafe { libc::msync(addr as *mut libc::c_void, len, libc::MS_ASYNC) == 0 }
    }
}

/// [`Mm::copy`] by reading `/proc/self/mem`: `EFAULT` where `from` cannot be read.
///
/// # Safety
///
/// As [`Mm::copy`].
unsafe fn copy_by_proc_mem(from: usize, to: usize, len: usize) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mem = std::fs::File::open("/proc/self/mem")?;
    // SAFETY: `to` is the caller's writable mapping of `len` bytes that no one else uses.
    let buf = unsafe { std::slice::from_raw_parts_mut(to as *mut u8, len) };
    let mut done = 0;
    while done < len {
        match mem.read_at(&mut buf[done..], (from + done) as u64) {
            Ok(0) => return Err(io::Error::from_raw_os_error(libc::EFAULT)),
            Ok(n) => done += n,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                return Err(io::Error::from_raw_os_error(libc::EFAULT))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The step of a swap that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Write-protecting the range.
    Protect,
    /// Mapping the replacement.
    Map,
    /// Copying the range.
    Copy,
    /// Giving the replacement the range's protection.
    Reprotect,
    /// Moving the replacement over the range.
    Remap,
}

/// A failed swap: the range keeps its data and its old memory, unless `lost`.
#[derive(Debug)]
pub(crate) struct SwapError {
    pub(crate) step: Step,
    pub(crate) source: io::Error,
    /// Giving the range its protection back failed too: it stays write-protected.
    pub(crate) restore: Option<io::Error>,
    /// The kernel unmapped the range before the move failed: it holds nothing now.
    pub(crate) lost: bool,
}

/// Replaces `[addr, addr + len)` by new memory of `new`'s kind with the same data and the
/// protection `prot`; returns the memfd if it is one:
///
/// 1. the replacement is mapped (2 MiB-aligned where `len` allows, so that transparent huge
///    pages back it and survive the move, and KVM can map it with stage-2 blocks);
/// 2. the range is write-protected (`PROT_READ`): from then on a write to it faults, in this
///    process as a `SIGSEGV`, and for a vCPU as a stage-2 fault whose write GUP fails, so that
///    `KVM_RUN` returns `EFAULT` and the write has not happened (KVM's MMU notifier drops the
///    stage-2 mappings when the protection changes, writable ones included);
/// 3. the range is copied into the replacement, with `EFAULT` rather than a signal where it
///    cannot be read; nothing can change it meanwhile;
/// 4. the replacement gets the range's protection `prot` and is moved over the range by one
///    `mremap`, which unmaps the old pages (KVM drops their stage-2 mappings) and maps the new
///    in one step.
///
/// No `PROT_MTE`: KVM needs `VM_MTE_ALLOWED`, which anonymous memory and shmem have;
/// `PROT_MTE` would also make tag-checked accesses of the VMM itself fault.
///
/// # Safety
///
/// `[addr, addr + len)` must be page-aligned memory of this process that the caller may
/// replace, and no one may write it with a CPU access, write it through a pin, or map or unmap
/// it until this returns (see [`crate::HostUsers`]; pinning writers include
/// `process_vm_writev`); vCPUs may go on: their writes fail in KVM in the window.
pub(crate) unsafe fn swap_range(
    mm: &impl Mm,
    addr: usize,
    len: usize,
    prot: i32,
    new: &NewMemory,
) -> Result<Option<OwnedFd>, SwapError> {
    let fail = |step, source| SwapError {
        step,
        source,
        restore: None,
        lost: false,
    };
    let repl = mm.map_new(len, new).map_err(|e| fail(Step::Map, e))?;
    let drop_new = || {
        // SAFETY: the replacement is this function's, never handed out.
        unsafe { mm.munmap(repl.addr, len) };
    };
    // SAFETY: the range is the caller's (contract above); write-protecting it keeps its data.
    if let Err(e) = unsafe { mm.mprotect(addr, len, (prot & !libc::PROT_WRITE) | libc::PROT_READ) }
    {
        drop_new();
        return Err(fail(Step::Protect, e));
    }
    let undo = |step, source| {
        drop_new();
        // SAFETY: as above: the caller's range, given back the protection it had.
        let restore = unsafe { mm.mprotect(addr, len, prot) }.err();
        SwapError {
            step,
            source,
            restore,
            lost: false,
        }
    };
    let copied = if new.flags.pfnmap {
        // Device memory: the kernel cannot pin it for process_vm_readv, and it has no file to
        // be truncated; read with the CPU. (A driver revoking the mapping meanwhile makes this
        // a SIGBUS, as it makes any access of the VMM's to it.)
        // SAFETY: as for `mm.copy` below; the range is readable memory of this process.
        unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, repl.addr as *mut u8, len) };
        Ok(())
    } else {
        // SAFETY: the replacement is a fresh read-write mapping of `len` bytes that only this
        // function knows of; the range is readable and no one writes it (write-protected, and
        // the contract above), so the copy is of data that stays as copied.
        unsafe { mm.copy(addr, repl.addr, len) }
    };
    if let Err(e) = copied {
        return Err(undo(Step::Copy, e));
    }
    if prot != libc::PROT_READ | libc::PROT_WRITE {
        // SAFETY: the replacement is this function's own mapping.
        if let Err(e) = unsafe { mm.mprotect(repl.addr, len, prot) } {
            return Err(undo(Step::Reprotect, e));
        }
    }
    // SAFETY: the replacement is this function's, the range the caller's (contract above).
    let Err(e) = (unsafe { mm.mremap_fixed(repl.addr, len, addr) }) else {
        return Ok(repl.memfd);
    };
    if mm.is_mapped(addr, len) {
        return Err(undo(Step::Remap, e));
    }
    // The kernel unmapped the range, then failed to move the replacement. Moving it there now
    // could replace what another thread has mapped in the hole meanwhile: the range is lost.
    drop_new();
    Err(SwapError {
        step: Step::Remap,
        source: e,
        restore: None,
        lost: true,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::Cell;

    /// How a [`TestMap`] is mapped.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Kind {
        /// Private anonymous memory.
        Anon,
        /// A `MAP_SHARED` memfd, a stand-in for a shared file.
        Shared,
        /// A `MAP_PRIVATE` memfd, a stand-in for a guest image.
        Private,
    }

    /// The real calls, with failures injected: the mmap, the copy or the mremap fail with
    /// `errno`, the mremap after unmapping the range if `unmap`; the restoring mprotect fails
    /// if `fail_restore`.
    pub(crate) struct Failing {
        pub(crate) fail_map: bool,
        pub(crate) fail_copy: bool,
        pub(crate) fail_mremap: bool,
        pub(crate) unmap: bool,
        pub(crate) fail_restore: bool,
        pub(crate) errno: i32,
        pub(crate) mprotects: Cell<u32>,
    }

    impl Default for Failing {
        fn default() -> Self {
            Self {
                fail_map: false,
                fail_copy: false,
                fail_mremap: false,
                unmap: false,
                fail_restore: false,
                errno: libc::ENOMEM,
                mprotects: Cell::new(0),
            }
        }
    }

    impl Mm for Failing {
        unsafe fn mprotect(&self, addr: usize, len: usize, prot: i32) -> io::Result<()> {
            self.mprotects.set(self.mprotects.get() + 1);
            if self.fail_restore && self.mprotects.get() == 2 {
                return Err(io::Error::from_raw_os_error(libc::EACCES));
            }
            // SAFETY: forwarded contract.
            unsafe { Libc.mprotect(addr, len, prot) }
        }
        fn map_new(&self, len: usize, new: &NewMemory) -> io::Result<NewMap> {
            if self.fail_map {
                return Err(io::Error::from_raw_os_error(self.errno));
            }
            Libc.map_new(len, new)
        }
        unsafe fn copy(&self, from: usize, to: usize, len: usize) -> io::Result<()> {
            if self.fail_copy {
                return Err(io::Error::from_raw_os_error(self.errno));
            }
            // SAFETY: forwarded contract.
            unsafe { Libc.copy(from, to, len) }
        }
        unsafe fn mremap_fixed(&self, from: usize, len: usize, to: usize) -> io::Result<()> {
            if self.fail_mremap {
                if self.unmap {
                    // SAFETY: the test's own range, which this failure is meant to lose.
                    unsafe { libc::munmap(to as *mut libc::c_void, len) };
                }
                return Err(io::Error::from_raw_os_error(self.errno));
            }
            // SAFETY: forwarded contract.
            unsafe { Libc.mremap_fixed(from, len, to) }
        }
        unsafe fn munmap(&self, addr: usize, len: usize) {
            // SAFETY: forwarded contract.
            unsafe { Libc.munmap(addr, len) }
        }
        fn is_mapped(&self, addr: usize, len: usize) -> bool {
            Libc.is_mapped(addr, len)
        }
    }

    /// A test mapping filled with a pattern, unmapped on drop.
    pub(crate) struct TestMap {
        pub(crate) addr: usize,
        pub(crate) len: usize,
        pub(crate) fd: Option<OwnedFd>,
    }

    pub(crate) fn memfd(len: usize) -> OwnedFd {
        let name = c"nta-vmm-test";
        // SAFETY: a NUL-terminated name; memfd is shmem, a file for this test's purpose.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: a new descriptor, owned from here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: our own descriptor.
        assert_eq!(
            unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) },
            0
        );
        fd
    }

    impl TestMap {
        pub(crate) fn new(len: usize, prot: i32, shared: bool) -> Self {
            Self::of(len, prot, if shared { Kind::Shared } else { Kind::Anon }, 1)
        }

        /// `len` bytes of `kind` aligned to `align`, with protection `prot`.
        pub(crate) fn of(len: usize, prot: i32, kind: Kind, align: usize) -> Self {
            let at = Libc::reserve(len, align, false).unwrap();
            let fd = (kind != Kind::Anon).then(|| memfd(len));
            let flags = libc::MAP_FIXED
                | match kind {
                    Kind::Anon => libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    Kind::Shared => libc::MAP_SHARED,
                    Kind::Private => libc::MAP_PRIVATE,
                };
            let rw = libc::PROT_READ | libc::PROT_WRITE;
            let raw = fd.as_ref().map_or(-1, AsRawFd::as_raw_fd);
            // SAFETY: over the fresh reservation.
            let p = unsafe { libc::mmap(at as *mut libc::c_void, len, rw, flags, raw, 0) };
            assert_eq!(p as usize, at);
            for i in 0..len / 8 {
                // SAFETY: within the fresh read-write mapping, aligned.
                unsafe { (p as *mut u64).add(i).write(0x5eed_0000_0000 | i as u64) };
            }
            // SAFETY: our own mapping.
            assert_eq!(unsafe { libc::mprotect(p, len, prot) }, 0);
            Self { addr: at, len, fd }
        }

        pub(crate) fn pattern_intact(&self) -> bool {
            (0..self.len / 8).all(|i| {
                // SAFETY: within the mapping, which stays readable.
                unsafe {
                    ((self.addr as *const u64).add(i)).read_volatile()
                        == 0x5eed_0000_0000 | i as u64
                }
            })
        }

        /// The permissions and path of the mapping holding `addr` in /proc/self/maps.
        pub(crate) fn maps_entry(addr: usize) -> (String, String) {
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            for l in maps.lines() {
                let mut f = l.split_whitespace();
                let range = f.next().unwrap();
                let perms = f.next().unwrap().to_string();
                let (s, e) = range.split_once('-').unwrap();
                let (s, e) = (
                    usize::from_str_radix(s, 16).unwrap(),
                    usize::from_str_radix(e, 16).unwrap(),
                );
                if (s..e).contains(&addr) {
                    let path = f.nth(3).unwrap_or("").to_string();
                    return (perms, path);
                }
            }
            panic!("{addr:#x} not mapped");
        }

        /// The value in kB of `field` in /proc/self/smaps for the mapping holding `addr`.
        pub(crate) fn smaps_kb(addr: usize, field: &str) -> u64 {
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            let mut inside = false;
            for l in smaps.lines() {
                if let Some((s, e)) = crate::vma::tests::header(l) {
                    inside = (s..e).contains(&(addr as u64));
                } else if inside {
                    if let Some(v) = l.strip_prefix(field).and_then(|v| v.strip_prefix(':')) {
                        return v.trim().trim_end_matches(" kB").parse().unwrap();
                    }
                }
            }
            panic!("no {field} for {addr:#x}");
        }
    }

    impl Drop for TestMap {
        fn drop(&mut self) {
            // SAFETY: our own mapping.
            unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
        }
    }

    fn page() -> usize {
        crate::host_page_size().unwrap() as usize
    }

    const RW: i32 = libc::PROT_READ | libc::PROT_WRITE;

    fn anon() -> NewMemory {
        NewMemory::default()
    }

    #[test]
    fn swap_keeps_data_and_protection() {
        for prot in [libc::PROT_READ, RW] {
            for kind in [Kind::Anon, Kind::Shared, Kind::Private] {
                for memfd in [false, true] {
                    let m = TestMap::of(8 * page(), prot, kind, 1);
                    let new = NewMemory { memfd, ..anon() };
                    // SAFETY: the test's own mapping, no other thread uses it.
                    let fd = unsafe { swap_range(&Libc, m.addr + page(), 2 * page(), prot, &new) };
                    assert_eq!(fd.unwrap().is_some(), memfd);
                    assert!(m.pattern_intact());
                    let (perms, path) = TestMap::maps_entry(m.addr + page());
                    let want = match (prot & libc::PROT_WRITE != 0, memfd) {
                        (true, false) => "rw-p",
                        (true, true) => "rw-s",
                        (false, false) => "r--p",
                        (false, true) => "r--s",
                    };
                    assert_eq!(perms, want);
                    assert_eq!(path.contains("nta-vmm-swap"), memfd, "{path}");
                    // The neighbours are untouched.
                    let (_, path) = TestMap::maps_entry(m.addr);
                    assert_eq!(path.contains("nta-vmm-test"), kind != Kind::Anon);
                    let (perms, _) = TestMap::maps_entry(m.addr + 3 * page());
                    assert_eq!(
                        &perms[1..2],
                        if prot & libc::PROT_WRITE != 0 {
                            "w"
                        } else {
                            "-"
                        }
                    );
                }
            }
        }
    }

    /// The real calls, recording the range's permissions when it is copied.
    struct Watching {
        range: usize,
        perms_at_copy: std::cell::RefCell<String>,
    }

    impl Mm for Watching {
        unsafe fn mprotect(&self, addr: usize, len: usize, prot: i32) -> io::Result<()> {
            // SAFETY: forwarded contract.
            unsafe { Libc.mprotect(addr, len, prot) }
        }
        fn map_new(&self, len: usize, new: &NewMemory) -> io::Result<NewMap> {
            Libc.map_new(len, new)
        }
        unsafe fn copy(&self, from: usize, to: usize, len: usize) -> io::Result<()> {
            *self.perms_at_copy.borrow_mut() = TestMap::maps_entry(self.range).0;
            // SAFETY: forwarded contract.
            unsafe { Libc.copy(from, to, len) }
        }
        unsafe fn mremap_fixed(&self, from: usize, len: usize, to: usize) -> io::Result<()> {
            // SAFETY: forwarded contract.
            unsafe { Libc.mremap_fixed(from, len, to) }
        }
        unsafe fn munmap(&self, addr: usize, len: usize) {
            // SAFETY: forwarded contract.
            unsafe { Libc.munmap(addr, len) }
        }
        fn is_mapped(&self, addr: usize, len: usize) -> bool {
            Libc.is_mapped(addr, len)
        }
    }

    #[test]
    fn the_range_is_write_protected_while_it_is_copied() {
        let m = TestMap::new(4 * page(), RW, false);
        let mm = Watching {
            range: m.addr,
            perms_at_copy: Default::default(),
        };
        // SAFETY: the test's own mapping, no other thread uses it.
        unsafe { swap_range(&mm, m.addr, 4 * page(), RW, &anon()) }.unwrap();
        assert_eq!(mm.perms_at_copy.borrow().as_str(), "r--p");
        assert_eq!(TestMap::maps_entry(m.addr).0, "rw-p");
    }

    #[test]
    fn failed_swaps_leave_the_range_as_it_was() {
        for (step, mm) in [
            (
                Step::Map,
                Failing {
                    fail_map: true,
                    ..Default::default()
                },
            ),
            (
                Step::Copy,
                Failing {
                    fail_copy: true,
                    errno: libc::EFAULT,
                    ..Default::default()
                },
            ),
            (
                Step::Remap,
                Failing {
                    fail_mremap: true,
                    ..Default::default()
                },
            ),
        ] {
            let m = TestMap::new(4 * page(), RW, true);
            // SAFETY: the test's own mapping, no other thread uses it.
            let e = unsafe { swap_range(&mm, m.addr, 4 * page(), RW, &anon()) }.unwrap_err();
            assert_eq!(e.step, step);
            assert!(!e.lost && e.restore.is_none(), "{e:?}");
            assert_eq!(e.source.raw_os_error(), Some(mm.errno));
            assert!(m.pattern_intact());
            let (perms, path) = TestMap::maps_entry(m.addr);
            assert_eq!(perms, "rw-s");
            assert!(path.contains("nta-vmm-test"));
            // Writable again: the write-protection was lifted.
            // SAFETY: within the test's read-write mapping.
            unsafe { (m.addr as *mut u64).write_volatile(1) };
        }
    }

    #[test]
    fn a_failed_restore_and_a_lost_range_are_reported() {
        let m = TestMap::new(4 * page(), RW, false);
        let mm = Failing {
            fail_copy: true,
            fail_restore: true,
            ..Default::default()
        };
        // SAFETY: the test's own mapping, no other thread uses it.
        let e = unsafe { swap_range(&mm, m.addr, 4 * page(), RW, &anon()) }.unwrap_err();
        assert_eq!(e.step, Step::Copy);
        assert_eq!(e.restore.unwrap().raw_os_error(), Some(libc::EACCES));
        assert_eq!(TestMap::maps_entry(m.addr).0, "r--p");

        let m = TestMap::new(4 * page(), RW, false);
        let mm = Failing {
            fail_mremap: true,
            unmap: true,
            ..Default::default()
        };
        // SAFETY: the test's own mapping, which this test means to lose.
        let e = unsafe { swap_range(&mm, m.addr + page(), 2 * page(), RW, &anon()) }.unwrap_err();
        assert!(e.lost && e.step == Step::Remap, "{e:?}");
        assert!(!Libc.is_mapped(m.addr + page(), 2 * page()));
        assert!(Libc.is_mapped(m.addr, page()));
    }

    #[test]
    fn a_truncated_file_is_an_error_not_a_signal() {
        let m = TestMap::of(4 * page(), RW, Kind::Private, 1);
        let fd = m.fd.as_ref().unwrap();
        // SAFETY: shrinking the test's own memfd: pages 1-3 of the mapping are past its end.
        assert_eq!(
            unsafe { libc::ftruncate(fd.as_raw_fd(), page() as libc::off_t) },
            0
        );
        // SAFETY: the test's own mapping, no other thread uses it.
        let e = unsafe { swap_range(&Libc, m.addr, 4 * page(), RW, &anon()) }.unwrap_err();
        assert_eq!(
            (e.step, e.source.raw_os_error()),
            (Step::Copy, Some(libc::EFAULT))
        );
        assert!(e.restore.is_none() && !e.lost);
        assert_eq!(TestMap::maps_entry(m.addr).0, "rw-p");
    }

    #[test]
    fn the_proc_mem_copy_is_faithful_and_fails_with_efault() {
        let m = TestMap::of(4 * page(), RW, Kind::Private, 1);
        let mut dst = vec![0u8; 4 * page()];
        // SAFETY: `dst` is ours, and nothing else uses it.
        unsafe { copy_by_proc_mem(m.addr, dst.as_mut_ptr() as usize, dst.len()) }.unwrap();
        // SAFETY: the test's mapping, readable.
        let src = unsafe { std::slice::from_raw_parts(m.addr as *const u8, m.len) };
        assert!(dst == src);
        let fd = m.fd.as_ref().unwrap();
        // SAFETY: shrinking the test's own memfd: pages 1-3 of the mapping are past its end.
        assert_eq!(
            unsafe { libc::ftruncate(fd.as_raw_fd(), page() as libc::off_t) },
            0
        );
        // SAFETY: as above.
        let e = unsafe { copy_by_proc_mem(m.addr, dst.as_mut_ptr() as usize, dst.len()) };
        assert_eq!(e.unwrap_err().raw_os_error(), Some(libc::EFAULT));
    }

    #[test]
    fn mapping_properties_are_kept() {
        let m = TestMap::new(4 * page(), RW, false);
        for advice in [
            libc::MADV_DONTFORK,
            libc::MADV_DONTDUMP,
            libc::MADV_NOHUGEPAGE,
        ] {
            // SAFETY: advice on the test's own mapping.
            assert_eq!(unsafe { libc::madvise(m.addr as *mut _, m.len, advice) }, 0);
        }
        let flags = crate::vma::flags_of_self(m.addr as u64, m.len as u64).unwrap();
        assert!(flags.dontfork && flags.dontdump && flags.nohugepage);
        let new = NewMemory {
            flags,
            huge: true,
            ..anon()
        };
        // SAFETY: the test's own mapping, no other thread uses it.
        unsafe { swap_range(&Libc, m.addr + page(), 2 * page(), RW, &new) }.unwrap();
        let after = crate::vma::flags_of_self(m.addr as u64 + page() as u64, 2 * page() as u64);
        assert_eq!(after.unwrap(), flags);
        assert!(m.pattern_intact());
    }

    /// Whether transparent huge pages can back a `MADV_HUGEPAGE` mapping here.
    pub(crate) fn thp_for_madvise() -> Result<(), String> {
        let p = "/sys/kernel/mm/transparent_hugepage/enabled";
        let s = std::fs::read_to_string(p).map_err(|e| format!("{p}: {e} (no THP?)"))?;
        if s.contains("[never]") {
            return Err(format!("{p} is '{}': this test needs THP", s.trim()));
        }
        Ok(())
    }

    #[test]
    fn a_huge_chunk_stays_huge() {
        thp_for_madvise().unwrap();
        let m = TestMap::of(2 * HUGE, RW, Kind::Private, HUGE);
        let new = NewMemory {
            huge: true,
            ..anon()
        };
        // SAFETY: the test's own mapping, no other thread uses it.
        unsafe { swap_range(&Libc, m.addr + HUGE, HUGE, RW, &new) }.unwrap();
        assert!(m.pattern_intact());
        assert_eq!(TestMap::smaps_kb(m.addr + HUGE, "AnonHugePages"), 2048);
        assert_eq!(TestMap::smaps_kb(m.addr, "AnonHugePages"), 0);
        // With MADV_NOHUGEPAGE on the range, the replacement keeps it and is built of pages.
        let m = TestMap::of(2 * HUGE, RW, Kind::Private, HUGE);
        let flags = VmaFlags {
            nohugepage: true,
            ..Default::default()
        };
        let new = NewMemory { flags, ..new };
        // SAFETY: the test's own mapping, no other thread uses it.
        unsafe { swap_range(&Libc, m.addr + HUGE, HUGE, RW, &new) }.unwrap();
        assert_eq!(TestMap::smaps_kb(m.addr + HUGE, "AnonHugePages"), 0);
    }
}
