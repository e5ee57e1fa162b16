// @ts-check
/**
 * Random 1:1 chat: enter the server's lobby, get paired with a stranger, talk, press Next.
 * Each pair is one {@link PeerLink}; the `matched` message says which side is polite, and
 * the impolite side makes the first offer.
 *
 * The lobby is not resumable: after a lost signaling connection the current pair ends
 * (`unmatched` with reason `disconnected`) and the session queues again by itself.
 * @module
 */

import { Emitter } from './emitter.js';
import { SwitchboardError, describeError } from './errors.js';
import { checkIceTransportPolicy, fetchIceServers, offersRelay } from './ice.js';
import { PeerLink } from './peer.js';
import { Signaling } from './signaling.js';

/** @typedef {import('./types.js').Participant} Participant */
/** @typedef {import('./types.js').ServerMessage} ServerMessage */
/** @typedef {import('./types.js').StreamKind} StreamKind */
/** @typedef {import('./types.js').LeaveReason} LeaveReason */
/** @typedef {import('./stats.js').PeerStats} PeerStats */

/**
 * @typedef {object} JoinRandomOptions
 * @property {string} name display name
 * @property {MediaStream | null} [localStream] camera/microphone to send
 * @property {RTCIceServer[]} [iceServers] defaults to `GET /api/ice-servers`
 * @property {RTCIceTransportPolicy} [iceTransportPolicy] `'all'` (default) or `'relay'`:
 *   connect to partners only through a TURN relay; {@link RandomSession#start} then
 *   rejects with code `no_relay` when the ICE servers include no `turn:`/`turns:` URL
 * @property {string} [signalingUrl] defaults to `ws(s)://<this host>/ws`
 */

/**
 * Events of {@link RandomSession}:
 * - `waiting` — in the lobby, waiting for a partner.
 * - `matched` — paired with `peer`.
 * - `unmatched` — the pair ended (`next` pressed by either side, partner left or
 *   disconnected); `waiting` follows.
 * - `stream`, `stream-removed` — the partner's media (kind `camera`).
 * - `peer-state` — the connection to the partner changed state.
 * - `peer-media` — the partner switched microphone or camera.
 * - `chat` — a text message from the partner (or ours, `self: true`).
 * - `connection` — signaling lost (`reconnecting`) or back (`connected`).
 * - `error` — a server error, with a message for people.
 * - `left` — the session ended.
 * @typedef {object} RandomEvents
 * @property {{}} waiting
 * @property {{ peer: Participant, room: string, polite: boolean }} matched
 * @property {{ peer: Participant | null, reason: LeaveReason }} unmatched
 * @property {{ peerId: string, name: string, stream: MediaStream, kind: StreamKind }} stream
 * @property {{ peerId: string, name: string, stream: MediaStream, kind: StreamKind }} stream-removed
 * @property {{ peerId: string, name: string, state: string }} peer-state
 * @property {{ peerId: string, name: string, mic: boolean, camera: boolean }} peer-media
 * @property {{ from: string, name: string, text: string, ts: number, self: boolean }} chat
 * @property {{ state: 'reconnecting' | 'connected', resumed: boolean }} connection
 * @property {{ code: string, message: string }} error
 * @property {{ reason: 'left' | 'error' }} left
 */

const START_TIMEOUT_MS = 10000;

/** @extends {Emitter<RandomEvents>} */
export class RandomSession extends Emitter {
  /** @param {JoinRandomOptions} options */
  constructor(options) {
    super();
    this.name = options.name;
    /** @type {MediaStream | null} */
    this.localStream = options.localStream ?? null;
    this.micEnabled = Boolean(this.localStream?.getAudioTracks().some((t) => t.enabled));
    this.cameraEnabled = Boolean(this.localStream?.getVideoTracks().some((t) => t.enabled));
    this.signaling = new Signaling({ url: options.signalingUrl });
    /** @type {RTCIceServer[]} */
    this._iceServers = options.iceServers ?? [];
    this._fixedIceServers = Boolean(options.iceServers);
    /** `'relay'`: every peer connection uses TURN-relayed candidates only. */
    this.iceTransportPolicy = checkIceTransportPolicy(options.iceTransportPolicy);
    /** Our id in the current pair's room ('' while waiting). */
    this.id = '';
    /** @type {Participant | null} the current partner */
    this.peer = null;
    /** @type {PeerLink | null} */
    this.link = null;
    this.closed = false;
    this._entering = false;
    /** @type {((msg: ServerMessage) => void) | null} */
    this._startWaiter = null;
  }

  /**
   * Connect and enter the lobby; resolves on the first `waiting` or `matched`. Rejects
   * with `no_relay` when `iceTransportPolicy` is `'relay'` but no TURN server is offered.
   * @returns {Promise<void>}
   */
  async start() {
    if (typeof RTCPeerConnection === 'undefined') throw new SwitchboardError('unsupported_browser');
    if (!this._fixedIceServers) this._iceServers = await fetchIceServers();
    if (this.iceTransportPolicy === 'relay' && !offersRelay(this._iceServers)) {
      this._shutdown();
      throw new SwitchboardError('no_relay');
    }
    this.signaling.on('message', (msg) => this._onMessage(msg));
    this.signaling.on('close', ({ reconnecting }) => {
      if (this.closed) return;
      if (this.link) this._endPair('disconnected');
      if (reconnecting) {
        this.emit('connection', { state: 'reconnecting', resumed: false });
      } else {
        this.emit('error', { code: 'connection_closed', message: describeError('connection_closed') });
        this._shutdown();
        this.emit('left', { reason: 'error' });
      }
    });
    this.signaling.on('open', ({ reconnected }) => {
      if (!reconnected || this.closed) return;
      this._enter();
      this.emit('connection', { state: 'connected', resumed: false });
    });
    try {
      await this.signaling.connect();
      await new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this._startWaiter = null;
          reject(new SwitchboardError('connection_failed', 'The server did not answer.'));
        }, START_TIMEOUT_MS);
        this._startWaiter = (msg) => {
          clearTimeout(timer);
          this._startWaiter = null;
          if (msg.type === 'error') reject(new SwitchboardError(msg.code, describeError(msg.code, msg.message)));
          else resolve(undefined);
        };
        this._enter();
      });
    } catch (err) {
      this._shutdown();
      throw err;
    }
  }

  /** @private */
  _enter() {
    this._entering = true;
    this.signaling.sendNow({ type: 'random', v: 1, name: this.name });
  }

  /**
   * @private
   * @param {ServerMessage} msg
   */
  _onMessage(msg) {
    if (this.closed) return;
    switch (msg.type) {
      case 'waiting':
        this._entering = false;
        this._startWaiter?.(msg);
        this.emit('waiting', {});
        break;
      case 'matched':
        this._entering = false;
        this._startWaiter?.(msg);
        this._onMatched(msg);
        break;
      case 'unmatched':
        this._endPair(msg.reason);
        break;
      case 'participant-left':
        if (this.peer && msg.id === this.peer.id) this._endPair(msg.reason);
        break;
      case 'offer':
      case 'answer':
      case 'candidate':
      case 'ice-restart':
        if (this.link && msg.from === this.link.peerId) this.link.handleSignal(msg);
        break;
      case 'error':
        if (this._startWaiter) this._startWaiter(msg);
        else if (this._entering && msg.code !== 'already_joined') {
          this._entering = false;
          this.emit('error', { code: msg.code, message: describeError(msg.code, msg.message) });
          this._shutdown();
          this.emit('left', { reason: 'error' });
        } else if (msg.code !== 'not_matched' && msg.code !== 'unknown_participant') {
          this.emit('error', { code: msg.code, message: describeError(msg.code, msg.message) });
        }
        break;
      default:
        break;
    }
  }

  /**
   * @private
   * @param {Extract<ServerMessage, { type: 'matched' }>} msg
   */
  _onMatched(msg) {
    if (this.link) this._endPair('next');
    this.id = msg.id;
    this.peer = msg.peer;
    this.signaling.setReady();
    const peer = msg.peer;
    const link = new PeerLink({
      peerId: peer.id,
      name: peer.name,
      polite: msg.polite,
      passive: msg.polite,
      iceServers: this._iceServers,
      currentIceServers: () => this._iceServers,
      iceTransportPolicy: this.iceTransportPolicy,
      sendMedia: true,
      sendOnly: false,
      signal: (m) => this.signaling.send(m),
      local: () => ({ camera: this.localStream, screen: null, mic: this.micEnabled, cam: this.cameraEnabled }),
    });
    this.link = link;
    const ref = { peerId: peer.id, name: peer.name };
    link.on('stream', (e) => this.emit('stream', { ...ref, ...e }));
    link.on('stream-removed', (e) => this.emit('stream-removed', { ...ref, ...e }));
    link.on('state', ({ state }) => this.emit('peer-state', { ...ref, state }));
    link.on('media', (e) => this.emit('peer-media', { ...ref, ...e }));
    link.on('chat', ({ text, ts }) => this.emit('chat', { from: peer.id, name: peer.name, text, ts, self: false }));
    this.emit('matched', { peer, room: msg.room, polite: msg.polite });
    if (!this._fixedIceServers) {
      fetchIceServers().then((s) => {
        // A failed refresh returns []: keep the credentials we have rather than none.
        if (s.length) this._iceServers = s;
      });
    }
  }

  /**
   * @private
   * @param {LeaveReason} reason
   */
  _endPair(reason) {
    const link = this.link;
    const peer = this.peer;
    this.link = null;
    this.peer = null;
    this.id = '';
    this.signaling.clearQueue();
    if (link) {
      for (const { stream, kind } of link.remoteStreams) {
        this.emit('stream-removed', { peerId: link.peerId, name: link.name, stream, kind });
      }
      link.close();
    }
    if (link || peer) this.emit('unmatched', { peer, reason });
  }

  /** End the current pair and wait for the next partner. */
  next() {
    if (this.closed) return;
    if (this.link) {
      this.signaling.sendNow({ type: 'next' });
      this._endPair('next');
    }
  }

  /**
   * Send a text message to the partner.
   * @param {string} text
   */
  sendChat(text) {
    const trimmed = text.trim();
    if (!trimmed || !this.link) return;
    const ts = Date.now();
    this.link.sendChat(trimmed, ts);
    this.emit('chat', { from: this.id, name: this.name, text: trimmed, ts, self: true });
  }

  /** @param {boolean} enabled */
  setMicEnabled(enabled) {
    for (const t of this.localStream?.getAudioTracks() ?? []) t.enabled = enabled;
    this.micEnabled = enabled && Boolean(this.localStream?.getAudioTracks().length);
    this.link?.localStateChanged();
  }

  /** @param {boolean} enabled */
  setCameraEnabled(enabled) {
    for (const t of this.localStream?.getVideoTracks() ?? []) t.enabled = enabled;
    this.cameraEnabled = enabled && Boolean(this.localStream?.getVideoTracks().length);
    this.link?.localStateChanged();
  }

  /**
   * Statistics of the current pair's connection (empty while waiting).
   * @returns {Promise<PeerStats[]>}
   */
  async getPeerStats() {
    if (!this.link) return [];
    try {
      return [await this.link.getStats()];
    } catch {
      return [];
    }
  }

  /** Leave the lobby and close everything. The camera stream is left running. */
  leave() {
    if (this.closed) return;
    this.signaling.sendNow({ type: 'leave' });
    this._endPair('left');
    this._shutdown();
    this.emit('left', { reason: 'left' });
  }

  /** @private */
  _shutdown() {
    this.closed = true;
    this.link?.close();
    this.link = null;
    this.signaling.close();
  }
}

/**
 * Enter the random 1:1 lobby. Resolves with the session once the server put us in the
 * lobby (`waiting`) or paired us (`matched`); use `new RandomSession(options)`,
 * `session.on(…)` and `session.start()` to see the first event too.
 * @param {JoinRandomOptions} options
 * @returns {Promise<RandomSession>}
 */
export async function joinRandom(options) {
  const session = new RandomSession(options);
  await session.start();
  return session;
}
