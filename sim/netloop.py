"""One network thread for many paho clients.

Why: with ``loop_start`` every one of the 96 station clients has its own thread, and each publish
wakes that thread; the threads then fight over the GIL and a simulator at 100x manages about
1,000 obs/s (measured). Here ONE thread selects over every socket: it writes what publishes
queued, reads acknowledgements, sends keepalive pings and reconnects clients that lost their
connection. A publish only queues the packet (paho's ``on_socket_register_write`` hook is set,
the documented "external event loop" usage); the publisher wakes the select once per batch. Only this thread ever
writes to a client's socket, so two threads never interleave partial writes.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time

import paho.mqtt.client as mqtt

log = logging.getLogger("its.sim")
SELECT_TIMEOUT_S = 0.02
MISC_EVERY_S = 1.0
RECONNECT_EVERY_S = 2.0


def _queue_only(_client: object, _userdata: object, _sock: object) -> None:
    """paho's write-registration hook: nothing to do, the loop polls ``want_write``."""


class SharedLoop:
    """Services the sockets of registered clients in one daemon thread until :meth:`close`."""

    def __init__(self, name: str = "its-sim-net") -> None:
        self._clients: set[mqtt.Client] = set()
        self._retired: set[mqtt.Client] = set()  # serviced, but never reconnected
        # clients seen with a socket: only those are reconnected here. One still inside its
        # first connect() (a TLS handshake takes a while) has no socket yet, and a reconnect
        # from this thread would race it: two sockets, a garbled CONNECT, a leaked socket
        self._seen: set[mqtt.Client] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def add(self, client: mqtt.Client) -> None:
        """Service ``client`` (call before ``connect`` so the CONNECT packet is written)."""
        # set, so that publish() only queues (no direct write from the publishing thread); it
        # does not wake the select either: a wake per publish costs a GIL hand-off each, so the
        # publisher calls wake() once per batch, and the select timeout bounds the latency
        client.on_socket_register_write = _queue_only
        with self._lock:
            self._clients.add(client)

    def wake(self) -> None:
        """Interrupt the select: a client has something to write."""
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already woken, or closing

    def retire(self, client: mqtt.Client) -> None:
        """Keep servicing ``client`` (to write its DISCONNECT) but do not reconnect it."""
        with self._lock:
            self._retired.add(client)

    def remove(self, client: mqtt.Client) -> None:
        """Stop servicing ``client``; after this returns the loop no longer touches it."""
        with self._lock:
            self._clients.discard(client)
            self._retired.discard(client)
            self._seen.discard(client)

    def close(self) -> None:
        self._closed.set()
        self.wake()
        self._thread.join(5)
        self._wake_r.close()
        self._wake_w.close()

    def _run(self) -> None:
        last_misc = last_reconnect = time.monotonic()
        while not self._closed.is_set():
            with self._lock:
                clients = list(self._clients)
            socks: dict[object, mqtt.Client] = {}
            want_write = []
            buffered = []  # TLS: bytes already decrypted; select() cannot see them
            for c in clients:
                s = c.socket()
                if s is not None:
                    socks[s] = c
                    self._seen.add(c)
                    if c.want_write():
                        want_write.append(s)
                    if isinstance(s, ssl.SSLSocket) and s.pending():
                        buffered.append(s)
            try:
                readable, writable, _ = select.select(
                    [self._wake_r, *socks], want_write, [], 0 if buffered else SELECT_TIMEOUT_S
                )
            except (OSError, ValueError):  # a socket closed under us (a dropped station)
                continue
            readable = list(dict.fromkeys([*readable, *buffered]))
            if self._wake_r in readable:
                readable.remove(self._wake_r)
                try:
                    while self._wake_r.recv(4096):
                        pass
                except (BlockingIOError, OSError):
                    pass
            if readable or writable:
                with self._lock:
                    for s in readable:
                        if socks[s] in self._clients:
                            socks[s].loop_read()
                    for s in writable:
                        if socks[s] in self._clients:
                            socks[s].loop_write()
            now = time.monotonic()
            if now - last_misc >= MISC_EVERY_S:
                last_misc = now
                with self._lock:
                    for c in self._clients:
                        c.loop_misc()
            if now - last_reconnect >= RECONNECT_EVERY_S:
                last_reconnect = now
                self._reconnect_lost()

    def _reconnect_lost(self) -> None:
        with self._lock:
            lost = [c for c in (self._clients & self._seen) - self._retired if c.socket() is None]
        for c in lost:
            try:
                c.reconnect()
                log.info("sim: reconnected %s", c._client_id.decode(errors="replace"))
            except OSError as exc:
                log.debug("sim: reconnect failed: %s", exc)
