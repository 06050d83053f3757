//! User-namespace id ranges.
//!
//! Every sandbox gets its own block of 65,536 host uids/gids: sandbox root is
//! host uid `base + slot*65536`, never host root, and no two live sandboxes
//! share a host id, so a process escaping one sandbox's namespaces still owns
//! nothing of another's or of the host's.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;

use crate::error::{Result, RuntimeError};

/// Ids per sandbox (a full 16-bit range, what most images expect).
pub const IDS_PER_SANDBOX: u32 = 65_536;

/// Hands out slot numbers; the runtime reserves the slots of adopted sandboxes.
#[derive(Debug)]
pub struct SlotAllocator {
    base: u32,
    slots: u32,
    used: BTreeSet<u32>,
    next: u32,
}

impl SlotAllocator {
    /// Slots `0..slots` above `base`. Fails if the range overflows u32.
    pub fn new(base: u32, slots: u32) -> Result<Self> {
        let span = u64::from(slots) * u64::from(IDS_PER_SANDBOX);
        if slots == 0 || u64::from(base) + span > u64::from(u32::MAX) {
            return Err(RuntimeError::InvalidArgument(format!(
                "id range {base} + {slots} slots does not fit in 32 bits"
            )));
        }
        Ok(SlotAllocator { base, slots, used: BTreeSet::new(), next: 0 })
    }

    /// Takes a free slot, round robin so a just-freed range is reused last.
    pub fn take(&mut self) -> Result<u32> {
        for i in 0..self.slots {
            let s = (self.next + i) % self.slots;
            if self.used.insert(s) {
                self.next = (s + 1) % self.slots;
                return Ok(s);
            }
        }
        Err(RuntimeError::NoSlot(self.slots))
    }

    /// Marks a slot taken (adoption). Returns false if it already was.
    pub fn reserve(&mut self, slot: u32) -> bool {
        slot < self.slots && self.used.insert(slot)
    }

    pub fn release(&mut self, slot: u32) {
        self.used.remove(&slot);
    }

    /// First host id of a slot.
    pub fn host_base(&self, slot: u32) -> u32 {
        self.base + slot * IDS_PER_SANDBOX
    }

    /// The slot a host base id belongs to, if it is one of ours.
    #[cfg(test)]
    pub fn slot_of(&self, host_base: u32) -> Option<u32> {
        let off = host_base.checked_sub(self.base)?;
        (off % IDS_PER_SANDBOX == 0 && off / IDS_PER_SANDBOX < self.slots).then_some(off / IDS_PER_SANDBOX)
    }
}

/// Writes the uid and gid maps of a process that has just been cloned into a
/// new user namespace. Must run in the parent namespace with CAP_SETUID/GID
/// (the spawner, as host root): id 0..count inside → host_base.. outside.
pub fn write_maps(pid: i32, host_base: u32, count: u32) -> std::io::Result<()> {
    let line = format!("0 {host_base} {count}\n");
    write_proc(pid, "uid_map", &line)?;
    write_proc(pid, "gid_map", &line)
}

fn write_proc(pid: i32, file: &str, content: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(format!("/proc/{pid}/{file}"))?;
    f.write_all(content.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_distinct_and_reused_last() {
        let mut a = SlotAllocator::new(100_000, 3).unwrap();
        let (x, y, z) = (a.take().unwrap(), a.take().unwrap(), a.take().unwrap());
        assert_eq!((x, y, z), (0, 1, 2));
        assert!(a.take().is_err());
        a.release(1);
        assert_eq!(a.take().unwrap(), 1);
        assert_eq!(a.host_base(2), 100_000 + 2 * 65_536);
        assert_eq!(a.slot_of(100_000 + 65_536), Some(1));
        assert_eq!(a.slot_of(100_001), None);
    }

    #[test]
    fn overflowing_range_is_refused() {
        assert!(SlotAllocator::new(u32::MAX - 10, 1).is_err());
    }
}
