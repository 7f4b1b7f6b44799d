#!/usr/bin/env python3
"""udp_relay.py: a userspace UDP relay that delays and drops datagrams, for kernels without sch_netem.

Used by deploy/netns/run.sh (scenario lossy-links) when `tc qdisc ... netem` is unavailable: it listens on
the coordinator's public address (10.77.0.1:4433) inside the coordinator's namespace and forwards to the
coordinator bound on 127.0.0.1:4433. Every client flow (source address) gets its own upstream socket, so the
coordinator sees one stable peer address per participant. Each datagram, in both directions, is dropped with
probability --loss (one seeded random.Random, drawn once per datagram) or else held for --delay-ms and then
sent; a single time-ordered queue with a sequence tie-breaker keeps the order of every flow (a constant delay
never reorders). Python 3 standard library only (selectors).

On SIGTERM or SIGINT it stops and prints one summary line to stdout:

  udp_relay summary: listen=A upstream=B delay_ms=D loss=P seed=S flows=N c2s_received=.. c2s_forwarded=..
  c2s_dropped=.. s2c_received=.. s2c_forwarded=.. s2c_dropped=.. send_errors=.. pending_discarded=..
  min_held_ms=.. max_held_ms=..

(one line; c2s = client to server, s2c = server to client; min/max_held_ms = the shortest and longest time
a forwarded datagram was held between its arrival and its send, "none" when nothing was forwarded). At
start it prints "udp_relay listening on A -> B" once the listening socket is bound.
"""

import argparse
import heapq
import random
import selectors
import signal
import socket
import sys
import time


def parse_addr(text):
    """'host:port' -> (host, port) for IPv4 addresses."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"{text!r} is not an address like 10.77.0.1:4433")
    try:
        port_n = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: port {port!r} is not a number") from None
    if not 0 < port_n < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: port out of range")
    return host, port_n


def fmt_addr(addr):
    return f"{addr[0]}:{addr[1]}"


class Relay:
    """The relay's sockets, delay queue and counters (single-threaded, driven by run())."""

    BUF = 1 << 22  # socket buffers (4 MiB): bursts wait in the delay queue, not in a full kernel buffer

    def __init__(self, listen, upstream, delay_ms, loss, seed, idle_s):
        self.listen_addr = listen
        self.upstream = upstream
        self.delay = delay_ms / 1000.0
        self.delay_ms = delay_ms
        self.loss = loss
        self.seed = seed
        self.idle_s = idle_s
        self.rng = random.Random(seed)
        self.sel = selectors.DefaultSelector()
        self.queue = []  # heap of (due, seq, sock, dest, data, arrived)
        self.seq = 0
        self.flows = {}  # client addr -> [upstream socket, last activity]
        self.flows_total = 0
        self.c = {k: 0 for k in ("c2s_received", "c2s_forwarded", "c2s_dropped", "s2c_received",
                                 "s2c_forwarded", "s2c_dropped", "send_errors", "pending_discarded")}
        self.min_held = None
        self.max_held = None
        self.stop = False

        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._bufs(self.lsock)
        self.lsock.bind(listen)
        self.lsock.setblocking(False)
        self.sel.register(self.lsock, selectors.EVENT_READ, ("listen", None))

        # Signals wake the selector through a socketpair (set_wakeup_fd), so shutdown is prompt.
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, ("wake", None))
        signal.set_wakeup_fd(self.wake_w.fileno())
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _bufs(self, sock):
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, self.BUF)
            except OSError:
                pass  # the kernel caps it (net.core.rmem_max); the default still works

    def _on_signal(self, _signum, _frame):
        self.stop = True

    def _enqueue(self, direction, sock, dest, data, now):
        """Drops the datagram with probability `loss`, else schedules it `delay` seconds from now."""
        self.c[f"{direction}_received"] += 1
        if self.rng.random() < self.loss:
            self.c[f"{direction}_dropped"] += 1
            return
        self.seq += 1
        heapq.heappush(self.queue, (now + self.delay, self.seq, direction, sock, dest, data, now))

    def _flow(self, client, now):
        """The upstream socket of a client flow, created on its first datagram."""
        flow = self.flows.get(client)
        if flow is None:
            up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._bufs(up)
            up.bind(("127.0.0.1", 0) if self.upstream[0].startswith("127.") else ("0.0.0.0", 0))
            up.setblocking(False)
            self.sel.register(up, selectors.EVENT_READ, ("upstream", client))
            flow = [up, now]
            self.flows[client] = flow
            self.flows_total += 1
        flow[1] = now
        return flow[0]

    def _read(self, kind, client, sock, now):
        while True:
            try:
                data, src = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. an ICMP error reported on the socket; the next datagram is read next time
            if kind == "listen":
                up = self._flow(src, now)
                self._enqueue("c2s", up, self.upstream, data, now)
            else:
                if src != self.upstream:
                    continue  # only the server's replies are relayed back
                self.flows[client][1] = now
                self._enqueue("s2c", self.lsock, client, data, now)

    def _send_due(self, now):
        while self.queue and self.queue[0][0] <= now:
            _due, _seq, direction, sock, dest, data, arrived = heapq.heappop(self.queue)
            try:
                sock.sendto(data, dest)
            except OSError:
                self.c["send_errors"] += 1
                continue
            self.c[f"{direction}_forwarded"] += 1
            held = (time.monotonic() - arrived) * 1000.0
            self.min_held = held if self.min_held is None else min(self.min_held, held)
            self.max_held = held if self.max_held is None else max(self.max_held, held)

    def _expire_flows(self, now):
        pending = {id(item[3]) for item in self.queue}
        for client, (up, last) in list(self.flows.items()):
            if now - last > self.idle_s and id(up) not in pending:
                self.sel.unregister(up)
                up.close()
                del self.flows[client]

    def run(self):
        print(f"udp_relay listening on {fmt_addr(self.listen_addr)} -> {fmt_addr(self.upstream)} "
              f"(delay {self.delay_ms} ms, loss {self.loss}, seed {self.seed})", flush=True)
        next_expiry = time.monotonic() + self.idle_s
        while not self.stop:
            now = time.monotonic()
            timeout = max(0.0, self.queue[0][0] - now) if self.queue else 1.0
            for key, _ev in self.sel.select(min(timeout, 1.0)):
                kind, client = key.data
                if kind == "wake":
                    try:
                        while self.wake_r.recv(64):
                            pass
                    except (BlockingIOError, InterruptedError):
                        pass
                    continue
                self._read(kind, client, key.fileobj, time.monotonic())
            now = time.monotonic()
            self._send_due(now)
            if now >= next_expiry:
                self._expire_flows(now)
                next_expiry = now + self.idle_s
        self.c["pending_discarded"] = len(self.queue)

    def summary(self):
        held = ("none", "none") if self.min_held is None else (f"{self.min_held:.1f}", f"{self.max_held:.1f}")
        counts = " ".join(f"{k}={v}" for k, v in self.c.items())
        return (f"udp_relay summary: listen={fmt_addr(self.listen_addr)} upstream={fmt_addr(self.upstream)} "
                f"delay_ms={self.delay_ms} loss={self.loss} seed={self.seed} flows={self.flows_total} {counts} "
                f"min_held_ms={held[0]} max_held_ms={held[1]}")

    def close(self):
        signal.set_wakeup_fd(-1)
        for up, _ in self.flows.values():
            up.close()
        self.lsock.close()
        self.wake_r.close()
        self.wake_w.close()
        self.sel.close()


def main(argv=None):
    p = argparse.ArgumentParser(description="UDP relay adding a fixed delay and random loss in both directions")
    p.add_argument("--listen", type=parse_addr, required=True, help="address to listen on, e.g. 10.77.0.1:4433")
    p.add_argument("--upstream", type=parse_addr, required=True, help="server address, e.g. 127.0.0.1:4433")
    p.add_argument("--delay-ms", type=int, default=100, help="one-way delay per datagram, each direction (ms)")
    p.add_argument("--loss", type=float, default=0.02, help="drop probability per datagram, each direction")
    p.add_argument("--seed", type=int, default=1, help="seed of the drop decisions")
    p.add_argument("--idle-s", type=float, default=120.0, help="forget a client flow idle this long (s)")
    a = p.parse_args(argv)
    if a.delay_ms < 0:
        p.error("--delay-ms must be >= 0")
    if not 0.0 <= a.loss < 1.0:
        p.error("--loss must be in [0, 1)")
    if a.idle_s <= 0:
        p.error("--idle-s must be > 0")
    try:
        relay = Relay(a.listen, a.upstream, a.delay_ms, a.loss, a.seed, a.idle_s)
    except OSError as e:
        print(f"udp_relay: cannot listen on {fmt_addr(a.listen)}: {e}", file=sys.stderr)
        return 1
    try:
        relay.run()
    finally:
        print(relay.summary(), flush=True)
        relay.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
