//! Just enough rtnetlink to wire a veth pair: create a pair with one end
//! born inside another process's network namespace, give an interface an
//! address, bring it up, add a default route, delete and list links.
//!
//! Raw `NETLINK_ROUTE` messages over a socket (no `ip` process per sandbox,
//! no extra crate). A [`Netlink`] talks to the network namespace it was
//! opened in: open one from a thread that has joined a sandbox's namespace
//! to configure the inside.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const NLA_F_NESTED: u16 = 0x8000;

const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_PID: u16 = 19;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_GATEWAY: u16 = 5;
const RTA_OIF: u16 = 4;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

/// A netlink message under construction: header, fixed part, attributes.
struct Msg {
    buf: Vec<u8>,
    /// Start offsets of the nested attributes still open.
    open: Vec<usize>,
}

impl Msg {
    fn new(kind: u16, flags: u16) -> Self {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        Msg {
            buf,
            open: Vec::new(),
        }
    }

    fn pad(&mut self) {
        self.buf.resize(align(self.buf.len()), 0);
    }

    /// `struct ifinfomsg` (16 bytes).
    fn ifinfo(&mut self, index: i32, flags: u32, change: u32) -> &mut Self {
        self.buf
            .extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&change.to_ne_bytes());
        self
    }

    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    fn attr_str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data)
    }

    fn begin(&mut self, kind: u16) -> &mut Self {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn end(&mut self) -> &mut Self {
        if let Some(start) = self.open.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// A route netlink socket in the network namespace it was opened in.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        // SAFETY: plain socket(2); the fd is owned right after.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh socket nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a zeroed sockaddr_nl (pid 0: the kernel assigns one) we own.
        let rc = unsafe {
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as u16;
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Netlink { fd, seq: 0 })
    }

    fn send(&mut self, msg: Msg) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let buf = msg.finish(self.seq);
        // SAFETY: sending a buffer we own on our socket (to the kernel, pid 0).
        let n = unsafe { libc::send(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.seq)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: receiving into a buffer we own.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Sends a request and waits for its acknowledgement (or its error).
    fn request(&mut self, msg: Msg) -> io::Result<()> {
        let seq = self.send(msg)?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = self.recv(&mut buf)?;
            for (kind, mseq, body) in messages(&buf[..n]) {
                if mseq == seq && kind == NLMSG_ERROR {
                    return errno_of(body);
                }
            }
        }
    }

    /// Creates the pair `host` ↔ `peer`, `peer` created directly inside the
    /// network namespace of process `pid` (so no other name is ever used on
    /// the host side).
    pub fn add_veth_into(&mut self, host: &str, peer: &str, pid: i32) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
        m.ifinfo(0, 0, 0).attr_str(IFLA_IFNAME, host);
        m.begin(IFLA_LINKINFO).attr_str(IFLA_INFO_KIND, "veth");
        m.begin(IFLA_INFO_DATA).begin(VETH_INFO_PEER);
        m.ifinfo(0, 0, 0)
            .attr_str(IFLA_IFNAME, peer)
            .attr(IFLA_NET_NS_PID, &(pid as u32).to_ne_bytes());
        m.end().end().end();
        self.request(m)
    }

    /// Brings a link up.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let up = libc::IFF_UP as u32;
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK);
        m.ifinfo(index as i32, up, up);
        self.request(m)
    }

    /// Adds `addr/prefix` to a link.
    pub fn add_addr(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
        m.buf
            .extend_from_slice(&[libc::AF_INET as u8, prefix, 0, RT_SCOPE_UNIVERSE]);
        m.buf.extend_from_slice(&index.to_ne_bytes());
        m.attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets());
        self.request(m)
    }

    /// Adds the default route via `gateway` out of link `index`.
    pub fn add_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
        m.buf.extend_from_slice(&[
            libc::AF_INET as u8,
            0, // dst_len: default route
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
        ]);
        m.buf.extend_from_slice(&0u32.to_ne_bytes());
        m.attr(RTA_GATEWAY, &gateway.octets())
            .attr(RTA_OIF, &index.to_ne_bytes());
        self.request(m)
    }

    /// Deletes a link by name (a veth takes its peer with it). `Ok(false)`
    /// when no such link exists.
    pub fn del_link(&mut self, name: &str) -> io::Result<bool> {
        let mut m = Msg::new(RTM_DELLINK, NLM_F_ACK);
        m.ifinfo(0, 0, 0).attr_str(IFLA_IFNAME, name);
        match self.request(m) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Names of every link in this namespace.
    pub fn link_names(&mut self) -> io::Result<Vec<String>> {
        let mut m = Msg::new(RTM_GETLINK, NLM_F_DUMP);
        m.ifinfo(0, 0, 0);
        let seq = self.send(m)?;
        let mut names = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = self.recv(&mut buf)?;
            for (kind, mseq, body) in messages(&buf[..n]) {
                if mseq != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(names),
                    NLMSG_ERROR => {
                        errno_of(body)?;
                        return Ok(names);
                    }
                    RTM_NEWLINK if body.len() >= 16 => {
                        if let Some(name) =
                            attrs(&body[16..])
                                .find(|(k, _)| *k == IFLA_IFNAME)
                                .map(|(_, v)| {
                                    String::from_utf8_lossy(
                                        v.split(|b| *b == 0).next().unwrap_or(&[]),
                                    )
                                    .into_owned()
                                })
                        {
                            names.push(name);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The index of a link in the caller's (thread's) network namespace.
pub fn link_index(name: &str) -> io::Result<u32> {
    let c =
        std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: if_nametoindex reads a NUL-terminated string we own.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i),
    }
}

/// `(type, seq, body)` of each complete message in a datagram.
fn messages(mut buf: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes(buf[4..6].try_into().ok()?);
        let seq = u32::from_ne_bytes(buf[8..12].try_into().ok()?);
        let body = &buf[NLMSG_HDRLEN..len];
        buf = &buf[align(len).min(buf.len())..];
        Some((kind, seq, body))
    })
}

/// `(type, payload)` of each attribute in a run of attributes.
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        if len < 4 || len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & !NLA_F_NESTED;
        let data = &buf[4..len];
        buf = &buf[align(len).min(buf.len())..];
        Some((kind, data))
    })
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// The result carried by an `NLMSG_ERROR` body (0 = acknowledgement).
fn errno_of(body: &[u8]) -> io::Result<()> {
    let code = body
        .get(0..4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes)
        .ok_or_else(|| io::Error::other("short netlink error message"))?;
    if code == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(-code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_get_their_lengths_and_padding() {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK);
        m.ifinfo(0, 0, 0).attr_str(IFLA_IFNAME, "ab");
        m.begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .end();
        let buf = m.finish(7);
        assert_eq!(
            u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize,
            buf.len()
        );
        assert_eq!(u32::from_ne_bytes(buf[8..12].try_into().unwrap()), 7);
        let found: Vec<(u16, Vec<u8>)> = attrs(&buf[32..]).map(|(k, v)| (k, v.to_vec())).collect();
        assert_eq!(found[0], (IFLA_IFNAME, b"ab\0".to_vec()));
        assert_eq!(found[1].0, IFLA_LINKINFO);
        let inner: Vec<(u16, Vec<u8>)> = attrs(&found[1].1).map(|(k, v)| (k, v.to_vec())).collect();
        assert_eq!(inner, vec![(IFLA_INFO_KIND, b"veth\0".to_vec())]);
        assert_eq!(buf.len() % 4, 0);
    }

    #[test]
    fn error_bodies_map_to_errno() {
        assert!(errno_of(&0i32.to_ne_bytes()).is_ok());
        let e = errno_of(&(-libc::EEXIST).to_ne_bytes()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        assert!(errno_of(&[1]).is_err());
    }
}
