"""Per-connection ICE configuration: the app's ``rtc_configuration`` function, and TURN
REST credentials.

``WebRTC(rtc_configuration=fn)`` puts no configuration into the page. The browser asks the
component's ``rtc_config`` server function for one just before it creates each peer
connection (docs/protocol.md), and :class:`RTCConfigurationSource` answers:

- it calls ``fn`` off the event loop: a sync function on a thread of its own, an async one
  on the source's private event loop (one thread per component), each within
  ``timeout`` seconds;
- it checks the result (:func:`check_rtc_configuration`) before the browser sees it;
- it bounds how often clients can make it call ``fn``: a token bucket per client address
  and one per Gradio session, and a cap on calls in flight. A call stuck in user code
  keeps counting against that cap until it returns, so stuck calls cannot pile up threads.

Every refusal is a failure reply like the offer's: ``{"status": "failed", "meta": {"error":
CODE, "message": TEXT, ...}}`` with CODE ``rtc_configuration_failed`` (``meta.reason``:
``"raised"``, ``"timeout"`` or ``"invalid"``) or ``too_many_requests`` (``meta.retry_after``
in seconds).

TURN REST credentials (the scheme coturn implements with ``use-auth-secret`` and
``static-auth-secret``): the username is ``"{expiry}:{user}"`` (``expiry`` in Unix
seconds), the password is ``base64(HMAC-SHA1(secret, username))``. The TURN server, which
knows the secret, recomputes the password and refuses a username whose expiry has
passed. :func:`turn_rest_credentials` mints one configuration;
:func:`turn_rest_configuration` makes the per-connection function that mints a fresh one
for every connection. The secret never leaves the server.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import hmac
import inspect
import json
import logging
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from webrtc_ref.errors import is_user_facing, new_error_id
from webrtc_ref.signaling import (
    RTC_CONFIGURATION_FAILED,
    TOO_MANY_REQUESTS,
    WEBRTC_ID_PATTERN,
    failure,
    log_tag,
)
from webrtc_ref.threads import run_in_thread

if TYPE_CHECKING:
    from webrtc_ref.server import Client

log = logging.getLogger("webrtc_ref.ice")

#: What ``rtc_configuration`` may be besides a dict: a function of no arguments (or only
#: arguments with defaults) returning an RTCConfiguration dict, or an async one.
RTCConfigurationFunction = Callable[[], "dict[str, Any] | Awaitable[dict[str, Any]]"]

#: Seconds the app's function may take per call by default.
DEFAULT_TIMEOUT = 10.0
#: Calls in flight (started, not returned) per component by default.
DEFAULT_MAX_IN_FLIGHT = 16
#: Default TTL of TURN REST credentials, in seconds. coturn checks the expiry when an
#: allocation is created, not on its refreshes, so the TTL only has to cover the time from
#: minting to the browser's allocation (plus clock skew between the app's server and the
#: TURN server).
DEFAULT_TURN_TTL = 3600

# Bounds of a configuration the browser is sent.
MAX_ICE_SERVERS = 32
MAX_URLS_PER_SERVER = 16
MAX_STRING = 2048
MAX_CONFIGURATION_BYTES = 16 * 1024
_URL = re.compile(r"^(stun|stuns|turn|turns):[^\s]+$")
ICE_TRANSPORT_POLICIES = ("all", "relay")


@dataclass(frozen=True)
class Rate:
    """A token bucket: ``burst`` calls at once, refilled at ``per_minute`` calls a minute."""

    burst: int
    per_minute: float

    def __post_init__(self) -> None:
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(f"Rate.burst must be an int >= 1; got {self.burst!r}")
        if (
            isinstance(self.per_minute, bool)
            or not isinstance(self.per_minute, int | float)
            or not 0 < self.per_minute < math.inf
        ):
            raise ValueError(
                f"Rate.per_minute must be a positive finite number; got {self.per_minute!r}"
            )


#: Per client address: offices and carriers put many users behind one address.
DEFAULT_PER_ADDRESS = Rate(burst=30, per_minute=30)
#: Per Gradio session: a user pressing Start again and again.
DEFAULT_PER_SESSION = Rate(burst=6, per_minute=12)


class RateLimiter:
    """Token buckets by key (an address, a session), at most ``max_keys`` of them.

    Buckets that have refilled completely are forgotten (they equal a new one); beyond
    ``max_keys`` the least recently used bucket goes, which can only make a limit laxer for
    one key, never stricter. Thread-safe.
    """

    def __init__(self, rate: Rate, *, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.max_keys = max_keys
        self._per_second = rate.per_minute / 60.0
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def _level(self, key: str, now: float) -> float:
        tokens, since = self._buckets.get(key, (float(self.rate.burst), now))
        return min(float(self.rate.burst), tokens + (now - since) * self._per_second)

    def take(self, key: str, now: float | None = None) -> float:
        """Take a token for ``key``: 0.0 when granted, else the seconds until one is free."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens = self._level(key, now)
            if tokens < 1.0:
                return (1.0 - tokens) / self._per_second
            self._buckets[key] = (tokens - 1.0, now)
            self._buckets.move_to_end(key)
            if len(self._buckets) > self.max_keys:
                self._prune(now)
            return 0.0

    def give_back(self, key: str, now: float | None = None) -> None:
        """Return a token taken for a call that was then refused for another reason."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if key in self._buckets:
                self._buckets[key] = (min(float(self.rate.burst), self._level(key, now) + 1), now)

    def _prune(self, now: float) -> None:
        full = [k for k in self._buckets if self._level(k, now) >= self.rate.burst]
        for key in full:
            del self._buckets[key]
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)


# -- validation ----------------------------------------------------------------------------


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a string; got {type(value).__name__}")
    if len(value) > MAX_STRING:
        raise ValueError(f"{where} is {len(value)} characters long; at most {MAX_STRING}")
    return value


def check_rtc_configuration(value: object) -> dict[str, Any]:
    """Check an RTCConfiguration dict the browser is to use; return a plain copy of it.

    It must be a JSON object with ``iceServers``: a list (at most 32) of objects with
    ``urls`` (a ``stun:``, ``stuns:``, ``turn:`` or ``turns:`` URL, or a non-empty list of at
    most 16), and ``username`` and ``credential`` strings (required for ``turn(s):``).
    ``iceTransportPolicy``, if present, is ``"all"`` or ``"relay"``. Other keys are passed
    on. At most 16 KiB of JSON.

    Raises ``ValueError`` naming the offending place (never its value: it may be a
    credential).
    """
    if not isinstance(value, dict):
        raise ValueError(f"the configuration must be a dict; got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise ValueError(f"the configuration's keys must be strings; got {type(key).__name__}")
    if "iceServers" not in value:
        raise ValueError("the configuration needs 'iceServers' (a list; [] for none)")
    servers = value["iceServers"]
    if not isinstance(servers, list):
        raise ValueError(f"'iceServers' must be a list; got {type(servers).__name__}")
    if len(servers) > MAX_ICE_SERVERS:
        raise ValueError(f"'iceServers' has {len(servers)} entries; at most {MAX_ICE_SERVERS}")
    for i, server in enumerate(servers):
        where = f"iceServers[{i}]"
        if not isinstance(server, dict):
            raise ValueError(f"{where} must be a dict; got {type(server).__name__}")
        if "urls" not in server:
            raise ValueError(f"{where} needs 'urls'")
        urls = server["urls"]
        url_list = [urls] if isinstance(urls, str) else urls
        if not isinstance(url_list, list) or not url_list:
            raise ValueError(f"{where}['urls'] must be a URL string or a non-empty list of them")
        if len(url_list) > MAX_URLS_PER_SERVER:
            raise ValueError(
                f"{where}['urls'] has {len(url_list)} URLs; at most {MAX_URLS_PER_SERVER}"
            )
        for j, url in enumerate(url_list):
            _string(url, f"{where}['urls'][{j}]")
            if not _URL.match(url):
                raise ValueError(
                    f"{where}['urls'][{j}] must start with stun:, stuns:, turn: or turns:"
                )
        for key in ("username", "credential"):
            if key in server:
                _string(server[key], f"{where}[{key!r}]")
        if any(u.startswith("turn") for u in url_list) and not (
            "username" in server and "credential" in server
        ):
            raise ValueError(f"{where} has turn: URLs, so it needs 'username' and 'credential'")
    policy = value.get("iceTransportPolicy")
    if policy is not None and policy not in ICE_TRANSPORT_POLICIES:
        raise ValueError("'iceTransportPolicy' must be 'all' or 'relay'")
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"the configuration must be JSON-serialisable ({type(exc).__name__})"
        ) from None
    if len(text) > MAX_CONFIGURATION_BYTES:
        raise ValueError(
            f"the configuration is {len(text)} bytes of JSON; at most {MAX_CONFIGURATION_BYTES}"
        )
    copy: dict[str, Any] = json.loads(text)
    return copy


# -- calling the app's function ------------------------------------------------------------


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004  # a callable object
    return call is not None and inspect.iscoroutinefunction(call)


def check_function(fn: object, name: str = "rtc_configuration") -> None:
    """``fn`` must be callable with no arguments; ``ValueError`` naming ``name`` otherwise."""
    if not callable(fn):
        raise ValueError(f"{name} must be callable; got {fn!r}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins without a signature: the call will tell
    try:
        signature.bind()
    except TypeError:
        raise ValueError(
            f"{name} must be callable with no arguments (it is called once per connection); "
            f"{fn!r} needs {signature}"
        ) from None


class _PrivateLoop:
    """An event loop on a daemon thread of its own, started at first use."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name=self._name, daemon=True).start()
                self._loop = loop
            return self._loop


class RTCConfigurationSource:
    """Calls the app's ``rtc_configuration`` function for each connection, bounded.

    Pass one as ``WebRTC(rtc_configuration=...)`` to change the bounds; a bare function
    gets the defaults.

    Parameters:
        fn: a function, or an async function, of no arguments (arguments with defaults are
            fine) returning an RTCConfiguration dict (:func:`check_rtc_configuration`). A
            sync function may also return an awaitable; it is awaited on the private loop.
        timeout: seconds a call may take; later, the browser is refused
            (``rtc_configuration_failed``, reason ``timeout``) and the result, if one ever
            comes, is dropped.
        per_address, per_session: token buckets (:class:`Rate`) of calls per client
            address and per Gradio session; ``None``: no such limit.
        max_in_flight: calls that may be running at once (timed-out calls still running
            count); more are refused with ``too_many_requests``.
    """

    def __init__(
        self,
        fn: RTCConfigurationFunction,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        per_address: Rate | None = DEFAULT_PER_ADDRESS,
        per_session: Rate | None = DEFAULT_PER_SESSION,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        check_function(fn)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout < math.inf
        ):
            raise ValueError(f"timeout must be a positive number of seconds; got {timeout!r}")
        if (
            isinstance(max_in_flight, bool)
            or not isinstance(max_in_flight, int)
            or max_in_flight < 1
        ):
            raise ValueError(f"max_in_flight must be an int >= 1; got {max_in_flight!r}")
        for label, rate in (("per_address", per_address), ("per_session", per_session)):
            if rate is not None and not isinstance(rate, Rate):
                raise ValueError(f"{label} must be a webrtc_ref.ice.Rate or None; got {rate!r}")
        self.fn = fn
        self.timeout = float(timeout)
        self.max_in_flight = max_in_flight
        self.is_async = _is_async(fn)
        self._by_address = RateLimiter(per_address) if per_address is not None else None
        self._by_session = RateLimiter(per_session) if per_session is not None else None
        self._in_flight = 0
        self._lock = threading.Lock()
        self._loop = _PrivateLoop("rtc-configuration")
        #: calls made (started) so far, and calls refused before reaching ``fn``
        self.calls = 0
        self.refused = 0

    def __repr__(self) -> str:
        return f"RTCConfigurationSource({self.fn!r}, timeout={self.timeout:g})"

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    # -- admission ---------------------------------------------------------------------
    def _admit(self, client: Client) -> dict[str, Any] | None:
        """Take the caller's tokens and an in-flight slot, or the refusal to send."""
        taken: list[tuple[RateLimiter, str]] = []
        for limiter, key, what in (
            (self._by_address, client.address, "this address"),
            (self._by_session, client.session, "this session"),
        ):
            if limiter is None or key is None:
                continue
            wait = limiter.take(key)
            if wait > 0:
                for other, other_key in taken:
                    other.give_back(other_key)
                retry = math.ceil(wait)
                return failure(
                    TOO_MANY_REQUESTS,
                    f"Too many connection attempts from {what} "
                    f"(at most {limiter.rate.per_minute:g} a minute). "
                    f"Try again in {retry} s.",
                    retry_after=retry,
                )
            taken.append((limiter, key))
        with self._lock:
            if self._in_flight >= self.max_in_flight:
                busy = True
            else:
                busy = False
                self._in_flight += 1
                self.calls += 1
        if busy:
            for limiter, key in taken:
                limiter.give_back(key)
            return failure(
                TOO_MANY_REQUESTS,
                "The server is busy preparing other connections. Try again in a moment.",
                retry_after=1,
            )
        return None

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1

    # -- the call ----------------------------------------------------------------------
    async def _call(self, name: str) -> Any:
        """Run ``fn`` off the event loop; the in-flight slot is freed when it returns."""
        if self.is_async:
            fn = self.fn

            async def invoke() -> Any:
                return await fn()  # type: ignore[misc]

            future = asyncio.run_coroutine_threadsafe(invoke(), self._loop.get())
            future.add_done_callback(lambda _: self._done())
            return await asyncio.wrap_future(future)

        def work() -> Any:
            try:
                result = self.fn()
                if inspect.isawaitable(result):
                    awaitable = result

                    async def settle() -> Any:
                        return await awaitable

                    future = asyncio.run_coroutine_threadsafe(settle(), self._loop.get())
                    try:
                        result = future.result(self.timeout)
                    finally:
                        future.cancel()
                return result
            finally:
                self._done()

        return await run_in_thread(work, name)

    async def get(
        self, client: Client, *, webrtc_id: str | None = None, show_error: bool = False
    ) -> dict[str, Any]:
        """The reply for one browser: ``{"rtc_configuration": {...}}`` or a failure reply.

        Never raises for anything the app's function does.
        """
        tag = log_tag(webrtc_id) if webrtc_id else "-"
        refusal = self._admit(client)
        if refusal is not None:
            self.refused += 1
            log.info("%s: rtc_configuration refused: %s", tag, refusal["meta"]["message"])
            return refusal
        started = time.monotonic()
        call = asyncio.ensure_future(self._call(f"rtc-configuration-{tag}"))
        try:
            # asyncio.wait, not wait_for: a TimeoutError raised by the function itself (a
            # socket timeout, say) is the function's error, not this timeout.
            done, _ = await asyncio.wait({call}, timeout=self.timeout)
        finally:
            if not call.done():
                call.cancel()  # a sync function runs on; an async one is cancelled
        if call not in done:
            log.error(
                "%s: the rtc_configuration function %r did not return within %g s",
                tag,
                self.fn,
                self.timeout,
            )
            return failure(
                RTC_CONFIGURATION_FAILED,
                f"The server could not prepare the connection: its ICE configuration was "
                f"not ready within {self.timeout:g} s. Try again in a moment.",
                reason="timeout",
            )
        try:
            result = call.result()
        except (Exception, asyncio.CancelledError) as exc:
            error_id = new_error_id()
            log.error(
                "%s: error %s: the rtc_configuration function %r raised",
                tag,
                error_id,
                self.fn,
                exc_info=exc,
            )
            if is_user_facing(exc):
                message = str(getattr(exc, "message", None) or exc)
            elif show_error:
                message = f"{type(exc).__name__}: {exc}"
            else:
                message = (
                    "The server could not prepare the connection's ICE configuration "
                    f"(error id {error_id}). The server's log has the details."
                )
            return failure(RTC_CONFIGURATION_FAILED, message, reason="raised")
        try:
            configuration = check_rtc_configuration(result)
        except ValueError as exc:
            error_id = new_error_id()
            log.error(
                "%s: error %s: the rtc_configuration function %r returned an unusable "
                "configuration: %s",
                tag,
                error_id,
                self.fn,
                exc,
            )
            return failure(
                RTC_CONFIGURATION_FAILED,
                "The server's ICE configuration for this connection is unusable "
                f"({exc}; error id {error_id}).",
                reason="invalid",
            )
        log.debug("%s: rtc_configuration ready in %.1f ms", tag, (time.monotonic() - started) * 1e3)
        return {"rtc_configuration": configuration}


def webrtc_id_of(body: object) -> str | None:
    """The ``webrtc_id`` of an ``rtc_config`` body, when it carries a well-formed one."""
    webrtc_id = body.get("webrtc_id") if isinstance(body, dict) else None
    if isinstance(webrtc_id, str) and WEBRTC_ID_PATTERN.match(webrtc_id):
        return webrtc_id
    return None


# -- TURN REST credentials -----------------------------------------------------------------


def _turn_urls(urls: object) -> list[str]:
    url_list = [urls] if isinstance(urls, str) else urls
    if not isinstance(url_list, list | tuple) or not url_list:
        raise ValueError(
            f"urls must be a turn:/turns: URL or a non-empty list of them; got {urls!r}"
        )
    for url in url_list:
        if not isinstance(url, str) or not re.match(r"^turns?:[^\s]+$", url):
            raise ValueError(
                f"urls must be turn: or turns: URLs (TURN REST credentials are for TURN "
                f"servers); got {url!r}"
            )
    return list(url_list)


def _secret_bytes(secret: object) -> bytes:
    if isinstance(secret, str) and secret:
        return secret.encode("utf-8")
    if isinstance(secret, bytes) and secret:
        return secret
    kind = type(secret).__name__
    raise ValueError(
        f"secret must be a non-empty str or bytes (the TURN server's static-auth-secret); "
        f"got {kind}"
    )


def _ttl(ttl: object) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
        raise ValueError(f"ttl must be a positive number of seconds; got {ttl!r}")
    return float(ttl)


def _user(user: object) -> str | None:
    if user is None:
        return None
    if not isinstance(user, str) or not user or len(user) > 256:
        raise ValueError(f"user must be None or a non-empty string (at most 256); got {user!r}")
    return user


def _policy(policy: object) -> str | None:
    if policy is not None and policy not in ICE_TRANSPORT_POLICIES:
        raise ValueError(f"ice_transport_policy must be None, 'all' or 'relay'; got {policy!r}")
    return policy  # type: ignore[return-value]


def turn_rest_credentials(
    secret: str | bytes,
    urls: str | Sequence[str],
    *,
    ttl: float = DEFAULT_TURN_TTL,
    user: str | None = None,
    ice_transport_policy: Literal["all", "relay"] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Mint TURN REST credentials; return an RTCConfiguration dict using them.

    ``{"iceServers": [{"urls": urls, "username": "{expiry}:{user}", "credential":
    base64(HMAC-SHA1(secret, username))}]}``, plus ``"iceTransportPolicy"`` when given.
    ``expiry`` is ``now`` (default: the current Unix time) plus ``ttl`` seconds, rounded
    down; without ``user`` the username is ``"{expiry}"`` alone. ``secret`` is the TURN
    server's ``static-auth-secret``; it is not in the result.

    Raises ``ValueError`` for an empty secret, URLs that are not ``turn:``/``turns:``, a
    ``ttl`` that is not a positive number, an empty ``user`` or an unknown policy.
    """
    key = _secret_bytes(secret)
    url_list = _turn_urls(urls)
    lifetime = _ttl(ttl)
    name = _user(user)
    policy = _policy(ice_transport_policy)
    if now is not None and (isinstance(now, bool) or not isinstance(now, int | float)):
        raise ValueError(f"now must be None or a Unix time in seconds; got {now!r}")
    expiry = int((time.time() if now is None else now) + lifetime)
    username = f"{expiry}:{name}" if name is not None else str(expiry)
    digest = hmac.new(key, username.encode("utf-8"), hashlib.sha1).digest()
    server = {
        "urls": url_list[0] if isinstance(urls, str) else url_list,
        "username": username,
        "credential": base64.b64encode(digest).decode("ascii"),
    }
    configuration: dict[str, Any] = {"iceServers": [server]}
    if policy is not None:
        configuration["iceTransportPolicy"] = policy
    return configuration


class TurnRestConfiguration:
    """A per-connection ``rtc_configuration`` function: each call mints fresh TURN REST
    credentials (:func:`turn_rest_credentials`). Its ``repr`` leaves the secret out."""

    def __init__(
        self,
        secret: str | bytes,
        urls: str | Sequence[str],
        *,
        ttl: float = DEFAULT_TURN_TTL,
        user: str | None = None,
        ice_transport_policy: Literal["all", "relay"] | None = None,
    ) -> None:
        self._secret = _secret_bytes(secret)
        _turn_urls(urls)
        self.urls = urls if isinstance(urls, str) else list(urls)
        self.ttl = _ttl(ttl)
        self.user = _user(user)
        self.ice_transport_policy: Literal["all", "relay"] | None = _policy(  # type: ignore[assignment]
            ice_transport_policy
        )

    def __call__(self) -> dict[str, Any]:
        return turn_rest_credentials(
            self._secret,
            self.urls,
            ttl=self.ttl,
            user=self.user,
            ice_transport_policy=self.ice_transport_policy,
        )

    def __repr__(self) -> str:
        return (
            f"TurnRestConfiguration(urls={self.urls!r}, ttl={self.ttl:g}, user={self.user!r}, "
            f"ice_transport_policy={self.ice_transport_policy!r})"
        )

    def __reduce__(self) -> Any:
        raise TypeError("TurnRestConfiguration holds a secret and is not picklable")


def turn_rest_configuration(
    secret: str | bytes,
    urls: str | Sequence[str],
    *,
    ttl: float = DEFAULT_TURN_TTL,
    user: str | None = None,
    ice_transport_policy: Literal["all", "relay"] | None = None,
) -> TurnRestConfiguration:
    """A function for ``WebRTC(rtc_configuration=...)`` that mints fresh TURN REST
    credentials for every connection. Arguments as for :func:`turn_rest_credentials`;
    they are checked here."""
    return TurnRestConfiguration(
        secret, urls, ttl=ttl, user=user, ice_transport_policy=ice_transport_policy
    )
