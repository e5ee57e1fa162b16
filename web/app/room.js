// @ts-check
/**
 * Room page (`/r/{room}`): camera preview and name, then the call — a grid of video
 * tiles, mic/camera/screen controls, chat, file transfer and live connection stats.
 * All WebRTC work is in the SDK; this file only draws.
 * @module
 */

import {
  Room,
  SERVER_ID,
  getLocalMedia,
  isValidDisplayName,
  isValidRoomName,
  stopStream,
} from '../sdk/switchboard.js';
import {
  attachStream,
  autojoin,
  byId,
  clearStatus,
  errorText,
  formatBytes,
  guestName,
  h,
  iceTransportPolicy,
  initialName,
  params,
  rememberName,
  renderStatsPanel,
  setDebugHook,
  showStatus,
} from './common.js';

/** @typedef {import('../sdk/types.js').StreamKind} StreamKind */
/** @typedef {import('../sdk/types.js').Mode} Mode */

const roomName = decodeURIComponent(location.pathname.replace(/^\/r\//, '').replace(/\/.*$/, ''));

const ui = {
  roomName: byId('room-name', HTMLElement),
  peopleCount: byId('people-count', HTMLElement),
  roomMode: byId('room-mode', HTMLElement),
  copyLink: byId('copy-link', HTMLButtonElement),
  prejoin: byId('prejoin', HTMLElement),
  preview: byId('preview', HTMLVideoElement),
  previewNote: byId('preview-note', HTMLElement),
  roomInfo: byId('room-info', HTMLElement),
  joinForm: byId('join-form', HTMLFormElement),
  name: byId('name', HTMLInputElement),
  nameError: byId('name-error', HTMLElement),
  join: byId('join', HTMLButtonElement),
  call: byId('call', HTMLElement),
  grid: byId('grid', HTMLElement),
  muteMic: byId('mute-mic', HTMLButtonElement),
  cameraOff: byId('camera-off', HTMLButtonElement),
  shareScreen: byId('share-screen', HTMLButtonElement),
  leave: byId('leave', HTMLButtonElement),
  chatLog: byId('chat-log', HTMLElement),
  chatForm: byId('chat-form', HTMLFormElement),
  chatInput: byId('chat-input', HTMLInputElement),
  fileInput: byId('file-input', HTMLInputElement),
  transfers: byId('transfers', HTMLElement),
  files: byId('files', HTMLElement),
  filesNote: byId('files-note', HTMLElement),
  stats: byId('stats', HTMLElement),
};

/** @type {MediaStream | null} */
let localStream = null;
/** Resolves when the camera attempt finished (successfully or not). */
let mediaReady = Promise.resolve();
/** @type {Room | null} */
let room = null;
/** @type {ReturnType<typeof setInterval> | undefined} */
let statsTimer;
/** @type {Map<string, HTMLElement>} tile key → tile */
const tiles = new Map();
/** Peers whose connection failed, to announce recovery. */
const failedPeers = new Set();

// ---------------------------------------------------------------- pre-join

ui.roomName.textContent = roomName;
document.title = `${roomName} · Switchboard`;
ui.name.value = initialName();

ui.copyLink.addEventListener('click', async () => {
  const link = `${location.origin}/r/${encodeURIComponent(roomName)}`;
  try {
    await navigator.clipboard.writeText(link);
    showStatus('Room link copied.', 'ok', { hideAfterMs: 2500 });
  } catch {
    showStatus(`Share this link: ${link}`, 'info');
  }
});

if (!isValidRoomName(roomName)) {
  ui.join.disabled = true;
  ui.previewNote.textContent = '';
  showStatus('This room code is not valid: use 1–64 letters, digits, "-", "_" or ".".', 'error', {
    action: { label: 'Back to start', run: () => location.assign('/') },
  });
} else {
  mediaReady = startPreview();
  describeRoom();
  if (autojoin) mediaReady.then(() => ui.joinForm.requestSubmit());
}

/** Why the camera and microphone could not be used, if they could not. */
let mediaProblem = '';

async function startPreview() {
  try {
    const media = await getLocalMedia({ audio: true, video: true });
    localStream = media.stream;
    attachStream(ui.preview, localStream, { muted: true });
    ui.previewNote.textContent = media.video ? '' : 'Microphone only';
    if (media.warning) showStatus(media.warning, 'warn');
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    ui.previewNote.textContent = 'No camera';
    mediaProblem = message;
    showStatus(`${message} You can still join to watch and listen.`, 'error');
  }
}

/** Show who is inside, if the server tells. */
async function describeRoom() {
  try {
    const res = await fetch(`/api/rooms/${encodeURIComponent(roomName)}`, { cache: 'no-store' });
    if (res.status === 404) {
      ui.roomInfo.textContent = 'Nobody is here yet — you will be the first.';
      return;
    }
    if (!res.ok) return;
    const body = await res.json();
    const via = body?.mode === 'sfu' ? ' Media goes through the server (SFU).' : '';
    /** @type {string[]} */
    const names = Array.isArray(body?.participants)
      ? body.participants.map((/** @type {any} */ p) => String(p?.name ?? '')).filter(Boolean)
      : [];
    if (names.length === 0) ui.roomInfo.textContent = 'Nobody is here yet — you will be the first.';
    else if (names.length <= 3) ui.roomInfo.textContent = `${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} here.${via}`;
    else ui.roomInfo.textContent = `${names.slice(0, 2).join(', ')} and ${names.length - 2} others are here.${via}`;
  } catch {
    // The room summary is a nicety; joining works without it.
  }
}

ui.name.addEventListener('input', () => {
  ui.nameError.hidden = true;
});

ui.joinForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  if (room || ui.join.disabled) return;
  let name = ui.name.value.trim();
  if (!name) {
    name = guestName();
    ui.name.value = name;
  }
  if (!isValidDisplayName(name)) {
    ui.nameError.textContent = 'Names are 1–64 characters without control characters.';
    ui.nameError.hidden = false;
    return;
  }
  ui.join.disabled = true;
  ui.join.textContent = 'Joining…';
  await mediaReady;
  try {
    await joinCall(name);
    rememberName(name);
  } catch (err) {
    showStatus(errorText(err), 'error');
  } finally {
    ui.join.disabled = false;
    ui.join.textContent = 'Join';
  }
});

// ---------------------------------------------------------------- the call

/** @param {string} name */
async function joinCall(name) {
  const mode = params.get('mode');
  const r = new Room({
    room: roomName,
    name,
    role: 'peer',
    mode: mode === 'p2p' || mode === 'sfu' ? /** @type {Mode} */ (mode) : undefined,
    localStream,
    iceTransportPolicy,
  });
  wireRoom(r);
  await r.join();
  room = r;
  clearStatus();
  // Whoever joined without camera and microphone keeps seeing why.
  if (mediaProblem) showStatus(`${mediaProblem} You are watching and listening only.`, 'warn');
  enterCall(r);
}

/** @param {Room} r */
function wireRoom(r) {
  r.on('participant-joined', (p) => {
    if (p.role === 'peer') cameraTile(p.id, p.name);
    updateCount(r);
  });
  r.on('participant-left', ({ id }) => {
    removeTiles(id);
    failedPeers.delete(id);
    ui.stats.querySelector(`[data-peer-id="${CSS.escape(id)}"]`)?.remove();
    updateCount(r);
  });
  r.on('stream', ({ peerId, name, stream, kind }) => {
    if (kind === 'camera') {
      const tile = cameraTile(peerId, name);
      const video = tileVideo(tile);
      attachStream(video, stream);
      r.observeTile(stream, video);
      tile.classList.toggle('no-video', stream.getVideoTracks().length === 0);
    } else {
      const tile = screenTile(peerId, name, stream.id);
      attachStream(tileVideo(tile), stream);
      r.observeTile(stream, tileVideo(tile));
    }
  });
  r.on('mode', ({ mode }) => showMode(mode));
  r.on('dominant-speaker', ({ id, self }) => {
    for (const tile of ui.grid.querySelectorAll('.tile.speaking')) tile.classList.remove('speaking');
    tiles.get(self ? 'self:camera' : `${id}:camera`)?.classList.add('speaking');
  });
  r.on('stream-removed', ({ peerId, stream, kind }) => {
    if (kind === 'screen') {
      const tile = tiles.get(`${peerId}:screen:${stream.id}`);
      if (tile) r.unobserveTile(tileVideo(tile));
      removeTile(`${peerId}:screen:${stream.id}`);
    } else {
      const tile = tiles.get(`${peerId}:camera`);
      if (tile) {
        r.unobserveTile(tileVideo(tile));
        tileVideo(tile).srcObject = null;
        tile.classList.add('no-video');
      }
    }
  });
  r.on('peer-media', ({ peerId, mic, camera }) => {
    const tile = tiles.get(`${peerId}:camera`);
    if (!tile) return;
    tile.classList.toggle('mic-off', !mic);
    tile.classList.toggle('cam-off', !camera);
  });
  r.on('peer-state', ({ peerId, name, state }) => {
    const tile = tiles.get(`${peerId}:camera`);
    if (tile) tile.dataset.state = state;
    // In SFU rooms everyone shares the server's state; the server's own report comes last.
    const who = peerId === SERVER_ID ? 'the server' : name;
    if (state === 'failed') {
      failedPeers.add(peerId);
      showStatus(`The connection to ${who} failed — trying again…`, 'error');
    } else if (state === 'connected' && failedPeers.delete(peerId)) {
      showStatus(`Connected to ${who} again.`, 'ok', { hideAfterMs: 3000 });
    }
  });
  r.on('chat', ({ name, text, ts, self }) => addChat(name, text, ts, self));
  r.on('file-progress', (e) => {
    const verb = e.direction === 'send' ? `Sending "${e.fileName}" to ${e.name}` : `Receiving "${e.fileName}" from ${e.name}`;
    const item = transferItem(`${e.direction}:${e.peerId}:${e.transferId}`);
    const pct = e.size ? Math.floor((e.bytes * 100) / e.size) : 100;
    item.querySelector('.transfer-text')?.replaceChildren(`${verb} — ${pct}% of ${formatBytes(e.size)}`);
    const bar = item.querySelector('progress');
    if (bar) {
      bar.max = e.size || 1;
      bar.value = e.size ? e.bytes : 1;
    }
  });
  r.on('file-sent', (e) => {
    const key = `send:${e.peerId}:${e.transferId}`;
    const item = transferItem(key);
    item.classList.add('done');
    item.querySelector('.transfer-text')?.replaceChildren(`Sent "${e.fileName}" to ${e.name}`);
    item.querySelector('progress')?.remove();
    setTimeout(() => item.remove(), 5000);
  });
  r.on('file', (e) => {
    document.getElementById(transferDomId(`receive:${e.peerId}:${e.transferId}`))?.remove();
    addReceivedFile(e.fileName, e.size, e.blob, e.name);
  });
  r.on('file-error', (e) => {
    const key = `${e.direction}:${e.peerId}:${e.transferId}`;
    const item = transferItem(key);
    item.classList.add('failed');
    item.querySelector('.transfer-text')?.replaceChildren(e.message);
    item.querySelector('progress')?.remove();
  });
  r.on('screen-share', ({ active, stream }) => {
    ui.shareScreen.textContent = active ? 'Stop sharing' : 'Share screen';
    ui.shareScreen.setAttribute('aria-pressed', String(active));
    removeTile('self:screen');
    if (active && stream) {
      const tile = makeTile('self:screen', 'Your screen', null, 'screen');
      tile.classList.add('self');
      attachStream(tileVideo(tile), stream, { muted: true });
    }
  });
  r.on('connection', ({ state }) => {
    if (state === 'reconnecting') {
      showStatus('Connection lost — reconnecting…', 'warn');
    } else {
      showStatus('Reconnected', 'ok', { hideAfterMs: 3000 });
      updateCount(r);
    }
  });
  r.on('error', ({ code, message }) => {
    showStatus(message, code === 'rate_limited' ? 'warn' : 'error', code === 'rate_limited' ? { hideAfterMs: 4000 } : {});
  });
  r.on('left', ({ reason }) => {
    exitCall();
    if (reason === 'left') showStatus('You left the room.', 'info', { hideAfterMs: 5000 });
  });
}

/** @param {Room} r */
function enterCall(r) {
  ui.prejoin.hidden = true;
  ui.call.hidden = false;
  const self = makeTile('self:camera', `${r.name} (you)`, null, 'camera');
  self.classList.add('self');
  const video = tileVideo(self);
  if (localStream && localStream.getVideoTracks().length) attachStream(video, localStream, { muted: true });
  else self.classList.add('no-video');
  ui.grid.prepend(self);
  syncControls(r);
  showMode(r.mode);
  ui.shareScreen.disabled = !navigator.mediaDevices?.getDisplayMedia;
  updateCount(r);
  setDebugHook(r, () => r.getPeerStats());
  statsTimer = setInterval(() => renderStats(r), 1000);
  ui.chatInput.focus();
}

function exitCall() {
  clearInterval(statsTimer);
  room = null;
  setDebugHook(null);
  for (const key of [...tiles.keys()]) removeTile(key);
  failedPeers.clear();
  renderStatsPanel(ui.stats, [], 'Nobody else is here yet.');
  ui.transfers.replaceChildren();
  ui.call.hidden = true;
  ui.prejoin.hidden = false;
  ui.peopleCount.textContent = '';
  showMode(null);
  if (localStream) {
    for (const t of localStream.getTracks()) t.enabled = true;
  }
}

/**
 * Say how media travels in this room (`#room-mode`, `data-mode`), or hide it.
 * @param {Mode | null} mode
 */
function showMode(mode) {
  ui.roomMode.hidden = mode === null;
  if (mode) ui.roomMode.dataset.mode = mode;
  else delete ui.roomMode.dataset.mode;
  const sfu = mode === 'sfu';
  ui.roomMode.textContent = sfu ? 'via server' : 'peer-to-peer';
  ui.roomMode.title = sfu
    ? 'SFU room: everyone sends media once to the server, which forwards it.'
    : 'Peer-to-peer room: media goes directly between the browsers.';
  ui.filesNote.textContent = sfu
    ? 'Up to 100 MB, sent through the server to everyone in the room.'
    : 'Up to 100 MB, sent directly to everyone in the room.';
}

/** @param {Room} r */
function updateCount(r) {
  const n = [...r.participants.values()].filter((p) => p.role === 'peer').length + 1;
  ui.peopleCount.textContent = n === 1 ? 'Just you' : `${n} people`;
  ui.grid.dataset.count = String(tiles.size);
}

/** @param {Room} r */
function syncControls(r) {
  const hasMic = Boolean(localStream?.getAudioTracks().length);
  const hasCam = Boolean(localStream?.getVideoTracks().length);
  ui.muteMic.disabled = !hasMic;
  ui.cameraOff.disabled = !hasCam;
  ui.muteMic.textContent = !hasMic ? 'No mic' : r.micEnabled ? 'Mute' : 'Unmute';
  ui.muteMic.setAttribute('aria-pressed', String(hasMic && !r.micEnabled));
  ui.cameraOff.textContent = !hasCam ? 'No camera' : r.cameraEnabled ? 'Stop video' : 'Start video';
  ui.cameraOff.setAttribute('aria-pressed', String(hasCam && !r.cameraEnabled));
  const self = tiles.get('self:camera');
  if (self) {
    self.classList.toggle('mic-off', !r.micEnabled);
    self.classList.toggle('cam-off', !r.cameraEnabled);
  }
}

ui.muteMic.addEventListener('click', () => {
  if (!room) return;
  room.setMicEnabled(!room.micEnabled);
  syncControls(room);
});

ui.cameraOff.addEventListener('click', () => {
  if (!room) return;
  room.setCameraEnabled(!room.cameraEnabled);
  syncControls(room);
});

ui.shareScreen.addEventListener('click', async () => {
  if (!room) return;
  if (room.screenStream) {
    room.stopScreenShare();
    return;
  }
  ui.shareScreen.disabled = true;
  try {
    await room.startScreenShare();
  } catch (err) {
    showStatus(err instanceof Error ? err.message : String(err), 'warn', { hideAfterMs: 5000 });
  } finally {
    ui.shareScreen.disabled = false;
  }
});

ui.leave.addEventListener('click', () => room?.leave());

window.addEventListener('pagehide', () => {
  room?.leave();
  stopStream(localStream);
});

// ---------------------------------------------------------------- tiles

/**
 * @param {string} key
 * @param {string} label
 * @param {string | null} peerId null for our own tiles
 * @param {StreamKind} kind
 * @returns {HTMLElement}
 */
function makeTile(key, label, peerId, kind) {
  const tile = h('div', `tile tile-${kind}`);
  tile.dataset.tile = key;
  const video = h('video');
  video.autoplay = true;
  video.playsInline = true;
  if (peerId) {
    video.dataset.peerId = peerId;
    video.dataset.name = label;
    video.dataset.kind = kind;
  } else {
    video.muted = true;
    video.dataset.local = kind;
  }
  const avatar = h('div', 'avatar', (label.trim()[0] ?? '?').toUpperCase());
  avatar.setAttribute('aria-hidden', 'true');
  const caption = h('div', 'caption');
  caption.append(
    h('span', 'tile-name', kind === 'screen' && peerId ? `${label}’s screen` : label),
    h('span', 'badge badge-mic', 'muted'),
    h('span', 'badge badge-cam', 'camera off'),
    h('span', 'badge badge-conn', ''),
  );
  tile.append(video, avatar, caption);
  tiles.set(key, tile);
  if (kind === 'screen') ui.grid.prepend(tile);
  else ui.grid.append(tile);
  ui.grid.dataset.count = String(tiles.size);
  return tile;
}

/**
 * The camera tile of a peer, created on first use.
 * @param {string} peerId
 * @param {string} name
 * @returns {HTMLElement}
 */
function cameraTile(peerId, name) {
  const existing = tiles.get(`${peerId}:camera`);
  if (existing) return existing;
  const tile = makeTile(`${peerId}:camera`, name, peerId, 'camera');
  tile.classList.add('no-video');
  tile.dataset.state = 'connecting';
  return tile;
}

/**
 * @param {string} peerId
 * @param {string} name
 * @param {string} streamId
 * @returns {HTMLElement}
 */
function screenTile(peerId, name, streamId) {
  return tiles.get(`${peerId}:screen:${streamId}`) ?? makeTile(`${peerId}:screen:${streamId}`, name, peerId, 'screen');
}

/**
 * @param {HTMLElement} tile
 * @returns {HTMLVideoElement}
 */
function tileVideo(tile) {
  const video = tile.querySelector('video');
  if (!video) throw new Error('tile without video');
  return video;
}

/** @param {string} key */
function removeTile(key) {
  const tile = tiles.get(key);
  if (!tile) return;
  tiles.delete(key);
  const video = tile.querySelector('video');
  if (video) video.srcObject = null;
  tile.remove();
  ui.grid.dataset.count = String(tiles.size);
}

/** @param {string} peerId */
function removeTiles(peerId) {
  for (const key of [...tiles.keys()]) {
    if (key.startsWith(`${peerId}:`)) removeTile(key);
  }
}

// Show the camera tile again when a remote video track starts producing frames.
ui.grid.addEventListener(
  'loadeddata',
  (ev) => {
    const video = ev.target;
    if (video instanceof HTMLVideoElement && video.videoWidth > 0) {
      video.closest('.tile')?.classList.remove('no-video');
    }
  },
  true,
);

// ---------------------------------------------------------------- chat

/**
 * @param {string} name
 * @param {string} text
 * @param {number} ts
 * @param {boolean} self
 */
function addChat(name, text, ts, self) {
  const li = h('li', self ? 'chat-msg self' : 'chat-msg');
  li.dataset.from = name;
  const time = h('time', 'chat-time', new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }));
  time.dateTime = new Date(ts).toISOString();
  li.append(h('span', 'chat-from', name), ' ', h('span', 'chat-text', text), ' ', time);
  const atBottom = ui.chatLog.scrollHeight - ui.chatLog.scrollTop - ui.chatLog.clientHeight < 40;
  ui.chatLog.append(li);
  if (atBottom || self) ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
}

ui.chatForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = ui.chatInput.value;
  if (!room || !text.trim()) return;
  room.sendChat(text);
  ui.chatInput.value = '';
});

// ---------------------------------------------------------------- files

/** @param {string} key */
function transferDomId(key) {
  return `transfer-${key.replace(/[^A-Za-z0-9_-]/g, '_')}`;
}

/**
 * The list item of a transfer, created on first use.
 * @param {string} key
 * @returns {HTMLElement}
 */
function transferItem(key) {
  const id = transferDomId(key);
  const existing = document.getElementById(id);
  if (existing) return existing;
  const li = h('li', 'transfer');
  li.id = id;
  li.append(h('span', 'transfer-text', ''), h('progress'));
  ui.transfers.append(li);
  return li;
}

/**
 * @param {string} fileName
 * @param {number} size
 * @param {Blob} blob
 * @param {string} from
 */
function addReceivedFile(fileName, size, blob, from) {
  const li = h('li', 'file');
  const a = h('a', '', fileName);
  a.href = URL.createObjectURL(blob);
  a.download = fileName;
  a.dataset.size = String(size);
  a.dataset.from = from;
  li.append(a, h('span', 'muted-text', ` ${formatBytes(size)} from ${from}`));
  ui.files.prepend(li);
}

ui.fileInput.addEventListener('change', async () => {
  const files = [...(ui.fileInput.files ?? [])];
  ui.fileInput.value = '';
  if (!room) return;
  for (const file of files) {
    try {
      await room.sendFile(file);
    } catch (err) {
      const code = /** @type {{ code?: string }} */ (err).code;
      if (code === 'file_too_large' || code === 'no_peers') {
        showStatus(err instanceof Error ? err.message : String(err), 'warn', { hideAfterMs: 6000 });
      }
    }
  }
});

// ---------------------------------------------------------------- stats

/** @param {Room} r */
async function renderStats(r) {
  if (room !== r) return;
  const all = await r.getPeerStats();
  if (room === r) renderStatsPanel(ui.stats, all, 'Nobody else is here yet.');
}
