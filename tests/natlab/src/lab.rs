//! The topology: five network namespaces joined by veth pairs, two of them NAT routers.
//!
//! ```text
//!                      public (sbpub-TAG)
//!            br0: 198.51.100.1/24 (server), 198.51.100.4/24 (probes only)
//!                 /                                  \
//!   wan0 198.51.100.2/24                        wan0 198.51.100.3/24
//!      router sbnat1-TAG                          router sbnat2-TAG
//!   lan0 10.1.0.1/24                            lan0 10.2.0.1/24
//!            |                                           |
//!   eth0 10.1.0.2/24, default via 10.1.0.1     eth0 10.2.0.2/24, default via 10.2.0.1
//!      client sbc1-TAG                            client sbc2-TAG
//! ```
//!
//! Each router forwards between its LAN and its WAN and masquerades what leaves on `wan0`
//! with nftables; a forward filter lets only replies (conntrack `established,related`) in
//! from the WAN, and the router itself drops new traffic arriving on its WAN, as a home
//! router does. Nobody has a route to the 10.x networks except their own router, so a
//! client reaches the other client only through both NATs. IPv6 is off everywhere so that
//! the only candidates are the IPv4 ones the lab is about.
//!
//! [`Lab`] deletes every namespace it created when dropped (after killing whatever still
//! runs inside), also when a test fails or panics.

use anyhow::{Context, Result, bail};
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The server's address on the public segment.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// A second address of the public namespace, used only by the NAT probes to play "another
/// host on the Internet".
pub const SECOND_PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 4);
/// The routers' WAN (public) addresses, which are also the clients' server-reflexive IPs.
pub const ROUTER_WAN: [Ipv4Addr; 2] = [
    Ipv4Addr::new(198, 51, 100, 2),
    Ipv4Addr::new(198, 51, 100, 3),
];
/// The routers' LAN addresses (the clients' default gateways).
pub const ROUTER_LAN: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 2, 0, 1)];
/// The clients' private addresses.
pub const CLIENT_IP: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 2, 0, 2)];

/// How a router maps outgoing flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat {
    /// nftables `masquerade`: a flow keeps its source port when it is free, so one local
    /// socket gets one public address for every destination (endpoint-independent mapping);
    /// conntrack lets in only replies from the exact address and port that was contacted
    /// (address-and-port-dependent filtering). A "port-restricted cone" NAT.
    PortRestricted,
    /// nftables `masquerade random,fully-random`: every new destination gets a fresh random
    /// public port (address-and-port-dependent mapping), with the same filtering. A
    /// "symmetric" NAT, the kind hole punching cannot cross.
    Symmetric,
}

impl Nat {
    /// The masquerade statement of the router's ruleset.
    pub fn masquerade(self) -> &'static str {
        match self {
            Nat::PortRestricted => "masquerade",
            Nat::Symmetric => "masquerade random,fully-random",
        }
    }
}

/// A built lab. Dropping it tears everything down.
#[derive(Debug)]
pub struct Lab {
    /// The NAT both routers apply.
    pub nat: Nat,
    /// Namespace of the server.
    pub public: String,
    /// Namespaces of the two routers.
    pub routers: [String; 2],
    /// Namespaces of the two clients.
    pub clients: [String; 2],
    created: Vec<String>,
}

impl Lab {
    /// Builds the topology with both routers applying `nat`. Names end in a tag unique to
    /// this process (and to the `scripts/nat-lab.sh` run, through `SB_NATLAB_RUN`).
    pub fn build(nat: Nat) -> Result<Lab> {
        let run = std::env::var("SB_NATLAB_RUN").unwrap_or_else(|_| "t".into());
        let tag = format!("{run}-{}", std::process::id());
        let mut lab = Lab {
            nat,
            public: format!("sbpub-{tag}"),
            routers: [format!("sbnat1-{tag}"), format!("sbnat2-{tag}")],
            clients: [format!("sbc1-{tag}"), format!("sbc2-{tag}")],
            created: Vec::new(),
        };
        // On an error the half-built lab is dropped, which deletes what exists.
        lab.create()?;
        Ok(lab)
    }

    /// The server's origin as browsers in the client namespaces reach it.
    pub fn origin(&self, http_port: u16) -> String {
        format!("http://{SERVER_IP}:{http_port}")
    }

    fn create(&mut self) -> Result<()> {
        let started = std::time::Instant::now();
        let all: Vec<String> = std::iter::once(self.public.clone())
            .chain(self.routers.iter().cloned())
            .chain(self.clients.iter().cloned())
            .collect();
        for ns in &all {
            ip(&["netns", "add", ns])?;
            self.created.push(ns.clone());
            // Before any interface exists, so that new interfaces inherit "default".
            sysctl(
                ns,
                &[
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ],
            )?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }

        let public = self.public.as_str();
        ip(&["-n", public, "link", "add", "br0", "type", "bridge"])
            .context("creating the public segment (a bridge; needs the kernel's bridge driver)")?;
        ip(&[
            "-n",
            public,
            "addr",
            "add",
            &format!("{SERVER_IP}/24"),
            "dev",
            "br0",
        ])?;
        ip(&[
            "-n",
            public,
            "addr",
            "add",
            &format!("{SECOND_PUBLIC_IP}/24"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", public, "link", "set", "br0", "up"])?;

        for i in 0..2 {
            let router = self.routers[i].as_str();
            let client = self.clients[i].as_str();
            let port = format!("wan{}", i + 1);
            ip(&[
                "-n", router, "link", "add", "wan0", "type", "veth", "peer", "name", &port,
                "netns", public,
            ])?;
            ip(&["-n", public, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", public, "link", "set", &port, "up"])?;
            ip(&[
                "-n",
                router,
                "addr",
                "add",
                &format!("{}/24", ROUTER_WAN[i]),
                "dev",
                "wan0",
            ])?;
            ip(&["-n", router, "link", "set", "wan0", "up"])?;

            ip(&[
                "-n", router, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0",
                "netns", client,
            ])?;
            ip(&[
                "-n",
                router,
                "addr",
                "add",
                &format!("{}/24", ROUTER_LAN[i]),
                "dev",
                "lan0",
            ])?;
            ip(&["-n", router, "link", "set", "lan0", "up"])?;
            ip(&[
                "-n",
                client,
                "addr",
                "add",
                &format!("{}/24", CLIENT_IP[i]),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", client, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                client,
                "route",
                "add",
                "default",
                "via",
                &ROUTER_LAN[i].to_string(),
            ])?;

            sysctl(router, &["net.ipv4.ip_forward=1"])?;
            nft(router, &router_ruleset(self.nat))
                .with_context(|| format!("loading the NAT rules of {router}"))?;
        }
        println!(
            "lab: {:?} NAT, namespaces {} built in {:.1}s",
            self.nat,
            all.join(" "),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Kills what still runs in the lab's namespaces and deletes them.
    fn destroy(&mut self) {
        let me = std::process::id().to_string();
        for ns in &self.created {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if pid != me
                        && let Ok(pid) = pid.parse::<i32>()
                    {
                        // SAFETY: kill(2) on a process inside a namespace this lab made;
                        // everything in there was started by this test.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
        }
        for ns in self.created.drain(..).rev() {
            if let Err(e) = ip(&["netns", "delete", &ns]) {
                eprintln!("lab: {e:#}");
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.created.is_empty() {
            self.destroy();
            println!("lab: namespaces deleted");
        }
    }
}

/// The router's nftables ruleset: masquerade on the WAN, let only replies in.
fn router_ruleset(nat: Nat) -> String {
    format!(
        r#"table ip nat {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept
    oifname "wan0" {masquerade}
  }}
}}
table ip filter {{
  chain forward {{
    type filter hook forward priority filter; policy drop
    iifname "lan0" oifname "wan0" accept
    iifname "wan0" oifname "lan0" ct state established,related accept
  }}
  chain input {{
    type filter hook input priority filter; policy accept
    iifname "wan0" ct state established,related accept
    iifname "wan0" drop
  }}
}}
"#,
        masquerade = nat.masquerade()
    )
}

fn ip(args: &[&str]) -> Result<()> {
    run(Command::new("ip").args(args), None)
}

fn sysctl(ns: &str, settings: &[&str]) -> Result<()> {
    run(
        Command::new("ip")
            .args(["netns", "exec", ns, "sysctl", "-q", "-e", "-w"])
            .args(settings),
        None,
    )
}

fn nft(ns: &str, ruleset: &str) -> Result<()> {
    run(
        Command::new("ip").args(["netns", "exec", ns, "nft", "-f", "-"]),
        Some(ruleset),
    )
}

fn run(command: &mut Command, stdin: Option<&str>) -> Result<()> {
    let shown = format!("{command:?}").replace('"', "");
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {shown} (is iproute2/nftables installed?)"))?;
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
