"""Fixtures every test may use; none starts a process. The real OpenBao and the service
processes are in tests/integration/conftest.py, so collecting unit tests never starts them."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from tests.support.pipeline import installed_pipeline


@pytest.fixture
def pipeline() -> Iterator[io.StringIO]:
    """The log pipeline writing into a StringIO; every global it touches is put back."""
    with installed_pipeline() as stream:
        yield stream


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """``@pytest.mark.anyio`` tests run on asyncio only: the services run on uvicorn's
    asyncio loop, and nothing here needs trio."""
    return "asyncio"
