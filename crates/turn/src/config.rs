//! What a TURN [`Server`](crate::Server) is told at creation: realm, users, relay
//! addresses, port range, lifetimes and limits. Defaults follow RFC 8656.

use std::net::IpAddr;
use std::time::Duration;

use thiserror::Error;

use crate::policy::PeerPolicy;

/// Where relay sockets are bound, and the address clients are told.
///
/// They differ behind a 1:1 NAT (a cloud VM with a private interface address and a public
/// IP): sockets bind the private address, XOR-RELAYED-ADDRESS announces the public one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayAddress {
    pub bind: IpAddr,
    pub public: IpAddr,
}

impl RelayAddress {
    /// Bind and announce the same address.
    pub fn same(ip: IpAddr) -> Self {
        Self {
            bind: ip,
            public: ip,
        }
    }
}

/// Configuration of the TURN core.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// REALM of the long-term credentials.
    pub realm: String,
    /// SOFTWARE sent in responses, or none.
    pub software: Option<String>,
    /// Static long-term users: (username, password).
    pub users: Vec<(String, String)>,
    /// Shared secret of the TURN REST API credentials; `None` refuses REST usernames.
    pub rest_secret: Option<Vec<u8>>,
    /// IPv4 relay address; `None` answers IPv4 allocations with 440.
    pub relay_v4: Option<RelayAddress>,
    /// IPv6 relay address; `None` answers IPv6 allocations with 440.
    pub relay_v6: Option<RelayAddress>,
    /// Lowest relay port.
    pub min_port: u16,
    /// Highest relay port.
    pub max_port: u16,
    /// Lifetime of an allocation when the client asks for less or nothing (RFC: 600 s).
    pub default_lifetime: Duration,
    /// Longest lifetime granted (RFC: 3600 s).
    pub max_lifetime: Duration,
    /// Lifetime of a permission (RFC: 300 s, fixed).
    pub permission_lifetime: Duration,
    /// Lifetime of a channel binding (RFC: 600 s, fixed).
    pub channel_lifetime: Duration,
    /// How long a nonce stays valid before the client must take a new one (438).
    pub nonce_lifetime: Duration,
    /// How long a port reserved by EVEN-PORT's R bit is held (RFC: about 30 s).
    pub reservation_lifetime: Duration,
    /// Allocations on the whole server; past it, 508.
    pub max_allocations: usize,
    /// Allocations per user; past it, 486.
    pub max_allocations_per_user: usize,
    /// Permissions per allocation; past it, 508.
    pub max_permissions_per_allocation: usize,
    /// Channels per allocation; past it, 508.
    pub max_channels_per_allocation: usize,
    /// Relayed bytes per second per allocation, both directions together; 0: unlimited.
    pub allocation_bandwidth: u64,
    /// Relayed bytes per second for the whole server; 0: unlimited.
    pub total_bandwidth: u64,
    /// Which peers may be relayed to.
    pub peer_policy: PeerPolicy,
    /// Randomness for nonce keys, relay ports, reservation tokens and transaction ids.
    /// The driver draws it from the OS; tests fix it.
    pub seed: [u8; 32],
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            realm: "switchboard".into(),
            software: Some(switchboard_stun::DEFAULT_SOFTWARE.into()),
            users: Vec::new(),
            rest_secret: None,
            relay_v4: None,
            relay_v6: None,
            min_port: 49152,
            max_port: 65535,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(600),
            reservation_lifetime: Duration::from_secs(30),
            max_allocations: 10_000,
            max_allocations_per_user: 50,
            max_permissions_per_allocation: 256,
            max_channels_per_allocation: 256,
            allocation_bandwidth: 0,
            total_bandwidth: 0,
            peer_policy: PeerPolicy::default(),
            seed: [0; 32],
        }
    }
}

/// Why a configuration cannot run.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("the realm must be 1 to 127 characters")]
    Realm,
    #[error("no relay address: set an IPv4 or IPv6 relay address")]
    NoRelayAddress,
    #[error("relay address {0} is not of the family it is configured for")]
    RelayFamily(IpAddr),
    #[error("relay port range {min}-{max} is empty or includes port 0")]
    PortRange { min: u16, max: u16 },
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("username {0:?} must be 1 to 508 bytes without ':' or control characters")]
    Username(String),
    #[error("the REST API secret must not be empty")]
    EmptySecret,
    #[error("software {0:?} is longer than 127 characters")]
    Software(String),
}

impl ServerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.realm.is_empty() || self.realm.chars().count() > 127 {
            return Err(ConfigError::Realm);
        }
        if self.relay_v4.is_none() && self.relay_v6.is_none() {
            return Err(ConfigError::NoRelayAddress);
        }
        for (relay, v4) in [(self.relay_v4, true), (self.relay_v6, false)] {
            if let Some(relay) = relay {
                for ip in [relay.bind, relay.public] {
                    if ip.is_ipv4() != v4 {
                        return Err(ConfigError::RelayFamily(ip));
                    }
                }
            }
        }
        if self.min_port == 0 || self.min_port > self.max_port {
            return Err(ConfigError::PortRange {
                min: self.min_port,
                max: self.max_port,
            });
        }
        let positive = [
            ("max_allocations", self.max_allocations),
            ("max_allocations_per_user", self.max_allocations_per_user),
            (
                "max_permissions_per_allocation",
                self.max_permissions_per_allocation,
            ),
            (
                "max_channels_per_allocation",
                self.max_channels_per_allocation,
            ),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        let durations = [
            ("default_lifetime", self.default_lifetime),
            ("max_lifetime", self.max_lifetime),
            ("permission_lifetime", self.permission_lifetime),
            ("channel_lifetime", self.channel_lifetime),
            ("nonce_lifetime", self.nonce_lifetime),
            ("reservation_lifetime", self.reservation_lifetime),
        ];
        for (name, value) in durations {
            if value.as_secs() == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        for (user, _) in &self.users {
            // A colon would make a static user look like a REST username.
            if user.is_empty()
                || user.len() > 508
                || user.contains(':')
                || user.chars().any(char::is_control)
            {
                return Err(ConfigError::Username(user.clone()));
            }
        }
        if self.rest_secret.as_ref().is_some_and(Vec::is_empty) {
            return Err(ConfigError::EmptySecret);
        }
        if let Some(software) = &self.software {
            if software.chars().count() > 127 {
                return Err(ConfigError::Software(software.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> ServerConfig {
        ServerConfig {
            relay_v4: Some(RelayAddress::same("127.0.0.1".parse().unwrap())),
            ..ServerConfig::default()
        }
    }

    #[test]
    fn defaults_follow_the_rfc() {
        let config = ServerConfig::default();
        assert_eq!(config.default_lifetime, Duration::from_secs(600));
        assert_eq!(config.max_lifetime, Duration::from_secs(3600));
        assert_eq!(config.permission_lifetime, Duration::from_secs(300));
        assert_eq!(config.channel_lifetime, Duration::from_secs(600));
        assert_eq!((config.min_port, config.max_port), (49152, 65535));
        assert_eq!(valid().validate(), Ok(()));
    }

    #[test]
    fn invalid_settings_are_named() {
        let mut config = valid();
        config.relay_v4 = None;
        assert_eq!(config.validate(), Err(ConfigError::NoRelayAddress));
        let mut config = valid();
        config.relay_v6 = Some(RelayAddress::same("10.0.0.1".parse().unwrap()));
        assert_eq!(
            config.validate(),
            Err(ConfigError::RelayFamily("10.0.0.1".parse().unwrap()))
        );
        let mut config = valid();
        config.min_port = 6000;
        config.max_port = 5000;
        assert_eq!(
            config.validate(),
            Err(ConfigError::PortRange {
                min: 6000,
                max: 5000
            })
        );
        let mut config = valid();
        config.max_allocations_per_user = 0;
        assert_eq!(
            config.validate(),
            Err(ConfigError::Zero("max_allocations_per_user"))
        );
        let mut config = valid();
        config.realm = String::new();
        assert_eq!(config.validate(), Err(ConfigError::Realm));
        let mut config = valid();
        config.users = vec![("a:b".into(), "p".into())];
        assert_eq!(config.validate(), Err(ConfigError::Username("a:b".into())));
        let mut config = valid();
        config.rest_secret = Some(Vec::new());
        assert_eq!(config.validate(), Err(ConfigError::EmptySecret));
        let mut config = valid();
        config.nonce_lifetime = Duration::ZERO;
        assert_eq!(config.validate(), Err(ConfigError::Zero("nonce_lifetime")));
    }
}
