"""A DNS responder for the compose tests: NXDOMAIN, with an SOA (negative TTL 60), to every question, over
UDP and TCP on the address and port it is given. It runs in the resolver container's own network namespace
(tests/deploy/compose-test-dns.yml), so the stack under test asks it, never the machine's or the internet's
DNS: every inbound sender then checks out "none" (no SPF, no DMARC record) and mail is delivered.

    python nxdomain.py 127.0.0.1 5353
"""

from __future__ import annotations

import socketserver
import struct
import sys
import threading

import dns.message
import dns.rcode
import dns.rrset

SOA = dns.rrset.from_text("test.", 60, "IN", "SOA", "ns.test. hostmaster.test. 1 60 60 60 60")


def answer(data: bytes) -> bytes | None:
    try:
        question = dns.message.from_wire(data)
    except Exception:  # not a DNS message: no answer
        return None
    response = dns.message.make_response(question)
    response.set_rcode(dns.rcode.NXDOMAIN)
    response.authority.append(SOA)
    return response.to_wire()


class Udp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        out = answer(data)
        if out:
            sock.sendto(out, self.client_address)


class Tcp(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        size = self.rfile.read(2)
        if len(size) == 2 and (out := answer(self.rfile.read(struct.unpack("!H", size)[0]))):
            self.wfile.write(struct.pack("!H", len(out)) + out)


if __name__ == "__main__":
    address = (sys.argv[1], int(sys.argv[2]))
    for server_class, handler in ((socketserver.ThreadingUDPServer, Udp), (socketserver.ThreadingTCPServer, Tcp)):
        server = server_class(address, handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    threading.Event().wait()
