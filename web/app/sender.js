// @ts-check
/**
 * Broadcast sender page (`/sender?room=…&name=…`): joins a room as its one `sender` and
 * streams the camera to every receiver over its own connection — or, once the broadcast
 * outgrew peer-to-peer and moved to the SFU, once to the server, which forwards it.
 * @module
 */

import { Room, getLocalMedia, isValidDisplayName, isValidRoomName, stopStream } from '../sdk/switchboard.js';
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
  form: byId('sender-form', HTMLFormElement),
  room: byId('room', HTMLInputElement),
  name: byId('name', HTMLInputElement),
  formError: byId('form-error', HTMLElement),
  start: byId('start', HTMLButtonElement),
  stop: byId('stop', HTMLButtonElement),
  muteMic: byId('mute-mic', HTMLButtonElement),
  cameraOff: byId('camera-off', HTMLButtonElement),
  viewers: byId('viewers', HTMLElement),
  viewersLabel: byId('viewers-label', HTMLElement),
  receiverLink: byId('receiver-link', HTMLAnchorElement),
  preview: byId('preview', HTMLVideoElement),
  previewTile: byId('preview-tile', HTMLElement),
  liveBadge: byId('live-badge', HTMLElement),
  stats: byId('stats', HTMLElement),
};

/** @type {MediaStream | null} */
let localStream = null;
/** @type {Room | null} */
let room = null;
/** @type {ReturnType<typeof setInterval> | undefined} */
let statsTimer;
/** Why the camera/microphone could not be started, if it failed. */
let mediaError = '';

ui.room.value = params.get('room') || 'broadcast';
ui.name.value = params.get('name') || '';
updateReceiverLink();
ui.room.addEventListener('input', updateReceiverLink);

function updateReceiverLink() {
  const href = `/receiver?room=${encodeURIComponent(ui.room.value.trim() || 'broadcast')}`;
  ui.receiverLink.href = href;
  ui.receiverLink.textContent = href;
}

const mediaReady = startPreview();
if (autojoin) mediaReady.then(() => ui.form.requestSubmit());

async function startPreview() {
  try {
    const media = await getLocalMedia({ audio: true, video: true });
    localStream = media.stream;
    attachStream(ui.preview, localStream, { muted: true });
    ui.previewTile.classList.toggle('no-video', !media.video);
    if (media.warning) showStatus(media.warning, 'warn');
  } catch (err) {
    ui.previewTile.classList.add('no-video');
    mediaError = err instanceof Error ? err.message : String(err);
    showStatus(mediaError, 'error');
  }
}

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
  const name = ui.name.value.trim() || 'Sender';
  if (!isValidRoomName(roomName)) {
    formError('Broadcast names are 1–64 characters: letters, digits, "-", "_" and ".".');
    return;
  }
  if (!isValidDisplayName(name)) {
    formError('Names are 1–64 characters without control characters.');
    return;
  }
  ui.start.disabled = true;
  await mediaReady;
  if (!localStream) {
    ui.start.disabled = false;
    showStatus(`A broadcast needs a camera or a microphone. ${mediaError}`, 'error');
    return;
  }
  const r = new Room({ room: roomName, name, role: 'sender', localStream, iceTransportPolicy });
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
  ui.liveBadge.hidden = false;
  syncControls(r);
  updateViewers(r);
  showStatus(`Broadcasting to "${roomName}".`, 'ok', { hideAfterMs: 4000 });
  setDebugHook(r, () => r.getPeerStats());
  statsTimer = setInterval(async () => {
    if (room !== r) return;
    const all = await r.getPeerStats();
    if (room === r) renderStatsPanel(ui.stats, all, 'No viewers yet.');
  }, 1000);
});

/** @param {Room} r */
function wire(r) {
  r.on('participant-joined', () => updateViewers(r));
  r.on('participant-left', () => updateViewers(r));
  r.on('peer-state', ({ name, state }) => {
    if (state === 'failed') showStatus(`The connection to viewer ${name} failed — trying again…`, 'warn', { hideAfterMs: 6000 });
  });
  r.on('mode', ({ mode }) => {
    if (mode === 'sfu') showStatus('Many viewers: the broadcast now goes through the server.', 'info', { hideAfterMs: 6000 });
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
    ui.room.disabled = false;
    ui.name.disabled = false;
    ui.start.disabled = false;
    ui.stop.disabled = true;
    ui.muteMic.disabled = true;
    ui.cameraOff.disabled = true;
    ui.liveBadge.hidden = true;
    ui.viewers.textContent = '0';
    ui.viewersLabel.textContent = 'viewers';
    renderStatsPanel(ui.stats, [], 'No viewers yet.');
    for (const t of localStream?.getTracks() ?? []) t.enabled = true;
    ui.previewTile.classList.remove('cam-off');
    if (reason === 'left') showStatus('Broadcast stopped.', 'info', { hideAfterMs: 4000 });
  });
}

/** @param {Room} r */
function updateViewers(r) {
  const n = [...r.participants.values()].filter((p) => p.role === 'receiver').length;
  ui.viewers.textContent = String(n);
  ui.viewersLabel.textContent = n === 1 ? 'viewer' : 'viewers';
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
  ui.previewTile.classList.toggle('cam-off', hasCam && !r.cameraEnabled);
}

ui.stop.addEventListener('click', () => room?.leave());
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

window.addEventListener('pagehide', () => {
  room?.leave();
  stopStream(localStream);
});
