"""BatchPublisher against a real nats-server: PubAcks in order, duplicates, errors per message."""

from __future__ import annotations

from mailflow.contracts import subjects
from mailflow.jspub import BatchPublisher, PubAckError


async def test_batch_publish_acks_duplicates_and_errors(js):
    pub = BatchPublisher(js._nc, timeout=2)
    items = [(subjects.DELIVERY_JOB, f"job {i}".encode(), {"Nats-Msg-Id": f"id-{i}"}) for i in range(50)]
    acks = await pub.publish_strict(items)
    assert [a["seq"] for a in acks] == list(range(1, 51)) and {a["stream"] for a in acks} == {"JOBS"}
    again = await pub.publish(items[:2] + [("no.stream.here", b"x", None)])
    assert again[0].get("duplicate") and again[1].get("duplicate")
    assert isinstance(again[2], PubAckError)
    assert (await js.stream_info("JOBS")).state.messages == 50
    assert await pub.publish([]) == []
