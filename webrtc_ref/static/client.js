// webrtc_ref browser client: one WebRTC connection to a webrtc_ref stream.
//
// A plain ES module with no dependencies and no build step. Two users:
//   - any page: `import { connect } from "<mount path>/client.js"` (Stream.mount serves this
//     file) and `await connect({ url, mode, modality, ... })`; see docs/stream.md;
//   - the Gradio WebRTC component: its js_on_load script embeds this file (the `export`
//     keywords removed by webrtc_ref.component.client_script) and signals through
//     Gradio's component_server instead of `url` (the `signal` option).
// Only `export function`, `export async function`, `export class` and `export const` at
// the start of a line may export; nothing is imported. The wire protocol is in
// docs/protocol.md (Gradio path) and docs/stream.md (mounted routes).

const ICE_GATHERING_TIMEOUT_MS = 5000;
// The offer leaves this long after the first usable candidate (a relay one under
// iceTransportPolicy "relay"), even if gathering goes on: an unreachable STUN/TURN server
// then costs this, not ICE_GATHERING_TIMEOUT_MS. Later candidates are trickled.
const ICE_GATHERING_BUDGET_MS = 300;
const MAX_TRICKLED_CANDIDATES = 20;
const DISCONNECT_GRACE_MS = 4000;
const LIMIT_RETRY_WINDOW_MS = 3000;
const LIMIT_RETRIES = 3;
// At most this many additional-output values wait for a reader (oldest dropped first).
const MAX_QUEUED_OUTPUTS = 256;

// The states a connection goes through (onState's first argument).
export const STATES = Object.freeze(["connecting", "streaming", "ended", "error", "stopped"]);
export const MODES = Object.freeze(["send-receive", "send", "receive"]);
export const MODALITIES = Object.freeze(["video", "audio", "audio-video"]);

// Every connection this page stopped: right after its own Stop the server may not have
// freed the previous slot yet (see postOffer).
let lastStopAt = 0;

/** An error with one of the client's error codes (`.code`), e.g. "media_error",
 * "no_answer", "concurrency_limit_reached", "ice_failed" (docs/stream.md lists them). */
export class ClientError extends Error {
  constructor(message, code) {
    super(message);
    this.name = "ClientError";
    this.code = code;
  }
}

export function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A random connection id: 16 characters of [0-9a-z]. */
export function newWebrtcId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => (b % 36).toString(36)).join("");
}

/** Whether this page stopped a connection a moment ago, so that a
 * `concurrency_limit_reached` reply may only mean the server has not yet freed its slot
 * (worth retrying, as the offer does). */
export function stoppedRecently() {
  return Date.now() - lastStopAt < LIMIT_RETRY_WINDOW_MS;
}

/** The error code and the message to show for a failure reply `{status: "failed", meta}`. */
export function failureMessage(reply) {
  const meta = isObject(reply) && isObject(reply.meta) ? reply.meta : {};
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

// ---------------------------------------------------------------- local media

/** What a modality captures, in words ("camera", "microphone", "camera and microphone"). */
export function kindLabel(modality) {
  if (modality === "audio-video") return "camera and microphone";
  return modality === "audio" ? "microphone" : "camera";
}

// [enumerateDevices kind, what it is] of each device a modality captures.
function deviceKinds(modality) {
  if (modality === "audio-video") {
    return [
      ["videoinput", "camera"],
      ["audioinput", "microphone"],
    ];
  }
  return modality === "audio" ? [["audioinput", "microphone"]] : [["videoinput", "camera"]];
}

function withDevice(constraints, deviceId) {
  if (!deviceId) return constraints;
  return Object.assign({}, isObject(constraints) ? constraints : {}, { deviceId: { exact: deviceId } });
}

// audio-video: constraints is {audio: ..., video: ...}; a kind it leaves out (or
// constraints true) gets the browser's defaults.
function nestedConstraints(constraints, kind) {
  if (!isObject(constraints) || constraints[kind] === undefined || constraints[kind] === null) return true;
  return constraints[kind];
}

function trackConstraints(constraints) {
  return constraints === undefined || constraints === null ? true : constraints;
}

/** getUserMedia constraints of a modality: `constraints` (true, a MediaTrackConstraints,
 * or {audio, video} for audio-video), the chosen devices, and `only` ("audio" or "video")
 * to ask audio-video for one kind. */
export function mediaConstraints({ modality, constraints, audioDeviceId, videoDeviceId, only }) {
  const tc = trackConstraints(constraints);
  if (modality === "audio-video") {
    const audio = withDevice(nestedConstraints(tc, "audio"), audioDeviceId);
    const video = withDevice(nestedConstraints(tc, "video"), videoDeviceId);
    return { audio: only === "video" ? false : audio, video: only === "audio" ? false : video };
  }
  if (modality === "audio") return { audio: withDevice(tc, audioDeviceId), video: false };
  return { video: withDevice(tc, videoDeviceId), audio: false };
}

/** The message shown when getUserMedia fails with `err` for `what` (a kindLabel). */
export function describeMediaError(err, what) {
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
async function missingKinds(modality) {
  try {
    const devices = await navigator.mediaDevices.enumerateDevices();
    const missing = deviceKinds(modality)
      .filter(([kind]) => !devices.some((d) => d.kind === kind))
      .map(([, label]) => label);
    return missing.length === 1 ? missing[0] : kindLabel(modality);
  } catch (err) {
    return kindLabel(modality);
  }
}

// audio-video: the device a constraint that could not be met belongs to.
function constrainedKind(modality, constraints, constraint) {
  const inKind = (kind) => {
    const c = nestedConstraints(trackConstraints(constraints), kind);
    return isObject(c) && constraint in c;
  };
  if (inKind("video") && !inKind("audio")) return "camera";
  if (inKind("audio") && !inKind("video")) return "microphone";
  return kindLabel(modality);
}

/** Open the devices of a modality (options as mediaConstraints). Rejects with a
 * ClientError: "media_unavailable" (no mediaDevices: not HTTPS or localhost) or
 * "media_error" (denied, missing, busy, overconstrained: the message says which). */
export async function getLocalMedia(options) {
  const modality = options.modality;
  if (typeof navigator === "undefined" || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new ClientError(
      "Media devices are unavailable: open the page over HTTPS or on localhost.",
      "media_unavailable",
    );
  }
  try {
    return await navigator.mediaDevices.getUserMedia(mediaConstraints(options));
  } catch (err) {
    let what = kindLabel(modality);
    if (modality === "audio-video") {
      if (options.only) what = options.only === "audio" ? "microphone" : "camera";
      else if (err && err.name === "NotFoundError") what = await missingKinds(modality);
      else if (err && err.name === "OverconstrainedError") what = constrainedKind(modality, options.constraints, err.constraint);
    }
    throw new ClientError(describeMediaError(err, what), "media_error");
  }
}

function stopStream(stream) {
  if (!stream) return;
  for (const track of stream.getTracks()) track.stop();
}

// ---------------------------------------------------------------- signalling

/** The signalling function of a mounted Stream at `url` (its base, e.g. "" or "/api"):
 * posts offers and trickled candidates to `{url}/webrtc/offer`, returns the JSON reply. */
export function httpSignal(url) {
  const base = routeBase(url);
  return async (body) => {
    const response = await fetch(`${base}/webrtc/offer`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    return response.json();
  };
}

function routeBase(url) {
  if (typeof url !== "string") throw new TypeError(`url must be a string (the Stream's mount path); got ${typeof url}`);
  return url.replace(/\/+$/, "");
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
    // (what comes later is trickled), never longer than the timeout.
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

async function applyRtpParams(pc, rtpParams, onWarning) {
  if (!isObject(rtpParams) || !Object.keys(rtpParams).length) return null;
  let status = null;
  for (const sender of pc.getSenders()) {
    if (!sender.track) continue;
    const params = sender.getParameters();
    const merged = Object.assign({}, params, rtpParams);
    if (Array.isArray(rtpParams.encodings) && Array.isArray(params.encodings)) {
      merged.encodings = params.encodings.map((e, i) => Object.assign({}, e, rtpParams.encodings[i] || {}));
    }
    try {
      await sender.setParameters(merged);
      status = "applied";
    } catch (err) {
      status = "failed";
      onWarning(`rtp_params could not be applied: ${err.message}`);
    }
  }
  return status;
}

// What end_stream's reason means: [state, default text] (the text may name timeLimit).
function endOf(reason, timeLimit) {
  switch (reason) {
    case "time_limit":
      return ["ended", `Time limit reached${timeLimit ? ` (${timeLimit} s)` : ""}.`];
    case "handler_finished":
      return ["ended", "The stream finished."];
    case "handler_closed":
      return ["ended", "The stream was closed by the app."];
    case "server_closed":
      return ["ended", "The server hung up."];
    case "server_shutdown":
      return ["ended", "The server stopped the stream."];
    case "server_draining":
      return ["ended", "This server is restarting: the stream was ended. Press Start again to continue."];
    case "client_closed":
      return ["ended", "Stopped."];
    case "error":
      return ["error", "The stream handler failed.", "handler_error"];
    case "connect_timeout":
      return ["error", "The connection was not established in time (a TURN server may be needed).", "connect_timeout"];
    case "ice_failed":
      return ["error", "The network connection failed (a TURN server may be needed).", "ice_failed"];
    default:
      return ["ended", `The stream ended${reason ? ` (${reason})` : ""}.`];
  }
}

function checkOptions(options) {
  if (!isObject(options)) throw new TypeError("connect() takes one options object");
  const { url, signal, mode, modality } = options;
  if ((url === undefined || url === null) === (typeof signal !== "function")) {
    throw new TypeError("give connect() exactly one of url (a mounted Stream's path) and signal (a function)");
  }
  if (url !== undefined && url !== null) routeBase(url);
  if (mode !== undefined && !MODES.includes(mode)) throw new TypeError(`mode must be one of ${MODES.join(", ")}; got ${mode}`);
  if (modality !== undefined && !MODALITIES.includes(modality)) {
    throw new TypeError(`modality must be one of ${MODALITIES.join(", ")}; got ${modality}`);
  }
  if (modality === "audio-video" && mode !== undefined && mode !== "send-receive") {
    throw new TypeError('modality "audio-video" is send-receive only');
  }
  if (options.webrtcId !== undefined && !/^[A-Za-z0-9_-]{1,128}$/.test(options.webrtcId)) {
    throw new TypeError("webrtcId must be 1-128 letters, digits, '-' or '_'");
  }
  if (options.inputs !== undefined && !Array.isArray(options.inputs)) throw new TypeError("inputs must be an array");
  const rtc = options.rtcConfiguration;
  if (rtc !== undefined && rtc !== null && !isObject(rtc) && typeof rtc !== "function") {
    throw new TypeError("rtcConfiguration must be an RTCConfiguration object or a function returning one");
  }
  for (const [key, value] of Object.entries(options)) {
    if (/^on[A-Z]/.test(key) && value !== undefined && value !== null && typeof value !== "function") {
      throw new TypeError(`${key} must be a function`);
    }
  }
}

// ---------------------------------------------------------------- the connection

/** One connection to a stream; starts at once (see connect() for the options).
 *
 * Properties: state (one of STATES), webrtcId, token (mounted routes, once answered),
 * pc, dc, localStream, remoteStream, lastError, connectedAt, outputsDropped, ready (a
 * Promise: resolves with this once the answer is applied, rejects with a ClientError if
 * the connection fails before), outputs (an async iterator of AdditionalOutputs values,
 * each an array; mounted routes only).
 * Methods: stop(), setInput(...args), replaceLocalStream(stream). */
export class Connection {
  constructor(options) {
    checkOptions(options);
    this.options = options;
    this.mode = options.mode || "send-receive";
    this.modality = options.modality || "video";
    this.sends = this.mode !== "receive";
    this.receives = this.mode !== "send";
    this.base = options.url !== undefined && options.url !== null ? routeBase(options.url) : null;
    this.signal = this.base !== null ? httpSignal(this.base) : options.signal;
    this.webrtcId = options.webrtcId || newWebrtcId();
    this.state = "connecting";
    this.token = null;
    this.pc = null;
    this.dc = null;
    this.localStream = null;
    this.remoteStream = null;
    this.lastError = null;
    this.connectedAt = null;
    this.rtpParams = null;
    this.outputsDropped = 0;
    this._ownsLocal = !options.localStream;
    this._closed = false;
    this._disconnectTimer = null;
    this._trickle = { offerSent: false, answered: false, queue: [], count: 0 };
    this._inputs = Array.isArray(options.inputs) ? options.inputs.slice() : null;
    this._inputVersion = this._inputs ? 1 : 0;
    this._inputSent = 0;
    this._inputChain = Promise.resolve();
    this._events = null;
    this._outputQueue = [];
    this._outputWaiters = [];
    this._outputsDone = false;
    const self = this;
    this.outputs = {
      [Symbol.asyncIterator]() {
        return { next: () => self._nextOutput(), return: async () => ({ done: true, value: undefined }) };
      },
    };
    this._emit("onState", "connecting", {}, this);
    // Started after the constructor returns: callbacks never see a half-made object.
    this.ready = Promise.resolve().then(() => this._run());
    this.ready.catch(() => {});
  }

  _emit(name, ...args) {
    const fn = this.options[name];
    if (typeof fn !== "function") return undefined;
    try {
      return fn(...args);
    } catch (err) {
      console.error(`webrtc_ref client: ${name} threw`, err);
      return undefined;
    }
  }

  async _run() {
    const o = this.options;
    try {
      if (this.sends) {
        const stream = o.localStream || (await getLocalMedia({ ...o, modality: this.modality }));
        if (this._closed) {
          if (this._ownsLocal) stopStream(stream);
          throw new ClientError("Stopped.", "stopped");
        }
        this.localStream = stream;
        this._emit("onLocalStream", stream);
      }
      let rtcConfiguration = o.rtcConfiguration || null;
      if (typeof rtcConfiguration === "function") rtcConfiguration = await rtcConfiguration(this.webrtcId);
      this._check();
      const pc = new RTCPeerConnection(rtcConfiguration || undefined);
      this.pc = pc;
      const dc = pc.createDataChannel("text");
      this.dc = dc;
      dc.addEventListener("open", () => {
        if (this._closed) return;
        dc.send("handshake");
        this._tick();
      });
      dc.addEventListener("message", (ev) => this._onMessage(ev.data));
      dc.addEventListener("close", () => {
        if (!this._closed) this._finish("ended", { text: "The server closed the stream." });
      });
      pc.addEventListener("track", (ev) => !this._closed && this._onTrack(ev));
      pc.addEventListener("connectionstatechange", () => this._onConnectionState());
      if (this.localStream && this.modality === "audio-video") {
        // One sendrecv transceiver per kind, audio first, as the server expects.
        for (const kind of ["audio", "video"]) {
          for (const track of this.localStream.getTracks()) if (track.kind === kind) pc.addTrack(track, this.localStream);
        }
      } else if (this.localStream) {
        for (const track of this.localStream.getTracks()) pc.addTrack(track, this.localStream);
      } else if (this.modality === "audio-video") {
        for (const kind of ["audio", "video"]) pc.addTransceiver(kind, { direction: "recvonly" });
      } else {
        pc.addTransceiver(this.modality, { direction: "recvonly" });
      }
      pc.addEventListener("icecandidate", (ev) => this._trickleCandidate(ev.candidate));
      await pc.setLocalDescription(await pc.createOffer());
      const relayOnly = !!(rtcConfiguration && rtcConfiguration.iceTransportPolicy === "relay");
      await waitForIceGathering(pc, relayOnly);
      this._check();
      this._trickle.offerSent = true; // candidates from now on are not in the offer
      const answer = await this._postOffer({ sdp: pc.localDescription.sdp, type: "offer", webrtc_id: this.webrtcId });
      if (typeof answer.token === "string") this.token = answer.token;
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
      this._check();
      this._trickle.answered = true;
      for (const body of this._trickle.queue.splice(0)) this._sendCandidate(body);
      this.rtpParams = await applyRtpParams(pc, o.rtpParams, (text) => this._emit("onWarning", text));
      this._check();
      if (this.base !== null) {
        if (o.outputs !== false) this._openOutputs();
        if (this._inputVersion > this._inputSent) this._sendInputs();
      }
      return this;
    } catch (err) {
      if (this._closed) throw err instanceof ClientError ? err : new ClientError("Stopped.", "stopped");
      const error =
        err instanceof ClientError ? err : new ClientError(`WebRTC error: ${(err && err.message) || err}`, "client_error");
      this._finish("error", { code: error.code, message: error.message });
      throw error;
    }
  }

  _check() {
    if (this._closed) throw new ClientError(this.state === "stopped" ? "Stopped." : "The connection ended.", this.state);
  }

  async _postOffer(body) {
    for (let attempt = 0; ; attempt++) {
      let reply;
      try {
        reply = await this.signal(body);
      } catch (err) {
        reply = undefined;
      }
      this._check();
      if (!isObject(reply)) {
        throw new ClientError(
          "The server did not answer the offer (HTTP error or network failure); see the server log.",
          "no_answer",
        );
      }
      if (reply.type === "answer" && typeof reply.sdp === "string") return reply;
      const { code, message } = failureMessage(reply);
      // Right after our own Stop the server may not have freed our previous slot yet.
      if (code === "concurrency_limit_reached" && attempt < LIMIT_RETRIES && stoppedRecently()) {
        await sleep(300 * (attempt + 1));
        this._check();
        continue;
      }
      // Rate limited: retry after the server's retry_after (at most 5 s).
      if (code === "too_many_requests" && attempt < LIMIT_RETRIES) {
        const after = Number(reply.meta && reply.meta.retry_after) || 0.5 * 2 ** attempt;
        await sleep(Math.min(5, Math.max(0.2, after)) * 1000);
        this._check();
        continue;
      }
      throw new ClientError(message, code);
    }
  }

  // Candidates gathered after the offer left are trickled once the answer is in (before
  // that the server has no connection to add them to).
  _trickleCandidate(candidate) {
    const t = this._trickle;
    if (this._closed || !t.offerSent || !candidate || !candidate.candidate) return;
    if (t.count >= MAX_TRICKLED_CANDIDATES) return;
    t.count += 1;
    const body = {
      type: "ice-candidate",
      webrtc_id: this.webrtcId,
      candidate: { candidate: candidate.candidate, sdpMid: candidate.sdpMid, sdpMLineIndex: candidate.sdpMLineIndex },
    };
    if (t.answered) this._sendCandidate(body);
    else t.queue.push(body);
  }

  _sendCandidate(body) {
    if (this.token) body.token = this.token;
    Promise.resolve()
      .then(() => this.signal(body))
      .catch(() => {});
  }

  _onTrack(ev) {
    if (this.modality === "audio-video") {
      // Both remote tracks go into one MediaStream, so that one element renders the
      // picture and plays the sound in one playout.
      if (!this.remoteStream) this.remoteStream = new MediaStream();
      if (!this.remoteStream.getTracks().includes(ev.track)) this.remoteStream.addTrack(ev.track);
    } else {
      this.remoteStream = ev.streams && ev.streams[0] ? ev.streams[0] : new MediaStream([ev.track]);
    }
    this._emit("onTrack", ev.track, this.remoteStream);
  }

  _onConnectionState() {
    const pc = this.pc;
    if (this._closed || !pc) return;
    const state = pc.connectionState;
    this._emit("onConnectionState", state);
    if (state === "connected") {
      clearTimeout(this._disconnectTimer);
      this._disconnectTimer = null;
      if (this.state === "connecting") {
        this.connectedAt = Date.now();
        this.state = "streaming";
        this._emit("onState", "streaming", {}, this);
      }
    } else if (state === "disconnected") {
      clearTimeout(this._disconnectTimer);
      this._disconnectTimer = setTimeout(() => {
        if (!this._closed && pc.connectionState === "disconnected") {
          this._finish("error", { code: "disconnected", message: "The connection to the server was lost." });
        }
      }, DISCONNECT_GRACE_MS);
    } else if (state === "failed") {
      this._finish("error", {
        code: "ice_failed",
        message: "The network connection failed (a TURN server may be needed; see rtc_configuration).",
      });
    } else if (state === "closed") {
      this._finish("ended", { text: "The connection was closed." });
    }
  }

  _tick() {
    if (this._closed) return;
    if (this.base !== null && this._inputs) {
      this._inputSent = Math.min(this._inputSent, this._inputVersion - 1); // resend the latest
      this._sendInputs();
    }
    this._emit("onTick");
  }

  _onMessage(data) {
    if (this._closed || typeof data !== "string") return;
    let msg = null;
    if (data[0] === "{") {
      try {
        msg = JSON.parse(data);
      } catch (err) {
        msg = null;
      }
      if (!isObject(msg)) msg = null;
    }
    this._emit("onMessage", data, msg);
    if (data === "tick") return this._tick();
    if (data === "change") return this._emit("onChange");
    if (!msg) return; // e.g. "Server received: handshake" from older servers
    // webrtc_ref puts the text in "message"; fastrtc-style servers and handlers in "data"
    const body = msg.message !== undefined ? msg.message : msg.data;
    const text = typeof body === "string" ? body : body === undefined ? "" : JSON.stringify(body);
    switch (msg.type) {
      case "error":
        this.lastError = text || "The stream handler reported an error.";
        this._emit("onError", this.lastError, "handler_error");
        break;
      case "warning":
        this._emit("onWarning", text);
        break;
      case "log":
        this._emit("onLog", text, msg);
        break;
      case "end_stream": {
        const reason = typeof msg.reason === "string" ? msg.reason : "";
        const [state, fallback, code] = endOf(reason, this.options.timeLimit);
        const info = { reason: reason || "unknown" };
        if (state === "error") {
          info.code = code;
          info.message = text || (reason === "error" && this.lastError) || fallback;
        } else {
          info.text = text || fallback;
        }
        this._finish(state, info);
        break;
      }
      case "send_input": // fastrtc's spelling of "tick"
        this._tick();
        break;
      case "fetch_output": // fastrtc's spelling of "change"
        this._emit("onChange");
        break;
      default:
        break;
    }
  }

  // ------------------------------------------------------------ inputs and outputs

  /** Give the stream's handler new values of its additional inputs (one per input; the
   * handler sees them from its next call). Mounted routes only; resolves once the server
   * took them (sent after the answer when called earlier), rejects with a ClientError
   * ("invalid_input", "unknown_connection", "no_answer") when it refused them. */
  setInput(...args) {
    if (this.base === null) {
      return Promise.reject(new ClientError("setInput needs a connection made with url (a mounted Stream)", "invalid_input"));
    }
    if (this._closed) return Promise.reject(new ClientError("The connection has ended.", "unknown_connection"));
    this._inputs = args;
    this._inputVersion += 1;
    if (!this.token) return Promise.resolve();
    return this._sendInputs();
  }

  // One request at a time, always with the latest values; older values never overtake.
  _sendInputs() {
    const run = async () => {
      if (this._closed || !this.token || this._inputSent >= this._inputVersion) return;
      const version = this._inputVersion;
      const inputs = this._inputs;
      let reply;
      try {
        const response = await fetch(`${this.base}/webrtc/input`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ webrtc_id: this.webrtcId, token: this.token, inputs }),
        });
        reply = await response.json();
      } catch (err) {
        throw new ClientError(`The server did not take the inputs: ${(err && err.message) || err}`, "no_answer");
      }
      if (!isObject(reply) || reply.status !== "ok") {
        const { code, message } = failureMessage(reply);
        throw new ClientError(message, code);
      }
      this._inputSent = Math.max(this._inputSent, version);
    };
    const next = this._inputChain.then(run, run);
    this._inputChain = next.catch(() => {});
    return next;
  }

  _openOutputs() {
    if (typeof EventSource === "undefined" || this._events) return;
    const query = new URLSearchParams({ webrtc_id: this.webrtcId, token: this.token || "" });
    const events = new EventSource(`${this.base}/webrtc/outputs?${query}`);
    this._events = events;
    events.addEventListener("message", (ev) => {
      let values;
      try {
        values = JSON.parse(ev.data);
      } catch (err) {
        return;
      }
      if (!Array.isArray(values)) values = [values];
      this._emit("onOutputs", values);
      this._pushOutput(values);
    });
    events.addEventListener("end", () => this._closeOutputs());
    events.addEventListener("error", () => {
      if (events.readyState === EventSource.CLOSED) this._closeOutputs();
    });
  }

  _pushOutput(values) {
    const waiter = this._outputWaiters.shift();
    if (waiter) return waiter({ done: false, value: values });
    this._outputQueue.push(values);
    if (this._outputQueue.length > MAX_QUEUED_OUTPUTS) {
      this._outputQueue.shift();
      this.outputsDropped += 1;
    }
  }

  _nextOutput() {
    if (this._outputQueue.length) return Promise.resolve({ done: false, value: this._outputQueue.shift() });
    if (this._outputsDone || this.base === null) return Promise.resolve({ done: true, value: undefined });
    if (this._outputWaiters.length >= MAX_QUEUED_OUTPUTS) {
      return Promise.reject(new ClientError("too many readers of outputs", "client_error"));
    }
    return new Promise((resolve) => this._outputWaiters.push(resolve));
  }

  _closeOutputs() {
    if (this._events) this._events.close();
    this._events = null;
    this._outputsDone = true;
    for (const waiter of this._outputWaiters.splice(0)) waiter({ done: true, value: undefined });
  }

  // ------------------------------------------------------------ devices and endings

  /** Send `stream`'s first track instead of the current local track of its kind (a
   * device change while streaming); the replaced track is stopped. False if the
   * connection ended meanwhile (the new track is then stopped). */
  async replaceLocalStream(stream) {
    const track = stream.getTracks()[0];
    if (this._closed || !this.pc || !this.localStream || !track) {
      stopStream(stream);
      return false;
    }
    const sender = this.pc.getSenders().find((s) => s.track && s.track.kind === track.kind);
    if (sender) await sender.replaceTrack(track);
    if (this._closed) {
      stopStream(stream);
      return false;
    }
    if (this.modality === "audio-video") {
      // Only the picked kind is replaced; the other track goes on as it is.
      const kept = this.localStream.getTracks().filter((t) => t.kind !== track.kind);
      for (const old of this.localStream.getTracks()) if (old.kind === track.kind) old.stop();
      const sorted = [...kept, track].sort((a, b) => (a.kind === "audio" ? -1 : b.kind === "audio" ? 1 : 0));
      this.localStream = new MediaStream(sorted);
    } else {
      stopStream(this.localStream);
      this.localStream = stream;
    }
    this._ownsLocal = true;
    return true;
  }

  // Close everything synchronously; tell the server when the data channel is open.
  _close() {
    if (this._closed) return false;
    this._closed = true;
    clearTimeout(this._disconnectTimer);
    this._disconnectTimer = null;
    const pc = this.pc;
    const dc = this.dc;
    if (dc && dc.readyState === "open") {
      try {
        dc.send(JSON.stringify({ type: "stop" }));
      } catch (err) {
        /* closing anyway */
      }
    }
    if (pc) {
      try {
        for (const sender of pc.getSenders()) if (sender.track && this._ownsLocal) sender.track.stop();
      } catch (err) {
        /* closing anyway */
      }
      pc.close();
      lastStopAt = Date.now();
    }
    if (this._ownsLocal) stopStream(this.localStream);
    this._closeOutputs();
    return true;
  }

  _finish(state, info) {
    if (!this._close()) return;
    this.state = state;
    this._emit("onState", state, info, this);
  }

  /** Stop the connection (the server is told when the data channel is open); state
   * "stopped". Idempotent; a connection that already ended stays as it ended. */
  stop() {
    this._finish("stopped", { text: "Stopped." });
  }
}

/** Connect to a stream. Options:
 *   url: the base of a mounted Stream ("" or "/api": its /webrtc/offer, /webrtc/input and
 *     /webrtc/outputs routes), or signal: `async (body) => reply` (how the Gradio
 *     component reaches component_server); exactly one of the two.
 *   mode ("send-receive" | "send" | "receive"), modality ("video" | "audio" | "audio-video").
 *   constraints: getUserMedia track constraints (audio-video: {audio, video});
 *     audioDeviceId, videoDeviceId: the devices to open; localStream: send this
 *     MediaStream instead (it stays the caller's: never stopped by the client).
 *   rtcConfiguration: an RTCConfiguration, or `async (webrtcId) => RTCConfiguration`.
 *   rtpParams: RTCRtpSendParameters merged into each sender's; webrtcId; timeLimit (s,
 *     for the end message); inputs: the additional inputs' first values (an array);
 *     outputs: false to not open the output stream.
 *   Callbacks: onState(state, {text, reason, code, message}, connection) (the first call,
 *     "connecting", comes before connect() returns: keep `connection` to stop it early),
 *     onTrack(track, remoteStream),
 *     onLocalStream(stream), onConnectionState(pcState), onMessage(data, parsedOrNull),
 *     onTick(), onChange(), onError(message, code) (the handler reported an error; the
 *     stream goes on), onWarning(message), onLog(text, message), onOutputs(values).
 * Resolves with the Connection once the server's answer is applied; rejects with a
 * ClientError (its `.code`) when the connection fails before that, or a TypeError for bad
 * options. */
export async function connect(options) {
  const connection = new Connection(options);
  return connection.ready;
}
