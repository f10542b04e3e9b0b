// Instrumentation for the browser tests, installed in every page with
// BrowserContext.add_init_script before Gradio's scripts run.
//
// For every `.webrtc-ref` element it records one "session" per connection attempt (a
// `data-state` change to "connecting"), with performance.now() timestamps:
//   startedAt     the trusted click that started it (Start, or a trigger button), else connectingAt
//   connectingAt  data-state "connecting"
//   connectedAt   data-state "streaming" (RTCPeerConnection connected)
//   firstRtpAt    first getStats() inbound-rtp with packetsReceived > 0 (polled every 20 ms)
//   firstFrameAt  first remote video frame presented (requestVideoFrameCallback)
//   firstAudioAt  first audible remote audio block (peak > AUDIBLE) through the audio tap
//   endedAt       data-state "ended" / "error" / "idle" (with endReason, errorCode, texts)
// Video sessions count presented frames and, on request (`root.__probe.capture`), keep the
// grey level of each presented frame for the test to decode. Audio sessions record the
// local (sent) and remote (received) tracks, sample-aligned, through one AudioWorklet.
(() => {
  if (window.__probe) return;
  const AUDIBLE = 0.01;
  const MAX_AUDIO_SECONDS = 60;
  const RATE = 48000;
  const now = () => performance.now();
  const probe = { lastClickAt: null, roots: [] };
  window.__probe = probe;

  document.addEventListener(
    "click",
    (ev) => {
      if (ev.isTrusted) probe.lastClickAt = now();
    },
    true,
  );

  function recordOf(root) {
    if (!root.__probe) {
      root.__probe = { sessions: [], capture: null };
      probe.roots.push(root);
    }
    return root.__probe;
  }

  function onState(root) {
    const rec = recordOf(root);
    const state = root.dataset.state;
    const t = now();
    let s = rec.sessions[rec.sessions.length - 1];
    if (state === "connecting") {
      if (s && s.active && s.webrtcId === root.dataset.webrtcId) return;
      if (s && s.active) closeSession(root, s, "replaced", t);
      const click = probe.lastClickAt;
      const fresh = click !== null && t - click < 5000 && (!s || click > s.connectingAt);
      s = {
        index: rec.sessions.length,
        webrtcId: root.dataset.webrtcId || null,
        mode: root.dataset.mode || null,
        modality: root.dataset.modality || null,
        active: true,
        startedAt: fresh ? click : t,
        connectingAt: t,
        connectedAt: null,
        firstRtpAt: null,
        firstFrameAt: null,
        lastFrameAt: null,
        firstAudioAt: null,
        endedAt: null,
        endState: null,
        endReason: null,
        errorCode: null,
        errorText: null,
        statusText: null,
        states: [["connecting", t]],
        frames: 0,
        video: null,
      };
      rec.sessions.push(s);
      watchMedia(root, rec, s);
    } else if (s && s.active) {
      s.states.push([state, t]);
      if (state === "streaming" && s.connectedAt === null) s.connectedAt = t;
      if (state === "ended" || state === "error" || state === "idle") closeSession(root, s, state, t);
    }
  }

  function closeSession(root, s, state, t) {
    s.active = false;
    s.endedAt = t;
    s.endState = state;
    s.endReason = root.dataset.endReason || null;
    s.errorCode = root.dataset.errorCode || null;
    const error = root.querySelector(".wr-error");
    const status = root.querySelector(".wr-status");
    s.errorText = error && !error.hidden ? error.textContent : null;
    s.statusText = status ? status.textContent : null;
    if (s.tap) stopTap(s.tap);
  }

  function watchMedia(root, rec, s) {
    const api = () => root.__webrtc;
    const poll = setInterval(async () => {
      if (!s.active || s.firstRtpAt !== null) return clearInterval(poll);
      const pc = api() && api().pc;
      if (!pc) return;
      try {
        const stats = await pc.getStats();
        stats.forEach((r) => {
          if (r.type === "inbound-rtp" && r.packetsReceived > 0 && s.firstRtpAt === null) s.firstRtpAt = now();
        });
      } catch (err) {
        /* closed meanwhile */
      }
    }, 20);
    // Audio: get the recorder ready now, so that it hears the first received sample.
    // audio-video sessions get both: the frame watcher and the audio tap.
    const av = s.modality === "audio-video";
    if (s.modality === "audio" || av) s.tap = makeTap(s);
    let videoWatched = false;
    const wait = setInterval(() => {
      const w = api();
      if (!s.active || !w) return s.active ? undefined : clearInterval(wait);
      if (s.modality === "video") {
        if (w.remoteStream) {
          clearInterval(wait);
          watchVideo(root, rec, s);
        }
        return;
      }
      if (av && !videoWatched && w.remoteStream && w.remoteStream.getVideoTracks().length) {
        videoWatched = true;
        watchVideo(root, rec, s);
      }
      const hasAudio = (stream) => stream && (!av || stream.getAudioTracks().length > 0);
      if (!s.tap.local && hasAudio(w.localStream)) s.tap.local = connect(s.tap, w.localStream, 0);
      if (!s.tap.remote && hasAudio(w.remoteStream)) s.tap.remote = connect(s.tap, w.remoteStream, 1);
      const needsLocal = s.mode !== "receive";
      const needsRemote = s.mode !== "send";
      if ((!needsLocal || s.tap.local) && (!needsRemote || s.tap.remote) && (!av || videoWatched)) clearInterval(wait);
    }, 5);
  }

  function watchVideo(root, rec, s) {
    const video = root.querySelector(".wr-remote");
    const canvas = document.createElement("canvas");
    const g = canvas.getContext("2d", { willReadFrequently: true });
    s.video = { presented: 0, width: 0, height: 0 };
    const onFrame = (_, meta) => {
      if (!s.active) return;
      const at = now();
      if (s.firstFrameAt === null) s.firstFrameAt = at;
      s.lastFrameAt = at;
      s.frames += 1;
      s.video = { presented: meta.presentedFrames, width: meta.width, height: meta.height };
      const cap = rec.capture;
      if (cap && cap.frames.length < cap.max) {
        const w = meta.width;
        const h = meta.height;
        canvas.width = w;
        canvas.height = h;
        g.drawImage(video, 0, 0, w, h);
        const d = g.getImageData(0, 0, w, h).data;
        const grey = new Uint8Array(w * h);
        for (let i = 0, j = 0; j < grey.length; i += 4, j++) grey[j] = (d[i] + d[i + 1] + d[i + 2]) / 3;
        cap.frames.push({ at, presented: meta.presentedFrames, width: w, height: h, grey });
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  // The tap runs on the audio rendering thread (an AudioWorklet), so a busy page never
  // loses samples; it posts 1024-sample blocks (local, remote interleaved as int16).
  const TAP_WORKLET = `
    class ProbeTap extends AudioWorkletProcessor {
      constructor() { super(); this.buf = new Int16Array(2048); this.n = 0; }
      process(inputs) {
        const input = inputs[0] || [];
        const a = input[0], b = input[1];
        const len = a ? a.length : 128;
        const q = (v) => Math.max(-32768, Math.min(32767, Math.round(v * 32767)));
        for (let i = 0; i < len; i++) {
          this.buf[2 * this.n] = a ? q(a[i]) : 0;
          this.buf[2 * this.n + 1] = b ? q(b[i]) : 0;
          if (++this.n === 1024) {
            this.port.postMessage({ end: currentTime, data: this.buf }, [this.buf.buffer]);
            this.buf = new Int16Array(2048);
            this.n = 0;
          }
        }
        return true;
      }
    }
    registerProcessor("probe-tap", ProbeTap);`;
  let tapModule = null;

  function makeTap(s) {
    const ctx = new AudioContext({ sampleRate: RATE });
    const merger = ctx.createChannelMerger(2);
    const tap = { ctx, merger, node: null, chunks: [], blockAt: [], samples: 0, rate: ctx.sampleRate, local: null, remote: null };
    if (!tapModule) tapModule = URL.createObjectURL(new Blob([TAP_WORKLET], { type: "application/javascript" }));
    tap.ready = ctx.audioWorklet.addModule(tapModule).then(() => {
      const node = new AudioWorkletNode(ctx, "probe-tap", {
        numberOfInputs: 1,
        numberOfOutputs: 1,
        outputChannelCount: [1],
        channelCount: 2,
        channelCountMode: "explicit",
        channelInterpretation: "discrete",
      });
      const sink = ctx.createGain();
      sink.gain.value = 0;
      merger.connect(node);
      node.connect(sink);
      sink.connect(ctx.destination);
      tap.node = node;
      node.port.onmessage = (ev) => {
        const out = ev.data.data;
        const n = out.length / 2;
        // performance.now() of the block's last sample, from the audio clock.
        const end = now() - (ctx.currentTime - ev.data.end) * 1000;
        if (tap.samples < MAX_AUDIO_SECONDS * tap.rate) {
          tap.chunks.push(out);
          tap.blockAt.push(end);
          if (tap.remote && s.firstAudioAt === null) {
            for (let i = 0; i < n; i++) {
              if (Math.abs(out[2 * i + 1]) > AUDIBLE * 32767) {
                s.firstAudioAt = end - ((n - 1 - i) / tap.rate) * 1000;
                break;
              }
            }
          }
        }
        tap.samples += n;
      };
    });
    ctx.resume().catch(() => {});
    return tap;
  }

  function connect(tap, stream, channel) {
    const link = { at: now(), sample: null };
    tap.ready.then(() => {
      tap.ctx.createMediaStreamSource(stream).connect(tap.merger, 0, channel);
      link.at = now();
      link.sample = tap.samples;
    });
    return link;
  }

  function stopTap(tap) {
    try {
      if (tap.node) tap.node.port.onmessage = null;
      tap.ctx.close();
    } catch (err) {
      /* already closed */
    }
  }

  // Data-state changes of any .webrtc-ref element, wherever and whenever Gradio mounts it.
  const observer = new MutationObserver((mutations) => {
    for (const m of mutations) {
      if (m.target.classList && m.target.classList.contains("webrtc-ref")) onState(m.target);
    }
  });
  observer.observe(document, { subtree: true, attributes: true, attributeFilter: ["data-state"] });

  // Helpers the tests call through page.evaluate.
  const b64 = (bytes) => {
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(s);
  };
  probe.sessions = (root) => (root.__probe ? root.__probe.sessions.map(({ tap, ...rest }) => rest) : []);
  probe.audio = (root, index) => {
    const sessions = root.__probe ? root.__probe.sessions : [];
    const s = sessions[index < 0 ? sessions.length + index : index];
    if (!s || !s.tap) return null;
    const tap = s.tap;
    let n = 0;
    for (const c of tap.chunks) n += c.length;
    const all = new Int16Array(n);
    let o = 0;
    for (const c of tap.chunks) {
      all.set(c, o);
      o += c.length;
    }
    return {
      rate: tap.rate,
      block: tap.chunks.length ? tap.chunks[0].length / 2 : 1024,
      blockAt: tap.blockAt,
      local: tap.local && { at: tap.local.at, sample: tap.local.sample },
      remote: tap.remote && { at: tap.remote.at, sample: tap.remote.sample },
      data: b64(new Uint8Array(all.buffer)),
    };
  };
  probe.grab = (root) => {
    const video = root.querySelector(".wr-remote");
    const w = video.videoWidth;
    const h = video.videoHeight;
    if (!w || !h) return null;
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    const g = canvas.getContext("2d", { willReadFrequently: true });
    g.drawImage(video, 0, 0, w, h);
    const d = g.getImageData(0, 0, w, h).data;
    const rgb = new Uint8Array(w * h * 3);
    for (let i = 0, j = 0; i < d.length; i += 4) {
      rgb[j++] = d[i];
      rgb[j++] = d[i + 1];
      rgb[j++] = d[i + 2];
    }
    return { width: w, height: h, at: now(), data: b64(rgb) };
  };
  probe.startCapture = (root, max) => {
    recordOf(root).capture = { max, frames: [] };
  };
  probe.takeCapture = (root) => {
    const cap = recordOf(root).capture;
    recordOf(root).capture = null;
    if (!cap) return [];
    return cap.frames.map((f) => ({ at: f.at, presented: f.presented, width: f.width, height: f.height, data: b64(f.grey) }));
  };
})();
