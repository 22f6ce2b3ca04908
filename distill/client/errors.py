"""Errors raised by the client."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """The service answered with an error; carries its RFC 9457 problem details.

    Attributes:
        status: HTTP status code.
        problem: the problem object (``type``, ``title``, ``detail``, ``field``, ``index`` …).
    """

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        super().__init__(f"{status} {problem.get('title', 'error')}: {problem.get('detail', '')}")

    @property
    def field(self) -> str | None:
        """The request field at fault, when the service named one."""
        return self.problem.get("field")

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail", ""))
