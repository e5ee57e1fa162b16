//! Which peers a relay may talk to: the defence against using TURN as an SSRF proxy.
//!
//! A TURN server relays to any address a client names, from inside the operator's network.
//! Left open, that lets anyone on the Internet reach the server's loopback services, the
//! cloud metadata endpoint (169.254.169.254), the LAN behind it, and the server's own
//! ports. [`PeerPolicy`] therefore refuses loopback, private, shared (CGNAT), link-local,
//! multicast, unspecified, reserved and broadcast addresses, and the server's own
//! addresses, unless the operator allow-lists them; it also takes an extra deny-list.
//! IPv4 addresses hidden in IPv6 (mapped, NAT64, 6to4) are judged as the IPv4 address they
//! carry, so they cannot be used to smuggle a refused address past the check.
//!
//! This module only classifies addresses; the server decides what a refusal means (403 for
//! CreatePermission and ChannelBind, a silent drop for Send), and lets one kind of own
//! address through: the relayed address of a live allocation, which it serves without a
//! socket (relay to relay, see [`crate::server`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use thiserror::Error;

/// An address block such as `10.0.0.0/8` or `2001:db8::/32`; a bare address is a /32 or
/// /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a CIDR string was refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("{0:?} is not an IP address")]
    Address(String),
    #[error("{0:?} is not a prefix length")]
    Prefix(String),
    #[error("prefix /{prefix} is longer than the address ({max} bits)")]
    PrefixTooLong { prefix: u8, max: u8 },
}

impl Cidr {
    /// A block from an address and a prefix length; host bits are cleared.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, CidrError> {
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if prefix > max {
            return Err(CidrError::PrefixTooLong { prefix, max });
        }
        let network = match addr {
            IpAddr::V4(ip) => IpAddr::V4(Ipv4Addr::from(u32::from(ip) & mask32(prefix))),
            IpAddr::V6(ip) => IpAddr::V6(Ipv6Addr::from(u128::from(ip) & mask128(prefix))),
        };
        Ok(Self { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, CidrError> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::Address(addr.to_owned()))?;
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse()
                .map_err(|_| CidrError::Prefix(prefix.to_owned()))?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        Self::new(addr, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Why a peer address is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerDenial {
    Unspecified,
    Loopback,
    /// RFC 1918, RFC 6598 shared space, IPv6 unique-local and site-local.
    Private,
    LinkLocal,
    Multicast,
    /// Broadcast, "future use", benchmarking and other blocks no peer lives in.
    Reserved,
    /// One of the server's own addresses.
    ServerAddress,
    /// On the operator's deny-list.
    DenyList,
}

impl PeerDenial {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link_local",
            Self::Multicast => "multicast",
            Self::Reserved => "reserved",
            Self::ServerAddress => "server_address",
            Self::DenyList => "deny_list",
        }
    }
}

/// The peer-address policy of a TURN server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    /// Blocks allowed even though they would be refused otherwise; checked first.
    pub allow: Vec<Cidr>,
    /// Blocks refused in addition to the built-in ones.
    pub deny: Vec<Cidr>,
    /// The server's own addresses (listening, relay, announced), refused as peers.
    pub server_addresses: Vec<IpAddr>,
}

impl PeerPolicy {
    /// Whether the server may relay to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), PeerDenial> {
        let ip = ip.to_canonical();
        if self.allow.iter().any(|cidr| cidr.contains(ip)) {
            return Ok(());
        }
        if self.deny.iter().any(|cidr| cidr.contains(ip)) {
            return Err(PeerDenial::DenyList);
        }
        if self
            .server_addresses
            .iter()
            .any(|own| own.to_canonical() == ip)
        {
            return Err(PeerDenial::ServerAddress);
        }
        match ip {
            IpAddr::V4(ip) => classify_v4(ip),
            IpAddr::V6(ip) => classify_v6(ip),
        }
    }
}

fn classify_v4(ip: Ipv4Addr) -> Result<(), PeerDenial> {
    let [a, b, c, _] = ip.octets();
    let denial = match (a, b) {
        (0, _) => PeerDenial::Unspecified,
        (127, _) => PeerDenial::Loopback,
        (10, _) | (192, 168) => PeerDenial::Private,
        (172, 16..=31) | (100, 64..=127) => PeerDenial::Private,
        (169, 254) => PeerDenial::LinkLocal,
        (224..=239, _) => PeerDenial::Multicast,
        (240..=255, _) | (198, 18..=19) => PeerDenial::Reserved,
        (192, 0) if c == 0 => PeerDenial::Reserved,
        _ => return Ok(()),
    };
    Err(denial)
}

fn classify_v6(ip: Ipv6Addr) -> Result<(), PeerDenial> {
    let segments = ip.segments();
    if ip.is_unspecified() {
        return Err(PeerDenial::Unspecified);
    }
    if ip.is_loopback() {
        return Err(PeerDenial::Loopback);
    }
    let denial = match segments[0] {
        0xff00..=0xffff => PeerDenial::Multicast,
        0xfe80..=0xfebf => PeerDenial::LinkLocal,
        0xfec0..=0xffef | 0xfc00..=0xfdff => PeerDenial::Private,
        // NAT64 (64:ff9b::/96) reaches the IPv4 address in the last 32 bits.
        0x0064 if segments[1] == 0xff9b && segments[2..6] == [0; 4] => {
            return classify_v4(embedded_v4(segments[6], segments[7]));
        }
        // 6to4 (2002::/16) reaches the IPv4 address in bits 16..48.
        0x2002 => return classify_v4(embedded_v4(segments[1], segments[2])),
        // The deprecated IPv4-compatible form ::a.b.c.d and the discard block 100::/64.
        0 if segments[1..6] == [0; 5] => PeerDenial::Reserved,
        0x0100 if segments[1..4] == [0; 3] => PeerDenial::Reserved,
        _ => return Ok(()),
    };
    Err(denial)
}

fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(high) << 16) | u32::from(low))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let net: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains(ip("10.255.0.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("::ffff:10.0.0.1")));
        let host: Cidr = "192.0.2.7".parse().unwrap();
        assert_eq!(host.to_string(), "192.0.2.7/32");
        assert!(host.contains(ip("192.0.2.7")));
        assert!(!host.contains(ip("192.0.2.8")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.1")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong {
                prefix: 33,
                max: 32
            })
        );
        assert_eq!(
            "nowhere/8".parse::<Cidr>(),
            Err(CidrError::Address("nowhere".into()))
        );
        assert_eq!(
            "10.0.0.0/x".parse::<Cidr>(),
            Err(CidrError::Prefix("x".into()))
        );
    }

    #[test]
    fn classic_ssrf_targets_are_refused() {
        let policy = PeerPolicy::default();
        let cases = [
            ("0.0.0.0", PeerDenial::Unspecified),
            ("0.1.2.3", PeerDenial::Unspecified),
            ("127.0.0.1", PeerDenial::Loopback),
            ("127.8.9.10", PeerDenial::Loopback),
            ("10.0.0.1", PeerDenial::Private),
            ("172.16.0.1", PeerDenial::Private),
            ("172.31.255.255", PeerDenial::Private),
            ("192.168.1.1", PeerDenial::Private),
            ("100.64.0.1", PeerDenial::Private),
            ("169.254.169.254", PeerDenial::LinkLocal),
            ("224.0.0.1", PeerDenial::Multicast),
            ("239.255.255.250", PeerDenial::Multicast),
            ("255.255.255.255", PeerDenial::Reserved),
            ("240.0.0.1", PeerDenial::Reserved),
            ("198.18.0.1", PeerDenial::Reserved),
            ("192.0.0.8", PeerDenial::Reserved),
            ("::", PeerDenial::Unspecified),
            ("::1", PeerDenial::Loopback),
            ("fe80::1", PeerDenial::LinkLocal),
            ("fc00::1", PeerDenial::Private),
            ("fd12:3456::1", PeerDenial::Private),
            ("fec0::1", PeerDenial::Private),
            ("ff02::1", PeerDenial::Multicast),
            ("::ffff:127.0.0.1", PeerDenial::Loopback),
            ("::ffff:169.254.169.254", PeerDenial::LinkLocal),
            ("64:ff9b::10.0.0.1", PeerDenial::Private),
            ("2002:7f00:1::", PeerDenial::Loopback),
            ("::10.0.0.1", PeerDenial::Reserved),
            ("100::1", PeerDenial::Reserved),
        ];
        for (addr, denial) in cases {
            assert_eq!(policy.check(ip(addr)), Err(denial), "{addr}");
        }
        for public in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "203.0.113.5",
            "2001:4860:4860::8888",
            "64:ff9b::8.8.8.8",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(policy.check(ip(public)), Ok(()), "{public}");
        }
    }

    #[test]
    fn allow_list_wins_then_deny_list_then_own_addresses() {
        let policy = PeerPolicy {
            allow: vec![
                "127.0.0.0/8".parse().unwrap(),
                "198.51.100.9".parse().unwrap(),
            ],
            deny: vec!["198.51.100.0/24".parse().unwrap()],
            server_addresses: vec![ip("203.0.113.1"), ip("198.51.100.9")],
        };
        assert_eq!(policy.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(policy.check(ip("::ffff:127.0.0.1")), Ok(()));
        assert_eq!(policy.check(ip("198.51.100.9")), Ok(()));
        assert_eq!(policy.check(ip("198.51.100.10")), Err(PeerDenial::DenyList));
        assert_eq!(
            policy.check(ip("203.0.113.1")),
            Err(PeerDenial::ServerAddress)
        );
        assert_eq!(policy.check(ip("10.0.0.1")), Err(PeerDenial::Private));
        assert_eq!(PeerDenial::LinkLocal.as_str(), "link_local");
    }
}
