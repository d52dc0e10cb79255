// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! What nta-demo and nta-bench share (arm64 only): host mappings, memslots, the guest's
//! stage-1 table and its vCPU.

#[cfg(target_arch = "aarch64")]
pub mod common;
