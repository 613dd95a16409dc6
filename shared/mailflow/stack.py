"""The whole Mailflow stack as local processes: what `mailflow up` runs and what end-to-end tests start.

    with Stack(tmp_path, Ports.free()) as stack:      # nats-server + the seven services, all ready
        stack.cli("domain", "add", "example.test")
        smtplib.SMTP(stack.ports.host, stack.ports.smtp)

Each service is `python -m mailflow_<service>` in its own process group, configured only through
the environment built here (the same variables a container gets). Secrets are generated once into
`<data>/secrets.env`; a self-signed TLS pair into `<data>/tls/`. NATS: the stack's own nats-server
(JetStream in `<data>/nats`) with the installation's account, each service logged in as its own user
with its own password (`mailflow.natsauth`; a service gets only its own); or, with `nats_url`, a server
someone else runs, which must have that account (`<data>/nats-accounts.conf` is written for it). A service that does not become
ready within the timeout makes `start` raise RuntimeError with the tail of its log, after stopping
everything it started. `stop` sends SIGTERM, waits, then SIGKILLs whatever is left: no orphans.

Several replicas (issue 16): `Stack(replicas=2)` or `replicas={"smtp-ingress": 2, ...}` runs that many
processes of a service, each on ports of its own, behind a `mailflow.balancer.Balancer` on each of the
stack's ports (mail and HTTP), as a Kubernetes Service is; `nats_nodes=3` runs NATS as a three-node
JetStream cluster (mailflow.natsserver.NatsCluster) and the queue makes its streams R3. A store or queue
with two replicas needs what they share (PostgreSQL: MAILFLOW_STORE_DATABASE_URL, ..._QUEUE_...).

With MAILFLOW_ACME_DIRECTORY set (environment, configuration file or `env`), the certificate renewer
`python -m mailflow.certs` runs too, started before the services (log `logs/certs.log`, no secrets in its
environment): it replaces the self-signed pair in `<data>/tls/` with one from the ACME server and renews
it. It has no /readyz; `start` raises RuntimeError if it has exited by the time the services are ready
(a port it cannot bind, no names).
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from mailflow import configfile, natsauth, tls
from mailflow.balancer import Balancer
from mailflow.natsserver import NatsCluster, NatsServer, answers, die_with_parent
from mailflow.services import LISTENERS, LOCAL_HOST, NATS_PORT, NATS_STANDARD_PORT, SERVICES

_handed_out: set[tuple[str, int]] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = LOCAL_HOST) -> int:
    """A port that nothing holds now, outside the kernel's ephemeral range (and never the same twice
    in this process). A port from that range, which is what binding port 0 gives, can be taken at any
    moment as the local end of some outgoing connection, between this choice and the server's bind."""
    low, high = _ephemeral_range()
    candidates = range(15000, low) if low > 16000 else range(high + 1, 65536)
    for _ in range(200):
        port = random.choice(candidates) if len(candidates) else 0
        if (host, port) in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            port = s.getsockname()[1]
        _handed_out.add((host, port))
        return port
    raise RuntimeError(f"no free port on {host}")


def _dev_port(listener: str) -> int:
    return LISTENERS[listener][1].dev_port


@dataclass
class Ports:
    """Where a local stack listens: the development ports of `mailflow.services` unless moved. The mail
    listeners are fields named as in that table (a test holds them to it)."""

    host: str = LOCAL_HOST
    smtp: int = _dev_port("smtp")
    submission: int = _dev_port("submission")
    smtps: int = _dev_port("smtps")
    imap: int = _dev_port("imap")
    imaps: int = _dev_port("imaps")
    pop3: int = _dev_port("pop3")
    pop3s: int = _dev_port("pop3s")
    managesieve: int = _dev_port("managesieve")
    web: int = _dev_port("web")
    nats: int = NATS_PORT
    http: dict[str, int] = field(default_factory=lambda: {name: s.http_port for name, s in SERVICES.items()})

    @classmethod
    def free(cls, host: str = LOCAL_HOST) -> Ports:
        return cls(
            host=host,
            **{name: free_port(host) for name in (*LISTENERS, "nats")},
            http={name: free_port(host) for name in SERVICES},
        )


NATS_PASSWORDS = {natsauth.password_var(s): s for s in SERVICES}  # {variable: service}


def load_secrets(data_dir: Path) -> dict[str, str]:
    """MAILFLOW_SERVICE_TOKEN, MAILFLOW_ADMIN_TOKEN, MAILFLOW_SESSION_KEY, MAILFLOW_WEB_SESSION_KEY and each service's NATS password
    (`natsauth.password_var`), generated on first use (each one that is missing), kept in secrets.env (0600)."""
    path = Path(data_dir) / "secrets.env"
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            k, sep, v = line.partition("=")
            if sep:
                values[k.strip()] = v.strip()
    changed = False
    for k in ("MAILFLOW_SERVICE_TOKEN", "MAILFLOW_ADMIN_TOKEN", "MAILFLOW_SESSION_KEY", "MAILFLOW_WEB_SESSION_KEY", *NATS_PASSWORDS):
        if not values.get(k):
            values[k] = natsauth.new_password() if k in NATS_PASSWORDS else secrets.token_urlsafe(32)
            changed = True
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("".join(f"{k}={v}\n" for k, v in values.items()))
    return values



def _end(popen: subprocess.Popen, sig: int, timeout: float) -> None:
    """`sig` to the process group, then SIGKILL if it has not exited within `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, sig)
    try:
        popen.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()

@dataclass
class Proc:
    service: str
    index: int
    popen: subprocess.Popen
    http_port: int
    log_path: Path

    @property
    def name(self) -> str:
        """The instance name: its log file, MAILFLOW_INSTANCE."""
        return instance_name(self.service, self.index)


def instance_name(service: str, index: int) -> str:
    return service if index == 0 else f"{service}-{index}"


class Stack:
    def __init__(
        self,
        data_dir: Path,
        ports: Ports | None = None,
        nats_url: str | None = None,
        sync_always: bool = True,
        env: dict[str, str] | None = None,
        delivery_instances: int = 1,
        console: bool = False,
        hostname: str = "localhost",
        services: tuple[str, ...] = tuple(SERVICES),
        installation: str = natsauth.DEFAULT_INSTALLATION,
        nats_nodes: int = 1,
        replicas: int | dict[str, int] = 1,
    ):
        self.data_dir = Path(data_dir).resolve()
        self.ports = ports or Ports()
        self.external_nats = nats_url
        self.sync_always = sync_always
        self.extra_env = dict(env or {})
        self.delivery_instances = delivery_instances
        self.console = console
        self.hostname = hostname
        self.services = services
        self.nats: NatsServer | NatsCluster | None = None
        # With nats_nodes > 1: a JetStream cluster on loopback, the first node on ports.nats, and the
        # queue makes its streams with that many replicas (at most 3).
        self.nats_nodes = nats_nodes
        # With replicas > 1 (for every service, or {service: n}) a service runs that many processes (delivery
        # at least delivery_instances), each on ports of its own, behind a Balancer on each of the stack's
        # ports (mailflow.balancer).
        self.replicas = replicas
        self.instance_ports: dict[tuple[str, int], dict[str, int]] = {}  # {listener name or "http": port}
        self.balancers: list[Balancer] = []
        self.nats_cluster_ports: list[tuple[int, int, int]] = []  # each node's (client, route, HTTP)
        if nats_nodes > 1:
            self.nats_cluster_ports = [(self.ports.nats, free_port(), free_port())]
            self.nats_cluster_ports += [(free_port(), free_port(), free_port()) for _ in range(nats_nodes - 1)]
        self.procs: dict[tuple[str, int], Proc] = {}
        self.installation = installation
        self.secrets: dict[str, str] = {}  # every service's
        self.nats_passwords: dict[str, str] = {}  # {service: its NATS password}, each for its own eyes
        self._stopping = False
        self.renewer: subprocess.Popen | None = None  # python -m mailflow.certs, when ACME is configured

    # --- addresses --------------------------------------------------------------------------------

    @property
    def nats_url(self) -> str:
        if self.external_nats:
            return self.external_nats
        clients = [c for c, _, _ in self.nats_cluster_ports] or [self.ports.nats]
        return ",".join(f"nats://{self.ports.host}:{c}" for c in clients)

    def http_url(self, service: str) -> str:
        return f"http://{self.ports.host}:{self.ports.http[service]}"

    @property
    def admin_token(self) -> str:
        return self.secrets["MAILFLOW_ADMIN_TOKEN"]

    @property
    def service_token(self) -> str:
        return self.secrets["MAILFLOW_SERVICE_TOKEN"]

    # --- environment -----------------------------------------------------------------------------

    def common_env(self) -> dict[str, str]:
        d = self.data_dir
        return {
            "MAILFLOW_DATA_DIR": str(d),
            "MAILFLOW_NATS_URL": self.nats_url,
            **{row.url_var: self.http_url(name) for name, row in SERVICES.items()},
            "MAILFLOW_TLS_CERT": str(d / "tls" / "cert.pem"),
            "MAILFLOW_TLS_KEY": str(d / "tls" / "key.pem"),
            "MAILFLOW_HOSTNAME": self.hostname,
            **self.secrets,
        }

    def environment(self, service: str, http_port: int | None = None, listeners: dict[str, int] | None = None) -> dict[str, str]:
        """A service's environment; `listeners` ({listener name: port}) moves its mail listeners off the
        stack's ports (a replica behind a Balancer)."""
        p, d, row = self.ports, self.data_dir, SERVICES[service]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")}
        env.update(self.common_env())
        env[row.var("http_listen")] = f"{p.host}:{http_port or p.http[service]}"
        for listener in row.listeners:
            port = (listeners or {}).get(listener.name) or getattr(p, listener.name)
            env[row.var(listener.setting)] = f"{p.host}:{port}"
        if service == "mailbox-store":
            env[row.var("database_url")] = f"sqlite:///{d / 'mailbox-store.db'}"
            env[row.var("blob_dir")] = str(d / "blobs")
        elif service == "queue":
            env[row.var("database_url")] = f"sqlite:///{d / 'queue.db'}"
            if self.nats_nodes > 1:
                env[row.var("stream_replicas")] = str(min(3, self.nats_nodes))
        # Settings given by the caller win: its configuration file, then MAILFLOW_* from its environment
        # (secrets are settled in prepare(): every service gets the same).
        given = {**configfile.values(), **{k: v for k, v in os.environ.items() if k.startswith("MAILFLOW_")}}
        env.update({k: v for k, v in given.items() if k not in self.secrets})
        if self.nats_passwords:  # settled in prepare(), like the other secrets
            login = self.nats_login(service)
            env["MAILFLOW_NATS_USER"], env["MAILFLOW_NATS_PASSWORD"] = login["user"], login["password"]
        env.update(self.extra_env)
        if env.get(configfile.ENV_VAR):  # the services run in the data folder
            env[configfile.ENV_VAR] = str(Path(env[configfile.ENV_VAR]).resolve())
        return env

    def renewer_environment(self) -> dict[str, str]:
        """The certificate renewer's environment: the TLS paths and hostname, the caller's MAILFLOW_*
        settings (file, environment, `env`); none of the stack's secrets, which it does not use."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")}
        env.update(self.common_env())
        given = {**configfile.values(), **{k: v for k, v in os.environ.items() if k.startswith("MAILFLOW_")}}
        env.update(given)
        env.update(self.extra_env)
        for name in (*self.secrets, *NATS_PASSWORDS, "MAILFLOW_NATS_PASSWORD"):
            env.pop(name, None)
        if env.get(configfile.ENV_VAR):
            env[configfile.ENV_VAR] = str(Path(env[configfile.ENV_VAR]).resolve())
        return env

    @property
    def acme(self) -> bool:
        """Whether this stack runs the certificate renewer (MAILFLOW_ACME_DIRECTORY is set)."""
        return bool(self.renewer_environment().get("MAILFLOW_ACME_DIRECTORY", "").strip())

    def cli_env(self) -> dict[str, str]:
        """Environment for running the `mailflow` CLI against this stack."""
        env = dict(os.environ)
        env.update(self.common_env())
        return env

    def cli(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "mailflow.cli.main", *args],
            env=self.cli_env(),
            capture_output=True,
            text=True,
            check=check,
            input=input,
            timeout=60,
        )

    # --- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        self.secrets = load_secrets(self.data_dir)
        self.nats_passwords = {service: self.secrets.pop(var) for var, service in NATS_PASSWORDS.items()}
        for name in self.secrets:  # one the caller gives (environment or configuration file) wins
            self.secrets[name] = configfile.lookup(name) or self.secrets[name]
        if self.external_nats:  # what its operator adds to that server's configuration
            path = self.data_dir / "nats-accounts.conf"
            path.unlink(missing_ok=True)
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(natsauth.top_level(self.nats_auth()))
        tls.ensure_self_signed(self.data_dir / "tls" / "cert.pem", self.data_dir / "tls" / "key.pem", self.hostname)

    def nats_login(self, service: str) -> dict[str, str]:
        """natsconn.connect's `user` and `password` for `service` (tests act as one; name it the same)."""
        return {"user": natsauth.user_name(self.installation, service), "password": self.nats_passwords[service]}

    def nats_auth(self) -> dict:
        """This installation's NATS account, its users and their passwords."""
        return natsauth.accounts(self.installation, self.nats_passwords)

    def start_nats(self) -> None:
        if self.external_nats:
            return
        if self.nats_nodes > 1:
            self.nats = NatsCluster(
                self.data_dir / "nats",
                self.nats_cluster_ports,
                host=self.ports.host,
                sync_always=self.sync_always,
                auth=self.nats_auth(),
            ).start()
            return
        self.nats = NatsServer(
            self.data_dir / "nats",
            host=self.ports.host,
            port=self.ports.nats,
            sync_always=self.sync_always,
            auth=self.nats_auth(),
        ).start()

    def start(self, timeout: float = 60.0) -> Stack:
        self.prepare()
        try:
            self.start_nats()
            if self.acme:
                self.start_renewer()
            self.start_balancers()
            for service in self.services:
                for i in range(self.instances(service)):
                    self.start_service(service, i, wait=False)
            self.wait_ready(timeout)
            if self.renewer is not None and self.renewer.poll() is not None:
                raise RuntimeError(f"the certificate renewer exited with {self.renewer.returncode}:\n{self.renewer_log()}")
        except BaseException:
            self.stop()
            raise
        return self

    def instances(self, service: str) -> int:
        n = self.replicas.get(service, 1) if isinstance(self.replicas, dict) else self.replicas
        return max(n, self.delivery_instances) if service == "delivery" else n

    def balanced(self, service: str) -> bool:
        """Whether the service's replicas sit behind balancers (a second delivery alone needs none: it
        has no mail port, and nobody calls its HTTP API)."""
        n = self.replicas.get(service, 1) if isinstance(self.replicas, dict) else self.replicas
        return n > 1

    def ports_of(self, service: str, index: int) -> dict[str, int]:
        """Where instance `index` listens ({listener name or "http": port}): the stack's own ports for
        the only instance; behind balancers, or for a second delivery, ports of its own, kept across
        restarts."""
        if index == 0 and not self.balanced(service):
            return {"http": self.ports.http[service]}
        key = (service, index)
        if key not in self.instance_ports:
            names = ["http"] + ([li.name for li in SERVICES[service].listeners] if self.balanced(service) else [])
            self.instance_ports[key] = {name: free_port(self.ports.host) for name in names}
        return self.instance_ports[key]

    def start_balancers(self) -> None:
        """One Balancer on each of the stack's ports (mail and HTTP) before that port's instances."""
        for service in filter(self.balanced, self.services):
            backends = [self.ports_of(service, i) for i in range(self.instances(service))]
            fronts = {"http": self.ports.http[service]} | {li.name: getattr(self.ports, li.name) for li in SERVICES[service].listeners}
            for name, port in fronts.items():
                self.balancers.append(Balancer(self.ports.host, port, [b[name] for b in backends]).start())

    def start_service(self, service: str, index: int = 0, wait: bool = True, timeout: float = 30.0) -> Proc:
        own = self.ports_of(service, index)
        port = own["http"]
        name = instance_name(service, index)
        log_path = self.data_dir / "logs" / f"{name}.log"
        env = self.environment(service, port, own)
        env["MAILFLOW_INSTANCE"] = name
        popen = self._spawn(SERVICES[service].module, env, log_path, name)
        proc = Proc(service, index, popen, port, log_path)
        self.procs[(service, index)] = proc
        if wait:
            self.wait_ready(timeout, [proc])
        return proc

    @property
    def renewer_log_path(self) -> Path:
        return self.data_dir / "logs" / "certs.log"

    def renewer_log(self, chars: int = 3000) -> str:
        try:
            return self.renewer_log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start_renewer(self) -> subprocess.Popen:
        """python -m mailflow.certs, its own process group, logging to logs/certs.log."""
        self.renewer = self._spawn("mailflow.certs", self.renewer_environment(), self.renewer_log_path, "certs")
        return self.renewer

    def _spawn(self, module: str, env: dict[str, str], log_path: Path, name: str) -> subprocess.Popen:
        """`python -m module` in its own process group, its output to `log_path` (and the console)."""
        logf = open(log_path, "ab")
        popen = subprocess.Popen(
            [sys.executable, "-m", module],
            env=env,
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if self.console else logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        if self.console:
            threading.Thread(target=_tee, args=(popen.stdout, logf, name), daemon=True).start()
        else:
            logf.close()
        return popen

    def stop_renewer(self, timeout: float = 15.0) -> None:
        if self.renewer is not None and self.renewer.poll() is None:
            _end(self.renewer, signal.SIGTERM, timeout)

    def ready(self, proc: Proc) -> bool:
        try:
            url = f"http://{self.ports.host}:{proc.http_port}/readyz"
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.status == 200
        except Exception:
            return False

    def wait_ready(self, timeout: float = 60.0, procs: list[Proc] | None = None) -> None:
        pending = list(procs or self.procs.values())
        deadline = time.monotonic() + timeout
        while pending:
            for proc in list(pending):
                if proc.popen.poll() is not None:
                    raise RuntimeError(f"{proc.service} exited with {proc.popen.returncode}:\n{self.log_tail(proc)}")
                if self.ready(proc):
                    pending.remove(proc)
            if pending and time.monotonic() > deadline:
                names = ", ".join(p.service for p in pending)
                raise RuntimeError(f"not ready after {timeout}s: {names}\n{self.log_tail(pending[0])}")
            if pending:
                time.sleep(0.05)

    def log_tail(self, proc: Proc, chars: int = 3000) -> str:
        try:
            return proc.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop_service(self, service: str, index: int = 0, kill: bool = False, timeout: float = 15.0) -> None:
        proc = self.procs.get((service, index))
        if proc is None or proc.popen.poll() is not None:
            return
        _end(proc.popen, signal.SIGKILL if kill else signal.SIGTERM, timeout)

    def kill(self, service: str, index: int = 0) -> None:
        """SIGKILL, as a crash would."""
        self.stop_service(service, index, kill=True)

    def restart(self, service: str, index: int = 0) -> Proc:
        self.stop_service(service, index)
        return self.start_service(service, index)

    def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        try:
            self.stop_renewer()
            for service in reversed(SERVICES):
                for (s, i) in sorted(self.procs, reverse=True):
                    if s == service:
                        self.stop_service(s, i)
            for balancer in self.balancers:
                balancer.stop()
            self.balancers = []
            if self.nats is not None:
                self.nats.stop()
        finally:
            self._stopping = False

    def dead(self) -> list[Proc]:
        return [p for p in self.procs.values() if p.popen.poll() is not None]


def _tee(stream, logf, name: str) -> None:
    width = 14
    for line in iter(stream.readline, b""):
        logf.write(line)
        logf.flush()
        sys.stdout.write(f"{name[:width]:<{width}}| {line.decode(errors='replace')}")
        sys.stdout.flush()
    logf.close()


def nats_already_running(url: str) -> bool:
    u = urlparse(url.split(",")[0])
    return answers(u.hostname or LOCAL_HOST, u.port or NATS_STANDARD_PORT)
