"""Pytest fixtures over the fakes; import them into a test module to use them:

    from fakes.fixtures import fake_openai  # noqa: F401  (pytest finds fixtures by name)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fakes.openai_server import FakeOpenAI


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A fresh fake OpenAI-compatible server on a free 127.0.0.1 port, stopped after the test."""
    with FakeOpenAI() as fake:
        yield fake
