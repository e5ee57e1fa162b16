//! Proves what the routers do, with STUN Binding requests and plain datagrams from sockets
//! the test opens inside the lab's namespaces (RFC 4787 terms, RFC 5780 method).
//!
//! Mapping: one client socket asks three STUN servers for its public address: Switchboard's
//! own (198.51.100.1:3478), a responder on another port of the same address
//! (198.51.100.1:3479) and one on another address (198.51.100.4:3478). The same answer
//! three times is endpoint-independent mapping; different answers are dependent mapping.
//!
//! Filtering: after the socket has talked to 198.51.100.1:3479, that endpoint can send it a
//! datagram (the control: the path works), while another port of the same address and
//! another address cannot: address-and-port-dependent filtering.
//!
//! Isolation: a client cannot reach the other client's private address, and the public
//! side has no route to either private network.

use crate::lab::{CLIENT_IP, Lab, ROUTER_WAN, SECOND_PUBLIC_IP, SERVER_IP};
use anyhow::{Context, Result, anyhow, bail, ensure};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;
use switchboard_e2e::in_netns;
use switchboard_stun::{
    BindingResponder, Class, Message, MessageBuilder, MessageType, Outcome, TransactionId,
};

/// How long a datagram that should arrive may take; also how long one that must not
/// arrive is waited for. Everything is on one machine.
const DATAGRAM_WAIT: Duration = Duration::from_millis(1500);

/// How a NAT maps a local socket to public addresses (RFC 4787 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    EndpointIndependent,
    /// A different public address or port per destination.
    EndpointDependent,
}

/// Which outside endpoints may send to a mapping (RFC 4787 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filtering {
    /// Anyone.
    EndpointIndependent,
    /// Any port of an address the client has sent to.
    AddressDependent,
    /// Only the exact address and port the client has sent to.
    AddressAndPortDependent,
}

/// What one router was seen doing.
#[derive(Clone, Debug)]
pub struct Behaviour {
    pub mapping: Mapping,
    pub filtering: Filtering,
    /// Public address per destination: Switchboard's STUN port, another port of the same
    /// address, another address.
    pub mapped: [SocketAddr; 3],
}

impl Behaviour {
    /// "port-restricted cone" or "symmetric" for the combinations the lab builds.
    pub fn name(&self) -> &'static str {
        match (self.mapping, self.filtering) {
            (Mapping::EndpointIndependent, Filtering::EndpointIndependent) => "full cone",
            (Mapping::EndpointIndependent, Filtering::AddressDependent) => "restricted cone",
            (Mapping::EndpointIndependent, Filtering::AddressAndPortDependent) => {
                "port-restricted cone"
            }
            (Mapping::EndpointDependent, _) => "symmetric",
        }
    }
}

/// A UDP socket opened inside namespace `ns`.
fn socket_in(ns: &str, addr: SocketAddrV4) -> Result<UdpSocket> {
    let socket = in_netns(ns, move || UdpSocket::bind(addr))?
        .with_context(|| format!("binding {addr} in {ns}"))?;
    socket.set_read_timeout(Some(DATAGRAM_WAIT))?;
    Ok(socket)
}

fn transaction_id(n: u8) -> TransactionId {
    let mut id = [n; 12];
    id[..4].copy_from_slice(&std::process::id().to_be_bytes());
    TransactionId::new(id)
}

fn binding_request(id: TransactionId) -> Result<Vec<u8>> {
    let mut buf = [0u8; 64];
    let len = MessageBuilder::new(&mut buf, MessageType::BINDING_REQUEST, id)
        .map_err(|e| anyhow!("{e}"))?
        .finish_with_fingerprint()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(buf[..len].to_vec())
}

/// Reads datagrams on `socket` until the success response to `id`, and returns its
/// XOR-MAPPED-ADDRESS.
fn read_binding_response(socket: &UdpSocket, id: TransactionId) -> Result<SocketAddr> {
    let mut buf = [0u8; 1500];
    loop {
        let (len, _) = socket.recv_from(&mut buf)?;
        let Ok(message) = Message::decode(&buf[..len]) else {
            continue;
        };
        let header = message.header();
        if header.transaction_id != id {
            continue;
        }
        ensure!(
            header.message_type.class == Class::SuccessResponse,
            "STUN error response: {:?}",
            header.message_type
        );
        return message
            .xor_mapped_address()
            .ok_or_else(|| anyhow!("STUN response without XOR-MAPPED-ADDRESS"));
    }
}

/// Asks Switchboard's STUN server (which runs in another process) for `client`'s mapping.
fn ask_server(client: &UdpSocket, server: SocketAddr, n: u8) -> Result<SocketAddr> {
    let id = transaction_id(n);
    let request = binding_request(id)?;
    let mut last = None;
    for _ in 0..3 {
        client.send_to(&request, server)?;
        match read_binding_response(client, id) {
            Ok(mapped) => return Ok(mapped),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("no answer")))
        .with_context(|| format!("STUN Binding to {server}"))
}

/// Asks a responder the test runs itself; also returns the source address the responder
/// saw, which must be the same as the mapping it reports.
fn ask_responder(client: &UdpSocket, responder: &UdpSocket, n: u8) -> Result<SocketAddr> {
    let id = transaction_id(n);
    client.send_to(&binding_request(id)?, responder.local_addr()?)?;
    let mut buf = [0u8; 1500];
    let (len, source) = responder
        .recv_from(&mut buf)
        .with_context(|| format!("no request reached {}", responder.local_addr().unwrap()))?;
    let mut out = [0u8; 1024];
    let Outcome::Reply { len, .. } =
        BindingResponder::default().handle(&buf[..len], source, &mut out)
    else {
        bail!("the test's own Binding request was not answered");
    };
    responder.send_to(&out[..len], source)?;
    let mapped = read_binding_response(client, id)?;
    ensure!(
        mapped == source,
        "responder saw {source}, answered {mapped}"
    );
    Ok(mapped)
}

/// Whether a datagram from `from` reaches `to` (which has a read timeout).
fn delivered(from: &UdpSocket, to: &UdpSocket, dest: SocketAddr) -> Result<bool> {
    let token = format!("natlab probe from {}", from.local_addr()?);
    if from.send_to(token.as_bytes(), dest).is_err() {
        return Ok(false);
    }
    let mut buf = [0u8; 1500];
    loop {
        match to.recv_from(&mut buf) {
            Ok((len, _)) if &buf[..len] == token.as_bytes() => return Ok(true),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Measures the NAT in front of client `i` (0 or 1). Switchboard's STUN server must be
/// listening on `stun_port` of [`SERVER_IP`].
pub fn nat_behaviour(lab: &Lab, i: usize, stun_port: u16) -> Result<Behaviour> {
    let any = |port| SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
    let client = socket_in(&lab.clients[i], any(0))?;
    let same_ip_other_port = socket_in(&lab.public, SocketAddrV4::new(SERVER_IP, stun_port + 1))?;
    let other_ip = socket_in(&lab.public, SocketAddrV4::new(SECOND_PUBLIC_IP, stun_port))?;
    let stranger_port = socket_in(&lab.public, SocketAddrV4::new(SERVER_IP, stun_port + 2))?;
    let stranger_ip = socket_in(
        &lab.public,
        SocketAddrV4::new(SECOND_PUBLIC_IP, stun_port + 2),
    )?;

    let server = SocketAddr::from((SERVER_IP, stun_port));
    let via_server = ask_server(&client, server, 1)?;
    let via_port = ask_responder(&client, &same_ip_other_port, 2)?;
    let via_ip = ask_responder(&client, &other_ip, 3)?;
    for mapped in [via_server, via_port, via_ip] {
        ensure!(
            mapped.ip() == ROUTER_WAN[i],
            "client {} appears as {mapped}, not as its router's WAN address {}",
            i + 1,
            ROUTER_WAN[i]
        );
    }
    let mapping = if via_server == via_port && via_port == via_ip {
        Mapping::EndpointIndependent
    } else {
        Mapping::EndpointDependent
    };

    // Filtering, on the mapping towards 198.51.100.1:3479.
    ensure!(
        delivered(&same_ip_other_port, &client, via_port)?,
        "the endpoint the client contacted cannot send back to {via_port}: the probe is broken"
    );
    let from_other_port = delivered(&stranger_port, &client, via_port)?;
    let from_other_ip = delivered(&stranger_ip, &client, via_port)?;
    let filtering = match (from_other_port, from_other_ip) {
        (true, true) => Filtering::EndpointIndependent,
        (true, false) => Filtering::AddressDependent,
        (false, false) => Filtering::AddressAndPortDependent,
        (false, true) => bail!("an unknown address got through while a known one did not"),
    };
    Ok(Behaviour {
        mapping,
        filtering,
        mapped: [via_server, via_port, via_ip],
    })
}

/// Checks that the clients are reachable only through their NATs: client 1 cannot reach
/// client 2's private address (nor the reverse) and the public namespace has no way to
/// client addresses.
pub fn assert_isolated(lab: &Lab) -> Result<()> {
    for (from, to) in [(0, 1), (1, 0)] {
        let listener = socket_in(&lab.clients[to], SocketAddrV4::new(CLIENT_IP[to], 40_000))?;
        let sender = socket_in(
            &lab.clients[from],
            SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        )?;
        ensure!(
            !delivered(
                &sender,
                &listener,
                SocketAddr::from((CLIENT_IP[to], 40_000))
            )?,
            "client {} reached client {}'s private address {} directly",
            from + 1,
            to + 1,
            CLIENT_IP[to]
        );
        let public = socket_in(&lab.public, SocketAddrV4::new(SERVER_IP, 0))?;
        ensure!(
            !delivered(
                &public,
                &listener,
                SocketAddr::from((CLIENT_IP[to], 40_000))
            )?,
            "the public side reached client {}'s private address {}",
            to + 1,
            CLIENT_IP[to]
        );
    }
    Ok(())
}
