// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The microVM (arm64 only): memory, vCPUs, GIC, devices, and the run.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::mem::offset_of;
use std::ops::ControlFlow;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_create_device, kvm_device_attr, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3, kvm_regs,
    kvm_vcpu_init, KVM_ARM_VCPU_POWER_OFF, KVM_ARM_VCPU_PSCI_0_2, KVM_DEV_ARM_VGIC_CTRL_INIT,
    KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_GRP_NR_IRQS,
    KVM_REG_ARM64, KVM_REG_ARM64_SYSREG, KVM_REG_ARM64_SYSREG_CRM_SHIFT,
    KVM_REG_ARM64_SYSREG_CRN_SHIFT, KVM_REG_ARM64_SYSREG_OP0_SHIFT, KVM_REG_ARM64_SYSREG_OP1_SHIFT,
    KVM_REG_ARM64_SYSREG_OP2_SHIFT, KVM_REG_ARM_CORE, KVM_REG_SIZE_U64, KVM_SYSTEM_EVENT_CRASH,
    KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN, KVM_VGIC_V3_ADDR_TYPE_DIST,
    KVM_VGIC_V3_ADDR_TYPE_REDIST,
};
use kvm_ioctls::{DeviceFd, Kvm, VcpuExit, VcpuFd, VmFd};
use linux_loader::loader::{pe::PE, KernelLoader};
use nta_vmm::kvm::{self as ntakvm, Event as RunEvent, KernelPolicy};
use nta_vmm::{
    Error as NtaError, Feature, HostUsers, PauseError, Resolution, Resolver, SwapWindow, Swapped,
    TagMemory,
};
use vm_memory::mmap::{MmapRegionBuilder, MmapRegionError};
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemory, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};

use crate::devices::{Area, Counters, Devices, Irq};
use crate::layout::*;
use crate::options::{ImageLayout, Options, TagPolicy};
use crate::{fdt, image};

/// Why the run could not start or went wrong on the VMM's side.
#[derive(Debug)]
pub enum VmError {
    /// A file given on the command line is missing or unusable (exit status 2).
    BadFile(String),
    /// KVM or the host refused something (exit status 3).
    Host(String),
}

impl std::fmt::Display for VmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmError::BadFile(s) | VmError::Host(s) => f.write_str(s),
        }
    }
}

fn host(what: impl std::fmt::Display) -> VmError {
    VmError::Host(what.to_string())
}

/// How the run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// PSCI SYSTEM_OFF (or SYSTEM_OFF2), with the status the guest wrote, if it wrote one.
    PowerOff(Option<u32>),
    /// PSCI SYSTEM_RESET (Linux's panic=-1 after a crash, or a reboot).
    Reset,
    /// A crash event (KVM_SYSTEM_EVENT_CRASH; KVM/arm64 sends none today).
    Crash,
    /// The VMM stopped the guest.
    Fatal(String),
    Timeout,
}

/// The run's result and figures.
pub struct Report {
    pub end: End,
    pub devices: Arc<Devices>,
    pub off_ms: u64,
    pub memory: Vec<(Area, u64, String)>,
    pub smaps_at_init: Option<Smaps>,
    pub smaps_at_end: Option<Smaps>,
}

/// What `/proc/self/smaps_rollup` says of this process's memory, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Smaps {
    pub rss: u64,
    pub pss: u64,
    pub pss_anon: u64,
    pub pss_file: u64,
}

pub fn smaps() -> Option<Smaps> {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
    };
    Some(Smaps {
        rss: field("Rss:")?,
        pss: field("Pss:")?,
        pss_anon: field("Pss_Anon:").unwrap_or(0),
        pss_file: field("Pss_File:").unwrap_or(0),
    })
}

/// The id of the 64-bit core register at byte `offset` of `struct kvm_regs` (api.rst 4.68).
const fn core_reg(offset: usize) -> u64 {
    KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE as u64 | (offset / 4) as u64
}
const REG_X0: u64 = core_reg(offset_of!(kvm_regs, regs.regs));
const REG_PC: u64 = core_reg(offset_of!(kvm_regs, regs.pc));
/// The id of the 64-bit system register (op0, op1, CRn, CRm, op2).
const fn sys_reg(op0: u64, op1: u64, crn: u64, crm: u64, op2: u64) -> u64 {
    KVM_REG_ARM64
        | KVM_REG_SIZE_U64
        | KVM_REG_ARM64_SYSREG as u64
        | (op0 << KVM_REG_ARM64_SYSREG_OP0_SHIFT)
        | (op1 << KVM_REG_ARM64_SYSREG_OP1_SHIFT)
        | (crn << KVM_REG_ARM64_SYSREG_CRN_SHIFT)
        | (crm << KVM_REG_ARM64_SYSREG_CRM_SHIFT)
        | (op2 << KVM_REG_ARM64_SYSREG_OP2_SHIFT)
}
const REG_MPIDR: u64 = sys_reg(3, 0, 0, 0, 5);
// The ids api.rst gives for these registers.
const _: () = assert!(REG_X0 == 0x6030_0000_0010_0000 && REG_PC == 0x6030_0000_0010_0040);
const _: () = assert!(REG_MPIDR == 0x6030_0000_0013_c005);
/// Interrupts of the GIC: the 32 private ones and 64 SPIs.
const GIC_NR_IRQS: u32 = 96;

/// An error about the file of option `what`, `path`.
fn bad_file(what: &str, path: &Path, e: impl std::fmt::Display) -> VmError {
    VmError::BadFile(format!("{what} {}: {e}", path.display()))
}

fn open(path: &Path, write: bool, what: &str) -> Result<File, VmError> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map_err(|e| VmError::BadFile(format!("{what} {}: {e}", path.display())))
}

/// `e`, if it is about a file, said to be about option `what`'s `path`.
fn about(e: VmError, what: &str, path: &Path) -> VmError {
    match e {
        VmError::BadFile(s) => bad_file(what, path, s),
        e => e,
    }
}

/// Why mapping `size` bytes at `gpa` failed: the host's fault when it is out of memory
/// or the region is anonymous, the file's otherwise (one that cannot be mapped, or is
/// shorter than the mapping).
fn mmap_error(e: MmapRegionError, gpa: u64, size: u64, file: bool) -> VmError {
    let out_of_memory = matches!(&e, MmapRegionError::Mmap(io)
        if io.raw_os_error() == Some(libc::ENOMEM));
    let msg = format!("mmap of {size:#x} bytes for {gpa:#x}: {e}");
    if file && !out_of_memory {
        VmError::BadFile(msg)
    } else {
        host(msg)
    }
}

/// A guest memory region of `size` bytes at `gpa`: anonymous, or `file` mapped with `flags`.
fn region(gpa: u64, size: u64, file: Option<(&File, i32)>) -> Result<GuestRegionMmap, VmError> {
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let mut b = MmapRegionBuilder::new(size as usize).with_mmap_prot(rw);
    b = match file {
        None => b.with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE),
        Some((f, flags)) => {
            let f = f.try_clone().map_err(host)?;
            b.with_file_offset(FileOffset::new(f, 0))
                .with_mmap_flags(flags | libc::MAP_NORESERVE)
        }
    };
    let m = b
        .build()
        .map_err(|e| mmap_error(e, gpa, size, file.is_some()))?;
    GuestRegionMmap::new(m, GuestAddress(gpa))
        .ok_or_else(|| host(format!("region at {gpa:#x} wraps")))
}

fn area_of(r: &GuestRegionMmap) -> Area {
    match r.start_addr().0 {
        PMEM_BASE => Area::Pmem,
        DEVMEM_BASE => Area::Device,
        RAM_BASE if r.file_offset().is_some() => Area::Image,
        _ => Area::Ram,
    }
}

struct Files {
    kernel: File,
    kernel_len: u64,
    header: image::Header,
    initrd: Option<Vec<u8>>,
    pmem: Option<(File, u64)>,
    devmem: Option<File>,
}

fn open_files(o: &Options) -> Result<Files, VmError> {
    let mut kernel = open(&o.kernel, false, "--kernel")?;
    let kernel_len = kernel
        .metadata()
        .map_err(|e| bad_file("--kernel", &o.kernel, e))?
        .len();
    // All of the header, unless the file is shorter (which parse() refuses).
    let mut hdr = Vec::with_capacity(image::HEADER_LEN);
    (&mut kernel)
        .take(image::HEADER_LEN as u64)
        .read_to_end(&mut hdr)
        .map_err(|e| bad_file("--kernel", &o.kernel, e))?;
    let header = image::parse(&hdr, kernel_len)
        .map_err(|e| VmError::BadFile(format!("--kernel {}: {e}", o.kernel.display())))?;
    let initrd = match &o.initrd {
        Some(p) => {
            // At most what RAM could hold, whatever the file claims (a pipe, say).
            let mut data = Vec::new();
            open(p, false, "--initrd")?
                .take(o.mem)
                .read_to_end(&mut data)
                .map_err(|e| bad_file("--initrd", p, e))?;
            if data.len() as u64 >= o.mem {
                return Err(bad_file(
                    "--initrd",
                    p,
                    format!("larger than --mem ({} MiB)", o.mem >> 20),
                ));
            }
            Some(data)
        }
        None => None,
    };
    let pmem = match &o.pmem {
        Some(p) => {
            let f = open(p, true, "--pmem")?;
            let len = f.metadata().map_err(|e| bad_file("--pmem", p, e))?.len();
            if len == 0 || len % (2 << 20) != 0 || len > PMEM_MAX {
                return Err(VmError::BadFile(format!(
                    "--pmem {}: {len} bytes is not a multiple of 2 MiB up to {} GiB",
                    p.display(),
                    PMEM_MAX >> 30
                )));
            }
            Some((f, len))
        }
        None => None,
    };
    let devmem = match &o.devmem {
        Some(p) => {
            let f = open(p, true, "--devmem")?;
            let meta = f.metadata().map_err(|e| bad_file("--devmem", p, e))?;
            if !meta.file_type().is_char_device() {
                return Err(VmError::BadFile(format!(
                    "--devmem {}: not a character device",
                    p.display()
                )));
            }
            Some(f)
        }
        None => None,
    };
    Ok(Files {
        kernel,
        kernel_len,
        header,
        initrd,
        pmem,
        devmem,
    })
}

/// The guest's memory: RAM (its start the Image file in the map layout), pmem, device memory.
fn guest_memory(o: &Options, f: &Files, page: u64) -> Result<GuestMemoryMmap, VmError> {
    let mut regions = Vec::new();
    match o.layout {
        ImageLayout::Copy => regions.push(region(RAM_BASE, o.mem, None)?),
        ImageLayout::Map => {
            if f.header.text_offset != 0 {
                return Err(VmError::BadFile(format!(
                    "--kernel {}: text_offset {:#x}; the map layout needs a kernel that runs \
                     from the start of RAM (text_offset 0, Linux 3.17 and later)",
                    o.kernel.display(),
                    f.header.text_offset
                )));
            }
            // place() checked that the kernel, its BSS included, fits below the device tree.
            let slot = f.kernel_len.div_ceil(page) * page;
            regions.push(
                region(RAM_BASE, slot, Some((&f.kernel, libc::MAP_PRIVATE)))
                    .map_err(|e| about(e, "--kernel", &o.kernel))?,
            );
            regions.push(region(RAM_BASE + slot, o.mem - slot, None)?);
        }
    }
    if let Some((file, len)) = &f.pmem {
        let p = o.pmem.as_deref().unwrap_or(Path::new("?"));
        regions.push(
            region(PMEM_BASE, *len, Some((file, libc::MAP_SHARED)))
                .map_err(|e| about(e, "--pmem", p))?,
        );
    }
    if let Some(file) = &f.devmem {
        let p = o.devmem.as_deref().unwrap_or(Path::new("?"));
        let r =
            region(DEVMEM_BASE, o.devmem_size, Some((file, libc::MAP_SHARED))).map_err(|e| {
                VmError::BadFile(format!(
                    "--devmem {} with --devmem-size {} MiB: {e}",
                    p.display(),
                    o.devmem_size >> 20
                ))
            })?;
        regions.push(r);
    }
    regions.sort_by_key(|r| r.start_addr());
    GuestMemoryMmap::from_regions(regions).map_err(|e| host(format!("guest memory: {e}")))
}

fn describe(r: &GuestRegionMmap) -> String {
    match nta_vmm::Backing::of_mmap_region(r) {
        Ok(b) => b.to_string(),
        Err(e) => format!("? ({e})"),
    }
}

/// Registers every region as the memslot of its area, marking those that cannot hold tags
/// `KVM_MEM_ARM_NOTAGACCESS` (the image, pmem and device memory mapped from their files).
/// `mte_perm`: `KVM_CAP_ARM_MTE_PERM` is enabled.
fn register(vm: &VmFd, mem: &'static GuestMemoryMmap, mte_perm: bool) -> Result<(), VmError> {
    for r in mem.iter() {
        let area = area_of(r);
        let refused = |e: String| {
            host(format!(
                "KVM refused memslot {} ({} at {:#x}, {} MiB, {}): {e}",
                area.slot(),
                area.name(),
                r.start_addr().0,
                r.len() >> 20,
                describe(r)
            ))
        };
        let region =
            nta_vmm::Region::of_mmap(area.slot(), r).map_err(|e| refused(e.to_string()))?;
        // SAFETY: the region is a mapping of this process that is never unmapped: `mem` is
        // leaked (`'static`), and only nta-vmm's swap replaces its pages, in place.
        unsafe { ntakvm::set_memslot(vm, &region, mte_perm, 0) }
            .map_err(|e| refused(e.to_string()))?;
    }
    Ok(())
}

fn mte_error(e: NtaError, o: &Options) -> VmError {
    match e {
        NtaError::Unsupported(Feature::MtePerm) => host(format!(
            "KVM does not offer KVM_CAP_ARM_MTE_PERM (the CPU has no FEAT_MTE_PERM, or the \
             host was booted with arm64.nomteperm): an MTE guest can only have tag-capable \
             memory, so {} is refused. Without FEAT_MTE_PERM, use --image-layout copy \
             without --pmem and --devmem, or --mte off",
            [
                (o.layout == ImageLayout::Map).then_some("the kernel image mapped from its file"),
                o.pmem.as_ref().map(|_| "the pmem region"),
                o.devmem.as_ref().map(|_| "the device memory"),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ")
        )),
        NtaError::Unsupported(Feature::Mte) => {
            host("KVM does not offer MTE (KVM_CAP_ARM_MTE): use --mte off")
        }
        e => host(format!("enabling MTE: {e}")),
    }
}

fn create_vcpus(vm: &VmFd, n: u8) -> Result<(Vec<VcpuFd>, Vec<u64>), VmError> {
    let mut vcpus = Vec::new();
    let mut mpidrs = Vec::new();
    let mut init = kvm_vcpu_init::default();
    vm.get_preferred_target(&mut init)
        .map_err(|e| host(format!("KVM_ARM_PREFERRED_TARGET: {e}")))?;
    init.features[0] |= 1 << KVM_ARM_VCPU_PSCI_0_2;
    for id in 0..n {
        let vcpu = vm
            .create_vcpu(id.into())
            .map_err(|e| host(format!("KVM_CREATE_VCPU({id}): {e}")))?;
        let mut i = init;
        if id > 0 {
            // Secondaries wait for the guest's PSCI CPU_ON, which KVM handles.
            i.features[0] |= 1 << KVM_ARM_VCPU_POWER_OFF;
        }
        vcpu.vcpu_init(&i)
            .map_err(|e| host(format!("KVM_ARM_VCPU_INIT({id}): {e}")))?;
        let mut v = [0u8; 8];
        vcpu.get_one_reg(REG_MPIDR, &mut v)
            .map_err(|e| host(format!("vCPU {id}: reading MPIDR_EL1: {e}")))?;
        mpidrs.push(u64::from_le_bytes(v));
        vcpus.push(vcpu);
    }
    Ok((vcpus, mpidrs))
}

fn gic_attr(gic: &DeviceFd, group: u32, attr: u64, addr: u64, what: &str) -> Result<(), VmError> {
    let a = kvm_device_attr {
        group,
        attr,
        addr,
        flags: 0,
    };
    gic.set_device_attr(&a)
        .map_err(|e| host(format!("GICv3: {what}: {e}")))
}

/// The in-kernel GICv3, once every vCPU exists.
fn create_gic(vm: &VmFd) -> Result<DeviceFd, VmError> {
    let mut dev = kvm_create_device {
        type_: kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3,
        fd: 0,
        flags: 0,
    };
    let gic = vm
        .create_device(&mut dev)
        .map_err(|e| host(format!("KVM_CREATE_DEVICE(GICv3): {e}")))?;
    let dist = GIC_DIST;
    let redist = GIC_REDIST;
    let nr_irqs = GIC_NR_IRQS;
    let grp = KVM_DEV_ARM_VGIC_GRP_ADDR;
    // KVM reads the values through the addresses, during each call.
    let p = |v: &u64| v as *const u64 as u64;
    gic_attr(
        &gic,
        grp,
        KVM_VGIC_V3_ADDR_TYPE_DIST.into(),
        p(&dist),
        "distributor",
    )?;
    gic_attr(
        &gic,
        grp,
        KVM_VGIC_V3_ADDR_TYPE_REDIST.into(),
        p(&redist),
        "redistributors",
    )?;
    let nr = &nr_irqs as *const u32 as u64;
    gic_attr(&gic, KVM_DEV_ARM_VGIC_GRP_NR_IRQS, 0, nr, "interrupts")?;
    gic_attr(
        &gic,
        KVM_DEV_ARM_VGIC_GRP_CTRL,
        KVM_DEV_ARM_VGIC_CTRL_INIT.into(),
        0,
        "init",
    )?;
    Ok(gic)
}

/// Loads the kernel (copy layout), the initrd and the device tree; returns the entry point
/// and the device tree's address.
fn load(
    o: &Options,
    f: &mut Files,
    p: &Placement,
    mem: &GuestMemoryMmap,
    mpidrs: Vec<u64>,
) -> Result<(u64, u64), VmError> {
    if o.layout == ImageLayout::Copy {
        let r = PE::load(mem, Some(GuestAddress(RAM_BASE)), &mut f.kernel, None)
            .map_err(|e| VmError::BadFile(format!("--kernel {}: {e}", o.kernel.display())))?;
        if r.kernel_load.0 != p.kernel {
            return Err(host(format!(
                "linux-loader put the kernel at {:#x}, not {:#x}",
                r.kernel_load.0, p.kernel
            )));
        }
    }
    let mut initrd = None;
    if let (Some(data), Some(at)) = (&f.initrd, p.initrd) {
        mem.write_slice(data, GuestAddress(at))
            .map_err(|e| host(format!("writing the initrd: {e}")))?;
        initrd = Some((at, at + data.len() as u64));
    }
    let m = fdt::Machine {
        mpidrs,
        cmdline: o.cmdline.clone(),
        ram: o.mem,
        initrd,
        pmem: f.pmem.as_ref().map(|(_, len)| *len),
        devmem: f.devmem.as_ref().map(|_| o.devmem_size),
    };
    let blob = fdt::build(&m).map_err(|e| host(format!("device tree: {e}")))?;
    if blob.len() as u64 > FDT_MAX {
        return Err(host(format!("device tree of {} bytes", blob.len())));
    }
    mem.write_slice(&blob, GuestAddress(p.fdt))
        .map_err(|e| host(format!("writing the device tree: {e}")))?;
    Ok((p.kernel, p.fdt))
}

enum Event {
    /// The run ended elsewhere and this vCPU was stopped.
    Stopped,
    Off,
    Reset,
    Crash,
    Fatal(String),
}

struct Shared {
    devices: Arc<Devices>,
    resolver: Option<Resolver>,
    mem: &'static GuestMemoryMmap,
    events: mpsc::Sender<Event>,
    /// Set when the run ends: each vCPU thread stops at its next event.
    stop: AtomicBool,
}

/// The signal that kicks a vCPU thread out of `KVM_RUN` (`EINTR`) when the run ends.
const KICK: libc::c_int = libc::SIGUSR1;

extern "C" fn on_kick(_: libc::c_int) {}

/// Installs the kick's handler: it does nothing, and without `SA_RESTART` a `KVM_RUN` it
/// interrupts returns `EINTR`.
fn install_kick() -> Result<(), VmError> {
    // SAFETY: an all-zero sigaction is a valid value to fill in.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_kick as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler is async-signal-safe (it does nothing); `sa` is initialised.
    if unsafe { libc::sigaction(KICK, &sa, std::ptr::null_mut()) } != 0 {
        return Err(host(format!(
            "sigaction: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Stops every vCPU thread: sets `stop`, then signals the threads still running every
/// 10 ms (a kick that lands outside `KVM_RUN` is lost, the next one is not) and joins them.
/// Returns how many were joined, and how many did not end within 2 s.
fn stop_vcpus(s: &Shared, threads: Vec<std::thread::JoinHandle<()>>) -> (usize, usize) {
    use std::os::unix::thread::JoinHandleExt;
    s.stop.store(true, SeqCst);
    let deadline = Instant::now() + Duration::from_secs(2);
    while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        for t in threads.iter().filter(|t| !t.is_finished()) {
            // SAFETY: the thread is not joined yet, so its pthread_t is valid; the signal's
            // handler does nothing.
            unsafe { libc::pthread_kill(t.as_pthread_t(), KICK) };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (mut joined, mut stuck) = (0, 0);
    for t in threads {
        if t.is_finished() {
            let _ = t.join();
            joined += 1;
        } else {
            stuck += 1;
        }
    }
    (joined, stuck)
}

impl Shared {
    fn area(&self, gpa: u64) -> Option<Area> {
        self.mem.find_region(GuestAddress(gpa)).map(area_of)
    }
}

/// nta-vm's host users of guest memory: none once the guest runs.
struct NoHostUsers;

// SAFETY: once the vCPU threads run, no thread of nta-vm but them touches guest memory: the
// loading is over and left no reference into it, the UART and the status register are MMIO
// exits that do no DMA, and the main thread only waits. There is no pinner: no VFIO, vhost or
// O_DIRECT. The resolver swaps only memory without tag storage: the image (a private mapping,
// so no one else writes it), and pmem and device memory only with --allow-unshare, whose
// documented condition (--help) is that no other process writes them while the guest runs.
// So there is nothing to pause, for any window.
unsafe impl HostUsers for NoHostUsers {
    fn pause(&self, _: &SwapWindow) -> Result<(), PauseError> {
        Ok(())
    }

    fn resume(&self, _: &SwapWindow, _: Option<&Swapped>) {}
}

/// Handles one event of the vCPU loop: `Break` ends the run with that event.
fn on_event(s: &Shared, ev: RunEvent<'_>) -> ControlFlow<Event> {
    let c: &Counters = &s.devices.counters;
    if s.stop.load(SeqCst) {
        return ControlFlow::Break(Event::Stopped);
    }
    match ev {
        RunEvent::Exit(VcpuExit::MmioRead(addr, data)) => s.devices.read(addr, data),
        RunEvent::Exit(VcpuExit::MmioWrite(addr, data)) => s.devices.write(addr, data),
        RunEvent::Exit(VcpuExit::SystemEvent(t, _)) => {
            return ControlFlow::Break(match t {
                KVM_SYSTEM_EVENT_SHUTDOWN => Event::Off,
                KVM_SYSTEM_EVENT_RESET => Event::Reset,
                KVM_SYSTEM_EVENT_CRASH => Event::Crash,
                t => Event::Fatal(format!("unexpected system event {t}")),
            })
        }
        RunEvent::Exit(e) => {
            return ControlFlow::Break(Event::Fatal(format!("unexpected exit {e:?}")))
        }
        RunEvent::TagAccess { fault, resolution } => {
            if let Some(a) = s.area(fault.gpa()) {
                Counters::add(&c.tag_exits, a, 1);
            }
            match resolution {
                Resolution::Swapped(sw) => {
                    if let Some(a) = s.area(sw.window.gpa) {
                        Counters::add(&c.swaps, a, 1);
                        Counters::add(&c.swapped_bytes, a, sw.window.size);
                    }
                }
                Resolution::Injected => {
                    c.injected.fetch_add(1, Relaxed);
                }
                Resolution::Retry => {
                    c.stale_exits.fetch_add(1, Relaxed);
                }
                other => {
                    return ControlFlow::Break(Event::Fatal(format!(
                        "unexpected resolution {other:?}"
                    )))
                }
            }
        }
        RunEvent::SwapRetry => {
            c.efault_retries.fetch_add(1, Relaxed);
        }
        _ => {}
    }
    ControlFlow::Continue(())
}

/// A run-ending error of the vCPU loop, with the area of a tag access's address.
fn fatal(s: &Shared, e: &NtaError) -> Event {
    let gpa = match e {
        NtaError::Killed { gpa, .. }
        | NtaError::WouldUnshare { gpa, .. }
        | NtaError::NoResolver { gpa }
        | NtaError::SwapBudgetExhausted { gpa, .. } => Some(*gpa),
        _ => None,
    };
    let area = gpa.and_then(|g| s.area(g));
    if let Some(a) = area {
        Counters::add(&s.devices.counters.tag_exits, a, 1);
    }
    let mut msg = match (gpa, area) {
        (Some(g), a) => format!("tag access at {g:#x} ({}): {e}", a.map_or("?", Area::name)),
        (None, _) => e.to_string(),
    };
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        msg = format!("{msg}: {c}");
        cause = c.source();
    }
    Event::Fatal(msg)
}

/// Tells the main thread when a vCPU thread panics, so that the run ends (with a fatal
/// error) instead of waiting for `--timeout`, or for ever without one.
struct PanicReport<'a> {
    id: usize,
    events: &'a mpsc::Sender<Event>,
}

impl Drop for PanicReport<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.events.send(Event::Fatal(format!(
                "the thread of vCPU {} panicked",
                self.id
            )));
        }
    }
}

fn vcpu_loop(id: usize, mut vcpu: VcpuFd, s: Arc<Shared>) {
    let _report = PanicReport {
        id,
        events: &s.events,
    };
    // A test knob (harness/guest/nta-vm-case panic): this vCPU's thread panics at once.
    if std::env::var_os("NTA_VM_TEST_PANIC_VCPU").is_some_and(|v| v == id.to_string().as_str()) {
        panic!("NTA_VM_TEST_PANIC_VCPU={id}: a vCPU thread panics, as a test asks");
    }
    let r = ntakvm::run_vcpu(&mut vcpu, s.resolver.as_ref(), &NoHostUsers, |ev| {
        on_event(&s, ev)
    });
    let ev = r.unwrap_or_else(|e| fatal(&s, &e));
    let _ = s.events.send(ev);
}

/// Boots the guest and runs it until it powers off, resets, fails or times out.
pub fn run(o: &Options) -> Result<Report, VmError> {
    // The run's clock starts before anything is read: the copy layout's copy counts.
    let start = Instant::now();
    let mut files = open_files(o)?;
    let placement = place(
        o.mem,
        files.header.text_offset,
        files.header.image_size,
        files.initrd.as_ref().map(|i| i.len() as u64),
    )
    .map_err(|e| VmError::BadFile(e.to_string()))?;
    let page = nta_vmm::host_page_size().map_err(host)?;
    let kvm = Kvm::new().map_err(|e| host(format!("/dev/kvm: {e}")))?;
    let vm = Arc::new(
        kvm.create_vm()
            .map_err(|e| host(format!("KVM_CREATE_VM: {e}")))?,
    );
    if o.mte {
        if o.untagged_memory() {
            let kp = match o.policy {
                TagPolicy::Sea => KernelPolicy::Sea,
                TagPolicy::Exit(_) => KernelPolicy::Exit,
            };
            ntakvm::enable_mte_perm(&vm, kp).map_err(|e| mte_error(e, o))?;
        } else {
            ntakvm::enable_mte(&vm).map_err(|e| mte_error(e, o))?;
        }
    }
    // Never unmapped: KVM and the vCPU threads use it until the process exits.
    let mem: &'static GuestMemoryMmap = Box::leak(Box::new(guest_memory(o, &files, page)?));
    register(&vm, mem, o.mte && o.untagged_memory())?;
    let memory = mem
        .iter()
        .map(|r| (area_of(r), r.len(), describe(r)))
        .collect();

    let (vcpus, mpidrs) = create_vcpus(&vm, o.cpus)?;
    let _gic = create_gic(&vm)?;
    let (entry, fdt_addr) = load(o, &mut files, &placement, mem, mpidrs)?;
    vcpus[0]
        .set_one_reg(REG_PC, &entry.to_le_bytes())
        .map_err(|e| host(format!("setting PC: {e}")))?;
    vcpus[0]
        .set_one_reg(REG_X0, &fdt_addr.to_le_bytes())
        .map_err(|e| host(format!("setting X0: {e}")))?;

    let devices = Arc::new(Devices::new(Irq(vm.clone()), start));

    let resolver = match (o.mte && o.untagged_memory(), o.policy) {
        (true, TagPolicy::Exit(p)) => {
            // SAFETY: every region of `mem` stays mapped until the process exits (leaked
            // above); nothing relies on their pages staying the same memory: no device of
            // nta-vm does DMA, and no vhost or VFIO mapping of them exists.
            let tm = unsafe { TagMemory::from_guest_memory(mem.iter(), |r| area_of(r).slot()) }
                .map_err(|e| host(format!("memory map for the resolver: {e}")))?;
            let r = Resolver::builder(p)
                .allow_unshare(o.allow_unshare)
                .build(tm)
                .map_err(|e| host(format!("resolver: {e}")))?;
            Some(r)
        }
        _ => None,
    };
    let (tx, rx) = mpsc::channel();
    let shared = Arc::new(Shared {
        devices: devices.clone(),
        resolver,
        mem,
        events: tx,
        stop: AtomicBool::new(false),
    });
    install_kick()?;
    let mut threads = Vec::new();
    for (id, vcpu) in vcpus.into_iter().enumerate() {
        let s = shared.clone();
        let t = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || vcpu_loop(id, vcpu, s));
        match t {
            Ok(t) => threads.push(t),
            Err(e) => {
                stop_vcpus(&shared, threads);
                return Err(host(format!("vCPU thread: {e}")));
            }
        }
    }
    let mut smaps_at_init = None;
    let deadline = o.timeout.map(|t| start + t);
    let end = loop {
        let wait = match deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(200)),
            None => Duration::from_millis(200),
        };
        match rx.recv_timeout(wait) {
            Ok(Event::Off) => break End::PowerOff(devices.status()),
            Ok(Event::Reset) => break End::Reset,
            Ok(Event::Crash) => break End::Crash,
            Ok(Event::Fatal(e)) => break End::Fatal(e),
            Ok(Event::Stopped) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break End::Fatal("every vCPU thread ended".into())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if smaps_at_init.is_none() && devices.init_ms().is_some() {
                    smaps_at_init = smaps();
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break End::Timeout;
                }
            }
        }
    };
    let off_ms = start.elapsed().as_millis() as u64;
    let (joined, stuck) = stop_vcpus(&shared, threads);
    println!(
        "nta-vm: vCPU threads joined: {joined} of {}",
        joined + stuck
    );
    let _ = std::io::stdout().flush();
    Ok(Report {
        end,
        devices,
        off_ms,
        memory,
        smaps_at_init,
        smaps_at_end: smaps(),
    })
}
