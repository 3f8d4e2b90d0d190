"""Fuzzing the REST surface: random methods, paths, queries, headers, framing and
bodies, as raw bytes over a real socket to a fresh in-process emulator.

Every request keeps the invariants of :mod:`tests.support.fuzz`: answered or
closed in time, never a 5xx, Google's error body for every error, nothing
changed by a refused request, what a successful one changed matching its
answer, no handler crash, the server serving afterwards.
``FUZZ_EXAMPLES=N`` runs N examples per test (``scripts/fuzz_emulator.py``).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.fuzz import check_request, fuzz_case, fuzz_settings
from tests.support.fuzz_strategies import RawRequest, http_requests

#: Hundreds of cases, each with a server of its own: seconds; scripts/test runs them.
pytestmark = pytest.mark.slow


@fuzz_settings(300)
@given(request=http_requests(), keep_open=st.booleans())
def test_any_request_keeps_the_invariants(request: RawRequest, keep_open: bool) -> None:
    with fuzz_case("rest") as emulator:
        check_request(emulator, request, keep_open)
