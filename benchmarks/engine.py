"""Engine vs torch autograd, side by side in one run: time per call and peak extra memory.

For each loss at each shape (float32), times the engine (loss + closed-form gradient) and the torch
reference (F.* forward + backward through autograd), and measures the peak of memory allocated by
torch during one call beyond the inputs (from the profiler's allocation events), on CPU or CUDA.
Like the service, the process keeps freed memory for reuse (distill.native.allocator), which applies to
both sides; ``--default-allocator`` measures with glibc's defaults instead.

    python benchmarks/engine.py [--device cpu|cuda] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import distill
from distill.native.allocator import keep_freed_memory

Case = tuple[str, Callable[[], object], Callable[[], object]]


def cases(rows: int, classes: int, device: torch.device) -> list[Case]:
    generator = torch.Generator(device=device).manual_seed(0)
    student = torch.randn(rows, classes, device=device, generator=generator)
    teacher = torch.randn(rows, classes, device=device, generator=generator)
    labels = torch.randint(0, classes, (rows,), device=device, generator=generator)
    T = 2.0

    def autograd(loss_of: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], object]:
        def run() -> object:
            leaf = student.detach().requires_grad_(True)
            loss = loss_of(leaf)
            loss.backward()
            return loss.item(), leaf.grad

        return run

    return [
        (
            "kl_div",
            lambda: distill.kl_div(student, teacher_logits=teacher, temperature=T),
            autograd(lambda s: F.kl_div(F.log_softmax(s / T, -1), F.softmax(teacher / T, -1), reduction="batchmean") * T * T),
        ),
        ("ce_hard", lambda: distill.cross_entropy(student, labels=labels), autograd(lambda s: F.cross_entropy(s, labels))),
        (
            "ce_soft",
            lambda: distill.cross_entropy(student, teacher_logits=teacher, temperature=T),
            autograd(lambda s: F.cross_entropy(s / T, F.softmax(teacher / T, -1)) * T * T),
        ),
        (
            "bce",
            lambda: distill.bce(student, teacher_logits=teacher, temperature=T),
            autograd(lambda s: F.binary_cross_entropy_with_logits(s / T, torch.sigmoid(teacher / T)) * T * T),
        ),
    ]


def paired_seconds(
    engine: Callable[[], object], reference: Callable[[], object], repeats: int, device: torch.device
) -> tuple[float, float]:
    """Median wall time of one call of each, alternating the two so that drift on a shared machine
    (other tenants, torch's spinning worker threads) hits both sides alike; CUDA is synchronised."""
    samples: dict[Callable[[], object], list[float]] = {engine: [], reference: []}
    for _ in range(3):
        engine()
        reference()
    for _ in range(repeats):
        for fn in (engine, reference):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            samples[fn].append(time.perf_counter() - start)
    return statistics.median(samples[engine]), statistics.median(samples[reference])


def peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated by torch during one call, beyond what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--default-allocator", action="store_true", help="leave glibc's malloc thresholds alone")
    args = parser.parse_args()
    if not args.default_allocator:
        keep_freed_memory()
    device = torch.device(args.device)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")
    header = ("loss", "shape", "engine ms", "autograd ms", "ratio", "engine MiB", "autograd MiB", "input MiB")
    print("{:8} {:>12} {:>10} {:>12} {:>6} {:>11} {:>13} {:>10}".format(*header))
    for rows, classes in ((64, 32000), (8, 1000)):
        for name, engine, reference in cases(rows, classes, device):
            engine_s, reference_s = paired_seconds(engine, reference, args.repeats, device)
            engine_mb = peak_bytes(engine, device) / 2**20
            reference_mb = peak_bytes(reference, device) / 2**20
            input_mb = rows * classes * 4 / 2**20
            print(
                f"{name:8} {f'({rows}, {classes})':>12} {engine_s * 1e3:10.3f} {reference_s * 1e3:12.3f} "
                f"{engine_s / reference_s:6.2f} {engine_mb:11.1f} {reference_mb:13.1f} {input_mb:10.1f}"
            )


if __name__ == "__main__":
    main()
