// webrtc_ref browser client.
//
// This file is the body of the gr.HTML `js_on_load` function of the WebRTC component:
// Gradio calls it once per mounted component as
//   new Function("element", "trigger", "props", "server", "upload", "watch", <this file>)
// with `element` the component's root element, `trigger(name)` to fire the component's
// events ("tick", "state_change"), `props` (value + the component's options), `server`
// (its server functions: `server.offer(body)`), and `watch(prop, callback)`.
// The connection itself (media, signalling, the data channel, endings) is the standalone
// client, static/client.js: webrtc_ref.component.client_script puts that module's source
// before this script, inside a function whose exports are the object `client`. The wire
// protocol is documented in docs/protocol.md.
"use strict";

const START_SENTINEL = "start_webrtc_stream";
const VIDEO_TICK_MS = 500;
const RECEIVE_TICK_MS = 1000;
// The receive-mode trigger's client-side announcement (see onTriggerEvent) and how long its
// queued confirmation may take to arrive.
const TRIGGER_EVENT = "webrtc-ref-trigger";
const TRIGGER_CONFIRM_MS = 10000;

const root = element.querySelector(".webrtc-ref");
const q = (selector) => root.querySelector(selector);
const ui = {
  stage: q(".wr-stage"),
  remote: q(".wr-remote"),
  local: q(".wr-local"),
  audio: q(".wr-audio"),
  audioView: q(".wr-audio-view"),
  meterIn: q(".wr-meter-in"),
  meterOut: q(".wr-meter-out"),
  timebar: q(".wr-timebar"),
  timebarFill: q(".wr-timebar-fill"),
  timebarLabel: q(".wr-timebar-label"),
  device: q(".wr-device"), // the modality's input; the camera in audio-video
  deviceMic: q(".wr-device-mic"), // audio-video only: the microphone
  start: q(".wr-start"),
  stop: q(".wr-stop"),
  status: q(".wr-status"),
  warning: q(".wr-warning"),
  error: q(".wr-error"),
  turn: q(".wr-turn"),
  muteMic: q(".wr-mute-mic"),
  muteSpeaker: q(".wr-mute-speaker"),
  fullScreen: q(".wr-fullscreen"),
};

// ReplyOnPause's turn events (data-channel "log" messages) -> the turn state shown.
const TURN_STATES = {
  started_talking: ["listening", "Listening…"],
  pause_detected: ["thinking", "Thinking…"],
  response_starting: ["speaking", "Speaking…"],
  response_finished: ["waiting", "Your turn."],
};

function setTurn(state, text) {
  if (state) {
    S.turns.push({ state, at: performance.now() });
    if (S.turns.length > 200) S.turns.splice(0, S.turns.length - 200);
  }
  root.dataset.turn = state || "";
  ui.turn.textContent = text || "";
  ui.turn.hidden = !state;
}

const S = {
  state: "idle",
  session: 0, // bumped on every start/teardown; callbacks of older connections are ignored
  conn: null, // the current client.Connection (see client.js)
  webrtcId: null,
  timers: [],
  meters: [],
  lastError: null,
  messages: [], // every data-channel message received (newest last, capped), for tests
  turns: [], // turn states shown ({state, at: performance.now()}, capped), for tests
  triggerStarts: [], // receive mode: starts by one half of a trigger, awaiting the other
  switching: null, // the device picker change being applied (see switchDevice())
  starts: { total: 0, early: 0, confirmed: 0 }, // counts, for tests
  micMuted: false, // the microphone toggle: audio tracks sent are disabled (silence)
  speakerMuted: false, // the speaker toggle: the remote audio plays muted
  recording: false, // start_recording fired for the current stream, stop_recording not yet
  recordingEvents: [], // "start_recording"/"stop_recording" fired (capped), for tests
};

// ---------------------------------------------------------------- configuration

function cfg() {
  const mode = ["send-receive", "send", "receive"].includes(props.mode) ? props.mode : "send-receive";
  const modality = props.modality === "audio" || props.modality === "audio-video" ? props.modality : "video";
  return {
    mode,
    modality,
    // audio-video sends and receives both kinds (the server allows only send-receive)
    hasAudio: modality !== "video",
    hasVideo: modality !== "audio",
    sends: mode !== "receive",
    receives: mode !== "send",
    rtcConfiguration: isObject(props.rtc_configuration) ? props.rtc_configuration : null,
    // The server makes a configuration for each connection (server function rtc_config).
    perConnectionRtc: props.rtc_configuration_per_connection === true,
    trackConstraints:
      props.track_constraints === undefined || props.track_constraints === null
        ? true
        : props.track_constraints,
    timeLimit: typeof props.time_limit === "number" && props.time_limit > 0 ? props.time_limit : null,
    mirror: props.mirror_webcam !== false,
    rtpParams: isObject(props.rtp_params) ? props.rtp_params : {},
    height: props.height,
    width: props.width,
    labels: buttonLabels(props.button_labels),
    fullScreen: props.full_screen !== false,
  };
}

const isObject = client.isObject;

function cssSize(value) {
  if (typeof value === "number") return value + "px";
  if (typeof value === "string" && value) return value;
  return "";
}

// ---------------------------------------------------------------- UI state

const STATUS_TEXT = {
  idle: (c) => (c.mode === "receive" ? "Waiting for the stream to start." : "Ready."),
  connecting: () => "Connecting…",
  streaming: () => "Streaming.",
};

function setState(state, text) {
  S.state = state;
  root.dataset.state = state;
  const c = cfg();
  const active = state === "connecting" || state === "streaming";
  ui.start.hidden = c.mode === "receive" || active;
  ui.start.disabled = false;
  ui.stop.hidden = !active;
  ui.device.hidden = !c.sends || ui.device.options.length === 0;
  ui.deviceMic.hidden = c.modality !== "audio-video" || !c.sends || ui.deviceMic.options.length === 0;
  ui.timebar.hidden = !(state === "streaming" && c.timeLimit);
  updateControls(state, c);
  const fallback = STATUS_TEXT[state] ? STATUS_TEXT[state](c) : "";
  ui.status.textContent = text || fallback;
  element.dispatchEvent(new CustomEvent("webrtc-state", { detail: { state, text: text || fallback } }));
}

function showError(message, code) {
  S.lastError = message;
  ui.error.textContent = message;
  ui.error.hidden = false;
  if (code) root.dataset.errorCode = code;
}

function clearError() {
  ui.error.textContent = "";
  ui.error.hidden = true;
  ui.warning.textContent = "";
  ui.warning.hidden = true;
  delete root.dataset.errorCode;
  delete root.dataset.endReason;
  S.lastError = null;
}

function showWarning(message) {
  ui.warning.textContent = message;
  ui.warning.hidden = false;
  clearTimeout(S.warningTimer);
  S.warningTimer = setTimeout(() => {
    ui.warning.hidden = true;
  }, 8000);
}

function layout() {
  const c = cfg();
  root.dataset.mode = c.mode;
  root.dataset.modality = c.modality;
  const video = c.hasVideo;
  ui.remote.hidden = !video || !c.receives;
  ui.local.hidden = !video || !c.sends;
  ui.local.classList.toggle("wr-pip", video && c.sends && c.receives);
  ui.local.classList.toggle("wr-mirror", c.mirror);
  // audio-video: the meters lie over the video (see webrtc.css), without the audio icon
  ui.audioView.hidden = !c.hasAudio;
  ui.meterIn.hidden = !c.hasAudio || !c.sends;
  ui.meterOut.hidden = !c.hasAudio || !c.receives;
  const av = c.modality === "audio-video";
  ui.device.setAttribute("aria-label", av ? "Camera" : "Input device");
  if (av) ui.device.title = "Camera";
  else ui.device.removeAttribute("title");
  ui.stage.style.height = cssSize(c.height);
  if (cssSize(c.height)) root.dataset.sized = "";
  else delete root.dataset.sized;
  ui.stage.style.width = cssSize(c.width);
  if (c.width) ui.stage.style.marginInline = "auto";
}

// ---------------------------------------------------------------- media helpers

// The device pickers of a modality: [select, enumerateDevices kind, what it picks].
function pickers(c) {
  if (c.modality === "audio-video") {
    return [
      [ui.device, "videoinput", "camera"],
      [ui.deviceMic, "audioinput", "microphone"],
    ];
  }
  return c.modality === "audio" ? [[ui.device, "audioinput", "microphone"]] : [[ui.device, "videoinput", "camera"]];
}

// client.getLocalMedia's options: the modality, track_constraints and the picked devices
// (ui.device is the modality's picker; the camera in audio-video).
function mediaOptions(c, only) {
  const av = c.modality === "audio-video";
  return {
    modality: c.modality,
    constraints: c.trackConstraints,
    audioDeviceId: av ? ui.deviceMic.value : c.modality === "audio" ? ui.device.value : "",
    videoDeviceId: c.modality === "audio" ? "" : ui.device.value,
    only,
  };
}

async function refreshDevices() {
  const c = cfg();
  if (!c.sends || !navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  let all;
  try {
    all = await navigator.mediaDevices.enumerateDevices();
  } catch (err) {
    return;
  }
  for (const [select, kind, label] of pickers(c)) {
    const devices = all.filter((d) => d.kind === kind && d.deviceId);
    const local = S.conn && S.conn.localStream;
    const active = local && local.getTracks().find((t) => t.kind + "input" === kind);
    const activeId = active && active.getSettings ? active.getSettings().deviceId : null;
    const selected = select.value || activeId;
    select.replaceChildren(
      ...devices.map((d, i) => {
        const option = document.createElement("option");
        option.value = d.deviceId;
        option.textContent = d.label || `${label} ${i + 1}`;
        return option;
      }),
    );
    if (selected && devices.some((d) => d.deviceId === selected)) select.value = selected;
    select.hidden = devices.length === 0;
  }
}

// Picker changes are applied one after another: a change made while the previous one is
// still opening its device waits for it (two at once could each keep a track).
function switchDevice(kind) {
  const run = () => reopenDevice(kind).catch(() => {});
  S.switching = (S.switching || Promise.resolve()).then(run, run);
  return S.switching;
}

async function reopenDevice(kind) {
  const c = cfg();
  const conn = S.conn;
  if (!conn || !conn.pc || !conn.localStream || S.state !== "streaming") return;
  let stream;
  try {
    stream = await client.getLocalMedia(mediaOptions(c, c.modality === "audio-video" ? kind : undefined));
  } catch (err) {
    showWarning(err.message);
    return;
  }
  if (conn !== S.conn) {
    stopStream(stream);
    return;
  }
  if (await conn.replaceLocalStream(stream)) {
    if (conn === S.conn) {
      showLocal(conn.localStream, c);
      applyMicMute();
    }
  }
}

function stopStream(stream) {
  if (!stream) return;
  for (const track of stream.getTracks()) track.stop();
}

function showLocal(stream, c) {
  stopMeters("in");
  if (c.modality === "video") {
    ui.local.srcObject = stream;
    ui.local.play().catch(() => {});
  } else if (c.modality === "audio-video") {
    // The preview is muted (see webrtc.html); the in meter shows the microphone.
    ui.local.srcObject = stream;
    ui.local.play().catch(() => {});
    startMeter(stream, ui.meterIn, "in");
  } else {
    startMeter(stream, ui.meterIn, "in");
  }
}

function attachRemote(track, stream, c) {
  if (c.modality === "audio-video") return attachRemoteAudioVideo(track, stream);
  if (c.modality === "video") {
    ui.remote.srcObject = stream;
    ui.remote.play().catch(() => {});
  } else {
    ui.audio.srcObject = stream;
    ui.audio.volume = 1;
    ui.audio.muted = S.speakerMuted;
    ui.audio.play().catch(() => {});
    startMeter(stream, ui.meterOut, "out");
  }
}

// audio-video: both remote tracks are in one MediaStream (the connection's remoteStream),
// played by the remote <video>, so one element renders the picture and plays the sound
// (the browser synchronises the tracks of the answer's one stream, and one element keeps
// them in one playout).
function attachRemoteAudioVideo(track, stream) {
  if (ui.remote.srcObject !== stream) ui.remote.srcObject = stream;
  ui.remote.volume = 1;
  ui.remote.muted = S.speakerMuted;
  ui.remote.play().catch(() => {});
  if (track.kind === "audio") {
    stopMeters("out");
    startMeter(new MediaStream([track]), ui.meterOut, "out");
  }
}

// Live level meters (RMS of the time-domain signal, drawn on animation frames).
function startMeter(stream, meterElement, tag) {
  const AudioContextClass = window.AudioContext || window.webkitAudioContext;
  if (!AudioContextClass || !stream.getAudioTracks().length) return;
  let context;
  try {
    context = new AudioContextClass();
    const source = context.createMediaStreamSource(stream);
    const analyser = context.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    const data = new Float32Array(analyser.fftSize);
    const fill = meterElement.querySelector(".wr-meter-fill");
    const meter = { tag, context, raf: 0, level: 0 };
    const draw = () => {
      analyser.getFloatTimeDomainData(data);
      let sum = 0;
      for (let i = 0; i < data.length; i++) sum += data[i] * data[i];
      const rms = Math.sqrt(sum / data.length);
      meter.level = rms;
      const percent = Math.min(100, Math.round(Math.sqrt(rms) * 160));
      fill.style.width = percent + "%";
      meterElement.dataset.level = rms.toFixed(4);
      meter.raf = requestAnimationFrame(draw);
    };
    context.resume().catch(() => {});
    draw();
    S.meters.push(meter);
  } catch (err) {
    if (context) context.close().catch(() => {});
  }
}

function stopMeters(tag) {
  S.meters = S.meters.filter((meter) => {
    if (tag && meter.tag !== tag) return true;
    cancelAnimationFrame(meter.raf);
    meter.context.close().catch(() => {});
    return false;
  });
  for (const meterElement of [ui.meterIn, ui.meterOut]) {
    if (!tag || meterElement === (tag === "in" ? ui.meterIn : ui.meterOut)) {
      meterElement.querySelector(".wr-meter-fill").style.width = "0%";
    }
  }
}

// ---------------------------------------------------------------- signalling

// Offers and trickled candidates go to the component's server functions (Gradio's
// component_server route): `offer` and `ice_candidate`.
async function gradioSignal(body) {
  if (body.type === "ice-candidate") {
    if (typeof server.ice_candidate !== "function") return undefined;
    return server.ice_candidate({ webrtc_id: body.webrtc_id, candidate: body.candidate });
  }
  return server.offer(body);
}

// The RTCConfiguration of one connection, from the server (rtc_configuration is a function
// there).
// A rate-limited request (too_many_requests) is retried after the server's retry_after
// (at most 5 s each, 3 retries) before the error is shown; so is a full stream
// (concurrency_limit_reached) right after this page's own Stop. The server refuses
// before calling the app's function when an offer could not be admitted anyway.
async function fetchRtcConfiguration(webrtcId) {
  let reply;
  for (let attempt = 0; ; attempt++) {
    try {
      reply = await server.rtc_config({ webrtc_id: webrtcId });
    } catch (err) {
      reply = undefined;
    }
    const meta = isObject(reply) && isObject(reply.meta) ? reply.meta : {};
    if (attempt >= 3) break;
    let wait;
    if (meta.error === "too_many_requests") wait = Math.min(5, Math.max(0.2, Number(meta.retry_after) || 1));
    // A full stream right after our own Stop: our previous slot may not be free yet.
    else if (meta.error === "concurrency_limit_reached" && client.stoppedRecently()) wait = 0.3 * (attempt + 1);
    else break;
    await new Promise((resolve) => setTimeout(resolve, wait * 1000));
  }
  if (isObject(reply) && isObject(reply.rtc_configuration)) return reply.rtc_configuration;
  if (!isObject(reply)) {
    throw new client.ClientError(
      "The server did not send this connection's ICE configuration (HTTP error or network failure); see the server log.",
      "no_rtc_configuration",
    );
  }
  const { code, message } = client.failureMessage(reply);
  throw new client.ClientError(message, code);
}

// ---------------------------------------------------------------- ticks and messages

function fireTick() {
  if (!S.webrtcId || !(S.state === "connecting" || S.state === "streaming")) return;
  if (props.value !== S.webrtcId) props.value = S.webrtcId;
  trigger("tick");
}

function fireStateChange() {
  if (props.value !== S.webrtcId && S.webrtcId) props.value = S.webrtcId;
  trigger("state_change");
}

// The connection's callbacks (see client.js); those of a connection that is no longer
// the current one are ignored.
function callbacks(session, c) {
  const live = () => session === S.session;
  return {
    onLocalStream: (stream) => {
      if (!live()) return;
      showLocal(stream, c);
      applyMicMute();
      refreshDevices();
    },
    onTrack: (track, stream) => live() && attachRemote(track, stream, c),
    onConnectionState: (state) => {
      if (live()) root.dataset.connectionState = state;
    },
    onState: (state, info) => {
      if (!live()) return;
      if (state === "streaming") {
        setState("streaming");
        startStreamingTimers(session);
      } else if (state === "ended") {
        if (info.reason) root.dataset.endReason = info.reason;
        finish("ended", info.text);
      } else if (state === "error") {
        if (info.reason) root.dataset.endReason = info.reason;
        finish("error", null, info.message, info.code);
      }
    },
    onMessage: (data) => {
      if (!live()) return;
      S.messages.push(data);
      if (S.messages.length > 500) S.messages.splice(0, S.messages.length - 500);
    },
    onTick: () => live() && fireTick(),
    onChange: () => live() && fireStateChange(),
    onError: (message, code) => live() && showError(message, code),
    onWarning: (message) => live() && showWarning(message),
    onLog: (text, msg) => {
      if (!live()) return;
      root.dataset.lastLog = text;
      if (TURN_STATES[text]) setTurn(...TURN_STATES[text]);
      element.dispatchEvent(new CustomEvent("webrtc-log", { detail: msg }));
    },
  };
}

// ---------------------------------------------------------------- lifecycle

function clearTimers() {
  for (const timer of S.timers) clearInterval(timer);
  S.timers = [];
}

// Close everything of the current connection synchronously (the connection tells the
// server when its data channel is open).
function teardown() {
  S.session += 1;
  clearTimers();
  stopMeters();
  setTurn("");
  const conn = S.conn;
  S.conn = null;
  if (conn) conn.stop();
  ui.local.srcObject = null;
  ui.remote.srcObject = null;
  ui.audio.srcObject = null;
}

function finish(state, text, errorMessage, errorCode) {
  teardown();
  if (errorMessage) showError(errorMessage, errorCode);
  setState(state, text || (state === "error" ? "Error." : ""));
}

function stop() {
  teardown();
  setState("idle", "Stopped.");
}

function startStreamingTimers(session) {
  const c = cfg();
  const every = (ms, fn) => S.timers.push(setInterval(() => session === S.session && fn(), ms));
  if (c.modality === "video" && c.sends) every(VIDEO_TICK_MS, fireTick);
  if (c.mode === "receive") every(RECEIVE_TICK_MS, fireTick);
  if (c.timeLimit) {
    const update = () => {
      const connectedAt = S.conn && S.conn.connectedAt;
      const elapsed = connectedAt ? (Date.now() - connectedAt) / 1000 : 0;
      const fraction = Math.min(1, elapsed / c.timeLimit);
      ui.timebarFill.style.width = (fraction * 100).toFixed(1) + "%";
      ui.timebarLabel.textContent = Math.max(0, Math.ceil(c.timeLimit - elapsed)) + " s left";
    };
    update();
    every(200, update);
  }
}

// Start a connection; resolves once it is answered or has failed (its state says which).
function start() {
  if (S.conn || S.state === "connecting" || S.state === "streaming") teardown();
  S.starts.total += 1;
  const session = ++S.session;
  const c = cfg();
  clearError();
  layout();
  const webrtcId = client.newWebrtcId();
  S.webrtcId = webrtcId;
  root.dataset.webrtcId = webrtcId;
  props.value = webrtcId;
  setState("connecting");
  const conn = new client.Connection({
    ...mediaOptions(c),
    ...callbacks(session, c),
    signal: gradioSignal,
    mode: c.mode,
    webrtcId,
    rtcConfiguration: c.perConnectionRtc ? fetchRtcConfiguration : c.rtcConfiguration,
    rtpParams: c.rtpParams,
    timeLimit: c.timeLimit,
  });
  S.conn = conn;
  return conn.ready.then(
    () => {
      if (session === S.session && conn.rtpParams) root.dataset.rtpParams = conn.rtpParams;
    },
    () => {},
  );
}

// ---------------------------------------------------------------- controls
// button_labels, the mute toggles, the full-screen toggle and the start_recording /
// stop_recording events. Native <button>s: reachable by Tab, operated by Enter and Space.

const DEFAULT_LABELS = { start: "Start", stop: "Stop", waiting: "Connecting…" };

function buttonLabels(value) {
  const labels = { ...DEFAULT_LABELS };
  if (isObject(value)) {
    for (const key of Object.keys(DEFAULT_LABELS)) {
      if (typeof value[key] === "string" && value[key].trim()) labels[key] = value[key];
    }
  }
  return labels;
}

function fullScreenSupported() {
  return typeof root.requestFullscreen === "function" && document.fullscreenEnabled !== false;
}

function setPressed(button, pressed, label) {
  button.setAttribute("aria-pressed", pressed ? "true" : "false");
  button.setAttribute("aria-label", label);
  button.title = label;
}

// Called by setState: the buttons' text and which toggles show; the recording events.
function updateControls(state, c) {
  const active = state === "connecting" || state === "streaming";
  ui.start.textContent = c.labels.start;
  ui.stop.textContent = state === "connecting" ? c.labels.waiting : c.labels.stop;
  ui.muteMic.hidden = !(c.hasAudio && c.sends && active);
  ui.muteSpeaker.hidden = !(c.hasAudio && c.receives && active);
  ui.fullScreen.hidden = !(c.hasVideo && c.fullScreen && fullScreenSupported());
  if (state === "streaming" && !S.recording) {
    S.recording = true;
    fireRecording("start_recording");
  } else if (state !== "streaming" && S.recording) {
    S.recording = false;
    fireRecording("stop_recording");
  }
}

function fireRecording(name) {
  S.recordingEvents.push(name);
  if (S.recordingEvents.length > 100) S.recordingEvents.splice(0, S.recordingEvents.length - 100);
  trigger(name);
}

// Muting the microphone disables the audio tracks being sent: the peer keeps its senders
// (no renegotiation) and sends silence until unmuted.
function applyMicMute() {
  const conn = S.conn;
  const tracks = new Set();
  if (conn && conn.localStream) for (const t of conn.localStream.getAudioTracks()) tracks.add(t);
  if (conn && conn.pc) {
    for (const sender of conn.pc.getSenders()) {
      if (sender.track && sender.track.kind === "audio") tracks.add(sender.track);
    }
  }
  for (const track of tracks) track.enabled = !S.micMuted;
  setPressed(ui.muteMic, S.micMuted, S.micMuted ? "Unmute microphone" : "Mute microphone");
}

// Muting the speaker mutes the element playing the remote audio (audio: the <audio>;
// audio-video: the remote <video>); the stream keeps arriving.
function applySpeakerMute() {
  ui.audio.muted = S.speakerMuted;
  if (cfg().modality === "audio-video") ui.remote.muted = S.speakerMuted;
  setPressed(ui.muteSpeaker, S.speakerMuted, S.speakerMuted ? "Unmute speaker" : "Mute speaker");
}

function toggleFullScreen() {
  if (document.fullscreenElement === root) {
    document.exitFullscreen().catch(() => {});
  } else {
    root.requestFullscreen().catch((err) => showWarning("Full screen is not available: " + err.message));
  }
}

function onFullScreenChange() {
  const on = document.fullscreenElement === root;
  setPressed(ui.fullScreen, on, on ? "Exit full screen" : "Full screen");
}

ui.muteMic.addEventListener("click", () => {
  S.micMuted = !S.micMuted;
  applyMicMute();
});
ui.muteSpeaker.addEventListener("click", () => {
  S.speakerMuted = !S.speakerMuted;
  applySpeakerMute();
});
ui.fullScreen.addEventListener("click", () => toggleFullScreen());
root.addEventListener("fullscreenchange", onFullScreenChange);

// ---------------------------------------------------------------- wiring

ui.start.addEventListener("click", () => {
  ui.start.disabled = true;
  start();
});
ui.stop.addEventListener("click", () => stop());
ui.device.addEventListener("change", () => switchDevice(cfg().modality === "audio-video" ? "video" : undefined));
ui.deviceMic.addEventListener("change", () => switchDevice("audio"));
if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
  navigator.mediaDevices.addEventListener("devicechange", () => refreshDevices());
}

// Receive mode: the stream's trigger sets the value to "start_webrtc_stream". The trigger
// also has a client-side listener that announces the click at once (TRIGGER_EVENT with
// this component's props.trigger_key). One click thus arrives twice, in either order: the
// first of the two starts the stream, the other (within TRIGGER_CONFIRM_MS) confirms that
// start instead of restarting it.
function triggered(source) {
  const now = performance.now();
  const other = source === "event" ? "sentinel" : "event";
  S.triggerStarts = S.triggerStarts.filter((t) => now - t.at < TRIGGER_CONFIRM_MS);
  const pending = S.triggerStarts.findIndex((t) => t.source === other);
  if (pending >= 0) {
    S.triggerStarts.splice(pending, 1); // the same click, seen the other way: confirmed
    S.starts.confirmed += 1;
    if (source === "sentinel" && S.webrtcId) props.value = S.webrtcId;
    return;
  }
  S.triggerStarts.push({ source, at: now });
  if (source === "event") S.starts.early += 1;
  start();
}
function onTriggerEvent(event) {
  const key = event.detail && event.detail.key;
  if (key && key === props.trigger_key && cfg().mode === "receive") triggered("event");
}
window.addEventListener(TRIGGER_EVENT, onTriggerEvent);
watch("value", () => {
  if (props.value !== START_SENTINEL || cfg().mode !== "receive") return;
  if (props.trigger_key) triggered("sentinel");
  else start();
});
watch(["mode", "modality", "mirror_webcam", "height", "width"], () => layout());
watch(["button_labels", "full_screen"], () => updateControls(S.state, cfg()));

window.addEventListener("pagehide", () => {
  if (S.conn) teardown();
});
// Gradio may unmount the component (re-render, hidden tab); never leave a peer behind.
const liveness = setInterval(() => {
  if (!element.isConnected) {
    clearInterval(liveness);
    window.removeEventListener(TRIGGER_EVENT, onTriggerEvent);
    if (S.conn) teardown();
  }
}, 1000);

const api = {
  get state() {
    return S.state;
  },
  get pc() {
    return S.conn ? S.conn.pc : null;
  },
  get dc() {
    return S.conn ? S.conn.dc : null;
  },
  get webrtcId() {
    return S.webrtcId;
  },
  get localStream() {
    return S.conn ? S.conn.localStream : null;
  },
  get remoteStream() {
    return S.conn ? S.conn.remoteStream : null;
  },
  get lastError() {
    return S.lastError;
  },
  get starts() {
    return { ...S.starts };
  },
  get meters() {
    return S.meters.map((m) => ({ tag: m.tag, level: m.level }));
  },
  messages: S.messages,
  get turns() {
    return S.turns.map((t) => ({ ...t }));
  },
  get micMuted() {
    return S.micMuted;
  },
  get speakerMuted() {
    return S.speakerMuted;
  },
  get recordingEvents() {
    return [...S.recordingEvents];
  },
  config: cfg,
  start,
  stop,
  tick: fireTick,
};
element.__webrtc = api;
root.__webrtc = api;

// Gradio's frame around the component (its Block and BlockLabel), made to fit it:
// - the label's icon is Gradio's HTML-component chip ("</>"); show what the component
//   captures (a microphone, a camera, or both) instead;
// - inside a gr.Group, the Group's rule resets the Block's border width to "medium" while
//   the Block keeps an inline solid style: a 3 px dark frame. The theme's own width (0 in a
//   Group, the block border elsewhere) is what the Block meant.
const LABEL_ICONS = {
  audio: "M12 15a3 3 0 0 0 3-3V6a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.92V22h2v-3.08A7 7 0 0 0 19 12z",
  video: "M17 10.5V7a1 1 0 0 0-1-1H4a1 1 0 0 0-1 1v10a1 1 0 0 0 1 1h12a1 1 0 0 0 1-1v-3.5l4 4v-11z",
};
function fitGradioFrame() {
  const block = element.closest(".block");
  if (!block) return;
  if (!block.style.borderWidth) block.style.borderWidth = "var(--block-border-width)";
  const svg = block.querySelector('[data-testid="block-label"] svg');
  if (!svg || svg.dataset.wrIcon) return;
  const modality = cfg().modality;
  const paths = modality === "audio-video" ? [LABEL_ICONS.video, LABEL_ICONS.audio] : [LABEL_ICONS[modality === "audio" ? "audio" : "video"]];
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.dataset.wrIcon = modality;
  svg.replaceChildren(
    ...paths.map((d, i) => {
      const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
      path.setAttribute("fill", "currentColor");
      path.setAttribute("d", d);
      // audio-video: a small camera and a small microphone side by side
      if (paths.length > 1) path.setAttribute("transform", i ? "translate(12.5 5) scale(0.55)" : "translate(-1 5) scale(0.6)");
      return path;
    }),
  );
}

fitGradioFrame();
layout();
setState("idle");
refreshDevices();
if (props.value === START_SENTINEL && cfg().mode === "receive") start();
