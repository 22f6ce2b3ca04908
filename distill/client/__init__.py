"""Client for the distill service, and loss modules that backpropagate through it.

from distill.client import DistillClient, RemoteDistillLoss

client = DistillClient("http://127.0.0.1:8000")
criterion = RemoteDistillLoss(client, alpha=0.5, temperature=4.0)
loss = criterion(student(x), teacher_logits, labels)
loss.backward()

``Remote<Title>`` (``RemoteKLDiv``, ``RemoteBCE``, ``RemoteCrossEntropy``, one per registered loss)
come from :mod:`distill.client.modules`; ``RemoteObjective`` takes any terms, feature terms on named
student tensors included.
"""

from distill.client import modules
from distill.client.errors import ServiceError
from distill.client.http import AsyncDistillClient, DistillClient
from distill.client.modules import RemoteDistillLoss, RemoteLoss, RemoteObjective
from distill.registry import LOSSES

__all__ = [
    "AsyncDistillClient",
    "DistillClient",
    "RemoteDistillLoss",
    "RemoteLoss",
    "RemoteObjective",
    "ServiceError",
    *(f"Remote{spec.title}" for spec in LOSSES.values()),
]


def __getattr__(name: str) -> type[RemoteLoss]:
    """The ``Remote<Title>`` module classes of the registered losses."""
    return modules.__getattr__(name)
