"""Top-k teacher against the dense teacher, side by side in one run: request bytes, HTTP time, engine time.

For each shape (B·S, V), float32, T = 2, k classes per row:

* in process: ``distill.kl_div`` with the teacher's top-k log-probabilities (``missing_mass`` tail and
  renormalize) against torch autograd of the same formula as one writes it (log_softmax, gather, the
  student's tail as a masked logsumexp), and the engine with the dense teacher, taken in turn;
* over HTTP: starts ``distill-serve`` (body, element and in-flight limits raised for the dense case) and
  posts, alternately from one client, the KL request with the dense teacher (``teacher_logits``, base64)
  and with the top-k teacher (int32 indices and float32 log-probabilities, base64; tail): body bytes,
  median end-to-end time, and their ratios.

    python -m benchmarks.topk [--shapes 2048x131072,512x131072] [--k 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import math
import statistics
import sys
import time
import urllib.parse
from collections.abc import Callable

import orjson
import torch

import distill
from benchmarks.engine import paired_seconds
from benchmarks.service_http import T, free_port, server
from distill.native.allocator import keep_freed_memory


def encoded(tensor: torch.Tensor) -> dict[str, object]:
    dtype = {torch.float32: "float32", torch.int32: "int32"}[tensor.dtype]
    return {"dtype": dtype, "shape": list(tensor.shape), "data": base64.b64encode(tensor.numpy().tobytes()).decode()}


def teacher_top_k(teacher_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's k most likely classes (int32, in no particular order within a row) and their log-probabilities."""
    log_probs = torch.log_softmax(teacher_logits, dim=-1)
    indices = log_probs.topk(k, dim=-1).indices.flip(-1)
    return indices.int(), log_probs.gather(-1, indices)


def reference(student: torch.Tensor, indices: torch.Tensor, log_probs: torch.Tensor) -> Callable[[], object]:
    """Top-k KL with the tail bin (missing_mass tail) by autograd, as one writes it in PyTorch."""
    index = indices.long()
    log_p = torch.cat([log_probs, torch.log((1 - log_probs.exp().sum(-1, keepdim=True)).clamp(min=0))], dim=-1)
    inside = torch.zeros_like(student, dtype=torch.bool).scatter_(-1, index, True)

    def run() -> object:
        leaf = student.detach().requires_grad_(True)
        log_q = torch.log_softmax(leaf / T, dim=-1)
        tail = torch.logsumexp(log_q.masked_fill(inside, -math.inf), dim=-1, keepdim=True)
        bins = torch.cat([log_q.gather(-1, index), tail], dim=-1)
        loss = (log_p.exp() * (log_p - bins)).sum() / student.shape[0] * T * T
        loss.backward()
        return loss.item(), leaf.grad

    return run


def in_process(rows: int, classes: int, k: int, repeats: int) -> None:
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(rows, classes, generator=generator)
    teacher = torch.randn(rows, classes, generator=generator) * 2
    indices, log_probs = teacher_top_k(teacher, k)
    engines = {
        policy: lambda policy=policy: distill.kl_div(
            student, teacher_topk_indices=indices, teacher_topk_log_probs=log_probs, missing_mass=policy, temperature=T
        )
        for policy in ("tail", "renormalize")
    }
    dense = lambda: distill.kl_div(student, teacher_logits=teacher, temperature=T)  # noqa: E731
    tail_s, renormalize_s, autograd_s, dense_s = paired_seconds(
        [*engines.values(), reference(student, indices, log_probs), dense], repeats, student.device
    )
    print(
        f"engine ({rows}, {classes}) k={k}: top-k tail {tail_s * 1e3:.1f} ms, renormalize {renormalize_s * 1e3:.1f} ms, "
        f"autograd (tail formula) {autograd_s * 1e3:.1f} ms -> {tail_s / autograd_s:.2f}x / {renormalize_s / autograd_s:.2f}x; "
        f"dense-teacher engine {dense_s * 1e3:.1f} ms"
    )


def post(url: str, body: bytes) -> tuple[int, bytes]:
    """One POST of ``body`` to /v1/kl_div on a fresh connection (head and body sent apart: no copy of a
    multi-GB body is made to join them)."""
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=600)
    try:
        connection.request("POST", "/v1/kl_div", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def over_http(url: str, rows: int, classes: int, k: int, repeats: int) -> None:
    generator = torch.Generator().manual_seed(1)
    student = torch.randn(rows, classes, generator=generator)
    teacher = torch.randn(rows, classes, generator=generator) * 2
    indices, log_probs = teacher_top_k(teacher, k)
    bodies = {
        "dense": orjson.dumps({"student_logits": encoded(student), "teacher_logits": encoded(teacher), "temperature": T}),
        "top-k": orjson.dumps(
            {
                "student_logits": encoded(student),
                "teacher_topk_indices": encoded(indices),
                "teacher_topk_log_probs": encoded(log_probs),
                "missing_mass": "tail",
                "temperature": T,
            }
        ),
    }
    del student, teacher
    samples: dict[str, list[float]] = {name: [] for name in bodies}
    response_bytes = 0
    for attempt in range(repeats + 1):
        for name, body in bodies.items():
            start = time.perf_counter()
            status, answer = post(url, body)
            elapsed = time.perf_counter() - start
            if status != 200:
                raise RuntimeError(answer[:300].decode(errors="replace"))
            response_bytes = len(answer)
            if attempt:  # the first round warms the server up
                samples[name].append(elapsed)
    dense_bytes, topk_bytes = len(bodies["dense"]), len(bodies["top-k"])
    dense_s, topk_s = (statistics.median(samples[name]) for name in ("dense", "top-k"))
    print(
        f"http ({rows}, {classes}) k={k}: body {dense_bytes / 2**20:.0f} MiB dense, {topk_bytes / 2**20:.0f} MiB top-k "
        f"({topk_bytes / dense_bytes:.3f}x), response {response_bytes / 2**20:.0f} MiB; "
        f"p50 {dense_s * 1e3:.0f} ms dense, {topk_s * 1e3:.0f} ms top-k ({topk_s / dense_s:.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="2048x131072,512x131072")
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    keep_freed_memory()
    shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")]
    print(f"torch={torch.__version__} threads={torch.get_num_threads()}")
    for rows, classes in shapes:
        in_process(rows, classes, args.k, args.repeats)
    largest = max(rows * classes for rows, classes in shapes)
    limits = {
        "DISTILL_MAX_BODY_BYTES": str(4 * largest * 4),
        "DISTILL_MAX_TENSOR_ELEMENTS": str(largest),
        "DISTILL_MAX_BATCH_ELEMENTS": str(largest),
        "DISTILL_MAX_INFLIGHT_BYTES": str(16 * largest * 4),
        "DISTILL_BODY_TIMEOUT_S": "300",
    }
    port = free_port()
    with server([sys.executable, "-m", "service.cli", "--port", str(port), "--log-level", "warning"], port, limits) as url:
        for rows, classes in shapes:
            over_http(url, rows, classes, args.k, args.repeats)


if __name__ == "__main__":
    main()
