//! The `nat` network mode: veth pairs from the slot pool, masquerade, teardown
//! and adoption. Traffic only ever goes between the test's sandboxes, its
//! own network namespace and its own addresses on the host.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::{fixture, host, links_with_prefix, nat_fixture, text, wait_no_links, Fixture};
use corral_runtime::{NetworkMode, Runtime, RuntimeError};

impl Fixture {
    fn nat_prefix(&self) -> String {
        self.cfg.nat.as_ref().unwrap().veth_prefix.clone()
    }

    async fn create_nat(&self, id: &str) -> Result<String, RuntimeError> {
        let mut c = self.config(id);
        c.network = NetworkMode::Nat;
        self.rt.create(c).await.map(|_| id.to_string())
    }
}

/// Python run in a sandbox: connect to `addr:port` with a timeout and print
/// what the server sent, or how the attempt failed (`timeout`, `ENETUNREACH`…).
/// A server that accepts but sends nothing shows as `connected`.
fn connect_script(addr: &str, port: u16, timeout_s: u32) -> String {
    format!(
        "import socket, errno\n\
         try:\n    s = socket.create_connection(('{addr}', {port}), timeout={timeout_s})\n\
         except socket.timeout:\n    print('timeout')\n\
         except OSError as e:\n    print(errno.errorcode.get(e.errno, str(e)))\n\
         else:\n    try:\n        print(s.recv(100).decode() or 'connected')\n    except socket.timeout:\n        print('connected')\n"
    )
}

#[tokio::test]
async fn nat_sandboxes_get_their_own_slot_address_route_and_resolv_conf() {
    let Some(f) = nat_fixture("nat-addrs", 24, false).await else {
        return;
    };
    let a = f.create_nat("sb-nat-a").await.unwrap();
    let b = f.create_nat("sb-nat-b").await.unwrap();
    let (aa, ba) = (
        f.rt.net_addrs(&a).unwrap().unwrap(),
        f.rt.net_addrs(&b).unwrap().unwrap(),
    );
    assert_ne!(aa.sandbox, ba.sandbox);
    assert_eq!(aa.gateway.octets()[3] + 1, aa.sandbox.octets()[3]);
    assert_eq!(f.rt.free_net_slots(), Some(64 - 2));
    for (id, addrs) in [(&a, aa), (&b, ba)] {
        // The source address the kernel picks for the gateway (a UDP
        // "connect" sends nothing) is the sandbox's own slot address.
        let out = f
            .py(
                id,
                &format!(
                    "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.connect(('{}', 9))\nprint(s.getsockname()[0])\n",
                    addrs.gateway
                ),
            )
            .await;
        assert_eq!(
            text(&out.stdout).trim(),
            addrs.sandbox.to_string(),
            "{}",
            text(&out.stderr)
        );
        let route = f.sh(id, "cat /proc/net/route").await;
        let default = text(&route.stdout)
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("00000000"))
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string());
        assert_eq!(default.as_deref(), Some("eth0"), "{}", text(&route.stdout));
        let resolv = f.sh(id, "cat /etc/resolv.conf").await;
        assert!(
            text(&resolv.stdout).starts_with("# nat network"),
            "{}",
            text(&resolv.stdout)
        );
        let link = f.cfg.nat.as_ref().unwrap().host_link(addrs.slot);
        let shown = host(&["ip", "-4", "-o", "addr", "show", "dev", &link]);
        assert!(shown.contains(&format!("{}/30", addrs.gateway)), "{shown}");
    }
    // An isolated sandbox next to them still has loopback only.
    let iso = f.create("sb-iso").await;
    let links = f.sh(&iso, "ls /sys/class/net").await;
    assert_eq!(text(&links.stdout).trim(), "lo");
    assert_eq!(f.rt.net_addrs(&iso).unwrap(), None);
    for id in [&a, &b, &iso] {
        f.rt.destroy(id).await.unwrap();
    }
    assert_eq!(f.rt.free_net_slots(), Some(64));
    wait_no_links(&f.nat_prefix());
}

/// A network namespace standing for "outside": a veth to the host
/// (`cto<block>` 10.224.<block>.1/30 ↔ `eth1` .2 inside) and a TCP server
/// inside that answers each connection with the peer address it sees.
/// Restores `ip_forward` and removes everything on drop.
struct Outside {
    ns: String,
    link: String,
    server: Option<Child>,
    forward_was: String,
    server_addr: String,
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

impl Outside {
    fn new(block: u32, forward_was: String) -> Outside {
        let mut o = Outside {
            ns: format!("corral-nt-{block}"),
            link: format!("cto{block}"),
            server: None,
            forward_was,
            server_addr: format!("10.224.{block}.2"),
        };
        let (ns, link) = (o.ns.clone(), o.link.clone());
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &link]).output();
        host(&["ip", "netns", "add", &ns]);
        host(&[
            "ip", "link", "add", &link, "type", "veth", "peer", "name", "eth1", "netns", &ns,
        ]);
        host(&[
            "ip",
            "addr",
            "add",
            &format!("10.224.{block}.1/30"),
            "dev",
            &link,
        ]);
        host(&["ip", "link", "set", &link, "up"]);
        host(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/30", o.server_addr),
            "dev",
            "eth1",
        ]);
        host(&["ip", "-n", &ns, "link", "set", "eth1", "up"]);
        let script = format!(
            "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('{}', 7000))\ns.listen(16)\nprint('ready', flush=True)\n\
             while True:\n    c, a = s.accept()\n    c.sendall(a[0].encode())\n    c.close()\n",
            o.server_addr
        );
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "/usr/bin/python3",
                "-S",
                "-c",
                &script,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        o.server = Some(child);
        assert_eq!(line.trim(), "ready");
        o
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = std::fs::write(IP_FORWARD, self.forward_was.trim());
    }
}

/// The link-local IPv6 address of a host link once it is usable (DAD
/// done), `None` when the host has IPv6 off.
fn link_local(link: &str) -> Option<std::net::Ipv6Addr> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let shown = host(&["ip", "-6", "-o", "addr", "show", "dev", link]);
        if shown.trim().is_empty()
            && std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6")
                .ok()?
                .trim()
                == "1"
        {
            return None;
        }
        if let Some(line) = shown
            .lines()
            .find(|l| l.contains("fe80::") && !l.contains("tentative"))
        {
            let addr = line
                .split_whitespace()
                .skip_while(|w| *w != "inet6")
                .nth(1)?;
            return addr.split('/').next()?.parse().ok();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no usable link-local address on {link}: {shown}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_nat_sandbox_reaches_the_outside_masqueraded_and_nothing_else() {
    if common::skip_reason().is_some() || common::which("ip").is_none() {
        eprintln!("SKIP nat-outside: needs root and iproute2");
        return;
    }
    // Block numbers are only known once the fixture holds one; the outside
    // namespace is built right after, its guard dropped after the fixture's.
    let forward_was = std::fs::read_to_string(IP_FORWARD).unwrap();
    let Some(f) = nat_fixture("nat-outside", 24, true).await else {
        return;
    };
    let outside = Outside::new(f.block, forward_was);
    assert_eq!(std::fs::read_to_string(IP_FORWARD).unwrap().trim(), "1");
    let table = host(&[
        "nft",
        "list",
        "table",
        "inet",
        &f.cfg.nat.as_ref().unwrap().nft_table,
    ]);
    assert!(
        table.contains(&format!(
            "ip saddr 10.223.{}.0/24 ip daddr != 10.223.{}.0/24 masquerade",
            f.block, f.block
        )),
        "{table}"
    );

    let a = f.create_nat("sb-out-a").await.unwrap();
    let out = f
        .py(&a, &connect_script(&outside.server_addr, 7000, 10))
        .await;
    assert_eq!(
        text(&out.stdout).trim(),
        format!("10.224.{}.1", f.block),
        "the server sees the host's address, not the sandbox's: {}",
        text(&out.stderr)
    );

    let iso = f.create("sb-out-iso").await;
    let out = f
        .py(&iso, &connect_script(&outside.server_addr, 7000, 10))
        .await;
    assert_eq!(
        text(&out.stdout).trim(),
        "ENETUNREACH",
        "{}",
        text(&out.stderr)
    );

    // The host's own services are out of reach: a listener on the
    // sandbox's gateway address never sees the connection.
    let gw = f.rt.net_addrs(&a).unwrap().unwrap().gateway;
    let _listener = std::net::TcpListener::bind((gw, 7001)).unwrap();
    let out = f.py(&a, &connect_script(&gw.to_string(), 7001, 1)).await;
    assert_eq!(text(&out.stdout).trim(), "timeout", "{}", text(&out.stderr));

    // Nor over the IPv6 link-local address of that host end.
    let link = f
        .cfg
        .nat
        .as_ref()
        .unwrap()
        .host_link(f.rt.net_addrs(&a).unwrap().unwrap().slot);
    if let Some(ll) = link_local(&link) {
        let scope = std::fs::read_to_string(format!("/sys/class/net/{link}/ifindex")).unwrap();
        let addr = std::net::SocketAddrV6::new(ll, 7003, 0, scope.trim().parse().unwrap());
        let _listener6 = std::net::TcpListener::bind(addr).unwrap();
        // Retried while the sandbox's own link-local address is still
        // tentative (duplicate address detection): EADDRNOTAVAIL.
        let script = format!(
            "import socket, time\nfor _ in range(100):\n\
             \x20   s = socket.socket(socket.AF_INET6)\n    s.settimeout(1)\n\
             \x20   try:\n        s.connect(('{ll}', 7003, 0, socket.if_nametoindex('eth0')))\n        print('connected')\n        break\n\
             \x20   except socket.timeout:\n        print('timeout')\n        break\n\
             \x20   except OSError as e:\n        if e.errno != 99:\n            print(e)\n            break\n        time.sleep(0.1)\n"
        );
        let out = f.py(&a, &script).await;
        assert_eq!(text(&out.stdout).trim(), "timeout", "{}", text(&out.stderr));
    }

    // Nor does one nat sandbox reach another (a refused connection would
    // mean the packet got there).
    let b = f.create_nat("sb-out-b").await.unwrap();
    let a_addr = f.rt.net_addrs(&a).unwrap().unwrap().sandbox;
    let out = f
        .py(&b, &connect_script(&a_addr.to_string(), 7002, 1))
        .await;
    assert_eq!(text(&out.stdout).trim(), "timeout", "{}", text(&out.stderr));
    drop(f);
    drop(outside);
}

#[tokio::test]
async fn fifty_create_delete_cycles_leak_no_veth_and_no_slot() {
    let Some(f) = nat_fixture("nat-cycles", 26, false).await else {
        return;
    };
    let prefix = f.nat_prefix();
    assert_eq!(links_with_prefix(&prefix), Vec::<String>::new());
    assert_eq!(f.rt.free_net_slots(), Some(16));
    let nat = f.cfg.nat.clone().unwrap();
    for i in 0..50 {
        let id = f.create_nat(&format!("sb-cyc-{i}")).await.unwrap();
        let own = nat.host_link(f.rt.net_addrs(&id).unwrap().unwrap().slot);
        assert!(links_with_prefix(&prefix).contains(&own));
        assert_eq!(f.rt.free_net_slots(), Some(15));
        f.rt.destroy(&id).await.unwrap();
    }
    assert_eq!(f.rt.free_net_slots(), Some(16));
    wait_no_links(&prefix);
}

#[tokio::test]
async fn an_exhausted_range_refuses_cleanly_and_an_ended_sandbox_frees_its_slot() {
    let Some(f) = nat_fixture("nat-full", 29, false).await else {
        return;
    };
    let a = f.create_nat("sb-full-a").await.unwrap();
    f.create_nat("sb-full-b").await.unwrap();
    let err = f.create_nat("sb-full-c").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no free network slot (all 2 of 10.223.{}.0/29 in use)",
            f.block
        )
    );
    assert!(
        !f.cfg.state_dir.join("sb-full-c").exists(),
        "a refused create leaves nothing"
    );
    assert_eq!(f.rt.list().await.unwrap().len(), 2);
    // The init dying on its own (exit, OOM) takes the pair with its
    // namespace; the destroy that follows gives the slot back.
    let pid = f.rt.init_pid(&a).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    f.rt.wait(&a).await.unwrap();
    f.rt.destroy(&a).await.unwrap();
    assert_eq!(f.rt.free_net_slots(), Some(1));
    f.create_nat("sb-full-c").await.unwrap();
    assert_eq!(f.rt.free_net_slots(), Some(0));
}

#[tokio::test]
async fn a_restarted_runtime_adopts_nat_sandboxes_and_deletes_stray_links() {
    let Some(f) = nat_fixture("nat-adopt", 24, false).await else {
        return;
    };
    let prefix = f.nat_prefix();
    let id = f.create_nat("sb-nat-keep").await.unwrap();
    let kept = f.rt.net_addrs(&id).unwrap().unwrap();
    // A pair a crashed runtime could have left behind.
    let stray = format!("{prefix}40");
    host(&[
        "ip",
        "link",
        "add",
        &stray,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{prefix}x"),
    ]);
    let rt2 = Runtime::new(f.cfg.clone()).await.unwrap();
    assert_eq!(
        rt2.free_net_slots(),
        Some(63),
        "the adopted sandbox keeps its slot"
    );
    assert_eq!(rt2.net_addrs(&id).unwrap(), Some(kept));
    assert_eq!(
        links_with_prefix(&prefix),
        vec![f.cfg.nat.as_ref().unwrap().host_link(kept.slot)]
    );
    // A new sandbox never gets the adopted one's slot.
    let mut c = f.config("sb-nat-new");
    c.network = NetworkMode::Nat;
    rt2.create(c).await.unwrap();
    assert_ne!(
        rt2.net_addrs("sb-nat-new").unwrap().unwrap().slot,
        kept.slot
    );
    rt2.destroy(&id).await.unwrap();
    rt2.destroy("sb-nat-new").await.unwrap();
    assert_eq!(rt2.free_net_slots(), Some(64));
    wait_no_links(&prefix);
}

#[tokio::test]
async fn force_cleanup_removes_the_veths_and_the_table() {
    let Some(f) = nat_fixture("nat-force", 24, false).await else {
        return;
    };
    let prefix = f.nat_prefix();
    f.create_nat("sb-nat-f1").await.unwrap();
    f.create_nat("sb-nat-f2").await.unwrap();
    assert_eq!(links_with_prefix(&prefix).len(), 2);
    corral_runtime::force_cleanup(&f.cfg);
    assert_eq!(links_with_prefix(&prefix), Vec::<String>::new());
    let table = f.cfg.nat.as_ref().unwrap().nft_table.clone();
    let tables = host(&["nft", "list", "tables"]);
    assert!(
        !tables.contains(&format!("table inet {table}\n")),
        "{tables}"
    );
}

#[tokio::test]
async fn nat_is_refused_where_the_mode_is_off() {
    let Some(f) = fixture("nat-off").await else {
        return;
    };
    let err = f.create_nat("sb-nat-off").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid argument: the nat network mode is not enabled on this host"
    );
    assert!(!f.cfg.state_dir.join("sb-nat-off").exists());
    assert_eq!(f.rt.list().await.unwrap(), Vec::<String>::new());
    assert_eq!(f.rt.free_net_slots(), None);
}
