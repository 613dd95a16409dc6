"""All of delivery's settings (environment prefix MAILFLOW_DELIVERY_).

A malformed transport map (ROUTES), relay host, or a relay login that could never be used (a user
without a password, AUTH in clear text not explicitly allowed) stops delivery at startup with an
error naming the variable: a mistake here would otherwise defer every remote message.
"""

from __future__ import annotations

from typing import Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from mailflow.services import DELIVERY
from mailflow.settings import ServiceSettings
from mailflow_delivery import nexthop

P = DELIVERY.prefix


class Settings(ServiceSettings):
    # hide_input_in_errors: a startup error must not print the other values (the relay password, the token)
    model_config = SettingsConfigDict(env_prefix=DELIVERY.prefix, extra="ignore", populate_by_name=True, hide_input_in_errors=True)

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

    # Outbound relay (smarthost): every remote domain's mail goes to this one host, with no MX lookup
    # (a provider that blocks port 25, a company's outbound gateway). Empty: each domain's own MX.
    relay_host: str = ""  # a name, an IP address or [IPv6]; a name is resolved by the system when connecting
    relay_port: int = 587  # RFC 6409 submission; 465 with relay_tls=tls (RFC 8314); 25 for an MTA
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

    @model_validator(mode="after")
    def _routing(self) -> Settings:
        try:
            nexthop.parse_routes(self.routes)
        except ValueError as exc:
            raise ValueError(f"{P}ROUTES: {exc}") from None
        if self.relay_host:
            try:
                nexthop.parse_host(self.relay_host)
            except ValueError as exc:
                raise ValueError(f"{P}RELAY_HOST: {exc}") from None
        if not 0 < self.relay_port < 65536:
            raise ValueError(f"{P}RELAY_PORT: {self.relay_port} is not a port (1-65535)")
        if bool(self.relay_user) != bool(self.relay_password.get_secret_value()):
            raise ValueError(f"{P}RELAY_USER and {P}RELAY_PASSWORD go together: set both or neither")
        if self.relay_user and self.relay_tls == "none" and not self.relay_auth_in_clear:
            raise ValueError(
                f"{P}RELAY_TLS=none would send {P}RELAY_USER's password in clear text: use starttls or tls, "
                f"or set {P}RELAY_AUTH_IN_CLEAR=true if the path to the relay is private"
            )
        return self
