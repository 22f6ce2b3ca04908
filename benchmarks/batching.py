"""Batching benchmark, measured side by side in one run.

1. In-process: ``--requests`` queued KL requests of each shape computed as one grouped engine call
   (:func:`distill.batching.group.run_group`) vs one engine call each, on ``--device``.
2. Over HTTP (CPU only): ``--requests`` concurrent clients sending (8, 1000) KL requests to a real
   ``distill-serve`` with batching on and with batching off: throughput and latency p50/p99.
3. A lone client (base64, one connection) against both servers at once, in alternating rounds so that
   drift hits both alike: p50 with batching on against off (adaptive batching's target: at most 1.1x).

    python -m benchmarks.batching [--device cpu|cuda] [--shapes 8x1000,64x32000] [--skip-http]
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import time

import orjson
import torch

from benchmarks.service_http import free_port, load, percentile, server
from distill.batching.group import run_group
from distill.losses.kl_div import prepare_kl_div
from distill.native.allocator import keep_freed_memory
from distill.rows.prepared import run

T = 2.0


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn`` after warm-up, synchronising CUDA around each call."""
    for _ in range(3):
        fn()
    samples = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def in_process(device: torch.device, count: int, rows: int, classes: int, repeats: int) -> None:
    generator = torch.Generator(device=device).manual_seed(0)
    work = [
        prepare_kl_div(
            torch.randn(rows, classes, device=device, generator=generator),
            teacher_logits=torch.randn(rows, classes, device=device, generator=generator),
            temperature=T,
        )
        for _ in range(count)
    ]
    one_each = timed(lambda: [run(item) for item in work], device, repeats)
    grouped = timed(lambda: run_group(work), device, repeats)
    print(
        f"{device.type:>5} {f'({rows}, {classes})':>12} {count:>9} {one_each * 1e3:12.2f} {grouped * 1e3:10.2f} {one_each / grouped:8.1f}x"
    )


def over_http(count: int, seconds: float, max_wait_ms: float) -> None:
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(8, 1000, generator=generator), torch.randn(8, 1000, generator=generator)

    def binary(tensor: torch.Tensor) -> dict[str, object]:
        return {"dtype": "float32", "shape": list(tensor.shape), "data": base64.b64encode(tensor.numpy().tobytes()).decode()}

    bodies = {
        "json": orjson.dumps(
            {"student_logits": student.numpy(), "teacher_logits": teacher.numpy(), "temperature": T}, option=orjson.OPT_SERIALIZE_NUMPY
        ),
        "base64": orjson.dumps({"student_logits": binary(student), "teacher_logits": binary(teacher), "temperature": T}),
    }
    print(f"\nHTTP, {count} concurrent clients, (8, 1000) KL, CPU, max_wait_ms={max_wait_ms}")
    print("{:>9} {:>8} {:>9} {:>9} {:>9} {:>6}".format("batching", "body", "req/s", "p50 ms", "p99 ms", "n"))
    for batching in ("true", "false"):
        port = free_port()
        command = [sys.executable, "-m", "service.cli", "--port", str(port), "--log-level", "warning"]
        env = {"DISTILL_DEVICE": "cpu", "DISTILL_BATCHING": batching, "DISTILL_MAX_WAIT_MS": str(max_wait_ms)}
        with server(command, port, env) as url:
            for name, body in bodies.items():
                load(f"{url}/v1/kl_div", body, 1, 0.0, 1)
                rate, latencies = load(f"{url}/v1/kl_div", body, count, seconds, 100_000)
                print(
                    f"{batching:>9} {name:>8} {rate:9.1f} {percentile(latencies, 0.5) * 1e3:9.1f} "
                    f"{percentile(latencies, 0.99) * 1e3:9.1f} {len(latencies):6d}"
                )


def lone_client(seconds: float, max_wait_ms: float, rounds: int = 10) -> None:
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(8, 1000, generator=generator) for _ in range(2)]
    body = orjson.dumps(
        {
            "student_logits": {"dtype": "float32", "shape": [8, 1000], "data": base64.b64encode(tensors[0].numpy().tobytes()).decode()},
            "teacher_logits": {"dtype": "float32", "shape": [8, 1000], "data": base64.b64encode(tensors[1].numpy().tobytes()).decode()},
            "temperature": T,
        }
    )
    ports = {batching: free_port() for batching in ("true", "false")}
    latencies: dict[str, list[float]] = {batching: [] for batching in ports}
    command = [sys.executable, "-m", "service.cli", "--log-level", "warning", "--port"]
    env = {"DISTILL_DEVICE": "cpu", "DISTILL_MAX_WAIT_MS": str(max_wait_ms)}
    with (
        server([*command, str(ports["true"])], ports["true"], {**env, "DISTILL_BATCHING": "true"}) as on,
        server([*command, str(ports["false"])], ports["false"], {**env, "DISTILL_BATCHING": "false"}) as off,
    ):
        urls = {"true": on, "false": off}
        for url in urls.values():
            load(f"{url}/v1/kl_div", body, 1, 0.5, 100_000)
        for _ in range(rounds):
            for batching, url in urls.items():
                latencies[batching] += load(f"{url}/v1/kl_div", body, 1, seconds / (2 * rounds), 100_000)[1]
    p50 = {batching: statistics.median(values) for batching, values in latencies.items()}
    print(
        f"\nLone client, base64 (8, 1000) KL, {rounds} alternating rounds: p50 batching on {p50['true'] * 1e3:.3f} ms "
        f"(n={len(latencies['true'])}), off {p50['false'] * 1e3:.3f} ms (n={len(latencies['false'])}): "
        f"on/off {p50['true'] / p50['false']:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--shapes", default="8x1000")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--max-wait-ms", type=float, default=2.0, help="the batching server's DISTILL_MAX_WAIT_MS")
    args = parser.parse_args()
    device = torch.device(args.device)
    keep_freed_memory()
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    print("{:>5} {:>12} {:>9} {:>12} {:>10} {:>9}".format("dev", "shape", "requests", "one each ms", "grouped ms", "speed-up"))
    for shape in args.shapes.split(","):
        rows, classes = (int(n) for n in shape.split("x"))
        in_process(device, args.requests, rows, classes, args.repeats)
    if not args.skip_http:
        over_http(args.requests, args.seconds, args.max_wait_ms)
        lone_client(args.seconds, args.max_wait_ms)


if __name__ == "__main__":
    main()
