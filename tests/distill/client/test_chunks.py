"""Row chunks: a request cut into chunks and combined equals the one request, for every reduction."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator

import pytest
import torch

import distill
from distill import LOSSES
from distill.client import AsyncDistillClient, DistillClient, RemoteKLDiv, ServiceError
from distill.client.chunks import Limits, RowSplit, combine
from service.app import create_app
from service.settings import Settings
from tests.distill import inputs
from tests.live import threaded_server

SHAPE = (4, 6, 30)
STUDENT = inputs.logits(SHAPE, torch.float64, 1)
TEACHER = inputs.logits(SHAPE, torch.float64, 2)
LABELS = inputs.labels(SHAPE, 3, ignore_every=5)
#: The first six rows (the first chunk of six) and rows 12–17 are all masked.
MASK = torch.ones(SHAPE[:-1], dtype=torch.bool)
MASK[0] = False
MASK[2] = False
MASK[3, 1] = False
TOP_INDICES = torch.log_softmax(TEACHER, -1).topk(4, -1).indices
TOP_LOG_PROBS = torch.log_softmax(TEACHER, -1).gather(-1, TOP_INDICES)

CASES = {
    "kl_div": ({"teacher_logits": TEACHER, "temperature": 2.0}, ("batchmean", "sum", "mean", "none")),
    "cross_entropy": ({"labels": LABELS, "weight": torch.rand(30, dtype=torch.float64) + 0.5}, ("mean", "sum", "none")),
    "jsd": (
        {"teacher_topk_indices": TOP_INDICES, "teacher_topk_log_probs": TOP_LOG_PROBS, "missing_mass": "tail"},
        ("batchmean", "sum", "mean", "none"),
    ),
    "mse_loss": ({"teacher": TEACHER}, ("mean", "sum", "none")),
}
PARAMETERS = [(name, reduction) for name, (_, reductions) in CASES.items() for reduction in reductions]


def assert_equal_to_one_request(chunked: distill.LossResult, whole: distill.LossResult) -> None:
    torch.testing.assert_close(chunked.loss, whole.loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(chunked.grad, whole.grad, rtol=1e-12, atol=1e-15)
    assert chunked.loss_sum == pytest.approx(whole.loss_sum, rel=1e-12)
    assert chunked.normalizer == pytest.approx(whole.normalizer, rel=1e-12) and chunked.reduction == whole.reduction


@pytest.mark.parametrize(("name", "reduction"), PARAMETERS)
@pytest.mark.parametrize("rows", [1, 5, 6, 24])
def test_engine_answers_of_the_chunks_combine_into_the_one_answer(name, reduction, rows):
    targets, _ = CASES[name]
    spec = LOSSES[name]
    student_name = spec.students[0].name
    tensors = {student_name: STUDENT, **{key: value for key, value in targets.items() if isinstance(value, torch.Tensor)}, "mask": MASK}
    options = {key: value for key, value in targets.items() if not isinstance(value, torch.Tensor)}
    split = RowSplit.of_loss(spec, tensors, STUDENT)
    assert "weight" not in split.per_row
    parts = [split.part(start, min(start + rows, split.rows)) for start in range(0, split.rows, rows)]
    results = [spec.compute(**part, **options, reduction=reduction) for part in parts]
    whole = spec.compute(**tensors, **options, reduction=reduction)
    assert_equal_to_one_request(combine(results, STUDENT), whole)


def test_rows_per_chunk_follow_the_limits():
    split = RowSplit.of_loss(LOSSES["kl_div"], {"student_logits": STUDENT, "teacher_logits": TEACHER}, STUDENT)
    per_row = 2 * 30 * 8 * 4 / 3
    assert split.bytes_per_row("base64") == per_row
    assert split.rows_per_chunk(Limits(10**9, 10**9, 10**12), "base64", 4, chunk_bytes=int(5 * per_row)) == 5
    assert split.rows_per_chunk(Limits(int(7 * per_row / 0.8) + 1, 10**9, 10**12), "base64", 4) == 7
    assert split.rows_per_chunk(Limits(10**9, 10**9, int(2.5 * 4 * 3 * per_row / 0.8) + 8), "base64", 4) == 3
    assert split.rows_per_chunk(Limits(10**9, 95, 10**12), "base64", 4) == 3
    with pytest.raises(ValueError, match="one row"):
        split.rows_per_chunk(Limits(100, 10**9, 10**12), "base64", 4)


@pytest.fixture(scope="module")
def small_server() -> Iterator[str]:
    """A server with a 16 KiB body limit: a (4, 6, 30) float64 request with its teacher (15 KiB in base64) fits one
    request, but not the share of its in-flight budget (64 KiB) that one of four chunks in flight may take."""
    app = create_app(Settings(device="cpu", max_body_bytes=16 << 10))
    with threaded_server(app) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(("name", "reduction"), PARAMETERS)
def test_a_chunked_call_equals_the_one_request(small_server, name, reduction):
    targets, _ = CASES[name]
    student_name = LOSSES[name].students[0].name
    whole = LOSSES[name].compute(**{student_name: STUDENT}, **targets, reduction=reduction, mask=MASK)
    sent = []
    with DistillClient(small_server, chunk_bytes=5_000, chunks_in_flight=3) as client:
        client._http.event_hooks["request"].append(sent.append)
        chunked = client.loss(name, **{student_name: STUDENT}, **targets, reduction=reduction, mask=MASK)
    assert len(sent) >= 2 and all(len(request.content) <= 16 << 10 for request in sent)
    assert_equal_to_one_request(chunked, whole)


def test_the_server_limits_decide_the_chunks(small_server, monkeypatch):
    monkeypatch.setattr("distill.client.http.CHUNKING_THRESHOLD", 1_000)
    whole = distill.kl_div(STUDENT, teacher_logits=TEACHER, mask=MASK)
    paths = []
    with DistillClient(small_server) as client:
        client._http.event_hooks["request"].append(lambda request: paths.append(request.url.path))
        chunked = client.kl_div(STUDENT, teacher_logits=TEACHER, mask=MASK)
        assert client._limits == Limits(16 << 10, 1 << 25, 4 * (16 << 10))
    assert paths[0] == "/v1/info" and paths.count("/v1/kl_div") > 1
    assert_equal_to_one_request(chunked, whole)


def test_the_async_client_chunks_concurrently(small_server):
    async def call() -> distill.LossResult:
        async with AsyncDistillClient(small_server, chunk_bytes=5_000, chunks_in_flight=4) as client:
            return await client.cross_entropy(STUDENT, **CASES["cross_entropy"][0], mask=MASK)

    assert_equal_to_one_request(asyncio.run(call()), distill.cross_entropy(STUDENT, **CASES["cross_entropy"][0], mask=MASK))


def test_remote_modules_backpropagate_through_chunks(small_server):
    leaf = STUDENT.clone().requires_grad_(True)
    with DistillClient(small_server, chunk_bytes=5_000) as client:
        RemoteKLDiv(client, temperature=2.0)(leaf, TEACHER, mask=MASK).backward()
    expected = distill.kl_div(STUDENT, teacher_logits=TEACHER, temperature=2.0, mask=MASK)
    torch.testing.assert_close(leaf.grad, expected.grad, rtol=1e-12, atol=1e-15)


def test_small_requests_are_sent_whole_without_reading_the_limits(small_server):
    paths = []
    with DistillClient(small_server) as client:
        client._http.event_hooks["request"].append(lambda request: paths.append(request.url.path))
        client.kl_div(STUDENT[:1, :1], teacher_logits=TEACHER[:1, :1])
    assert paths == ["/v1/kl_div"]


HIDDEN = inputs.logits((*SHAPE[:-1], 8), torch.float64, 4)
TEACHER_HIDDEN = inputs.logits((*SHAPE[:-1], 8), torch.float64, 5)
OBJECTIVE = [
    distill.Term.kl_div(5.0, teacher_topk_indices=TOP_INDICES, teacher_topk_log_probs=TOP_LOG_PROBS, missing_mass="tail", temperature=2.0),
    distill.Term.cross_entropy(2.0, labels=LABELS, weight=torch.rand(30, dtype=torch.float64) + 0.5),
    distill.Term.cosine_embedding_loss(1.0, student="hidden", teacher=TEACHER_HIDDEN),
    distill.Term.mse_loss(0.5, teacher=TEACHER, reduction="sum"),
]


@pytest.mark.parametrize("term_grads", [False, True])
def test_the_combined_objective_is_chunked_and_combined_exactly(small_server, term_grads):
    whole = distill.distill(STUDENT, OBJECTIVE, student_features={"hidden": HIDDEN}, mask=MASK, term_grads=term_grads)
    paths = []
    with DistillClient(small_server, chunk_bytes=6_000, chunks_in_flight=2) as client:
        client._http.event_hooks["request"].append(lambda request: paths.append(request.url.path))
        chunked = client.distill(STUDENT, OBJECTIVE, student_features={"hidden": HIDDEN}, mask=MASK, term_grads=term_grads)
    assert paths.count("/v1/distill") > 2
    torch.testing.assert_close(chunked.loss, whole.loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(chunked.grad, whole.grad, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(chunked.grads["hidden"], whole.grads["hidden"], rtol=1e-12, atol=1e-15)
    for ours, theirs in zip(chunked.terms, whole.terms, strict=True):
        assert (ours.loss, ours.student, ours.coefficient) == (theirs.loss, theirs.student, theirs.coefficient)
        assert ours.result.loss_sum == pytest.approx(theirs.result.loss_sum, rel=1e-12)
        assert ours.result.normalizer == pytest.approx(theirs.result.normalizer, rel=1e-12)
        if term_grads:
            torch.testing.assert_close(ours.result.grad, theirs.result.grad, rtol=1e-12, atol=1e-15)
        else:
            assert ours.result.grad is None


def test_an_objective_whose_students_differ_in_rows_goes_whole(small_server):
    student, teacher, pooled = STUDENT[:2], TEACHER[:2], HIDDEN[:2, 0]
    terms = [distill.Term.kl_div(teacher_logits=teacher), distill.Term.mse_loss(teacher=torch.zeros_like(pooled), student="pooled")]
    whole = distill.distill(student, terms, student_features={"pooled": pooled})
    paths = []
    with DistillClient(small_server, chunk_bytes=6_000) as client:
        client._http.event_hooks["request"].append(lambda request: paths.append(request.url.path))
        result = client.distill(student, terms, student_features={"pooled": pooled})
    assert paths == ["/v1/distill"]
    torch.testing.assert_close(result.grads["pooled"], whole.grads["pooled"], rtol=1e-12, atol=1e-15)


def test_a_request_refused_as_too_large_is_sent_again_in_chunks(small_server):
    student, teacher = inputs.logits((8, 6, 30), torch.float64, 6), inputs.logits((8, 6, 30), torch.float64, 7)
    paths = []
    with DistillClient(small_server) as client:
        client._http.event_hooks["response"].append(lambda response: paths.append((response.request.url.path, response.status_code)))
        chunked = client.kl_div(student, teacher_logits=teacher)
    assert paths[:2] == [("/v1/kl_div", 413), ("/v1/info", 200)] and len(paths) > 3
    assert_equal_to_one_request(chunked, distill.kl_div(student, teacher_logits=teacher))


@pytest.mark.parametrize(
    ("weight", "pos_weight"),
    [
        (torch.rand(30, dtype=torch.float64), None),
        (torch.rand(1, 1, 30, dtype=torch.float64), torch.rand(30, dtype=torch.float64) + 0.5),
        (torch.rand(SHAPE, dtype=torch.float64), None),
        (torch.rand(6, 30, dtype=torch.float64), torch.rand(4, 6, 1, dtype=torch.float64) + 0.5),
    ],
    ids=["per-class", "broadcast-leading-ones", "per-element", "per-position"],
)
def test_bce_weights_that_vary_over_rows_are_cut_with_them(small_server, weight, pos_weight):
    probs = torch.sigmoid(TEACHER)
    whole = distill.bce(STUDENT, teacher_probs=probs, weight=weight, pos_weight=pos_weight, mask=MASK)
    with DistillClient(small_server, chunk_bytes=6_000) as client:
        chunked = client.bce(STUDENT, teacher_probs=probs, weight=weight, pos_weight=pos_weight, mask=MASK)
        term = distill.Term.bce(0.5, teacher_probs=probs, weight=weight, pos_weight=pos_weight)
        objective = client.distill(STUDENT, [term], mask=MASK)
    assert_equal_to_one_request(chunked, whole)
    torch.testing.assert_close(objective.grad, 0.5 * whole.grad, rtol=1e-12, atol=1e-15)


def test_a_weighted_label_mean_whose_chunks_hold_only_zero_weights_is_still_the_one_answer(small_server):
    """Padding at the end labelled with a class of weight 0: a chunk of padding alone has a zero weight sum."""
    labels = LABELS.clone()
    labels[3] = 0
    weight = torch.rand(30, dtype=torch.float64) + 0.5
    weight[0] = 0.0
    whole = distill.cross_entropy(STUDENT, labels=labels, weight=weight, mask=MASK)
    with DistillClient(small_server, chunk_bytes=2_500) as client:
        assert_equal_to_one_request(client.cross_entropy(STUDENT, labels=labels, weight=weight, mask=MASK), whole)
        with pytest.raises(ValueError, match="sum to 0"):
            client.cross_entropy(STUDENT, labels=torch.zeros_like(labels), weight=weight)


def test_features_shaped_like_the_logits_rows_are_sent_whole(small_server):
    logits, teacher, hidden = STUDENT[:2, :3], TEACHER[:2, :3], HIDDEN[:2, :3, 0]  # hidden (2, 3): 2 rows of 3
    terms = [distill.Term.kl_div(teacher_logits=teacher), distill.Term.cosine_embedding_loss(student="h", teacher=torch.ones(2, 3))]
    whole = distill.distill(logits, terms, student_features={"h": hidden})
    paths = []
    with DistillClient(small_server, chunk_bytes=600) as client:
        client._http.event_hooks["request"].append(lambda request: paths.append(request.url.path))
        result = client.distill(logits, terms, student_features={"h": hidden})
    assert paths == ["/v1/distill"]
    torch.testing.assert_close(result.loss, whole.loss, rtol=1e-12, atol=0)


def test_json_requests_keep_float64_features_exact(small_server):
    logits, hidden = STUDENT[:2].float(), HIDDEN[:2] * 1e-3 + 1
    teacher = hidden + 1e-9
    with DistillClient(small_server, encoding="json") as client:
        result = client.distill(logits, [distill.Term.mse_loss(student="h", teacher=teacher)], student_features={"h": hidden})
    expected = distill.mse_loss(hidden, teacher=teacher)
    torch.testing.assert_close(result.grads["h"], expected.grad, rtol=1e-9, atol=0)


def test_a_body_over_the_in_flight_budget_is_413_and_sent_in_chunks():
    app = create_app(Settings(device="cpu", max_body_bytes=1 << 20, max_inflight_bytes=20_000))
    with threaded_server(app) as port, DistillClient(f"http://127.0.0.1:{port}") as client:
        assert_equal_to_one_request(client.kl_div(STUDENT, teacher_logits=TEACHER), distill.kl_div(STUDENT, teacher_logits=TEACHER))


def test_the_async_client_falls_back_to_chunks_when_the_server_cuts_a_large_body():
    app = create_app(Settings(device="cpu", max_body_bytes=200_000))
    student, teacher = torch.randn(256, 1000), torch.randn(256, 1000)

    async def call() -> distill.LossResult:
        async with AsyncDistillClient(f"http://127.0.0.1:{port}", retries=0) as client:
            return await client.kl_div(student, teacher_logits=teacher)

    with threaded_server(app) as port:
        result = asyncio.run(call())
    expected = distill.kl_div(student, teacher_logits=teacher)
    torch.testing.assert_close(result.loss, expected.loss, rtol=1e-6, atol=0)
    torch.testing.assert_close(result.grad, expected.grad, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("objective", [False, True])
def test_an_error_in_a_chunk_names_the_row_of_the_whole_request(small_server, objective):
    student = STUDENT.clone()
    student[3, 4, 7] = math.nan
    with DistillClient(small_server, chunk_bytes=3_000) as client, pytest.raises(ServiceError) as caught:
        if objective:
            client.distill(student, [distill.Term.kl_div(teacher_logits=TEACHER)])
        else:
            client.kl_div(student, teacher_logits=TEACHER)
    assert caught.value.field == "student_logits" and caught.value.problem["index"] == [3, 4, 7]
    assert "student_logits[3, 4, 7]" in caught.value.detail
