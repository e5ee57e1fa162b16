// @ts-check
/**
 * Random chat page (`/random`): camera preview, then Start to enter the lobby; Next ends
 * the current pair and waits for another stranger.
 * @module
 */

import { RandomSession, getLocalMedia, isValidDisplayName, stopStream } from '../sdk/switchboard.js';
import {
  attachStream,
  autojoin,
  byId,
  errorText,
  guestName,
  h,
  iceTransportPolicy,
  initialName,
  rememberName,
  renderStatsPanel,
  setDebugHook,
  showStatus,
} from './common.js';

const ui = {
  form: byId('random-form', HTMLFormElement),
  name: byId('name', HTMLInputElement),
  nameError: byId('name-error', HTMLElement),
  start: byId('start', HTMLButtonElement),
  next: byId('next', HTMLButtonElement),
  leave: byId('leave', HTMLButtonElement),
  muteMic: byId('mute-mic', HTMLButtonElement),
  cameraOff: byId('camera-off', HTMLButtonElement),
  remote: byId('remote', HTMLVideoElement),
  remoteTile: byId('remote-tile', HTMLElement),
  remoteName: byId('remote-name', HTMLElement),
  local: byId('local', HTMLVideoElement),
  localTile: byId('local-tile', HTMLElement),
  chatLog: byId('chat-log', HTMLElement),
  chatForm: byId('chat-form', HTMLFormElement),
  chatInput: byId('chat-input', HTMLInputElement),
  chatSend: byId('chat-send', HTMLButtonElement),
  stats: byId('stats', HTMLElement),
};

/** @type {MediaStream | null} */
let localStream = null;
/** @type {RandomSession | null} */
let session = null;
/** @type {ReturnType<typeof setInterval> | undefined} */
let statsTimer;
/** Whether we pressed Next ourselves (to word the status). */
let pressedNext = false;

ui.name.value = initialName();
const mediaReady = startPreview();
if (autojoin) mediaReady.then(() => ui.form.requestSubmit());

async function startPreview() {
  try {
    const media = await getLocalMedia({ audio: true, video: true });
    localStream = media.stream;
    attachStream(ui.local, localStream, { muted: true });
    ui.localTile.classList.toggle('no-video', !media.video);
    if (media.warning) showStatus(media.warning, 'warn');
  } catch (err) {
    ui.localTile.classList.add('no-video');
    const message = err instanceof Error ? err.message : String(err);
    showStatus(`${message} You can still start to watch and listen.`, 'error');
  }
}

ui.form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  if (session || ui.start.disabled) return;
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
  ui.nameError.hidden = true;
  ui.start.disabled = true;
  await mediaReady;
  const s = new RandomSession({ name, localStream, iceTransportPolicy });
  wire(s);
  try {
    await s.start();
  } catch (err) {
    ui.start.disabled = false;
    showStatus(errorText(err), 'error');
    return;
  }
  rememberName(name);
  session = s;
  ui.name.disabled = true;
  ui.leave.disabled = false;
  syncControls(s);
  setDebugHook(s, () => s.getPeerStats());
  statsTimer = setInterval(() => renderStats(s), 1000);
});

/** @param {RandomSession} s */
function wire(s) {
  s.on('waiting', () => {
    showStatus('Waiting for someone…', 'info');
    ui.next.disabled = true;
  });
  s.on('matched', ({ peer }) => {
    showStatus(`Connected with ${peer.name}`, 'ok');
    ui.remoteName.textContent = peer.name;
    ui.remoteTile.querySelector('.avatar')?.replaceChildren((peer.name.trim()[0] ?? '?').toUpperCase());
    ui.remoteTile.dataset.state = 'connecting';
    ui.remoteTile.classList.remove('mic-off', 'cam-off');
    ui.chatLog.replaceChildren();
    ui.next.disabled = false;
    ui.chatInput.disabled = false;
    ui.chatSend.disabled = false;
  });
  s.on('unmatched', ({ peer, reason }) => {
    clearRemote();
    const who = peer?.name ?? 'Your partner';
    if (pressedNext) showStatus('Waiting for someone…', 'info');
    else if (reason === 'next') showStatus(`${who} moved on. Waiting for someone…`, 'info');
    else showStatus(`${who} left. Waiting for someone…`, 'info');
    pressedNext = false;
    ui.next.disabled = true;
    ui.chatInput.disabled = true;
    ui.chatSend.disabled = true;
  });
  s.on('stream', ({ peerId, name, stream, kind }) => {
    if (kind !== 'camera') return;
    ui.remote.dataset.peerId = peerId;
    ui.remote.dataset.name = name;
    ui.remote.dataset.kind = 'camera';
    attachStream(ui.remote, stream);
    ui.remoteTile.classList.toggle('no-video', stream.getVideoTracks().length === 0);
  });
  s.on('stream-removed', ({ peerId, kind }) => {
    if (kind === 'camera' && ui.remote.dataset.peerId === peerId) clearRemote();
  });
  s.on('peer-state', ({ state, name }) => {
    ui.remoteTile.dataset.state = state;
    if (state === 'failed') showStatus(`The connection to ${name} failed — trying again…`, 'error');
    else if (state === 'connected') showStatus(`Connected with ${name}`, 'ok');
  });
  s.on('peer-media', ({ mic, camera }) => {
    ui.remoteTile.classList.toggle('mic-off', !mic);
    ui.remoteTile.classList.toggle('cam-off', !camera);
  });
  s.on('chat', ({ name, text, self }) => {
    const li = h('li', self ? 'chat-msg self' : 'chat-msg');
    li.dataset.from = name;
    li.append(h('span', 'chat-from', name), ' ', h('span', 'chat-text', text));
    ui.chatLog.append(li);
    ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
  });
  s.on('connection', ({ state }) => {
    if (state === 'reconnecting') showStatus('Connection lost — reconnecting…', 'warn');
    else showStatus('Reconnected. Waiting for someone…', 'ok');
  });
  s.on('error', ({ message }) => showStatus(message, 'error'));
  s.on('left', ({ reason }) => {
    clearInterval(statsTimer);
    clearRemote();
    session = null;
    setDebugHook(null);
    ui.start.disabled = false;
    ui.name.disabled = false;
    ui.next.disabled = true;
    ui.leave.disabled = true;
    ui.muteMic.disabled = true;
    ui.cameraOff.disabled = true;
    ui.chatInput.disabled = true;
    ui.chatSend.disabled = true;
    renderStatsPanel(ui.stats, [], 'Not connected.');
    if (reason === 'left') showStatus('You left random chat.', 'info', { hideAfterMs: 4000 });
  });
}

function clearRemote() {
  ui.remote.srcObject = null;
  delete ui.remote.dataset.peerId;
  delete ui.remote.dataset.name;
  delete ui.remote.dataset.kind;
  ui.remoteTile.classList.add('no-video');
  ui.remoteTile.classList.remove('mic-off', 'cam-off');
  ui.remoteTile.dataset.state = 'idle';
  ui.remoteName.textContent = 'Nobody yet';
  ui.remoteTile.querySelector('.avatar')?.replaceChildren('?');
}

/** @param {RandomSession} s */
function syncControls(s) {
  const hasMic = Boolean(localStream?.getAudioTracks().length);
  const hasCam = Boolean(localStream?.getVideoTracks().length);
  ui.muteMic.disabled = !hasMic;
  ui.cameraOff.disabled = !hasCam;
  ui.muteMic.textContent = !hasMic ? 'No mic' : s.micEnabled ? 'Mute' : 'Unmute';
  ui.muteMic.setAttribute('aria-pressed', String(hasMic && !s.micEnabled));
  ui.cameraOff.textContent = !hasCam ? 'No camera' : s.cameraEnabled ? 'Stop video' : 'Start video';
  ui.cameraOff.setAttribute('aria-pressed', String(hasCam && !s.cameraEnabled));
  ui.localTile.classList.toggle('cam-off', hasCam && !s.cameraEnabled);
}

ui.next.addEventListener('click', () => {
  if (!session?.link) return;
  pressedNext = true;
  session.next();
});
ui.leave.addEventListener('click', () => session?.leave());
ui.muteMic.addEventListener('click', () => {
  if (!session) return;
  session.setMicEnabled(!session.micEnabled);
  syncControls(session);
});
ui.cameraOff.addEventListener('click', () => {
  if (!session) return;
  session.setCameraEnabled(!session.cameraEnabled);
  syncControls(session);
});
ui.chatForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  if (!session || !ui.chatInput.value.trim()) return;
  session.sendChat(ui.chatInput.value);
  ui.chatInput.value = '';
});

window.addEventListener('pagehide', () => {
  session?.leave();
  stopStream(localStream);
});

/** @param {RandomSession} s */
async function renderStats(s) {
  if (session !== s) return;
  const all = await s.getPeerStats();
  if (session === s) renderStatsPanel(ui.stats, all, 'Not connected.');
}
