// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! What the kernel says about this process's mappings of a range: the properties a swap must
//! keep, or cannot keep and refuses.

use std::fs::File;
use std::io::{self, BufRead, BufReader};

/// The properties of the mappings of a range that a swap reads (`/proc/self/smaps`'
/// `VmFlags`, and the memory policy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // one per kernel VmFlags bit, as smaps lists them
pub(crate) struct VmaFlags {
    /// `MAP_NORESERVE` (`nr`).
    pub(crate) noreserve: bool,
    /// `MADV_DONTFORK` (`dc`).
    pub(crate) dontfork: bool,
    /// `MADV_DONTDUMP` (`dd`).
    pub(crate) dontdump: bool,
    /// `MADV_HUGEPAGE` (`hg`).
    pub(crate) hugepage: bool,
    /// `MADV_NOHUGEPAGE` (`nh`).
    pub(crate) nohugepage: bool,
    /// `MADV_MERGEABLE` (`mg`).
    pub(crate) mergeable: bool,
    /// `mlock` (`lo`): a swap would leave the new pages unlocked.
    pub(crate) locked: bool,
    /// Registered with userfaultfd (`um`, `uw`, `ui`): the registration does not follow the
    /// new memory.
    pub(crate) userfaultfd: bool,
    /// A PFN or I/O mapping (`pf`, `io`: device memory), which the kernel cannot pin: the
    /// copy reads it with the CPU.
    pub(crate) pfnmap: bool,
}

impl VmaFlags {
    fn parse(line: &str) -> Self {
        let mut f = VmaFlags::default();
        for w in line.split_whitespace() {
            match w {
                "nr" => f.noreserve = true,
                "dc" => f.dontfork = true,
                "dd" => f.dontdump = true,
                "hg" => f.hugepage = true,
                "nh" => f.nohugepage = true,
                "mg" => f.mergeable = true,
                "lo" => f.locked = true,
                "um" | "uw" | "ui" => f.userfaultfd = true,
                "pf" | "io" => f.pfnmap = true,
                _ => {}
            }
        }
        f
    }
}

/// Why the mappings of a range cannot be described by one [`VmaFlags`].
#[derive(Debug)]
pub(crate) enum VmaError {
    /// Reading `/proc/self/smaps` failed.
    Io(io::Error),
    /// Part of the range is not mapped.
    Hole,
    /// The range spans mappings whose properties differ.
    Mixed,
}

pub(crate) fn range_of(header: &str) -> Option<(u64, u64)> {
    let r = header.split_whitespace().next()?;
    let (s, e) = r.split_once('-')?;
    Some((
        u64::from_str_radix(s, 16).ok()?,
        u64::from_str_radix(e, 16).ok()?,
    ))
}

/// The common properties of the mappings of `[addr, addr + len)`, read from `smaps` (`smaps` is
/// `/proc/self/smaps`; reading stops after the range, so later mappings cost nothing).
pub(crate) fn flags_of(smaps: impl BufRead, addr: u64, len: u64) -> Result<VmaFlags, VmaError> {
    let end = addr + len;
    let mut next = addr; // first byte not yet seen mapped
    let mut current: Option<(u64, u64)> = None;
    let mut found: Option<VmaFlags> = None;
    for line in smaps.lines() {
        let line = line.map_err(VmaError::Io)?;
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            let Some((s, e)) = current.take() else {
                continue;
            };
            if e <= addr || s >= end {
                continue;
            }
            if s > next {
                return Err(VmaError::Hole);
            }
            let f = VmaFlags::parse(flags);
            if found.is_some_and(|g| g != f) {
                return Err(VmaError::Mixed);
            }
            found = Some(f);
            next = e;
            if next >= end {
                break;
            }
        } else if let Some((s, e)) = range_of(&line) {
            if s >= end {
                break;
            }
            current = Some((s, e));
        }
    }
    match found {
        Some(f) if next >= end => Ok(f),
        _ => Err(VmaError::Hole),
    }
}

/// [`flags_of`] this process's mappings.
pub(crate) fn flags_of_self(addr: u64, len: u64) -> Result<VmaFlags, VmaError> {
    let f = File::open("/proc/self/smaps").map_err(VmaError::Io)?;
    flags_of(BufReader::new(f), addr, len)
}

/// Whether the memory policy at `addr` is the default one (no `mbind`): a swap's new memory
/// would get the default policy. `true` on kernels without NUMA.
pub(crate) fn default_mempolicy(addr: u64) -> io::Result<bool> {
    let mut mode: libc::c_int = -1;
    // SAFETY: get_mempolicy(MPOL_F_ADDR) writes the mode of the policy at `addr` to `mode`
    // and, with a null node mask of size 0, nothing else.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_mempolicy,
            &raw mut mode,
            std::ptr::null_mut::<libc::c_ulong>(),
            0usize,
            usize::try_from(addr).map_err(|_| io::Error::from_raw_os_error(libc::EFAULT))?,
            2usize, // MPOL_F_ADDR
        )
    };
    if rc == 0 {
        return Ok(mode == 0); // MPOL_DEFAULT
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOSYS) {
        return Ok(true);
    }
    Err(e)
}

/// The number of mappings of this process, and the limit (`vm.max_map_count`).
pub(crate) fn map_count() -> Option<(usize, usize)> {
    let maps = std::fs::read("/proc/self/maps").ok()?;
    #[allow(clippy::naive_bytecount)] // a few KiB, once per failed swap
    let n = maps.iter().filter(|&&b| b == b'\n').count();
    let max = std::fs::read_to_string("/proc/sys/vm/max_map_count").ok()?;
    Some((n, max.trim().parse().ok()?))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The range of an smaps header line.
    pub(crate) fn header(line: &str) -> Option<(u64, u64)> {
        range_of(line)
    }

    const SMAPS: &str = "\
00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/x
Size:                328 kB
VmFlags: rd ex mr mw me dw
7f0000000000-7f0000200000 rw-p 00000000 00:00 0
Size:               2048 kB
VmFlags: rd wr mr mw me ac nr hg dc
7f0000200000-7f0000400000 rw-p 00000000 00:00 0
Size:               2048 kB
VmFlags: rd wr mr mw me ac nr hg dc
7f0000400000-7f0000600000 rw-p 00000000 00:00 0
Size:               2048 kB
VmFlags: rd wr mr mw me ac lo
7f0000800000-7f0000a00000 rw-p 00000000 00:00 0
VmFlags: rd wr mr mw me ac um
";

    fn at(addr: u64, len: u64) -> Result<VmaFlags, VmaError> {
        flags_of(SMAPS.as_bytes(), addr, len)
    }

    #[test]
    fn flags_of_one_and_of_equal_neighbouring_mappings() {
        let f = at(0x7f00_0010_0000, 0x1000).unwrap();
        assert!(f.noreserve && f.hugepage && f.dontfork);
        assert!(!f.locked && !f.dontdump && !f.userfaultfd);
        assert_eq!(at(0x7f00_0000_0000, 0x40_0000).unwrap(), f);
        assert!(at(0x7f00_0040_0000, 0x1000).unwrap().locked);
        assert!(at(0x7f00_0080_0000, 0x1000).unwrap().userfaultfd);
    }

    #[test]
    fn holes_and_mixed_mappings_are_refused() {
        assert!(matches!(
            at(0x7f00_0050_0000, 0x20_0000),
            Err(VmaError::Hole)
        ));
        assert!(matches!(at(0x1000, 0x1000), Err(VmaError::Hole)));
        assert!(matches!(
            at(0x7f00_0000_0000, 0x60_0000),
            Err(VmaError::Mixed)
        ));
        assert!(matches!(
            at(0x7f00_0090_0000, 0x20_0000),
            Err(VmaError::Hole)
        ));
    }

    #[test]
    fn this_process_has_mappings_under_the_limit() {
        let (n, max) = map_count().unwrap();
        assert!(n > 0 && n < max, "{n} of {max}");
        let x = 0u64;
        let f = flags_of_self(&x as *const u64 as u64 & !0xfff, 0x1000).unwrap();
        assert!(!f.userfaultfd);
        assert!(default_mempolicy(&x as *const u64 as u64).unwrap());
    }
}
