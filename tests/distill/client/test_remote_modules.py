"""Remote loss modules against a live server: losses and parameter gradients equal local torch."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill import Term
from distill.client import (
    DistillClient,
    RemoteBCE,
    RemoteCrossEntropy,
    RemoteDistillLoss,
    RemoteJSD,
    RemoteKLDiv,
    RemoteObjective,
    RemoteReverseKL,
)
from tests.live import live_server
from tests.tolerances import assert_close

pytestmark = pytest.mark.slow

FEATURES, CLASSES, BATCH = 12, 7, 10


@pytest.fixture(scope="module")
def client() -> Iterator[DistillClient]:
    with live_server() as url, DistillClient(url) as distill_client:
        yield distill_client


def setup(seed: int = 0, dtype: torch.dtype = torch.float32):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(FEATURES, 16), nn.Tanh(), nn.Linear(16, CLASSES)).to(dtype)
    x = torch.randn(BATCH, FEATURES, dtype=dtype)
    teacher = torch.randn(BATCH, CLASSES, dtype=dtype) * 2
    labels = torch.randint(0, CLASSES, (BATCH,))
    return model, x, teacher, labels


def grads_of(model: nn.Module, loss_fn) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    loss = loss_fn()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def check(remote_fn, local_fn, dtype=torch.float32):
    model, x, teacher, labels = setup(dtype=dtype)
    remote_loss, remote_grads = grads_of(model, lambda: remote_fn(model(x), teacher, labels))
    local_loss, local_grads = grads_of(model, lambda: local_fn(model(x), teacher, labels))
    assert_close(remote_loss, local_loss, dtype)
    for remote, local in zip(remote_grads, local_grads, strict=True):
        assert remote.dtype == dtype
        assert_close(remote, local, dtype)


def test_kl_div(client):
    remote = RemoteKLDiv(client, temperature=3.0)
    check(lambda s, t, y: remote(s, t), lambda s, t, y: F.kl_div(F.log_softmax(s / 3, -1), F.softmax(t / 3, -1), reduction="batchmean") * 9)


def test_cross_entropy_hard(client):
    weight = torch.linspace(0.5, 2.0, CLASSES)
    remote = RemoteCrossEntropy(client, weight=weight, label_smoothing=0.1)
    check(lambda s, t, y: remote(s, y), lambda s, t, y: F.cross_entropy(s, y, weight=weight, label_smoothing=0.1))


def test_cross_entropy_soft(client):
    remote = RemoteCrossEntropy(client, temperature=2.0)
    check(lambda s, t, y: remote(s, teacher_logits=t), lambda s, t, y: F.cross_entropy(s / 2, F.softmax(t / 2, -1)) * 4)


def test_jsd_and_reverse_kl(client):
    def jsd(s, t, beta=0.3):
        log_q, log_p = F.log_softmax(s / 2, -1), F.log_softmax(t / 2, -1)
        log_m = torch.logsumexp(torch.stack([log_p + math.log(beta), log_q + math.log(1 - beta)]), dim=0)
        kl_teacher = F.kl_div(log_m, log_p, reduction="sum", log_target=True)
        kl_student = F.kl_div(log_m, log_q, reduction="sum", log_target=True)
        return (beta * kl_teacher + (1 - beta) * kl_student) / s.shape[0] * 4

    remote = RemoteJSD(client, beta=0.3, temperature=2.0)
    check(lambda s, t, y: remote(s, t), lambda s, t, y: jsd(s, t))
    reverse = RemoteReverseKL(client)
    check(
        lambda s, t, y: reverse(s, t),
        lambda s, t, y: F.kl_div(F.log_softmax(t, -1), F.log_softmax(s, -1), reduction="batchmean", log_target=True),
    )


def test_bce(client):
    pos_weight = torch.full((CLASSES,), 1.5)
    remote = RemoteBCE(client, temperature=2.0, pos_weight=pos_weight)
    check(
        lambda s, t, y: remote(s, t),
        lambda s, t, y: F.binary_cross_entropy_with_logits(s / 2, torch.sigmoid(t / 2), pos_weight=pos_weight) * 4,
    )


def test_combined_objective(client):
    remote = RemoteDistillLoss(client, alpha=0.7, temperature=4.0)

    def local(s, t, y):
        return 0.7 * 16 * F.kl_div(F.log_softmax(s / 4, -1), F.softmax(t / 4, -1), reduction="batchmean") + 0.3 * F.cross_entropy(s, y)

    check(lambda s, t, y: remote(s, t, y), local)


def test_custom_terms_and_float64(client):
    remote = RemoteDistillLoss(client, terms=lambda t, y: [Term.bce(0.5, teacher_logits=t), Term.cross_entropy(0.5, labels=y)])

    def local(s, t, y):
        return 0.5 * F.binary_cross_entropy_with_logits(s, torch.sigmoid(t)) + 0.5 * F.cross_entropy(s, y)

    check(lambda s, t, y: remote(s, t, y), local, dtype=torch.float64)


def test_mask_with_sequence_batch(client):
    torch.manual_seed(1)
    student = torch.randn(3, 4, CLASSES, requires_grad=True)
    teacher = torch.randn(3, 4, CLASSES)
    mask = torch.tensor([[True, True, False, False], [True, False, False, False], [True, True, True, True]])
    RemoteKLDiv(client, temperature=2.0)(student, teacher, mask=mask).backward()
    local = student.detach().clone().requires_grad_(True)
    (F.kl_div(F.log_softmax(local[mask] / 2, -1), F.softmax(teacher[mask] / 2, -1), reduction="batchmean") * 4).backward()
    assert_close(student.grad, local.grad, torch.float32)
    assert torch.all(student.grad[~mask] == 0)


def test_no_grad_and_accumulation(client):
    model, x, teacher, _ = setup()
    remote = RemoteKLDiv(client, temperature=2.0)
    with torch.no_grad():
        value = remote(model(x), teacher)
    assert value.requires_grad is False and value.ndim == 0
    model.zero_grad()
    remote(model(x), teacher).backward()
    once = [p.grad.clone() for p in model.parameters()]
    remote(model(x), teacher).backward()
    for accumulated, single in zip((p.grad for p in model.parameters()), once, strict=True):
        assert_close(accumulated, 2 * single, torch.float32)


def test_bfloat16_student_gets_bfloat16_gradient(client):
    student = torch.randn(5, CLASSES, dtype=torch.bfloat16, requires_grad=True)
    teacher = torch.randn(5, CLASSES, dtype=torch.bfloat16)
    loss = RemoteKLDiv(client)(student, teacher)
    (loss * 2).backward()
    assert student.grad.dtype == torch.bfloat16 and loss.dtype == torch.float32
    local = student.detach().float().requires_grad_(True)
    (2 * F.kl_div(F.log_softmax(local, -1), F.softmax(teacher.float(), -1), reduction="batchmean")).backward()
    assert_close(student.grad, local.grad, torch.bfloat16)


def test_reduction_none_is_refused():
    with pytest.raises(ValueError):
        RemoteKLDiv(DistillClient("http://127.0.0.1:9"), reduction="none")


def test_remote_objective_backpropagates_into_hidden_states(client):
    """DistilBERT-style: KL on the logits and 1 − cos on the hidden layer, one call; the parameters below the
    hidden layer get gradients from both terms."""
    torch.manual_seed(3)
    encoder, head = nn.Sequential(nn.Linear(FEATURES, 16), nn.Tanh()), nn.Linear(16, CLASSES)
    x, teacher, teacher_hidden = torch.randn(BATCH, FEATURES), torch.randn(BATCH, CLASSES), torch.randn(BATCH, 16)
    mask = torch.arange(BATCH) % 3 != 0
    remote = RemoteObjective(client)
    terms = [
        Term.kl_div(5.0, teacher_logits=teacher, temperature=2.0),
        Term.cosine_embedding_loss(1.0, student="hidden", teacher=teacher_hidden),
    ]

    def remote_loss():
        hidden = encoder(x)
        return remote(head(hidden), terms, student_features={"hidden": hidden}, mask=mask)

    def local_loss():
        hidden = encoder(x)
        s, t = head(hidden)[mask], teacher[mask]
        kl = F.kl_div(F.log_softmax(s / 2, -1), F.softmax(t / 2, -1), reduction="batchmean") * 4
        h = hidden[mask]
        return 5.0 * kl + F.cosine_embedding_loss(h, teacher_hidden[mask], torch.ones(h.shape[0]))

    model = nn.ModuleList([encoder, head])
    remote_value, remote_grads = grads_of(model, remote_loss)
    local_value, local_grads = grads_of(model, local_loss)
    assert_close(remote_value, local_value, torch.float32)
    for ours, theirs in zip(remote_grads, local_grads, strict=True):
        assert_close(ours, theirs, torch.float32)
