"""A real rspamd (Debian's) with a Redis of its own, started by the test, on 127.0.0.1 ports.

    with Rspamd.running() as r:
        settings.rspamd_url = r.url              # the normal worker: /checkv2
        r.controller_url, r.password             # the controller: /learnspam, /learnham, /stat

It runs Debian's /etc/rspamd/rspamd.conf with LOCAL_CONFDIR pointed at a temporary copy of the repo's
deploy/rspamd (what the containers run), in which override.d is changed for the test only:
  - the workers bind to 127.0.0.1 ports; the controller's password comes from the environment, as in
    the containers (RSPAMD_CONTROLLER_PASSWORD);
  - DNS goes to a DnsServer the test starts (tests/support/dns.py, no records: every name NXDOMAIN),
    so nothing reaches the internet, and the modules that fetch maps or updates over HTTP or ask remote
    services (fuzzy storage, RBLs, phishing feeds, redirector resolution) are off;
  - greylisting is off (a test's second attempt would pass anyway; it is rspamd's own logic);
  - a regexp rule MAILFLOW_TEST_JUNK scores 8 for a Subject with "MAILFLOW-TEST-JUNK": between
    rspamd's add-header (6) and reject (15) thresholds, so that message gets "add header"; and
    MAILFLOW_TEST_LATER 5 for "MAILFLOW-TEST-LATER", between greylist (4) and add header: "greylist";
    MAILFLOW_TEST_SUBJECT 11 for "MAILFLOW-TEST-SUBJECT", over a rewrite-subject threshold of 10 the
    test adds: "rewrite subject".
Redis runs with no persistence in a temporary directory. rspamd compiles its Hyperscan regexps on its
first start (a minute or more on a busy machine); they are kept in ~/.cache/mailflow-tests/rspamd-hs so
later starts take seconds. Failure to start raises with the tail of rspamd's log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from mailflow.stack import free_port
from tests.support.dns import DnsServer

REPO_CONF = Path(__file__).resolve().parents[2] / "deploy" / "rspamd"
HOST = "127.0.0.1"
PASSWORD = "controller-test-secret"
HS_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mailflow-tests" / "rspamd-hs"
START_TIMEOUT = 300.0  # the first start compiles Hyperscan databases
OFF = (  # modules that would reach the internet (maps, feeds, remote services) or keep state that disturbs tests
    "fuzzy_check", "rbl", "phishing", "multimap", "mid", "whitelist", "url_redirector", "rspamd_update",
    "asn", "emails", "greylist", "neural", "reputation", "ratelimit", "mime_types", "replies", "dmarc",
)  # fmt: skip


def available() -> str | None:
    """None if rspamd and redis-server can run here, else why not."""
    for tool in ("rspamd", "redis-server"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian packages rspamd, redis-server)"
    return None


def _wait(pred, timeout: float, what: str, proc: subprocess.Popen, log: Path | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if pred():
            return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not start (exit {proc.poll()}):\n{tail}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def _redis_pong(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # rspamd's main process and its workers
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


class Rspamd:
    def __init__(self, base: Path, dns: DnsServer):
        self.base, self.dns = base, dns
        self.port, self.controller_port, self.redis_port = free_port(), free_port(), free_port()
        self.password = PASSWORD
        self.log = base / "rspamd.log"
        self.procs: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def controller_url(self) -> str:
        return f"http://{HOST}:{self.controller_port}"

    def _configure(self) -> Path:
        conf = self.base / "conf"
        shutil.copytree(REPO_CONF, conf)
        over = conf / "override.d"
        for name, port in (("worker-normal.inc", self.port), ("worker-controller.inc", self.controller_port)):
            text = (over / name).read_text()
            bind = next(line for line in text.splitlines() if line.startswith("bind_socket"))
            (over / name).write_text(text.replace(bind, f'bind_socket = "{HOST}:{port}";'))
        HS_CACHE.mkdir(parents=True, exist_ok=True)
        (over / "options.inc").write_text(
            f'dns {{ nameserver = ["{self.dns.address}"]; timeout = 1s; retransmits = 1; }}\n'
            f'hs_cache_dir = "{HS_CACHE}/";\n'
        )
        (over / "redis.conf").write_text(f'servers = "{HOST}:{self.redis_port}";\n')
        for module in OFF:
            (over / f"{module}.conf").write_text("enabled = false;\n")
        (over / "regexp.conf").write_text(
            'MAILFLOW_TEST_JUNK { re = "Subject=/MAILFLOW-TEST-JUNK/H"; score = 8.0; '
            'description = "Mailflow tests: a message rspamd gives add header"; }\n'
            'MAILFLOW_TEST_LATER { re = "Subject=/MAILFLOW-TEST-LATER/H"; score = 5.0; '
            'description = "Mailflow tests: a message rspamd gives greylist"; }\n'
            'MAILFLOW_TEST_SUBJECT { re = "Subject=/MAILFLOW-TEST-SUBJECT/H"; score = 11.0; '
            'description = "Mailflow tests: a message rspamd gives rewrite subject"; }\n'
        )
        (over / "actions.conf").write_text("rewrite_subject = 10;\n")  # with Debian's reject 15, add_header 6, greylist 4
        return conf

    def start(self) -> Rspamd:
        for d in ("db", "run", "redis"):
            (self.base / d).mkdir()
        redis = subprocess.Popen(
            ["redis-server", "--bind", HOST, "--port", str(self.redis_port), "--save", "", "--appendonly", "no",
             "--dir", str(self.base / "redis"), "--logfile", str(self.base / "redis.log")],
            start_new_session=True,
        )  # fmt: skip
        self.procs.append(redis)
        _wait(lambda: _redis_pong(self.redis_port), 30, "redis-server", redis, self.base / "redis.log")
        conf = self._configure()
        env = dict(os.environ, RSPAMD_CONTROLLER_PASSWORD=self.password)
        # -f: in the foreground; -i: run the workers even as root (CI runs as root; rspamd refuses otherwise)
        with open(self.base / "rspamd.stderr", "wb") as stderr:
            proc = subprocess.Popen(
                ["rspamd", "-f", "-i", "-c", "/etc/rspamd/rspamd.conf",
                 "--var", f"LOCAL_CONFDIR={conf}", "--var", f"DBDIR={self.base / 'db'}",
                 "--var", f"RUNDIR={self.base / 'run'}", "--var", f"LOGDIR={self.base}"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )  # fmt: skip
        self.procs.append(proc)
        _wait(
            lambda: _answers(f"{self.url}/ping") and _answers(f"{self.controller_url}/ping"),
            START_TIMEOUT,
            "rspamd",
            proc,
            self.log,
        )
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)

    def stat(self) -> dict:
        """The controller's /stat (learned counts: `learned`, per statfile `revision`)."""
        import json

        req = urllib.request.Request(f"{self.controller_url}/stat", headers={"Password": self.password})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def check_times(self) -> list[float]:
        """`time: <real>ms` of every scan in rspamd's log (its own figure per message)."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            _, found, rest = line.partition(", time: ")
            if found:
                value = rest.split(",", 1)[0].strip()
                if value.endswith("ms"):
                    out.append(float(value[:-2]))
        return out

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[Rspamd]:
        with tempfile.TemporaryDirectory(prefix="mailflow-rspamd-") as tmp, DnsServer() as dns:
            r = cls(Path(tmp), dns)
            try:
                yield r.start()
            finally:
                r.stop()
