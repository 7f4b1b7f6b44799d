#!/usr/bin/env python3
"""test_udp_relay.py: tests of udp_relay.py over loopback (python3 -m unittest deploy/netns/test_udp_relay.py).

The relay runs as a real subprocess between a UDP client and an echo server on 127.0.0.1; the tests assert
what the relay's summary line reports against what the client observed (counts, order, hold time), and its
clean exit on SIGTERM. Run by deploy/netns/run.sh before the lossy-links scenario uses the relay.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

RELAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "udp_relay.py")


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Echo(threading.Thread):
    """UDP echo server on 127.0.0.1 recording the payloads it received, in order."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.got = []
        self.peers = set()
        self.done = False

    def run(self):
        while not self.done:
            try:
                data, src = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            self.got.append(data)
            self.peers.add(src)
            self.sock.sendto(data, src)


def start_relay(listen_port, upstream_port, delay_ms, loss, seed):
    p = subprocess.Popen([sys.executable, RELAY, "--listen", f"127.0.0.1:{listen_port}",
                          "--upstream", f"127.0.0.1:{upstream_port}", "--delay-ms", str(delay_ms),
                          "--loss", str(loss), "--seed", str(seed)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.startswith("udp_relay listening on"), line + p.stderr.read()
    return p


def stop_relay(p):
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=10)
    return p.returncode, out, err


def parse_summary(out):
    line = [ln for ln in out.splitlines() if ln.startswith("udp_relay summary:")]
    assert len(line) == 1, out
    return dict(re.findall(r"(\w+)=(\S+)", line[0]))


def recv_all(sock, expect, quiet_s=0.6):
    """Receives until `expect` datagrams arrived or nothing came for quiet_s seconds."""
    got = []
    sock.settimeout(quiet_s)
    while len(got) < expect:
        try:
            got.append(sock.recv(65535))
        except socket.timeout:
            break
    return got


class RelayTest(unittest.TestCase):
    def run_flow(self, n, delay_ms, loss, seed, clients=1):
        """Sends n numbered datagrams per client through a relay to the echo server, paced (one every
        0.5 ms) so that no kernel socket buffer overflows, each client's replies read by its own thread."""
        echo = Echo()
        echo.start()
        port = free_udp_port()
        relay = start_relay(port, echo.port, delay_ms, loss, seed)
        socks, readers, replies = [], [], []
        try:
            for c in range(clients):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("127.0.0.1", 0))
                got = []
                t = threading.Thread(target=lambda s=s, got=got: got.extend(recv_all(s, n, quiet_s=2.0)))
                t.start()
                socks.append(s)
                readers.append(t)
                replies.append(got)
            sent_at = time.monotonic()
            for i in range(n):
                for c, s in enumerate(socks):
                    s.sendto(f"{c}:{i:05d}".encode(), ("127.0.0.1", port))
                time.sleep(0.0005)
            for t in readers:
                t.join()
            elapsed = time.monotonic() - sent_at
        finally:
            rc, out, err = stop_relay(relay)
            echo.done = True
            echo.join()
            echo.sock.close()
            for s in socks:
                s.close()
        self.assertEqual(rc, 0, err)
        summary = parse_summary(out)
        # Every datagram sent reached the relay (a kernel drop before it would make the rest meaningless).
        self.assertEqual(int(summary["c2s_received"]), n * clients, out)
        return summary, replies, echo, elapsed

    def test_forwards_everything_in_order_when_loss_is_zero(self):
        summary, replies, echo, _ = self.run_flow(300, delay_ms=20, loss=0.0, seed=1, clients=2)
        for c, got in enumerate(replies):
            self.assertEqual(got, [f"{c}:{i:05d}".encode() for i in range(300)])
        self.assertEqual(summary["c2s_received"], "600")
        self.assertEqual(summary["c2s_forwarded"], "600")
        self.assertEqual(summary["s2c_forwarded"], "600")
        self.assertEqual(summary["c2s_dropped"], "0")
        self.assertEqual(summary["s2c_dropped"], "0")
        # One upstream socket per client flow: the server saw exactly two peers.
        self.assertEqual(summary["flows"], "2")
        self.assertEqual(len(echo.peers), 2)

    def test_every_datagram_is_held_at_least_the_delay(self):
        # A lower bound only (the relay sends a datagram no earlier than arrival + delay); no upper bound.
        summary, replies, _, elapsed = self.run_flow(20, delay_ms=100, loss=0.0, seed=1)
        self.assertEqual(len(replies[0]), 20)
        self.assertGreaterEqual(float(summary["min_held_ms"]), 100.0)
        self.assertGreaterEqual(elapsed, 0.2)  # two relay hops (request and reply), 100 ms each

    def test_drops_in_both_directions_and_keeps_order_of_the_rest(self):
        summary, replies, echo, _ = self.run_flow(1000, delay_ms=5, loss=0.1, seed=42)
        c2s_d, s2c_d = int(summary["c2s_dropped"]), int(summary["s2c_dropped"])
        # 1000 draws at p = 0.1: expected 100 drops client->server and about 90 back; P(0 drops) < 1e-40.
        self.assertGreater(c2s_d, 0)
        self.assertGreater(s2c_d, 0)
        self.assertEqual(int(summary["c2s_forwarded"]) + c2s_d, 1000)
        self.assertEqual(len(echo.got), 1000 - c2s_d)
        self.assertEqual(int(summary["s2c_received"]), len(echo.got))
        self.assertEqual(len(replies[0]), len(echo.got) - s2c_d)
        # What survived arrives in the order it was sent (a subsequence of the sent order, no duplicates).
        idx = [int(r.decode().split(":")[1]) for r in replies[0]]
        self.assertEqual(idx, sorted(set(idx)))

    def test_bad_arguments_are_refused(self):
        for args, msg in ((["--listen", "nowhere", "--upstream", "127.0.0.1:1"], "not an address"),
                          (["--listen", "127.0.0.1:1", "--upstream", "127.0.0.1:1", "--loss", "1.5"],
                           "--loss must be in [0, 1)")):
            p = subprocess.run([sys.executable, RELAY] + args, capture_output=True, text=True, timeout=10)
            self.assertEqual(p.returncode, 2)
            self.assertIn(msg, p.stderr)


if __name__ == "__main__":
    unittest.main()
