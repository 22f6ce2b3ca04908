"""Engine vs torch autograd, side by side in one run: time per call and peak extra memory.

For each loss at each shape (float32), times the engine (loss + closed-form gradient) and the torch
reference (F.* forward + backward through autograd), and measures the peak of memory allocated by
torch during one call beyond the inputs (from the profiler's allocation events), on CPU or CUDA.
Like the service, the process keeps freed memory for reuse (distill.native.allocator), which applies to
both sides; ``--default-allocator`` measures with glibc's defaults instead.

On CPU with the compiled kernels, ``floor ms`` is the time of the transcendental functions each loss's
kernel evaluates per element (:data:`TRANSCENDENTALS`), measured with the kernels' own vector exp and
log over a buffer of the same shape (each a full pass: read, compute, write); ``/floor`` is the engine's
time against it. The engine also validates the inputs (one more pass) and forms the gradient. The
feature losses compute no transcendentals: their floor is the memory traffic of a validated loss (one
read of each input for the value checks, with the kernels' own pass, then one pass reading both and
writing the gradient, timed as ``torch.sub(s, t, out=g)``); autograd moves as much (the forward reads
both inputs, the backward reads both and writes the gradient), so these cannot go far below 1× where
autograd runs near that floor.

Each case is timed at least ``--repeats`` times and for about ``--seconds`` (small shapes get many more
repetitions: a 30 µs call is at the mercy of one interrupt).

    python benchmarks/engine.py [--device cpu|cuda] [--repeats 30] [--seconds 0.5] [--shapes 64x32000,8x1000] [--losses jsd,tvd]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import distill
from distill import native
from distill.native.allocator import keep_freed_memory

Case = tuple[str, Callable[[], object], Callable[[], object]]

#: (exponentials, logarithms) per element in each loss's compiled kernel, teacher given as logits
#: (distill/native/csrc/kernels_impl.h): a softmax costs one exponential per element and side, a
#: sigmoid one, BCE's log1p one logarithm, a divergence's mixture log m one of each, the skew
#: divergences' gradient weight one more exponential.
TRANSCENDENTALS: dict[str, tuple[int, int]] = {
    "kl_div": (2, 0),
    "ce_hard": (1, 0),
    "ce_soft": (2, 0),
    "bce": (2, 1),
    "jsd": (3, 1),
    "reverse_kl": (2, 0),
    "skew_kl": (4, 1),
    "skew_reverse_kl": (4, 1),
    "tvd": (2, 0),
    "mse_loss": (0, 0),
    "l1_loss": (0, 0),
    "smooth_l1_loss": (0, 0),
    "cosine_embedding_loss": (0, 0),
}


#: The feature losses, whose floor is memory traffic (:func:`memory_passes`).
FEATURE_LOSSES = {name for name, (exps, logs) in TRANSCENDENTALS.items() if exps + logs == 0}


def memory_passes(rows: int, classes: int) -> list[Callable[[], object]] | None:
    """A validated feature loss's minimum traffic over (rows, C) float32: the value check's read of each
    input (the kernels' own pass) and one pass reading both and writing a third (None without the kernels)."""
    if not native.kernels.enabled():
        return None
    generator = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(rows, classes, generator=generator), torch.randn(rows, classes, generator=generator)
    out = torch.empty(rows, classes)
    return [
        lambda: native.kernels.row_extrema(student, minima=False),
        lambda: native.kernels.row_extrema(teacher, minima=False),
        lambda: torch.sub(student, teacher, out=out),
    ]


def transcendental_passes(rows: int, classes: int) -> list[Callable[[], object]] | None:
    """One exp pass and one log pass over (rows, classes) float32 with the kernels' code (None without them)."""
    if not native.kernels.enabled():
        return None
    generator = torch.Generator().manual_seed(1)
    negative = -10 * torch.rand(rows, classes, generator=generator)
    positive = torch.rand(rows, classes, generator=generator) + 0.1
    out = torch.empty(rows, classes)
    return [
        lambda: native.kernels.transcendental("exp", negative, out),
        lambda: native.kernels.transcendental("log", positive, out),
    ]


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
        *divergence_cases(student, teacher, autograd, T),
        *feature_cases(student, teacher, autograd),
    ]


def feature_cases(
    student: torch.Tensor, teacher: torch.Tensor, autograd: Callable[[Callable[[torch.Tensor], torch.Tensor]], Callable[[], object]]
) -> list[Case]:
    """Feature matching (no transcendentals: no floor), each against its F.* function."""
    ones = torch.ones(student.shape[0], device=student.device)
    return [
        ("mse_loss", lambda: distill.mse_loss(student, teacher=teacher), autograd(lambda s: F.mse_loss(s, teacher))),
        ("l1_loss", lambda: distill.l1_loss(student, teacher=teacher), autograd(lambda s: F.l1_loss(s, teacher))),
        (
            "smooth_l1_loss",
            lambda: distill.smooth_l1_loss(student, teacher=teacher, beta=0.5),
            autograd(lambda s: F.smooth_l1_loss(s, teacher, beta=0.5)),
        ),
        (
            "cosine_embedding_loss",
            lambda: distill.cosine_embedding_loss(student, teacher=teacher),
            autograd(lambda s: F.cosine_embedding_loss(s, teacher, ones)),
        ),
    ]


def divergence_cases(
    student: torch.Tensor,
    teacher: torch.Tensor,
    autograd: Callable[[Callable[[torch.Tensor], torch.Tensor]], Callable[[], object]],
    T: float,
) -> list[Case]:
    """The LLM divergences, each against the formula as one writes it in PyTorch (TRL-style log-space mixtures)."""
    rows = student.shape[0]

    def mixture(log_p: torch.Tensor, log_q: torch.Tensor, a: float) -> torch.Tensor:
        return torch.logsumexp(torch.stack([log_p + math.log(a), log_q + math.log(1 - a)]), dim=0)

    def jsd(s: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
        log_p, log_q = F.log_softmax(teacher / T, -1), F.log_softmax(s / T, -1)
        log_m = mixture(log_p, log_q, beta)
        kl_teacher = F.kl_div(log_m, log_p, reduction="sum", log_target=True)
        kl_student = F.kl_div(log_m, log_q, reduction="sum", log_target=True)
        return (beta * kl_teacher + (1 - beta) * kl_student) / rows * T * T

    def reverse_kl(s: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(teacher / T, -1)
        return F.kl_div(log_p, F.log_softmax(s / T, -1), reduction="batchmean", log_target=True) * T * T

    def skew_kl(s: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
        log_p = F.log_softmax(teacher / T, -1)
        return F.kl_div(mixture(log_p, F.log_softmax(s / T, -1), alpha), log_p, reduction="batchmean", log_target=True) * T * T

    def skew_reverse_kl(s: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
        log_p, log_q = F.log_softmax(teacher / T, -1), F.log_softmax(s / T, -1)
        log_m = mixture(log_p, log_q, 1 - alpha)
        return F.kl_div(log_m, log_q, reduction="batchmean", log_target=True) * T * T

    def tvd(s: torch.Tensor) -> torch.Tensor:
        return 0.5 * (F.softmax(teacher / T, -1) - F.softmax(s / T, -1)).abs().sum() / rows * T * T

    def engine(name: str) -> Callable[[], object]:
        loss = getattr(distill, name)
        return lambda: loss(student, teacher_logits=teacher, temperature=T)

    references = {"jsd": jsd, "reverse_kl": reverse_kl, "skew_kl": skew_kl, "skew_reverse_kl": skew_reverse_kl, "tvd": tvd}
    return [(name, engine(name), autograd(reference)) for name, reference in references.items()]


def paired_seconds(functions: list[Callable[[], object]], repeats: int, seconds: float, device: torch.device) -> list[float]:
    """Median wall time of one call of each, taking them in turn so that drift on a shared machine
    (other tenants, torch's spinning worker threads) and the caches each leaves behind hit all
    alike; at least ``repeats`` rounds, more up to about ``seconds`` in all; CUDA is synchronised."""
    samples: list[list[float]] = [[] for _ in functions]
    for _ in range(3):
        for fn in functions:
            fn()
    start = time.perf_counter()
    for fn in functions:
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    one_round = time.perf_counter() - start
    for _ in range(max(repeats, min(20 * repeats, int(seconds / max(one_round, 1e-9))))):
        for index, fn in enumerate(functions):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            samples[index].append(time.perf_counter() - start)
    return [statistics.median(timings) for timings in samples]


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
    parser.add_argument("--repeats", type=int, default=30, help="rounds at least (default 30)")
    parser.add_argument("--seconds", type=float, default=0.5, help="rounds up to about this long per case, at most 20× --repeats")
    parser.add_argument("--default-allocator", action="store_true", help="leave glibc's malloc thresholds alone")
    parser.add_argument("--shapes", default="64x32000,8x1000", help="comma-separated ROWSxCLASSES")
    parser.add_argument("--losses", default="", help=f"comma-separated, of {', '.join(TRANSCENDENTALS)} (default: all)")
    args = parser.parse_args()
    shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")]
    wanted = set(filter(None, args.losses.split(",")))
    if wanted - set(TRANSCENDENTALS):
        parser.error(f"unknown losses {', '.join(sorted(wanted - set(TRANSCENDENTALS)))}; the cases are {', '.join(TRANSCENDENTALS)}")
    if not args.default_allocator:
        keep_freed_memory()
    device = torch.device(args.device)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")
    header = ("loss", "shape", "engine ms", "autograd ms", "ratio", "floor ms", "/floor", "engine MiB", "autograd MiB", "input MiB")
    print("{:15} {:>13} {:>10} {:>12} {:>6} {:>9} {:>7} {:>11} {:>13} {:>10}".format(*header))
    for rows, classes in shapes:
        passes = transcendental_passes(rows, classes) if device.type == "cpu" else None
        traffic = memory_passes(rows, classes) if device.type == "cpu" else None
        for name, engine, reference in cases(rows, classes, device):
            if wanted and name not in wanted:
                continue
            floor_passes = (traffic if name in FEATURE_LOSSES else passes) or []
            engine_s, reference_s, *pass_s = paired_seconds([engine, reference, *floor_passes], args.repeats, args.seconds, device)
            engine_mb = peak_bytes(engine, device) / 2**20
            reference_mb = peak_bytes(reference, device) / 2**20
            input_mb = rows * classes * 4 / 2**20
            exps, logs = TRANSCENDENTALS[name]
            floor_s = sum(pass_s) if name in FEATURE_LOSSES else (exps * pass_s[0] + logs * pass_s[1] if pass_s else 0.0)
            floor = f"{floor_s * 1e3:9.3f} {engine_s / floor_s:7.2f}" if floor_s else f"{'-':>9} {'-':>7}"
            print(
                f"{name:15} {f'({rows}, {classes})':>13} {engine_s * 1e3:10.4f} {reference_s * 1e3:12.4f} "
                f"{engine_s / reference_s:6.2f} {floor} {engine_mb:11.1f} {reference_mb:13.1f} {input_mb:10.1f}"
            )


if __name__ == "__main__":
    main()
