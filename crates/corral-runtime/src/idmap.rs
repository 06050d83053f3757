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
        Ok(SlotAllocator {
            base,
            slots,
            used: BTreeSet::new(),
            next: 0,
        })
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
        (off % IDS_PER_SANDBOX == 0 && off / IDS_PER_SANDBOX < self.slots)
            .then_some(off / IDS_PER_SANDBOX)
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
    let mut f = OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/{file}"))?;
    f.write_all(content.as_bytes())
}

/// Most template layers a sandbox may stack (the release message carries
/// one fd per layer).
pub const MAX_LAYERS: usize = 32;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Host side (the spawner, as host root): detached, read-only clones of the
/// template layers, id-mapped through the sandbox's user namespace so files
/// the host root owns appear owned by the sandbox root (host uid `n` appears
/// as `n`). Without this, template files show up as `nobody`, the sandbox
/// root cannot modify `/etc/passwd` (even through copy-up) and overlay
/// cannot look into `0700` template dirs.
///
/// Safe because the clones are attached only under the sandbox's private
/// staging tmpfs, which `pivot_root` leaves unreachable: nothing in the
/// sandbox can remount them writable; overlay never writes to a lower layer.
pub fn idmapped_layers(
    pid: i32,
    layers: &[std::path::PathBuf],
) -> std::io::Result<Vec<std::os::fd::OwnedFd>> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let userns = std::fs::File::open(format!("/proc/{pid}/ns/user"))?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let mut out = Vec::with_capacity(layers.len());
    for layer in layers {
        let path = std::ffi::CString::new(layer.as_os_str().as_bytes())?;
        let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
        // SAFETY: open_tree with a valid C path; returns a new fd or -1.
        let fd =
            unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh detached-mount fd owned by nobody else.
        let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: mount_setattr on our detached tree with a correctly sized attr struct.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        out.push(tree);
    }
    Ok(out)
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
