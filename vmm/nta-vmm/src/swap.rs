// SPDX-License-Identifier: MIT OR Apache-2.0
//! Replacing a range of this process's memory by anonymous memory with the same data, in a
//! way that a concurrent writer cannot lose a write.

use std::io;

/// The memory-management calls a swap makes; the library uses [`Libc`], tests inject failures.
pub(crate) trait Mm {
    /// `mprotect(addr, len, prot)`.
    ///
    /// # Safety
    /// As `mprotect(2)` on memory the caller may change the protection of.
    unsafe fn mprotect(&self, addr: usize, len: usize, prot: i32) -> io::Result<()>;
    /// A fresh private anonymous read-write mapping of `len` bytes.
    fn mmap_anon(&self, len: usize) -> io::Result<usize>;
    /// `mremap(from, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to)`.
    ///
    /// # Safety
    /// As `mremap(2)`: `from` is the caller's own mapping, `to` memory the caller may replace.
    unsafe fn mremap_fixed(&self, from: usize, len: usize, to: usize) -> io::Result<()>;
    /// `munmap(addr, len)` of a mapping `mmap_anon` returned.
    ///
    /// # Safety
    /// `addr` is a mapping of `mmap_anon` that no one else knows of.
    unsafe fn munmap(&self, addr: usize, len: usize);
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

impl Mm for Libc {
    unsafe fn mprotect(&self, addr: usize, len: usize, prot: i32) -> io::Result<()> {
        // SAFETY: the caller's contract (this function's).
        check(unsafe { libc::mprotect(addr as *mut libc::c_void, len, prot) })
    }

    fn mmap_anon(&self, len: usize) -> io::Result<usize> {
        // SAFETY: a new mapping at an address of the kernel's choosing overlaps nothing that
        // anyone uses.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(p as usize)
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
}

/// Where a swap failed. The range keeps its data; its protection is given back on a best-effort
/// basis (should that `mprotect` fail too, the range stays read-only and the next write to it
/// fails), and after a failed `Remap` the kernel may have unmapped it.
#[derive(Debug)]
pub(crate) enum SwapError {
    /// Write-protecting the range failed.
    Protect(io::Error),
    /// Mapping the replacement failed.
    Map(io::Error),
    /// Giving the replacement the range's protection failed.
    Reprotect(io::Error),
    /// Moving the replacement over the range failed.
    Remap(io::Error),
}

/// Replaces `[addr, addr + len)` by private anonymous memory with the same data and the
/// protection `prot`:
///
/// 1. the range is write-protected (`PROT_READ`): from then on a write to it faults, in this
///    process as a `SIGSEGV`, and for a vCPU as a stage-2 fault whose write GUP fails, so that
///    `KVM_RUN` returns `EFAULT` and the write has not happened (KVM's MMU notifier drops the
///    stage-2 mappings when the protection changes, writable ones included);
/// 2. the replacement is mapped and filled with a copy of the range, which nothing can change
///    meanwhile;
/// 3. it gets the range's protection `prot` and is moved over the range by one `mremap`, which
///    unmaps the old pages (KVM drops their stage-2 mappings) and maps the new in one step.
///
/// No `PROT_MTE`: KVM needs `VM_MTE_ALLOWED`, which anonymous memory has; `PROT_MTE` would
/// also make tag-checked accesses of the VMM itself fault.
///
/// # Safety
///
/// `[addr, addr + len)` must be page-aligned memory of this process that the caller may
/// replace, and no thread of this process other than vCPUs inside `KVM_RUN` (and no one
/// outside it, through another mapping of the same memory, since that sharing ends) may read,
/// write or unmap it until this returns: a host write in the write-protected window would
/// fault, and a reference into the range would then see other memory.
pub(crate) unsafe fn swap_range(
    mm: &impl Mm,
    addr: usize,
    len: usize,
    prot: i32,
) -> Result<(), SwapError> {
    // SAFETY: the range is the caller's (contract above); write-protecting it keeps its data.
    unsafe { mm.mprotect(addr, len, (prot & !libc::PROT_WRITE) | libc::PROT_READ) }
        .map_err(SwapError::Protect)?;
    let restore = |e| {
        // SAFETY: as above: the caller's range, given back the protection it had.
        let _ = unsafe { mm.mprotect(addr, len, prot) };
        e
    };
    let new = mm.mmap_anon(len).map_err(|e| restore(SwapError::Map(e)))?;
    // SAFETY: `new` is a fresh read-write mapping of `len` bytes that only this function knows
    // of; the range is readable and no one writes it (write-protected, and the contract above),
    // so the copy is of data that stays as copied.
    unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, new as *mut u8, len) };
    let undo = |e| {
        // SAFETY: `new` is this function's, never handed out.
        unsafe { mm.munmap(new, len) };
        restore(e)
    };
    // SAFETY: `new` is this function's own mapping.
    unsafe { mm.mprotect(new, len, prot) }.map_err(|e| undo(SwapError::Reprotect(e)))?;
    // SAFETY: `new` is this function's, the range the caller's (contract above).
    unsafe { mm.mremap_fixed(new, len, addr) }.map_err(|e| undo(SwapError::Remap(e)))?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::Cell;

    /// The real calls, failing the `fail_at`-th mmap/mremap with ENOMEM (map count exhausted).
    pub(crate) struct Failing {
        pub(crate) fail_mmap: bool,
        pub(crate) fail_mremap: bool,
        pub(crate) calls: Cell<u32>,
    }

    impl Mm for Failing {
        unsafe fn mprotect(&self, addr: usize, len: usize, prot: i32) -> io::Result<()> {
            self.calls.set(self.calls.get() + 1);
            // SAFETY: forwarded contract.
            unsafe { Libc.mprotect(addr, len, prot) }
        }
        fn mmap_anon(&self, len: usize) -> io::Result<usize> {
            if self.fail_mmap {
                return Err(io::Error::from_raw_os_error(libc::ENOMEM));
            }
            Libc.mmap_anon(len)
        }
        unsafe fn mremap_fixed(&self, from: usize, len: usize, to: usize) -> io::Result<()> {
            if self.fail_mremap {
                return Err(io::Error::from_raw_os_error(libc::ENOMEM));
            }
            // SAFETY: forwarded contract.
            unsafe { Libc.mremap_fixed(from, len, to) }
        }
        unsafe fn munmap(&self, addr: usize, len: usize) {
            // SAFETY: forwarded contract.
            unsafe { Libc.munmap(addr, len) }
        }
    }

    /// A test mapping of `pages` host pages with protection `prot`, filled with a pattern.
    pub(crate) struct TestMap {
        pub(crate) addr: usize,
        pub(crate) len: usize,
    }

    impl TestMap {
        pub(crate) fn new(len: usize, prot: i32, shared_file: bool) -> Self {
            let (flags, fd) = if shared_file {
                let f = tempfile_fd(len);
                (libc::MAP_SHARED, f)
            } else {
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)
            };
            // SAFETY: a fresh mapping at an address of the kernel's choosing.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    flags,
                    fd,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            if fd >= 0 {
                // SAFETY: our own descriptor; the mapping keeps the file.
                unsafe { libc::close(fd) };
            }
            for i in 0..len / 8 {
                // SAFETY: within the fresh read-write mapping, aligned.
                unsafe { (p as *mut u64).add(i).write(0x5eed_0000_0000 | i as u64) };
            }
            // SAFETY: our own mapping.
            assert_eq!(unsafe { libc::mprotect(p, len, prot) }, 0);
            Self {
                addr: p as usize,
                len,
            }
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
    }

    impl Drop for TestMap {
        fn drop(&mut self) {
            // SAFETY: our own mapping.
            unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
        }
    }

    fn tempfile_fd(len: usize) -> i32 {
        let name = std::ffi::CString::new("nta-vmm-test").unwrap();
        // SAFETY: a NUL-terminated name; memfd is shmem, a file for this test's purpose.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
        assert!(fd >= 0);
        // SAFETY: our own descriptor.
        assert_eq!(unsafe { libc::ftruncate(fd, len as libc::off_t) }, 0);
        fd
    }

    fn page() -> usize {
        crate::host_page_size().unwrap() as usize
    }

    #[test]
    fn swap_keeps_data_and_protection() {
        for prot in [libc::PROT_READ, libc::PROT_READ | libc::PROT_WRITE] {
            for shared in [false, true] {
                let m = TestMap::new(8 * page(), prot, shared);
                let (_, path) = TestMap::maps_entry(m.addr + page());
                assert_eq!(path.is_empty(), !shared);
                // SAFETY: the test's own mapping, no other thread uses it.
                unsafe { swap_range(&Libc, m.addr + page(), 2 * page(), prot) }.unwrap();
                assert!(m.pattern_intact());
                let (perms, path) = TestMap::maps_entry(m.addr + page());
                let want = if prot & libc::PROT_WRITE != 0 {
                    "rw-p"
                } else {
                    "r--p"
                };
                assert_eq!((perms.as_str(), path.as_str()), (want, ""));
                // The neighbours are untouched.
                let (_, path) = TestMap::maps_entry(m.addr);
                assert_eq!(path.is_empty(), !shared);
                let (perms, _) = TestMap::maps_entry(m.addr + 3 * page());
                assert_eq!(
                    &perms[..2],
                    if prot & libc::PROT_WRITE != 0 {
                        "rw"
                    } else {
                        "r-"
                    }
                );
            }
        }
    }

    /// The real calls, recording the range's permissions when the replacement is mapped (after
    /// the write-protection, before the copy).
    struct Watching {
        range: usize,
        perms_at_copy: std::cell::RefCell<String>,
    }

    impl Mm for Watching {
        unsafe fn mprotect(&self, addr: usize, len: usize, prot: i32) -> io::Result<()> {
            // SAFETY: forwarded contract.
            unsafe { Libc.mprotect(addr, len, prot) }
        }
        fn mmap_anon(&self, len: usize) -> io::Result<usize> {
            *self.perms_at_copy.borrow_mut() = TestMap::maps_entry(self.range).0;
            Libc.mmap_anon(len)
        }
        unsafe fn mremap_fixed(&self, from: usize, len: usize, to: usize) -> io::Result<()> {
            // SAFETY: forwarded contract.
            unsafe { Libc.mremap_fixed(from, len, to) }
        }
        unsafe fn munmap(&self, addr: usize, len: usize) {
            // SAFETY: forwarded contract.
            unsafe { Libc.munmap(addr, len) }
        }
    }

    #[test]
    fn the_range_is_write_protected_while_it_is_copied() {
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let m = TestMap::new(4 * page(), rw, false);
        let mm = Watching {
            range: m.addr,
            perms_at_copy: Default::default(),
        };
        // SAFETY: the test's own mapping, no other thread uses it.
        unsafe { swap_range(&mm, m.addr, 4 * page(), rw) }.unwrap();
        assert_eq!(mm.perms_at_copy.borrow().as_str(), "r--p");
        assert_eq!(TestMap::maps_entry(m.addr).0, "rw-p");
    }

    #[test]
    fn failed_swaps_leave_the_range_as_it_was() {
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        for (fail_mmap, fail_mremap) in [(true, false), (false, true)] {
            let m = TestMap::new(4 * page(), rw, true);
            let mm = Failing {
                fail_mmap,
                fail_mremap,
                calls: Cell::new(0),
            };
            // SAFETY: the test's own mapping, no other thread uses it.
            let e = unsafe { swap_range(&mm, m.addr, 4 * page(), rw) }.unwrap_err();
            match e {
                SwapError::Map(e) | SwapError::Remap(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::ENOMEM))
                }
                other => panic!("{other:?}"),
            }
            assert!(m.pattern_intact());
            let (perms, path) = TestMap::maps_entry(m.addr);
            assert_eq!(perms, "rw-s");
            assert!(path.contains("nta-vmm-test"));
            // Writable again: the write-protection was lifted.
            // SAFETY: within the test's read-write mapping.
            unsafe { (m.addr as *mut u64).write_volatile(1) };
        }
    }
}
