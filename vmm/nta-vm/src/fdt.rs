// SPDX-License-Identifier: MIT OR Apache-2.0
//! The guest's device tree, written with vm-fdt.

use vm_fdt::{Error, FdtWriter};

use crate::layout::*;

/// What the device tree describes.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    /// The vCPUs' MPIDR_EL1 values, as KVM set them.
    pub mpidrs: Vec<u64>,
    pub cmdline: String,
    /// RAM at RAM_BASE, in bytes.
    pub ram: u64,
    /// `[start, end)` of the initrd.
    pub initrd: Option<(u64, u64)>,
    /// Size of the pmem region at PMEM_BASE.
    pub pmem: Option<u64>,
    /// Size of the device memory at DEVMEM_BASE.
    pub devmem: Option<u64>,
}

const PHANDLE_GIC: u32 = 1;
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
const IRQ_TYPE_EDGE_RISING: u32 = 1;
const IRQ_TYPE_LEVEL_HIGH: u32 = 4;
/// The arch timer's PPIs: secure, non-secure, virtual, hypervisor physical.
const TIMER_PPIS: [u32; 4] = [13, 14, 11, 10];

fn memory(fdt: &mut FdtWriter, base: u64, size: u64) -> Result<(), Error> {
    let n = fdt.begin_node(&format!("memory@{base:x}"))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u64("reg", &[base, size])?;
    fdt.end_node(n)
}

/// The device tree blob for `m`.
pub fn build(m: &Machine) -> Result<Vec<u8>, Error> {
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_string("compatible", "linux,dummy-virt")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_u32("interrupt-parent", PHANDLE_GIC)?;

    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string("bootargs", &m.cmdline)?;
    fdt.property_string("stdout-path", &format!("/uart@{UART:x}"))?;
    if let Some((start, end)) = m.initrd {
        fdt.property_u64("linux,initrd-start", start)?;
        fdt.property_u64("linux,initrd-end", end)?;
    }
    fdt.end_node(chosen)?;

    // The name Linux gives the console (ttyS0) follows the alias.
    let aliases = fdt.begin_node("aliases")?;
    fdt.property_string("serial0", &format!("/uart@{UART:x}"))?;
    fdt.end_node(aliases)?;

    memory(&mut fdt, RAM_BASE, m.ram)?;
    if let Some(size) = m.devmem {
        memory(&mut fdt, DEVMEM_BASE, size)?;
    }

    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 0)?;
    for mpidr in &m.mpidrs {
        // The affinity fields of MPIDR_EL1: Aff3 (39:32), Aff2..Aff0 (23:0).
        let reg = mpidr & 0xff_00ff_ffff;
        let cpu = fdt.begin_node(&format!("cpu@{reg:x}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", "arm,arm-v8")?;
        fdt.property_string("enable-method", "psci")?;
        fdt.property_u64("reg", reg)?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(cpus)?;

    let psci = fdt.begin_node("psci")?;
    fdt.property_string_list(
        "compatible",
        vec!["arm,psci-1.0".into(), "arm,psci-0.2".into()],
    )?;
    fdt.property_string("method", "hvc")?;
    fdt.end_node(psci)?;

    let gic = fdt.begin_node(&format!("intc@{GIC_DIST:x}"))?;
    fdt.property_string("compatible", "arm,gic-v3")?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_u32("#interrupt-cells", 3)?;
    let redist = GIC_REDIST_SIZE_PER_CPU * m.mpidrs.len() as u64;
    fdt.property_array_u64("reg", &[GIC_DIST, GIC_DIST_SIZE, GIC_REDIST, redist])?;
    fdt.property_phandle(PHANDLE_GIC)?;
    fdt.end_node(gic)?;

    let timer = fdt.begin_node("timer")?;
    fdt.property_string("compatible", "arm,armv8-timer")?;
    fdt.property_null("always-on")?;
    let irqs: Vec<u32> = TIMER_PPIS
        .iter()
        .flat_map(|p| [GIC_PPI, *p, IRQ_TYPE_LEVEL_HIGH])
        .collect();
    fdt.property_array_u32("interrupts", &irqs)?;
    fdt.end_node(timer)?;

    let uart = fdt.begin_node(&format!("uart@{UART:x}"))?;
    fdt.property_string("compatible", "ns16550a")?;
    fdt.property_array_u64("reg", &[UART, UART_SIZE])?;
    fdt.property_u32("clock-frequency", 1_843_200)?;
    fdt.property_array_u32("interrupts", &[GIC_SPI, UART_SPI, IRQ_TYPE_EDGE_RISING])?;
    fdt.end_node(uart)?;

    let status = fdt.begin_node(&format!("nta-status@{STATUS:x}"))?;
    fdt.property_string("compatible", "nta,vm-status")?;
    fdt.property_array_u64("reg", &[STATUS, STATUS_SIZE])?;
    fdt.end_node(status)?;

    if let Some(size) = m.pmem {
        // Documentation/devicetree/bindings/pmem/pmem-region.yaml: of_pmem makes it an
        // nvdimm region, the pmem driver /dev/pmem0.
        let pmem = fdt.begin_node(&format!("pmem@{PMEM_BASE:x}"))?;
        fdt.property_string("compatible", "pmem-region")?;
        fdt.property_array_u64("reg", &[PMEM_BASE, size])?;
        fdt.end_node(pmem)?;
    }

    fdt.end_node(root)?;
    fdt.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn describes_what_is_there() {
        let m = Machine {
            mpidrs: vec![0x8000_0000, 0x8000_0001],
            cmdline: "console=ttyS0".into(),
            ram: 256 << 20,
            initrd: Some((0x4f00_0000, 0x4f10_0000)),
            pmem: Some(8 << 20),
            devmem: None,
        };
        let b = build(&m).unwrap();
        assert_eq!(&b[..4], &0xd00d_feed_u32.to_be_bytes());
        for s in [
            &b"cpu@0"[..],
            b"cpu@1",
            b"pmem-region",
            b"ns16550a",
            b"arm,gic-v3",
            b"console=ttyS0",
            b"memory@40000000",
            b"linux,initrd-start",
            b"serial0",
        ] {
            assert!(contains(&b, s), "{}", String::from_utf8_lossy(s));
        }
        assert!(!contains(&b, b"memory@140000000"));
        let b = build(&Machine {
            devmem: Some(2 << 20),
            pmem: None,
            initrd: None,
            ..m
        })
        .unwrap();
        assert!(contains(&b, b"memory@140000000"));
        assert!(!contains(&b, b"pmem-region") && !contains(&b, b"linux,initrd-start"));
    }
}
