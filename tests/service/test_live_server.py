"""A real uvicorn process (``distill-serve``): answers over TCP, graceful SIGTERM (generated clients: tests/openapi)."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
import torch

import distill
from tests.live import free_port, live_server, serve, wait_ready
from tests.tolerances import assert_close

pytestmark = pytest.mark.slow

STUDENT = torch.randn(4, 10, generator=torch.Generator().manual_seed(1))
TEACHER = torch.randn(4, 10, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with live_server() as url:
        yield url


def test_kl_div_over_tcp(server):
    response = httpx.post(
        f"{server}/v1/kl_div", json={"student_logits": STUDENT.tolist(), "teacher_logits": TEACHER.tolist(), "temperature": 2.0}, timeout=30
    )
    assert response.status_code == 200
    expected = distill.kl_div(STUDENT, teacher_logits=TEACHER, temperature=2.0)
    assert response.json()["loss"] == pytest.approx(float(expected.loss), rel=1e-6)
    assert_close(torch.tensor(response.json()["grad"]), expected.grad, torch.float32)


def test_bad_request_over_tcp_is_a_problem_and_server_survives(server):
    response = httpx.post(f"{server}/v1/kl_div", content=b'{"student_logits": [[1, 2], [3]]', timeout=30)
    assert response.status_code == 400
    assert httpx.get(f"{server}/livez", timeout=5).status_code == 200


def test_sigterm_shuts_down_gracefully():
    """Uvicorn runs the lifespan shutdown, then re-raises SIGTERM (so the exit status is -15)."""
    port = free_port()
    process = serve(port, log_level="info")
    wait_ready(f"http://127.0.0.1:{port}", process)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode in (0, -signal.SIGTERM)
    assert b"Application shutdown complete" in output


def test_sigterm_with_a_stalled_upload_answers_it_and_shuts_down_cleanly():
    """The stalled upload is answered 408 (a problem) when the body timeout passes, within the grace period,
    and the server then shuts down as usual; no 500, no traceback."""
    port = free_port()
    process = serve(port, log_level="info", environment={"DISTILL_BODY_TIMEOUT_S": "2"})
    wait_ready(f"http://127.0.0.1:{port}", process)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as stalled:
        stalled.sendall(b"POST /v1/kl_div HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 9000\r\n\r\n{")
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        answer = b""
        while chunk := stalled.recv(65536):
            answer += chunk
    output, _ = process.communicate(timeout=30)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"application/problem+json" in answer and b"body-timeout" in answer
    assert process.returncode in (0, -signal.SIGTERM)
    assert b"Application shutdown complete" in output and b"Traceback" not in output and b" 500" not in output


def _exchange(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_a_body_sent_with_an_h2c_upgrade_offer_is_a_400_that_says_so(server):
    """Java's HttpClient offers h2c with every request; uvicorn's httptools parser then drops the body
    (uvicorn issue 2722). The answer names the cause, closes the connection, and the server goes on."""
    body = b'{"student_logits": [[1.0, 2.0]], "teacher_logits": [[0.0, 1.0]]}'
    head = b"POST /v1/kl_div HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    head += b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
    answer = _exchange(server, head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    assert answer.startswith(b"HTTP/1.1 400 ") and b"upgrade-with-body" in answer and b"connection: close" in answer.lower()
    plain = b"POST /v1/kl_div HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nConnection: close\r\n"
    answer = _exchange(server, plain + b"Upgrade: h2c\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    assert answer.startswith(b"HTTP/1.1 200 ")  # an Upgrade header that the Connection header does not offer is no offer
