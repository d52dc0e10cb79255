// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `nta-demo --writers N`: vCPUs keep writing a NoTagAccess image while another vCPU's tag
//! accesses make the resolver swap the chunks they write; every write must survive (arm64 only).

use std::fs::OpenOptions;
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use nta_vmm::kvm::{self, enable_mte_perm, Event, KernelPolicy};
use nta_vmm::{Backing, Policy, Resolution, Resolver};

use nta_tools::common::{
    add_vcpu, block, le, setup_vcpu, two_slots, Mapping, NoHostUsers, IMAGE_BASE, MMIO_BASE,
    RAM_BASE,
};

const IMAGE_SIZE: usize = 8 << 20;
const RAM_SIZE: usize = 2 << 20;
const CHUNKS: usize = 4;
const MAX_EXITS: usize = 1_000_000;

pub const USAGE: &str = "\
usage: nta-demo --writers N [--chunk BYTES] [--image PATH] [--guest PATH]

Concurrent writers: N vCPUs (1-7) keep incrementing counters in 16 pages of
an 8 MiB MAP_PRIVATE file image (no tag storage, so NoTagAccess) while vCPU 0
tags the first page of each 2 MiB chunk: each tag access exits and the VMM
swaps the chunk (--chunk bytes, default 2 MiB) for tag-capable memory while
the writers go on. The resolver write-protects a chunk before copying it, so
a write racing the swap faults (KVM_RUN fails with EFAULT) and is retried
after it. At the end each writer sums its counters: every write it made must
be there. Exit status 0 if so, 1 if not, 2 on bad options.
  --image PATH   default /ramfs/writers-image.bin (not tmpfs)
  --guest PATH   default /tests/writers-guest.bin";

pub struct Options {
    writers: u64,
    chunk: u64,
    image: String,
    guest: String,
}

pub fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut o = Options {
        writers: 3,
        chunk: nta_vmm::DEFAULT_CHUNK,
        image: "/ramfs/writers-image.bin".into(),
        guest: "/tests/writers-guest.bin".into(),
    };
    while let Some(a) = args.next() {
        if a == "--help" || a == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--writers" => o.writers = crate::arm64::number("--writers", &value()?)?,
            "--chunk" => o.chunk = crate::arm64::number("--chunk", &value()?)?,
            "--image" => o.image = value()?,
            "--guest" => o.guest = value()?,
            _ => return Err(format!("unknown option '{a}'")),
        }
    }
    if !(1..=7).contains(&o.writers) {
        return Err(format!("--writers: {} is not between 1 and 7", o.writers));
    }
    Ok(o)
}

fn say(msg: &str) {
    println!("[nta-demo] {msg}");
}

/// What one vCPU thread saw.
#[derive(Default, Debug)]
struct VcpuReport {
    id: u64,
    writes: Option<u64>,
    lost: Option<u64>,
    tags: Vec<u64>,
    progress_after_tags: Option<u64>,
    tagger_done: bool,
    swaps: u64,
    retries: u64,
    efault_retries: u64,
}

fn run_vcpu(
    mut vcpu: VcpuFd,
    id: u64,
    writers: u64,
    resolver: &Resolver,
    failed: &AtomicBool,
) -> Result<VcpuReport, String> {
    let mut r = VcpuReport {
        id,
        ..Default::default()
    };
    let mut exits = 0;
    let end = kvm::run_vcpu(&mut vcpu, Some(resolver), &NoHostUsers, |ev| {
        exits += 1;
        if exits > MAX_EXITS {
            return ControlFlow::Break(Err(format!("vCPU {id}: no end in {MAX_EXITS} exits")));
        }
        if failed.load(Ordering::Relaxed) {
            return ControlFlow::Break(Err("another vCPU failed".into()));
        }
        match ev {
            Event::Exit(VcpuExit::MmioRead(addr, data)) if addr == MMIO_BASE + 0x18 => {
                let n = data.len().min(8);
                data[..n].copy_from_slice(&writers.to_le_bytes()[..n]);
            }
            Event::Exit(VcpuExit::MmioWrite(addr, data)) => {
                let v = le(data);
                match addr.wrapping_sub(MMIO_BASE) {
                    0x20 => r.tags.push(v),
                    0x28 => r.progress_after_tags = Some(v),
                    0x30 => {
                        r.tagger_done = true;
                        return ControlFlow::Break(Ok(()));
                    }
                    0x38 => {
                        return ControlFlow::Break(Err(format!(
                            "vCPU {id}: guest exception, ESR_EL1 {v:#x}"
                        )))
                    }
                    off if off == 0x100 + 16 * id => r.writes = Some(v),
                    off if off == 0x108 + 16 * id => {
                        r.lost = Some(v);
                        return ControlFlow::Break(Ok(()));
                    }
                    off => {
                        return ControlFlow::Break(Err(format!(
                            "vCPU {id}: unknown MMIO write at {off:#x}"
                        )))
                    }
                }
            }
            Event::TagAccess {
                resolution: Resolution::Swapped(s),
                ..
            } => {
                say(&format!(
                    "vCPU {id}: swapped {:#x} bytes at gpa {:#x}",
                    s.window.size, s.window.gpa
                ));
                r.swaps += 1;
            }
            Event::TagAccess { .. } => r.retries += 1,
            Event::SwapRetry => r.efault_retries += 1,
            Event::Interrupted => {}
            Event::Exit(other) => {
                return ControlFlow::Break(Err(format!("vCPU {id}: unexpected exit {other:?}")))
            }
            _ => {}
        }
        ControlFlow::Continue(())
    });
    match end {
        Ok(Ok(())) => Ok(r),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(format!("vCPU {id}: {e}")),
    }
}

fn run(o: &Options) -> Result<bool, String> {
    let guest = std::fs::read(&o.guest).map_err(|e| format!("{}: {e}", o.guest))?;
    let kvm = Kvm::new().map_err(|e| format!("/dev/kvm: {e}"))?;
    let host = nta_vmm::probe_host().map_err(|e| e.to_string())?;
    say(&format!(
        "host: page size {}, anonymous memory tag-capable: {}",
        host.page_size, host.anon_tag_capable
    ));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&o.image)
        .map_err(|e| format!("{}: {e}", o.image))?;
    f.set_len(IMAGE_SIZE as u64)
        .map_err(|e| format!("{}: {e}", o.image))?;
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let image = Mapping::new(IMAGE_SIZE, rw, libc::MAP_PRIVATE, f.as_raw_fd())?;

    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    enable_mte_perm(&vm, KernelPolicy::Exit).map_err(|e| e.to_string())?;
    let mut ram = Mapping::anon(RAM_SIZE, 0)?;
    let blocks = [block(0, 0), block(RAM_BASE, 1), block(IMAGE_BASE, 1)];
    let mut vcpus = vec![setup_vcpu(&vm, &guest, &mut ram, &blocks)?];
    for id in 1..=o.writers {
        vcpus.push(add_vcpu(&vm, id)?);
    }
    let backing = Backing::PrivateFile(o.image.clone().into());
    let mem = two_slots(&vm, &ram, &image, backing, true)?;
    let resolver = Resolver::builder(Policy::MakeTaggable)
        .chunk(o.chunk)
        .build(mem)
        .map_err(|e| e.to_string())?;
    say(&format!(
        "{} writers, 1 tagger, chunk {:#x}, image {IMAGE_SIZE:#x} bytes (MAP_PRIVATE file)",
        o.writers, o.chunk
    ));
    let failed = AtomicBool::new(false);
    let reports: Vec<Result<VcpuReport, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = vcpus
            .into_iter()
            .enumerate()
            .map(|(id, v)| {
                let (res, failed) = (&resolver, &failed);
                s.spawn(move || {
                    let r = run_vcpu(v, id as u64, o.writers, res, failed);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("vCPU thread panicked".into()))
            })
            .collect()
    });
    let mut ok = true;
    let mut check = |what: &str, good: bool| {
        say(&format!(
            "check: {what}: {}",
            if good { "yes" } else { "NO" }
        ));
        ok &= good;
    };
    let mut swaps = 0;
    for r in &reports {
        match r {
            Err(e) => {
                say(&format!("error: {e}"));
                check("every vCPU ran to its end", false);
            }
            Ok(r) if r.id == 0 => {
                swaps += r.swaps;
                say(&format!(
                    "tagger: tags read back {:?}, writer 1 had made {:?} writes after the last \
                     tag access, {} swaps, {} retries, {} EFAULT retries",
                    r.tags, r.progress_after_tags, r.swaps, r.retries, r.efault_retries
                ));
                check("the tagger finished", r.tagger_done);
                check("every chunk reads back tag 7", r.tags == vec![7; CHUNKS]);
            }
            Ok(r) => {
                swaps += r.swaps;
                say(&format!(
                    "writer {}: {:?} writes, {:?} not found again, {} EFAULT retries (writes \
                     racing a swap), {} swaps, {} retries",
                    r.id, r.writes, r.lost, r.efault_retries, r.swaps, r.retries
                ));
                check(
                    &format!("writer {}: wrote, and every write is there", r.id),
                    r.writes.is_some_and(|w| w > 0) && r.lost == Some(0),
                );
                check(
                    &format!("writer {}: still writing when the tagger stopped it", r.id),
                    r.writes.is_some_and(|w| w < 4_000_000),
                );
            }
        }
    }
    let chunks = IMAGE_SIZE as u64 / o.chunk.max(1);
    check(
        &format!("one swap per tagged chunk ({CHUNKS})"),
        swaps == CHUNKS as u64 || (chunks < CHUNKS as u64 && swaps == chunks),
    );
    say(if ok {
        "VERDICT: PASS: every write survived the swaps"
    } else {
        "VERDICT: FAIL"
    });
    drop(resolver);
    drop(image);
    let _ = std::fs::remove_file(&o.image);
    Ok(ok)
}

pub fn main(args: impl Iterator<Item = String>) -> std::process::ExitCode {
    let o = match parse_args(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("nta-demo: {e}\n\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(&o) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            say(&format!("error: {e}"));
            say("VERDICT: FAIL");
            std::process::ExitCode::FAILURE
        }
    }
}
