"""The link shaper the mobile benchmarks and the browser tests go through: its arithmetic and its counts."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest

from pipeline.bench.link_shaper import LINKS, Link, LinkShaper, _Direction
from pipeline.bench.mobile import compare_cutouts


def test_a_direction_is_one_link_shared_in_order():
    up = _Direction(1.5e6)
    assert up.slot(15_000, earliest=10.0) == pytest.approx(10.08)  # 120 kbit at 1.5 Mbit/s
    assert up.slot(15_000, earliest=10.0) == pytest.approx(10.16)  # queued behind the first
    assert up.slot(1_500, earliest=20.0) == pytest.approx(20.008)  # an idle link starts at once
    assert up.bytes == 31_500
    assert _Direction(None).slot(10**9, earliest=3.0) == 3.0  # unshaped


def test_the_profiles_are_the_measured_links():
    assert LINKS["4g"] == Link("4G", 9e6, 1.5e6, 0.170)
    assert LINKS["slow-4g"] == Link("slow 4G", 1.6e6, 0.75e6, 0.150)
    assert "unshaped" in LINKS["loopback"].describe()


def test_every_byte_crosses_and_is_counted_each_way():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def echo_twice():
        conn, _ = server.accept()
        with conn:
            received = b""
            while len(received) < 300_000:
                received += conn.recv(65536)
            conn.sendall(received * 2)

    threading.Thread(target=echo_twice, daemon=True).start()
    shaper = LinkShaper(server.getsockname()[1], Link("test", 400e6, 400e6, 0.002))
    shaper.start()
    try:
        with socket.create_connection(("127.0.0.1", shaper.port), timeout=30) as client:
            payload = bytes(np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8))
            client.sendall(payload)
            answer = b""
            while len(answer) < 600_000:
                chunk = client.recv(65536)
                assert chunk, "the shaper closed the connection early"
                answer += chunk
        assert answer == payload * 2
        assert (shaper.bytes_up, shaper.bytes_down, shaper.connections) == (300_000, 600_000, 1)
    finally:
        shaper.stop()
        server.close()


def test_the_parity_measure_sees_a_planted_difference():
    rng = np.random.default_rng(1)
    reference = rng.integers(0, 256, (40, 50, 4), dtype=np.uint8)
    assert compare_cutouts(reference, reference) == {
        "alpha_mean": 0.0,
        "alpha_p999": 0.0,
        "iou": 1.0,
        "rgb_max": 0,
        "rgb_changed": 0.0,
    }
    moved = reference.copy()
    moved[:10, :, 3] = 255 - moved[:10, :, 3]  # a quarter of the alpha flipped
    moved[30:, :, 0] ^= 1  # one level of red in the bottom quarter
    parity = compare_cutouts(moved, reference)
    assert 20 < parity["alpha_mean"] < 40
    assert parity["iou"] < 0.8
    assert parity["rgb_max"] == 1
    assert 0.2 < parity["rgb_changed"] < 0.3
    assert "shape" in compare_cutouts(moved[:20], reference)
