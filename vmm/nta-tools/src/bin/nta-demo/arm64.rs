// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The demo itself (arm64 only).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;
use std::process::ExitCode;

use kvm_ioctls::{Kvm, VcpuExit};
use nta_vmm::kvm::{self, enable_mte, enable_mte_perm, Event, KernelPolicy};
use nta_vmm::uapi::KVM_CAP_ARM_MTE_PERM;
use nta_vmm::{Backing, Policy, Resolution, Resolver};

use nta_tools::common::{
    block, describe, le, set_slot, setup_vcpu, two_slots, Mapping, NoHostUsers, IMAGE_BASE,
    MMIO_BASE, RAM_BASE,
};

const RAM_SIZE: usize = 2 << 20;
const IMAGE_MAGIC: u64 = 0x214e_5552_4b42_494c; // "LIBKRUN!" as a little-endian u64
const MAX_EXITS: usize = 64;

const USAGE: &str = "\
usage: nta-demo [--policy POLICY] [--backing KIND] [--image PATH] [--size BYTES] [--guest PATH]
       nta-demo --writers N [--chunk BYTES] [--image PATH] [--guest PATH]
                (concurrent writers racing make-taggable swaps: nta-demo --writers 1 --help)

Runs a small MTE guest whose memory includes an image mapped straight from a
file (no copy). The guest reads the image, tags its own RAM, then tags memory
inside the image, which has no tag storage: KVM maps it NoTagAccess, and the
policy decides what that tag access does.

  --policy kill|inject|make-taggable|sea
        kill: KVM exits to this VMM, which stops the guest with an error
        inject: KVM exits, this VMM injects a data abort into the guest
        make-taggable: KVM exits, this VMM swaps the page for tag-capable
          memory holding the same data, and the guest's access then works
        sea: KVM injects the abort itself, without exiting
        (default: make-taggable)
  --backing file|private|device
        file: MAP_SHARED of a page-cache file (default)
        private: MAP_PRIVATE of a page-cache file
        device: the BAR of QEMU's ivshmem-plain, /dev/ivshmem-mem (the Rust sample driver)
  --image PATH   the file to create and map (default /ramfs/guest-image.bin;
                 put it on a filesystem that is not tmpfs, which is shmem)
  --size BYTES   image size, a multiple of 4096 (default 65536)
  --guest PATH   the guest program (default /tests/demo-guest.bin)

Exit status: 0 when the guest behaved as the policy says, 1 when not,
2 on bad options. Without FEAT_MTE_PERM, it shows that KVM refuses the image.";

struct Options {
    policy: String,
    backing: String,
    image: String,
    size: usize,
    guest: String,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        policy: "make-taggable".into(),
        backing: "file".into(),
        image: "/ramfs/guest-image.bin".into(),
        size: 65536,
        guest: "/tests/demo-guest.bin".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--help" || a == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--policy" => o.policy = value()?,
            "--backing" => o.backing = value()?,
            "--image" => o.image = value()?,
            "--guest" => o.guest = value()?,
            "--size" => o.size = number("--size", &value()?)?,
            _ => return Err(format!("unknown option '{a}'")),
        }
    }
    if !["kill", "inject", "make-taggable", "sea"].contains(&o.policy.as_str()) {
        return Err(format!(
            "--policy: '{}' is not kill, inject, make-taggable or sea",
            o.policy
        ));
    }
    if !["file", "private", "device"].contains(&o.backing.as_str()) {
        return Err(format!(
            "--backing: '{}' is not file, private or device",
            o.backing
        ));
    }
    if o.size == 0 || o.size % 4096 != 0 || o.size > 1 << 20 {
        return Err(format!(
            "--size: {} is not a multiple of 4096 between 4096 and 1 MiB",
            o.size
        ));
    }
    Ok(o)
}

/// The image's contents: a magic word, then a recognisable pattern.
fn image_bytes(size: usize) -> Vec<u8> {
    (0..size / 8)
        .flat_map(|i| {
            let w = if i == 0 {
                IMAGE_MAGIC
            } else {
                0x696d_6167_0000_0000 | i as u64
            };
            w.to_le_bytes()
        })
        .collect()
}

/// The value `v` of option `flag` as a number, or an error naming both.
pub(crate) fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: '{v}' is not a number"))
}

/// Maps the image per `--backing`; returns the mapping, what backs it, and the file to check.
fn map_image(o: &Options) -> Result<(Mapping, Backing, Option<File>), String> {
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let data = image_bytes(o.size);
    if o.backing == "device" {
        let dev = "/dev/ivshmem-mem";
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dev)
            .map_err(|e| {
                format!("{dev}: {e} (is rust_driver_ivshmem loaded and the device there?)")
            })?;
        let mut m = Mapping::new(o.size, rw, libc::MAP_SHARED, f.as_raw_fd())?;
        m.as_mut_slice().copy_from_slice(&data);
        return Ok((m, Backing::Device(dev.into()), None));
    }
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&o.image)
        .map_err(|e| format!("{}: {e}", o.image))?;
    f.write_all(&data)
        .map_err(|e| format!("{}: {e}", o.image))?;
    let (flags, backing) = if o.backing == "private" {
        (
            libc::MAP_PRIVATE,
            Backing::PrivateFile(o.image.clone().into()),
        )
    } else {
        (
            libc::MAP_SHARED,
            Backing::SharedFile(o.image.clone().into()),
        )
    };
    let m = Mapping::new(o.size, rw, flags, f.as_raw_fd())?;
    Ok((m, backing, Some(f)))
}

/// The word at `off` in `m`, read as the guest may write it too.
fn read_u64(m: &Mapping, off: usize) -> u64 {
    assert!(off + 8 <= m.len && off % 8 == 0);
    // SAFETY: in bounds (checked) and aligned; volatile, as the guest writes it too.
    unsafe { std::ptr::read_volatile(m.addr.add(off).cast::<u64>()) }
}

/// The allocation tag of the first 16 bytes of `m`, which the swap made anonymous memory
/// without PROT_MTE: this asks for PROT_MTE on its first page (anonymous memory allows it, and
/// the tags KVM stored stay), then reads the tag; `None` if that is refused.
fn host_ldg(m: &Mapping) -> Option<u64> {
    let page = nta_vmm::host_page_size().ok()? as usize;
    // SAFETY: the first page of our own mapping, which the VM no longer runs on; adding
    // PROT_MTE changes no data.
    if unsafe { libc::mprotect(m.addr.cast(), page, m.prot | 0x20) } != 0 {
        return None;
    }
    let addr = m.addr as u64;
    let mut v = addr;
    // SAFETY: LDG only reads the tag of a mapped PROT_MTE granule.
    unsafe {
        std::arch::asm!(".arch_extension memtag", "ldg {0}, [{1}]", inout(reg) v, in(reg) addr)
    };
    Some((v >> 56) & 0xf)
}

/// What the guest reported, by event number (see guest/demo-guest.S).
#[derive(Default)]
struct Report {
    image_word: Option<u64>,
    ram_tag: Option<u64>,
    image_tag: Option<u64>,
    aborts: Vec<(u64, u64)>,
    image_word_after: Option<u64>,
    done: bool,
    unexpected: Option<u64>,
    tag_exits: usize,
}

fn say(msg: &str) {
    println!("[nta-demo] {msg}");
}

fn mmio_event(r: &mut Report, addr: u64, data: &[u8]) {
    let v = le(data);
    match (addr - MMIO_BASE) / 8 {
        1 => {
            say(&format!("guest read the image through the slot: {v:#018x}"));
            r.image_word = Some(v);
        }
        2 => {
            say(&format!("guest tagged its own RAM, LDG reads tag {v}"));
            r.ram_tag = Some(v);
        }
        3 => {
            if v == 0xff {
                say("guest's LDG from the image did not complete (it took an abort)");
            } else {
                say(&format!("guest tagged the image, LDG reads tag {v}"));
            }
            r.image_tag = Some(v);
        }
        4 => r.aborts.push((v, 0)),
        5 => {
            if let Some(last) = r.aborts.last_mut() {
                last.1 = v;
                say(&format!(
                    "guest took a synchronous abort: ESR_EL1 {:#x} (EC {:#x}, DFSC {:#x}), \
                     FAR_EL1 {v:#x}",
                    last.0,
                    last.0 >> 26,
                    last.0 & 0x3f
                ));
            }
        }
        6 => r.image_word_after = Some(v),
        7 => r.done = true,
        8 => r.unexpected = Some(v),
        e => say(&format!("unknown guest event {e} ({v:#x})")),
    }
}

/// Shows what Linux does without FEAT_MTE_PERM: an MTE guest cannot have the image.
fn show_refusal(kvm: &Kvm, image: &Mapping, backing: &Backing) -> Result<bool, String> {
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    match enable_mte_perm(&vm, KernelPolicy::Exit) {
        Err(e @ nta_vmm::Error::Unsupported(_)) => say(&format!("enabling it fails: {e}")),
        other => return Err(format!("expected no KVM_CAP_ARM_MTE_PERM, got {other:?}")),
    }
    enable_mte(&vm).map_err(|e| e.to_string())?;
    match set_slot(&vm, 1, IMAGE_BASE, image, backing.clone(), false) {
        Err(ref e @ nta_vmm::Error::Kvm { ref source, .. })
            if source.raw_os_error() == Some(libc::EINVAL) =>
        {
            say(&format!(
                "an MTE guest cannot be given the image: {}",
                describe(e)
            ));
            Ok(true)
        }
        Err(e) => Err(describe(&e)),
        Ok(()) => Err("KVM accepted the image for an MTE guest without the capability".into()),
    }
}

fn run(o: &Options) -> Result<bool, String> {
    let guest = std::fs::read(&o.guest).map_err(|e| format!("{}: {e}", o.guest))?;
    let kvm = Kvm::new().map_err(|e| format!("/dev/kvm: {e}"))?;
    let (image, backing, file) = map_image(o)?;
    say(&format!(
        "image: {} bytes, {backing}, mapped at gpa {IMAGE_BASE:#x} without copying",
        o.size
    ));

    if kvm.check_extension_raw(KVM_CAP_ARM_MTE_PERM.into()) <= 0 {
        say("this host does not offer KVM_CAP_ARM_MTE_PERM (no FEAT_MTE_PERM, or arm64.nomteperm)");
        let refused = show_refusal(&kvm, &image, &backing)?;
        say(if refused {
            "VERDICT: REFUSED, as Linux without this series does: copy the image or turn MTE off"
        } else {
            "VERDICT: FAIL"
        });
        return Ok(refused);
    }

    let kernel_policy = if o.policy == "sea" {
        KernelPolicy::Sea
    } else {
        KernelPolicy::Exit
    };
    let policy: Option<Policy> = o.policy.parse().ok();
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    enable_mte_perm(&vm, kernel_policy).map_err(|e| e.to_string())?;
    say(&format!(
        "MTE enabled, KVM_CAP_ARM_MTE_PERM enabled with the {} policy",
        if kernel_policy == KernelPolicy::Sea {
            "SEA"
        } else {
            "EXIT"
        }
    ));

    let mut ram = Mapping::anon(RAM_SIZE, 0)?;
    // [0, 1G) Device (attr 0), [1G, 2G) and [2G, 3G) Tagged Normal (attr 1).
    let blocks = [block(0, 0), block(RAM_BASE, 1), block(IMAGE_BASE, 1)];
    let vcpu = setup_vcpu(&vm, &guest, &mut ram, &blocks)?;
    let mem = two_slots(&vm, &ram, &image, backing.clone(), true)?;

    // One page at a time, as the demo shows one tag access. Swapping a shared file or device
    // page cuts the guest off from it: the demo opts in, and checks the file is unchanged.
    let page = mem.page_size();
    let resolver = policy
        .map(|p| {
            Resolver::builder(p)
                .chunk(page)
                .allow_unshare(true)
                .build(mem)
        })
        .transpose()
        .map_err(|e| e.to_string())?;
    let mut vcpu = vcpu;
    let mut r = Report::default();
    let mut exits = 0;
    let end = kvm::run_vcpu(&mut vcpu, resolver.as_ref(), &NoHostUsers, |ev| {
        exits += 1;
        if exits > MAX_EXITS {
            return ControlFlow::Break(Err(format!("no end in {MAX_EXITS} exits")));
        }
        match ev {
            Event::Exit(VcpuExit::MmioWrite(addr, data)) => mmio_event(&mut r, addr, data),
            Event::TagAccess { fault, resolution } => {
                r.tag_exits += 1;
                say(&format!(
                    "KVM exit: tag access at gpa {:#x} (size {:#x})",
                    fault.gpa(),
                    fault.size()
                ));
                match resolution {
                    Resolution::Injected => say("resolved: data abort injected"),
                    Resolution::Swapped(s) => say(&format!(
                        "resolved: {:#x} bytes at gpa {:#x} (slot {}) swapped for tag-capable \
                         memory with the same data",
                        s.window.size, s.window.gpa, s.window.slot
                    )),
                    other => say(&format!("resolved: {other:?}")),
                }
            }
            Event::Interrupted | Event::SwapRetry => {}
            Event::Exit(other) => {
                return ControlFlow::Break(Err(format!("unexpected exit {other:?}")))
            }
            _ => {}
        }
        if r.done || r.unexpected.is_some() {
            return ControlFlow::Break(Ok(()));
        }
        ControlFlow::Continue(())
    });
    let killed = match end {
        Ok(Ok(())) => false,
        Ok(Err(e)) => return Err(e),
        Err(e @ nta_vmm::Error::Killed { gpa, .. }) => {
            r.tag_exits += 1;
            say(&format!("KVM exit: tag access at gpa {gpa:#x}"));
            say(&format!("resolved: {e}"));
            true
        }
        Err(e @ nta_vmm::Error::NoResolver { .. }) => {
            return Err(format!("{e} (a tag-access exit with the SEA policy)"))
        }
        Err(e) => return Err(describe(&e)),
    };
    if let Some(esr) = r.unexpected {
        say(&format!("guest took an unexpected exception, ESR {esr:#x}"));
        return Ok(false);
    }
    Ok(judge(o, &r, killed, &image, file.as_ref()))
}

/// Checks the outcome against the policy, printing each check.
fn judge(o: &Options, r: &Report, killed: bool, image: &Mapping, file: Option<&File>) -> bool {
    let mut ok = true;
    let mut check = |what: &str, good: bool| {
        say(&format!(
            "check: {what}: {}",
            if good { "yes" } else { "NO" }
        ));
        ok &= good;
    };
    check(
        "guest read the image's data",
        r.image_word == Some(IMAGE_MAGIC),
    );
    check("tags work in the guest's own RAM", r.ram_tag == Some(5));
    match o.policy.as_str() {
        "kill" => {
            check(
                "the guest was stopped at its first tag access",
                killed && r.tag_exits == 1,
            );
        }
        "make-taggable" => {
            check("one exit, then the guest's tags work", r.tag_exits == 1);
            check("LDG reads back tag 7", r.image_tag == Some(7));
            check(
                "the guest still sees the image's data",
                r.image_word_after == Some(IMAGE_MAGIC),
            );
            check(
                "the VMM sees tag 7 on the swapped page (after mprotect PROT_MTE)",
                host_ldg(image) == Some(7),
            );
            check("and the same data", read_u64(image, 0) == IMAGE_MAGIC);
        }
        _ => {
            let sea = |&(esr, far): &(u64, u64)| {
                esr >> 26 == 0x25 && esr & 0x3f == 0x10 && far & ((1 << 56) - 1) == IMAGE_BASE
            };
            let exits = if o.policy == "sea" { 0 } else { 2 };
            check(&format!("{exits} exits to the VMM"), r.tag_exits == exits);
            check(
                "STG and LDG each raised a synchronous external abort at the image",
                r.aborts.len() == 2 && r.aborts.iter().all(sea),
            );
            check("no tag was read", r.image_tag == Some(0xff));
            check(
                "the guest still sees the image's data",
                r.image_word_after == Some(IMAGE_MAGIC),
            );
        }
    }
    if let Some(f) = file {
        let mut now = vec![0u8; o.size];
        let same = std::os::unix::fs::FileExt::read_exact_at(f, &mut now, 0).is_ok()
            && now == image_bytes(o.size);
        check("the file is unchanged", same);
    }
    say(if ok {
        "VERDICT: PASS: the guest behaved as the policy says"
    } else {
        "VERDICT: FAIL"
    });
    ok
}

pub fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("nta-demo: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    say(&format!("policy {}, backing {}", o.policy, o.backing));
    match run(&o) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            say(&format!("error: {e}"));
            say("VERDICT: FAIL");
            ExitCode::FAILURE
        }
    }
}
