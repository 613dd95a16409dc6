"""The seven services in one table: name, environment prefix, development HTTP port and mail listeners.

Every value here is written once. Each service's `Settings` takes its `env_prefix` and listen defaults
from its row; the local runner (`mailflow.stack`), the `mailflow` command, the health probe and the
deployment tests read the same rows. Nothing here imports a service: the few tools that need a
service's `Settings` class (`mailflow config check`, deploy/settings_table.py) load it by name with
`settings_class()`, and the runner starts `python -m <module>`.

Ports: a mail listener's development port is its standard port + 2000 (2025 for SMTP's 25), on
127.0.0.1; containers listen on the standard ports and answer HTTP on 8080 (the image's ENV says so).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

LOCAL_HOST = "127.0.0.1"
DEV_OFFSET = 2000  # development port = standard port + 2000
NATS_STANDARD_PORT = 4222  # nats-server's own default: a URL without a port means it
# Mailflow's own nats-server on a local run: not 4222, where a machine often runs a NATS of its own
# (Mailflow never uses a server it was not told to use).
NATS_PORT = 14222


@dataclass(frozen=True)
class Listener:
    name: str  # what the runner and its banner call it: smtp, submission, imap...
    setting: str  # the Settings field that binds it: listen, submission_listen...
    port: int  # the standard port (containers)
    label: str

    @property
    def dev_port(self) -> int:
        return self.port + DEV_OFFSET


@dataclass(frozen=True)
class Service:
    name: str  # the folder, compose and Kubernetes name
    prefix: str  # of its environment variables
    http_port: int  # development port of /healthz, /readyz, /metrics and its REST API
    listeners: tuple[Listener, ...] = ()

    @property
    def module(self) -> str:
        """`python -m <module>` runs it; never a bare `queue` that would hide the stdlib's."""
        return "mailflow_" + self.name.replace("-", "_")

    @property
    def section(self) -> str:
        """Its table in the configuration file: MAILFLOW_SMTP_ -> [smtp]."""
        return self.prefix.removeprefix("MAILFLOW_").removesuffix("_").lower()

    def var(self, setting: str) -> str:
        """The environment variable of one of its settings: var("listen") -> MAILFLOW_SMTP_LISTEN."""
        return f"{self.prefix}{setting.upper()}"

    @property
    def http_listen(self) -> str:
        return f"{LOCAL_HOST}:{self.http_port}"

    @property
    def url(self) -> str:
        """Where its HTTP answers on a local run (the `mailflow` command's default)."""
        return f"http://{LOCAL_HOST}:{self.http_port}"

    @property
    def url_var(self) -> str:
        """The variable that tells the `mailflow` command where its HTTP answers (MAILFLOW_STORE_URL...)."""
        return self.var("url")

    def listen(self, setting: str) -> str:
        """The development default of a listen setting: listen("listen") -> "127.0.0.1:2025"."""
        listener = next(li for li in self.listeners if li.setting == setting)
        return f"{LOCAL_HOST}:{listener.dev_port}"


SMTP_INGRESS = Service(
    "smtp-ingress",
    "MAILFLOW_SMTP_",
    10081,
    (
        Listener("smtp", "listen", 25, "SMTP (MX)"),
        Listener("submission", "submission_listen", 587, "Submission (STARTTLS, AUTH)"),
        Listener("smtps", "smtps_listen", 465, "SMTPS (implicit TLS)"),
    ),
)
QUEUE = Service("queue", "MAILFLOW_QUEUE_", 10082)
RESOLVER = Service("resolver", "MAILFLOW_RESOLVER_", 10083)
DELIVERY = Service("delivery", "MAILFLOW_DELIVERY_", 10084)
MAILBOX_STORE = Service("mailbox-store", "MAILFLOW_STORE_", 10085)
IMAP_POP3 = Service(
    "imap-pop3",
    "MAILFLOW_IMAP_",
    10086,
    (
        Listener("imap", "listen", 143, "IMAP"),
        Listener("imaps", "imaps_listen", 993, "IMAPS"),
        Listener("pop3", "pop3_listen", 110, "POP3"),
        Listener("pop3s", "pop3s_listen", 995, "POP3S"),
        Listener("managesieve", "managesieve_listen", 4190, "ManageSieve (STARTTLS)"),
    ),
)
# The web console: its pages on `listen` (port 80), its own /healthz /readyz /metrics on the HTTP port.
WEB = Service("web", "MAILFLOW_WEB_", 10087, (Listener("web", "listen", 80, "Web console (HTTP)"),))

# Start order: the store first (everyone asks it), smtp-ingress and imap-pop3 last (they face users), the
# web console after them (it reads everyone).
SERVICES: dict[str, Service] = {
    s.name: s for s in (MAILBOX_STORE, RESOLVER, QUEUE, DELIVERY, SMTP_INGRESS, IMAP_POP3, WEB)
}
LISTENERS: dict[str, tuple[Service, Listener]] = {
    li.name: (s, li) for s in SERVICES.values() for li in s.listeners
}
BY_MODULE: dict[str, Service] = {s.module: s for s in SERVICES.values()}


def settings_class(service: str) -> type:
    """The service's `Settings` class, imported by name (KeyError for a name not in the table)."""
    return importlib.import_module(f"{SERVICES[service].module}.settings").Settings
