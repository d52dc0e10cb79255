// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! nta-bench's command line (built on every target, so that the host tests it).

pub const USAGE: &str = "\
usage: nta-bench [--quick] [--reps N] [--only fault|startup|tag] [--dir DIR]
                 [--huge-dir DIR] [--guest PATH]

Measures, in one boot, what mapping memory without tag storage NoTagAccess
costs and saves for an MTE guest, and prints one CSV row per measurement:
  csv,QUESTION,CASE,PARAM,REP,METRIC,VALUE

  fault    stage-2 fault-in: the guest reads one word of each of N pages of
           a NoTagAccess page-cache file (nta-file), of tag-capable anonymous
           memory (tagged-anon), of the same file with MTE off (file-mte-off),
           of a NoTagAccess file the host maps with PMDs (nta-file-2m, in the
           huge dir: 2 MiB stage-2 blocks), and of 2 MiB hugetlb pages (block
           mappings) with and without MTE (tagged-hugetlb, hugetlb-mte-off);
           metric ns_per_page, PARAM = N
  startup  giving an MTE guest a D-byte image: copied into tag-capable
           memory (copy, as today), mapped from the file (map, NoTagAccess in
           4 KiB pages) or mapped from a file in the huge dir (map-2m,
           NoTagAccess in 2 MiB blocks); two guests each; metrics
           first_insn_ms (from opening the image to the guest's first
           instruction), touch_ms (the guest reads every page), anon_mib
           (anonymous memory the two guests added: the copies), rss_file_mib
           (the VMM's RssFile, which counts the shared page cache once per
           mapping), PARAM = D in MiB
  tag      one tag access (STG) to a NoTagAccess page resolved by an EXIT
           and make-taggable, or by KVM's SEA, against an ordinary stage-2
           fault of the same page; metrics fault_ns_per_page, tag_ns_per_page

  --quick          one small point of each (a smoke test, as make check runs it)
  --reps N         repetitions of each point (default 3)
  --only Q         one question only
  --dir DIR        where the other cases create their files (default /ramfs;
                   must not be tmpfs, which is shmem and tag-capable)
  --huge-dir DIR   where the block-mapped cases create their files (default
                   /ext4): a filesystem whose page cache the host maps with
                   PMDs (ext4, xfs); checked
  --guest PATH     the guest program (default /tests/bench-guest.bin)

Times are CNTVCT_EL0 deltas (fault, tag) or CLOCK_MONOTONIC (startup),
converted to ns of the machine's clock; run under QEMU -icount they count
emulated instructions. Every point checks itself (exits, aborts, data read,
and for the block-mapped cases that the host maps the file with PMDs); exit
status 1 if one is wrong, 2 on bad options.";

/// What the command line asked for.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub struct Options {
    pub quick: bool,
    pub reps: usize,
    pub only: Option<String>,
    pub dir: String,
    pub huge_dir: String,
    pub guest: String,
}

/// Parses the arguments after the program's name; `Ok(None)` asks for the usage text.
pub fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut o = Options {
        quick: false,
        reps: 3,
        only: None,
        dir: "/ramfs".into(),
        huge_dir: "/ext4".into(),
        guest: "/tests/bench-guest.bin".into(),
    };
    let mut args = args;
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--help" | "-h" => return Ok(None),
            "--quick" => o.quick = true,
            "--reps" => {
                let v = value()?;
                o.reps = match v.parse() {
                    Ok(n @ 1..=20) => n,
                    _ => return Err(format!("--reps: '{v}' is not a number from 1 to 20")),
                };
            }
            "--only" => {
                let v = value()?;
                if !["fault", "startup", "tag"].contains(&v.as_str()) {
                    return Err(format!("--only: '{v}' is not fault, startup or tag"));
                }
                o.only = Some(v);
            }
            "--dir" => o.dir = value()?,
            "--huge-dir" => {
                let v = value()?;
                if v.is_empty() {
                    return Err("--huge-dir: the directory's name is empty".into());
                }
                o.huge_dir = v;
            }
            "--guest" => o.guest = value()?,
            _ => return Err(format!("unknown option '{a}'")),
        }
    }
    Ok(Some(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Options>, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_options() {
        let o = parse(&[]).unwrap().unwrap();
        assert!(!o.quick && o.reps == 3 && o.only.is_none() && o.dir == "/ramfs");
        assert_eq!(o.huge_dir, "/ext4");
        assert_eq!(o.guest, "/tests/bench-guest.bin");
        let o = parse(&[
            "--quick",
            "--reps",
            "1",
            "--only",
            "tag",
            "--dir",
            "/x",
            "--huge-dir",
            "/xfs",
        ])
        .unwrap()
        .unwrap();
        assert!(o.quick && o.reps == 1 && o.only.as_deref() == Some("tag") && o.dir == "/x");
        assert_eq!(o.huge_dir, "/xfs");
        assert!(parse(&["--help"]).unwrap().is_none());
    }

    #[test]
    fn bad_options_say_what_is_wrong() {
        let err = |args: &[&str]| parse(args).err().unwrap();
        assert_eq!(err(&["--bogus"]), "unknown option '--bogus'");
        assert_eq!(err(&["--reps"]), "--reps needs a value");
        assert!(err(&["--reps", "0"]).contains("not a number from 1 to 20"));
        assert!(err(&["--reps", "x"]).contains("not a number from 1 to 20"));
        assert!(err(&["--only", "all"]).contains("not fault, startup or tag"));
        assert_eq!(err(&["--huge-dir"]), "--huge-dir needs a value");
        assert!(err(&["--huge-dir", ""]).contains("--huge-dir: the directory's name is empty"));
        assert_eq!(err(&["--dir", "/x", "--huge"]), "unknown option '--huge'");
    }
}
