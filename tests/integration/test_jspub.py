"""BatchPublisher and publish_until_acked against a real nats-server: PubAcks in order, duplicates,
errors per message; a publish tried again while no stream answers, a refusal raised at once."""

from __future__ import annotations

import asyncio
import time

import nats.errors
import nats.js.errors
import pytest
from nats.js.api import DiscardPolicy

from mailflow.contracts import subjects
from mailflow.jspub import BatchPublisher, PubAckError, publish_until_acked


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


async def test_publish_until_acked_waits_out_a_missing_stream_and_stores_once(js):
    """No stream takes the subject for the first second (as while a cluster elects the stream's leader):
    the publish is tried again until one is there; a second copy with the same Nats-Msg-Id is dropped."""
    await js.add_stream(name="LATE", subjects=["late.>"])
    await js.delete_stream("LATE")

    async def create_later():
        await asyncio.sleep(1.0)
        await js.add_stream(name="LATE", subjects=["late.>"])

    started = time.monotonic()
    creating = asyncio.create_task(create_later())
    ack = await publish_until_acked(js, "late.one", b"x", "late-1", timeout=5, attempt=0.5, pause=0.1)
    await creating
    assert ack.stream == "LATE" and not ack.duplicate
    assert 0.9 < time.monotonic() - started < 3
    again = await publish_until_acked(js, "late.one", b"x", "late-1", timeout=5)
    assert again.duplicate and (await js.stream_info("LATE")).state.messages == 1


async def test_publish_until_acked_gives_up_at_the_timeout_and_raises_a_refusal_at_once(js):
    started = time.monotonic()
    with pytest.raises(nats.errors.Error):  # no stream ever: NoStreamResponseError (or no responders)
        await publish_until_acked(js, "nowhere.at.all", b"x", "n-1", timeout=1.0, attempt=0.3, pause=0.1)
    assert 0.9 < time.monotonic() - started < 2
    await js.add_stream(name="FULL", subjects=["full.>"], max_msgs=1, discard=DiscardPolicy.NEW)
    await publish_until_acked(js, "full.a", b"x", "f-1", timeout=5)
    started = time.monotonic()
    with pytest.raises(nats.js.errors.APIError):  # the stream refuses: no point in trying again
        await publish_until_acked(js, "full.b", b"y", "f-2", timeout=5)
    assert time.monotonic() - started < 1
