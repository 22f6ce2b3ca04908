"""A language-model micro-batch through the Python client in row chunks: 1 against N chunks in flight.

Starts ``distill-serve`` with its default limits and computes KL (T = 2) with the gradient for a
bfloat16 student and teacher of shape (B, S, V) through :class:`distill.client.DistillClient`, which cuts
the request into row chunks that fit the server's limits (read from ``GET /v1/info``) and combines the
answers; taken in turn with ``chunks_in_flight`` = 1 and N. Prints the chunk count, the wall time of
each (median) and the throughput in rows per second.

    python -m benchmarks.chunks [--shape 8x2048x32000] [--in-flight 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from benchmarks.service_http import T, free_port, server
from distill.client import DistillClient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="8x2048x32000")
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.shape.split("x"))
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(shape, generator=generator).to(torch.bfloat16)
    teacher = (torch.randn(shape, generator=generator) * 2).to(torch.bfloat16)
    rows = student.numel() // shape[-1]
    port = free_port()
    with server([sys.executable, "-m", "service.cli", "--port", str(port), "--log-level", "warning"], port) as url:
        clients = {in_flight: DistillClient(url, chunks_in_flight=in_flight, timeout=600) for in_flight in (1, args.in_flight)}
        samples: dict[int, list[float]] = {in_flight: [] for in_flight in clients}
        requests: dict[int, int] = {}
        for attempt in range(args.repeats + 1):
            for in_flight, client in clients.items():
                sent: list[object] = []
                client._http.event_hooks["request"] = [sent.append]
                start = time.perf_counter()
                result = client.kl_div(student, teacher_logits=teacher, temperature=T)
                elapsed = time.perf_counter() - start
                assert result.grad is not None and result.grad.shape == student.shape
                requests[in_flight] = len(sent)
                if attempt:
                    samples[in_flight].append(elapsed)
        for client in clients.values():
            client.close()
    print(f"torch={torch.__version__} shape={shape} bfloat16, {student.numel() * 2 / 2**30:.2f} GiB per tensor")
    for in_flight, timings in samples.items():
        median = statistics.median(timings)
        print(f"chunks in flight {in_flight}: {requests[in_flight]} requests, {median:.2f} s per batch, {rows / median:,.0f} rows/s")


if __name__ == "__main__":
    main()
