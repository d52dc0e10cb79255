// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! How much of an address range the host maps with PMDs, from /proc/self/smaps (built on
//! every target, so that the host tests it).

use std::io::BufRead;

/// One smaps entry (a VMA): its range and its `FilePmdMapped:` field, if it had one.
struct Entry {
    start: u64,
    end: u64,
    file_pmd_kib: Option<u64>,
}

/// The `start-end` range of an smaps entry's first line, or `None` for a field line.
fn header(line: &str) -> Option<(u64, u64)> {
    let (start, end) = line.split_whitespace().next()?.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    (start < end).then_some((start, end))
}

/// The value of a `NAME:  N kB` line of /proc files such as status and smaps, if `line` is
/// one for `name` (given with its colon).
pub fn kib_value(line: &str, name: &str) -> Option<u64> {
    line.strip_prefix(name)?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// The KiB of `[start, end)` that are file memory mapped with PMDs: the sum of `FilePmdMapped:`
/// over the smaps entries (VMAs) that cover it. Fails, saying why, unless those entries cover
/// the range exactly (without reaching beyond it, where their PMDs could not be told apart) and
/// each has the field.
pub fn file_pmd_mapped_kib(smaps: impl BufRead, start: u64, end: u64) -> Result<u64, String> {
    let mut entries: Vec<Entry> = Vec::new();
    for line in smaps.lines() {
        let line = line.map_err(|e| format!("reading smaps: {e}"))?;
        if let Some((s, e)) = header(&line) {
            entries.push(Entry {
                start: s,
                end: e,
                file_pmd_kib: None,
            });
        } else if line.starts_with("FilePmdMapped:") {
            let kib = kib_value(&line, "FilePmdMapped:");
            let kib = kib.ok_or(format!("smaps: bad line '{line}'"))?;
            let entry = entries
                .last_mut()
                .ok_or("smaps: a field before any entry")?;
            entry.file_pmd_kib = Some(kib);
        }
    }
    let mut covered = 0;
    let mut kib = 0;
    for e in entries.iter().filter(|e| e.start < end && start < e.end) {
        if e.start < start || e.end > end {
            return Err(format!(
                "smaps entry {:x}-{:x} reaches beyond the mapping {start:x}-{end:x}",
                e.start, e.end
            ));
        }
        covered += e.end - e.start;
        kib += e.file_pmd_kib.ok_or(format!(
            "smaps entry {:x}-{:x} has no FilePmdMapped field",
            e.start, e.end
        ))?;
    }
    if covered != end - start {
        return Err(format!(
            "smaps entries cover {covered:#x} of the {:#x} bytes at {start:x}-{end:x}",
            end - start
        ));
    }
    Ok(kib)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
aaaa00000000-aaaa00010000 r-xp 00000000 00:02 7   /tests/nta-bench
Size:                 64 kB
FilePmdMapped:         0 kB
VmFlags: rd ex mr mw me
ffff80000000-ffff80400000 r--s 00000000 fe:00 12  /ext4/nta-bench-image-4M.img
Size:               4096 kB
Rss:                4096 kB
FilePmdMapped:      4096 kB
Shared_Hugetlb:        0 kB
THPeligible:           1
VmFlags: rd sh mr mw me ms hg
ffff80400000-ffff80600000 r--s 00400000 fe:00 12  /ext4/nta-bench-image-4M.img
Size:               2048 kB
FilePmdMapped:         0 kB
VmFlags: rd sh mr mw me ms
ffff80600000-ffff80800000 rw-p 00000000 00:00 0
Size:               2048 kB
VmFlags: rd wr mr mw me ac
";

    fn kib(start: u64, end: u64) -> Result<u64, String> {
        file_pmd_mapped_kib(SMAPS.as_bytes(), start, end)
    }

    #[test]
    fn sums_the_entries_that_cover_the_range() {
        assert_eq!(kib(0xffff_8000_0000, 0xffff_8040_0000), Ok(4096));
        // Two VMAs of one mapping: the second is PTE-mapped.
        assert_eq!(kib(0xffff_8000_0000, 0xffff_8060_0000), Ok(4096));
        assert_eq!(kib(0xffff_8040_0000, 0xffff_8060_0000), Ok(0));
    }

    #[test]
    fn says_why_it_cannot_tell() {
        let err = |start, end| kib(start, end).unwrap_err();
        assert!(err(0xffff_8000_0000, 0xffff_8020_0000).contains("reaches beyond the mapping"));
        assert!(err(0xffff_8060_0000, 0xffff_8080_0000).contains("has no FilePmdMapped field"));
        assert!(err(0xffff_9000_0000, 0xffff_9020_0000).contains("cover 0x0 of the 0x200000"));
        assert!(err(0xffff_8040_0000, 0xffff_8070_0000).contains("reaches beyond"));
        let bad = "ffff80000000-ffff80200000 r--s 0 0:0 1 /f\nFilePmdMapped: lots\n";
        let e = file_pmd_mapped_kib(bad.as_bytes(), 0xffff_8000_0000, 0xffff_8020_0000);
        assert!(e.unwrap_err().contains("bad line 'FilePmdMapped: lots'"));
    }
}
