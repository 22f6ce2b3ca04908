"""Time to answer a body of 100,000 keys next to a valid request of the same size, side by side in one run.

The many-key body is refused (413) before its keys are looked up; it must not take longer than
computing a valid request of its size, and must not hold up other requests.

    python -m benchmarks.hostile_bodies [--keys 100000] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import orjson
import torch

from benchmarks.service_http import Connection, free_port, server


def median_seconds(url: str, body: bytes, repeats: int) -> tuple[float, int]:
    connection = Connection(url, body)
    try:
        status, _ = connection.post()
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            status, _ = connection.post()
            samples.append(time.perf_counter() - start)
    finally:
        connection.close()
    return statistics.median(samples), status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    valid_fields = {"student_logits": [[1.0, 2.0]], "teacher_logits": [[0.5, 0.5]]}
    keys = b", ".join(b'"k%d": %d' % (index, index) for index in range(args.keys))
    many = b"{" + keys + b", " + orjson.dumps(valid_fields)[1:]
    classes = 1000
    rows = 1
    while True:
        student = torch.randn(rows, classes, generator=torch.Generator().manual_seed(0))
        valid = orjson.dumps({"student_logits": student.numpy(), "teacher_logits": student.numpy()}, option=orjson.OPT_SERIALIZE_NUMPY)
        if len(valid) >= len(many):
            break
        rows += 1
    port = free_port()
    command = [sys.executable, "-m", "service.cli", "--port", str(port), "--log-level", "warning", "--device", "cpu"]
    with server(command, port) as url:
        valid_s, valid_status = median_seconds(f"{url}/v1/kl_div", valid, args.repeats)
        many_s, many_status = median_seconds(f"{url}/v1/kl_div", many, args.repeats)
    print(f"{'body':>28} {'bytes':>10} {'status':>6} {'median ms':>10}")
    print(f"{'valid (' + str(rows) + ', 1000) JSON KL':>28} {len(valid):10d} {valid_status:6d} {valid_s * 1e3:10.2f}")
    print(f"{str(args.keys) + ' keys':>28} {len(many):10d} {many_status:6d} {many_s * 1e3:10.2f}")
    print(f"many-key body / valid request: {many_s / valid_s:.2f}x")


if __name__ == "__main__":
    main()
