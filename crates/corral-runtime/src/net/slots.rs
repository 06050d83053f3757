//! The per-host address plan of `nat` sandboxes. Pure: no I/O.
//!
//! A range (default `10.200.0.0/16`) is cut into /30 slots. Slot `n` covers
//! `base + 4n .. base + 4n + 3`: the host end of the sandbox's veth pair holds
//! `+1` (the sandbox's gateway), the sandbox's `eth0` holds `+2`. A /30 per
//! sandbox keeps every pair on its own link, so no sandbox shares an L2
//! segment (or an ARP table) with another.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::error::{Result, RuntimeError};

/// Addresses per slot (a /30).
const SLOT_SIZE: u32 = 4;
/// Prefix length of one slot.
pub const SLOT_PREFIX: u8 = 30;

/// An IPv4 range in CIDR notation, its address aligned to its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// Number of addresses in the range.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = RuntimeError;

    /// `a.b.c.d/n`, the host bits zero, at most /30 (room for one slot).
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| RuntimeError::InvalidArgument(format!("nat subnet {s:?}: {why}"));
        let (addr, prefix) = s.split_once('/').ok_or_else(|| bad("want a.b.c.d/n"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("prefix is not a number"))?;
        if prefix > SLOT_PREFIX {
            return Err(bad(
                "the prefix must be /30 or shorter (one /30 per sandbox)",
            ));
        }
        if prefix < 8 {
            return Err(bad("the prefix must be /8 or longer"));
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        if u32::from(addr) & !mask != 0 {
            return Err(bad("host bits are set (use the network address)"));
        }
        Ok(Ipv4Cidr { addr, prefix })
    }
}

/// The addresses of one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotAddrs {
    pub slot: u32,
    /// Host end of the veth pair: the sandbox's default gateway.
    pub gateway: Ipv4Addr,
    /// The sandbox's `eth0`.
    pub sandbox: Ipv4Addr,
    pub prefix: u8,
}

/// Hands out /30 slots of a range; a restarted runtime reserves the slots of
/// the sandboxes it adopts.
#[derive(Debug)]
pub struct NetSlots {
    range: Ipv4Cidr,
    slots: u32,
    used: BTreeSet<u32>,
    next: u32,
}

impl NetSlots {
    pub fn new(range: Ipv4Cidr) -> Self {
        NetSlots {
            range,
            slots: (range.size() / u64::from(SLOT_SIZE)) as u32,
            used: BTreeSet::new(),
            next: 0,
        }
    }

    /// How many slots the range holds.
    pub fn capacity(&self) -> u32 {
        self.slots
    }

    /// Slots not in use.
    pub fn free(&self) -> u32 {
        self.slots - self.used.len() as u32
    }

    /// Takes a free slot, round robin so a just-freed one is reused last
    /// (stale conntrack entries of a previous sandbox age out first).
    pub fn take(&mut self) -> Result<SlotAddrs> {
        for i in 0..self.slots {
            let s = (self.next + i) % self.slots;
            if self.used.insert(s) {
                self.next = (s + 1) % self.slots;
                return Ok(self.addrs(s));
            }
        }
        Err(RuntimeError::NoNetSlot {
            slots: self.slots,
            range: self.range.to_string(),
        })
    }

    /// Marks a slot taken (adoption). False if it is out of range or taken.
    pub fn reserve(&mut self, slot: u32) -> bool {
        slot < self.slots && self.used.insert(slot)
    }

    /// Gives a slot back; unknown slots are ignored.
    pub fn release(&mut self, slot: u32) {
        self.used.remove(&slot);
    }

    pub fn is_used(&self, slot: u32) -> bool {
        self.used.contains(&slot)
    }

    /// The addresses of slot `slot` (which must be below [`Self::capacity`]).
    pub fn addrs(&self, slot: u32) -> SlotAddrs {
        let base = u32::from(self.range.addr) + slot * SLOT_SIZE;
        SlotAddrs {
            slot,
            gateway: Ipv4Addr::from(base + 1),
            sandbox: Ipv4Addr::from(base + 2),
            prefix: SLOT_PREFIX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_parse_and_bad_ones_say_why() {
        assert_eq!(cidr("10.200.0.0/16").to_string(), "10.200.0.0/16");
        assert_eq!(cidr("10.200.0.0/16").size(), 65_536);
        let msg = |s: &str| s.parse::<Ipv4Cidr>().unwrap_err().to_string();
        assert_eq!(
            msg("10.200.0.1/16"),
            "invalid argument: nat subnet \"10.200.0.1/16\": host bits are set (use the network address)"
        );
        assert!(msg("10.200.0.0/31").contains("/30 or shorter"));
        assert!(msg("10.0.0.0/4").contains("/8 or longer"));
        assert!(msg("10.200.0.0").contains("a.b.c.d/n"));
        assert!(msg("10.300.0.0/16").contains("not an IPv4 address"));
        assert!(msg("10.200.0.0/x").contains("not a number"));
    }

    #[test]
    fn a_slot_is_a_slash_30_with_gateway_and_sandbox() {
        let s = NetSlots::new(cidr("10.200.0.0/16"));
        assert_eq!(s.capacity(), 16_384);
        let a = s.addrs(0);
        assert_eq!(
            (a.gateway, a.sandbox, a.prefix),
            (
                "10.200.0.1".parse().unwrap(),
                "10.200.0.2".parse().unwrap(),
                30
            )
        );
        let b = s.addrs(16_383);
        assert_eq!(
            (b.gateway, b.sandbox),
            (
                "10.200.255.253".parse().unwrap(),
                "10.200.255.254".parse().unwrap()
            )
        );
    }

    #[test]
    fn take_release_reserve_and_exhaustion() {
        let mut s = NetSlots::new(cidr("10.9.0.0/29"));
        assert_eq!((s.capacity(), s.free()), (2, 2));
        let a = s.take().unwrap();
        let b = s.take().unwrap();
        assert_eq!((a.slot, b.slot), (0, 1));
        assert_eq!(s.free(), 0);
        assert_eq!(
            s.take().unwrap_err().to_string(),
            "no free network slot (all 2 of 10.9.0.0/29 in use)"
        );
        s.release(a.slot);
        assert_eq!(s.free(), 1);
        assert_eq!(s.take().unwrap().slot, 0);
        s.release(0);
        s.release(7); // unknown: ignored
        assert!(s.reserve(0));
        assert!(!s.reserve(0), "already taken");
        assert!(!s.reserve(2), "out of range");
        assert_eq!(s.free(), 0);
    }

    #[test]
    fn freed_slots_are_reused_last() {
        let mut s = NetSlots::new(cidr("10.9.0.0/28"));
        let first = s.take().unwrap().slot;
        s.release(first);
        assert_eq!(s.take().unwrap().slot, 1);
        assert_eq!(s.take().unwrap().slot, 2);
        assert_eq!(s.take().unwrap().slot, 3);
        assert_eq!(s.take().unwrap().slot, 0, "wraps around to the freed one");
    }
}
