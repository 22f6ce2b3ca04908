"""Client for the distill service, and loss modules that backpropagate through it.

from distill.client import DistillClient, RemoteDistillLoss

client = DistillClient("http://127.0.0.1:8000")
criterion = RemoteDistillLoss(client, alpha=0.5, temperature=4.0)
loss = criterion(student(x), teacher_logits, labels)
loss.backward()
"""

from distill.client.errors import ServiceError
from distill.client.http import AsyncDistillClient, DistillClient
from distill.client.modules import RemoteBCE, RemoteCrossEntropy, RemoteDistillLoss, RemoteKLDiv

__all__ = [
    "AsyncDistillClient",
    "DistillClient",
    "RemoteBCE",
    "RemoteCrossEntropy",
    "RemoteDistillLoss",
    "RemoteKLDiv",
    "ServiceError",
]
