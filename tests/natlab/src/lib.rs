//! NAT lab: a small Internet on one machine, built from network namespaces, veth pairs and
//! nftables, with real headless browsers behind NAT routers calling each other through a
//! `switchboard` process on the public side.
//!
//! - [`lab`]: the topology and the routers' NAT rules ([`Lab`], [`Nat`]).
//! - [`probe`]: proves each router's mapping and filtering behaviour with STUN, and that
//!   the private networks are unreachable except through their NAT.
//! - [`server`]: the `switchboard` binary in the public namespace.
//! - [`ice`]: what a page's `RTCPeerConnection` gathered, tried and selected.
//!
//! Run everything with `scripts/nat-lab.sh` (root); see `docs/nat-lab.md`.

pub mod ice;
pub mod lab;
pub mod probe;
pub mod server;

pub use lab::{Lab, Nat};
pub use server::{Relay, SwitchboardProcess};

use anyhow::Result;
use switchboard_e2e::{Browser, BrowserKind, LaunchOptions};

/// Starts one browser in each client namespace of `lab`, labelled with the names given,
/// trusting the server's plain-HTTP origin as a secure context (camera access).
pub async fn launch_clients(lab: &Lab, people: [(BrowserKind, &str); 2]) -> Result<Vec<Browser>> {
    let origin = lab.origin(server::HTTP_PORT);
    let options: Vec<LaunchOptions> = lab
        .clients
        .iter()
        .map(|ns| LaunchOptions {
            netns: Some(ns.clone()),
            secure_origins: vec![origin.clone()],
            ..LaunchOptions::default()
        })
        .collect();
    Browser::launch_all_with(&[
        (people[0].0, people[0].1, &options[0]),
        (people[1].0, people[1].1, &options[1]),
    ])
    .await
}

/// Opens the room page on the server as `name` and joins at once.
pub async fn join(lab: &Lab, browser: &Browser, room: &str, name: &str) -> Result<()> {
    browser
        .goto(&format!(
            "{}/r/{room}?name={name}&autojoin=1",
            lab.origin(server::HTTP_PORT)
        ))
        .await
}
