"""All of the web console's settings (environment prefix MAILFLOW_WEB_).

A missing secret (MAILFLOW_ADMIN_TOKEN, MAILFLOW_SERVICE_TOKEN, MAILFLOW_WEB_SESSION_KEY) fails at startup
with a pydantic error naming the variable; nothing starts half-configured.
"""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from mailflow.services import DELIVERY, IMAP_POP3, RESOLVER, SMTP_INGRESS, WEB
from mailflow.settings import ServiceSettings, common


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=WEB.prefix, extra="ignore", populate_by_name=True)

    listen: str = WEB.listen("listen")  # the console's pages (standard port 80)
    http_listen: str = WEB.http_listen  # /healthz, /readyz, /metrics
    # The store's and the queue's admin token: held here, server-side; a browser never sees it.
    admin_token: SecretStr = common("admin_token")
    # Signs the console's session, CSRF and message cookies (HMAC-SHA256, a key derived per use). Its own
    # secret: the store's MAILFLOW_SESSION_KEY mints mail sessions and stays with the store.
    session_key: SecretStr
    # Where the other services answer (their /metrics, for the pipeline page).
    resolver_url: str = common("resolver_url", default=RESOLVER.url)
    delivery_url: str = common("delivery_url", default=DELIVERY.url)
    smtp_url: str = common("smtp_url", default=SMTP_INGRESS.url)
    imap_url: str = common("imap_url", default=IMAP_POP3.url)
    # Cookies get the Secure attribute on a request over https, and always with this on (a TLS proxy in
    # front of the console, whose requests arrive as http).
    secure_cookies: bool = False
    # Comma-separated addresses of proxies in front of the console (an Ingress controller, a TLS proxy)
    # whose X-Forwarded-For and X-Forwarded-Proto are believed: the client address then comes from them
    # (login throttling counts per client) and so does https (Secure cookies). Empty: none is believed.
    trusted_proxies: str = ""
    session_hours: float = 12.0  # a login lasts this long, then the console asks again
    max_request_bytes: int = 64 * 1024  # a form larger than this is refused (413)
    backend_timeout: float = 10.0  # seconds for one call to the store or the queue
    # Login throttling per client (mailflow.throttle, as imap-pop3's LOGIN): the first `free` failures in
    # `window` seconds cost nothing, each one after waits 2^(n - free) s up to `max_delay`, and past `max`
    # every login is refused unchecked until the window moves on.
    login_failures_free: int = 3
    login_failures_max: int = 20
    login_failure_window: float = 900.0
    login_max_delay: float = 15.0
