"""Shared test set-up: torch on one thread for the whole session.

Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP threads waiting for each
other make every forward pass tens of times slower.
"""

import pytest

import _tiny


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    with _tiny.single_thread():
        yield
