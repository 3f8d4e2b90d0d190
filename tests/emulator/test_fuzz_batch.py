"""Fuzzing the batch endpoint: ``multipart/mixed`` bodies of random parts (within
the API's limit of parts and beyond it), legal and illegal boundaries, parts
with random requests, Content-IDs (non-ASCII too), nested batches; sent as
raw bytes over a real socket to a fresh in-process emulator.

Besides the invariants of :mod:`tests.support.fuzz` (checked for the batch
and each of its parts): a well-formed batch that is answered 200 has one
answer part per request part, each with the request part's Content-ID as
``<response-ID>``. ``FUZZ_EXAMPLES=N`` runs N examples per test
(``scripts/fuzz_emulator.py``).
"""

from __future__ import annotations

import collections

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.fuzz import check_request, fuzz_case, fuzz_settings, parts_of
from tests.support.fuzz_strategies import Batch, batch_requests

#: Hundreds of cases, each with a server of its own: seconds; scripts/test runs them.
pytestmark = pytest.mark.slow


def echoed(content_id: str | None) -> str | None:
    """The Content-ID of the answer to a part sent with ``content_id``."""
    if not content_id:
        return None
    inner = content_id.strip()
    if inner.startswith("<") and inner.endswith(">"):
        inner = inner[1:-1]
    return f"<response-{inner}>"


@fuzz_settings(150)
@given(batch=batch_requests(), keep_open=st.booleans())
def test_any_batch_keeps_the_invariants(batch: Batch, keep_open: bool) -> None:
    with fuzz_case("batch") as emulator:
        answers = check_request(emulator, batch.request, keep_open)
    whole = [answer for answer in answers if answer.headers.get("content-type", "").startswith("multipart/")]
    if batch.content_ids is not None and whole:
        received = collections.Counter(content_id for content_id, _ in parts_of(whole[0]))
        assert received == collections.Counter(map(echoed, batch.content_ids))
