// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! nta-bench: what NoTagAccess costs on the stage-2 fault path and what it saves against
//! copying an image into tag-capable memory. Runs on an arm64 host with KVM (an L1 guest under
//! QEMU here); prints CSV rows that harness/benchreport.py turns into tables and a plot.

#[cfg(target_arch = "aarch64")]
mod arm64;
mod options;
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
mod smaps;

#[cfg(target_arch = "aarch64")]
fn main() -> std::process::ExitCode {
    arm64::main()
}

#[cfg(not(target_arch = "aarch64"))]
fn main() -> std::process::ExitCode {
    match options::parse_args(std::env::args().skip(1)) {
        Ok(None) => {
            println!("{}", options::USAGE);
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nta-bench: {e}\n\n{}", options::USAGE);
            std::process::ExitCode::from(2)
        }
        Ok(Some(_)) => {
            eprintln!("nta-bench: runs on an arm64 host with KVM only");
            std::process::ExitCode::from(2)
        }
    }
}
