// webrtc_ref browser client.
//
// This file is the body of the gr.HTML `js_on_load` function of the WebRTC component:
// Gradio calls it once per mounted component as
//   new Function("element", "trigger", "props", "server", "upload", "watch", <this file>)
// with `element` the component's root element, `trigger(name)` to fire the component's
// events ("tick", "state_change"), `props` (value + the component's options), `server`
// (its server functions: `server.offer(body)`), and `watch(prop, callback)`.
// The wire protocol it speaks is documented in docs/protocol.md.
"use strict";

const START_SENTINEL = "start_webrtc_stream";
const ICE_GATHERING_TIMEOUT_MS = 5000;
// The offer leaves this long after the first usable candidate (a relay one under
// iceTransportPolicy "relay"), even if gathering goes on: an unreachable STUN/TURN server
// then costs this, not ICE_GATHERING_TIMEOUT_MS. Later candidates are trickled.
const ICE_GATHERING_BUDGET_MS = 300;
const MAX_TRICKLED_CANDIDATES = 20;
const VIDEO_TICK_MS = 500;
const RECEIVE_TICK_MS = 1000;
const DISCONNECT_GRACE_MS = 4000;
const LIMIT_RETRY_WINDOW_MS = 3000;
const LIMIT_RETRIES = 3;
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
  session: 0, // bumped on every start/teardown; callbacks of older sessions are ignored
  pc: null,
  dc: null,
  webrtcId: null,
  localStream: null,
  remoteStream: null,
  connectedAt: null,
  lastStopAt: 0,
  timers: [],
  meters: [],
  disconnectTimer: null,
  lastError: null,
  messages: [], // every data-channel message received (newest last, capped), for tests
  turns: [], // turn states shown ({state, at: performance.now()}, capped), for tests
  triggerStarts: [], // receive mode: starts by one half of a trigger, awaiting the other
  trickle: null, // the current session's late ICE candidates (see trickle())
  switching: null, // the device picker change being applied (see switchDevice())
  starts: { total: 0, early: 0, confirmed: 0 }, // counts, for tests
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
  };
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

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

function kindLabel(c) {
  if (c.modality === "audio-video") return "camera and microphone";
  return c.modality === "audio" ? "microphone" : "camera";
}

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

function withDevice(constraints, deviceId) {
  if (!deviceId) return constraints;
  return Object.assign({}, isObject(constraints) ? constraints : {}, { deviceId: { exact: deviceId } });
}

// audio-video: track_constraints is {audio: ..., video: ...}; a kind it leaves out (or
// track_constraints true) gets the browser's defaults.
function nestedConstraints(c, kind) {
  const tc = c.trackConstraints;
  if (!isObject(tc) || tc[kind] === undefined || tc[kind] === null) return true;
  return tc[kind];
}

// getUserMedia constraints; `only` ("audio" or "video") asks audio-video for one kind.
function mediaConstraints(c, only) {
  if (c.modality === "audio-video") {
    const audio = withDevice(nestedConstraints(c, "audio"), ui.deviceMic.value);
    const video = withDevice(nestedConstraints(c, "video"), ui.device.value);
    return { audio: only === "video" ? false : audio, video: only === "audio" ? false : video };
  }
  let constraints = c.trackConstraints;
  const deviceId = ui.device.value;
  if (deviceId) {
    constraints = Object.assign({}, isObject(constraints) ? constraints : {}, {
      deviceId: { exact: deviceId },
    });
  }
  return c.modality === "audio" ? { audio: constraints, video: false } : { video: constraints, audio: false };
}

function describeMediaError(err, c, what) {
  what = what || kindLabel(c);
  const name = err && err.name;
  const is = what.includes(" and ") ? "are" : "is";
  if (name === "NotAllowedError" || name === "SecurityError")
    return `Permission to use the ${what} was denied. Allow it in the browser and press Start again.`;
  if (name === "NotFoundError") return `No ${what.replace(" and ", " or ")} was found.`;
  if (name === "NotReadableError") return `The ${what} ${is} in use by another application or could not be opened.`;
  if (name === "OverconstrainedError")
    return `The ${what} cannot satisfy track_constraints (constraint: ${err.constraint || "unknown"}).`;
  return `Could not open the ${what}: ${(err && err.message) || err}`;
}

// audio-video: which of the two kinds getUserMedia could not find ("camera",
// "microphone", or both when the device list cannot tell).
async function missingKinds(c) {
  try {
    const devices = await navigator.mediaDevices.enumerateDevices();
    const missing = pickers(c)
      .filter(([, kind]) => !devices.some((d) => d.kind === kind))
      .map(([, , label]) => label);
    return missing.length === 1 ? missing[0] : kindLabel(c);
  } catch (err) {
    return kindLabel(c);
  }
}

// audio-video: the device a constraint that could not be met belongs to.
function constrainedKind(c, constraint) {
  const inKind = (kind) => {
    const constraints = nestedConstraints(c, kind);
    return isObject(constraints) && constraint in constraints;
  };
  if (inKind("video") && !inKind("audio")) return "camera";
  if (inKind("audio") && !inKind("video")) return "microphone";
  return kindLabel(c);
}

async function getLocalMedia(c, only) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new ClientError(
      "Media devices are unavailable: open the page over HTTPS or on localhost.",
      "media_unavailable",
    );
  }
  try {
    return await navigator.mediaDevices.getUserMedia(mediaConstraints(c, only));
  } catch (err) {
    let what = null;
    if (c.modality === "audio-video") {
      if (only) what = only === "audio" ? "microphone" : "camera";
      else if (err && err.name === "NotFoundError") what = await missingKinds(c);
      else if (err && err.name === "OverconstrainedError") what = constrainedKind(c, err.constraint);
    }
    throw new ClientError(describeMediaError(err, c, what), "media_error");
  }
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
    const active = S.localStream && S.localStream.getTracks().find((t) => t.kind + "input" === kind);
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
  if (!S.pc || !S.localStream || S.state !== "streaming") return;
  const session = S.session;
  let stream;
  try {
    stream = await getLocalMedia(c, c.modality === "audio-video" ? kind : undefined);
  } catch (err) {
    showWarning(err.message);
    return;
  }
  if (session !== S.session) {
    stopStream(stream);
    return;
  }
  const track = stream.getTracks()[0];
  const sender = S.pc.getSenders().find((s) => s.track && s.track.kind === track.kind);
  if (sender) await sender.replaceTrack(track);
  if (c.modality === "audio-video") {
    // Only the picked kind is reopened; the other track goes on as it is.
    if (session !== S.session) return track.stop();
    const kept = S.localStream.getTracks().filter((t) => t.kind !== track.kind);
    for (const old of S.localStream.getTracks()) if (old.kind === track.kind) old.stop();
    stream = new MediaStream([...kept, track].sort((a, b) => (a.kind === "audio" ? -1 : b.kind === "audio" ? 1 : 0)));
  } else {
    stopStream(S.localStream);
  }
  S.localStream = stream;
  showLocal(stream, c);
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

function attachRemote(ev, c) {
  if (c.modality === "audio-video") return attachRemoteAudioVideo(ev);
  const stream = ev.streams && ev.streams[0] ? ev.streams[0] : new MediaStream([ev.track]);
  S.remoteStream = stream;
  if (c.modality === "video") {
    ui.remote.srcObject = stream;
    ui.remote.play().catch(() => {});
  } else {
    ui.audio.srcObject = stream;
    ui.audio.volume = 1;
    ui.audio.muted = false;
    ui.audio.play().catch(() => {});
    startMeter(stream, ui.meterOut, "out");
  }
}

// audio-video: both remote tracks go into one MediaStream played by the remote <video>,
// so one element renders the picture and plays the sound (the browser synchronises the
// tracks of the answer's one stream, and one element keeps them in one playout).
function attachRemoteAudioVideo(ev) {
  if (!S.remoteStream) S.remoteStream = new MediaStream();
  const stream = S.remoteStream;
  if (!stream.getTracks().includes(ev.track)) stream.addTrack(ev.track);
  if (ui.remote.srcObject !== stream) ui.remote.srcObject = stream;
  ui.remote.volume = 1;
  ui.remote.muted = false;
  ui.remote.play().catch(() => {});
  if (ev.track.kind === "audio") {
    stopMeters("out");
    startMeter(new MediaStream([ev.track]), ui.meterOut, "out");
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

async function applyRtpParams(pc, rtpParams) {
  if (!rtpParams || !Object.keys(rtpParams).length) return;
  for (const sender of pc.getSenders()) {
    if (!sender.track) continue;
    const params = sender.getParameters();
    const merged = Object.assign({}, params, rtpParams);
    if (Array.isArray(rtpParams.encodings) && Array.isArray(params.encodings)) {
      merged.encodings = params.encodings.map((e, i) => Object.assign({}, e, rtpParams.encodings[i] || {}));
    }
    try {
      await sender.setParameters(merged);
      root.dataset.rtpParams = "applied";
    } catch (err) {
      root.dataset.rtpParams = "failed";
      showWarning(`rtp_params could not be applied: ${err.message}`);
    }
  }
}

// ---------------------------------------------------------------- signalling

class ClientError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

function newWebrtcId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => (b % 36).toString(36)).join("");
}

function waitForIceGathering(pc, relayOnly) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    let budget = null;
    const done = () => {
      clearTimeout(timer);
      clearTimeout(budget);
      pc.removeEventListener("icegatheringstatechange", check);
      pc.removeEventListener("icecandidate", onCandidate);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    // Wait for all candidates, or ICE_GATHERING_BUDGET_MS after the first usable one
    // (what comes later is trickled, see trickle()), never longer than the timeout.
    const onCandidate = (ev) => {
      if (!ev.candidate || budget !== null) return;
      if (relayOnly && ev.candidate.type !== "relay") return;
      budget = setTimeout(done, ICE_GATHERING_BUDGET_MS);
    };
    const timer = setTimeout(done, ICE_GATHERING_TIMEOUT_MS);
    pc.addEventListener("icegatheringstatechange", check);
    pc.addEventListener("icecandidate", onCandidate);
  });
}

// Candidates gathered after the offer left go to the server's ice_candidate function,
// once the answer is in (before that the server has no connection to add them to).
function trickle(session, webrtcId, candidate) {
  const t = S.trickle;
  if (!t || t.session !== session || !t.offerSent || !candidate || !candidate.candidate) return;
  if (t.count >= MAX_TRICKLED_CANDIDATES) return;
  t.count += 1;
  const body = {
    webrtc_id: webrtcId,
    candidate: { candidate: candidate.candidate, sdpMid: candidate.sdpMid, sdpMLineIndex: candidate.sdpMLineIndex },
  };
  if (t.answered) sendCandidate(body);
  else t.queue.push(body);
}

function sendCandidate(body) {
  if (typeof server.ice_candidate !== "function") return;
  Promise.resolve(server.ice_candidate(body)).catch(() => {});
}

function failureMessage(reply) {
  const meta = isObject(reply.meta) ? reply.meta : {};
  const code = typeof meta.error === "string" ? meta.error : "failed";
  let message = typeof meta.message === "string" && meta.message ? meta.message : null;
  if (!message) {
    if (code === "concurrency_limit_reached")
      message = `Too many concurrent connections${meta.limit ? ` (limit ${meta.limit})` : ""}. Try again later.`;
    else if (code === "not_configured") message = "This component has no stream configured on the server.";
    else message = `The server refused the connection (${code}).`;
  }
  return { code, message };
}

async function postOffer(session, body) {
  for (let attempt = 0; ; attempt++) {
    let reply;
    try {
      reply = await server.offer(body);
    } catch (err) {
      reply = undefined;
    }
    if (session !== S.session) return null;
    if (!isObject(reply)) {
      throw new ClientError(
        "The server did not answer the offer (HTTP error or network failure); see the server log.",
        "no_answer",
      );
    }
    if (reply.type === "answer" && typeof reply.sdp === "string") return reply;
    const { code, message } = failureMessage(reply);
    // Right after our own Stop the server may not have freed our previous slot yet.
    if (code === "concurrency_limit_reached" && attempt < LIMIT_RETRIES && Date.now() - S.lastStopAt < LIMIT_RETRY_WINDOW_MS) {
      await sleep(300 * (attempt + 1));
      if (session !== S.session) return null;
      continue;
    }
    throw new ClientError(message, code);
  }
}

// The RTCConfiguration of one connection, from the server (rtc_configuration is a function
// there); null when the session ended meanwhile.
async function fetchRtcConfiguration(session, webrtcId) {
  let reply;
  try {
    reply = await server.rtc_config({ webrtc_id: webrtcId });
  } catch (err) {
    reply = undefined;
  }
  if (session !== S.session) return null;
  if (isObject(reply) && isObject(reply.rtc_configuration)) return reply.rtc_configuration;
  if (!isObject(reply)) {
    throw new ClientError(
      "The server did not send this connection's ICE configuration (HTTP error or network failure); see the server log.",
      "no_rtc_configuration",
    );
  }
  const { code, message } = failureMessage(reply);
  throw new ClientError(message, code);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
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

function onMessage(session, data) {
  if (session !== S.session || typeof data !== "string") return;
  S.messages.push(data);
  if (S.messages.length > 500) S.messages.splice(0, S.messages.length - 500);
  if (data === "tick") return fireTick();
  if (data === "change") return fireStateChange();
  if (data[0] !== "{") return; // e.g. "Server received: handshake" from older servers
  let msg;
  try {
    msg = JSON.parse(data);
  } catch (err) {
    return;
  }
  if (!isObject(msg)) return;
  // webrtc_ref puts the text in "message"; fastrtc-style servers and handlers in "data"
  const body = msg.message !== undefined ? msg.message : msg.data;
  const text = typeof body === "string" ? body : body === undefined ? "" : JSON.stringify(body);
  switch (msg.type) {
    case "error":
      showError(text || "The stream handler reported an error.", "handler_error");
      break;
    case "warning":
      showWarning(text);
      break;
    case "log":
      root.dataset.lastLog = text;
      if (TURN_STATES[text]) setTurn(...TURN_STATES[text]);
      element.dispatchEvent(new CustomEvent("webrtc-log", { detail: msg }));
      break;
    case "end_stream":
      serverEnded(typeof msg.reason === "string" ? msg.reason : "", text);
      break;
    case "send_input": // FastRTC spelling of "tick"
      fireTick();
      break;
    case "fetch_output": // FastRTC spelling of "change"
      fireStateChange();
      break;
    default:
      break;
  }
}

function serverEnded(reason, message) {
  const c = cfg();
  root.dataset.endReason = reason || "unknown";
  switch (reason) {
    case "time_limit":
      return finish("ended", message || `Time limit reached${c.timeLimit ? ` (${c.timeLimit} s)` : ""}.`);
    case "handler_finished":
      return finish("ended", message || "The stream finished.");
    case "handler_closed":
      return finish("ended", message || "The stream was closed by the app.");
    case "server_closed":
      return finish("ended", message || "The server hung up.");
    case "server_shutdown":
      return finish("ended", message || "The server stopped the stream.");
    case "client_closed":
      return finish("ended", message || "Stopped.");
    case "error":
      return finish("error", null, message || S.lastError || "The stream handler failed.", "handler_error");
    case "connect_timeout":
      return finish("error", null, message || "The connection was not established in time (a TURN server may be needed).", "connect_timeout");
    case "ice_failed":
      return finish("error", null, message || "The network connection failed (a TURN server may be needed).", "ice_failed");
    default:
      return finish("ended", message || `The stream ended${reason ? ` (${reason})` : ""}.`);
  }
}

// ---------------------------------------------------------------- lifecycle

function clearTimers() {
  for (const timer of S.timers) clearInterval(timer);
  S.timers = [];
  clearTimeout(S.disconnectTimer);
  S.disconnectTimer = null;
}

// Close everything of the current session synchronously; optionally tell the server.
function teardown(tellServer) {
  S.session += 1;
  clearTimers();
  stopMeters();
  setTurn("");
  const pc = S.pc;
  const dc = S.dc;
  S.pc = null;
  S.dc = null;
  if (dc && tellServer && dc.readyState === "open") {
    try {
      dc.send(JSON.stringify({ type: "stop" }));
    } catch (err) {
      /* closing anyway */
    }
  }
  if (pc) {
    try {
      for (const sender of pc.getSenders()) if (sender.track) sender.track.stop();
    } catch (err) {
      /* closing anyway */
    }
    pc.close();
    S.lastStopAt = Date.now();
  }
  stopStream(S.localStream);
  S.localStream = null;
  S.remoteStream = null;
  S.connectedAt = null;
  ui.local.srcObject = null;
  ui.remote.srcObject = null;
  ui.audio.srcObject = null;
}

function finish(state, text, errorMessage, errorCode) {
  teardown(true);
  if (errorMessage) showError(errorMessage, errorCode);
  setState(state, text || (state === "error" ? "Error." : ""));
}

function stop() {
  teardown(true);
  setState("idle", "Stopped.");
}

function onConnectionState(session, pc) {
  if (session !== S.session) return;
  const state = pc.connectionState;
  root.dataset.connectionState = state;
  if (state === "connected") {
    clearTimeout(S.disconnectTimer);
    S.disconnectTimer = null;
    if (S.state === "connecting") {
      S.connectedAt = Date.now();
      setState("streaming");
      startStreamingTimers(session);
    }
  } else if (state === "disconnected") {
    clearTimeout(S.disconnectTimer);
    S.disconnectTimer = setTimeout(() => {
      if (session === S.session && pc.connectionState === "disconnected") {
        finish("error", null, "The connection to the server was lost.", "disconnected");
      }
    }, DISCONNECT_GRACE_MS);
  } else if (state === "failed") {
    finish("error", null, "The network connection failed (a TURN server may be needed; see rtc_configuration).", "ice_failed");
  } else if (state === "closed") {
    finish("ended", "The connection was closed.");
  }
}

function startStreamingTimers(session) {
  const c = cfg();
  const every = (ms, fn) => S.timers.push(setInterval(() => session === S.session && fn(), ms));
  if (c.modality === "video" && c.sends) every(VIDEO_TICK_MS, fireTick);
  if (c.mode === "receive") every(RECEIVE_TICK_MS, fireTick);
  if (c.timeLimit) {
    const update = () => {
      const elapsed = (Date.now() - S.connectedAt) / 1000;
      const fraction = Math.min(1, elapsed / c.timeLimit);
      ui.timebarFill.style.width = (fraction * 100).toFixed(1) + "%";
      ui.timebarLabel.textContent = Math.max(0, Math.ceil(c.timeLimit - elapsed)) + " s left";
    };
    update();
    every(200, update);
  }
}

async function start() {
  if (S.pc || S.state === "connecting" || S.state === "streaming") teardown(true);
  S.starts.total += 1;
  const session = ++S.session;
  const c = cfg();
  clearError();
  layout();
  const webrtcId = newWebrtcId();
  S.webrtcId = webrtcId;
  root.dataset.webrtcId = webrtcId;
  props.value = webrtcId;
  setState("connecting");
  try {
    if (c.sends) {
      const stream = await getLocalMedia(c);
      if (session !== S.session) return stopStream(stream);
      S.localStream = stream;
      showLocal(stream, c);
      refreshDevices();
    }
    const rtcConfiguration = c.perConnectionRtc ? await fetchRtcConfiguration(session, webrtcId) : c.rtcConfiguration;
    if (session !== S.session) return;
    const pc = new RTCPeerConnection(rtcConfiguration || undefined);
    S.pc = pc;
    const dc = pc.createDataChannel("text");
    S.dc = dc;
    dc.addEventListener("open", () => {
      if (session !== S.session) return;
      dc.send("handshake");
      fireTick();
    });
    dc.addEventListener("message", (ev) => onMessage(session, ev.data));
    dc.addEventListener("close", () => {
      if (session === S.session && (S.state === "streaming" || S.state === "connecting")) {
        finish("ended", "The server closed the stream.");
      }
    });
    pc.addEventListener("track", (ev) => session === S.session && attachRemote(ev, c));
    pc.addEventListener("connectionstatechange", () => onConnectionState(session, pc));
    if (S.localStream && c.modality === "audio-video") {
      // One sendrecv transceiver per kind, audio first, as the server expects.
      for (const kind of ["audio", "video"]) {
        for (const track of S.localStream.getTracks()) if (track.kind === kind) pc.addTrack(track, S.localStream);
      }
    } else if (S.localStream) {
      for (const track of S.localStream.getTracks()) pc.addTrack(track, S.localStream);
    } else if (c.modality === "audio-video") {
      for (const kind of ["audio", "video"]) pc.addTransceiver(kind, { direction: "recvonly" });
    } else {
      pc.addTransceiver(c.modality, { direction: "recvonly" });
    }
    S.trickle = { session, offerSent: false, answered: false, queue: [], count: 0 };
    pc.addEventListener("icecandidate", (ev) => trickle(session, webrtcId, ev.candidate));
    await pc.setLocalDescription(await pc.createOffer());
    const relayOnly = !!(rtcConfiguration && rtcConfiguration.iceTransportPolicy === "relay");
    await waitForIceGathering(pc, relayOnly);
    if (session !== S.session) return;
    const offerSdp = pc.localDescription.sdp;
    S.trickle.offerSent = true; // candidates from now on are not in offerSdp
    const answer = await postOffer(session, {
      sdp: offerSdp,
      type: "offer",
      webrtc_id: webrtcId,
    });
    if (!answer || session !== S.session) return;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    if (session !== S.session) return;
    S.trickle.answered = true;
    for (const body of S.trickle.queue.splice(0)) sendCandidate(body);
    await applyRtpParams(pc, c.rtpParams);
  } catch (err) {
    if (session !== S.session) return;
    const code = err instanceof ClientError ? err.code : "client_error";
    finish("error", null, err instanceof ClientError ? err.message : `WebRTC error: ${err.message || err}`, code);
  }
}

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

window.addEventListener("pagehide", () => {
  if (S.pc) teardown(true);
});
// Gradio may unmount the component (re-render, hidden tab); never leave a peer behind.
const liveness = setInterval(() => {
  if (!element.isConnected) {
    clearInterval(liveness);
    window.removeEventListener(TRIGGER_EVENT, onTriggerEvent);
    if (S.pc) teardown(true);
  }
}, 1000);

const api = {
  get state() {
    return S.state;
  },
  get pc() {
    return S.pc;
  },
  get dc() {
    return S.dc;
  },
  get webrtcId() {
    return S.webrtcId;
  },
  get localStream() {
    return S.localStream;
  },
  get remoteStream() {
    return S.remoteStream;
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
  config: cfg,
  start,
  stop,
  tick: fireTick,
};
element.__webrtc = api;
root.__webrtc = api;

layout();
setState("idle");
refreshDevices();
if (props.value === START_SENTINEL && cfg().mode === "receive") start();
