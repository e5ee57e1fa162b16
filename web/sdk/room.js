// @ts-check
/**
 * A room session: joins over signaling, holds the media connections the room's topology
 * calls for, and exposes media switches, screen sharing, chat, file transfer and stats.
 * Survives signaling outages: after a reconnection it sends `join` with its `resume` token
 * and the media connections carry on.
 *
 * The room's `mode` (from `joined`) decides the topology (docs/protocol.md):
 * - `p2p`: one {@link PeerLink} per remote participant this participant's role connects
 *   to. Peers form a full mesh; a sender connects to every receiver and sends one way;
 *   receivers connect to the sender only. The participant who arrives later makes the
 *   first offer; everyone else waits for it (see peer.js).
 * - `sfu`: one {@link ServerLink} to the server, which forwards everyone's media and data
 *   channel messages (see server-link.js).
 *
 * A `p2p` broadcast (a sender and its receivers) that outgrows peer-to-peer is moved to the
 * SFU by the server (`mode-changed`, or a resumed `joined` with another `mode`): the room
 * closes its peer links, opens the server link as if it had joined in SFU mode, and emits
 * `mode`.
 *
 * Either way the room reports the same events (`stream`, `stream-removed`, `peer-state`,
 * `chat`, files, …), so a page works with both.
 * @module
 */

import { Emitter } from './emitter.js';
import { SwitchboardError, describeError } from './errors.js';
import { checkIceTransportPolicy, fetchIceConfig, offersRelay, refreshDelayMs } from './ice.js';
import { getScreenMedia, stopStream } from './media.js';
import { MAX_FILE_SIZE } from './channel.js';
import { PeerLink } from './peer.js';
import { SERVER_ID, SERVER_NAME, ServerLink } from './server-link.js';
import { Signaling } from './signaling.js';

/** @typedef {import('./types.js').Participant} Participant */
/** @typedef {import('./types.js').Role} Role */
/** @typedef {import('./types.js').Mode} Mode */
/** @typedef {import('./types.js').ServerMessage} ServerMessage */
/** @typedef {import('./types.js').StreamKind} StreamKind */
/** @typedef {import('./types.js').LeaveReason} LeaveReason */
/** @typedef {import('./stats.js').PeerStats} PeerStats */
/** @typedef {import('./peer.js').LocalState} LocalState */

/**
 * @typedef {object} JoinRoomOptions
 * @property {string} room room name (1–64 of `A-Z a-z 0-9 - _ .`)
 * @property {string} name display name
 * @property {Role} [role] `peer` (default), `sender` or `receiver`
 * @property {Mode} [mode] topology if the room is new: `p2p` (direct connections, the
 *   server's default) or `sfu` (media through the server)
 * @property {MediaStream | null} [localStream] camera/microphone to send (none: receive only)
 * @property {RTCIceServer[]} [iceServers] defaults to `GET /api/ice-servers`
 * @property {RTCIceTransportPolicy} [iceTransportPolicy] `'all'` (default): direct and
 *   relayed connections; `'relay'`: only through a TURN relay (hides the participants'
 *   addresses from each other), for every peer connection including rebuilt ones. With
 *   `'relay'`, {@link Room#join} rejects with code `no_relay` when the ICE servers include
 *   no `turn:`/`turns:` URL, since no connection could ever be made.
 * @property {string} [signalingUrl] defaults to `ws(s)://<this host>/ws`
 */

/** @typedef {{ peerId: string, name: string }} PeerRef */

/**
 * Events of {@link Room} (listen with `room.on(name, fn)`):
 * - `participant-joined` — someone entered the room.
 * - `participant-left` — someone left (`reason`: `left`, `disconnected`).
 * - `peer-state` — the connection to a peer changed state (`connecting`, `connected`,
 *   `disconnected`, `failed`, `closed`). In SFU rooms every participant takes the state of
 *   the connection to the server, which is also reported as peer `sfu` named `Server`.
 * - `stream` — a remote stream to show: `kind` is `camera` or `screen`.
 * - `stream-removed` — a remote stream ended (remove its tile).
 * - `peer-media` — a peer switched its microphone or camera on/off.
 * - `chat` — a chat message, ours included (`self: true`).
 * - `file-progress` — bytes done of a transfer in either direction.
 * - `file` — a file arrived completely (`blob` holds it).
 * - `file-sent` — a file was fully handed to a peer's channel.
 * - `file-error` — a transfer failed or was refused, with a message for people.
 * - `screen-share` — our own screen share started or stopped.
 * - `mode` — the room changed topology (a broadcast outgrew peer-to-peer and moved to the
 *   server): peer connections are closed and media now goes through the {@link ServerLink};
 *   streams come again as `stream` events.
 * - `dominant-speaker` — SFU rooms: this participant (possibly us) is now the one speaking.
 * - `connection` — signaling connection: `reconnecting` (lost, retrying), `connected`
 *   (back; `resumed` false means we re-entered as a new participant).
 * - `error` — a server error outside of joining (e.g. `rate_limited`), or a fatal one.
 * - `left` — the session ended (`leave()` or a fatal error).
 * @typedef {object} RoomEvents
 * @property {Participant} participant-joined
 * @property {{ id: string, name: string, reason: LeaveReason }} participant-left
 * @property {PeerRef & { state: string }} peer-state
 * @property {PeerRef & { stream: MediaStream, kind: StreamKind }} stream
 * @property {PeerRef & { stream: MediaStream, kind: StreamKind }} stream-removed
 * @property {PeerRef & { mic: boolean, camera: boolean }} peer-media
 * @property {{ from: string, name: string, text: string, ts: number, self: boolean }} chat
 * @property {PeerRef & import('./peer.js').FileProgress} file-progress
 * @property {PeerRef & import('./peer.js').ReceivedFile} file
 * @property {PeerRef & { transferId: string, fileName: string, size: number }} file-sent
 * @property {PeerRef & { transferId: string, fileName: string, direction: 'send' | 'receive', message: string }} file-error
 * @property {{ active: boolean, stream: MediaStream | null }} screen-share
 * @property {{ mode: Mode }} mode
 * @property {{ id: string, name: string, self: boolean }} dominant-speaker
 * @property {{ state: 'reconnecting' | 'connected', resumed: boolean }} connection
 * @property {{ code: string, message: string }} error
 * @property {{ reason: 'left' | 'error' }} left
 */

const JOIN_TIMEOUT_MS = 10000;

/**
 * Whether a participant with role `mine` opens a connection to one with role `theirs`.
 * @param {Role} mine
 * @param {Role} theirs
 * @returns {boolean}
 */
export function connectsTo(mine, theirs) {
  return (
    (mine === 'peer' && theirs === 'peer') ||
    (mine === 'sender' && theirs === 'receiver') ||
    (mine === 'receiver' && theirs === 'sender')
  );
}

/** @extends {Emitter<RoomEvents>} */
export class Room extends Emitter {
  /**
   * Use {@link joinRoom} to create one.
   * @param {JoinRoomOptions} options
   */
  constructor(options) {
    super();
    this.roomName = options.room;
    this.name = options.name;
    /** @type {Role} */
    this.role = options.role ?? 'peer';
    /** @type {Mode | undefined} */
    this.requestedMode = options.mode;
    /** @type {Mode} */
    this.mode = options.mode ?? 'p2p';
    /** Our participant id (set once joined). */
    this.id = '';
    /** @type {MediaStream | null} */
    this.localStream = options.localStream ?? null;
    /** @type {MediaStream | null} */
    this.screenStream = null;
    this.micEnabled = Boolean(this.localStream?.getAudioTracks().some((t) => t.enabled));
    this.cameraEnabled = Boolean(this.localStream?.getVideoTracks().some((t) => t.enabled));
    /** @type {Map<string, Participant>} everyone else in the room */
    this.participants = new Map();
    /** @type {Map<string, PeerLink>} peer connections (`p2p` rooms) */
    this.links = new Map();
    /** @type {ServerLink | null} the connection to the server (`sfu` rooms) */
    this.server = null;
    this.signaling = new Signaling({ url: options.signalingUrl });
    /** @type {RTCIceServer[]} */
    this._iceServers = options.iceServers ?? [];
    this._fixedIceServers = Boolean(options.iceServers);
    /** `'relay'`: every peer connection uses TURN-relayed candidates only. */
    this.iceTransportPolicy = checkIceTransportPolicy(options.iceTransportPolicy);
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._iceTimer = undefined;
    this._resume = '';
    this._joining = false;
    this.closed = false;
    /** @type {((msg: ServerMessage) => void) | null} */
    this._joinWaiter = null;
    this._transferSeq = 0;
  }

  /**
   * Connect and join; resolves once the server confirmed. Attach listeners before calling
   * it to see the participants already inside as `participant-joined` events (they are
   * also in {@link Room#participants} afterwards). Rejects like {@link joinRoom}, and with
   * `no_relay` when `iceTransportPolicy` is `'relay'` but no TURN server is offered.
   * @returns {Promise<void>}
   */
  async join() {
    if (this.id || this.closed) throw new SwitchboardError('already_joined');
    if (typeof RTCPeerConnection === 'undefined') throw new SwitchboardError('unsupported_browser');
    /** @type {number | undefined} */
    let ttl;
    if (!this._fixedIceServers) ({ iceServers: this._iceServers, ttl } = await fetchIceConfig());
    if (this.iceTransportPolicy === 'relay' && !offersRelay(this._iceServers)) {
      this._shutdown();
      throw new SwitchboardError('no_relay');
    }
    if (!this._fixedIceServers) this._scheduleIceRefresh(ttl);
    this.signaling.on('message', (msg) => this._onMessage(msg));
    this.signaling.on('close', ({ reconnecting }) => {
      if (this.closed) return;
      if (reconnecting) this.emit('connection', { state: 'reconnecting', resumed: false });
      else this._fail('connection_closed', describeError('connection_closed'));
    });
    this.signaling.on('open', ({ reconnected }) => {
      if (reconnected && !this.closed) this._sendJoin(true);
    });
    try {
      await this.signaling.connect();
      const joined = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this._joinWaiter = null;
          reject(new SwitchboardError('connection_failed', 'The server did not answer the join request.'));
        }, JOIN_TIMEOUT_MS);
        this._joinWaiter = (msg) => {
          clearTimeout(timer);
          this._joinWaiter = null;
          if (msg.type === 'joined') resolve(msg);
          else if (msg.type === 'error') reject(new SwitchboardError(msg.code, describeError(msg.code, msg.message)));
        };
        this._sendJoin(false);
      });
      if (joined.mode !== 'p2p' && joined.mode !== 'sfu') {
        throw new SwitchboardError(
          'unsupported_mode',
          `Room "${this.roomName}" uses ${String(joined.mode).toUpperCase()} mode, which this page cannot join.`,
        );
      }
    } catch (err) {
      this._shutdown();
      throw err;
    }
  }

  /**
   * @private
   * @param {boolean} resume
   */
  _sendJoin(resume) {
    this._joining = true;
    /** @type {import('./types.js').ClientMessage} */
    const msg = { type: 'join', v: 1, room: this.roomName, name: this.name, role: this.role };
    if (this.requestedMode) msg.mode = this.requestedMode;
    if (resume && this._resume) msg.resume = this._resume;
    this.signaling.sendNow(msg);
  }

  /**
   * @private
   * @param {ServerMessage} msg
   */
  _onMessage(msg) {
    if (this.closed) return;
    switch (msg.type) {
      case 'joined':
        this._onJoined(msg);
        this._joinWaiter?.(msg);
        break;
      case 'participant-joined': {
        const p = msg.participant;
        this.participants.set(p.id, p);
        this.emit('participant-joined', p);
        if (this.server) this.emit('peer-state', { peerId: p.id, name: p.name, state: this.server.connectionState });
        else if (connectsTo(this.role, p.role)) this._link(p, this.role !== 'sender');
        break;
      }
      case 'participant-left':
        this._removeParticipant(msg.id, msg.reason);
        break;
      case 'offer':
      case 'answer':
      case 'candidate':
      case 'ice-restart': {
        if (this.mode === 'sfu') {
          if (msg.from === SERVER_ID) this.server?.handleSignal(msg);
          break;
        }
        let link = this.links.get(msg.from);
        if (!link && msg.type === 'offer') {
          const p = this.participants.get(msg.from) ?? {
            id: msg.from,
            name: 'Guest',
            role: /** @type {Role} */ (this.role === 'receiver' ? 'sender' : this.role === 'sender' ? 'receiver' : 'peer'),
            since: Date.now(),
          };
          link = this._link(p, true);
        }
        link?.handleSignal(msg);
        break;
      }
      case 'mode-changed':
        if (msg.mode === 'p2p' || msg.mode === 'sfu') this._switchMode(msg.mode, true);
        break;
      case 'dominant-speaker': {
        const self = msg.id === this.id;
        const name = self ? this.name : this.participants.get(msg.id)?.name ?? '';
        this.emit('dominant-speaker', { id: msg.id, name, self });
        break;
      }
      case 'error':
        this._onError(msg.code, msg.message);
        break;
      default:
        break;
    }
  }

  /**
   * @private
   * @param {Extract<ServerMessage, { type: 'joined' }>} msg
   */
  _onJoined(msg) {
    const firstJoin = this.id === '';
    const sameIdentity = msg.resumed && msg.id === this.id;
    this._joining = false;
    this._resume = msg.resume;
    // The room moved (e.g. to the SFU) while our socket was down: drop the old topology's
    // connections first; the new one is set up below.
    const switched = !firstJoin && msg.mode !== this.mode && (msg.mode === 'p2p' || msg.mode === 'sfu');
    if (switched) this._switchMode(msg.mode, false);
    this.mode = msg.mode;
    this.role = msg.role;
    if (!firstJoin && !sameIdentity) {
      // We came back as someone new: every old connection is void.
      this.signaling.clearQueue();
      for (const id of [...this.participants.keys()]) this._removeParticipant(id, 'disconnected');
    }
    this.id = msg.id;
    this.signaling.setReady();
    const current = new Set(msg.participants.map((p) => p.id));
    /** Links that predate this (re)join. */
    const linked = [...this.links.values()];
    for (const id of [...this.participants.keys()]) {
      if (!current.has(id)) this._removeParticipant(id, 'disconnected');
    }
    for (const p of msg.participants) {
      const known = this.participants.has(p.id);
      this.participants.set(p.id, p);
      if (!known) this.emit('participant-joined', p);
      // Normally we are the newcomer and offer first. After resuming, anyone new arrived
      // while we were away and already offers to us.
      const passive = this.role === 'receiver' || sameIdentity;
      if (this.mode === 'p2p' && !this.links.has(p.id) && connectsTo(this.role, p.role)) this._link(p, passive);
    }
    if (sameIdentity) {
      for (const link of linked) link.recoverIfDown();
    }
    if (this.mode === 'sfu') {
      // A resumed session keeps its media; a new identity needs a new session.
      if (!this.server) this.server = this._serverLink();
      else if (sameIdentity) this.server.resync();
      else this.server.restart();
    }
    if (switched) this.emit('mode', { mode: this.mode });
    if (!firstJoin) this.emit('connection', { state: 'connected', resumed: sameIdentity });
  }

  /**
   * The room changed topology: close the connections of the old one and open those of the
   * new one (for `sfu`: one {@link ServerLink}, which publishes our camera, microphone and
   * screen share, and receives everyone else's).
   * @private
   * @param {Mode} mode
   * @param {boolean} connect open the new topology's connections now (otherwise the
   *   caller does, e.g. {@link Room#_onJoined})
   */
  _switchMode(mode, connect) {
    if (mode === this.mode || this.closed) return;
    console.info(`switchboard: room "${this.roomName}" moves from ${this.mode} to ${mode}`);
    this.mode = mode;
    for (const [id, link] of [...this.links]) {
      this.links.delete(id);
      for (const { stream, kind } of link.remoteStreams) {
        this.emit('stream-removed', { peerId: id, name: link.name, stream, kind });
      }
      link.close();
    }
    if (mode === 'p2p' && this.server) {
      const server = this.server;
      this.server = null;
      for (const { peerId, stream, kind } of server.remoteStreams) {
        this.emit('stream-removed', { peerId, name: this.participants.get(peerId)?.name ?? '', stream, kind });
      }
      server.close();
    }
    if (!connect) return;
    if (mode === 'sfu') {
      if (!this.server) this.server = this._serverLink();
    } else {
      for (const p of this.participants.values()) {
        if (connectsTo(this.role, p.role)) this._link(p, this.role === 'receiver');
      }
    }
    this.emit('mode', { mode });
  }

  /**
   * Tell the SDK that `video` shows `stream` (a remote stream from a `stream` event). In
   * SFU rooms the connection to the server then reports the element's size (`view`), so
   * the server sends a video layer no larger than needed, and nothing while the element
   * or the page is hidden. Call it again when the element shows another stream; a no-op in
   * peer-to-peer rooms.
   * @param {MediaStream} stream
   * @param {HTMLVideoElement} video
   */
  observeTile(stream, video) {
    this.server?.observeTile(stream, video);
  }

  /**
   * Stop reporting the size of `video` (its tile was removed).
   * @param {HTMLVideoElement} video
   */
  unobserveTile(video) {
    this.server?.unobserveTile(video);
  }

  /**
   * @private
   * @param {string} code
   * @param {string} message
   */
  _onError(code, message) {
    if ((code === 'media_failed' || code === 'invalid_sdp') && this.server) {
      this.server.handleError(code, message);
      return;
    }
    if (this._joining && this._joinWaiter) {
      this._joining = false;
      this._joinWaiter({ type: 'error', code: /** @type {any} */ (code), message });
      return;
    }
    if (this._joining) {
      this._joining = false;
      if (code === 'resume_failed') {
        this._resume = '';
        this._sendJoin(false);
        return;
      }
      this._fail(code, describeError(code, message));
      return;
    }
    this.emit('error', { code, message: describeError(code, message) });
  }

  /**
   * @private
   * @param {string} code
   * @param {string} message
   */
  _fail(code, message) {
    if (this.closed) return;
    this.emit('error', { code, message });
    this._shutdown();
    this.emit('left', { reason: 'error' });
  }

  /**
   * Create the link to a participant.
   * @private
   * @param {Participant} p
   * @param {boolean} passive
   * @returns {PeerLink}
   */
  _link(p, passive) {
    const link = new PeerLink({
      peerId: p.id,
      name: p.name,
      polite: this.id < p.id,
      passive,
      iceServers: this._iceServers,
      currentIceServers: () => this._iceServers,
      iceTransportPolicy: this.iceTransportPolicy,
      sendMedia: this.role !== 'receiver',
      sendOnly: this.role === 'sender',
      signal: (m) => this.signaling.send(m),
      local: () => this._localState(),
    });
    this.links.set(p.id, link);
    const ref = () => ({ peerId: p.id, name: this.participants.get(p.id)?.name ?? p.name });
    link.on('state', ({ state }) => this.emit('peer-state', { ...ref(), state }));
    link.on('stream', (e) => this.emit('stream', { ...ref(), ...e }));
    link.on('stream-removed', (e) => this.emit('stream-removed', { ...ref(), ...e }));
    link.on('media', (e) => this.emit('peer-media', { ...ref(), ...e }));
    link.on('chat', ({ text, ts }) => {
      const r = ref();
      this.emit('chat', { from: r.peerId, name: r.name, text, ts, self: false });
    });
    link.on('file-progress', (e) => this.emit('file-progress', { ...ref(), ...e }));
    link.on('file', (e) => this.emit('file', { ...ref(), ...e }));
    link.on('file-sent', (e) => this.emit('file-sent', { ...ref(), ...e }));
    link.on('file-error', (e) => this.emit('file-error', { ...ref(), ...e }));
    return link;
  }

  /**
   * Create the connection to the server (SFU rooms).
   * @private
   * @returns {ServerLink}
   */
  _serverLink() {
    const server = new ServerLink({
      iceServers: () => this._iceServers,
      iceTransportPolicy: this.iceTransportPolicy,
      sendMedia: this.role !== 'receiver',
      selfId: () => this.id,
      nameOf: (id) => this.participants.get(id)?.name ?? 'Guest',
      signal: (m) => this.signaling.send(m),
      local: () => this._localState(),
    });
    /** @param {string} peerId */
    const ref = (peerId) =>
      peerId === SERVER_ID
        ? { peerId, name: 'everyone' }
        : { peerId, name: this.participants.get(peerId)?.name ?? 'Guest' };
    server.on('state', ({ state }) => {
      for (const p of this.participants.values()) this.emit('peer-state', { peerId: p.id, name: p.name, state });
      this.emit('peer-state', { peerId: SERVER_ID, name: SERVER_NAME, state });
    });
    // A track may still arrive from someone who just left, until the server stops it.
    server.on('stream', (e) => {
      if (this.participants.has(e.peerId)) this.emit('stream', { ...e, ...ref(e.peerId) });
    });
    server.on('stream-removed', (e) => this.emit('stream-removed', { ...e, ...ref(e.peerId) }));
    server.on('media', (e) => this.emit('peer-media', { ...e, ...ref(e.peerId) }));
    server.on('chat', ({ peerId, text, ts }) => {
      this.emit('chat', { from: peerId, name: ref(peerId).name, text, ts, self: false });
    });
    server.on('file-progress', (e) => this.emit('file-progress', { ...e, ...ref(e.peerId) }));
    server.on('file', (e) => this.emit('file', { ...e, ...ref(e.peerId) }));
    server.on('file-sent', (e) => this.emit('file-sent', { ...e, ...ref(e.peerId) }));
    server.on('file-error', (e) => this.emit('file-error', { ...e, ...ref(e.peerId) }));
    server.on('error', (e) => this.emit('error', e));
    return server;
  }

  /**
   * @private
   * @param {string} id
   * @param {LeaveReason} reason
   */
  _removeParticipant(id, reason) {
    this.server?.dropParticipant(id);
    const p = this.participants.get(id);
    this.participants.delete(id);
    const link = this.links.get(id);
    this.links.delete(id);
    if (link) {
      for (const { stream, kind } of link.remoteStreams) {
        this.emit('stream-removed', { peerId: id, name: link.name, stream, kind });
      }
      link.close();
    }
    if (p || link) this.emit('participant-left', { id, name: p?.name ?? link?.name ?? '', reason });
  }

  /**
   * @private
   * @returns {LocalState}
   */
  _localState() {
    return { camera: this.localStream, screen: this.screenStream, mic: this.micEnabled, cam: this.cameraEnabled };
  }

  /** Connected remote participants with their link state. */
  peers() {
    const server = this.server;
    return [...this.participants.values()].map((p) => ({
      ...p,
      connectionState: server ? server.connectionState : this.links.get(p.id)?.connectionState ?? null,
      media: server ? server.remoteMedia.get(p.id) ?? null : this.links.get(p.id)?.remoteMedia ?? null,
    }));
  }

  /**
   * Switch the microphone on or off (the track keeps running; peers are told).
   * @param {boolean} enabled
   */
  setMicEnabled(enabled) {
    for (const t of this.localStream?.getAudioTracks() ?? []) t.enabled = enabled;
    this.micEnabled = enabled && Boolean(this.localStream?.getAudioTracks().length);
    for (const link of this.links.values()) link.localStateChanged();
    this.server?.localStateChanged();
  }

  /**
   * Switch the camera on or off (peers see black frames and a "camera off" state).
   * @param {boolean} enabled
   */
  setCameraEnabled(enabled) {
    for (const t of this.localStream?.getVideoTracks() ?? []) t.enabled = enabled;
    this.cameraEnabled = enabled && Boolean(this.localStream?.getVideoTracks().length);
    for (const link of this.links.values()) link.localStateChanged();
    this.server?.localStateChanged();
  }

  /**
   * Share the screen with everyone this participant sends to, as an extra stream of kind
   * `screen`. Call from a click handler. Stopping the share from the browser's own UI
   * stops it everywhere.
   * @returns {Promise<MediaStream>}
   */
  async startScreenShare() {
    if (this.screenStream) return this.screenStream;
    if (this.role === 'receiver') throw new SwitchboardError('invalid_message', 'Receivers cannot share a screen.');
    const stream = await getScreenMedia();
    if (this.closed) {
      stopStream(stream);
      throw new SwitchboardError('connection_closed', 'The room was left.');
    }
    this.screenStream = stream;
    for (const track of stream.getTracks()) {
      track.addEventListener('ended', () => {
        if (this.screenStream === stream) this.stopScreenShare();
      });
    }
    for (const link of this.links.values()) link.addStream(stream, 'screen');
    this.server?.addStream(stream, 'screen');
    this.emit('screen-share', { active: true, stream });
    return stream;
  }

  /** Stop sharing the screen. */
  stopScreenShare() {
    const stream = this.screenStream;
    if (!stream) return;
    this.screenStream = null;
    for (const link of this.links.values()) link.removeStream('screen');
    this.server?.removeStream('screen');
    stopStream(stream);
    this.emit('screen-share', { active: false, stream: null });
  }

  /**
   * Send a chat message to everyone connected to us. Emits `chat` with `self: true`.
   * @param {string} text
   */
  sendChat(text) {
    const trimmed = text.trim();
    if (!trimmed) return;
    const ts = Date.now();
    for (const link of this.links.values()) link.sendChat(trimmed, ts);
    this.server?.sendChat(trimmed, ts);
    this.emit('chat', { from: this.id, name: this.name, text: trimmed, ts, self: true });
  }

  /**
   * Send a file to every connected peer (or to one). Files over 100 MB are refused.
   * Progress comes as `file-progress` events with `direction: 'send'`; in SFU rooms a file
   * for everyone goes once, through the server, and its events name peer `sfu`
   * ("everyone").
   * @param {File} file
   * @param {string} [peerId] only this peer
   * @returns {Promise<void>} resolves when every peer got the whole file
   */
  async sendFile(file, peerId) {
    if (file.size > MAX_FILE_SIZE) {
      throw new SwitchboardError(
        'file_too_large',
        `"${file.name}" is ${(file.size / 1048576).toFixed(1)} MB; files larger than 100 MB cannot be sent.`,
      );
    }
    const transferId = `${this.id}-${++this._transferSeq}`;
    if (this.server) {
      if (this.participants.size === 0 || (peerId && !this.participants.has(peerId))) {
        throw new SwitchboardError('no_peers', 'Nobody is connected to receive the file.');
      }
      return this.server.sendFile(file, transferId, peerId);
    }
    const links = [...this.links.values()].filter((l) => !peerId || l.peerId === peerId);
    if (links.length === 0) throw new SwitchboardError('no_peers', 'Nobody is connected to receive the file.');
    const results = await Promise.allSettled(links.map((l) => l.sendFile(file, transferId)));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed && failed.status === 'rejected') throw failed.reason;
  }

  /**
   * Statistics for every peer connection (in SFU rooms: the one to the server, named
   * `Server`, with frames decoded per remote stream in `streams`); bit rates are measured
   * since the previous call.
   * @returns {Promise<PeerStats[]>}
   */
  async getPeerStats() {
    if (this.server) {
      const stats = await this.server.getStats().catch(() => null);
      return stats ? [stats] : [];
    }
    const links = [...this.links.values()];
    const all = await Promise.all(links.map((l) => l.getStats().catch(() => null)));
    return all.filter((s) => s !== null);
  }

  /** Leave the room, close every connection and stop the screen share. The camera stream
   * passed in is left running (it belongs to the caller). */
  leave() {
    if (this.closed) return;
    this.signaling.sendNow({ type: 'leave' });
    this._shutdown();
    this.emit('left', { reason: 'left' });
  }

  /**
   * Fetches fresh TURN credentials before these expire, for connections made or restarted
   * later in the call (a running relay allocation outlives its credential).
   * @private
   * @param {number} [ttl] the current credentials' lifetime in seconds
   */
  _scheduleIceRefresh(ttl) {
    clearTimeout(this._iceTimer);
    if (this.closed) return;
    this._iceTimer = setTimeout(async () => {
      const fresh = await fetchIceConfig();
      // A failed refresh returns []: keep the credentials we have rather than none, and
      // try again sooner.
      if (fresh.iceServers.length) this._iceServers = fresh.iceServers;
      this._scheduleIceRefresh(fresh.iceServers.length ? fresh.ttl : Math.min(ttl ?? 60, 60));
    }, refreshDelayMs(ttl));
  }

  /** @private */
  _shutdown() {
    this.closed = true;
    clearTimeout(this._iceTimer);
    if (this.screenStream) {
      stopStream(this.screenStream);
      this.screenStream = null;
    }
    for (const link of this.links.values()) link.close();
    this.links.clear();
    this.server?.close();
    this.signaling.close();
  }
}

/**
 * Join a room. Resolves with the {@link Room} once the server accepted us (participants
 * already inside are in `room.participants`; use `new Room(options)`, `room.on(…)` and
 * `room.join()` to get them as events too). Rejects with a
 * {@link SwitchboardError} whose `code` is a protocol error code (`room_full`,
 * `invalid_room`, `invalid_name`, `role_taken`, `server_busy`, …) or `connection_failed`.
 * @param {JoinRoomOptions} options
 * @returns {Promise<Room>}
 */
export async function joinRoom(options) {
  const room = new Room(options);
  await room.join();
  return room;
}
