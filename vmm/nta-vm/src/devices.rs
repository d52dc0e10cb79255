// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The guest's MMIO devices: a 16550 UART (vm-superio) on stdout and nta-vm's status
//! register; and the run's counters.

use std::collections::HashSet;
use std::io::{self, Stdout};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

use std::sync::Arc;

use kvm_bindings::{KVM_ARM_IRQ_TYPE_SHIFT, KVM_ARM_IRQ_TYPE_SPI};
use kvm_ioctls::VmFd;
use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};

use crate::layout::*;

/// The UART's interrupt, SPI [`UART_SPI`], an edge KVM_IRQ_LINE raises and lowers.
///
/// Not an irqfd: on Linux 7.3, KVM's atomic irqfd path for SPIs can reach
/// kvm_make_all_cpus_request() with interrupts disabled when the vGIC needs to kick every vCPU
/// (its first active SPI), which warns in smp_call_function_many_cond(). KVM_IRQ_LINE injects
/// from this thread, in process context.
pub struct Irq(pub Arc<VmFd>);

impl Trigger for Irq {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        let irq = (KVM_ARM_IRQ_TYPE_SPI << KVM_ARM_IRQ_TYPE_SHIFT) | (32 + UART_SPI);
        for level in [true, false] {
            self.0
                .set_irq_line(irq, level)
                .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        }
        Ok(())
    }
}

/// Where guest memory came from, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    Image,
    Ram,
    Pmem,
    Device,
}

pub const AREAS: [Area; 4] = [Area::Image, Area::Ram, Area::Pmem, Area::Device];

/// How many addresses without a device the log names.
const MAX_UNKNOWN: usize = 64;
/// The 16550's registers (one byte each); the rest of its page is a hole.
const UART_REGS: u64 = 8;

impl Area {
    pub fn name(self) -> &'static str {
        match self {
            Area::Image => "image",
            Area::Ram => "ram",
            Area::Pmem => "pmem",
            Area::Device => "device",
        }
    }

    /// The memslot nta-vm gives the area.
    pub fn slot(self) -> u32 {
        self as u32
    }
}

/// What happened in the run, updated by the vCPU threads.
#[derive(Debug, Default)]
pub struct Counters {
    pub tag_exits: [AtomicU64; 4],
    pub swaps: [AtomicU64; 4],
    pub swapped_bytes: [AtomicU64; 4],
    pub injected: AtomicU64,
    pub stale_exits: AtomicU64,
    pub efault_retries: AtomicU64,
    pub mmio_exits: AtomicU64,
}

impl Counters {
    pub fn get(c: &[AtomicU64; 4], a: Area) -> u64 {
        c[a as usize].load(Relaxed)
    }

    pub fn add(c: &[AtomicU64; 4], a: Area, n: u64) {
        c[a as usize].fetch_add(n, Relaxed);
    }
}

/// The devices, shared by the vCPU threads.
pub struct Devices {
    serial: Mutex<Serial<Irq, NoEvents, Stdout>>,
    /// The guest's exit status, -1 until it writes one.
    status: AtomicI64,
    /// Milliseconds from `start` to the guest's "init reached" write, 0 until then.
    init_ms: AtomicU64,
    start: Instant,
    /// Addresses of accesses where no device is, said once each, at most MAX_UNKNOWN.
    unknown: Mutex<HashSet<u64>>,
    pub counters: Counters,
}

impl Devices {
    pub fn new(irq: Irq, start: Instant) -> Self {
        Devices {
            serial: Mutex::new(Serial::new(irq, io::stdout())),
            status: AtomicI64::new(-1),
            init_ms: AtomicU64::new(0),
            start,
            unknown: Mutex::new(HashSet::new()),
            counters: Counters::default(),
        }
    }

    /// The exit status the guest wrote, if it did.
    pub fn status(&self) -> Option<u32> {
        u32::try_from(self.status.load(Relaxed)).ok()
    }

    /// Milliseconds to the guest's init, if it got there.
    pub fn init_ms(&self) -> Option<u64> {
        Some(self.init_ms.load(Relaxed)).filter(|&ms| ms != 0)
    }

    fn unknown(&self, what: &str, addr: u64, len: usize) {
        let mut seen = self.unknown.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() < MAX_UNKNOWN && seen.insert(addr) {
            eprintln!(
                "nta-vm: guest {what} of {len} bytes at {addr:#x}, where no device is (ignored)"
            );
        }
    }

    pub fn read(&self, addr: u64, data: &mut [u8]) {
        self.counters.mmio_exits.fetch_add(1, Relaxed);
        data.fill(0);
        if (UART..UART + UART_REGS).contains(&addr) && data.len() == 1 {
            let mut s = self.serial.lock().unwrap_or_else(|e| e.into_inner());
            data[0] = s.read((addr - UART) as u8);
        } else if !(STATUS..STATUS + STATUS_SIZE).contains(&addr) {
            self.unknown("read", addr, data.len());
        }
    }

    pub fn write(&self, addr: u64, data: &[u8]) {
        self.counters.mmio_exits.fetch_add(1, Relaxed);
        if (UART..UART + UART_REGS).contains(&addr) && data.len() == 1 {
            let mut s = self.serial.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = s.write((addr - UART) as u8, data[0]) {
                eprintln!("nta-vm: console: {e}");
            }
        } else if addr == STATUS + STATUS_EXIT && data.len() == 4 {
            let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            self.status.store(v.into(), Relaxed);
        } else if addr == STATUS + STATUS_INIT && data.len() == 4 {
            let ms = (self.start.elapsed().as_millis() as u64).max(1);
            // Only the first: init's start, not a later write.
            let _ = self.init_ms.compare_exchange(0, ms, Relaxed, Relaxed);
        } else {
            self.unknown("write", addr, data.len());
        }
    }
}
