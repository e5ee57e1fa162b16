// @ts-check
/**
 * One `RTCPeerConnection` to one remote participant, and everything that rides on it:
 *
 * - **Perfect negotiation** (the pattern from the WebRTC spec and MDN): either side may
 *   renegotiate at any time; on offer glare the *polite* side rolls back and the impolite
 *   side's offer wins, so collisions never break a call.
 * - **Passive start**: a link created in reaction to someone else (they joined after us, or
 *   we are the polite side of a random pair) waits for their first offer before adding its
 *   own tracks, so the call starts with one offer/answer round trip instead of glare. If no
 *   offer comes within a few seconds it starts negotiating itself.
 * - Trickle ICE (`candidate` messages, `null` = end of candidates) and **ICE restart** when
 *   the connection fails or stays disconnected. The restart offer always comes from the
 *   side that is the *DTLS server*; the DTLS client asks it to with `ice-restart`. DTLS
 *   roles must survive an ICE restart, and an answerer does not always keep its role:
 *   Firefox answers an ICE-restart offer of `a=setup:actpass` with `active` whatever its
 *   role was, so if it was the server, the offerer (then the client) fails with "Failed to
 *   set SSL role for the transport". When the restart offer comes from the server, the
 *   answerer is the client already, and `active` is what every browser answers.
 * - A link that stays unconnected for 20 s reports `failed` even when the browser does not
 *   (each restart from the other side puts it back to `checking`), so both users learn that
 *   the call is not getting through.
 * - **New connection** as the last resort: when applying a description fails, or the
 *   connection stays failed after an ICE restart, the impolite side closes its
 *   `RTCPeerConnection` and offers from a fresh one (the polite side asks it to, over the
 *   data channel or with `ice-restart`). The other side recognises an offer for a new
 *   connection by its SDP session id (the `o=` line) and starts afresh too. Remote streams
 *   keep their ids (they come from the sender's streams), so tiles stay where they are.
 * - One data channel (`negotiated: true, id: 0`, so no glare) speaking the `switchboard`
 *   channel protocol (channel.js): chat, media state (which stream is camera or screen,
 *   mic/camera on or off), file transfers, and our own `reconnect` request.
 * - Stats, summarized by `stats.js`.
 *
 * A link never talks to the WebSocket itself: it hands signaling messages to a callback.
 * @module
 */

import { ChannelEndpoint } from './channel.js';
import { Emitter } from './emitter.js';
import { summarizeStats } from './stats.js';

/** @typedef {import('./types.js').ClientMessage} ClientMessage */
/** @typedef {import('./types.js').PeerSignal} PeerSignal */
/** @typedef {import('./types.js').StreamKind} StreamKind */
/** @typedef {import('./stats.js').PeerStats} PeerStats */
/** @typedef {import('./stats.js').StatsSample} StatsSample */

const PASSIVE_WAIT_MS = 4000;
const KIND_FALLBACK_MS = 3000;
const DISCONNECTED_GRACE_MS = 4000;
const ANSWER_TIMEOUT_MS = 15000;
/** How long a connection may stay failed after an ICE restart before it is rebuilt. */
const RESTART_PATIENCE_MS = 4000;
/** Minimum time between two new connections to the same peer. */
const REBUILD_MIN_INTERVAL_MS = 5000;
/** Minimum time between two `ice-restart` requests passed back to the DTLS server. */
const RESTART_BOUNCE_MS = 3000;
/**
 * How long a link may stay unconnected before it reports `failed`. The browser's own
 * `failed` may never come on one side: each ICE restart from the other side puts it back
 * to `checking`. The user still deserves to hear that the call is not getting through.
 */
const STUCK_AFTER_MS = 20000;

/**
 * What this side currently sends, as the owner sees it.
 * @typedef {object} LocalState
 * @property {MediaStream | null} camera camera and microphone stream, if any
 * @property {MediaStream | null} screen screen-share stream, if sharing
 * @property {boolean} mic microphone enabled
 * @property {boolean} cam camera enabled
 */

/**
 * @typedef {object} PeerLinkOptions
 * @property {string} peerId the remote participant
 * @property {string} name the remote participant's display name
 * @property {boolean} polite whether this side yields on offer glare
 * @property {boolean} passive wait for the remote offer before adding local media
 * @property {RTCIceServer[]} iceServers
 * @property {() => RTCIceServer[]} [currentIceServers] fresh ICE servers (TURN credentials
 *   expire) for when the connection is rebuilt; defaults to `iceServers`
 * @property {RTCIceTransportPolicy} [iceTransportPolicy] `'all'` (default) or `'relay'`:
 *   only relayed (TURN) candidates, for this connection and every rebuilt one
 * @property {boolean} sendMedia whether local streams are sent on this link
 * @property {boolean} sendOnly send with `sendonly` transceivers (one-way broadcast)
 * @property {(msg: ClientMessage) => void} signal sends a signaling message
 * @property {() => LocalState} local the current local streams and switches
 */

/** @typedef {import('./channel.js').FileProgress} FileProgress */
/** @typedef {import('./channel.js').ReceivedFile} ReceivedFile */

/**
 * Events of {@link PeerLink}:
 * - `state` — `connectionState` changed (`new`, `connecting`, `connected`, `disconnected`,
 *   `failed`, `closed`).
 * - `stream` — a remote stream became available, with its kind.
 * - `stream-removed` — a remote stream ended (e.g. the peer stopped sharing its screen).
 * - `media` — the peer switched its microphone or camera on or off.
 * - `channel-open` — the data channel opened.
 * - `chat` — a chat message arrived.
 * - `file-progress`, `file`, `file-sent`, `file-error` — file transfers.
 * @typedef {object} PeerLinkEvents
 * @property {{ state: string }} state
 * @property {{ stream: MediaStream, kind: StreamKind }} stream
 * @property {{ stream: MediaStream, kind: StreamKind }} stream-removed
 * @property {{ mic: boolean, camera: boolean }} media
 * @property {{}} channel-open
 * @property {{ text: string, ts: number }} chat
 * @property {FileProgress} file-progress
 * @property {ReceivedFile} file
 * @property {{ transferId: string, fileName: string, size: number }} file-sent
 * @property {{ transferId: string, fileName: string, direction: 'send' | 'receive', message: string }} file-error
 */

/** @extends {Emitter<PeerLinkEvents>} */
export class PeerLink extends Emitter {
  /** @param {PeerLinkOptions} options */
  constructor(options) {
    super();
    this.peerId = options.peerId;
    this.name = options.name;
    this.polite = options.polite;
    this.passive = options.passive;
    this._opts = options;
    this.closed = false;

    this.pc = createPeerConnection(options.iceServers, options.iceTransportPolicy);
    /** Chat, media state and files, on the current connection's data channel. */
    this.channel = new ChannelEndpoint({ name: () => this.name });
    this._wireChannel();

    // Perfect negotiation state.
    this._makingOffer = false;
    this._ignoreOffer = false;
    this._settingRemoteAnswerPending = false;
    /** Serializes handling of incoming signaling messages. */
    this._chain = Promise.resolve();

    this._attached = false;
    /** @type {Map<StreamKind, { stream: MediaStream, senders: RTCRtpSender[] }>} */
    this._sending = new Map();

    /** @type {Map<string, MediaStream>} remote streams by id */
    this._remoteStreams = new Map();
    /** @type {Map<string, StreamKind>} remote stream kinds as the peer declared them */
    this._remoteKinds = new Map();
    /**
     * Remote streams reported with `stream`, by id. After a new connection the entry keeps
     * the old stream until the new one with the same id is reported.
     * @type {Map<string, { stream: MediaStream, kind: StreamKind }>}
     */
    this._announced = new Map();
    /** The peer's microphone/camera switches as last reported. */
    this.remoteMedia = { mic: true, camera: true };

    /** @type {StatsSample | null} */
    this._lastSample = null;

    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._passiveTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._kindTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._recoverTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._answerTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._rebuildTimer = undefined;
    this._recoverAttempts = 0;
    this._lastState = '';
    /** When we last restarted ICE or asked for it (`performance.now()`), 0 once connected. */
    this._restartedAt = 0;
    /** When we last passed an `ice-restart` request back to the DTLS server. */
    this._lastBounce = -Infinity;
    /** Offers of ours that went unanswered in a row. */
    this._unanswered = 0;
    /** Applying a description failed: this peer connection cannot be trusted any more. */
    this._broken = false;
    this._lastRebuild = -Infinity;
    /** How many times the peer connection was replaced by a new one. */
    this.rebuilds = 0;
    /** @type {Set<string>} SDP session ids of the peer's replaced connections */
    this._deadSessions = new Set();

    /** @type {ReturnType<typeof setTimeout> | undefined} reports a link that never connects */
    this._stuckTimer = undefined;
    this._armStuckTimer();

    this._wirePeerConnection();
    if (this.passive) {
      this._passiveTimer = setTimeout(() => this._attachLocal(), PASSIVE_WAIT_MS);
    } else {
      this._attachLocal();
    }
  }

  /** The connection state (falls back to the ICE state on browsers without it). */
  get connectionState() {
    return this.pc.connectionState ?? this.pc.iceConnectionState;
  }

  /** @private */
  _wirePeerConnection() {
    const pc = this.pc;
    pc.onnegotiationneeded = async () => {
      if (this.closed || pc !== this.pc) return;
      try {
        this._makingOffer = true;
        await pc.setLocalDescription();
        if (pc === this.pc) this._sendLocalDescription();
      } catch (err) {
        console.warn(`switchboard: offer to ${this.peerId} failed`, err);
        this._descriptionFailed(err, pc);
      } finally {
        if (pc === this.pc) this._makingOffer = false;
      }
    };
    pc.onicecandidate = ({ candidate }) => {
      if (this.closed || pc !== this.pc) return;
      this._opts.signal({
        type: 'candidate',
        to: this.peerId,
        candidate: candidate && candidate.candidate ? candidate.toJSON() : null,
      });
    };
    pc.ontrack = (ev) => {
      if (pc === this.pc) this._onTrack(ev);
    };
    pc.onconnectionstatechange = () => {
      if (pc === this.pc) this._onStateChange();
    };
    pc.oniceconnectionstatechange = () => {
      if (pc === this.pc) this._onStateChange();
    };
  }

  /**
   * This side's DTLS role on the current connection, read from the last answer's
   * `a=setup` (`active` is the client, `passive` the server); `null` before the first
   * offer/answer exchange completed.
   * @returns {'client' | 'server' | null}
   */
  get dtlsRole() {
    const local = this.pc.currentLocalDescription;
    const remote = this.pc.currentRemoteDescription;
    const answer = local?.type === 'answer' ? local : remote?.type === 'answer' ? remote : null;
    const setup = answer ? /^a=setup:(active|passive)\s*$/m.exec(answer.sdp)?.[1] : undefined;
    if (!setup) return null;
    const ours = answer === local;
    return (setup === 'active') === ours ? 'client' : 'server';
  }

  /**
   * Whether ICE restart offers come from this side: the DTLS server's (see the module
   * notes); before the roles are settled, the impolite side's.
   * @private
   */
  _offersRestarts() {
    const role = this.dtlsRole;
    return role ? role === 'server' : !this.polite;
  }

  /**
   * Add local media and the data channel. Done at once by an active link, and by a passive
   * one when the first remote offer arrives (so its tracks reuse the offered transceivers).
   * @private
   */
  _attachLocal() {
    if (this._attached || this.closed) return;
    this._attached = true;
    clearTimeout(this._passiveTimer);
    this._openChannel();
    if (this._opts.sendMedia) {
      const local = this._opts.local();
      if (local.camera) this._addStream(local.camera, 'camera');
      if (local.screen) this._addStream(local.screen, 'screen');
    }
  }

  /** @private */
  _openChannel() {
    this.channel.attach(this.pc.createDataChannel('switchboard', { negotiated: true, id: 0, ordered: true }));
  }

  /**
   * Pass the channel's events on, and handle the ones about this link.
   * @private
   */
  _wireChannel() {
    const ch = this.channel;
    ch.on('open', () => {
      this._sendState();
      this.emit('channel-open', {});
    });
    ch.on('chat', (e) => this.emit('chat', e));
    ch.on('state', (e) => this._onRemoteState(e));
    ch.on('control', (msg) => {
      if (msg.t === 'reconnect' && !this.polite) this._requestRebuild('the peer asked for a new connection');
    });
    ch.on('file-progress', (e) => this.emit('file-progress', e));
    ch.on('file', (e) => this.emit('file', e));
    ch.on('file-sent', (e) => this.emit('file-sent', e));
    ch.on('file-error', (e) => this.emit('file-error', e));
  }

  /**
   * @private
   * @param {MediaStream} stream
   * @param {StreamKind} kind
   */
  _addStream(stream, kind) {
    /** @type {RTCRtpSender[]} */
    const senders = [];
    for (const track of stream.getTracks()) {
      if (this._opts.sendOnly) {
        senders.push(this.pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] }).sender);
      } else {
        senders.push(this.pc.addTrack(track, stream));
      }
    }
    this._sending.set(kind, { stream, senders });
  }

  /**
   * Start sending a local stream (e.g. a screen share) on this link; renegotiates.
   * @param {MediaStream} stream
   * @param {StreamKind} kind
   */
  addStream(stream, kind) {
    if (this.closed || !this._opts.sendMedia) return;
    if (this._attached) {
      this.removeStream(kind);
      this._addStream(stream, kind);
    }
    this._sendState();
  }

  /**
   * Stop sending the local stream of that kind on this link; renegotiates.
   * @param {StreamKind} kind
   */
  removeStream(kind) {
    const entry = this._sending.get(kind);
    this._sending.delete(kind);
    if (entry && !this.closed) {
      for (const sender of entry.senders) {
        try {
          this.pc.removeTrack(sender);
        } catch (err) {
          console.warn('switchboard: removeTrack failed', err);
        }
      }
    }
    this._sendState();
  }

  /** Tell the peer which streams are what and whether mic/camera are on. */
  localStateChanged() {
    this._sendState();
  }

  /** @private */
  _sendState() {
    const local = this._opts.local();
    /** @type {Record<string, StreamKind>} */
    const streams = {};
    for (const [kind, entry] of this._sending) streams[entry.stream.id] = kind;
    this.channel.sendIfOpen({ t: 'state', streams, mic: local.mic, camera: local.cam });
  }

  /** @private */
  _sendLocalDescription() {
    const desc = this.pc.localDescription;
    if (!desc || (desc.type !== 'offer' && desc.type !== 'answer')) return;
    this._opts.signal({ type: desc.type, to: this.peerId, sdp: desc.sdp });
    clearTimeout(this._answerTimer);
    if (desc.type === 'offer') {
      this._answerTimer = setTimeout(() => this._enqueue(() => this._offerUnanswered()), ANSWER_TIMEOUT_MS);
    }
  }

  /**
   * Our offer got no answer (lost while the peer's signaling was down, or ignored in glare
   * by a peer that lost its own offer): roll back and offer again.
   * @private
   */
  async _offerUnanswered() {
    const pc = this.pc;
    if (this.closed || pc.signalingState !== 'have-local-offer') return;
    this._unanswered += 1;
    if (!this.polite && this._unanswered >= 2) {
      this._requestRebuild('offers went unanswered');
      return;
    }
    try {
      await pc.setLocalDescription({ type: 'rollback' });
    } catch (err) {
      console.warn(`switchboard: rollback towards ${this.peerId} failed`, err);
      this._descriptionFailed(err, pc);
      return;
    }
    // Anything still to negotiate raises negotiationneeded again; candidates sent with the
    // lost offer may be lost too, hence a new ICE negotiation.
    this._restart();
  }

  /**
   * Feed a signaling message from this peer. Messages are handled one at a time, in order.
   * @param {PeerSignal} msg
   */
  handleSignal(msg) {
    this._enqueue(() => this._handleSignal(msg));
  }

  /**
   * Run `task` after every signaling step queued before it.
   * @private
   * @param {() => void | Promise<void>} task
   */
  _enqueue(task) {
    this._chain = this._chain
      .then(task)
      .catch((err) => console.warn(`switchboard: signaling with ${this.peerId} failed`, err));
  }

  /**
   * @private
   * @param {PeerSignal} msg
   */
  async _handleSignal(msg) {
    if (this.closed) return;
    switch (msg.type) {
      case 'offer':
      case 'answer': {
        const session = sessionId(msg.sdp);
        // Late messages of a connection that was replaced.
        if (session && this._deadSessions.has(session)) return;
        if (msg.type === 'offer' && this._isNewConnection(session)) {
          this._rebuild('the peer started a new connection', false);
        }
        const pc = this.pc;
        const description = { type: msg.type, sdp: msg.sdp };
        const readyForOffer =
          !this._makingOffer && (pc.signalingState === 'stable' || this._settingRemoteAnswerPending);
        const offerCollision = description.type === 'offer' && !readyForOffer;
        this._ignoreOffer = !this.polite && offerCollision;
        if (this._ignoreOffer) return;
        if (description.type === 'answer' && pc.signalingState !== 'have-local-offer') return;
        this._settingRemoteAnswerPending = description.type === 'answer';
        try {
          await pc.setRemoteDescription(description);
          if (description.type === 'offer') {
            this._attachLocal();
            await pc.setLocalDescription();
            if (pc === this.pc) this._sendLocalDescription();
          } else {
            this._unanswered = 0;
            clearTimeout(this._answerTimer);
          }
          // An exchange went through after all: whatever failed before did no lasting harm.
          if (pc === this.pc) this._broken = false;
        } catch (err) {
          console.warn(`switchboard: ${description.type} from ${this.peerId} could not be applied`, err);
          this._descriptionFailed(err, pc);
        } finally {
          this._settingRemoteAnswerPending = false;
        }
        break;
      }
      case 'candidate': {
        const pc = this.pc;
        try {
          if (msg.candidate) await pc.addIceCandidate(msg.candidate);
          else if (pc.remoteDescription) await pc.addIceCandidate();
        } catch (err) {
          // Also candidates of a replaced connection, or of an ignored offer.
          if (!this._ignoreOffer) console.debug(`switchboard: candidate from ${this.peerId} refused`, err);
        }
        break;
      }
      case 'ice-restart':
        if (!this.polite && this._rebuildDue()) {
          this._requestRebuild('the connection stayed down after an ICE restart');
        } else if (this._offersRestarts()) {
          this._restartHere();
        } else if (performance.now() - this._lastBounce >= RESTART_BOUNCE_MS) {
          // The peer thinks we offer restarts; while the roles settle, ask it back (rarely).
          this._lastBounce = performance.now();
          this._askRestart();
        }
        break;
      default:
        break;
    }
  }

  /**
   * Whether an offer with this SDP session id is for a new connection: the peer replaced
   * its `RTCPeerConnection` (every connection has its own session id in the `o=` line).
   * @private
   * @param {string | null} session
   */
  _isNewConnection(session) {
    const remote = this.pc.currentRemoteDescription ?? this.pc.remoteDescription;
    const current = remote ? sessionId(remote.sdp) : null;
    return Boolean(session && current && session !== current);
  }

  /**
   * Restart ICE with this peer: with a new offer if this side is the DTLS server,
   * otherwise by asking the peer with `ice-restart` (see the module notes). Media keeps
   * flowing on the old candidate pair until the new one is chosen.
   */
  restartIce() {
    if (this.closed) return;
    this._restart();
  }

  /** @private */
  _restart() {
    if (this._offersRestarts()) this._restartHere();
    else this._askRestart();
  }

  /** @private */
  _restartHere() {
    if (this.closed) return;
    this._restartedAt = performance.now();
    this._attachLocal();
    this.pc.restartIce();
  }

  /** @private */
  _askRestart() {
    if (this.closed) return;
    this._restartedAt = performance.now();
    this._opts.signal({ type: 'ice-restart', to: this.peerId });
  }

  /**
   * Replace the peer connection with a new one: the impolite side builds it and offers,
   * the polite side asks the peer to. The last resort when ICE restarts do not help;
   * also a debugging aid (`switchboard.room.links.get(id).reconnect()`).
   */
  reconnect() {
    if (this.closed) return;
    if (!this.polite) this._requestRebuild('asked to reconnect');
    else this._askRebuild();
  }

  /**
   * Restart ICE now unless the connection is up; used after signaling came back, since
   * candidates sent meanwhile were lost.
   */
  recoverIfDown() {
    if (this.closed || this.connectionState === 'connected') return;
    if (this._broken) this.reconnect();
    else this._restart();
  }

  /**
   * Applying a description to `pc` failed. A state race is harmless; anything else leaves
   * the connection unusable (its transport may be half-changed), so it is replaced.
   * @private
   * @param {unknown} err
   * @param {RTCPeerConnection} pc
   */
  _descriptionFailed(err, pc) {
    if (this.closed || pc !== this.pc) return;
    const name = err instanceof Error || err instanceof DOMException ? err.name : '';
    if (name === 'InvalidStateError' && pc.signalingState !== 'closed') return;
    this._broken = true;
    if (!this.polite) {
      this._requestRebuild('a description could not be applied');
    } else {
      this._askRebuild();
      // If nothing comes of it, the recovery rounds keep asking while the connection is down.
      if (!this._recoverTimer) {
        this._recoverTimer = setTimeout(() => {
          this._recoverTimer = undefined;
          this._recover();
        }, DISCONNECTED_GRACE_MS);
      }
    }
  }

  /**
   * Polite side: ask the peer for a new connection, over the data channel while it is
   * open, else with `ice-restart` (the impolite side rebuilds when its connection stays
   * failed after a restart).
   * @private
   */
  _askRebuild() {
    if (!this.channel.sendIfOpen({ t: 'reconnect' })) this._askRestart();
  }

  /**
   * Impolite side: whether the connection needs replacing, being broken or still failed a
   * while after an ICE restart made to recover it.
   * @private
   */
  _rebuildDue() {
    if (this._broken) return true;
    return (
      this.connectionState === 'failed' &&
      this._recoverAttempts > 0 &&
      this._restartedAt > 0 &&
      performance.now() - this._restartedAt >= RESTART_PATIENCE_MS
    );
  }

  /**
   * Impolite side: build a new connection, at once or when the minimum interval since the
   * previous one has passed.
   * @private
   * @param {string} reason
   */
  _requestRebuild(reason) {
    if (this.closed || this.polite || this._rebuildTimer) return;
    const wait = Math.max(0, this._lastRebuild + REBUILD_MIN_INTERVAL_MS - performance.now());
    this._rebuildTimer = setTimeout(() => {
      this._rebuildTimer = undefined;
      this._enqueue(() => this._rebuild(reason, true));
    }, wait);
  }

  /**
   * Close the peer connection and start a new one with the same peer. With `initiate`
   * (impolite side) local media is added at once and the new connection offers; otherwise
   * (the peer's offer for a new connection is about to be applied) it answers. Remote
   * streams stay announced until the new connection brings them back (same stream ids) or
   * the peer's state message says they are gone, so the page keeps its tiles.
   * @private
   * @param {string} reason
   * @param {boolean} initiate
   */
  _rebuild(reason, initiate) {
    if (this.closed) return;
    console.warn(`switchboard: new connection to ${this.peerId}: ${reason}`);
    const old = this.pc;
    const oldRemote = old.currentRemoteDescription ?? old.remoteDescription;
    const oldSession = oldRemote ? sessionId(oldRemote.sdp) : null;
    if (oldSession) this._deadSessions.add(oldSession);
    this.channel.detach();
    old.close();
    clearTimeout(this._passiveTimer);
    clearTimeout(this._kindTimer);
    clearTimeout(this._recoverTimer);
    clearTimeout(this._answerTimer);
    clearTimeout(this._rebuildTimer);
    this._recoverTimer = undefined;
    this._rebuildTimer = undefined;

    this.pc = createPeerConnection(
      this._opts.currentIceServers?.() ?? this._opts.iceServers,
      this._opts.iceTransportPolicy,
    );
    this._makingOffer = false;
    this._ignoreOffer = false;
    this._settingRemoteAnswerPending = false;
    this._attached = false;
    this._sending = new Map();
    this._remoteStreams = new Map();
    this._lastSample = null;
    this._broken = false;
    this._unanswered = 0;
    this._restartedAt = 0;
    this._lastRebuild = performance.now();
    this.rebuilds += 1;
    this._wirePeerConnection();
    if (initiate) this._attachLocal();
    this._onStateChange();
  }

  /** @private */
  _onStateChange() {
    if (this.closed) return;
    const state = this.connectionState;
    const ice = this.pc.iceConnectionState;
    if (state === 'connected' || ice === 'connected' || ice === 'completed') {
      clearTimeout(this._stuckTimer);
      this._stuckTimer = undefined;
      this._recoverAttempts = 0;
      this._restartedAt = 0;
      clearTimeout(this._recoverTimer);
      this._recoverTimer = undefined;
    } else if (state === 'failed' || ice === 'failed') {
      clearTimeout(this._recoverTimer);
      this._recoverTimer = undefined;
      this._recover();
    } else if ((state === 'disconnected' || ice === 'disconnected') && !this._recoverTimer) {
      this._recoverTimer = setTimeout(() => {
        this._recoverTimer = undefined;
        this._recover();
      }, DISCONNECTED_GRACE_MS);
    }
    if (state !== 'connected' && this._lastState === 'connected') this._armStuckTimer();
    if (state !== this._lastState) {
      this._lastState = state;
      this.emit('state', { state });
    }
  }

  /**
   * Reports `failed` if the link is still not connected after {@link STUCK_AFTER_MS}.
   * @private
   */
  _armStuckTimer() {
    clearTimeout(this._stuckTimer);
    this._stuckTimer = setTimeout(() => {
      this._stuckTimer = undefined;
      if (this.closed || this.connectionState === 'connected') return;
      if (this._lastState !== 'failed') {
        this._lastState = 'failed';
        this.emit('state', { state: 'failed' });
      }
    }, STUCK_AFTER_MS);
  }

  /**
   * Restart ICE (or ask the peer to); retries with backoff for as long as the connection
   * stays down. When a restart did not help, the impolite side builds a new connection.
   * @private
   */
  _recover() {
    if (this.closed) return;
    const state = this.connectionState;
    const ice = this.pc.iceConnectionState;
    const down = ['failed', 'disconnected'];
    if (!down.includes(state) && !down.includes(ice) && !this._broken) return;
    if (!this.polite && this._rebuildDue()) this._requestRebuild('the connection stayed down after an ICE restart');
    else if (this._broken) this._askRebuild();
    else this._restart();
    this._recoverAttempts += 1;
    const delay = Math.min(30000, 5000 * 2 ** Math.min(this._recoverAttempts - 1, 3));
    clearTimeout(this._recoverTimer);
    this._recoverTimer = setTimeout(() => {
      this._recoverTimer = undefined;
      this._recover();
    }, delay);
  }

  /**
   * @private
   * @param {RTCTrackEvent} ev
   */
  _onTrack(ev) {
    const stream = ev.streams[0] ?? new MediaStream([ev.track]);
    // Only the current connection's streams may end a tile.
    const current = () => this._remoteStreams.get(stream.id) === stream;
    if (!current()) {
      this._remoteStreams.set(stream.id, stream);
      stream.addEventListener('removetrack', () => {
        if (current() && stream.getTracks().length === 0) this._dropRemote(stream.id);
      });
    }
    ev.track.addEventListener('ended', () => {
      if (current() && stream.getTracks().every((t) => t.readyState === 'ended')) this._dropRemote(stream.id);
    });
    this._reconcileStreams(false);
    if (this._announced.get(stream.id)?.stream !== stream) {
      clearTimeout(this._kindTimer);
      this._kindTimer = setTimeout(() => this._reconcileStreams(true), KIND_FALLBACK_MS);
    }
  }

  /**
   * Report remote streams whose kind is known. With `force`, streams the peer never
   * described count as camera (the first) or screen (any further).
   * @private
   * @param {boolean} force
   */
  _reconcileStreams(force) {
    if (this.closed) return;
    for (const [id, stream] of this._remoteStreams) {
      const known = this._announced.get(id);
      if (known?.stream === stream) continue;
      // A stream that comes back on a new connection keeps its kind.
      let kind = this._remoteKinds.get(id) ?? known?.kind;
      if (!kind && force) kind = [...this._announced.values()].some((e) => e.kind === 'camera') ? 'screen' : 'camera';
      if (!kind) continue;
      this._announced.set(id, { stream, kind });
      this.emit('stream', { stream, kind });
    }
  }

  /**
   * @private
   * @param {string} id
   */
  _dropRemote(id) {
    const known = this._announced.get(id);
    this._remoteStreams.delete(id);
    this._announced.delete(id);
    if (known && !this.closed) this.emit('stream-removed', { stream: known.stream, kind: known.kind });
  }

  /** Remote streams reported so far, with their kinds. */
  get remoteStreams() {
    return [...this._announced.values()].map(({ stream, kind }) => ({ stream, kind }));
  }

  /**
   * @private
   * @param {{ streams: Record<string, StreamKind>, mic: boolean, camera: boolean }} msg
   */
  _onRemoteState(msg) {
    const streams = msg.streams && typeof msg.streams === 'object' ? msg.streams : {};
    this._remoteKinds = new Map();
    for (const [id, kind] of Object.entries(streams)) {
      if (kind === 'camera' || kind === 'screen') this._remoteKinds.set(id, kind);
    }
    for (const id of [...this._announced.keys()]) {
      if (!this._remoteKinds.has(id)) this._dropRemote(id);
    }
    this._reconcileStreams(false);
    const media = { mic: msg.mic !== false, camera: msg.camera !== false };
    if (media.mic !== this.remoteMedia.mic || media.camera !== this.remoteMedia.camera) {
      this.remoteMedia = media;
      this.emit('media', media);
    }
  }

  /** Whether the data channel is open. */
  get channelOpen() {
    return this.channel.open;
  }

  /**
   * Send a chat message (queued until the data channel opens).
   * @param {string} text
   * @param {number} ts Unix milliseconds
   */
  sendChat(text, ts) {
    this.channel.sendChat(text, ts);
  }

  /**
   * Send a file over the data channel. Transfers on one link run one after another.
   * Resolves when the last chunk is handed to the channel.
   * @param {File} file
   * @param {string} transferId
   * @returns {Promise<void>}
   */
  sendFile(file, transferId) {
    return this.channel.sendFile(file, transferId);
  }

  /**
   * Current statistics; rates are measured since the previous call.
   * @returns {Promise<PeerStats>}
   */
  async getStats() {
    const report = await this.pc.getStats();
    const { stats, sample } = summarizeStats(report, this._lastSample, {
      peerId: this.peerId,
      name: this.name,
      connectionState: this.connectionState,
    });
    this._lastSample = sample;
    return stats;
  }

  /** Close the connection for good. Local tracks are not stopped (the owner owns them). */
  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this._passiveTimer);
    clearTimeout(this._kindTimer);
    clearTimeout(this._recoverTimer);
    clearTimeout(this._answerTimer);
    clearTimeout(this._rebuildTimer);
    clearTimeout(this._stuckTimer);
    this.channel.close();
    this.pc.close();
    this.removeAllListeners();
  }
}

/**
 * A peer connection with these ICE servers, or with none if the browser refuses them (a
 * bad configuration must not prevent calls on the local network). The transport policy is
 * kept either way: `relay` must never fall back to direct connections.
 * @param {RTCIceServer[]} iceServers
 * @param {RTCIceTransportPolicy} [iceTransportPolicy] default `all`
 * @param {RTCBundlePolicy} [bundlePolicy] default `max-bundle`
 * @returns {RTCPeerConnection}
 */
export function createPeerConnection(iceServers, iceTransportPolicy = 'all', bundlePolicy = 'max-bundle') {
  try {
    return new RTCPeerConnection({ iceServers, iceTransportPolicy, bundlePolicy });
  } catch (err) {
    console.warn('switchboard: ICE servers refused by the browser, continuing without them', err);
    return new RTCPeerConnection({ iceTransportPolicy, bundlePolicy });
  }
}

/**
 * The session id of an SDP (the second field of its `o=` line), unique per
 * `RTCPeerConnection`, or null.
 * @param {string} sdp
 * @returns {string | null}
 */
function sessionId(sdp) {
  return /^o=\S+ (\S+) /m.exec(sdp)?.[1] ?? null;
}
