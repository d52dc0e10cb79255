//! nta-bench's command line (built on every target, so that the host tests it).

pub const USAGE: &str = "\
usage: nta-bench [--quick] [--reps N] [--only fault|startup|tag] [--dir DIR] [--guest PATH]

Measures, in one boot, what mapping memory without tag storage NoTagAccess
costs and saves for an MTE guest, and prints one CSV row per measurement:
  csv,QUESTION,CASE,PARAM,REP,METRIC,VALUE

  fault    stage-2 fault-in: the guest reads one word of each of N pages of
           a NoTagAccess page-cache file (nta-file), of tag-capable anonymous
           memory (tagged-anon), of the same file with MTE off (file-mte-off),
           and of 2 MiB hugetlb pages (block mappings) with and without MTE;
           metric ns_per_page, PARAM = N
  startup  giving an MTE guest a D-byte image: copied into tag-capable
           memory (copy, as today) or mapped from the file (map, NoTagAccess);
           two guests each; metrics first_insn_ms (from opening the image to
           the guest's first instruction), touch_ms (the guest reads every
           page), anon_mib (anonymous memory the two guests added: the
           copies), rss_file_mib (the VMM's RssFile, which counts the shared
           page cache once per mapping), PARAM = D in MiB
  tag      one tag access (STG) to a NoTagAccess page resolved by an EXIT
           and make-taggable, or by KVM's SEA, against an ordinary stage-2
           fault of the same page; metrics fault_ns_per_page, tag_ns_per_page

  --quick       one small point of each (a smoke test, as make check runs it)
  --reps N      repetitions of each point (default 3)
  --only Q      one question only
  --dir DIR     where to create the files (default /ramfs; must not be tmpfs,
                which is shmem and tag-capable)
  --guest PATH  the guest program (default /tests/bench-guest.bin)

Times are CNTVCT_EL0 deltas (fault, tag) or CLOCK_MONOTONIC (startup),
converted to ns of the machine's clock; run under QEMU -icount they count
emulated instructions. Every point checks itself (exits, aborts, data read);
exit status 1 if one is wrong, 2 on bad options.";

/// What the command line asked for.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub struct Options {
    pub quick: bool,
    pub reps: usize,
    pub only: Option<String>,
    pub dir: String,
    pub guest: String,
}

/// Parses the arguments after the program's name; `Ok(None)` asks for the usage text.
pub fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut o = Options {
        quick: false,
        reps: 3,
        only: None,
        dir: "/ramfs".into(),
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
        let o = parse(&["--quick", "--reps", "1", "--only", "tag", "--dir", "/x"])
            .unwrap()
            .unwrap();
        assert!(o.quick && o.reps == 1 && o.only.as_deref() == Some("tag") && o.dir == "/x");
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
    }
}
