"""MTA-STS (RFC 8461) on the sending side, with real parts: a DNS server the test starts (MX, TXT, A),
the real resolver service answering over a real nats-server, an HTTPS server serving the policies
with a certificate from a CA the test makes, receiving MTAs (aiosmtpd) on 127.0.0.2x with STARTTLS
and certificates from that CA (valid, for the wrong name, expired) or without STARTTLS, and the
policy cache in the real KV bucket. Each outcome is asserted on the delivery result and its report."""

from __future__ import annotations

import asyncio
import ssl
from datetime import UTC, datetime

import pytest
from aiosmtpd.controller import Controller

from mailflow import mtasts, natsconn, tls
from mailflow.contracts.messages import DeliveryJob, Recipient
from mailflow.dns import MxClient
from mailflow_delivery.app import policies, remote_config
from mailflow_delivery.mtasts import KvPolicyStore
from mailflow_delivery.routing import Deliveries
from mailflow_delivery.settings import Settings
from mailflow_smtp_ingress.app import https_server
from mailflow_smtp_ingress.directory import CachedDirectory
from mailflow_smtp_ingress.handler import IngressHandler
from mailflow_smtp_ingress.server import SmtpServer
from mailflow_smtp_ingress.settings import Settings as IngressSettings
from services.delivery.tests.support import Handler
from tests.support import free_port
from tests.support.dns import DnsServer
from tests.support.doubles import MemoryBodies, MemoryQueue, MemorySentLog
from tests.support.pki import TestCa
from tests.support.resolver import resolver_service
from tests.support.store import LocalStore

GOOD, NOTLS, WRONG, EXPIRED = "127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"


def policy(mode: str, *mx: str, max_age: int = 86400) -> bytes:
    return ("version: STSv1\r\n" + f"mode: {mode}\r\n" + "".join(f"mx: {m}\r\n" for m in mx) + f"max_age: {max_age}\r\n").encode()


# domain -> (TXT id, MX host and its address, the policy file)
DOMAINS = {
    "good.test": ("g1", "mx.good.test", GOOD, policy("enforce", "*.good.test")),
    "notls.test": ("n1", "mx.notls.test", NOTLS, policy("enforce", "mx.notls.test")),
    "wrong.test": ("w1", "mx.wrong.test", WRONG, policy("enforce", "mx.wrong.test")),
    "expired.test": ("e1", "mx.expired.test", EXPIRED, policy("enforce", "mx.expired.test")),
    "unlisted.test": ("u1", "mx.good.test", GOOD, policy("enforce", "mx.elsewhere.test")),
    "testing.test": ("t1", "mx.testing.test", NOTLS, policy("testing", "mx.testing.test")),
    "nopolicy.test": (None, "mx.nopolicy.test", NOTLS, b""),
    "broken.test": ("b1", "mx.broken.test", NOTLS, b"version: STSv1\r\nmode: enforce\r\n"),
}


def zone(https: str) -> str:
    lines = []
    for domain, (pid, mx, address, _) in DOMAINS.items():
        lines.append(f"{domain}. 300 IN MX 10 {mx}.")
        if mx != "mx.good.test" or domain == "good.test":
            lines.append(f"{mx}. 300 IN A {address}")
        if pid:
            ttl = 0 if domain == "expired.test" else 300  # not cached: a test changes it
            lines.append(f'_mta-sts.{domain}. {ttl} IN TXT "v=STSv1; id={pid};"')
            lines.append(f"mta-sts.{domain}. 300 IN A {https}")
    # two MX: the first with an expired certificate, the second good
    lines += ["twomx.test. 300 IN MX 10 mx1.twomx.test.", "twomx.test. 300 IN MX 20 mx2.twomx.test.", f"mx1.twomx.test. 300 IN A {EXPIRED}", f"mx2.twomx.test. 300 IN A {GOOD}"]
    lines += ['_mta-sts.twomx.test. 300 IN TXT "v=STSv1; id=x1"', f"mta-sts.twomx.test. 300 IN A {https}"]
    return "\n".join(lines)


class PolicyServer:
    """HTTPS on 127.0.0.1: GET /.well-known/mta-sts.txt answers the policy of the Host's domain
    (`answers[domain]`: (status line, content type, body)); `requests` counts them per domain."""

    def __init__(self, ca: TestCa):
        cert, key = ca.issue(*(f"mta-sts.{d}" for d in [*DOMAINS, "twomx.test"]))
        self.ctx = tls.server_context(str(cert), str(key))
        self.answers = {d: ("200 OK", "text/plain; charset=utf-8", p) for d, (_, _, _, p) in DOMAINS.items()}
        self.answers["twomx.test"] = ("200 OK", "text/plain", policy("enforce", "mx1.twomx.test", "mx2.twomx.test"))
        self.requests: dict[str, int] = {}

    async def start(self) -> PolicyServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ctx)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            head = await r.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            host = next(v.strip() for k, _, v in (x.partition(":") for x in lines[1:]) if k.lower() == "host")
            assert lines[0] == "GET /.well-known/mta-sts.txt HTTP/1.0", lines[0]
            domain = host.removeprefix("mta-sts.")
            self.requests[domain] = self.requests.get(domain, 0) + 1
            status, ctype, body = self.answers.get(domain, ("404 Not Found", "text/plain", b"no"))
            w.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nLocation: https://elsewhere.test/\r\n\r\n".encode() + body)
            await w.drain()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()


class Mta:
    """aiosmtpd on `host`:`port`, STARTTLS with a certificate from the test's CA (or none)."""

    def __init__(self, host: str, port: int, ctx: ssl.SSLContext | None):
        self.handler = Handler()
        self.controller = Controller(self.handler, hostname=host, port=port, server_hostname=host, tls_context=ctx, require_starttls=False)

    @property
    def rcpts(self) -> list[str]:
        return [r for m in self.handler.messages for r in m.rcpts]


@pytest.fixture
async def world(tmp_path, nats_url, js, store):
    """(make, policy server, MTAs by address): make(**settings) -> Deliveries with MTA-STS on, its
    policy cache in the KV bucket, all DNS through the resolver service."""
    ca = TestCa(tmp_path / "ca")
    port = free_port(GOOD)
    mtas = {
        GOOD: Mta(GOOD, port, tls.server_context(*map(str, ca.issue("mx.good.test", "mx2.twomx.test")))),
        NOTLS: Mta(NOTLS, port, None),
        WRONG: Mta(WRONG, port, tls.server_context(*map(str, ca.issue("mx.somebody-else.test")))),
        EXPIRED: Mta(EXPIRED, port, tls.server_context(*map(str, ca.issue("mx.expired.test", "mx1.twomx.test", expired=True)))),
    }
    for m in mtas.values():
        m.controller.start()
    web = await PolicyServer(ca).start()
    nc = await natsconn.connect(nats_url, "test")
    try:
        with DnsServer(zone("127.0.0.1")) as dns:
            async with resolver_service(nats_url, dns, probe=("mx.good.test", "A")) as client:
                kv = await KvPolicyStore.open(js)

                def make(**kw) -> Deliveries:
                    values = dict(service_token="t", remote_port=port, mta_sts_port=web.port, tls_ca_file=str(ca.cert), helo_name="mx.daum.test")
                    values.update({f"{t}_timeout": 5 for t in ("connect", "greeting", "command", "data_start", "data_end", "mta_sts")})
                    values.update(kw)
                    s = Settings(**values)
                    return Deliveries(store, store, MemoryBodies(), MxClient(nc, 5), MemorySentLog(), remote_config(s), policies=policies(s, client, kv))

                make.dns, make.port, make.ca = dns, port, ca
                yield make, web, mtas
    finally:
        await natsconn.close(nc)
        await web.stop()
        for m in mtas.values():
            m.controller.stop()


def jobs(qid: str, *rcpts: str) -> list[DeliveryJob]:
    body = f"From: a@daum.test\r\nSubject: sts\r\nMessage-ID: <{qid}@daum.test>\r\n\r\nHello\r\n".encode()
    return [
        DeliveryJob(queue_id=qid, trace_id="t-" + qid, attempt=1, mail_from="a@daum.test", rcpt=Recipient(address=r), body_ref=f"inline:{qid}", body=body, size=len(body), received_at=datetime.now(UTC))
        for r in rcpts
    ]


def failures(r) -> list[tuple[str, str]]:
    return [(f.result_type, f.receiving_mx_hostname) for f in r.tls.failures]


async def test_enforce_delivers_over_verified_tls_to_a_listed_mx(world):
    make, web, mtas = world
    (r,), traces = await make().run(jobs("S1", "a@good.test"))
    assert (r.outcome, r.status, r.remote_mta) == ("delivered", "2.0.0", "mx.good.test")
    assert [t.detail.split(": 250")[0] for t in traces if t.step == "delivery"] == ["delivered <a@good.test> 2.0.0 via mx: MTA-STS enforce met"]
    assert (r.tls.policy_type, r.tls.policy_mode, r.tls.policy_id, r.tls.mx, r.tls.success, r.tls.failures) == ("sts", "enforce", "g1", ["*.good.test"], True, [])
    assert mtas[GOOD].rcpts == ["a@good.test"] and mtas[GOOD].handler.messages[0].tls


@pytest.mark.parametrize(
    "rcpt, status, result_type, why",
    [
        ("a@notls.test", "4.7.4", "starttls-not-supported", "STARTTLS required by policy but not offered"),
        ("a@wrong.test", "4.7.5", "certificate-host-mismatch", "certificate verify failed"),
        ("a@expired.test", "4.7.5", "certificate-expired", "certificate has expired"),
    ],
    ids=["no-starttls", "wrong-name", "expired"],
)
async def test_enforce_defers_when_tls_cannot_be_verified(world, rcpt, status, result_type, why):
    make, _, mtas = world
    (r,), _ = await make().run(jobs("S2", rcpt))
    domain = rcpt.split("@")[1]
    assert (r.outcome, r.status) == ("deferred", status)
    assert r.diagnostic.startswith(f"451 {status} MTA-STS policy of {domain} (enforce, id ") and why in r.diagnostic
    assert failures(r) == [(result_type, f"mx.{domain}")] and not r.tls.success
    assert all(m.rcpts == [] for m in mtas.values())  # not a byte of mail in clear or to the wrong host


async def test_enforce_defers_when_no_mx_is_in_the_policy(world):
    make, _, mtas = world
    (r,), _ = await make().run(jobs("S3", "a@unlisted.test"))
    assert (r.outcome, r.status) == ("deferred", "4.7.0")
    assert r.diagnostic == "451 4.7.0 MTA-STS policy of unlisted.test (enforce, id u1) allows none of its MX hosts (mx.good.test): not delivered"
    assert failures(r) == [("validation-failure", "mx.good.test")]
    assert mtas[GOOD].rcpts == []  # the host would have taken it, with a valid certificate: never asked


async def test_enforce_skips_an_mx_that_fails_and_delivers_to_the_next(world):
    make, _, mtas = world
    (r,), _ = await make().run(jobs("S4", "a@twomx.test"))
    assert (r.outcome, r.remote_mta) == ("delivered", "mx2.twomx.test")
    assert failures(r) == [("certificate-expired", "mx1.twomx.test")] and r.tls.success
    assert mtas[EXPIRED].rcpts == [] and mtas[GOOD].rcpts == ["a@twomx.test"]


async def test_testing_mode_reports_and_delivers_anyway(world):
    make, _, mtas = world
    (r,), _ = await make().run(jobs("S5", "a@testing.test"))
    assert (r.outcome, r.remote_mta) == ("delivered", "mx.testing.test")
    assert (r.tls.policy_mode, r.tls.success) == ("testing", False)
    assert failures(r) == [("starttls-not-supported", "mx.testing.test")]
    assert mtas[NOTLS].rcpts == ["a@testing.test"]


async def test_no_policy_and_a_broken_policy_deliver_as_before(world):
    make, web, mtas = world
    results, _ = await make().run(jobs("S6", "a@nopolicy.test", "b@broken.test"))
    assert [(r.outcome, r.tls.policy_type) for r in results] == [("delivered", "no-policy-found")] * 2
    # the receiver offers no STARTTLS: delivered in clear as before, and a TLS report says so
    assert [f.result_type for f in results[0].tls.failures] == ["starttls-not-supported"] and not results[0].tls.success
    problem, plain = results[1].tls.failures
    assert problem.result_type == "sts-policy-invalid" and "max_age" in problem.detail
    assert plain.result_type == "starttls-not-supported"
    assert sorted(mtas[NOTLS].rcpts) == ["a@nopolicy.test", "b@broken.test"]
    assert "nopolicy.test" not in web.requests  # no TXT record: nothing fetched


@pytest.mark.parametrize(
    "answer, result_type, why",
    [
        (("301 Moved Permanently", "text/plain", b""), "sts-policy-fetch-error", "redirects are not followed"),
        (("200 OK", "text/html", policy("enforce", "mx.good.test")), "sts-policy-invalid", "not text/plain"),
        (("200 OK", "text/plain", b"version: STSv1\n" + b"x" * 70_000), "sts-policy-invalid", "at most 65536"),
    ],
    ids=["redirect", "html", "too-large"],
)
async def test_a_policy_that_cannot_be_had_is_no_policy_and_is_reported(world, answer, result_type, why):
    make, web, mtas = world
    web.answers["good.test"] = answer
    (r,), _ = await make().run(jobs("S7", "a@good.test"))
    assert (r.outcome, r.tls.policy_type) == ("delivered", "no-policy-found")
    (problem,) = r.tls.failures
    assert problem.result_type == result_type and why in problem.detail


async def test_a_policy_server_with_a_certificate_we_do_not_trust_is_no_policy(world):
    make, web, _ = world
    (r,), _ = await make(tls_ca_file="").run(jobs("S8", "a@good.test"))  # the system's CAs only
    assert (r.outcome, r.tls.policy_type) == ("delivered", "no-policy-found")  # opportunistic, as without MTA-STS
    assert [f.result_type for f in r.tls.failures] == ["sts-webpki-invalid"]


async def test_the_policy_is_fetched_once_for_many_messages_and_kept_across_a_restart(world):
    make, web, mtas = world
    d = make()
    batches = await asyncio.gather(*(d.run(jobs(f"M{n}", f"u{n}@good.test")) for n in range(5)))
    later, _ = await d.run(jobs("M9", "u9@good.test", "v9@good.test"))
    assert [r.outcome for rs, _ in batches for r in rs] + [r.outcome for r in later] == ["delivered"] * 7
    assert web.requests["good.test"] == 1
    # a new delivery process (same KV bucket): the policy comes from the cache, even with the web server down
    await web.stop()
    restarted = make()
    (r,), _ = await restarted.run(jobs("M10", "a@notls.test"))  # notls.test was never fetched: no policy now
    assert (r.outcome, r.tls.policy_type, r.tls.failures[0].result_type) == ("delivered", "no-policy-found", "sts-policy-fetch-error")
    (r,), _ = await restarted.run(jobs("M11", "w@good.test"))
    assert (r.outcome, r.tls.policy_id, r.tls.success) == ("delivered", "g1", True)
    assert restarted.policies.fetches == 1  # notls.test's, which failed; good.test's policy came from the bucket


async def test_a_new_txt_id_fetches_again_and_a_failed_refresh_keeps_the_cached_policy(world):
    make, web, mtas = world
    d = make()
    await d.run(jobs("C1", "a@expired.test"))  # enforce: deferred, policy e1 cached
    (r,), _ = await d.run(jobs("C2", "a@expired.test"))
    assert web.requests["expired.test"] == 1 and r.tls.policy_id == "e1"
    # the domain publishes a new id (TTL 0: seen at once), but its policy server now fails: the
    # cached policy still holds (RFC 8461 §5.1), and the failed fetch is not tried again at once
    make.dns.records = [rr for rr in make.dns.records if str(rr.rname) != "_mta-sts.expired.test."]
    make.dns.add('_mta-sts.expired.test. 0 IN TXT "v=STSv1; id=e2;"')
    web.answers["expired.test"] = ("500 Internal Server Error", "text/plain", b"")
    for qid in ("C3", "C4"):
        (r,), _ = await d.run(jobs(qid, "a@expired.test"))
        assert (r.outcome, r.status, r.tls.policy_id) == ("deferred", "4.7.5", "e1")  # still enforced
        assert [f.result_type for f in r.tls.failures] == ["sts-policy-fetch-error", "certificate-expired"]
        assert "HTTP 500" in r.tls.failures[0].detail
    assert web.requests["expired.test"] == 2
    # the policy server is back with a testing policy: the next refresh (here: a new process) takes it
    web.answers["expired.test"] = ("200 OK", "text/plain", policy("testing", "mx.expired.test"))
    (r,), _ = await make().run(jobs("C5", "a@expired.test"))
    assert (r.outcome, r.tls.policy_id, r.tls.policy_mode) == ("delivered", "e2", "testing")
    assert [f.result_type for f in r.tls.failures] == ["certificate-expired"]
    assert mtas[EXPIRED].rcpts == ["a@expired.test"]


@pytest.fixture(scope="module")
def receiver_store():
    """The receiving installation's own mailbox-store: it hosts daum.test."""
    with LocalStore.running() as s:
        yield s


async def test_a_second_mailflow_publishes_its_policy_and_takes_mail_under_it(world, receiver_store):
    """Both sides: the receiving Mailflow's smtp-ingress on 127.0.0.25 (MX with STARTTLS, and its
    MTA-STS policy over HTTPS, one certificate from the test's CA for both names), its TXT record as
    `mailflow dns records` makes it; the sending delivery finds, fetches and enforces that policy."""
    make, web, _ = world
    store = receiver_store.fresh(("b@daum.test", "pw-b-1"))
    cert, key = make.ca.issue("mx.daum.test", "mta-sts.daum.test")
    settings = IngressSettings(
        service_token="t", hostname="mx.daum.test", listen=f"127.0.0.25:{make.port}", submission_listen="", smtps_listen="", http_listen="127.0.0.25:0",
        tls_cert=str(cert), tls_key=str(key), https_port=web.port, mta_sts_mode="enforce", check_spf="off", check_dkim="off", check_arc="off", check_dmarc="off", nats_url="nats://127.0.0.1:1",
    )
    queue = MemoryQueue()
    handler = IngressHandler(settings, CachedDirectory(store, ttl=30, negative_ttl=0, timeout=5), queue)
    certs = tls.Certificates(str(cert), str(key))
    smtp = await SmtpServer(settings, handler, certs.context).start()
    sts = await https_server(settings, store, certs)
    try:
        published = mtasts.published("enforce", "", 604800, "mx.daum.test")
        make.dns.add("daum.test. 300 IN MX 10 mx.daum.test.\nmx.daum.test. 300 IN A 127.0.0.25\nmta-sts.daum.test. 300 IN A 127.0.0.25")
        make.dns.add(f'_mta-sts.daum.test. 300 IN TXT "v=STSv1; id={published.id()}"')
        d = make()
        (r,), _ = await d.run(jobs("D1", "b@daum.test"))
        assert (r.outcome, r.remote_mta) == ("delivered", "mx.daum.test"), r.diagnostic
        assert (r.tls.policy_type, r.tls.policy_mode, r.tls.policy_id, r.tls.mx, r.tls.success) == ("sts", "enforce", published.id(), ["mx.daum.test"], True)
        ((msg, _),) = queue.messages
        assert [x.address for x in msg.rcpt_to] == ["b@daum.test"] and msg.client.tls.startswith("TLSv1.")
        # REQUIRETLS (RFC 8689): the MX name validated by the policy, verified TLS, and Mailflow offers it
        (r,), _ = await d.run([job.model_copy(update={"requiretls": True}) for job in jobs("D2", "b@daum.test")])
        assert (r.outcome, r.remote_mta) == ("delivered", "mx.daum.test"), r.diagnostic
        assert queue.messages[1][0].requiretls is True
    finally:
        await sts.stop()
        await smtp.drain(0.5)
        await store.close()


def relaxed(qid: str, rcpt: str) -> list[DeliveryJob]:
    """A message whose sender wrote `TLS-Required: No` (RFC 8689 §5): policies are to be ignored."""
    (job,) = jobs(qid, rcpt)
    body = b"TLS-Required: No\r\n" + job.body
    return [job.model_copy(update={"body": body, "size": len(body)})]


@pytest.mark.parametrize("rcpt", ["a@expired.test", "a@unlisted.test"], ids=["expired", "mx-not-in-policy"])
async def test_tls_required_no_delivers_where_the_policy_would_defer(world, rcpt):
    make, _, mtas = world
    (r,), _ = await make().run(relaxed("S9", rcpt))
    assert r.outcome == "delivered", r.diagnostic
    assert r.tls is None  # the policy was not applied, so not reported either
    (held,), _ = await make().run(jobs("S10", rcpt))  # the same without the field: deferred as before
    assert held.outcome == "deferred"
    assert sum(len(m.rcpts) for m in mtas.values()) == 1


async def test_requiretls_takes_a_listed_mx_over_verified_tls_and_refuses_one_that_fails(world):
    """RFC 8689 §4.2.1 through MTA-STS: the MX name is validated by the policy; aiosmtpd offers no
    REQUIRETLS, so even the good host is refused (5.7.30) and the expired one fails its TLS (5.7.10)."""
    make, _, mtas = world
    good, expired = [job.model_copy(update={"requiretls": True}) for job in jobs("S11", "a@good.test") + jobs("S12", "a@expired.test")]
    (r,), _ = await make().run([good])
    assert (r.outcome, r.status) == ("bounced", "5.7.30") and "REQUIRETLS not offered" in r.diagnostic
    (r,), _ = await make().run([expired])
    assert (r.outcome, r.status) == ("bounced", "5.7.10") and "certificate has expired" in r.diagnostic
    (r,), _ = await make().run([job.model_copy(update={"requiretls": True}) for job in jobs("S13", "a@nopolicy.test")])
    assert (r.outcome, r.status) == ("bounced", "5.7.10") and "cannot be validated" in r.diagnostic
    assert all(m.rcpts == [] for m in mtas.values())


async def test_requiretls_without_an_authenticated_route_bounces_before_the_body_is_read(world):
    """The route alone decides (RFC 8689 §4.2.1; TLS-Required: No does not count with REQUIRETLS), so a
    message with no route bounces for that even when its body could not be read (gone, or the queue
    unreachable): 5.7.10, never 5.3.0 or a 4.3.0 deferral; an enforced policy that allows none of the
    MX hosts defers it as it defers any message (4.7.0). A message with a route still needs its body."""
    make, _, mtas = world
    unread = [job.model_copy(update={"requiretls": True, "body": None, "body_ref": "nats:S14:1:60"}) for job in jobs("S14", "a@nopolicy.test", "a@unlisted.test")]
    results, _ = await make().run(unread)
    assert [(r.outcome, r.status) for r in results] == [("bounced", "5.7.10"), ("deferred", "4.7.0")]
    assert "cannot be validated" in results[0].diagnostic and "allows none of its MX hosts" in results[1].diagnostic
    (r,), _ = await make().run([job.model_copy(update={"requiretls": True, "body": None, "body_ref": "nats:S15:1:60"}) for job in jobs("S15", "a@good.test")])
    assert (r.outcome, r.status) == ("bounced", "5.3.0")  # a route: then the body is read (and is gone)
    assert all(m.rcpts == [] for m in mtas.values())
