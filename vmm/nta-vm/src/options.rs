// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The command line of nta-vm.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
usage: nta-vm --kernel IMAGE [options]

Boots an arm64 Linux guest with MTE in a minimal microVM (KVM, in-kernel GICv3,
timer and PSCI, a 16550 console on stdout). Memory without tag storage, which
KVM maps NoTagAccess (KVM_CAP_ARM_MTE_PERM), can back three parts of the guest:
the kernel image mapped from its file, a pmem region and device memory.

  --kernel PATH        the arm64 Image (uncompressed)
  --initrd PATH        an initramfs
  --cmdline STRING     kernel command line (default: \"console=ttyS0 earlycon panic=-1\")
  --mem SIZE           guest RAM, e.g. 256M or 1G (default 256M)
  --cpus N             vCPUs, 1 to 8 (default 1)
  --image-layout copy|map
                       copy: the Image is copied into anonymous RAM (default; what an
                         MTE guest can have without FEAT_MTE_PERM)
                       map: the Image file is mapped MAP_PRIVATE at the start of RAM,
                         without a copy; its pages have no tag storage
  --pmem PATH          a file (a multiple of 2 MiB) mapped MAP_SHARED and described
                       to the guest as persistent memory (DT pmem-region: /dev/pmem0)
  --devmem PATH        a device whose mmap gives cacheable memory (e.g.
                       /dev/ivshmem-mem), mapped MAP_SHARED as more guest RAM
  --devmem-size SIZE   how much of it (default 2M)
  --mte on|off         MTE for the guest (default on)
  --policy make-taggable|inject|kill|sea
                       what a guest's tag access to memory without tag storage does:
                       make-taggable: KVM exits, nta-vm swaps the 2 MiB chunk for
                         tag-capable memory with the same data (default)
                       inject: KVM exits, nta-vm injects a data abort
                       kill: KVM exits, nta-vm stops the guest with an error
                       sea: KVM injects a synchronous external abort, no exit
  --allow-unshare      let make-taggable replace pmem or device memory by private
                       memory (the guest then no longer sees the file or device there;
                       no other process may write them while the guest runs)
  --timeout SECS       stop the guest after SECS seconds (exit status 124)
  --stats PATH         write the run's figures there, one key=value per line

Exit status: 0 when the guest powered off (PSCI SYSTEM_OFF) with status 0, 1 when it
reported a failure, 2 on bad options or files, 3 when KVM or the VMM failed or
stopped the guest (KVM refused the memory, --policy kill, a swap nta-vmm refused),
4 when the guest reset or crashed, 124 on --timeout. A guest that powers off
without writing a status counts as status 0.";

/// How the kernel image gets into guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageLayout {
    Copy,
    Map,
}

/// What a guest's tag access to memory without tag storage does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagPolicy {
    /// KVM exits, the VMM applies this policy of nta-vmm.
    Exit(nta_vmm::Policy),
    /// KVM injects a synchronous external abort itself.
    Sea,
}

/// A bad command line: what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub mem: u64,
    pub cpus: u8,
    pub layout: ImageLayout,
    pub pmem: Option<PathBuf>,
    pub devmem: Option<PathBuf>,
    pub devmem_size: u64,
    pub mte: bool,
    pub policy: TagPolicy,
    pub allow_unshare: bool,
    pub timeout: Option<Duration>,
    pub stats: Option<PathBuf>,
}

pub const MAX_CPUS: u8 = 8;
const MIB: u64 = 1 << 20;

/// `SIZE` as bytes: a number with an optional K, M or G suffix.
pub fn size(flag: &str, v: &str) -> Result<u64, UsageError> {
    let bad = || {
        UsageError(format!(
            "{flag}: '{v}' is not a size like 4096, 64K, 256M or 1G"
        ))
    };
    let (num, shift) = match v.as_bytes().last() {
        Some(b'K' | b'k') => (&v[..v.len() - 1], 10),
        Some(b'M' | b'm') => (&v[..v.len() - 1], 20),
        Some(b'G' | b'g') => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift).ok_or_else(bad)
}

/// The longest `--timeout`: a day.
const MAX_TIMEOUT: u64 = 24 * 3600;
/// The arm64 kernel's COMMAND_LINE_SIZE, its terminating NUL included.
const COMMAND_LINE_SIZE: usize = 2048;

/// Parses the arguments (without the program name); `None` for `--help`.
pub fn parse(args: &[String]) -> Result<Option<Options>, UsageError> {
    let mut kernel = None;
    let mut o = Options {
        kernel: PathBuf::new(),
        initrd: None,
        cmdline: "console=ttyS0 earlycon panic=-1".into(),
        mem: 256 * MIB,
        cpus: 1,
        layout: ImageLayout::Copy,
        pmem: None,
        devmem: None,
        devmem_size: 2 * MIB,
        mte: true,
        policy: TagPolicy::Exit(nta_vmm::Policy::MakeTaggable),
        allow_unshare: false,
        timeout: None,
        stats: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let flag = a.as_str();
        let mut value = || {
            it.next()
                .map(String::as_str)
                .ok_or_else(|| UsageError(format!("{flag} needs a value")))
        };
        match flag {
            "--help" | "-h" => return Ok(None),
            "--kernel" => kernel = Some(PathBuf::from(value()?)),
            "--initrd" => o.initrd = Some(value()?.into()),
            "--cmdline" => {
                let v = value()?;
                if v.contains('\0') {
                    return Err(UsageError("--cmdline: contains a NUL byte".into()));
                }
                if v.len() >= COMMAND_LINE_SIZE {
                    return Err(UsageError(format!(
                        "--cmdline: {} bytes; the arm64 kernel takes at most {}",
                        v.len(),
                        COMMAND_LINE_SIZE - 1
                    )));
                }
                o.cmdline = v.into();
            }
            "--mem" => o.mem = size(flag, value()?)?,
            "--cpus" => {
                let v = value()?;
                o.cpus = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_CPUS).contains(n))
                    .ok_or_else(|| {
                        UsageError(format!(
                            "--cpus: '{v}' is not a number from 1 to {MAX_CPUS}"
                        ))
                    })?;
            }
            "--image-layout" => {
                o.layout = match value()? {
                    "copy" => ImageLayout::Copy,
                    "map" => ImageLayout::Map,
                    v => {
                        return Err(UsageError(format!(
                            "--image-layout: '{v}' is not copy or map"
                        )))
                    }
                }
            }
            "--pmem" => o.pmem = Some(value()?.into()),
            "--devmem" => o.devmem = Some(value()?.into()),
            "--devmem-size" => o.devmem_size = size(flag, value()?)?,
            "--mte" => {
                o.mte = match value()? {
                    "on" => true,
                    "off" => false,
                    v => return Err(UsageError(format!("--mte: '{v}' is not on or off"))),
                }
            }
            "--policy" => {
                o.policy = match value()? {
                    "sea" => TagPolicy::Sea,
                    v => TagPolicy::Exit(v.parse().map_err(|_| {
                        UsageError(format!(
                            "--policy: '{v}' is not make-taggable, inject, kill or sea"
                        ))
                    })?),
                }
            }
            "--allow-unshare" => o.allow_unshare = true,
            "--timeout" => {
                let v = value()?;
                let s: u64 = v
                    .parse()
                    .ok()
                    .filter(|s| (1..=MAX_TIMEOUT).contains(s))
                    .ok_or_else(|| {
                        UsageError(format!(
                            "--timeout: '{v}' is not a number of seconds from 1 to {MAX_TIMEOUT}"
                        ))
                    })?;
                o.timeout = Some(Duration::from_secs(s));
            }
            "--stats" => o.stats = Some(value()?.into()),
            _ => return Err(UsageError(format!("unknown option '{a}' (see --help)"))),
        }
    }
    o.kernel = kernel.ok_or_else(|| UsageError("--kernel is required (see --help)".into()))?;
    if o.mem < 64 * MIB || o.mem % (2 * MIB) != 0 || o.mem > 3 << 30 {
        return Err(UsageError(format!(
            "--mem: {} bytes is not a multiple of 2 MiB from 64 MiB to 3 GiB",
            o.mem
        )));
    }
    if o.devmem_size == 0 || o.devmem_size % (2 * MIB) != 0 || o.devmem_size > 1 << 30 {
        return Err(UsageError(format!(
            "--devmem-size: {} bytes is not a multiple of 2 MiB up to 1 GiB",
            o.devmem_size
        )));
    }
    if !o.mte && o.policy != TagPolicy::Exit(nta_vmm::Policy::MakeTaggable) {
        return Err(UsageError(
            "--policy needs MTE: a guest without MTE makes no tag accesses".into(),
        ));
    }
    Ok(Some(o))
}

impl Options {
    /// Whether some guest memory has no tag storage, so that MTE needs KVM_CAP_ARM_MTE_PERM.
    pub fn untagged_memory(&self) -> bool {
        self.layout == ImageLayout::Map || self.pmem.is_some() || self.devmem.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn parse(a: &[String]) -> Result<Options, UsageError> {
        super::parse(a).map(|o| o.expect("not --help"))
    }

    #[test]
    fn help_only_as_an_option() {
        assert_eq!(super::parse(&args("--kernel /k --help")), Ok(None));
        let o = parse(&args("--kernel /k --cmdline -h")).unwrap();
        assert_eq!(o.cmdline, "-h");
    }

    #[test]
    fn defaults() {
        let o = parse(&args("--kernel /k")).unwrap();
        assert_eq!(o.kernel, PathBuf::from("/k"));
        assert_eq!(
            (o.mem, o.cpus, o.layout, o.mte),
            (256 * MIB, 1, ImageLayout::Copy, true)
        );
        assert_eq!(o.policy, TagPolicy::Exit(nta_vmm::Policy::MakeTaggable));
        assert!(!o.untagged_memory());
    }

    #[test]
    fn everything() {
        let o = parse(&args(
            "--kernel /k --initrd /i --mem 1G --cpus 2 --image-layout map --pmem /p \
             --devmem /dev/x --devmem-size 4M --policy sea --allow-unshare --timeout 30 \
             --stats /s --cmdline quiet",
        ))
        .unwrap();
        assert_eq!((o.mem, o.cpus, o.layout), (1 << 30, 2, ImageLayout::Map));
        assert_eq!((o.devmem_size, o.policy), (4 * MIB, TagPolicy::Sea));
        assert_eq!(o.timeout, Some(Duration::from_secs(30)));
        assert_eq!(o.cmdline, "quiet");
        assert!(o.allow_unshare && o.untagged_memory());
    }

    #[test]
    fn command_lines_the_kernel_can_take() {
        let long = "x".repeat(COMMAND_LINE_SIZE - 1);
        let o = parse(&[
            "--kernel".into(),
            "/k".into(),
            "--cmdline".into(),
            long.clone(),
        ]);
        assert_eq!(o.unwrap().cmdline, long);
        for (bad, says) in [
            ("a\0b".to_string(), "NUL"),
            ("x".repeat(COMMAND_LINE_SIZE), "at most 2047"),
        ] {
            let e = parse(&["--kernel".into(), "/k".into(), "--cmdline".into(), bad]).unwrap_err();
            assert!(e.0.contains(says), "{}", e.0);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(size("--mem", "4096").unwrap(), 4096);
        assert_eq!(size("--mem", "64k").unwrap(), 64 << 10);
        assert_eq!(size("--mem", "3G").unwrap(), 3 << 30);
        for bad in ["", "M", "1.5G", "-1M", "99999999999999999999G", "12T"] {
            assert!(size("--mem", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_options_say_what_is_wrong() {
        for (line, says) in [
            ("", "--kernel is required"),
            ("--kernel", "--kernel needs a value"),
            ("--kernel /k --cpus 0", "--cpus: '0'"),
            ("--kernel /k --cpus 9", "--cpus: '9'"),
            ("--kernel /k --mem 63M", "--mem: "),
            ("--kernel /k --mem 65M", "--mem: "),
            ("--kernel /k --mem 4G", "--mem: "),
            ("--kernel /k --image-layout file", "--image-layout: 'file'"),
            ("--kernel /k --policy exit", "--policy: 'exit'"),
            ("--kernel /k --mte maybe", "--mte: 'maybe'"),
            ("--kernel /k --timeout 0", "--timeout: '0'"),
            (
                "--kernel /k --timeout 18446744073709551615",
                "--timeout: '18446",
            ),
            ("--kernel /k --devmem-size 1M", "--devmem-size: "),
            ("--kernel /k --mte off --policy kill", "--policy needs MTE"),
            ("--kernel /k --frobnicate", "unknown option '--frobnicate'"),
        ] {
            let e = parse(&args(line)).unwrap_err();
            assert!(e.0.contains(says), "{line}: {e}");
        }
    }
}
