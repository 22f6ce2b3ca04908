"""Open Inference Protocol binary vs /v1 base64 vs in-process autograd, measured side by side in one run.

Starts ``distill-serve`` as a real uvicorn process and sends float32 KL (T = 2) with the gradient at
each shape: ``/v2/models/kl_div/infer`` with binary inputs and outputs (raw bytes after the JSON
header) and ``/v1/kl_div`` with base64 tensors, one client for latency and ``--clients`` for
throughput; the references are the same loss with torch autograd in this process, and the same bytes
sent to a trivial ASGI app under the same uvicorn (benchmarks/bytes_app.py): the transport's floor.

    python -m benchmarks.oip [--clients 4] [--seconds 8] [--shapes 64x32000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import orjson
import torch

from benchmarks.service_http import T, binary, free_port, in_process, load, percentile, server


def oip_binary(student: torch.Tensor, teacher: torch.Tensor) -> tuple[bytes, dict[str, str]]:
    """An infer request with both inputs as raw bytes and every output asked for as raw bytes."""
    inputs = [
        {"name": name, "shape": list(tensor.shape), "datatype": "FP32", "parameters": {"binary_data_size": tensor.numel() * 4}}
        for name, tensor in (("student_logits", student), ("teacher_logits", teacher))
    ]
    header = orjson.dumps({"inputs": inputs, "parameters": {"temperature": T, "binary_data_output": True}})
    header += b" " * (-len(header) % 64)  # JSON whitespace: the sections start aligned, and are read in place
    body = header + student.numpy().tobytes() + teacher.numpy().tobytes()
    return body, {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--shapes", default="64x32000")
    args = parser.parse_args()
    port = free_port()
    command = [sys.executable, "-m", "service.cli", "--port", str(port), "--log-level", "warning"]
    print(f"clients={args.clients} torch threads={torch.get_num_threads()} cpus={os.cpu_count()}")
    for rows, classes in (tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")):
        floor_port = free_port()
        floor = [sys.executable, "-m", "uvicorn", "benchmarks.bytes_app:app", "--port", str(floor_port), "--log-level", "warning"]
        answer_bytes = {"DISTILL_BENCH_ANSWER_BYTES": str(rows * classes * 4 + 512)}
        with server(command, port, {"DISTILL_DEVICE": "cpu"}) as url, server(floor, floor_port, answer_bytes) as floor_url:
            generator = torch.Generator().manual_seed(0)
            student, teacher = torch.randn(rows, classes, generator=generator), torch.randn(rows, classes, generator=generator)
            v2_body, v2_headers = oip_binary(student, teacher)
            v1_body = orjson.dumps({"student_logits": binary(student), "teacher_logits": binary(teacher), "temperature": T})
            runs = {
                "v2 binary": (f"{url}/v2/models/kl_div/infer", v2_body, v2_headers),
                "v1 base64": (f"{url}/v1/kl_div", v1_body, None),
                "bytes only": (f"{floor_url}/", v2_body, v2_headers),
            }
            _, autograd_s = in_process(student, teacher)
            single: dict[str, list[float]] = {name: [] for name in runs}
            rate: dict[str, list[float]] = {name: [] for name in runs}
            for endpoint, body, headers in runs.values():
                load(endpoint, body, 1, 0.0, 2, headers)
            for _ in range(2):  # alternate, so that drift on a shared machine hits all alike
                for name, (endpoint, body, headers) in runs.items():
                    single[name] += load(endpoint, body, 1, args.seconds / 4, 1000, headers)[1]
                    rate[name].append(load(endpoint, body, args.clients, args.seconds / 2, 100_000, headers)[0])
            shape = f"({rows}, {classes})"
            print(f"{shape}: in-process torch autograd {autograd_s * 1e3:.2f} ms")
            for name in runs:
                p50 = statistics.median(single[name])
                print(
                    f"{shape} {name:>10}: 1 client p50 {p50 * 1e3:.2f} ms (p99 {percentile(single[name], 0.99) * 1e3:.2f}) "
                    f"= {p50 / autograd_s:.2f}x autograd; {args.clients} clients {statistics.mean(rate[name]):.1f} req/s"
                )
            throughput = statistics.mean(rate["v2 binary"]) / statistics.mean(rate["v1 base64"])
            over_floor = statistics.median(single["v2 binary"]) / statistics.median(single["bytes only"])
            print(f"{shape} v2 binary / v1 base64 throughput: {throughput:.2f}x; v2 binary 1-client p50 / bytes only: {over_floor:.2f}x")


if __name__ == "__main__":
    main()
