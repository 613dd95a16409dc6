"""The REST contract models of mailflow.contracts.rest that both sides use: delivery's batched append and
the directory calls, to the wire and back without a field lost or changed."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from pydantic import ValidationError

from mailflow.contracts.rest import (
    Authenticated,
    DeliverRequest,
    DeliverResponse,
    PrincipalOut,
    Resolved,
)
from mailflow.store import wire
from mailflow.store.api import DeliverItem, DeliverResult, Principal, Resolution


def test_a_deliver_call_round_trips_through_the_frame():
    items = [
        DeliverItem(
            key="Q1/a@x.test", recipient="a@x.test", body=b"one\r\n", flags=("\\Seen", "$Work"),
            internal_date=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), queue_id="Q1", trace_id="t1",
        ),  # fmt: skip
        DeliverItem(key="Q1/b@x.test", recipient="b@x.test", body=b"two\r\n", mailbox="Junk"),
    ]
    frame = wire.encode(DeliverRequest.of(items).model_dump(mode="json"), [it.body for it in items])
    head, bodies = wire.decode(frame)
    assert DeliverRequest.model_validate(head).with_bodies(bodies) == items
    with pytest.raises(ValueError, match="differ in number"):
        DeliverRequest.model_validate(head).with_bodies(bodies[:1])
    empty_mailbox = {"items": [{"key": "k", "recipient": "a@x.test", "mailbox": None}]}
    assert DeliverRequest.model_validate(empty_mailbox).with_bodies([b"x"])[0].mailbox == "INBOX"
    with pytest.raises(ValidationError):
        DeliverRequest.model_validate({"items": [{"recipient": "a@x.test"}]})  # no idempotency key


def test_deliver_results_round_trip_and_an_unknown_status_is_refused():
    results = [
        DeliverResult("k1", "stored", users=("a@x.test", "b@x.test")),
        DeliverResult("k2", "quota_exceeded", permanent=True, detail="quota"),
        DeliverResult("k3", "duplicate"),
    ]
    data = DeliverResponse.of(results).model_dump_json()
    assert DeliverResponse.model_validate_json(data).deliver_results() == results
    with pytest.raises(ValidationError):
        DeliverResponse.model_validate({"results": [{"key": "k", "status": "lost"}]})


def test_directory_answers_round_trip():
    res = Resolution("team@x.test", "local", ("a@x.test", "b@x.test"), ("c@elsewhere.test",))
    assert Resolved.model_validate_json(Resolved.of(res).model_dump_json()).resolution() == res
    p = Principal(7, "a@x.test", ("a@x.test", "sales@x.test"), "tok", 3)
    out = Authenticated(principal=PrincipalOut.of(p)).model_dump_json()
    assert Authenticated.model_validate_json(out).principal.principal() == p
    assert Authenticated.model_validate(orjson.loads(b'{"principal": null}')).principal is None
