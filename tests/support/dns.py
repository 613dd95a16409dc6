"""A small authoritative DNS server for tests (UDP and TCP on loopback), built on dnslib.

    with DnsServer('''
        naver.test.     300 IN MX 10 mx.naver.test.
        mx.naver.test.  300 IN A  127.0.0.3
    ''') as dns:
        settings.nameservers = dns.address        # "127.0.0.1:PORT"

Names not in the records get NXDOMAIN; names with records of other types get an empty NOERROR
answer; both carry an SOA (minimum `negative_ttl`) so negative caching can be tested. Names in
`servfail` are answered SERVFAIL, names in `drop` are never answered (a timeout). Every question
is recorded in `queries` as (name, type), so a test can see what the cache spared, and those that
came over TCP in `tcp` too. A UDP answer longer than the asker takes (512 octets, or its EDNS payload
size) goes out truncated (TC, no records), as a real server's would: the asker retries over TCP.

DNSSEC, as a validating resolver reports it (RFC 4035 §3.2.3, RFC 6840 §5.7): answers about a name in
one of the zones of `signed` (the zone itself or a name under it) carry the AD bit when the question
asked for it (AD or DO set); with `ad_unasked` they carry it whatever the question said (an upstream
that must not be believed blindly). No RRSIG is ever sent: the asker trusts the bit, not signatures.
TLSA records come from zone text as any other (`_25._tcp.mx.naver.test. 300 IN TLSA 3 1 1 <hex>`).
"""

from __future__ import annotations

import socketserver
import threading

from dnslib import QTYPE, RCODE, RR, SOA, DNSLabel, DNSRecord


class DnsServer:
    def __init__(self, zone: str = "", host: str = "127.0.0.1", port: int = 0, negative_ttl: int = 60):
        self.records: list[RR] = RR.fromZone(zone) if zone.strip() else []
        self.host, self.port = host, port
        self.negative_ttl = negative_ttl
        self.servfail: set[str] = set()
        self.drop: set[str] = set()
        self.signed: set[str] = set()
        self.ad_unasked = False
        self.queries: list[tuple[str, str]] = []
        self.tcp: list[tuple[str, str]] = []
        self._servers: list[socketserver.BaseServer] = []

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def add(self, zone: str) -> None:
        self.records += RR.fromZone(zone)

    def authenticated(self, name: str, request: DNSRecord) -> bool:
        """The AD bit for an answer about `name`."""
        if not any(name == zone or name.endswith("." + zone) for zone in self.signed):
            return False
        asked = bool(request.header.ad) or any(rr.rtype == QTYPE.OPT and rr.ttl & 0x8000 for rr in request.ar)
        return asked or self.ad_unasked

    def answer(self, data: bytes, tcp: bool = False) -> bytes | None:
        request = DNSRecord.parse(data)
        q = request.q
        name = str(q.qname).rstrip(".").lower()
        qtype = QTYPE[q.qtype]
        self.queries.append((name, qtype))
        if tcp:
            self.tcp.append((name, qtype))
        reply = request.reply()
        reply.header.ad = 0
        if name in self.drop:
            return None
        if name in self.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply.pack()
        same_name = [rr for rr in self.records if str(rr.rname).rstrip(".").lower() == name]
        matching = [rr for rr in same_name if rr.rtype == q.qtype or rr.rtype == QTYPE.CNAME]
        for rr in matching:
            reply.add_answer(rr)
        if not matching:
            if not same_name:
                reply.header.rcode = RCODE.NXDOMAIN
            zone = DNSLabel(".".join(name.split(".")[-1:]) or ".")
            soa = SOA("ns.test.", "hostmaster.test.", (1, 3600, 600, 86400, self.negative_ttl))
            reply.add_auth(RR(zone, QTYPE.SOA, rdata=soa, ttl=self.negative_ttl))
        reply.header.ad = int(self.authenticated(name, request))
        out = reply.pack()
        limit = max([512, *(rr.rclass for rr in request.ar if rr.rtype == QTYPE.OPT)])  # RFC 6891 §6.2.5
        if not tcp and len(out) > limit:
            short = request.reply()
            short.header.tc = 1
            return short.pack()
        return out

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> DnsServer:
        outer = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                out = outer.answer(data)
                if out is not None:
                    sock.sendto(out, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self):
                head = self.request.recv(2)
                if len(head) < 2:
                    return
                data = self.request.recv(int.from_bytes(head, "big"))
                out = outer.answer(data, tcp=True)
                if out is not None:
                    self.request.sendall(len(out).to_bytes(2, "big") + out)

        class TcpServer(socketserver.ThreadingTCPServer):
            allow_reuse_address = True

        # UDP and TCP on one port number: with port 0 the kernel picks it for UDP, and the same number
        # may already be in use for TCP (another test's connection): then pick again.
        for attempt in range(20):
            udp = socketserver.ThreadingUDPServer((self.host, self.port), Udp)
            try:
                tcp = TcpServer((self.host, udp.server_address[1]), Tcp)
            except OSError:
                udp.server_close()
                if self.port or attempt == 19:
                    raise
                continue
            break
        self.port = udp.server_address[1]
        for srv in (udp, tcp):
            srv.daemon_threads = True
            threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            self._servers.append(srv)
        return self

    def stop(self) -> None:
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        self._servers.clear()
