//! Data channels relayed through the engine, as one participant's session sees them: the
//! channels it opened to the engine (*inbound*: what it sends there goes to its room) and the
//! channels the engine opened in its session to relay someone else's (*outbound*, labelled
//! `<publisher label>/<channel label>`).
//!
//! [`DataChannels`] is bookkeeping only: it never touches an `Rtc` and decides nothing about
//! who receives; the worker opens, writes and closes the str0m channels and counts what it
//! forwarded or dropped. What it bounds: the channels a participant may open to the engine
//! ([`MAX_INBOUND`]), the relayed channels open in one session ([`MAX_OUTBOUND`]), and what a
//! relayed channel holds while it opens ([`PENDING_MESSAGES`], [`PENDING_BYTES`]). Once open,
//! messages go straight to str0m, whose send buffer is capped per session
//! ([`SEND_BUFFER`]); a message that does not fit is dropped, not queued.

use std::collections::VecDeque;
use std::sync::Arc;

use str0m::channel::{ChannelConfig, ChannelId};

use crate::ids::ParticipantId;

/// Channels one participant may open to the engine; more are closed at once.
pub(crate) const MAX_INBOUND: usize = 8;
/// Relayed channels the engine keeps open (or opening) in one session.
pub(crate) const MAX_OUTBOUND: usize = 256;
/// Longest channel label or protocol relayed, in bytes (the relayed label adds the
/// publisher's label in front).
pub(crate) const MAX_CHANNEL_LABEL: usize = 256;
/// Bytes str0m may hold unacknowledged across one session's data channels
/// (`set_sctp_max_buffered_amount`): a subscriber that cannot keep up loses messages past it.
pub(crate) const SEND_BUFFER: usize = 1024 * 1024;
/// Messages held for a relayed channel that is still opening.
pub(crate) const PENDING_MESSAGES: usize = 64;
/// Bytes held for a relayed channel that is still opening.
pub(crate) const PENDING_BYTES: usize = 256 * 1024;

/// A message held until its channel opens: (binary, payload shared between subscribers).
pub(crate) type Held = (bool, Arc<[u8]>);

/// A channel the participant opened to the engine.
#[derive(Debug)]
pub(crate) struct Inbound {
    /// Its id in the participant's session.
    pub(crate) id: ChannelId,
    /// What relayed copies are opened with: label `<publisher label>/<label>`, the same
    /// ordering, reliability and protocol. Shared, so relaying a message copies no config.
    pub(crate) relay: Arc<ChannelConfig>,
}

#[derive(Debug)]
enum OutboundState {
    /// Created in str0m, waiting for `ChannelOpen`; messages wait here meanwhile.
    Opening {
        held: VecDeque<Held>,
        bytes: usize,
    },
    Open,
    /// Closed by us; forgotten when str0m reports the close.
    Closing,
}

/// A channel the engine opened in this session to relay `publisher`'s channel `source`.
#[derive(Debug)]
pub(crate) struct Outbound {
    /// Whose channel it relays.
    pub(crate) publisher: ParticipantId,
    /// The channel's id in the publisher's session.
    pub(crate) source: ChannelId,
    /// Its id in this session.
    pub(crate) id: ChannelId,
    state: OutboundState,
}

/// Where a message for a relayed channel goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// The channel is open: write it to str0m.
    Write(ChannelId),
    /// The channel is opening: hold the message ([`DataChannels::hold`]).
    Hold,
    /// No relayed channel yet: open one, then hold the message.
    Open,
    /// Nowhere (the session has as many relayed channels as allowed): drop it.
    Drop,
}

/// The data channels of one participant's session. See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct DataChannels {
    /// The participant's last offer had an application (SCTP) m-line, so it can receive
    /// relayed channels.
    pub(crate) negotiated: bool,
    inbound: Vec<Inbound>,
    outbound: Vec<Outbound>,
}

impl DataChannels {
    /// The participant's own channel `id`, if it is one.
    pub(crate) fn inbound(&self, id: ChannelId) -> Option<&Inbound> {
        self.inbound.iter().find(|c| c.id == id)
    }

    /// Records a channel the participant opened; `false` (and nothing recorded) past
    /// [`MAX_INBOUND`].
    pub(crate) fn add_inbound(&mut self, id: ChannelId, relay: ChannelConfig) -> bool {
        if self.inbound.len() >= MAX_INBOUND {
            return false;
        }
        self.inbound.push(Inbound {
            id,
            relay: Arc::new(relay),
        });
        true
    }

    /// Forgets the participant's channel `id`; whether it was one.
    pub(crate) fn remove_inbound(&mut self, id: ChannelId) -> bool {
        let before = self.inbound.len();
        self.inbound.retain(|c| c.id != id);
        self.inbound.len() != before
    }

    /// Where a message of `publisher`'s channel `source` goes in this session.
    pub(crate) fn route(&self, publisher: ParticipantId, source: ChannelId) -> Route {
        let found = self
            .outbound
            .iter()
            .find(|c| c.publisher == publisher && c.source == source);
        match found {
            Some(c) => match c.state {
                OutboundState::Open => Route::Write(c.id),
                OutboundState::Opening { .. } => Route::Hold,
                // Closing only when its source is gone: nothing more is relayed on it.
                OutboundState::Closing => Route::Drop,
            },
            None if self.outbound.len() >= MAX_OUTBOUND => Route::Drop,
            None => Route::Open,
        }
    }

    /// Records a relayed channel just created in str0m as `id`.
    pub(crate) fn add_outbound(
        &mut self,
        publisher: ParticipantId,
        source: ChannelId,
        id: ChannelId,
    ) {
        self.outbound.push(Outbound {
            publisher,
            source,
            id,
            state: OutboundState::Opening {
                held: VecDeque::new(),
                bytes: 0,
            },
        });
    }

    /// Holds a message for the opening relay of `publisher`'s `source`; `false` if it must be
    /// dropped (no such channel opening, or past [`PENDING_MESSAGES`] / [`PENDING_BYTES`]).
    pub(crate) fn hold(
        &mut self,
        publisher: ParticipantId,
        source: ChannelId,
        binary: bool,
        payload: &Arc<[u8]>,
    ) -> bool {
        let state = self
            .outbound
            .iter_mut()
            .find(|c| c.publisher == publisher && c.source == source)
            .map(|c| &mut c.state);
        let Some(OutboundState::Opening { held, bytes }) = state else {
            return false;
        };
        if held.len() >= PENDING_MESSAGES || *bytes + payload.len() > PENDING_BYTES {
            return false;
        }
        *bytes += payload.len();
        held.push_back((binary, payload.clone()));
        true
    }

    /// str0m opened channel `id`. For a relayed channel that was opening, returns the
    /// messages held for it, to write now; `None` if `id` is no relayed channel of ours.
    /// A relay closed while opening is closed again (`Some(empty)` and `true`): only now has
    /// it a stream str0m can close.
    pub(crate) fn opened(&mut self, id: ChannelId) -> Option<(VecDeque<Held>, bool)> {
        let c = self.outbound.iter_mut().find(|c| c.id == id)?;
        match std::mem::replace(&mut c.state, OutboundState::Open) {
            OutboundState::Opening { held, .. } => Some((held, false)),
            OutboundState::Open => Some((VecDeque::new(), false)),
            OutboundState::Closing => {
                c.state = OutboundState::Closing;
                Some((VecDeque::new(), true))
            }
        }
    }

    /// str0m closed channel `id` (either side closed it). Forgets it if it is a relay; returns
    /// how many held messages were lost with it, or `None` if it was no relay.
    pub(crate) fn closed(&mut self, id: ChannelId) -> Option<usize> {
        let i = self.outbound.iter().position(|c| c.id == id)?;
        Some(match self.outbound.swap_remove(i).state {
            OutboundState::Opening { held, .. } => held.len(),
            OutboundState::Open | OutboundState::Closing => 0,
        })
    }

    /// Starts closing the relays of `publisher`'s channels (only `source`'s if given): pushes
    /// their ids onto `to_close` for the worker to close in str0m, and returns how many held
    /// messages are lost.
    pub(crate) fn close_relays_of(
        &mut self,
        publisher: ParticipantId,
        source: Option<ChannelId>,
        to_close: &mut Vec<ChannelId>,
    ) -> usize {
        let mut lost = 0;
        for c in &mut self.outbound {
            let matches = c.publisher == publisher && source.is_none_or(|s| s == c.source);
            if !matches {
                continue;
            }
            if let OutboundState::Opening { held, .. } = &c.state {
                lost += held.len();
            }
            if !matches!(c.state, OutboundState::Closing) {
                c.state = OutboundState::Closing;
                to_close.push(c.id);
            }
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use str0m::Rtc;

    const P: ParticipantId = ParticipantId(1);

    /// Channel ids are str0m's to make: a few from a throwaway session.
    fn ids(n: usize) -> Vec<ChannelId> {
        let mut rtc = Rtc::builder().build(Instant::now());
        (0..n)
            .map(|_| {
                rtc.direct_api()
                    .create_data_channel(ChannelConfig::default())
            })
            .collect()
    }

    fn payload(len: usize) -> Arc<[u8]> {
        Arc::from(vec![7u8; len])
    }

    #[test]
    fn a_relay_is_opened_once_holds_until_open_then_writes() {
        let [src, out] = ids(2)[..] else { panic!() };
        let mut d = DataChannels::default();
        assert_eq!(d.route(P, src), Route::Open);
        d.add_outbound(P, src, out);
        assert_eq!(d.route(P, src), Route::Hold);
        assert!(d.hold(P, src, true, &payload(3)));
        assert!(d.hold(P, src, false, &payload(0)));

        let (held, close_again) = d.opened(out).unwrap();
        assert!(!close_again);
        let held: Vec<_> = held.into_iter().map(|(b, p)| (b, p.len())).collect();
        assert_eq!(held, [(true, 3), (false, 0)], "in order, flags kept");
        assert_eq!(d.route(P, src), Route::Write(out));
        assert!(!d.hold(P, src, true, &payload(1)), "open: nothing is held");
        assert_eq!(d.closed(out), Some(0));
        assert_eq!(
            d.route(P, src),
            Route::Open,
            "closed by the peer: reopened on demand"
        );
    }

    #[test]
    fn what_an_opening_relay_holds_is_bounded() {
        let [src, out] = ids(2)[..] else { panic!() };
        let mut d = DataChannels::default();
        d.add_outbound(P, src, out);
        assert!(d.hold(P, src, true, &payload(PENDING_BYTES)));
        assert!(!d.hold(P, src, true, &payload(1)), "bytes");
        assert_eq!(d.closed(out), Some(1));

        d.add_outbound(P, src, out);
        for _ in 0..PENDING_MESSAGES {
            assert!(d.hold(P, src, false, &payload(0)));
        }
        assert!(
            !d.hold(P, src, false, &payload(0)),
            "count, even when empty"
        );
    }

    #[test]
    fn closing_a_publishers_relays_covers_opening_and_open_ones() {
        let [a, b, c, out_a, out_b, out_c] = ids(6)[..] else {
            panic!()
        };
        let q = ParticipantId(2);
        let mut d = DataChannels::default();
        d.add_outbound(P, a, out_a);
        d.add_outbound(P, b, out_b);
        d.add_outbound(q, c, out_c);
        assert!(d.hold(P, a, false, &payload(5)));
        d.opened(out_b).unwrap();

        let mut to_close = Vec::new();
        assert_eq!(
            d.close_relays_of(P, None, &mut to_close),
            1,
            "one held message lost"
        );
        assert_eq!(to_close, [out_a, out_b]);
        assert_eq!(
            d.route(P, a),
            Route::Drop,
            "nothing more on a closing relay"
        );
        // The opening one is closed again once str0m opens it.
        assert_eq!(
            d.opened(out_a).map(|(h, again)| (h.len(), again)),
            Some((0, true))
        );
        to_close.clear();
        assert_eq!(d.close_relays_of(P, None, &mut to_close), 0);
        assert!(to_close.is_empty(), "closed once");
        assert_eq!(d.closed(out_a), Some(0));
        assert_eq!(d.closed(out_b), Some(0));
        assert_eq!(d.route(q, c), Route::Hold, "other publishers untouched");
    }

    #[test]
    fn inbound_channels_are_bounded() {
        let all = ids(MAX_INBOUND + 1);
        let mut d = DataChannels::default();
        for &id in &all[..MAX_INBOUND] {
            assert!(d.add_inbound(id, ChannelConfig::default()));
        }
        assert!(!d.add_inbound(all[MAX_INBOUND], ChannelConfig::default()));
        assert!(d.inbound(all[0]).is_some());
        assert!(d.remove_inbound(all[0]));
        assert!(!d.remove_inbound(all[0]));
        assert!(d.inbound(all[0]).is_none());
    }
}
