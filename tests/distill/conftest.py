"""Every engine test runs twice: on the compiled kernels (distill.native.kernels) and on torch ops.

The two backends must give the same answers to the same tolerances, so the parity suite is the test
of both. The ``native`` run is skipped where the kernels were not built.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from distill import native


@pytest.fixture(scope="module", params=["native", "torch"], autouse=True)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Select the backend with the process-wide switch (:func:`distill.native.switched`)."""
    if request.param == "native" and not native.kernels.available():
        pytest.skip("the compiled kernels are not built")
    with native.switched(request.param == "native"):
        yield request.param
