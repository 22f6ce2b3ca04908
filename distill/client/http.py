"""Sync and async HTTP clients for the distill service.

Both share one request/response layer (:class:`_Calls`): one method per registered loss (derived from
:data:`distill.registry.LOSSES`: ``client.kl_div(...)`` takes :func:`distill.kl_div`'s arguments),
the combined objective and ``info``. Each builds a :class:`_Call`
(path, body, how to parse the answer) and the client sends it with pooled connections, timeouts,
the API key, and retries with exponential backoff on 503 (honouring ``Retry-After``) and on
connection errors. Loss computations are idempotent, so retrying them is safe. An error answer is
raised as :class:`~distill.client.errors.ServiceError` carrying the server's problem details.
"""

from __future__ import annotations

import asyncio
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import torch
from torch import Tensor

from distill.client.chunks import (
    CHUNKING_THRESHOLD,
    Limits,
    ObjectiveRows,
    RowSplit,
    combine,
    combine_objective,
    combine_sums,
    weighted_label_mean,
)
from distill.client.errors import ServiceError
from distill.client.wire import Encoding, distill_result, encode_tensor, loss_result, request_body, term_body
from distill.objective import LOGITS, Term
from distill.registry import LOSSES
from distill.result import LossResult
from distill.rows.layout import unravel

RETRY_STATUSES = frozenset({502, 503, 504})
#: A connection cut while sending a body larger than this may be the server refusing its size.
TRANSPORT_SUSPECT_BYTES = 1 << 16


@dataclass(frozen=True)
class _RowRequest:
    """A request before it is encoded: sent whole, or cut into row chunks whose answers are combined.

    Attributes:
        split: its tensors by rows (the chunk planning reads their sizes).
        whole: the call of the whole request.
        chunk: the call of rows ``start:stop`` (its body encoded when it is made, as it is sent).
        combine: the chunks' answers, in row order, into the answer of the whole request.
        key: the ``split`` key of a request field, so that an error in a chunk names the row of the
            whole request (None for fields not cut by rows).
    """

    split: RowSplit
    whole: Callable[[], _Call]
    chunk: Callable[[int, int], _Call]
    combine: Callable[[list[Any]], Any]
    key: Callable[[str], str | None]

    def located(self, error: ServiceError, start: int) -> ServiceError:
        """``error`` from the chunk starting at row ``start``, with its index as the whole request's."""
        index, field = error.problem.get("index"), error.field
        key = None if field is None else self.key(field)
        if not index or key is None or key not in self.split.per_row:
            return error
        lead = self.split.lead_shape
        whole = [*unravel(start + int(index[0]), lead), *index[1:]] if lead else list(index[1:])
        detail = error.detail.replace(f"{field}[{', '.join(map(str, index))}]", f"{field}[{', '.join(map(str, whole))}]", 1)
        return ServiceError(error.status, {**error.problem, "index": whole, "detail": detail})


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

    def __init__(
        self,
        *,
        api_key: str | None,
        retries: int,
        backoff: float,
        max_backoff: float,
        encoding: Encoding,
        chunks_in_flight: int,
        chunk_bytes: int | None,
    ) -> None:
        if chunks_in_flight < 1:
            raise ValueError(f"chunks_in_flight must be at least 1, got {chunks_in_flight}")
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.encoding: Encoding = encoding
        self.chunks_in_flight = chunks_in_flight
        self.chunk_bytes = chunk_bytes
        self._limits: Limits | None = None
        self.headers = {"content-type": "application/json", "accept": "application/json"}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"

    def _send(self, call: _Call) -> Any:
        raise NotImplementedError

    def loss(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``POST /v1/<name>`` for the registered loss ``name`` with that loss's engine arguments.

        Returns a :class:`~distill.result.LossResult` (awaitable when async). The same call is
        available as ``client.<name>(...)``, with the engine function's signature. Tensor arguments
        may also be anything ``torch.as_tensor`` reads (nested lists, NumPy arrays).

        Raises:
            ValueError: ``name`` is not a registered loss, or no student input is given.
            TypeError: arguments the loss does not take.
        """
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; registered: {', '.join(LOSSES)}")
        spec = LOSSES[name]
        arguments = spec.signature.bind(*args, **kwargs).arguments
        for tensor_name in (*(tensor.name for tensor in spec.inputs), "mask"):
            value = arguments.get(tensor_name)
            if value is not None and not isinstance(value, Tensor):
                arguments[tensor_name] = torch.as_tensor(value)
        student = next((arguments[tensor.name] for tensor in spec.students if arguments.get(tensor.name) is not None), None)
        if student is None:
            raise ValueError(f"give {' or '.join(tensor.name for tensor in spec.students)}")
        tensors = {key: value for key, value in arguments.items() if isinstance(value, Tensor)}
        options = {key: value for key, value in arguments.items() if not isinstance(value, Tensor)}
        split = RowSplit.of_loss(spec, tensors, student)
        summed = weighted_label_mean(name, arguments)

        def call(part: dict[str, Tensor], chunk: bool) -> _Call:
            sent = {**options, "reduction": "sum"} if chunk and summed is not None else options
            return _Call(f"/v1/{name}", request_body(part, sent, self.encoding), lambda answer: loss_result(answer, student))

        def combined(parts: list[LossResult]) -> LossResult:
            return combine(parts, student) if summed is None else combine_sums(parts, student, summed)

        def chunk(start: int, stop: int) -> _Call:
            return call(split.part(start, stop), True)

        return self._send_rows(_RowRequest(split, lambda: call(tensors, False), chunk, combined, lambda field: field))

    def _send_rows(self, request: _RowRequest) -> Any:
        """Send a request whole, or in row chunks (:mod:`distill.client.chunks`) when it outgrows the server."""
        raise NotImplementedError

    def _wants_limits(self, request: _RowRequest) -> bool:
        """Whether the server's limits must be read before deciding how to send ``request``."""
        split = request.split
        return (
            self._limits is None
            and self.chunk_bytes is None
            and split.rows > 1
            and split.estimated_bytes(self.encoding) > CHUNKING_THRESHOLD
        )

    def _maybe_too_large(self, request: _RowRequest, error: ServiceError | httpx.TransportError) -> bool:
        """Whether sending ``request`` whole failed perhaps for its size: a 413, or the connection cut while
        a body of some size went out (a server refusing a body before reading it closes the connection,
        and a client still writing may see that instead of the 413)."""
        if request.split.rows <= 1:
            return False
        if isinstance(error, ServiceError):
            return error.status == 413
        return request.split.estimated_bytes(self.encoding) > TRANSPORT_SUSPECT_BYTES

    def _chunk_ranges(
        self, request: _RowRequest, refused: ServiceError | httpx.TransportError | None = None
    ) -> list[tuple[int, int]] | None:
        """The row ranges to send, or None to send the request whole. ``refused``: sending it whole failed
        (:meth:`_maybe_too_large`): after a 413 it is cut whatever the estimate says (in halves at least);
        after a cut connection, only if the server's limits say it is too large."""
        split = request.split
        small = self.chunk_bytes is None and split.estimated_bytes(self.encoding) <= CHUNKING_THRESHOLD
        if split.rows <= 1 or (small and refused is None):
            return None
        limits = self._limits or Limits(1 << 62, 1 << 62, 1 << 62)
        rows = split.rows_per_chunk(limits, self.encoding, self.chunks_in_flight, self.chunk_bytes)
        if isinstance(refused, ServiceError):
            rows = min(rows, (split.rows + 1) // 2)
        if rows >= split.rows:
            return None
        return [(start, min(start + rows, split.rows)) for start in range(0, split.rows, rows)]

    def __getattr__(self, name: str) -> Callable[..., Any]:
        """``client.kl_div(...)`` and so on: :meth:`loss` for each registered loss."""
        if name not in LOSSES:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        spec = LOSSES[name]

        def method(*args: Any, **kwargs: Any) -> Any:
            return self.loss(name, *args, **kwargs)

        method.__name__ = method.__qualname__ = name
        method.__doc__ = f"``POST /v1/{name}``: {spec.summary}; arguments as :func:`distill.{name}`."
        method.__signature__ = spec.signature.replace(return_annotation=Any)  # type: ignore[attr-defined]
        return method

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *LOSSES]

    def distill(
        self,
        student_logits: Tensor,
        terms: Sequence[Term],
        *,
        student_features: Mapping[str, Tensor] | None = None,
        mask: Tensor | None = None,
        compute_grad: bool = True,
        term_grads: bool = False,
    ) -> Any:
        """``POST /v1/distill`` with :func:`distill.distill`'s arguments; returns a
        :class:`~distill.objective.DistillResult` (awaitable when async). Sent in row chunks, like a
        loss, when it outgrows the server and every student has the logits' leading shape."""
        logits = torch.as_tensor(student_logits)
        features = {name: torch.as_tensor(value) for name, value in (student_features or {}).items()}
        mask = None if mask is None else torch.as_tensor(mask)
        students = {LOGITS: logits, **features}
        rows = ObjectiveRows.of(students, mask, terms)

        def call(part: tuple[int, int] | None) -> _Call:
            chunk_students, chunk_mask, chunk_terms = rows.take(students, mask, terms, part)
            options = {"compute_grad": compute_grad, "term_grads": term_grads or part is not None}
            body = request_body({LOGITS: chunk_students[LOGITS], "mask": chunk_mask}, options, self.encoding)
            if features:
                body["student_features"] = {name: encode_tensor(chunk_students[name], self.encoding) for name in features}
                if self.encoding == "json" and any(tensor.dtype == torch.float64 for tensor in features.values()):
                    body["dtype"] = "float64"  # JSON lists are read as the request's one dtype: keep float64 features exact
            body["terms"] = [term_body(term, self.encoding) for term in chunk_terms]
            named = {name: chunk_students[name] for name in features}
            return _Call("/v1/distill", body, lambda answer: distill_result(answer, chunk_students[LOGITS], named))

        return self._send_rows(
            _RowRequest(
                rows.split if rows.chunkable else RowSplit(1, (), {}, {}),
                lambda: call(None),
                lambda start, stop: call((start, stop)),
                lambda parts: combine_objective(parts, terms, students, term_grads),
                _objective_key,
            )
        )

    def info(self) -> Any:
        """``GET /v1/info`` as a dict (awaitable when async)."""
        return self._send(_Call("/v1/info", {}, lambda answer: answer))

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

    Calls: ``client.<loss>(...)`` for every registered loss (``kl_div``, ``bce``, ``cross_entropy``,
    …), taking the engine function's arguments (``client.kl_div(s, teacher_logits=t, temperature=2.0)``)
    and returning a :class:`~distill.result.LossResult`; the same as ``client.loss("kl_div", ...)``.
    :meth:`distill` for the combined objective, :meth:`info` for the server's description.

    Args:
        base_url: the service, e.g. ``http://127.0.0.1:8000``.
        api_key: sent as ``Authorization: Bearer`` when given.
        timeout: seconds for connect, read and write.
        retries: extra attempts on 502/503/504 and connection errors.
        backoff / max_backoff: exponential backoff base and cap in seconds.
        encoding: ``base64`` (default, fast and exact) or ``json`` lists.
        chunks_in_flight: a request too large for the server (estimated over 16 MiB and checked against
            ``GET /v1/info``'s limits, read once; or answered 413 whole) is sent as row chunks, this many
            at once, and their answers combined exactly (:mod:`distill.client.chunks`).
        chunk_bytes: the body size to cut chunks to instead of the server's limits (any request over
            it is chunked).
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
        chunks_in_flight: int = 4,
        chunk_bytes: int | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            encoding=encoding,
            chunks_in_flight=chunks_in_flight,
            chunk_bytes=chunk_bytes,
        )
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)

    def _send_rows(self, request: _RowRequest) -> Any:
        if self._wants_limits(request):
            self._limits = Limits.from_info(self.info())
        ranges = self._chunk_ranges(request)
        if ranges is None:
            try:
                return self._send(request.whole())
            except (ServiceError, httpx.TransportError) as error:
                if not self._maybe_too_large(request, error):
                    raise
                if self._limits is None:
                    self._limits = Limits.from_info(self.info())
                ranges = self._chunk_ranges(request, refused=error)
                if ranges is None:
                    raise
        with ThreadPoolExecutor(max_workers=min(self.chunks_in_flight, len(ranges)), thread_name_prefix="distill-chunk") as pool:
            results = list(pool.map(lambda rows: self._send_chunk(request, rows), ranges))
        return request.combine(results)

    def _send_chunk(self, request: _RowRequest, rows: tuple[int, int]) -> Any:
        try:
            return self._send(request.chunk(*rows))
        except ServiceError as error:
            raise request.located(error, rows[0]) from None

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


def _objective_key(field: str) -> str | None:
    """The :class:`~distill.client.chunks.ObjectiveRows` key of a ``/v1/distill`` field."""
    if field == LOGITS:
        return f"student.{LOGITS}"
    if field.startswith("student_features."):
        return "student." + field.removeprefix("student_features.")
    if field.startswith("terms."):
        return field.removeprefix("terms.")
    return field


class AsyncDistillClient(_Calls):
    """Asynchronous client; the same methods and arguments as :class:`DistillClient`, awaited (chunks are
    sent concurrently on the event loop)."""

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
        chunks_in_flight: int = 4,
        chunk_bytes: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            encoding=encoding,
            chunks_in_flight=chunks_in_flight,
            chunk_bytes=chunk_bytes,
        )
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)

    async def _send_rows(self, request: _RowRequest) -> Any:
        if self._wants_limits(request):
            self._limits = Limits.from_info(await self.info())
        ranges = self._chunk_ranges(request)
        if ranges is None:
            try:
                return await self._send(request.whole())
            except (ServiceError, httpx.TransportError) as error:
                if not self._maybe_too_large(request, error):
                    raise
                if self._limits is None:
                    self._limits = Limits.from_info(await self.info())
                ranges = self._chunk_ranges(request, refused=error)
                if ranges is None:
                    raise
        slots = asyncio.Semaphore(self.chunks_in_flight)

        async def send(rows: tuple[int, int]) -> Any:
            async with slots:
                try:
                    return await self._send(request.chunk(*rows))
                except ServiceError as error:
                    raise request.located(error, rows[0]) from None

        results = await asyncio.gather(*(send(rows) for rows in ranges))
        return request.combine(list(results))

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
