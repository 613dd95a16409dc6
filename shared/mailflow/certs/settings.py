"""The certificate renewer's settings (MAILFLOW_ACME_*), plus the common ones it shares with the services.

A malformed value fails at startup with a pydantic error naming the variable (never the value).
"""

from __future__ import annotations

from pydantic import field_validator
from pydantic_settings import SettingsConfigDict

from mailflow.services import DEV_OFFSET, LOCAL_HOST
from mailflow.settings import FileSettings, common

PREFIX = "MAILFLOW_ACME_"
CHALLENGES = ("http-01", "tls-alpn-01")


class Settings(FileSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", populate_by_name=True)

    # The ACME server's directory URL (RFC 8555 §7.1.1), e.g. https://acme-v02.api.letsencrypt.org/directory.
    # Empty: no certificates are ordered (the renewer is not started).
    directory: str = ""
    # The account's contact (RFC 8555 §7.3), an address or a mailto: URL; empty: none.
    contact: str = ""
    # The names the certificate covers, comma-separated; empty: MAILFLOW_HOSTNAME.
    hostnames: str = ""
    # How the ACME server checks that we hold the names: http-01 (RFC 8555 §8.3, port 80 of each name)
    # or tls-alpn-01 (RFC 8737, port 443 of each name).
    challenge: str = "http-01"
    # Where this renewer answers HTTP-01: the ACME server asks port 80 of each name, so this must be that
    # port or be forwarded from it (a proxy's /.well-known/acme-challenge/). Containers: 0.0.0.0:80.
    http_listen: str = f"{LOCAL_HOST}:{80 + DEV_OFFSET}"
    # Where this renewer answers TLS-ALPN-01: port 443 of each name, directly or forwarded at TCP level.
    # Containers: 0.0.0.0:443.
    tls_listen: str = f"{LOCAL_HOST}:{443 + DEV_OFFSET}"
    # CA bundle (PEM) that the ACME server's HTTPS certificate must chain to; empty: the system's.
    ca_file: str = ""
    # Renew when less than this is left; empty: 30 days, or a third of the lifetime for a certificate
    # that lives less than 90 days.
    renew_before_days: float | None = None
    # How often the certificate on disk is looked at (and renewed when due).
    check_interval_seconds: float = 12 * 3600.0
    # After a failed order: the first retry after this, doubling each time up to check_interval_seconds.
    retry_seconds: float = 60.0
    # Each HTTP request to the ACME server.
    request_timeout_seconds: float = 30.0
    # A whole order, from the challenges answered to the certificate issued.
    order_timeout_seconds: float = 120.0
    # The account key (PEM, 0600), kept beside the TLS key; empty: acme-account.key in MAILFLOW_TLS_KEY's folder.
    account_key: str = ""

    hostname: str = common("hostname", default="localhost")
    tls_cert: str = common("tls_cert", default="")
    tls_key: str = common("tls_key", default="")

    @field_validator("challenge")
    @classmethod
    def _known_challenge(cls, v: str) -> str:
        v = v.strip().lower()
        if v not in CHALLENGES:
            raise ValueError(f"challenge must be one of {', '.join(CHALLENGES)}")
        return v

    @property
    def enabled(self) -> bool:
        return bool(self.directory.strip())

    def names(self) -> list[str]:
        """The certificate's names, lower case, internationalized ones as A-labels (xn--), without
        duplicates, in the order given. UnicodeError (a ValueError) for a name that is no DNS name."""
        given = [n.strip().lower().rstrip(".") for n in (self.hostnames or self.hostname).split(",")]
        return list(dict.fromkeys(n.encode("idna").decode("ascii") for n in given if n))

    def contact_url(self) -> str:
        c = self.contact.strip()
        return c if not c or c.startswith("mailto:") else f"mailto:{c}"
