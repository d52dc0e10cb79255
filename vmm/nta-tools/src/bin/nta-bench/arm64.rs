// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The benchmark itself (arm64 only).
//!
//! Every point boots a fresh VM, so its stage 2 starts empty, and the guest times its own work
//! with CNTVCT_EL0. Under QEMU's `-icount` the counter follows the number of instructions the
//! emulated machine executed (guest, KVM at EL2 and this VMM alike), so its deltas are stable
//! from run to run where wall-clock time under TCG is not.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::mem::MaybeUninit;
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::Instant;

use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use nta_vmm::kvm::{self, enable_mte, enable_mte_perm, Event, KernelPolicy};
use nta_vmm::{Backing, Policy, Resolution, Resolver};

use crate::options::{parse_args, Options, USAGE};
use crate::smaps::{file_pmd_mapped_kib, kib_value};
use nta_tools::common::{
    block, le, setup_vcpu, two_slots, Mapping, NoHostUsers, IMAGE_BASE, MMIO_BASE, RAM_BASE,
};

const PAGE: usize = 4096;
const HUGE: usize = 2 << 20;
/// Below 2 MiB, so that no transparent huge page backs it and the memory the guests add is
/// the images'.
const RAM_SIZE: usize = 1 << 20;
/// `MAP_HUGE_2MB`: log2(2 MiB) << `MAP_HUGE_SHIFT`.
const MAP_HUGE_2MB: i32 = 21 << 26;

const OP_LOAD: u64 = 1;
const OP_TAG: u64 = 2;

/// Progress, to the console (where the harness shows it while the run goes on) and stderr.
fn progress(msg: &str) {
    eprintln!("[nta-bench] {msg}");
    if let Ok(mut c) = OpenOptions::new().write(true).open("/dev/console") {
        let _ = writeln!(c, "[nta-bench] {msg}");
    }
}

fn row(q: &str, case: &str, param: u64, rep: usize, metric: &str, value: f64) {
    println!("csv,{q},{case},{param},{rep},{metric},{value:.1}");
}

/// MTE for the VM: off, on, or on with `KVM_CAP_ARM_MTE_PERM` and a policy.
#[derive(Clone, Copy, PartialEq)]
enum Mte {
    Off,
    Tags,
    Perm(KernelPolicy),
}

/// What backs the measured memslot of a fault-in case.
#[derive(Clone, Copy, PartialEq)]
enum Region {
    /// The page-cache file, shared.
    File,
    /// A file in the huge dir, shared, 2 MiB-aligned and PMD-mapped on the host.
    File2m,
    /// Anonymous memory in 4 KiB pages.
    Anon4k,
    /// 2 MiB hugetlb pages (stage-2 block mappings).
    Hugetlb,
}

/// What one guest operation measured.
#[derive(Default, Debug)]
struct OpResult {
    ticks: u64,
    aborts: u64,
    sum: u64,
    tag_exits: u64,
    swaps: u64,
}

/// A booted guest, waiting for its next operation.
struct Guest {
    _vm: VmFd,
    vcpu: VcpuFd,
    _ram: Mapping,
    resolver: Resolver,
    freq: u64,
}

impl Guest {
    /// Creates a VM with `region` at `IMAGE_BASE` and runs it to its first instruction.
    fn boot(
        kvm: &Kvm,
        prog: &[u8],
        mte: Mte,
        region: &Mapping,
        backing: Backing,
    ) -> Result<Self, String> {
        Self::boot_chunked(kvm, prog, mte, region, backing, PAGE as u64)
    }

    /// As `boot`, make-taggable swapping `chunk` bytes per tag-access exit.
    fn boot_chunked(
        kvm: &Kvm,
        prog: &[u8],
        mte: Mte,
        region: &Mapping,
        backing: Backing,
        chunk: u64,
    ) -> Result<Self, String> {
        let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
        match mte {
            Mte::Off => {}
            Mte::Tags => enable_mte(&vm).map_err(|e| e.to_string())?,
            Mte::Perm(p) => enable_mte_perm(&vm, p).map_err(|e| e.to_string())?,
        }
        let mut ram = Mapping::anon(RAM_SIZE, 0)?;
        // Normal memory is Tagged (attr 1) for an MTE guest, plain Write-Back (attr 2) if not.
        let attr = if mte == Mte::Off { 2 } else { 1 };
        let blocks = [block(0, 0), block(RAM_BASE, attr), block(IMAGE_BASE, attr)];
        let vcpu = setup_vcpu(&vm, prog, &mut ram, &blocks)?;
        let mem = two_slots(&vm, &ram, region, backing, matches!(mte, Mte::Perm(_)))?;
        // The benchmark's files are its own: it swaps them for private memory knowingly.
        let resolver = Resolver::builder(Policy::MakeTaggable)
            .chunk(chunk)
            .allow_unshare(true)
            .build(mem)
            .map_err(|e| e.to_string())?;
        let mut g = Self {
            _vm: vm,
            vcpu,
            _ram: ram,
            resolver,
            freq: 0,
        };
        match g.vcpu.run() {
            Ok(VcpuExit::MmioWrite(a, d)) if a == MMIO_BASE => g.freq = le(d),
            other => return Err(format!("guest did not start: {other:?}")),
        }
        if g.freq == 0 {
            return Err("the guest reads CNTFRQ_EL0 = 0".into());
        }
        Ok(g)
    }

    /// Runs one operation over `pages` pages from `base`, resolving tag-access exits by
    /// swapping the page for tag-capable memory.
    fn op(&mut self, op: u64, base: u64, pages: u64) -> Result<OpResult, String> {
        let mut r = OpResult::default();
        let max_exits = 16 + 2 * pages;
        let mut exits = 0;
        let end = kvm::run_vcpu(&mut self.vcpu, Some(&self.resolver), &NoHostUsers, |ev| {
            exits += 1;
            if exits > max_exits {
                return ControlFlow::Break(Err(format!(
                    "operation {op} did not finish in {max_exits} exits"
                )));
            }
            match ev {
                Event::Exit(VcpuExit::MmioRead(addr, data)) => {
                    let v = match addr.wrapping_sub(MMIO_BASE) {
                        0x08 => op,
                        0x10 => base,
                        0x18 => pages,
                        off => {
                            return ControlFlow::Break(Err(format!(
                                "guest read unknown MMIO offset {off:#x}"
                            )))
                        }
                    };
                    let n = data.len().min(8);
                    data[..n].copy_from_slice(&v.to_le_bytes()[..n]);
                }
                Event::Exit(VcpuExit::MmioWrite(addr, data)) => {
                    match addr.wrapping_sub(MMIO_BASE) {
                        0x20 => r.ticks = le(data),
                        0x28 => r.aborts = le(data),
                        0x30 => {
                            r.sum = le(data);
                            return ControlFlow::Break(Ok(()));
                        }
                        0x38 => {
                            return ControlFlow::Break(Err(format!(
                                "guest exception, ESR_EL1 {:#x}",
                                le(data)
                            )))
                        }
                        off => {
                            return ControlFlow::Break(Err(format!(
                                "guest wrote unknown MMIO offset {off:#x}"
                            )))
                        }
                    }
                }
                Event::TagAccess { resolution, .. } => {
                    if matches!(resolution, Resolution::Swapped(_)) {
                        r.swaps += 1;
                    }
                    r.tag_exits += 1;
                }
                Event::Interrupted | Event::SwapRetry => {}
                Event::Exit(other) => {
                    return ControlFlow::Break(Err(format!("unexpected exit {other:?}")))
                }
                _ => {}
            }
            ControlFlow::Continue(())
        });
        match end {
            Ok(Ok(())) => Ok(r),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(e.to_string()),
        }
    }

    fn ns(&self, ticks: u64) -> f64 {
        ticks as f64 * 1e9 / self.freq as f64
    }
}

/// A file of `size` bytes whose page `i` starts with the word `i + 1`.
fn make_file(path: &str, size: usize) -> Result<File, String> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))?;
    let mut page = vec![0u8; PAGE];
    for i in 0..size / PAGE {
        page[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        f.write_all(&page).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(f)
}

/// The sum the guest's load operation must see over the first `pages` pages of such a file.
fn file_sum(pages: u64) -> u64 {
    pages * (pages + 1) / 2
}

fn map_file(f: &File, len: usize, flags: i32) -> Result<Mapping, String> {
    Mapping::new(
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED | flags,
        f.as_raw_fd(),
    )
}

/// Advice on the whole of `m`: only advice that changes how it is backed, never what it holds
/// (`MADV_HUGEPAGE`, `MADV_NOHUGEPAGE`, `MADV_POPULATE_READ`, `MADV_POPULATE_WRITE`).
fn advise(m: &Mapping, advice: i32, what: &str) -> Result<(), String> {
    debug_assert!([
        libc::MADV_HUGEPAGE,
        libc::MADV_NOHUGEPAGE,
        libc::MADV_POPULATE_READ,
        libc::MADV_POPULATE_WRITE,
    ]
    .contains(&advice));
    // SAFETY: `m` owns the range, mapped while it lives, so the advice reaches no one else's
    // memory; and none of these advices discards or changes memory contents, so other threads
    // using the range see the same data throughout.
    if unsafe { libc::madvise(m.addr.cast(), m.len, advice) } != 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Anonymous memory in 4 KiB pages (no transparent huge pages), populated.
fn anon_4k(len: usize) -> Result<Mapping, String> {
    let m = Mapping::anon(len, 0)?;
    advise(&m, libc::MADV_NOHUGEPAGE, "MADV_NOHUGEPAGE")?;
    advise(&m, libc::MADV_POPULATE_WRITE, "MADV_POPULATE_WRITE")?;
    Ok(m)
}

/// A `MAP_SHARED` mapping of the first `len` bytes of `f` at a 2 MiB-aligned address, advised
/// `MADV_HUGEPAGE` before anything faults it in. Then a fault reads the file ahead in PMD-sized
/// folios (on a filesystem with large folios, if they are not cached yet) and maps them with
/// PMDs; and KVM, the memslot's guest address being 2 MiB-aligned as well, maps those with
/// 2 MiB stage-2 blocks.
///
/// The alignment is made here rather than left to the filesystem's get_unmapped_area: the file
/// is mapped over the aligned part of a larger reservation, whose ends are given back.
fn map_file_2m(f: &File, len: usize, prot: i32) -> Result<Mapping, String> {
    let span = len + HUGE;
    // SAFETY: a fresh inaccessible anonymous mapping at an address of the kernel's choosing,
    // so it overlaps no memory anyone uses.
    let res = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if res == libc::MAP_FAILED {
        return Err(format!(
            "mmap of {span} bytes (reservation): {}",
            std::io::Error::last_os_error()
        ));
    }
    let res = res as usize;
    let start = res.next_multiple_of(HUGE);
    // SAFETY: [start, start + len) lies within the reservation, which this function mapped and
    // has told no one about: no other thread can have mapped anything there or hold a reference
    // into it, so MAP_FIXED replaces only that inaccessible memory.
    let addr = unsafe {
        libc::mmap(
            start as *mut libc::c_void,
            len,
            prot,
            libc::MAP_SHARED | libc::MAP_FIXED,
            f.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        // The reservation is left mapped (a leak on the way to an error): a failed MAP_FIXED may
        // have unmapped part of it, and another thread could have mapped something there since.
        return Err(format!(
            "mmap of {len} bytes at {start:#x}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let m = Mapping {
        addr: addr.cast(),
        len,
        prot,
    };
    for (at, n) in [
        (res, start - res),
        (start + len, res + span - (start + len)),
    ] {
        if n > 0 {
            // SAFETY: the head or tail of the reservation around the file mapping: still this
            // function's alone (see above), never handed out, and unmapped once.
            unsafe { libc::munmap(at as *mut libc::c_void, n) };
        }
    }
    check(
        &format!(
            "the file mapping at {:#x} is 2 MiB-aligned",
            m.addr as usize
        ),
        m.addr as usize % HUGE == 0,
    )?;
    advise(&m, libc::MADV_HUGEPAGE, "MADV_HUGEPAGE")?;
    Ok(m)
}

/// How many of the `size / PAGE` pages of `f` are in the page cache.
fn cached_pages(f: &File, path: &str, size: usize) -> Result<usize, String> {
    let m = Mapping::new(size, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd())?;
    let mut vec = vec![0u8; size.div_ceil(PAGE)];
    // SAFETY: `m` is mapped while it lives and `vec` has one byte per page of it; mincore()
    // writes only into `vec`, which no other thread knows of, and reads no memory.
    if unsafe { libc::mincore(m.addr.cast(), m.len, vec.as_mut_ptr()) } != 0 {
        return Err(format!(
            "{path}: mincore: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(vec.iter().filter(|&&v| v & 1 != 0).count())
}

/// Writes `f` (`size` bytes) back and drops its page cache, so that the first fault of a
/// `MADV_HUGEPAGE` mapping of it reads it ahead in PMD-sized folios: the 4 KiB writes that
/// made it left small ones. Checks that none of it stayed cached.
fn drop_page_cache(f: &File, path: &str, size: usize) -> Result<(), String> {
    f.sync_all().map_err(|e| format!("{path}: fsync: {e}"))?;
    // SAFETY: advice about the file `f` keeps open; it touches no memory of this process.
    let e = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if e != 0 {
        return Err(format!(
            "{path}: posix_fadvise(POSIX_FADV_DONTNEED): {}",
            std::io::Error::from_raw_os_error(e)
        ));
    }
    let cached = cached_pages(f, path, size)?;
    check(
        &format!(
            "{path}: page cache dropped after writing it ({cached} of {} pages still cached)",
            size / PAGE
        ),
        cached == 0,
    )
}

/// Magic numbers (statfs' `f_type`) of filesystems the block-mapped cases cannot use, and why.
const NOT_FOR_BLOCKS: [(u32, &str); 3] = [
    (
        0x0102_1994,
        "tmpfs, which is shmem and tag-capable: KVM would not map it NoTagAccess",
    ),
    (
        0x8584_58f6,
        "ramfs, whose page cache is order-0: the host cannot map it with PMDs",
    ),
    (
        0x9584_58f6,
        "hugetlbfs, which is tag-capable: KVM would not map it NoTagAccess",
    ),
];

/// What `--huge-dir` needs, for the messages of the checks.
const HUGE_DIR_NEEDS: &str = "a filesystem whose page cache the host maps with PMDs: large \
    folios (PMD-sized page-cache folios, as ext4 and xfs have) and a kernel with \
    CONFIG_TRANSPARENT_HUGEPAGE";

/// Checks that `dir` (`--huge-dir`) is a directory on a filesystem the block-mapped cases can
/// use, as far as its type tells; every point then checks the host's PMDs themselves.
fn check_huge_dir(dir: &str) -> Result<(), String> {
    let bad = |why: String| {
        Err(format!(
            "--huge-dir {dir}: {why}; it must be {HUGE_DIR_NEEDS}"
        ))
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return bad("not a directory".into()),
        Err(e) => return bad(e.to_string()),
    }
    let c = CString::new(dir).map_err(|_| format!("--huge-dir {dir}: has a NUL byte"))?;
    let mut st = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` room for one struct statfs, both local and
    // alive for the call, which reads `c` and writes only `st`.
    if unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return bad(format!("statfs: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: statfs() succeeded, so it filled `st` in.
    let magic = unsafe { st.assume_init() }.f_type as u32;
    match NOT_FOR_BLOCKS.iter().find(|(m, _)| *m == magic) {
        Some((_, why)) => bad(format!("is on {why}")),
        None => Ok(()),
    }
}

/// Checks that the host maps `m`, a mapping of `path` in the huge dir `huge_dir`, with PMDs
/// (smaps' `FilePmdMapped:`) in every whole 2 MiB of it, so that KVM can map those with 2 MiB
/// stage-2 blocks.
fn check_pmd_mapped(m: &Mapping, path: &str, huge_dir: &str) -> Result<(), String> {
    const SMAPS: &str = "/proc/self/smaps";
    let smaps = File::open(SMAPS).map_err(|e| format!("{SMAPS}: {e}"))?;
    let start = m.addr as u64;
    let kib = file_pmd_mapped_kib(BufReader::new(smaps), start, start + m.len as u64)
        .map_err(|e| format!("{SMAPS}, mapping of {path}: {e}"))?;
    let want = (m.len - m.len % HUGE) as u64 / 1024;
    check(
        &format!(
            "the host maps {want} KiB of {path} with PMDs (FilePmdMapped: {kib} kB): \
             --huge-dir {huge_dir} must be {HUGE_DIR_NEEDS}, and the file's first read \
             must be through the MADV_HUGEPAGE mapping (another caches it in small folios)"
        ),
        kib == want,
    )
}

fn check(what: &str, good: bool) -> Result<(), String> {
    if good {
        Ok(())
    } else {
        Err(format!("self-check failed: {what}"))
    }
}

struct Bench {
    o: Options,
    kvm: Kvm,
    prog: Vec<u8>,
}

impl Bench {
    /// Question 1: per-page cost of stage-2 faults, by backing and MTE.
    fn fault(&self) -> Result<(), String> {
        let sizes: &[u64] = if self.o.quick {
            &[64]
        } else {
            &[64, 256, 1024, 4096, 16384]
        };
        let max = *sizes.iter().max().unwrap_or(&64) as usize * PAGE;
        let path = format!("{}/nta-bench-fault.img", self.o.dir);
        let file = make_file(&path, max)?;
        // Whole 2 MiB folios: the block-mapped file case maps its pages rounded up to 2 MiB.
        let max_2m = max.next_multiple_of(HUGE);
        let path_2m = format!("{}/nta-bench-fault-2m.img", self.o.huge_dir);
        let file_2m = make_file(&path_2m, max_2m)?;
        drop_page_cache(&file_2m, &path_2m, max_2m)?;
        ensure_hugepages(max.div_ceil(HUGE))?;
        let cases = [
            ("nta-file", Mte::Perm(KernelPolicy::Exit), Region::File),
            ("tagged-anon", Mte::Tags, Region::Anon4k),
            ("file-mte-off", Mte::Off, Region::File),
            ("nta-file-2m", Mte::Perm(KernelPolicy::Exit), Region::File2m),
            ("tagged-hugetlb", Mte::Tags, Region::Hugetlb),
            ("hugetlb-mte-off", Mte::Off, Region::Hugetlb),
        ];
        for &n in sizes {
            for rep in 0..self.o.reps {
                for (case, mte, kind) in cases {
                    progress(&format!("fault: {case}, {n} pages, rep {rep}"));
                    let len = n as usize * PAGE;
                    // Populated on the host, so only stage 2 is measured.
                    let (region, backing) = match kind {
                        Region::File => (
                            map_file(&file, len, libc::MAP_POPULATE)?,
                            Backing::SharedFile(path.clone().into()),
                        ),
                        Region::File2m => {
                            // MADV_HUGEPAGE (in map_file_2m) before the populating faults.
                            let m = map_file_2m(
                                &file_2m,
                                len.next_multiple_of(HUGE),
                                libc::PROT_READ | libc::PROT_WRITE,
                            )?;
                            advise(&m, libc::MADV_POPULATE_READ, "MADV_POPULATE_READ")?;
                            check_pmd_mapped(&m, &path_2m, &self.o.huge_dir)?;
                            (m, Backing::SharedFile(path_2m.clone().into()))
                        }
                        Region::Anon4k => (anon_4k(len)?, Backing::Anonymous),
                        Region::Hugetlb => (
                            Mapping::anon(
                                len.next_multiple_of(HUGE),
                                libc::MAP_HUGETLB | MAP_HUGE_2MB | libc::MAP_POPULATE,
                            )
                            .map_err(|e| format!("{e} (2 MiB hugetlb pages reserved?)"))?,
                            Backing::Anonymous,
                        ),
                    };
                    let mut g = Guest::boot(&self.kvm, &self.prog, mte, &region, backing)?;
                    let r = g.op(OP_LOAD, IMAGE_BASE, n)?;
                    check(&format!("{case}: no tag exits or aborts"), {
                        r.tag_exits == 0 && r.aborts == 0
                    })?;
                    if matches!(kind, Region::File | Region::File2m) {
                        check(&format!("{case}: the guest read the file"), {
                            r.sum == file_sum(n)
                        })?;
                    }
                    row(
                        "fault",
                        case,
                        n,
                        rep,
                        "ns_per_page",
                        g.ns(r.ticks) / n as f64,
                    );
                }
            }
        }
        drop(file);
        drop(file_2m);
        std::fs::remove_file(&path_2m).map_err(|e| format!("{path_2m}: {e}"))?;
        std::fs::remove_file(&path).map_err(|e| format!("{path}: {e}"))
    }

    /// Question 3: one tag access to NoTagAccess memory, by policy, against an ordinary fault:
    /// make-taggable one 4 KiB page per exit, make-taggable a 2 MiB chunk per exit (the guest
    /// tags a whole 2 MiB region page by page: one exit, then ordinary faults), and KVM's SEA.
    fn tag(&self) -> Result<(), String> {
        let n: u64 = if self.o.quick { 16 } else { 256 };
        let path = format!("{}/nta-bench-tag.img", self.o.dir);
        let huge = (HUGE / PAGE) as u64;
        for rep in 0..self.o.reps {
            for (case, policy, pages, chunk) in [
                ("exit-make-taggable", KernelPolicy::Exit, n, PAGE as u64),
                (
                    "exit-make-taggable-2m",
                    KernelPolicy::Exit,
                    huge,
                    HUGE as u64,
                ),
                ("sea", KernelPolicy::Sea, n, PAGE as u64),
            ] {
                progress(&format!("tag: {case}, {pages} pages, rep {rep}"));
                let len = pages as usize * PAGE;
                let file = make_file(&path, len)?;
                let region = map_file(&file, len, libc::MAP_POPULATE)?;
                let backing = Backing::SharedFile(path.clone().into());
                let mte = Mte::Perm(policy);
                let mut g =
                    Guest::boot_chunked(&self.kvm, &self.prog, mte, &region, backing, chunk)?;
                let fault = g.op(OP_LOAD, IMAGE_BASE, pages)?;
                check("the guest read the file", fault.sum == file_sum(pages))?;
                let tag = g.op(OP_TAG, IMAGE_BASE, pages)?;
                let again = g.op(OP_TAG, IMAGE_BASE, pages)?;
                if policy == KernelPolicy::Exit {
                    let chunks = pages * PAGE as u64 / chunk;
                    check(&format!("{case}: one exit and swap per chunk, no abort"), {
                        tag.tag_exits == chunks && tag.swaps == chunks && tag.aborts == 0
                    })?;
                    check("swapped pages take tags without exits", {
                        again.tag_exits == 0 && again.aborts == 0
                    })?;
                    let after = g.op(OP_LOAD, IMAGE_BASE, pages)?;
                    check("the swapped memory holds the file's data", {
                        after.sum == file_sum(pages)
                    })?;
                } else {
                    check("one SEA per page, no exit", {
                        tag.aborts == pages && tag.tag_exits == 0
                    })?;
                    check("and again", again.aborts == pages && again.tag_exits == 0)?;
                }
                let per = |r: &OpResult| g.ns(r.ticks) / pages as f64;
                row("tag", case, pages, rep, "fault_ns_per_page", per(&fault));
                row("tag", case, pages, rep, "tag_ns_per_page", per(&tag));
                row("tag", case, pages, rep, "again_ns_per_page", per(&again));
            }
        }
        std::fs::remove_file(&path).map_err(|e| format!("{path}: {e}"))
    }

    /// Question 2: start-up and memory for two guests given the same image.
    fn startup(&self) -> Result<(), String> {
        let sizes: &[u64] = if self.o.quick {
            &[1]
        } else {
            &[1, 4, 16, 64, 256]
        };
        for &mib in sizes {
            let size = (mib as usize) << 20;
            let pages = (size / PAGE) as u64;
            let path = format!("{}/nta-bench-image-{mib}M.img", self.o.dir);
            make_file(&path, size)?;
            // The first map-2m guest's faults read it ahead in PMD-sized folios.
            let path_2m = format!("{}/nta-bench-image-{mib}M.img", self.o.huge_dir);
            drop_page_cache(&make_file(&path_2m, size)?, &path_2m, size)?;
            for rep in 0..self.o.reps {
                for mode in ["copy", "map", "map-2m"] {
                    progress(&format!("startup: {mode}, {mib} MiB, rep {rep}"));
                    let before = kib_field("/proc/self/status", "RssAnon:")?;
                    let mut guests = Vec::new();
                    for g in 0..2 {
                        let t0 = Instant::now();
                        let image = if mode == "map-2m" { &path_2m } else { &path };
                        let mut f = File::open(image).map_err(|e| format!("{image}: {e}"))?;
                        let (region, backing, mte) = match mode {
                            "copy" => {
                                let mut m = Mapping::anon(size, 0)?;
                                f.read_exact(m.as_mut_slice())
                                    .map_err(|e| format!("{image}: {e}"))?;
                                (m, Backing::Anonymous, Mte::Tags)
                            }
                            "map" => {
                                let m = Mapping::new(size, libc::PROT_READ, libc::MAP_SHARED, {
                                    f.as_raw_fd()
                                })?;
                                let b = Backing::SharedFile(image.clone().into());
                                (m, b, Mte::Perm(KernelPolicy::Exit))
                            }
                            // Not populated: as with map, the guest's faults populate the host.
                            _ => {
                                let m = map_file_2m(&f, size, libc::PROT_READ)?;
                                let b = Backing::SharedFile(image.clone().into());
                                (m, b, Mte::Perm(KernelPolicy::Exit))
                            }
                        };
                        let mut guest = Guest::boot(&self.kvm, &self.prog, mte, &region, backing)?;
                        let first = t0.elapsed().as_secs_f64() * 1e3;
                        let r = guest.op(OP_LOAD, IMAGE_BASE, pages)?;
                        check("the guest read the whole image", r.sum == file_sum(pages))?;
                        check(
                            &format!("{mode}: no tag exits or aborts"),
                            r.tag_exits == 0 && r.aborts == 0,
                        )?;
                        // An image below 2 MiB has no PMD-sized folio to map.
                        if mode == "map-2m" && size >= HUGE {
                            check_pmd_mapped(&region, image, &self.o.huge_dir)?;
                        }
                        let idx = rep * 2 + g;
                        row("startup", mode, mib, idx, "first_insn_ms", first);
                        row(
                            "startup",
                            mode,
                            mib,
                            idx,
                            "touch_ms",
                            guest.ns(r.ticks) / 1e6,
                        );
                        guests.push((guest, region));
                    }
                    // The copies are anonymous memory; the file's page cache (D) is shared,
                    // though RssFile counts it once per mapping.
                    let anon = kib_field("/proc/self/status", "RssAnon:")?.saturating_sub(before);
                    row("startup", mode, mib, rep, "anon_mib", anon as f64 / 1024.0);
                    let file = kib_field("/proc/self/status", "RssFile:")?;
                    row(
                        "startup",
                        mode,
                        mib,
                        rep,
                        "rss_file_mib",
                        file as f64 / 1024.0,
                    );
                }
            }
            std::fs::remove_file(&path).map_err(|e| format!("{path}: {e}"))?;
            std::fs::remove_file(&path_2m).map_err(|e| format!("{path_2m}: {e}"))?;
        }
        Ok(())
    }
}

const NR_HUGEPAGES: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

/// Reserves `count` free 2 MiB hugetlb pages for the block-mapping cases, if not there yet.
fn ensure_hugepages(count: usize) -> Result<(), String> {
    let read = || -> Result<usize, String> {
        let s =
            std::fs::read_to_string(NR_HUGEPAGES).map_err(|e| format!("{NR_HUGEPAGES}: {e}"))?;
        s.trim()
            .parse()
            .map_err(|_| format!("{NR_HUGEPAGES}: '{}'", s.trim()))
    };
    if read()? >= count {
        return Ok(());
    }
    progress(&format!("reserving {count} hugetlb pages of 2 MiB"));
    std::fs::write(NR_HUGEPAGES, count.to_string()).map_err(|e| format!("{NR_HUGEPAGES}: {e}"))?;
    let got = read()?;
    check(
        &format!("{count} hugetlb pages of 2 MiB reserved (got {got})"),
        got >= count,
    )
}

/// A "NAME: N kB" field of a /proc file, in KiB.
fn kib_field(path: &str, name: &str) -> Result<u64, String> {
    let s = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    s.lines()
        .find_map(|l| kib_value(l, name))
        .ok_or(format!("{path} has no {name}"))
}

fn run(o: Options) -> Result<(), String> {
    let prog = std::fs::read(&o.guest).map_err(|e| format!("{}: {e}", o.guest))?;
    let kvm = Kvm::new().map_err(|e| format!("/dev/kvm: {e}"))?;
    if kvm.check_extension_raw(nta_vmm::uapi::KVM_CAP_ARM_MTE_PERM.into()) <= 0 {
        return Err("this host does not offer KVM_CAP_ARM_MTE_PERM".into());
    }
    let b = Bench { o, kvm, prog };
    let only = b.o.only.clone();
    let want = |q: &str| only.as_deref().is_none_or(|o| o == q);
    if want("fault") || want("startup") {
        check_huge_dir(&b.o.huge_dir)?;
    }
    println!("csv,question,case,param,rep,metric,value");
    if want("fault") {
        b.fault()?;
    }
    if want("tag") {
        b.tag()?;
    }
    if want("startup") {
        b.startup()?;
    }
    Ok(())
}

pub fn main() -> ExitCode {
    let o = match parse_args(std::env::args().skip(1)) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("nta-bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let t0 = Instant::now();
    match run(o) {
        Ok(()) => {
            progress(&format!("done in {:.1} s", t0.elapsed().as_secs_f64()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            progress(&format!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}
