//! TURN (RFC 8656) for Switchboard, without I/O.
//!
//! A TURN server lets a client behind a restrictive NAT or firewall receive and send media
//! through a relay address on the server. This crate is the whole protocol side of that
//! server: allocations with their lifetimes, permissions, channel bindings, EVEN-PORT
//! reservations, long-term and TURN REST API credentials with stateless nonces, quotas and
//! bandwidth limits, and the peer-address policy that keeps the relay from being used to
//! reach private networks. It never opens a socket, reads a clock or spawns a task, in the
//! manner of quinn-proto and str0m: the tokio driver in the server crate moves bytes and
//! time in and out, and every decision can be tested deterministically with a fake clock.
//!
//! - [`server`]: [`Server`], the state machine, and its inputs and [`Output`]s.
//! - [`config`]: [`ServerConfig`] and its validation.
//! - [`auth`]: credentials and nonces; [`rest_password`] mints REST API passwords.
//! - [`policy`]: [`PeerPolicy`] and [`Cidr`].
//! - [`channel_data`]: ChannelData messages and stream framing ([`frame_len`]).
//! - [`allocation`]: per-allocation state and the [`AllocationInfo`] view.
//! - [`event`]: [`Event`]s for the driver's log: allocations made and ended,
//!   authentication failures, limits reached.
//! - [`stats`]: [`Stats`], the counters behind `/metrics`.
//! - `attrs`, `ports`, `rate`: TURN attribute layouts, relay port bookkeeping, token
//!   buckets.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use switchboard_turn::{Client, Output, RelayAddress, Server, ServerConfig, Transport};
//! use switchboard_stun::{Message, MessageBuilder, MessageType, Method, Class, ErrorCode,
//!     AttributeType, TransactionId};
//!
//! let config = ServerConfig {
//!     relay_v4: Some(RelayAddress::same("192.0.2.1".parse().unwrap())),
//!     users: vec![("alice".into(), "secret".into())],
//!     ..ServerConfig::default()
//! };
//! let now = Instant::now();
//! let mut server = Server::new(config, now, Duration::from_secs(1_700_000_000)).unwrap();
//!
//! // An Allocate without credentials is challenged with 401, REALM and NONCE.
//! let mut request = [0u8; 64];
//! let mut builder = MessageBuilder::new(
//!     &mut request,
//!     MessageType::new(Method::ALLOCATE, Class::Request),
//!     TransactionId::new([1; 12]),
//! ).unwrap();
//! builder.add_raw(AttributeType::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap();
//! let len = builder.finish();
//! let client = Client { transport: Transport::Udp, addr: "203.0.113.5:40000".parse().unwrap() };
//! server.handle_client(client, &request[..len], now);
//! let Some(Output::Transmit(transmit)) = server.poll_output() else { panic!() };
//! let response = Message::decode(transmit.data).unwrap();
//! assert_eq!(response.error_code().unwrap().0, ErrorCode::UNAUTHORIZED);
//! assert!(response.get(AttributeType::NONCE).is_some());
//! ```

pub mod allocation;
mod attrs;
pub mod auth;
pub mod channel_data;
pub mod config;
pub mod event;
pub mod policy;
mod ports;
mod rate;
pub mod server;
pub mod stats;
#[cfg(test)]
mod tests;

pub use allocation::{AllocationInfo, ChannelInfo, PermissionInfo};
pub use attrs::{Family, PROTOCOL_UDP};
pub use auth::{AuthFailure, rest_password, rest_username};
pub use channel_data::{ChannelData, FrameError, frame_len};
pub use config::{ConfigError, RelayAddress, ServerConfig};
pub use event::{EndReason, Event, Limit};
pub use policy::{Cidr, CidrError, PeerDenial, PeerPolicy};
pub use server::{
    BindError, Client, Destination, Handled, Output, RelayId, Server, Transmit, Transport,
};
pub use stats::{Direction, DropReason, ERROR_CODES, RequestKind, Stats, Traffic};
