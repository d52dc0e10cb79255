// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! nta-vm: a minimal arm64 microVM on the rust-vmm crates (kvm-ioctls, vm-memory,
//! linux-loader, vm-fdt, vm-superio) that boots a Linux MTE guest whose kernel image, pmem
//! and device memory may have no tag storage, resolving its tag accesses with nta-vmm.
#![cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]

#[cfg(target_arch = "aarch64")]
mod devices;
mod fdt;
mod image;
mod layout;
mod options;
#[cfg(target_arch = "aarch64")]
mod report;
#[cfg(target_arch = "aarch64")]
mod vm;

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = Vec::new();
    for a in std::env::args_os().skip(1) {
        match a.into_string() {
            Ok(a) => args.push(a),
            Err(a) => {
                eprintln!("nta-vm: argument {a:?} is not UTF-8");
                return ExitCode::from(2);
            }
        }
    }
    let o = match options::parse(&args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{}", options::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("nta-vm: {e}");
            return ExitCode::from(2);
        }
    };
    run(&o)
}

#[cfg(target_arch = "aarch64")]
fn run(o: &options::Options) -> ExitCode {
    match vm::run(o) {
        Ok(r) => ExitCode::from(report::finish(o, &r)),
        Err(e) => {
            eprintln!("nta-vm: {e}");
            ExitCode::from(match e {
                vm::VmError::BadFile(_) => 2,
                vm::VmError::Host(_) => 3,
            })
        }
    }
}

#[cfg(not(target_arch = "aarch64"))]
fn run(_: &options::Options) -> ExitCode {
    eprintln!("nta-vm: runs on arm64 hosts only (KVM/arm64)");
    ExitCode::from(3)
}
