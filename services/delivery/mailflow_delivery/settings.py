"""All of delivery's settings (environment prefix MAILFLOW_DELIVERY_)."""

from __future__ import annotations

from typing import Literal

from pydantic_settings import SettingsConfigDict

from mailflow.services import DELIVERY
from mailflow.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=DELIVERY.prefix, extra="ignore", populate_by_name=True)

    http_listen: str = DELIVERY.http_listen  # /healthz, /readyz, /metrics
    lanes: int = 4  # pull loops per process on the JOBS consumer: a slow remote MX holds up one lane only
    batch: int = 128  # jobs per fetch
    store_batch: int = 64  # messages per call to the mailbox store
    directory_cache_s: float = 30.0  # how long "this domain is (not) ours" is reused
    # How long a From domain's DKIM key (or that it has none) is reused: a key set activated or removed
    # with `mailflow dkim` signs (or stops signing) in every delivery process within this time.
    dkim_cache_s: float = 60.0
    # Outgoing SMTP
    remote_port: int = 25  # tests and the local stack deliver to dev ports on 127.0.0.x
    helo_name: str = ""  # empty: MAILFLOW_HOSTNAME
    source_address: str = ""  # bind outgoing connections to this address (empty: the system's choice)
    tls: Literal["none", "opportunistic", "require"] = "opportunistic"  # RFC 3207 / RFC 7435
    tls_verify: bool = False  # verify the MX's certificate (opportunistic TLS does not, RFC 7435)
    tls_ca_file: str = ""  # extra CA bundle for verification
    max_connections_per_domain: int = 10  # per process
    # RFC 5321 §4.5.3.2 timeouts
    connect_timeout: float = 30.0
    greeting_timeout: float = 300.0
    command_timeout: float = 300.0
    data_start_timeout: float = 120.0
    data_end_timeout: float = 600.0
    mx_timeout: float = 10.0  # waiting for the resolver service
