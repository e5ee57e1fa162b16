// @ts-check
/**
 * Broadcast receiver page (`/receiver?room=…`): joins as a `receiver` (no camera needed)
 * and plays the sender's stream, over its own connection to the sender — or, once the
 * broadcast outgrew peer-to-peer and moved to the SFU, through the server.
 * @module
 */

import { Room, isValidDisplayName, isValidRoomName } from '../sdk/switchboard.js';
import {
  attachStream,
  autojoin,
  byId,
  errorText,
  iceTransportPolicy,
  params,
  renderStatsPanel,
  setDebugHook,
  showStatus,
} from './common.js';

const ui = {
  form: byId('receiver-form', HTMLFormElement),
  room: byId('room', HTMLInputElement),
  name: byId('name', HTMLInputElement),
  formError: byId('form-error', HTMLElement),
  start: byId('start', HTMLButtonElement),
  stop: byId('stop', HTMLButtonElement),
  remote: byId('remote', HTMLVideoElement),
  remoteTile: byId('remote-tile', HTMLElement),
  remoteName: byId('remote-name', HTMLElement),
  stats: byId('stats', HTMLElement),
};

/** @type {Room | null} */
let room = null;
/** @type {ReturnType<typeof setInterval> | undefined} */
let statsTimer;
/** The room's sender, once known. */
let senderId = '';

ui.room.value = params.get('room') || 'broadcast';
ui.name.value = params.get('name') || '';
if (autojoin) queueMicrotask(() => ui.form.requestSubmit());

/** @param {string} message */
function formError(message) {
  ui.formError.textContent = message;
  ui.formError.hidden = false;
}

ui.form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  if (room || ui.start.disabled) return;
  ui.formError.hidden = true;
  const roomName = ui.room.value.trim();
  const name = ui.name.value.trim() || `Viewer ${Math.floor(1000 + Math.random() * 9000)}`;
  if (!isValidRoomName(roomName)) {
    formError('Broadcast names are 1–64 characters: letters, digits, "-", "_" and ".".');
    return;
  }
  if (!isValidDisplayName(name)) {
    formError('Names are 1–64 characters without control characters.');
    return;
  }
  ui.start.disabled = true;
  const r = new Room({ room: roomName, name, role: 'receiver', localStream: null, iceTransportPolicy });
  wire(r);
  try {
    await r.join();
  } catch (err) {
    ui.start.disabled = false;
    showStatus(errorText(err), 'error');
    return;
  }
  room = r;
  ui.room.disabled = true;
  ui.name.disabled = true;
  ui.stop.disabled = false;
  const sender = [...r.participants.values()].find((p) => p.role === 'sender');
  senderId = sender?.id ?? '';
  if (sender) showStatus(`Connecting to ${sender.name}…`, 'info');
  else showStatus('Waiting for the sender…', 'info');
  setDebugHook(r, () => r.getPeerStats());
  statsTimer = setInterval(async () => {
    if (room !== r) return;
    const all = await r.getPeerStats();
    if (room === r) renderStatsPanel(ui.stats, all, 'Not connected.');
  }, 1000);
});

/** @param {Room} r */
function wire(r) {
  r.on('participant-joined', (p) => {
    if (p.role !== 'sender') return;
    senderId = p.id;
    if (room === r) showStatus(`Connecting to ${p.name}…`, 'info');
  });
  r.on('participant-left', ({ id, name }) => {
    if (id !== senderId) return;
    senderId = '';
    clearRemote(r);
    showStatus(`${name || 'The sender'} stopped broadcasting. Waiting for the sender…`, 'info');
  });
  r.on('stream', ({ peerId, name, stream, kind }) => {
    if (kind !== 'camera') return;
    ui.remote.dataset.peerId = peerId;
    ui.remote.dataset.name = name;
    ui.remote.dataset.kind = 'camera';
    attachStream(ui.remote, stream);
    r.observeTile(stream, ui.remote);
    ui.remoteName.textContent = name;
    ui.remoteTile.classList.toggle('no-video', stream.getVideoTracks().length === 0);
    showStatus(`Watching ${name}`, 'ok');
  });
  r.on('stream-removed', ({ peerId, kind }) => {
    if (kind === 'camera' && ui.remote.dataset.peerId === peerId) clearRemote(r);
  });
  r.on('mode', ({ mode }) => {
    if (mode === 'sfu') showStatus('The broadcast now comes through the server…', 'info');
  });
  r.on('peer-media', ({ mic, camera }) => {
    ui.remoteTile.classList.toggle('mic-off', !mic);
    ui.remoteTile.classList.toggle('cam-off', !camera);
  });
  r.on('peer-state', ({ name, state }) => {
    ui.remoteTile.dataset.state = state;
    if (state === 'failed') showStatus(`The connection to ${name} failed — trying again…`, 'error');
    else if (state === 'connected' && ui.remote.dataset.peerId) showStatus(`Watching ${name}`, 'ok');
  });
  r.on('connection', ({ state }) => {
    if (state === 'reconnecting') showStatus('Connection lost — reconnecting…', 'warn');
    else showStatus('Reconnected', 'ok', { hideAfterMs: 3000 });
  });
  r.on('error', ({ code, message }) => showStatus(message, code === 'rate_limited' ? 'warn' : 'error'));
  r.on('left', ({ reason }) => {
    clearInterval(statsTimer);
    room = null;
    setDebugHook(null);
    clearRemote(r);
    ui.room.disabled = false;
    ui.name.disabled = false;
    ui.start.disabled = false;
    ui.stop.disabled = true;
    renderStatsPanel(ui.stats, [], 'Not connected.');
    if (reason === 'left') showStatus('Stopped watching.', 'info', { hideAfterMs: 4000 });
  });
}

/** @param {Room} r */
function clearRemote(r) {
  r.unobserveTile(ui.remote);
  ui.remote.srcObject = null;
  delete ui.remote.dataset.peerId;
  delete ui.remote.dataset.name;
  delete ui.remote.dataset.kind;
  ui.remoteName.textContent = 'Not watching';
  ui.remoteTile.classList.add('no-video');
  ui.remoteTile.classList.remove('mic-off', 'cam-off');
  ui.remoteTile.dataset.state = 'idle';
}

ui.stop.addEventListener('click', () => room?.leave());
window.addEventListener('pagehide', () => room?.leave());
