"""Peak server memory for large requests, one at a time and eight at once, side by side in one run.

Each scenario starts a fresh server (default settings: 256 MiB body limit, in-flight budget four
times that), sends KL requests of about ``--mb`` MiB each (base64 tensors, then JSON number lists),
and reads the server's peak resident set (VmHWM) and its resident set afterwards. Printed as ratios
to one body's size; requests refused with 503 (the budget) are counted.

    python -m benchmarks.memory_in_flight [--mb 100] [--concurrent 8]
"""

from __future__ import annotations

import argparse
import sys
import threading

import orjson
import torch

from benchmarks.service_http import Connection, binary, free_port, started


def kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith(field))
    return int(line.split()[1])


def scenario(body: bytes, concurrent: int) -> tuple[float, float, int, int]:
    """(peak RSS MiB, RSS after MiB, answered, refused) of a fresh server taking ``concurrent`` bodies at once."""
    port = free_port()
    command = [sys.executable, "-m", "service.cli", "--port", str(port), "--log-level", "warning", "--device", "cpu"]
    url = f"http://127.0.0.1:{port}"
    with started(command, port) as process:
        baseline = kib(process.pid, "VmRSS:")
        statuses: list[int] = []

        def send() -> None:
            connection = Connection(f"{url}/v1/kl_div", body)
            try:
                statuses.append(connection.post()[0])
            finally:
                connection.close()

        threads = [threading.Thread(target=send) for _ in range(concurrent)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        peak, after = kib(process.pid, "VmHWM:") - baseline, kib(process.pid, "VmRSS:") - baseline
    return peak / 1024, after / 1024, statuses.count(200), statuses.count(503)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100.0, help="approximate body size in MiB")
    parser.add_argument("--concurrent", type=int, default=8)
    args = parser.parse_args()
    classes = 32000
    print(f"{'encoding':>8} {'requests at once':>16} {'peak MiB':>9} {'peak / body':>11} {'after MiB':>9} {'answered':>8} {'refused':>7}")
    for encoding, bytes_per_number in (("base64", 4 * 4 / 3), ("json", 10.5)):
        rows = max(1, int(args.mb * 2**20 / bytes_per_number / 2 / classes))
        generator = torch.Generator().manual_seed(0)
        student, teacher = torch.randn(rows, classes, generator=generator), torch.randn(rows, classes, generator=generator)
        if encoding == "base64":
            body = orjson.dumps({"student_logits": binary(student), "teacher_logits": binary(teacher), "temperature": 2.0})
        else:
            tensors = {"student_logits": student.numpy(), "teacher_logits": teacher.numpy(), "temperature": 2.0}
            body = orjson.dumps(tensors, option=orjson.OPT_SERIALIZE_NUMPY)
        size = len(body) / 2**20
        print(f"   ({encoding}: {size:.1f} MiB bodies, {rows} x {classes} float32 student and teacher)")
        for concurrent in (1, args.concurrent):
            peak, after, answered, refused = scenario(body, concurrent)
            print(f"{encoding:>8} {concurrent:16d} {peak:9.0f} {peak / size:11.2f} {after:9.0f} {answered:8d} {refused:7d}")


if __name__ == "__main__":
    main()
