"""distill.functional against the same torch.nn.functional call with autograd, measured side by side in one run.

The engine's functional family computes with PyTorch's own functions and autograd (see
distill/functional.py); this measures what its argument handling, reduction bookkeeping and gradient
collection add, on the shapes of hidden-state and metric-learning distillation.

    python -m benchmarks.functional [--shape 4096x4096] [--repeats 20]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchmarks.engine import paired_seconds
from distill import functional
from distill.native.allocator import keep_freed_memory


def cases(rows: int, columns: int) -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    generator = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(rows, columns, generator=generator) for _ in range(3))
    target = torch.ones(rows)

    def autograd(loss: Callable[..., torch.Tensor], *tensors: torch.Tensor, grads: int, **options: object) -> Callable[[], object]:
        def run() -> object:
            leaves = [tensor.detach().requires_grad_(index < grads) for index, tensor in enumerate(tensors)]
            loss(*leaves, **options).backward()
            return [leaf.grad for leaf in leaves[:grads]]

        return run

    return [
        ("mse_loss", lambda: functional.mse_loss(a, b, grad_wrt=["input"]), autograd(F.mse_loss, a, b, grads=1)),
        (
            "cosine_embedding_loss",
            lambda: functional.cosine_embedding_loss(a, b, target),
            autograd(F.cosine_embedding_loss, a, b, target, grads=2),
        ),
        ("triplet_margin_loss", lambda: functional.triplet_margin_loss(a, b, c), autograd(F.triplet_margin_loss, a, b, c, grads=3)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="4096x4096")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rows, columns = (int(n) for n in args.shape.split("x"))
    keep_freed_memory()
    print(f"shape=({rows}, {columns}) float32 torch={torch.__version__} threads={torch.get_num_threads()}")
    print("{:24} {:>10} {:>12} {:>6}".format("function", "engine ms", "autograd ms", "ratio"))
    for name, engine, reference in cases(rows, columns):
        engine_s, autograd_s = paired_seconds([engine, reference], args.repeats, torch.device("cpu"))
        print(f"{name:24} {engine_s * 1e3:10.2f} {autograd_s * 1e3:12.2f} {engine_s / autograd_s:6.2f}")


if __name__ == "__main__":
    main()
