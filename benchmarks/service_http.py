"""End-to-end HTTP benchmark, measured side by side in one run.

Starts ``distill-serve`` and the plain FastAPI baseline (benchmarks/plain_app.py) as real uvicorn
processes on 127.0.0.1, then for KL at T=2 and each shape sends closed-loop requests from
``--clients`` concurrent connections and prints requests/s and latency p50/p99 for: the baseline
(JSON lists), distill with JSON lists, distill with base64 tensors; next to the in-process engine
time and the in-process torch autograd time for the same loss.

    python benchmarks/service_http.py [--clients 4] [--seconds 10] [--shapes 8x1000,64x32000]
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import orjson
import torch
import torch.nn.functional as F

import distill

T = 2.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def started(command: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A server process, yielded once it answers on ``port``; stopped with SIGTERM."""
    process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1.0)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


@contextmanager
def server(command: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[str]:
    """The base URL of a :func:`started` server."""
    with started(command, port, env):
        yield f"http://127.0.0.1:{port}"


def binary(tensor: torch.Tensor) -> dict[str, object]:
    return {"dtype": "float32", "shape": list(tensor.shape), "data": base64.b64encode(tensor.numpy().tobytes()).decode()}


class Connection:
    """A minimal keep-alive HTTP/1.1 client: one prepared POST, the response read with recv_into.

    The load generator shares the CPU with the servers; a pure-Python HTTP client (h11) reading
    tens of MB per response would eat much of it. This one does its copying in C with the GIL
    released, and is the same for every server measured.
    """

    def __init__(self, url: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        parsed = httpx.URL(url)
        self.sock = socket.create_connection((parsed.host, parsed.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fields = {"Content-Type": "application/json", **(headers or {})}
        head = f"POST {parsed.raw_path.decode()} HTTP/1.1\r\nHost: {parsed.host}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        self.request = head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        self.buffer = bytearray(1 << 16)

    def post(self) -> tuple[int, bytes]:
        self.sock.sendall(self.request)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
        body = bytearray(length)
        body[: len(rest)] = rest
        view, filled = memoryview(body), len(rest)
        while filled < length:
            filled += self.sock.recv_into(view[filled:], length - filled)
        return status, bytes(body)

    def close(self) -> None:
        self.sock.close()


def load(
    url: str, body: bytes, clients: int, seconds: float, max_requests: int, headers: dict[str, str] | None = None
) -> tuple[float, list[float]]:
    """Closed loop: ``clients`` connections post ``body`` until time or request budget runs out."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker() -> None:
        connection = Connection(url, body, headers)
        try:
            while True:
                with lock:
                    if len(latencies) >= max_requests or time.monotonic() > stop_at:
                        return
                start = time.perf_counter()
                status, answer = connection.post()
                elapsed = time.perf_counter() - start
                if status != 200:
                    raise RuntimeError(answer[:300].decode(errors="replace"))
                with lock:
                    latencies.append(elapsed)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / (time.perf_counter() - started), latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median_time(fn: Callable[[], object], seconds: float = 1.0) -> float:
    """Median of at least 20 and up to 2,000 timed calls, about ``seconds`` in all (a 0.1 ms call
    needs hundreds to be a steady reference)."""
    for _ in range(3):
        fn()
    start = time.perf_counter()
    fn()
    repeats = max(20, min(2000, int(seconds / max(time.perf_counter() - start, 1e-9))))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def in_process(student: torch.Tensor, teacher: torch.Tensor) -> tuple[float, float]:
    """Median seconds of the engine and of torch autograd for the same KL loss, in this process."""

    def autograd() -> None:
        leaf = student.detach().requires_grad_(True)
        (F.kl_div(F.log_softmax(leaf / T, -1), F.softmax(teacher / T, -1), reduction="batchmean") * T * T).backward()

    return median_time(lambda: distill.kl_div(student, teacher_logits=teacher, temperature=T)), median_time(autograd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--shapes", default="8x1000,64x32000")
    args = parser.parse_args()
    shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")]
    ours_port, plain_port = free_port(), free_port()
    ours_cmd = [sys.executable, "-m", "service.cli", "--port", str(ours_port), "--log-level", "warning"]
    plain_cmd = [sys.executable, "-m", "uvicorn", "benchmarks.plain_app:app", "--port", str(plain_port), "--log-level", "warning"]
    print(f"clients={args.clients} torch threads={torch.get_num_threads()} cpus={os.cpu_count()}")
    header = ("shape", "endpoint", "req/s", "p50 ms", "p99 ms", "n", "vs plain")
    print("{:>12} {:>16} {:>9} {:>9} {:>9} {:>5} {:>9}".format(*header))
    with server(ours_cmd, ours_port, {"DISTILL_DEVICE": "cpu"}) as ours, server(plain_cmd, plain_port) as plain:
        for rows, classes in shapes:
            generator = torch.Generator().manual_seed(0)
            student, teacher = torch.randn(rows, classes, generator=generator), torch.randn(rows, classes, generator=generator)
            as_lists = orjson.dumps(
                {"student_logits": student.numpy(), "teacher_logits": teacher.numpy(), "temperature": T}, option=orjson.OPT_SERIALIZE_NUMPY
            )
            as_base64 = orjson.dumps({"student_logits": binary(student), "teacher_logits": binary(teacher), "temperature": T})
            big = rows * classes > 100_000
            runs = [
                ("plain json", f"{plain}/kl_div", as_lists, 4 if big else 10_000),
                ("distill json", f"{ours}/v1/kl_div", as_lists, 10_000),
                ("distill base64", f"{ours}/v1/kl_div", as_base64, 10_000),
            ]
            plain_rate = None
            for name, url, body, budget in runs:
                load(url, body, 1, 0.0, 1)
                rate, latencies = load(url, body, args.clients, args.seconds, budget)
                plain_rate = plain_rate or rate
                print(
                    f"{f'({rows}, {classes})':>12} {name:>16} {rate:9.2f} {percentile(latencies, 0.5) * 1e3:9.1f} "
                    f"{percentile(latencies, 0.99) * 1e3:9.1f} {len(latencies):5d} {rate / plain_rate:8.1f}x"
                )

            engine_s, autograd_s = in_process(student, teacher)
            _, single = load(f"{ours}/v1/kl_div", as_base64, 1, args.seconds / 2, 50)
            e2e = statistics.median(single)
            print(
                f"{f'({rows}, {classes})':>12} in-process engine {engine_s * 1e3:.2f} ms, torch autograd {autograd_s * 1e3:.2f} ms; "
                f"base64 end-to-end (1 client) p50 {e2e * 1e3:.2f} ms = {e2e / autograd_s:.2f}x autograd"
            )


if __name__ == "__main__":
    main()
