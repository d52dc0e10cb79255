// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! nta-demo: an MTE guest whose memory includes an image mapped straight from a file (no copy),
//! the way libkrun maps a kernel out of a library; its tag accesses to that image are resolved
//! with the chosen policy. Runs on an arm64 host (an L1 guest under QEMU here).

#[cfg(target_arch = "aarch64")]
mod arm64;
#[cfg(target_arch = "aarch64")]
mod writers;

#[cfg(target_arch = "aarch64")]
fn main() -> std::process::ExitCode {
    if std::env::args().any(|a| a == "--writers") {
        return writers::main(std::env::args().skip(1));
    }
    arm64::main()
}

#[cfg(not(target_arch = "aarch64"))]
fn main() -> std::process::ExitCode {
    eprintln!("nta-demo: runs on an arm64 host with KVM only");
    std::process::ExitCode::from(2)
}
