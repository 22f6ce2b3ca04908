"""Distil a teacher MLP into a smaller student: locally with F.kl_div, then through the service.

Both runs start from the same student weights and see the same batches; the only difference is
where Hinton's loss α·T²·KL(teacher ‖ student) + (1 − α)·CE(labels) and its gradient are computed.
Without ``--url`` a local ``distill-serve`` is started for the run.

    python examples/distill_mlp.py [--url http://127.0.0.1:8000] [--steps 300]
"""

from __future__ import annotations

import argparse
import copy
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.client import DistillClient, RemoteDistillLoss

FEATURES, CLASSES, ALPHA, T = 32, 10, 0.5, 4.0


def make_data(samples: int, seed: int) -> tuple[Tensor, Tensor]:
    """Points labelled by one fixed random two-layer network (a task an MLP can learn)."""
    task = torch.Generator().manual_seed(0)
    projection = torch.randn(FEATURES, 64, generator=task)
    readout = torch.randn(64, CLASSES, generator=task)
    x = torch.randn(samples, FEATURES, generator=torch.Generator().manual_seed(seed))
    return x, (torch.tanh(x @ projection) @ readout).argmax(-1)


def mlp(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, CLASSES))


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


def train_teacher(x: Tensor, y: Tensor, steps: int) -> nn.Module:
    torch.manual_seed(0)
    teacher = mlp(256)
    optimizer = torch.optim.Adam(teacher.parameters(), lr=2e-3)
    for step in range(steps):
        index = torch.randint(0, len(x), (256,), generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        F.cross_entropy(teacher(x[index]), y[index]).backward()
        optimizer.step()
    return teacher.eval()


def local_hinton(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
    kl = F.kl_div(F.log_softmax(student_logits / T, -1), F.softmax(teacher_logits / T, -1), reduction="batchmean") * T * T
    return ALPHA * kl + (1 - ALPHA) * F.cross_entropy(student_logits, labels)


def distil(
    student: nn.Module, teacher: nn.Module, x: Tensor, y: Tensor, steps: int, criterion: Callable[[Tensor, Tensor, Tensor], Tensor]
) -> list[float]:
    optimizer = torch.optim.Adam(student.parameters(), lr=2e-3)
    curve = []
    for step in range(steps):
        index = torch.randint(0, len(x), (128,), generator=torch.Generator().manual_seed(10_000 + step))
        with torch.no_grad():
            teacher_logits = teacher(x[index])
        optimizer.zero_grad()
        loss = criterion(student(x[index]), teacher_logits, y[index])
        loss.backward()
        optimizer.step()
        curve.append(float(loss.detach()))
    return curve


@contextmanager
def service(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "--port", str(port), "--log-level", "warning"])
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running distill service (default: start one)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--teacher-steps", type=int, default=1500)
    args = parser.parse_args()
    x_train, y_train = make_data(20_000, seed=1)
    x_test, y_test = make_data(5_000, seed=2)
    teacher = train_teacher(x_train, y_train, args.teacher_steps)
    torch.manual_seed(1)
    initial = mlp(32)
    local_student, remote_student = copy.deepcopy(initial), copy.deepcopy(initial)
    local_curve = distil(local_student, teacher, x_train, y_train, args.steps, local_hinton)
    with service(args.url) as url, DistillClient(url) as client:
        started = time.perf_counter()
        remote_curve = distil(remote_student, teacher, x_train, y_train, args.steps, RemoteDistillLoss(client, alpha=ALPHA, temperature=T))
        remote_seconds = time.perf_counter() - started
    print(
        f"teacher accuracy {accuracy(teacher, x_test, y_test):.4f} ({sum(p.numel() for p in teacher.parameters())} parameters); "
        f"student {sum(p.numel() for p in initial.parameters())} parameters"
    )
    print(f"{'step':>6} {'local loss':>12} {'remote loss':>12} {'rel diff':>9}")
    for step in [*range(0, args.steps, max(1, args.steps // 10)), args.steps - 1]:
        local, remote = local_curve[step], remote_curve[step]
        print(f"{step:6d} {local:12.6f} {remote:12.6f} {abs(remote - local) / abs(local):9.2e}")
    worst = max(abs(remote - local) / abs(local) for local, remote in zip(local_curve, remote_curve, strict=True))
    print(f"largest relative difference between the curves: {worst:.2e} over {args.steps} steps")
    print(
        f"final test accuracy: local {accuracy(local_student, x_test, y_test):.4f}, remote {accuracy(remote_student, x_test, y_test):.4f} "
        f"({remote_seconds / args.steps * 1e3:.1f} ms per remote step)"
    )


if __name__ == "__main__":
    main()
