//! The control half of a TURN client over UDP, blocking and sequential: Allocate with the
//! long-term credential dance (401 → REALM and NONCE → signed request, 438 → new NONCE),
//! CreatePermission and ChannelBind toward the peer, and Refresh with lifetime 0 to delete
//! the allocation at the end. Messages are built and parsed with `switchboard-stun`.
//!
//! Every request is retransmitted a bounded number of times and every wait has a timeout, so
//! a server that never answers costs seconds, not a hang. Relayed data does not go through
//! here: `load` sends and receives ChannelData on the same sockets.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use switchboard_stun::{
    Attribute, AttributeType, Class, ErrorCode, Message, MessageBuilder, MessageType, Method,
    TransactionId, long_term_key_md5,
};

/// Wait for a response before sending the request again.
const RETRANSMIT_AFTER: Duration = Duration::from_millis(300);
/// Sends of one request before giving up.
const ATTEMPTS: u32 = 4;
/// Room for any request or response here (none carries data).
const MESSAGE_BUF: usize = 1500;
/// Local ports tried for one allocation: a server may still hold an allocation for a port
/// an earlier client used (coturn's own client leaves some to expire), and answers 437.
const PORT_ATTEMPTS: usize = 4;

/// Credentials of the static long-term user.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// One allocation with a permission and a channel toward the peer.
pub struct Allocation {
    /// Connected to the server: the client's end of the 5-tuple.
    pub socket: UdpSocket,
    pub channel: u16,
    /// The relayed transport address the server announced.
    pub relay: SocketAddr,
    session: Session,
}

/// Realm, nonce and key learned from the server, and the transaction counter.
struct Session {
    credentials: Credentials,
    realm: String,
    nonce: String,
    key: [u8; 16],
    txid: u64,
    txid_prefix: u32,
}

impl Allocation {
    /// Allocates a UDP relay on `server`, permits `peer` and binds `channel` to it.
    pub fn open(
        server: SocketAddr,
        credentials: &Credentials,
        peer: SocketAddr,
        channel: u16,
        index: u32,
    ) -> Result<Self, String> {
        let local: SocketAddr = if server.is_ipv4() {
            "127.0.0.1:0".parse().expect("a socket address")
        } else {
            "[::1]:0".parse().expect("a socket address")
        };
        let mut session = Session {
            credentials: credentials.clone(),
            realm: String::new(),
            nonce: String::new(),
            key: [0; 16],
            txid: 0,
            txid_prefix: index,
        };
        // Refused ports stay bound until the end, so that the next try gets another one.
        let mut refused = Vec::new();
        let (socket, response) = loop {
            let socket = UdpSocket::bind(local).map_err(|e| format!("bind: {e}"))?;
            socket
                .connect(server)
                .map_err(|e| format!("connect to {server}: {e}"))?;
            let allocated = session.authed(&socket, Method::ALLOCATE, &|b| {
                b.add_raw(AttributeType::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            });
            match allocated {
                Ok(response) => break (socket, response),
                Err(Refused::Code(437, _)) if refused.len() + 1 < PORT_ATTEMPTS => {
                    refused.push(socket);
                    // A nonce may be bound to the 5-tuple: start afresh.
                    session.nonce.clear();
                }
                Err(refusal) => return Err(refusal.to_string()),
            }
        };
        drop(refused);
        let relay = response
            .xor_address(AttributeType::XOR_RELAYED_ADDRESS)
            .ok_or("Allocate success without XOR-RELAYED-ADDRESS")?;
        session
            .authed(&socket, Method::CREATE_PERMISSION, &|b| {
                b.add_xor_address(AttributeType::XOR_PEER_ADDRESS, peer)
            })
            .map_err(|e| e.to_string())?;
        session
            .authed(&socket, Method::CHANNEL_BIND, &|b| {
                let [hi, lo] = channel.to_be_bytes();
                b.add_raw(AttributeType::CHANNEL_NUMBER, &[hi, lo, 0, 0])?;
                b.add_xor_address(AttributeType::XOR_PEER_ADDRESS, peer)
            })
            .map_err(|e| e.to_string())?;
        Ok(Self {
            socket,
            channel,
            relay,
            session,
        })
    }

    /// Deletes the allocation (Refresh with LIFETIME 0). Best effort: the server frees it
    /// at its lifetime's end anyway.
    pub fn release(mut self) -> Result<(), String> {
        self.socket
            .set_nonblocking(false)
            .map_err(|e| format!("socket mode: {e}"))?;
        self.session
            .authed(&self.socket, Method::REFRESH, &|b| {
                b.add_raw(AttributeType::LIFETIME, &0u32.to_be_bytes())
            })
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

type Fill<'f> = &'f dyn Fn(&mut MessageBuilder<'_>) -> Result<(), switchboard_stun::EncodeError>;

/// Why a request did not succeed.
enum Refused {
    /// An error response: its code and reason.
    Code(u16, String),
    /// No usable response, or anything else.
    Other(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Code(code, reason) => write!(f, "{code} {reason}"),
            Self::Other(message) => f.write_str(message),
        }
    }
}

impl From<String> for Refused {
    fn from(message: String) -> Self {
        Self::Other(message)
    }
}

/// A success response, kept as bytes.
struct Success {
    bytes: Vec<u8>,
}

impl Success {
    fn xor_address(&self, kind: AttributeType) -> Option<SocketAddr> {
        let message = Message::decode(&self.bytes).ok()?;
        let value = message.attributes().find_map(|a| match a {
            Attribute::Other(raw) if raw.kind == kind => Some(raw.value),
            _ => None,
        })?;
        decode_xor_address(value, &message.transaction_id())
    }
}

impl Session {
    fn next_txid(&mut self) -> TransactionId {
        self.txid += 1;
        let mut id = [0u8; 12];
        id[..4].copy_from_slice(&self.txid_prefix.to_be_bytes());
        id[4..].copy_from_slice(&self.txid.to_be_bytes());
        TransactionId::new(id)
    }

    /// A request signed with the credentials once a nonce is known; a 401 or 438 teaches
    /// realm and nonce and is retried, at most twice in all.
    fn authed(
        &mut self,
        socket: &UdpSocket,
        method: Method,
        fill: Fill<'_>,
    ) -> Result<Success, Refused> {
        for _ in 0..3 {
            let signed = !self.nonce.is_empty();
            let bytes = self.request(socket, method, signed, fill)?;
            let message = Message::decode(&bytes).map_err(|e| format!("bad response: {e}"))?;
            match message.message_type().class {
                Class::SuccessResponse => return Ok(Success { bytes }),
                Class::ErrorResponse => {
                    let (code, reason) =
                        message.error_code().unwrap_or((ErrorCode::BAD_REQUEST, ""));
                    if code == ErrorCode::UNAUTHORIZED && !signed || code == ErrorCode::STALE_NONCE
                    {
                        self.learn(&message)?;
                        continue;
                    }
                    return Err(Refused::Code(
                        code.code(),
                        format!("{reason} (to {method:?})"),
                    ));
                }
                class => return Err(format!("{method:?}: unexpected {class:?}").into()),
            }
        }
        Err(format!("{method:?}: still challenged after new credentials").into())
    }

    fn learn(&mut self, message: &Message<'_>) -> Result<(), String> {
        if let Some(Attribute::Realm(realm)) = message.get(AttributeType::REALM) {
            self.realm = realm.to_owned();
        }
        match message.get(AttributeType::NONCE) {
            Some(Attribute::Nonce(nonce)) => self.nonce = nonce.to_owned(),
            _ => return Err("challenge without NONCE".into()),
        }
        self.key = long_term_key_md5(
            &self.credentials.username,
            &self.realm,
            &self.credentials.password,
        );
        Ok(())
    }

    /// Sends one request until its response arrives; returns the response's bytes.
    fn request(
        &mut self,
        socket: &UdpSocket,
        method: Method,
        signed: bool,
        fill: Fill<'_>,
    ) -> Result<Vec<u8>, String> {
        let txid = self.next_txid();
        let mut buf = [0u8; MESSAGE_BUF];
        let len = {
            let encode = |buf: &mut [u8]| {
                let mut builder =
                    MessageBuilder::new(buf, MessageType::new(method, Class::Request), txid)?;
                fill(&mut builder)?;
                if signed {
                    builder.add_username(&self.credentials.username)?;
                    builder.add_realm(&self.realm)?;
                    builder.add_nonce(&self.nonce)?;
                    builder.add_message_integrity(&self.key)?;
                }
                builder.finish_with_fingerprint()
            };
            encode(&mut buf).map_err(|e| format!("encode {method:?}: {e}"))?
        };
        let mut reply = [0u8; MESSAGE_BUF];
        for _ in 0..ATTEMPTS {
            socket
                .send(&buf[..len])
                .map_err(|e| format!("send {method:?}: {e}"))?;
            let deadline = Instant::now() + RETRANSMIT_AFTER;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                if left.is_zero() {
                    break;
                }
                socket
                    .set_read_timeout(Some(left))
                    .map_err(|e| format!("socket timeout: {e}"))?;
                match socket.recv(&mut reply) {
                    Ok(n) => {
                        // Anything else (a late answer to an earlier attempt) is skipped.
                        if Message::decode(&reply[..n]).is_ok_and(|m| m.transaction_id() == txid) {
                            return Ok(reply[..n].to_vec());
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        break;
                    }
                    // ICMP port unreachable shows up as a refused connection.
                    Err(e) => return Err(format!("{method:?}: {e}")),
                }
            }
        }
        Err(format!("{method:?}: no response after {ATTEMPTS} attempts"))
    }
}

/// An XOR-*-ADDRESS value (RFC 8489 §14.2), IPv4 or IPv6.
fn decode_xor_address(value: &[u8], txid: &TransactionId) -> Option<SocketAddr> {
    const COOKIE: [u8; 4] = 0x2112_A442u32.to_be_bytes();
    let family = *value.get(1)?;
    let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]) ^ 0x2112;
    match (family, value.len()) {
        (0x01, 8) => {
            let mut ip = [0u8; 4];
            for (i, byte) in ip.iter_mut().enumerate() {
                *byte = value[4 + i] ^ COOKIE[i];
            }
            Some(SocketAddr::from((ip, port)))
        }
        (0x02, 20) => {
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&COOKIE);
            mask[4..].copy_from_slice(txid.as_bytes());
            let mut ip = [0u8; 16];
            for (i, byte) in ip.iter_mut().enumerate() {
                *byte = value[4 + i] ^ mask[i];
            }
            Some(SocketAddr::from((ip, port)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_address_round_trip() {
        let txid = TransactionId::new([9; 12]);
        for addr in ["192.0.2.7:50001", "[2001:db8::5]:3478"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut buf = [0u8; 64];
            let mut builder = MessageBuilder::new(
                &mut buf,
                MessageType::new(Method::ALLOCATE, Class::SuccessResponse),
                txid,
            )
            .unwrap();
            builder
                .add_xor_address(AttributeType::XOR_RELAYED_ADDRESS, addr)
                .unwrap();
            let len = builder.finish();
            let success = Success {
                bytes: buf[..len].to_vec(),
            };
            assert_eq!(
                success.xor_address(AttributeType::XOR_RELAYED_ADDRESS),
                Some(addr)
            );
        }
    }
}
