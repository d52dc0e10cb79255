// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The guest's physical address map, and where the kernel, initrd and device tree go.

use std::fmt;

/// GICv3 distributor (64 KiB).
pub const GIC_DIST: u64 = 0x0800_0000;
pub const GIC_DIST_SIZE: u64 = 0x1_0000;
/// GICv3 redistributors, 128 KiB per vCPU.
pub const GIC_REDIST: u64 = 0x080a_0000;
pub const GIC_REDIST_SIZE_PER_CPU: u64 = 0x2_0000;
/// The 16550 UART (one byte per register) and its interrupt, SPI 1.
pub const UART: u64 = 0x0900_0000;
pub const UART_SIZE: u64 = 0x1000;
pub const UART_SPI: u32 = 1;
/// nta-vm's status register page: the guest writes its exit status (offset 0) and says it
/// reached init (offset 4).
pub const STATUS: u64 = 0x0901_0000;
pub const STATUS_SIZE: u64 = 0x1000;
pub const STATUS_EXIT: u64 = 0;
pub const STATUS_INIT: u64 = 4;
/// Guest RAM.
pub const RAM_BASE: u64 = 0x4000_0000;
/// The pmem region.
pub const PMEM_BASE: u64 = 0x1000_0000;
/// Device memory, as more RAM.
pub const DEVMEM_BASE: u64 = 0x1_4000_0000;
/// The largest pmem region: up to RAM_BASE.
pub const PMEM_MAX: u64 = RAM_BASE - PMEM_BASE;

const MIB: u64 = 1 << 20;
/// The device tree's slot at the end of RAM.
pub const FDT_MAX: u64 = 2 * MIB;

/// What the layout needs that does not fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoRoom(pub String);

impl fmt::Display for NoRoom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoRoom {}

/// Where the boot payload goes in RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Where the kernel's first byte goes (RAM_BASE + text_offset).
    pub kernel: u64,
    /// The initrd's first byte, if there is one.
    pub initrd: Option<u64>,
    /// The device tree's first byte.
    pub fdt: u64,
}

/// Places a kernel that needs `image_size` bytes from `text_offset` (arm64 booting.rst),
/// an initrd of `initrd_len` bytes and the device tree in `mem` bytes of RAM: the kernel at
/// the start, the device tree in the last 2 MiB, the initrd just below it.
pub fn place(
    mem: u64,
    text_offset: u64,
    image_size: u64,
    initrd_len: Option<u64>,
) -> Result<Placement, NoRoom> {
    let end = RAM_BASE + mem;
    let fdt = end - FDT_MAX;
    let absurd = || {
        NoRoom(format!(
            "the kernel's text_offset {text_offset:#x} and image_size {image_size:#x} are absurd"
        ))
    };
    let kernel = RAM_BASE.checked_add(text_offset).ok_or_else(absurd)?;
    let kernel_end = kernel.checked_add(image_size).ok_or_else(absurd)?;
    let initrd = match initrd_len {
        Some(len) => {
            let start = fdt
                .checked_sub(len)
                .map(|s| s & !0xfff)
                .filter(|s| *s >= kernel_end)
                .ok_or_else(|| {
                    NoRoom(format!(
                        "--mem {} MiB cannot hold the kernel ({} MiB), the initrd ({} KiB) and \
                         the device tree",
                        mem / MIB,
                        image_size.div_ceil(MIB),
                        len.div_ceil(1024)
                    ))
                })?;
            Some(start)
        }
        None => None,
    };
    if kernel_end > fdt {
        return Err(NoRoom(format!(
            "--mem {} MiB cannot hold the kernel ({} MiB) and the device tree",
            mem / MIB,
            image_size.div_ceil(MIB)
        )));
    }
    Ok(Placement {
        kernel,
        initrd,
        fdt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_first_fdt_last_initrd_below() {
        let p = place(256 * MIB, 0, 20 * MIB, Some(5000)).unwrap();
        assert_eq!(p.kernel, RAM_BASE);
        assert_eq!(p.fdt, RAM_BASE + 254 * MIB);
        let i = p.initrd.unwrap();
        assert!(i % 4096 == 0 && i + 5000 <= p.fdt && i >= RAM_BASE + 20 * MIB);
    }

    #[test]
    fn too_small() {
        assert!(place(64 * MIB, 0, 63 * MIB, None).is_err());
        assert!(place(64 * MIB, 0, 40 * MIB, Some(30 * MIB)).is_err());
        assert!(place(64 * MIB, 0, u64::MAX, None).is_err());
        assert!(place(64 * MIB, u64::MAX, 1, None).is_err());
        assert!(place(64 * MIB, 0, 40 * MIB, Some(u64::MAX)).is_err());
        assert!(place(64 * MIB, 0x8_0000, 40 * MIB, Some(20 * MIB)).is_ok());
    }

    #[test]
    fn devices_below_ram_and_regions_apart() {
        const { assert!(GIC_REDIST + 8 * GIC_REDIST_SIZE_PER_CPU <= UART) };
        const { assert!(STATUS + STATUS_SIZE <= RAM_BASE) };
        const { assert!(STATUS + STATUS_SIZE <= PMEM_BASE && RAM_BASE + (3 << 30) <= DEVMEM_BASE) };
    }
}
