"""Channels that follow their certificate files: a rotated client certificate is presented by
the next call, without a restart (issue 13; the server side is promo_libs.grpc.tls).

gRPC Python has no dynamic channel credentials: the C core's certificate providers (what Go's
advancedtls or C++'s FileWatcherCertificateProvider use) are not exposed, and a channel's
credentials are fixed when it is made. So the channel is re-made. Before each call, the files'
stamp (inode, mtime, size: three stats, no read) is compared with the one the current channel
was made from; when it changed and the files read as PEM, the next call goes out on a new
channel made from them, which also trusts the new CA bundle. Calls already under way finish on
the channel they started on: that channel is retired and closed when its last call ends (no
grace period to guess, and nothing cancelled). Files caught half-written keep the previous
channel, and are tried again at the next call, as the server's fetcher does.

Stubs hold multi-callables, not channels, from the moment they are made, so the wrapper hands
out multi-callables that resolve the current channel at each call: stubs made once at start-up
follow every rotation.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import grpc

from promo_libs.config import TlsPaths
from promo_libs.grpc.tls import channel_credentials
from promo_libs.logging import get_logger

log = get_logger(__name__)

C = TypeVar("C")  # grpc.aio.Channel or grpc.Channel
Stamp = tuple[tuple[int, int, int], ...]


class _Generation(Generic[C]):
    """One channel made from one state of the files, and how many calls use it now."""

    __slots__ = ("active", "channel", "retired", "stamp")

    def __init__(self, channel: C, stamp: Stamp) -> None:
        self.channel = channel
        self.stamp = stamp
        self.active = 0
        self.retired = False


class Rotation(Generic[C]):
    """The channel made from the files as they are now, and the retired ones still finishing
    calls. Thread-safe: blocking channels are called from several threads."""

    def __init__(
        self,
        tls: TlsPaths,
        make: Callable[[grpc.ChannelCredentials], C],
        dispose: Callable[[C], None],
    ) -> None:
        self._tls = tls
        self._make = make
        self._dispose = dispose
        self._lock = threading.Lock()
        # Stamped before reading: a change between the two is seen, and re-read, by the next call.
        stamp = tls.stamp()
        self._current: _Generation[C] = _Generation(make(channel_credentials(tls)), stamp)
        self._retired: list[_Generation[C]] = []
        self._unreadable: Stamp | None = None
        self._closed = False
        self.reloads = 0

    @property
    def current(self) -> C:
        return self._current.channel

    @property
    def retired(self) -> int:
        """Retired channels not closed yet (calls made on them still under way)."""
        return len(self._retired)

    def begin(self) -> _Generation[C]:
        """The generation a new call goes out on, counted until `end`."""
        disposed: C | None = None
        with self._lock:
            disposed = self._refresh()
            generation = self._current
            generation.active += 1
        if disposed is not None:
            self._dispose(disposed)
        return generation

    def end(self, generation: _Generation[C]) -> None:
        with self._lock:
            generation.active -= 1
            if not (generation.retired and generation.active == 0):
                return
            self._retired.remove(generation)
        self._dispose(generation.channel)

    def close(self) -> list[C]:
        """Every channel still open (current first), for closing the wrapper; no new channel is
        made after this (a call on a closed wrapper fails as on a closed gRPC channel)."""
        with self._lock:
            self._closed = True
            return [self._current.channel, *(g.channel for g in self._retired)]

    def _refresh(self) -> C | None:
        """Under the lock: a new current channel when the files changed; the old one when it
        can be closed at once (no call on it)."""
        if self._closed:
            return None
        try:
            stamp = self._tls.stamp()
            if stamp == self._current.stamp:
                return None
            credentials = channel_credentials(self._tls)
        except (OSError, ValueError) as exc:
            # Once per state of the files, not once per call while the mount is half-done.
            seen = _stamp_or_none(self._tls)
            if seen is None or seen != self._unreadable:
                log.warning(
                    "tls files unreadable; the channel keeps the previous ones", error=repr(exc)
                )
            self._unreadable = seen
            return None
        old = self._current
        self._current = _Generation(self._make(credentials), stamp)
        self.reloads += 1
        log.info("tls client certificate reloaded", cert=str(self._tls.cert))
        if old.active == 0:
            return old.channel
        old.retired = True
        self._retired.append(old)
        return None


def _stamp_or_none(tls: TlsPaths) -> Stamp | None:
    try:
        return tls.stamp()
    except OSError:
        return None


class _MultiCallable(Generic[C]):
    """A stub's view of one method: each call goes out on the current channel."""

    def __init__(self, rotation: Rotation[C], kind: str, method: str, kwargs: dict[str, Any]):
        self._rotation = rotation
        self._kind = kind
        self._method = method
        self._kwargs = kwargs
        self._cached: tuple[_Generation[C], Any] | None = None

    def _on(self, generation: _Generation[C]) -> Any:
        cached = self._cached
        if cached is None or cached[0] is not generation:
            made = getattr(generation.channel, self._kind)(self._method, **self._kwargs)
            cached = self._cached = (generation, made)
        return cached[1]

    def _invoke(self, attribute: str | None, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        generation = self._rotation.begin()
        try:
            target = self._on(generation)
            result = (target if attribute is None else getattr(target, attribute))(*args, **kwargs)
        except BaseException:
            self._rotation.end(generation)
            raise
        # A call object (asyncio calls, streaming calls, futures) ends later; a blocking call's
        # response (or its (response, call) pair) has ended already.
        add_done_callback = getattr(result, "add_done_callback", None)
        if add_done_callback is None:
            self._rotation.end(generation)
            return result
        try:
            add_done_callback(lambda _call: self._rotation.end(generation))
        except NotImplementedError:  # an interceptor answered without calling: nothing runs
            self._rotation.end(generation)
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._invoke(None, args, kwargs)

    # The blocking API's other two ways of calling a unary method.
    def with_call(self, *args: Any, **kwargs: Any) -> Any:
        return self._invoke("with_call", args, kwargs)

    def future(self, *args: Any, **kwargs: Any) -> Any:
        return self._invoke("future", args, kwargs)


def _multi_callable_factory(kind: str) -> Callable[..., Any]:
    """One of the four factories a gRPC channel has (unary_unary, ...): the call it makes runs
    on the rotation's current channel (_MultiCallable)."""

    def factory(
        self: _MultiCallables,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        **kwargs: Any,
    ) -> Any:
        kwargs.update(
            request_serializer=request_serializer, response_deserializer=response_deserializer
        )
        return _MultiCallable(self.rotation, kind, method, kwargs)

    factory.__name__ = factory.__qualname__ = kind
    return factory


class _MultiCallables:
    """The four multi-callable factories of both channels."""

    rotation: Rotation[Any]

    unary_unary = _multi_callable_factory("unary_unary")
    unary_stream = _multi_callable_factory("unary_stream")
    stream_unary = _multi_callable_factory("stream_unary")
    stream_stream = _multi_callable_factory("stream_stream")


class RotatingChannel(_MultiCallables, grpc.aio.Channel):
    """An asyncio channel re-made from `tls` when the files change (module docstring)."""

    def __init__(self, tls: TlsPaths, make: Callable[[grpc.ChannelCredentials], grpc.aio.Channel]):
        self._closing: set[asyncio.Task[None]] = set()
        self.rotation: Rotation[grpc.aio.Channel] = Rotation(tls, make, self._retire)

    def _retire(self, channel: grpc.aio.Channel) -> None:
        # Called from a call's done callback or before a call, on the channel's event loop.
        task = asyncio.get_running_loop().create_task(channel.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self.rotation.current.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self.rotation.current.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self.rotation.current.channel_ready()

    async def close(self, grace: float | None = None) -> None:
        channels = self.rotation.close()
        await asyncio.gather(*(channel.close(grace) for channel in channels), *self._closing)

    async def __aenter__(self) -> RotatingChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close(None)


class RotatingSyncChannel(_MultiCallables, grpc.Channel):
    """The blocking RotatingChannel."""

    def __init__(self, tls: TlsPaths, make: Callable[[grpc.ChannelCredentials], grpc.Channel]):
        self.rotation: Rotation[grpc.Channel] = Rotation(tls, make, lambda channel: channel.close())

    def subscribe(
        self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False
    ) -> None:
        self.rotation.current.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        self.rotation.current.unsubscribe(callback)

    def close(self) -> None:
        for channel in self.rotation.close():
            channel.close()

    def __enter__(self) -> RotatingSyncChannel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
