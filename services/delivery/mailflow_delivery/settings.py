"""All of delivery's settings (environment prefix MAILFLOW_DELIVERY_).

A malformed value fails at startup with pydantic's error naming the setting. So do a malformed
transport map (ROUTES) or relay host, and a relay login that could never be used (a user without a
password, AUTH in clear text not explicitly allowed): a mistake there would defer every remote message.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from mailflow.services import DELIVERY
from mailflow.settings import ServiceSettings
from mailflow_delivery import nexthop

P = DELIVERY.prefix


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=DELIVERY.prefix, extra="ignore", populate_by_name=True)

    http_listen: str = DELIVERY.http_listen  # /healthz, /readyz, /metrics
    lanes: int = 4  # pull loops per process on the JOBS consumer: a slow remote MX holds up one lane only
    batch: int = 128  # jobs per fetch
    store_batch: int = 64  # messages per call to the mailbox store
    # Users' Sieve scripts (and which users an address reaches) are remembered this long: an uploaded
    # script applies to mail delivered this many seconds later at most.
    sieve_cache_s: float = 10.0
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
    tls_ca_file: str = ""  # extra CA bundle for verification (with MTA-STS: besides the system's CAs)
    # MTA-STS (RFC 8461): a recipient domain's published policy is looked up before delivering to its MX
    # (not for the relay or a transport map host: their own TLS settings govern). enforce mode: only its
    # MX hosts, verified TLS, or deferred 4.7.x; testing mode: reported, delivered as without it.
    mta_sts: bool = True
    mta_sts_port: int = Field(443, gt=0, lt=65536)  # of https://mta-sts.<domain>/ (tests use another)
    mta_sts_timeout: float = 10.0  # seconds for the whole policy fetch (RFC 8461 §3.3: a short one)
    mta_sts_retry_s: float = 300.0  # a failed fetch of a domain's policy is not tried again sooner
    max_connections_per_domain: int = 10  # per process
    # RFC 5321 §4.5.3.2 timeouts
    connect_timeout: float = 30.0
    greeting_timeout: float = 300.0
    command_timeout: float = 300.0
    data_start_timeout: float = 120.0
    data_end_timeout: float = 600.0
    mx_timeout: float = 10.0  # waiting for the resolver service

    # Outbound relay (smarthost): every remote domain's mail goes to this one host, with no MX lookup
    # (a provider that blocks port 25, a company's outbound gateway). Empty: each domain's own MX.
    relay_host: str = ""  # a name, an IP address or [IPv6]; a name is resolved by the system when connecting
    relay_port: int = Field(587, gt=0, lt=65536)  # RFC 6409 submission; 465 with relay_tls=tls (RFC 8314); 25 for an MTA
    # starttls: STARTTLS required (RFC 3207), no mail and no login without it; tls: TLS from the first
    # octet (RFC 8314, port 465); none: plain text, only when chosen here.
    relay_tls: Literal["starttls", "tls", "none"] = "starttls"
    relay_tls_verify: bool = True  # the relay's certificate must verify (RFC 6125), unlike an MX's (RFC 7435)
    relay_tls_ca_file: str = ""  # CA bundle for the relay's certificate (empty: the system's)
    relay_tls_name: str = ""  # the name the certificate must carry (empty: relay_host)
    relay_user: str = ""  # RFC 4954 AUTH PLAIN or LOGIN (as offered) after TLS; empty: no AUTH
    relay_password: SecretStr = SecretStr("")  # never logged; `mailflow config check` shows ****
    relay_auth_in_clear: bool = False  # with relay_tls=none only: send the login in clear text anyway
    # Transport map: "domain=route" entries, separated by commas or white space (nexthop.py): `mx` (the
    # domain's own MX even with a relay), `host:port` (the MX of host), `[host]:port` (host itself, no
    # MX lookup); `*.example.com=...` for every subdomain. Checked at startup.
    routes: str = ""

    # Each rule on the field it is about, so the error names that variable (pydantic, `mailflow config check`).
    @field_validator("routes")
    @classmethod
    def _routes(cls, v: str) -> str:
        nexthop.parse_routes(v)
        return v

    @field_validator("relay_host")
    @classmethod
    def _relay_host(cls, v: str) -> str:
        if v:
            nexthop.parse_host(v)
        return v

    @field_validator("relay_password")
    @classmethod
    def _login_pair(cls, v: SecretStr, info: ValidationInfo) -> SecretStr:
        if bool(info.data.get("relay_user")) != bool(v.get_secret_value()):
            raise ValueError(f"{P}RELAY_USER and {P}RELAY_PASSWORD go together: set both or neither")
        return v

    @field_validator("relay_auth_in_clear")
    @classmethod
    def _login_in_clear(cls, v: bool, info: ValidationInfo) -> bool:
        if info.data.get("relay_user") and info.data.get("relay_tls") == "none" and not v:
            raise ValueError(
                f"{P}RELAY_TLS=none would send {P}RELAY_USER's password in clear text: use starttls or tls, "
                f"or set {P}RELAY_AUTH_IN_CLEAR=true if the path to the relay is private"
            )
        return v
