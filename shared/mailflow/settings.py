"""Typed settings read from the environment.

Every service has one `Settings` class (in its own `settings.py`) deriving from `ServiceSettings`.
The fields here are common to all services and are read from unprefixed `MAILFLOW_*` names, so one
environment serves the whole stack. A missing secret or a malformed value fails at startup with a
pydantic error naming the variable; nothing starts half-configured.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def common(name: str, **kw):
    """A field read from `MAILFLOW_<NAME>` whatever the subclass's own prefix is."""
    return Field(validation_alias=AliasChoices(f"MAILFLOW_{name.upper()}"), **kw)


def split_hostport(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """'127.0.0.1:2025' -> ('127.0.0.1', 2025); ':2025' and '2025' bind the default host; '[::1]:25' works."""
    value = value.strip()
    if value.isdigit():
        return default_host, int(value)
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {value!r}")
    host = host.strip("[]") or default_host
    return host, int(port)


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    nats_url: str = common("nats_url", default="nats://127.0.0.1:4222")
    log_level: str = common("log_level", default="INFO")
    log_format: str = common("log_format", default="text")  # "json" in containers
    # Shared secret every internal REST call carries (header X-Mailflow-Token). No default: the local
    # runner generates one on first start; containers get it from a Secret.
    service_token: SecretStr = common("service_token")
    # Where mailbox-store's REST API answers.
    store_url: str = common("store_url", default="http://127.0.0.1:10085")
    # Where queue's REST API answers (admin and tracing).
    queue_url: str = common("queue_url", default="http://127.0.0.1:10082")
    # The name this host gives itself in SMTP greetings and Received: headers.
    hostname: str = common("hostname", default="localhost")
    # TLS certificate chain and key (PEM). The local runner makes a self-signed pair on first start.
    tls_cert: str = common("tls_cert", default="")
    tls_key: str = common("tls_key", default="")
    # Each service answers /healthz, /readyz and /metrics here (and its REST API, if it has one).
    http_listen: str = "127.0.0.1:0"

    @field_validator("log_format")
    @classmethod
    def _known_format(cls, v: str) -> str:
        if v not in ("text", "json"):
            raise ValueError("log_format must be 'text' or 'json'")
        return v
