"""Sync and async HTTP clients for the distill service.

Both share one request/response layer (:class:`_Calls`): each loss method builds a :class:`_Call`
(path, body, how to parse the answer) and the client sends it with pooled connections, timeouts,
the API key, and retries with exponential backoff on 503 (honouring ``Retry-After``) and on
connection errors. Loss computations are idempotent, so retrying them is safe. An error answer is
raised as :class:`~distill.client.errors.ServiceError` carrying the server's problem details.
"""

from __future__ import annotations

import asyncio
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from torch import Tensor

from distill.client.errors import ServiceError
from distill.client.wire import Encoding, distill_result, loss_result, request_body, term_body
from distill.objective import Term

RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class _Call:
    path: str
    body: dict[str, Any]
    parse: Callable[[dict[str, Any]], Any]

    @property
    def method(self) -> str:
        return "POST" if self.body else "GET"


class _Calls:
    """Request construction shared by both clients; ``_send`` is the sync or async transport."""

    def __init__(self, *, api_key: str | None, retries: int, backoff: float, max_backoff: float, encoding: Encoding) -> None:
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.encoding: Encoding = encoding
        self.headers = {"content-type": "application/json", "accept": "application/json"}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"

    def _send(self, call: _Call) -> Any:
        raise NotImplementedError

    def kl_div(
        self,
        student_logits: Tensor,
        *,
        teacher_logits: Tensor | None = None,
        teacher_probs: Tensor | None = None,
        teacher_log_probs: Tensor | None = None,
        temperature: float = 1.0,
        scale_t2: bool = True,
        reduction: str = "batchmean",
        mask: Tensor | None = None,
        compute_grad: bool = True,
    ) -> Any:
        """``POST /v1/kl_div``; returns a :class:`~distill.result.LossResult` (awaitable when async)."""
        tensors = {
            "student_logits": student_logits,
            "teacher_logits": teacher_logits,
            "teacher_probs": teacher_probs,
            "teacher_log_probs": teacher_log_probs,
            "mask": mask,
        }
        options = {"temperature": temperature, "scale_t2": scale_t2, "reduction": reduction, "compute_grad": compute_grad}
        return self._send(self._loss("kl_div", tensors, options, student_logits))

    def bce(
        self,
        student_logits: Tensor | None = None,
        *,
        student_probs: Tensor | None = None,
        teacher_logits: Tensor | None = None,
        teacher_probs: Tensor | None = None,
        temperature: float | None = None,
        scale_t2: bool = True,
        weight: Tensor | None = None,
        pos_weight: Tensor | None = None,
        reduction: str = "mean",
        mask: Tensor | None = None,
        compute_grad: bool = True,
    ) -> Any:
        """``POST /v1/bce``; returns a :class:`~distill.result.LossResult` (awaitable when async)."""
        tensors = {
            "student_logits": student_logits,
            "student_probs": student_probs,
            "teacher_logits": teacher_logits,
            "teacher_probs": teacher_probs,
            "weight": weight,
            "pos_weight": pos_weight,
            "mask": mask,
        }
        options = {"temperature": temperature, "scale_t2": scale_t2, "reduction": reduction, "compute_grad": compute_grad}
        student = student_logits if student_logits is not None else student_probs
        if student is None:
            raise ValueError("give student_logits or student_probs")
        return self._send(self._loss("bce", tensors, options, student))

    def cross_entropy(
        self,
        student_logits: Tensor,
        *,
        labels: Tensor | None = None,
        teacher_logits: Tensor | None = None,
        teacher_probs: Tensor | None = None,
        teacher_log_probs: Tensor | None = None,
        temperature: float | None = None,
        scale_t2: bool = True,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
        reduction: str = "mean",
        mask: Tensor | None = None,
        compute_grad: bool = True,
    ) -> Any:
        """``POST /v1/cross_entropy``; returns a :class:`~distill.result.LossResult` (awaitable when async)."""
        tensors = {
            "student_logits": student_logits,
            "labels": labels,
            "teacher_logits": teacher_logits,
            "teacher_probs": teacher_probs,
            "teacher_log_probs": teacher_log_probs,
            "weight": weight,
            "mask": mask,
        }
        options = {
            "temperature": temperature,
            "scale_t2": scale_t2,
            "ignore_index": ignore_index,
            "label_smoothing": label_smoothing,
            "reduction": reduction,
            "compute_grad": compute_grad,
        }
        return self._send(self._loss("cross_entropy", tensors, options, student_logits))

    def distill(
        self,
        student_logits: Tensor,
        terms: Sequence[Term],
        *,
        mask: Tensor | None = None,
        compute_grad: bool = True,
        term_grads: bool = False,
    ) -> Any:
        """``POST /v1/distill``; returns a :class:`~distill.objective.DistillResult` (awaitable when async)."""
        body = request_body(
            {"student_logits": student_logits, "mask": mask}, {"compute_grad": compute_grad, "term_grads": term_grads}, self.encoding
        )
        body["terms"] = [term_body(term, self.encoding) for term in terms]
        return self._send(_Call("/v1/distill", body, lambda answer: distill_result(answer, student_logits)))

    def info(self) -> Any:
        """``GET /v1/info`` as a dict (awaitable when async)."""
        return self._send(_Call("/v1/info", {}, lambda answer: answer))

    def _loss(self, loss: str, tensors: dict[str, Tensor | None], options: dict[str, Any], student: Tensor) -> _Call:
        return _Call(f"/v1/{loss}", request_body(tensors, options, self.encoding), lambda answer: loss_result(answer, student))

    @typing.overload
    def _retry_delay(self, attempt: int, outcome: httpx.TransportError) -> float: ...

    @typing.overload
    def _retry_delay(self, attempt: int, outcome: httpx.Response) -> float | None: ...

    def _retry_delay(self, attempt: int, outcome: httpx.Response | httpx.TransportError) -> float | None:
        """The one retry policy of both clients: seconds to wait before trying again.

        A response that is final (not 502/503/504) gives ``None``. Once the retry budget is spent, a
        retryable response also gives ``None`` (the caller raises its problem) and a connection
        error is re-raised. The wait is the server's Retry-After if given, else exponential backoff.
        """
        exhausted = attempt >= self.retries
        if isinstance(outcome, httpx.TransportError):
            if exhausted:
                raise outcome
            return min(self.backoff * 2**attempt, self.max_backoff)
        if outcome.status_code not in RETRY_STATUSES or exhausted:
            return None
        retry_after = outcome.headers.get("retry-after", "")
        if retry_after.replace(".", "", 1).isdigit():
            return min(float(retry_after), self.max_backoff)
        return min(self.backoff * 2**attempt, self.max_backoff)

    def _content(self, call: _Call) -> bytes | None:
        return orjson.dumps(call.body) if call.body else None

    @staticmethod
    def _answer(call: _Call, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"title": response.reason_phrase, "detail": response.text[:500]}
            raise ServiceError(response.status_code, problem if isinstance(problem, dict) else {"detail": str(problem)})
        return call.parse(orjson.loads(response.content))


class DistillClient(_Calls):
    """Synchronous client with a pooled connection; use as a context manager or call :meth:`close`.

    Args:
        base_url: the service, e.g. ``http://127.0.0.1:8000``.
        api_key: sent as ``Authorization: Bearer`` when given.
        timeout: seconds for connect, read and write.
        retries: extra attempts on 502/503/504 and connection errors.
        backoff / max_backoff: exponential backoff base and cap in seconds.
        encoding: ``base64`` (default, fast and exact) or ``json`` lists.
        transport: an httpx transport (tests use mock transports).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        encoding: Encoding = "base64",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(api_key=api_key, retries=retries, backoff=backoff, max_backoff=max_backoff, encoding=encoding)
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)

    def _send(self, call: _Call) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, content=self._content(call), headers=self.headers)
            except httpx.TransportError as error:
                time.sleep(self._retry_delay(attempt, error))
            else:
                delay = self._retry_delay(attempt, response)
                if delay is None:
                    return self._answer(call, response)
                time.sleep(delay)
            attempt += 1

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DistillClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncDistillClient(_Calls):
    """Asynchronous client; the same methods as :class:`DistillClient`, awaited."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        encoding: Encoding = "base64",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(api_key=api_key, retries=retries, backoff=backoff, max_backoff=max_backoff, encoding=encoding)
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)

    async def _send(self, call: _Call) -> Any:
        attempt = 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, content=self._content(call), headers=self.headers)
            except httpx.TransportError as error:
                await asyncio.sleep(self._retry_delay(attempt, error))
            else:
                delay = self._retry_delay(attempt, response)
                if delay is None:
                    return self._answer(call, response)
                await asyncio.sleep(delay)
            attempt += 1

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncDistillClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
