// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! What nta-vm says when the guest is done: on stderr for people, in `--stats` for scripts.

use std::fmt::Write as _;

use crate::devices::{Counters, AREAS};
use crate::options::Options;
use crate::vm::{End, Report, Smaps};

fn secs(ms: u64) -> String {
    format!("{}.{:01} s", ms / 1000, (ms % 1000) / 100)
}

fn mib(bytes: u64) -> String {
    let m = bytes as f64 / f64::from(1 << 20);
    if m.fract() == 0.0 {
        format!("{m:.0} MiB")
    } else {
        format!("{m:.1} MiB")
    }
}

fn smaps_line(s: &Smaps) -> String {
    format!(
        "Rss {} MiB, Pss {} MiB (anonymous {}, file {})",
        s.rss / 1024,
        s.pss / 1024,
        s.pss_anon / 1024,
        s.pss_file / 1024
    )
}

/// Prints the report, writes `--stats`, and returns the exit status.
pub fn finish(o: &Options, r: &Report) -> u8 {
    let d = &r.devices;
    let c = &d.counters;
    let init = d.init_ms();
    let (what, code, end) = match &r.end {
        End::PowerOff(Some(0)) => ("guest powered off with status 0".to_string(), 0, "poweroff"),
        End::PowerOff(Some(s)) => (
            format!("guest powered off with status {s} (failure)"),
            1,
            "poweroff",
        ),
        End::PowerOff(None) => (
            "guest powered off without writing a status (counted as 0)".into(),
            0,
            "poweroff",
        ),
        End::Reset => (
            "guest reset itself (after a panic, with panic=-1)".into(),
            4,
            "reset",
        ),
        End::Crash => ("guest crashed (crash event)".into(), 4, "crash"),
        End::Fatal(e) => (format!("stopped the guest: {e}"), 3, "fatal"),
        End::Timeout => (
            "guest did not finish within --timeout".into(),
            124,
            "timeout",
        ),
    };
    let init_s = init.map_or("init not reached".into(), |ms| {
        format!("init reached after {}", secs(ms))
    });
    eprintln!("nta-vm: {what} after {} ({init_s})", secs(r.off_ms));
    let layout: Vec<String> = r
        .memory
        .iter()
        .map(|(a, len, b)| format!("{} {} ({b})", a.name(), mib(*len)))
        .collect();
    eprintln!("nta-vm: memory: {}", layout.join(", "));
    let exits: Vec<String> = AREAS
        .iter()
        .map(|a| format!("{} {}", a.name(), Counters::get(&c.tag_exits, *a)))
        .collect();
    eprintln!("nta-vm: tag-access exits: {}", exits.join(", "));
    let swaps: Vec<String> = AREAS
        .iter()
        .filter(|a| Counters::get(&c.swaps, **a) > 0)
        .map(|a| {
            let n = Counters::get(&c.swaps, *a);
            format!(
                "{} {n} chunk{} ({})",
                a.name(),
                if n == 1 { "" } else { "s" },
                mib(Counters::get(&c.swapped_bytes, *a))
            )
        })
        .collect();
    eprintln!(
        "nta-vm: swapped to tag-capable memory: {}",
        if swaps.is_empty() {
            "nothing".into()
        } else {
            swaps.join(", ")
        }
    );
    eprintln!(
        "nta-vm: aborts injected {}, stale exits {}, vCPU writes retried across a swap {}, \
         MMIO exits {}",
        c.injected.load(std::sync::atomic::Ordering::Relaxed),
        c.stale_exits.load(std::sync::atomic::Ordering::Relaxed),
        c.efault_retries.load(std::sync::atomic::Ordering::Relaxed),
        c.mmio_exits.load(std::sync::atomic::Ordering::Relaxed)
    );
    if let Some(s) = &r.smaps_at_init {
        eprintln!("nta-vm: host memory at the guest's init: {}", smaps_line(s));
    }
    if let Some(s) = &r.smaps_at_end {
        eprintln!("nta-vm: host memory at the end: {}", smaps_line(s));
    }

    if let Some(path) = &o.stats {
        let mut t = String::new();
        let rl = std::sync::atomic::Ordering::Relaxed;
        let _ = writeln!(t, "end={end}");
        let _ = writeln!(t, "status={}", d.status().map_or(-1, i64::from));
        let _ = writeln!(t, "init_ms={}", init.unwrap_or(0));
        let _ = writeln!(t, "off_ms={}", r.off_ms);
        for a in AREAS {
            let n = a.name();
            let _ = writeln!(t, "tag_exits_{n}={}", Counters::get(&c.tag_exits, a));
            let _ = writeln!(t, "swaps_{n}={}", Counters::get(&c.swaps, a));
            let _ = writeln!(
                t,
                "swapped_kib_{n}={}",
                Counters::get(&c.swapped_bytes, a) / 1024
            );
        }
        let _ = writeln!(t, "injected={}", c.injected.load(rl));
        let _ = writeln!(t, "stale_exits={}", c.stale_exits.load(rl));
        let _ = writeln!(t, "efault_retries={}", c.efault_retries.load(rl));
        let _ = writeln!(t, "mmio_exits={}", c.mmio_exits.load(rl));
        for (when, s) in [("init", &r.smaps_at_init), ("end", &r.smaps_at_end)] {
            let s = s.unwrap_or_default();
            let _ = writeln!(t, "rss_kib_{when}={}", s.rss);
            let _ = writeln!(t, "pss_kib_{when}={}", s.pss);
            let _ = writeln!(t, "pss_anon_kib_{when}={}", s.pss_anon);
            let _ = writeln!(t, "pss_file_kib_{when}={}", s.pss_file);
        }
        if let Err(e) = std::fs::write(path, t) {
            eprintln!("nta-vm: --stats {}: {e}", path.display());
            return 3;
        }
    }
    code
}
