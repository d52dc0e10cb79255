// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
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
    use std::collections::BTreeMap;

    use super::*;

    /// The nodes of a flattened device tree (devicetree specification, chapter 5) by path,
    /// each with its properties by name.
    type Tree = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

    fn be32(b: &[u8], at: usize) -> usize {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize
    }

    fn parse(b: &[u8]) -> Tree {
        assert_eq!(be32(b, 0), 0xd00d_feed, "magic");
        assert_eq!(be32(b, 4), b.len(), "totalsize");
        let (structs, strings) = (be32(b, 8), be32(b, 12));
        let cstr = |at: usize| {
            let end = at + b[at..].iter().position(|&c| c == 0).unwrap();
            String::from_utf8(b[at..end].to_vec()).unwrap()
        };
        let mut tree = Tree::new();
        let mut path: Vec<String> = Vec::new();
        let mut at = structs;
        loop {
            let token = be32(b, at);
            at += 4;
            match token {
                1 => {
                    let name = cstr(at);
                    at = (at + name.len() + 1 + 3) & !3;
                    path.push(name);
                    tree.insert(path.join("/"), BTreeMap::new());
                }
                2 => {
                    path.pop().unwrap();
                }
                3 => {
                    let (len, name) = (be32(b, at), cstr(strings + be32(b, at + 4)));
                    let value = b[at + 8..at + 8 + len].to_vec();
                    at = (at + 8 + len + 3) & !3;
                    tree.get_mut(&path.join("/")).unwrap().insert(name, value);
                }
                4 => {}
                9 => break,
                t => panic!("token {t:#x} at {:#x}", at - 4),
            }
        }
        assert!(path.is_empty(), "unbalanced nodes");
        tree
    }

    fn prop<'a>(t: &'a Tree, node: &str, name: &str) -> &'a [u8] {
        t.get(node)
            .unwrap_or_else(|| panic!("no node {node:?} in {:?}", t.keys()))
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {node}"))
    }

    fn u64s(v: &[u8]) -> Vec<u64> {
        v.chunks(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect()
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
        let t = parse(&build(&m).unwrap());
        assert_eq!(prop(&t, "/chosen", "bootargs"), b"console=ttyS0\0");
        assert_eq!(
            u64s(prop(&t, "/chosen", "linux,initrd-start")),
            [0x4f00_0000]
        );
        assert_eq!(u64s(prop(&t, "/chosen", "linux,initrd-end")), [0x4f10_0000]);
        let uart = format!("/uart@{UART:x}");
        assert_eq!(
            prop(&t, "/aliases", "serial0"),
            format!("{uart}\0").as_bytes()
        );
        assert_eq!(
            prop(&t, "/chosen", "stdout-path"),
            format!("{uart}\0").as_bytes()
        );
        assert_eq!(prop(&t, &uart, "compatible"), b"ns16550a\0");
        for (i, mpidr) in [0x8000_0000u64, 0x8000_0001].into_iter().enumerate() {
            let cpu = format!("/cpus/cpu@{i:x}");
            assert_eq!(u64s(prop(&t, &cpu, "reg")), [mpidr & 0xff_00ff_ffff]);
            assert_eq!(prop(&t, &cpu, "enable-method"), b"psci\0");
        }
        assert!(!t.contains_key("/cpus/cpu@2"));
        assert_eq!(
            u64s(prop(&t, "/memory@40000000", "reg")),
            [0x4000_0000, 256 << 20]
        );
        let gic = format!("/intc@{GIC_DIST:x}");
        assert_eq!(prop(&t, &gic, "compatible"), b"arm,gic-v3\0");
        let pmem = format!("/pmem@{PMEM_BASE:x}");
        assert_eq!(prop(&t, &pmem, "compatible"), b"pmem-region\0");
        assert_eq!(u64s(prop(&t, &pmem, "reg")), [PMEM_BASE, 8 << 20]);
        assert!(!t
            .keys()
            .any(|k| k.starts_with("/memory@") && k != "/memory@40000000"));

        let t = parse(
            &build(&Machine {
                devmem: Some(2 << 20),
                pmem: None,
                initrd: None,
                ..m
            })
            .unwrap(),
        );
        assert_eq!(
            u64s(prop(&t, "/memory@140000000", "reg")),
            [0x1_4000_0000, 2 << 20]
        );
        assert!(!t.contains_key(&pmem));
        assert!(!t["/chosen"].contains_key("linux,initrd-start"));
    }
}
