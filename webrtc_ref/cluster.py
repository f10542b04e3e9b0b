"""Identical replicas of one app behind HAProxy, on one machine, for trying and testing a
deployment that serves more users than one process holds.

A *replica* is exactly the single-process quick start: one Gradio app in one Python
process, owning its peer connections. Every HTTP request of a browser (the page,
``/config``, the queue and its server-sent events, ``component_server``, uploads) must reach
the replica that answered its offer, so HAProxy pins each browser to one replica with a
cookie it inserts (``cookie webrtc_ref_replica insert indirect nocache``); a cookie naming a
replica that is down is not honoured (``option redispatch``: the browser lands on a
survivor). Media never passes through HAProxy: the answer carries the replica's own
candidates.

- :func:`haproxy_config`: the configuration, as docs/deployment.md shows it.
- :class:`Cluster`: starts N replicas (``python -m webrtc_ref.cluster``), HAProxy and
  (``turn=True``) a coturn on 127.0.0.1, waits until each answers, stops everything it
  started (by pid) on exit.
- Media through coturn (``turn=True``): coturn takes TURN REST credentials
  (``use-auth-secret``) made with a secret drawn at random for the run; each replica gets
  the secret and coturn's URL in ``WEBRTC_REF_TURN_SECRET`` / ``WEBRTC_REF_TURN_URLS``
  (the environment, never a command line) and gives every WebRTC component of its app
  that has no ``rtc_configuration`` of its own a per-connection one
  (:func:`relay_through_turn`): relay-only for the browser, with credentials minted for
  that connection. The secret never reaches a browser.
- ``python -m webrtc_ref.cluster --app APP --name NAME --port PORT``: one replica; ``APP``
  is a demo name (``webrtc-ref demo --list``) or ``module:function`` returning a
  ``gr.Blocks``. The replica's name is in ``WEBRTC_REF_REPLICA`` for the app to read.

``webrtc-ref cluster`` (``webrtc_ref.cli``) runs a :class:`Cluster` until Ctrl-C.
Nothing here runs at import time.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from webrtc_ref.testing import Coturn

#: The cookie HAProxy inserts to pin a browser to its replica.
COOKIE = "webrtc_ref_replica"
#: Environment variable holding a replica's name, for the app to read.
REPLICA_ENV = "WEBRTC_REF_REPLICA"
#: Environment variables giving a replica the TURN REST secret and coturn's URLs
#: (comma-separated), for :func:`relay_through_turn`.
TURN_SECRET_ENV = "WEBRTC_REF_TURN_SECRET"
TURN_URLS_ENV = "WEBRTC_REF_TURN_URLS"
#: Lifetime (seconds) of the TURN credentials a replica mints for each connection.
TURN_TTL = 600.0
HAPROXY_HINT = (
    "HAProxy is needed for a cluster: install Debian's haproxy (apt-get install haproxy) "
    "or put an haproxy binary on PATH"
)
COTURN_HINT = (
    "coturn is needed for a cluster's media: install Debian's coturn (apt-get install coturn) "
    "or put a turnserver binary on PATH"
)


def haproxy_config(
    port: int,
    replicas: Sequence[tuple[str, int]],
    *,
    host: str = "127.0.0.1",
    health_path: str = "/",
    stats_socket: Path | None = None,
    agent_ports: Sequence[int] | None = None,
) -> str:
    """HAProxy's configuration for ``replicas`` ((name, port) on ``host``) behind
    ``host:port``.

    - Persistence: HAProxy inserts ``COOKIE`` (the replica's name) into the first response
      a browser gets and routes every later request carrying it to that replica
      (``indirect``: the replica never sees the cookie; ``nocache``: no shared cache keeps
      it). New browsers are spread round-robin.
    - Failover: health checks every second (``GET health_path``); a replica failing two is
      down, and a browser whose cookie names it is sent to a survivor (``option
      redispatch``; a connection refused is retried elsewhere too).
    - Timeouts: Gradio's queue keeps a server-sent-events response open for as long as the
      page is, with a heartbeat every 15 s; ``timeout server``/``client`` must outlast it.
    - Load and drain (``agent_ports``, one per replica): HAProxy asks each replica's
      agent-check responder (``webrtc_ref.metrics``) every second; ``ready N%`` scales its
      weight by its free capacity, ``drain`` gives it no new browsers while the browsers
      pinned to it still reach it, ``maint`` takes it out.
    """
    if not replicas:
        raise ValueError("replicas must name at least one (name, port)")
    names = [name for name, _ in replicas]
    if len(set(names)) != len(names):
        raise ValueError(f"replica names must be unique; got {names}")
    if agent_ports is not None and len(agent_ports) != len(replicas):
        raise ValueError(f"{len(agent_ports)} agent ports for {len(replicas)} replicas")
    servers = "\n".join(
        f"    server {name} {host}:{replica_port} cookie {name} check"
        + (f" agent-check agent-port {agent_ports[i]} agent-inter 1s" if agent_ports else "")
        for i, (name, replica_port) in enumerate(replicas)
    )
    stats = f"    stats socket {stats_socket} mode 600 level admin\n" if stats_socket else ""
    return f"""global
    maxconn 4096
{stats}
defaults
    mode http
    option forwardfor
    option redispatch
    retries 2
    timeout connect 2s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h

frontend web
    bind {host}:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    cookie {COOKIE} insert indirect nocache httponly
    option httpchk GET {health_path}
    http-check expect status 200
    default-server inter 1s fall 2 rise 2
{servers}
"""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@dataclass
class Replica:
    """One replica process: its name (HAProxy's server name and cookie value) and port."""

    name: str
    port: int
    agent_port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    """HAProxy and ``replicas`` replicas of ``app`` on 127.0.0.1 (see the module docstring).

    Use as a context manager: on entry every replica answers ``GET /`` and HAProxy answers
    on :attr:`url`; on exit (or :meth:`stop`) every process it started is stopped by pid
    (SIGTERM, then SIGKILL after ``grace`` s) and the work directory is removed unless it
    was given. ``env`` is added to each replica's environment (e.g. a TURN secret: it is
    never on a command line). ``loopback_ice``: the replicas gather ICE host candidates on
    127.0.0.1 only (their private network here: every browser runs on this machine).
    ``turn``: also start a coturn first (see the module docstring) and have the replicas
    send browsers through it, relay-only; :attr:`turn_server` is it once started.
    """

    app: str
    replicas: int = 3
    port: int | None = None
    workdir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    loopback_ice: bool = True
    startup_timeout: float = 60.0
    grace: float = 10.0
    haproxy: str | None = None
    turn: bool = False
    members: list[Replica] = field(default_factory=list, init=False)
    balancer: subprocess.Popen[bytes] | None = field(default=None, init=False)
    turn_server: Coturn | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.replicas, int) or isinstance(self.replicas, bool):
            raise ValueError(f"replicas must be an int >= 1; got {self.replicas!r}")
        if self.replicas < 1:
            raise ValueError(f"replicas must be an int >= 1; got {self.replicas!r}")
        self._own_workdir = self.workdir is None
        self._turn_stack = contextlib.ExitStack()

    @property
    def url(self) -> str:
        """HAProxy's address: what browsers open."""
        assert self.port is not None, "the cluster is not started"
        return f"http://127.0.0.1:{self.port}"

    @property
    def stats_socket(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "haproxy.sock"

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start coturn (``turn``), the replicas, then HAProxy; wait until all answer.

        Raises ``RuntimeError`` (with how to install it) when haproxy, or with ``turn``
        coturn's ``turnserver``, is missing, before starting anything."""
        haproxy = self.haproxy or shutil.which("haproxy")
        if haproxy is None:
            raise RuntimeError(HAPROXY_HINT)
        if self.turn and shutil.which("turnserver") is None:
            raise RuntimeError(COTURN_HINT)
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="webrtc-ref-cluster-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            if self.turn:
                from webrtc_ref.testing import coturn

                secret = secrets.token_urlsafe(24)
                self.turn_server = self._turn_stack.enter_context(
                    coturn(self.workdir / "coturn", secret=secret)
                )
                self.env = {
                    **self.env,
                    TURN_SECRET_ENV: secret,
                    TURN_URLS_ENV: self.turn_server.url,
                }
            for index in range(self.replicas):
                self.members.append(self._spawn_replica(f"r{index + 1}"))
            deadline = time.monotonic() + self.startup_timeout
            for replica in self.members:
                self._wait(lambda r=replica: _answers(r.url + "/"), deadline, replica)
            self.port = self.port or free_port()
            config = self.workdir / "haproxy.cfg"
            config.write_text(
                haproxy_config(
                    self.port,
                    [(r.name, r.port) for r in self.members],
                    stats_socket=self.stats_socket,
                    agent_ports=[r.agent_port for r in self.members],
                ),
                encoding="utf-8",
            )
            log = (self.workdir / "haproxy.log").open("wb")
            self.balancer = subprocess.Popen(
                [haproxy, "-f", str(config), "-db"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
            self._wait(lambda: _answers(self.url + "/"), deadline, None)
        except BaseException:
            self.stop()
            raise

    def _spawn_replica(self, name: str) -> Replica:
        assert self.workdir is not None
        port, agent_port = free_port(), free_port()
        log_path = self.workdir / f"{name}.log"
        log = log_path.open("wb")
        env = {
            **os.environ,
            **self.env,
            REPLICA_ENV: name,
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "webrtc_ref.cluster", "--app", self.app]
            + ["--name", name, "--port", str(port), "--agent-port", str(agent_port)]
            + (["--loopback-ice"] if self.loopback_ice else []),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        return Replica(name, port, agent_port, process, log_path)

    def _wait(self, ready: Any, deadline: float, replica: Replica | None) -> None:
        process = replica.process if replica else self.balancer
        while not ready():
            exited = process is not None and process.poll() is not None
            if exited or time.monotonic() > deadline:
                what = f"replica {replica.name}" if replica else "HAProxy"
                log = replica.log if replica else (self.workdir or Path()) / "haproxy.log"
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                state = "exited" if exited else "did not answer in time"
                raise RuntimeError(f"{what} {state}; its log ends:\n{tail}")
            time.sleep(0.1)

    def replica(self, name: str) -> Replica:
        for member in self.members:
            if member.name == name:
                return member
        raise KeyError(f"no replica {name!r}; replicas: {[m.name for m in self.members]}")

    def kill(self, name: str) -> None:
        """SIGKILL replica ``name`` (a crash: nothing is closed cleanly)."""
        replica = self.replica(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(replica.process.pid, signal.SIGKILL)
        replica.process.wait(10)

    def drain(self, name: str) -> None:
        """SIGTERM replica ``name``: it drains (no new streams; ``server_draining``), its
        agent says ``drain`` so HAProxy sends it no new browsers, and it stops when its
        last session ends or its drain grace (``WEBRTC_REF_DRAIN_GRACE``) is over."""
        os.kill(self.replica(name).process.pid, signal.SIGTERM)

    def server_states(self) -> dict[str, str]:
        """HAProxy's view of each replica (``UP``, ``DOWN``, ``MAINT``, ``NOLB``, ...),
        read from its stats socket."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(b"show stat\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        lines = b"".join(chunks).decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        states = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "replicas" and row.get("svname") not in (
                "BACKEND",
                "FRONTEND",
                None,
            ):
                states[row["svname"]] = row["status"]
        return states

    def stop(self) -> None:
        """Stop HAProxy, every replica and coturn (by pid), then remove an own work
        directory. Safe to call twice."""
        processes = [m.process for m in self.members]
        if self.balancer is not None:
            processes.insert(0, self.balancer)
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for process in processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        self._turn_stack.close()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def load_app(spec: str) -> Any:
    """The ``gr.Blocks`` of ``spec``: a demo name, or ``module:function``."""
    from webrtc_ref.demos import DEMOS, build_demo

    if spec in DEMOS:
        return build_demo(spec)
    module, sep, function = spec.partition(":")
    if not sep or not module or not function:
        raise ValueError(
            f"app must be a demo name ({', '.join(DEMOS)}) or module:function; got {spec!r}"
        )
    return getattr(importlib.import_module(module), function)()


def relay_through_turn(
    app: Any, secret: str, urls: Sequence[str], *, user: str = "webrtc-ref"
) -> int:
    """Give every WebRTC component of ``app`` (a ``gr.Blocks``) that has no
    ``rtc_configuration`` of its own a per-connection one: relay-only through the TURN
    servers at ``urls``, with TURN REST credentials made with ``secret`` for each connection
    (valid :data:`TURN_TTL` s, ``user`` in the username). Returns how many components it
    configured. Call it before the app is launched (the page reads it)."""
    from webrtc_ref.component import WebRTC
    from webrtc_ref.ice import turn_rest_configuration

    minter = turn_rest_configuration(
        secret, urls, ttl=TURN_TTL, user=user, ice_transport_policy="relay"
    )
    configured = 0
    for block in app.blocks.values():
        if isinstance(block, WebRTC) and block._rtc_source is None and not block.rtc_configuration:
            block.set_rtc_configuration_function(minter)
            configured += 1
    return configured


def main(argv: Sequence[str] | None = None) -> int:
    """One replica: build the app and serve it on 127.0.0.1 until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m webrtc_ref.cluster")
    parser.add_argument("--app", required=True, help="a demo name or module:function")
    parser.add_argument("--name", required=True, help="this replica's name")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--agent-port",
        type=int,
        default=None,
        help="serve HAProxy's agent check on 127.0.0.1:PORT (free capacity, drain)",
    )
    parser.add_argument(
        "--loopback-ice",
        action="store_true",
        help="gather ICE host candidates on 127.0.0.1 only (every client on this machine)",
    )
    args = parser.parse_args(argv)
    os.environ[REPLICA_ENV] = args.name
    app = load_app(args.app)
    secret = os.environ.pop(TURN_SECRET_ENV, "")
    urls = [u for u in os.environ.get(TURN_URLS_ENV, "").split(",") if u]
    if secret and urls:
        relay_through_turn(app, secret, urls, user=args.name)
    print(f"replica {args.name}: {args.app} on http://{args.host}:{args.port}", flush=True)
    with contextlib.ExitStack() as stack:
        if args.agent_port is not None:
            from webrtc_ref import metrics
            from webrtc_ref.component import WebRTC

            components = [b for b in app.blocks.values() if isinstance(b, WebRTC)]
            if not components:
                parser.error(f"{args.app} has no WebRTC component to report on")
            stack.callback(metrics.start_agent_thread(components, port=args.agent_port).close)
        if args.loopback_ice:
            from webrtc_ref.testing import loopback_ice

            stack.enter_context(loopback_ice())
        app.launch(server_name=args.host, server_port=args.port, show_error=True, quiet=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
