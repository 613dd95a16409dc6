"""docker-compose.yml, checked statically against the code it runs (issue 2 §7, issue 13 §6).

Every Mailflow service runs the one image, built from ./Dockerfile, with `mailflow serve <service>`;
every MAILFLOW_* variable a container gets (the image's ENV, then compose's environment) is one its
Settings class or the `mailflow` command reads; every required setting is given; the settings build
from the container's environment; listeners bind the standard ports inside the container and exactly
those are published; the health probe asks the service's own HTTP port; internal URLs point at the
right service and port. Settings are imported, never copied.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from urllib.parse import urlparse

import pytest
import yaml

from mailflow import healthcheck, natsauth
from mailflow.hostport import split_hostport
from tests.deploy.support import (
    COMPOSE_FILE,
    DOCKERFILE,
    ROOT,
    SERVICES,
    environment,
    image_env,
    load_compose,
    parse_dockerfile,
    ports,
    read_by_someone,
    required_env,
    rspamd_conf,
    settings_class,
)

SECRETS = {
    "MAILFLOW_SERVICE_TOKEN": "service-token-for-tests",
    "MAILFLOW_ADMIN_TOKEN": "admin-token-for-tests",
    "MAILFLOW_SESSION_KEY": "session-key-for-tests",
    "MAILFLOW_WEB_SESSION_KEY": "web-session-key-for-tests",
    "MAILFLOW_POSTGRES_PASSWORD": "pg-password-for-tests",
    "MAILFLOW_RSPAMD_PASSWORD": "rspamd-password-for-tests",
    **{natsauth.password_var(s): f"nats-password-of-{s}" for s in SERVICES},
}
# Inside containers every listener uses its standard port (issue 7 §2); HTTP is 8080 everywhere.
STANDARD_PORTS = {
    "smtp-ingress": {"listen": 25, "submission_listen": 587, "smtps_listen": 465, "https_port": 443, "http_listen": 8080},
    "imap-pop3": {
        "listen": 143,
        "imaps_listen": 993,
        "pop3_listen": 110,
        "pop3s_listen": 995,
        "managesieve_listen": 4190,
        "http_listen": 8080,
    },
    "web": {
        "listen": 80,
        "http_listen": 8080,
    },
}
DEV_OFFSET = 2000  # published on the development ports by default: standard + 2000


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose(SECRETS)


def container_env(compose: dict, service: str) -> dict[str, str]:
    """What the container sees: the image's ENV, overridden by compose's environment."""
    return {**image_env(), **environment(compose["services"][service])}


def spec_command(compose: dict, service: str) -> list[str]:
    return compose["services"][service]["command"]


def listen_fields(service: str) -> list[str]:
    """The settings that open a listener: *_listen (host:port), and smtp-ingress's https_port."""
    return [f for f in settings_class(service).model_fields if f.endswith("listen") or f == "https_port"]


def build_settings(monkeypatch, service: str, env: dict[str, str]):
    import os

    for key in list(os.environ):
        if key.startswith("MAILFLOW_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return settings_class(service)()


@pytest.mark.parametrize("service", SERVICES)
def test_service_runs_the_one_image_with_its_command(compose, service):
    spec = compose["services"][service]
    build = spec["build"]
    assert (ROOT / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE
    assert spec["image"] == compose["services"]["tls-init"]["image"]
    assert spec["image"].startswith("mailflow:")
    assert spec["command"] == ["mailflow", "serve", service]
    assert "entrypoint" not in spec


def test_every_built_service_names_an_existing_dockerfile(compose):
    built = {name: spec for name, spec in compose["services"].items() if "build" in spec}
    assert set(SERVICES) <= set(built)
    for name, spec in built.items():
        assert (ROOT / spec["build"].get("context", ".") / spec["build"]["dockerfile"]).is_file(), name


@pytest.mark.parametrize("service", SERVICES)
def test_every_variable_set_is_read_by_the_settings(compose, service):
    """(The image's ENV, which serves all six, is checked in test_images.py.)"""
    known = read_by_someone(service)
    env = environment(compose["services"][service])
    unknown = sorted(k for k in env if k.startswith("MAILFLOW_") and k not in known)
    assert not unknown, f"{service} sets variables nothing in its container reads: {unknown}"


@pytest.mark.parametrize("service", SERVICES)
def test_the_command_reaches_every_service_from_any_container(compose, service, monkeypatch):
    """`docker compose exec <any> mailflow status` asks each service at its compose name and HTTP port."""
    from mailflow.cli.common import service_url

    build_settings(monkeypatch, service, container_env(compose, service))
    for target in SERVICES:
        target_settings = build_settings(monkeypatch, target, container_env(compose, target))
        build_settings(monkeypatch, service, container_env(compose, service))
        u = urlparse(service_url(target))
        assert (u.hostname, u.port) == (target, split_hostport(target_settings.http_listen)[1])


@pytest.mark.parametrize("service", SERVICES)
def test_required_settings_are_given(compose, service):
    env = container_env(compose, service)
    missing = sorted(v for v in required_env(service) if not env.get(v))
    assert not missing, f"{service} would not start: {missing} not set"


@pytest.mark.parametrize("service", SERVICES)
def test_settings_build_from_the_container_environment(compose, service, monkeypatch):
    settings = build_settings(monkeypatch, service, container_env(compose, service))
    assert settings.log_format == "json"
    assert settings.service_token.get_secret_value() == SECRETS["MAILFLOW_SERVICE_TOKEN"]
    for name in listen_fields(service):
        value = getattr(settings, name)
        if not value or isinstance(value, int):  # https_port: a port on the MX listener's address
            continue
        host, _ = split_hostport(value)
        assert host == "0.0.0.0", f"{service}.{name} must bind all interfaces inside the container"


@pytest.mark.parametrize("service", SERVICES)
def test_listen_ports_match_published_exposed_and_probed_ports(compose, service, monkeypatch):
    settings = build_settings(monkeypatch, service, container_env(compose, service))
    final = parse_dockerfile(DOCKERFILE)[-1]
    exposed = {int(p.split("/")[0]) for ins in final.all("EXPOSE") for p in ins.args.split()}
    published = {m.container_port for m in ports(compose["services"][service])}
    listening = {
        name: value if isinstance(value := getattr(settings, name), int) else split_hostport(value)[1]
        for name in listen_fields(service)
        if getattr(settings, name)
    }

    assert listening.pop("http_listen") == 8080
    assert 8080 in exposed and 8080 not in published, (
        "internal HTTP is exposed to the network, never published"
    )
    # the image's probe, run in this container, asks this service's HTTP port
    probe = final.exec_form("HEALTHCHECK")
    assert probe[:3] == ["python", "-m", "mailflow.healthcheck"] and "--path" not in probe
    assert healthcheck.service_of(spec_command(compose, service)) == service
    assert healthcheck.url_for(service, "/readyz") == "http://127.0.0.1:8080/readyz"

    assert set(listening.values()) == published, f"{service}: listeners {listening} vs published {published}"
    assert published <= exposed
    expected = {k: v for k, v in STANDARD_PORTS.get(service, {}).items() if k != "http_listen"}
    assert listening == expected


def test_published_ports_are_loopback_development_ports_by_default(compose):
    for service in SERVICES:
        for mapping in ports(compose["services"][service]):
            assert mapping.host_ip == "127.0.0.1", f"{service} publishes beyond loopback by default"
            assert int(mapping.host_port) == mapping.container_port + DEV_OFFSET


def test_published_ports_follow_the_variables():
    custom = load_compose({**SECRETS, "MAILFLOW_PUBLISH_ADDR": "127.0.0.9", "MAILFLOW_PUBLISH_POP3": "40110"})
    pop3 = next(m for m in ports(custom["services"]["imap-pop3"]) if m.container_port == 110)
    assert (pop3.host_ip, pop3.host_port) == ("127.0.0.9", "40110")


@pytest.mark.parametrize("service", SERVICES)
def test_internal_urls_point_at_the_right_service_and_port(compose, service, monkeypatch):
    settings = build_settings(monkeypatch, service, container_env(compose, service))
    for url, target in ((settings.store_url, "mailbox-store"), (settings.queue_url, "queue")):
        u = urlparse(url)
        target_settings = build_settings(monkeypatch, target, container_env(compose, target))
        assert u.hostname == target
        assert u.port == split_hostport(target_settings.http_listen)[1]
    u = urlparse(settings.nats_url)
    assert (u.scheme, u.hostname, u.port) == ("nats", "nats", 4222)
    assert "port: 4222" in (ROOT / "deploy/compose/nats.conf").read_text()


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_logs_in_to_nats_as_its_own_user(compose, service, monkeypatch):
    """The user and password the service sends are the ones deploy/compose/nats.conf gives that user."""
    settings = build_settings(monkeypatch, service, container_env(compose, service))
    assert settings.nats_user == natsauth.user_name(natsauth.DEFAULT_INSTALLATION, service)
    var = natsauth.password_var(service)
    assert settings.nats_password.get_secret_value() == compose["services"]["nats"]["environment"][var] == SECRETS[var]
    assert f'"user": "{settings.nats_user}"\n        "password": ${var}\n' in (ROOT / "deploy/compose/nats.conf").read_text()


@pytest.mark.parametrize("service", ["mailbox-store", "queue"])
def test_databases_are_postgresql_and_waited_for(compose, service, monkeypatch):
    settings = build_settings(monkeypatch, service, container_env(compose, service))
    u = urlparse(settings.database_url)
    assert u.scheme == "postgresql+psycopg" and u.hostname == "postgres" and u.port == 5432
    assert u.password == SECRETS["MAILFLOW_POSTGRES_PASSWORD"]
    assert compose["services"][service]["depends_on"]["postgres"]["condition"] == "service_healthy"
    pg = compose["services"]["postgres"]["environment"]
    databases = {
        pg["POSTGRES_DB"],
        *(
            line.split()[2].rstrip(";")
            for line in (ROOT / "deploy/compose/postgres-init.sql").read_text().splitlines()
            if line.upper().startswith("CREATE DATABASE")
        ),
    }
    assert u.path.lstrip("/") in databases


@pytest.mark.parametrize("service", SERVICES)
def test_startup_order_and_restart(compose, service):
    spec = compose["services"][service]
    assert spec["depends_on"]["nats"]["condition"] == "service_healthy"
    assert spec["depends_on"]["tls-init"]["condition"] == "service_completed_successfully"
    assert spec["restart"] == "unless-stopped"
    assert "healthcheck" in compose["services"]["nats"] and "healthcheck" in compose["services"]["postgres"]


def mounts(spec: dict) -> dict[str, str]:
    """{container path: source} of a service's volumes."""
    out = {}
    for item in spec.get("volumes") or []:
        source, target = str(item).split(":")[:2]
        out[target] = source
    return out


@pytest.mark.parametrize("service", SERVICES)
def test_volumes_hold_tls_blobs_and_data(compose, service, monkeypatch):
    settings = build_settings(monkeypatch, service, container_env(compose, service))
    vols = mounts(compose["services"][service])
    tls_dir = settings.tls_cert.rpartition("/")[0]
    assert settings.tls_key.rpartition("/")[0] == tls_dir
    assert vols.get(tls_dir) == "tls"
    if service == "mailbox-store":
        assert vols.get(settings.blob_dir) == "blobs"
    init = compose["services"]["tls-init"]
    assert mounts(init).get(tls_dir) == "tls"
    init_env = {**image_env(), **environment(init)}
    assert (init_env["MAILFLOW_TLS_CERT"], init_env["MAILFLOW_TLS_KEY"]) == (settings.tls_cert, settings.tls_key)
    assert init["command"] == ["python", "-m", "mailflow.tlsinit"]
    declared = set(compose["volumes"])
    assert {"tls", "blobs", "nats-data", "postgres-data"} <= declared
    assert mounts(compose["services"]["nats"])["/data"] == "nats-data"
    assert mounts(compose["services"]["postgres"])["/var/lib/postgresql/data"] == "postgres-data"


def test_delivery_can_be_scaled(compose):
    spec = compose["services"]["delivery"]
    assert not spec.get("ports") and "container_name" not in spec


def test_secrets_must_come_from_the_environment():
    for name in SECRETS:
        partial = {k: v for k, v in SECRETS.items() if k != name}
        with pytest.raises(ValueError, match=name):
            load_compose(partial)


def compose_v1_config(*files) -> str:
    """What docker-compose (v1) makes of `files` over one another (`config`), with the test's secrets."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose (v1) is not installed")
    proc = subprocess.run(
        ["docker-compose", *(arg for f in files for arg in ("-f", str(f))), "config"],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", **SECRETS},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_compose_v1_reads_the_file():
    assert yaml.safe_load(compose_v1_config(COMPOSE_FILE))["services"].keys() >= set(SERVICES)


def test_rspamd_and_redis_are_built_here_and_not_published(compose):
    rspamd, redis = compose["services"]["rspamd"], compose["services"]["redis"]
    assert (ROOT / rspamd["build"]["context"] / rspamd["build"]["dockerfile"]).resolve() == ROOT / "deploy/rspamd/Dockerfile"
    assert redis["image"] == rspamd["image"] and "build" not in redis  # one image, built once
    assert not rspamd.get("ports") and not redis.get("ports")
    assert rspamd["depends_on"]["redis"]["condition"] == "service_healthy"
    assert {"rspamd-data", "redis-data"} <= set(compose["volumes"])
    assert mounts(rspamd)["/var/lib/rspamd"] == "rspamd-data" and mounts(redis)["/data"] == "redis-data"
    host, port = rspamd_conf("local.d/redis.conf", "servers").split(":")
    assert host == "redis" and redis["command"][0] == "redis-server" and "--port" not in redis["command"]
    assert port == "6379"  # redis-server's default port


def test_smtp_ingress_scans_with_rspamd_and_the_store_trains_it(compose, monkeypatch):
    """smtp-ingress at rspamd's normal worker, mailbox-store at its controller, with the password the
    controller is given (override.d/worker-controller.inc reads RSPAMD_CONTROLLER_PASSWORD)."""
    smtp = build_settings(monkeypatch, "smtp-ingress", container_env(compose, "smtp-ingress"))
    u = urlparse(smtp.rspamd_url)
    assert (u.hostname, u.port) == ("rspamd", int(rspamd_conf("override.d/worker-normal.inc", "bind_socket").split(":")[1]))
    assert smtp.rspamd_fail_open and not smtp.rspamd_submission
    store = build_settings(monkeypatch, "mailbox-store", container_env(compose, "mailbox-store"))
    u = urlparse(store.rspamd_url)
    controller = rspamd_conf("override.d/worker-controller.inc", "bind_socket")
    assert (u.hostname, u.port) == ("rspamd", int(controller.split(":")[1]))
    assert rspamd_conf("override.d/worker-controller.inc", "password") == "{= env.CONTROLLER_PASSWORD =}"
    password = compose["services"]["rspamd"]["environment"]["RSPAMD_CONTROLLER_PASSWORD"]
    assert store.rspamd_password.get_secret_value() == password == SECRETS["MAILFLOW_RSPAMD_PASSWORD"]


def test_the_certificate_renewer_is_one_service_behind_a_profile(compose, monkeypatch):
    """`certs` (python -m mailflow.certs) runs only with --profile acme, from the one image, after tls-init,
    writing into the tls volume at the paths every service reads; its variables are the renewer's; its
    challenge listeners bind the standard ports, published on loopback development ports by default."""
    from mailflow.certs.settings import Settings as RenewerSettings
    from mailflow.settings import env_names

    spec = compose["services"]["certs"]
    assert spec["profiles"] == ["acme"]
    assert spec["image"] == compose["services"]["tls-init"]["image"]
    assert spec["command"] == ["python", "-m", "mailflow.certs"]
    assert spec["depends_on"]["tls-init"]["condition"] == "service_completed_successfully"
    env = {**image_env(), **environment(spec)}
    assert not sorted(k for k in environment(spec) if k.startswith("MAILFLOW_") and k not in env_names(RenewerSettings))
    for key in [k for k in os.environ if k.startswith("MAILFLOW_")]:
        monkeypatch.delenv(key)
    for key, value in {**env, "MAILFLOW_ACME_DIRECTORY": "https://acme.example/directory"}.items():
        monkeypatch.setenv(key, value)
    settings = RenewerSettings()
    smtp = build_settings(monkeypatch, "smtp-ingress", container_env(compose, "smtp-ingress"))
    assert (settings.tls_cert, settings.tls_key) == (smtp.tls_cert, smtp.tls_key)
    tls_dir = settings.tls_cert.rpartition("/")[0]
    assert f"tls:{tls_dir}" in spec["volumes"]  # read-write: it is the one that writes
    assert split_hostport(settings.http_listen) == ("0.0.0.0", 80)
    assert split_hostport(settings.tls_listen) == ("0.0.0.0", 443)
    published = {(p.host_ip, p.host_port, p.container_port) for p in ports(spec)}
    assert published == {("127.0.0.1", "2180", 80), ("127.0.0.1", "2543", 443)}  # web has 2080, HTTPS 2443
    assert settings.ca_file == ""  # the image's public CAs unless .env names a private ACME server's
    given = load_compose({**SECRETS, "MAILFLOW_ACME_CA_FILE": "/etc/mailflow/acme-ca.pem"})["services"]["certs"]
    assert environment(given)["MAILFLOW_ACME_CA_FILE"] == "/etc/mailflow/acme-ca.pem"


HA_FILE = ROOT / "deploy/compose/ha.yml"


@pytest.fixture(scope="module")
def ha() -> dict:
    """docker-compose.yml with deploy/compose/ha.yml over it, as docker-compose (v1) merges them."""
    return yaml.safe_load(compose_v1_config(COMPOSE_FILE, HA_FILE))


def test_ha_runs_three_nats_servers_as_one_cluster(ha):
    nodes = {name: s for name, s in ha["services"].items() if s.get("image", "").startswith("nats:")}
    assert set(nodes) == {"nats", "nats-2", "nats-3"}
    names, stores = set(), set()
    for name, node in nodes.items():
        cmd = node["command"]
        flags = dict(zip(cmd[::2], cmd[1::2], strict=True))
        assert flags["--config"] == "/etc/nats/nats.conf"  # the same accounts and users on every node
        assert flags["--cluster_name"] == "mailflow"
        assert urlparse(flags["--cluster"]).port == 6222
        assert {urlparse(r).hostname for r in flags["--routes"].split(",")} == set(nodes) - {name}
        names.add(flags["--server_name"])
        stores |= {v.split(":")[0] for v in node["volumes"] if v.split(":")[1] == "/data"}
        assert environment(node).keys() == environment(ha["services"]["nats"]).keys()  # every user's password
        assert node["healthcheck"]["test"] == ha["services"]["nats"]["healthcheck"]["test"]
    assert len(names) == 3, "JetStream clustering needs a name per server"
    assert len(stores) == 3, "each node keeps its own JetStream store"


@pytest.mark.parametrize("service", SERVICES)
def test_ha_services_know_every_node(ha, service, monkeypatch):
    env = {**image_env(), **environment(ha["services"][service])}
    settings = build_settings(monkeypatch, service, env)
    assert {urlparse(u).hostname for u in settings.nats_url.split(",")} == {"nats", "nats-2", "nats-3"}
    if service == "queue":
        assert settings.stream_replicas == 3
