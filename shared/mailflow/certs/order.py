"""One ACME order (RFC 8555 §7.4), blocking, with certbot's `acme` library: account, order, challenges,
finalization, the certificate chain checked against the key and the names.

`obtain` returns (chain PEM, key PEM) or raises OrderFailed with a reason fit for the log (the ACME
server's problem detail per name when a challenge fails; never a key). Nothing is written here: the
caller installs the pair only after this returns. Every request has a timeout (request_timeout_seconds),
the whole order a deadline (order_timeout_seconds), every response body a size limit (MAX_RESPONSE).
A new key is made for every order; the account key is kept (`files.account_key`).
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import josepy as jose
import requests
from acme import client, crypto_util, errors, messages
from cryptography import x509

from mailflow.certs import files
from mailflow.certs.challenges import TLSALPN01, Responders
from mailflow.certs.settings import Settings

log = logging.getLogger(__name__)

MAX_RESPONSE = 1024 * 1024  # a directory, an order, a chain: a few KiB each
USER_AGENT = "mailflow-acme"


class OrderFailed(Exception):
    """The order did not give a certificate; str() says why."""


def _bounded(response: requests.Response, *args, **kwargs) -> requests.Response:
    """A response hook (it runs before requests reads the body): read at most MAX_RESPONSE bytes."""
    body = bytearray()
    for chunk in response.iter_content(64 * 1024):
        body += chunk
        if len(body) > MAX_RESPONSE:
            response.close()
            raise OrderFailed(f"{response.url} answered more than {MAX_RESPONSE} bytes")
    response._content = bytes(body)  # what requests would have read itself, now bounded
    return response


def connect(settings: Settings, account_key: jose.JWKEC) -> client.ClientV2:
    """A client logged in to its account (registered on first use; RFC 8555 §7.3)."""
    net = client.ClientNetwork(
        account_key,
        alg=jose.ES256,
        verify_ssl=settings.ca_file or True,  # requests takes a CA bundle's path where True means the system's
        user_agent=USER_AGENT,
        timeout=settings.request_timeout_seconds,
    )
    net.session.hooks["response"].append(_bounded)
    acme = client.ClientV2(client.ClientV2.get_directory(settings.directory, net), net)
    contact = settings.contact_url()
    registration = messages.NewRegistration(contact=(contact,) if contact else (), terms_of_service_agreed=True)
    try:
        acme.new_account(registration)
    except errors.ConflictError as existing:  # this key has an account already: use it
        net.account = messages.RegistrationResource(body=messages.Registration(), uri=existing.location)
    return acme


def obtain(settings: Settings, account_path: Path, responders: Responders) -> tuple[bytes, bytes]:
    names = settings.names()
    try:
        return _obtain(settings, names, files.account_key(account_path), responders)
    except OrderFailed:
        raise
    except errors.ValidationError as e:
        raise OrderFailed("validation failed: " + "; ".join(_problems(e.failed_authzrs))) from None
    except messages.Error as e:
        raise OrderFailed(f"the ACME server refused: {e}") from None
    except errors.TimeoutError:
        raise OrderFailed(f"not issued within {settings.order_timeout_seconds:g} s") from None
    except errors.Error as e:
        raise OrderFailed(f"ACME error: {e}") from None
    except requests.RequestException as e:
        raise OrderFailed(f"cannot reach the ACME server: {e}") from None
    except (OSError, ValueError) as e:
        raise OrderFailed(str(e)) from None
    finally:
        responders.clear()


def _obtain(
    settings: Settings, names: list[str], account_key: jose.JWKEC, responders: Responders
) -> tuple[bytes, bytes]:
    acme = connect(settings, account_key)
    key = files.new_key()
    key_pem = files.key_pem(key)
    order = acme.new_order(crypto_util.make_csr(key_pem, names))
    for authz in order.authorizations:
        if authz.body.status == messages.STATUS_VALID:  # proven lately, the server remembers
            continue
        name = authz.body.identifier.value
        challb = next((c for c in authz.body.challenges if c.chall.typ == settings.challenge), None)
        if challb is None:
            offered = ", ".join(c.chall.typ for c in authz.body.challenges)
            raise OrderFailed(f"{name}: the ACME server does not offer {settings.challenge} (it offers {offered})")
        response, validation = challb.chall.response_and_validation(account_key)
        if isinstance(challb.chall, TLSALPN01):
            responders.prove_tls(name, validation)
        else:
            responders.prove_http(challb.chall.encode("token"), validation)
        acme.answer_challenge(challb, response)
    # the library compares with naive local time
    deadline = dt.datetime.now() + dt.timedelta(seconds=settings.order_timeout_seconds)
    done = acme.poll_and_finalize(order, deadline)
    chain = done.fullchain_pem.encode()
    _check(chain, key_pem, names)
    return chain, key_pem


def _check(chain: bytes, key_pem: bytes, names: list[str]) -> None:
    """The chain's first certificate is for our key and covers every name (else OrderFailed)."""
    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError as e:
        raise OrderFailed(f"the ACME server sent no usable certificate chain: {e}") from None
    got = files.Installed(certs[0], files.installed_names(certs[0]))
    missing = [n for n in names if n not in got.names]
    if missing:
        raise OrderFailed(f"the certificate issued does not cover {', '.join(missing)}")
    if not files.public_key_matches(key_pem, certs[0]):
        raise OrderFailed("the certificate issued is not for the key we sent")


def _problems(authzrs: list[messages.AuthorizationResource]) -> list[str]:
    out = []
    for authzr in authzrs:
        for challb in authzr.body.challenges:
            if challb.error is not None:
                out.append(f"{authzr.body.identifier.value}: {challb.error.typ}: {challb.error.detail}")
    return out or ["no reason given"]
