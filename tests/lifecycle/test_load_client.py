"""The lifecycle tests' load client tells a server's close of an idle keep-alive connection (which
HTTP clients retry on a new connection) from a lost request: the Go hand-over test relies on it."""

from __future__ import annotations

import socket
import threading
import time

from tests.lifecycle.helpers import LoadClient

ANSWER = b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/x\r\nContent-Length: 0\r\n\r\n"


def serve(listener: socket.socket, stop: threading.Event, answers_per_connection: int,
          answer_partially: bool) -> None:
    """Answer ``answers_per_connection`` requests per connection, then close it idle, or (with
    ``answer_partially``) close it in the middle of the next answer."""
    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        with conn:
            conn.settimeout(5)
            try:
                for _ in range(answers_per_connection):
                    if not conn.recv(4096):
                        break
                    conn.sendall(ANSWER)
                else:
                    if conn.recv(4096) and answer_partially:
                        conn.sendall(ANSWER[:10])
            except OSError:
                pass


def run_load(*, retry: bool, answer_partially: bool) -> LoadClient:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    server = threading.Thread(target=serve, args=(listener, stop, 3, answer_partially), daemon=True)
    server.start()
    try:
        load = LoadClient(listener.getsockname()[1], rate=100, keepalive=1, fresh=0,
                          retry_idle_close=retry, timeout=3).start()
        time.sleep(1.0)
        load.stop()
        return load
    finally:
        stop.set()
        server.join(5)
        listener.close()


def test_idle_close_is_retried_and_counted_apart() -> None:
    results = run_load(retry=True, answer_partially=False).results
    assert results.idle_closes, "the server closed idle connections: they must be recorded"
    assert not results.errors, results.examples
    assert results.statuses[302] >= 3 * len(results.idle_closes) - 3


def test_idle_close_is_an_error_without_retry() -> None:
    results = run_load(retry=False, answer_partially=False).results
    assert results.errors["failed"] > 0 and not results.idle_closes


def test_close_mid_answer_is_still_a_failure() -> None:
    results = run_load(retry=True, answer_partially=True).results
    assert results.errors["failed"] > 0 and not results.idle_closes
