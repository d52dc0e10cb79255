use std::fmt;

use crate::{Error, Result};

/// What backs a memslot, as far as tags are concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Anonymous, shmem or hugetlbfs memory: it can hold tags.
    TagCapable,
    /// A shared file mapping from the page cache (ramfs, ext4, DAX, ...), with its path.
    SharedFile(String),
    /// A `MAP_PRIVATE` file mapping, with its path.
    PrivateFile(String),
    /// Device memory without tag storage, with its device node.
    Device(String),
}

impl Backing {
    /// Whether KVM maps this memory with tags (or `NoTagAccess`, if not).
    pub fn tag_capable(&self) -> bool {
        matches!(self, Backing::TagCapable)
    }
}

impl fmt::Display for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backing::TagCapable => write!(f, "tag-capable memory"),
            Backing::SharedFile(p) => write!(f, "shared file mapping of {p}"),
            Backing::PrivateFile(p) => write!(f, "private file mapping of {p}"),
            Backing::Device(p) => write!(f, "device memory of {p}"),
        }
    }
}

/// A memslot as the VMM registered it with KVM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The memslot number.
    pub id: u32,
    /// Guest physical address of the first byte.
    pub gpa: u64,
    /// Size in bytes, a multiple of the page size.
    pub size: u64,
    /// Host virtual address of the first byte.
    pub host_addr: u64,
    /// What backs it.
    pub backing: Backing,
}

impl Slot {
    /// Whether `gpa` lies in this slot.
    pub fn contains(&self, gpa: u64) -> bool {
        gpa >= self.gpa && gpa - self.gpa < self.size
    }

    /// The host address of `gpa`, which must lie in this slot.
    pub fn host_addr_of(&self, gpa: u64) -> u64 {
        debug_assert!(self.contains(gpa));
        self.host_addr + (gpa - self.gpa)
    }
}

/// The guest's memory map: the memslots a VMM registered, for looking faults up.
#[derive(Debug)]
pub struct GuestMemory {
    page_size: u64,
    slots: Vec<Slot>,
}

impl GuestMemory {
    /// An empty map for pages of `page_size` bytes.
    pub fn new(page_size: u64) -> Self {
        Self {
            page_size,
            slots: Vec::new(),
        }
    }

    /// The page size the map was made for.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Records a memslot; refuses empty, unaligned or overlapping ones and reused ids.
    pub fn add(&mut self, slot: Slot) -> Result<()> {
        let mask = self.page_size - 1;
        if slot.size == 0 || (slot.gpa | slot.size | slot.host_addr) & mask != 0 {
            return Err(Error::BadSlot(format!(
                "slot {}: gpa {:#x}, size {:#x}, host address {:#x} must be non-empty and \
                 page-aligned",
                slot.id, slot.gpa, slot.size, slot.host_addr
            )));
        }
        let end = slot.gpa.checked_add(slot.size).ok_or_else(|| {
            Error::BadSlot(format!("slot {}: wraps around the address space", slot.id))
        })?;
        for s in &self.slots {
            if s.id == slot.id {
                return Err(Error::BadSlot(format!("slot {} registered twice", slot.id)));
            }
            if slot.gpa < s.gpa + s.size && s.gpa < end {
                return Err(Error::BadSlot(format!(
                    "slot {} overlaps slot {}",
                    slot.id, s.id
                )));
            }
        }
        self.slots.push(slot);
        Ok(())
    }

    /// The memslot that holds `gpa`.
    pub fn lookup(&self, gpa: u64) -> Result<&Slot> {
        self.slots
            .iter()
            .find(|s| s.contains(gpa))
            .ok_or(Error::NoSlot { gpa })
    }

    /// Marks `[gpa, gpa + size)`, which must lie within one slot, as tag-capable from now on,
    /// splitting the slot's record if needed. The KVM memslot itself is unchanged.
    pub fn mark_tag_capable(&mut self, gpa: u64, size: u64) -> Result<()> {
        let idx = self
            .slots
            .iter()
            .position(|s| s.contains(gpa))
            .ok_or(Error::NoSlot { gpa })?;
        let slot = &self.slots[idx];
        if !slot.contains(gpa + size - 1) {
            return Err(Error::BadSlot(format!(
                "range {gpa:#x}+{size:#x} crosses the end of slot {}",
                slot.id
            )));
        }
        if slot.backing.tag_capable() {
            return Ok(());
        }
        // The record is split into before / swapped / after; they share the slot id.
        let old = self.slots.remove(idx);
        let parts = [
            (old.gpa, gpa - old.gpa, old.backing.clone()),
            (gpa, size, Backing::TagCapable),
            (gpa + size, old.gpa + old.size - (gpa + size), old.backing),
        ];
        for (start, len, backing) in parts {
            if len > 0 {
                self.slots.push(Slot {
                    id: old.id,
                    gpa: start,
                    size: len,
                    host_addr: old.host_addr + (start - old.gpa),
                    backing,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(id: u32, gpa: u64, size: u64, backing: Backing) -> Slot {
        Slot {
            id,
            gpa,
            size,
            host_addr: 0x7f00_0000_0000_u64.wrapping_add(gpa),
            backing,
        }
    }

    fn map() -> GuestMemory {
        let mut m = GuestMemory::new(4096);
        m.add(slot(0, 0x4000_0000, 0x20_0000, Backing::TagCapable))
            .unwrap();
        m.add(slot(
            1,
            0x8000_0000,
            0x1_0000,
            Backing::SharedFile("/ramfs/img".into()),
        ))
        .unwrap();
        m
    }

    #[test]
    fn lookup_finds_slot_and_host_address() {
        let m = map();
        let s = m.lookup(0x8000_2010).unwrap();
        assert_eq!(s.id, 1);
        assert_eq!(s.host_addr_of(0x8000_2010), 0x7f00_8000_2010);
        assert!(matches!(
            m.lookup(0x8001_0000),
            Err(Error::NoSlot { gpa: 0x8001_0000 })
        ));
    }

    #[test]
    fn bad_slots_are_refused() {
        let mut m = map();
        let dev = || Backing::Device("/dev/x".into());
        assert!(m.add(slot(2, 0x8000_f000, 0x2000, dev())).is_err()); // overlap
        assert!(m.add(slot(1, 0x9000_0000, 0x1000, dev())).is_err()); // id reused
        assert!(m.add(slot(2, 0x9000_0800, 0x1000, dev())).is_err()); // unaligned
        assert!(m.add(slot(2, 0x9000_0000, 0, dev())).is_err()); // empty
        assert!(m.add(slot(2, u64::MAX - 0xfff, 0x2000, dev())).is_err()); // wraps
        assert!(m.add(slot(2, 0x9000_0000, 0x1000, dev())).is_ok());
    }

    #[test]
    fn marking_tag_capable_splits_the_record() {
        let mut m = map();
        m.mark_tag_capable(0x8000_4000, 0x1000).unwrap();
        assert!(!m.lookup(0x8000_3fff).unwrap().backing.tag_capable());
        assert!(m.lookup(0x8000_4000).unwrap().backing.tag_capable());
        assert!(m.lookup(0x8000_4fff).unwrap().backing.tag_capable());
        assert!(!m.lookup(0x8000_5000).unwrap().backing.tag_capable());
        assert_eq!(
            m.lookup(0x8000_5000).unwrap().host_addr_of(0x8000_5000),
            0x7f00_8000_5000
        );
        // Again, and at the very start: nothing breaks.
        m.mark_tag_capable(0x8000_4000, 0x1000).unwrap();
        m.mark_tag_capable(0x8000_0000, 0x1000).unwrap();
        assert!(m.lookup(0x8000_0000).unwrap().backing.tag_capable());
        assert!(m.mark_tag_capable(0x8000_f000, 0x2000).is_err());
    }
}
