"""deploy/k8s: both overlays render with `kubectl kustomize`, every object validates against the
Kubernetes schemas (kubernetes-validate, strict) or, for custom resources, against their CRD subset
(crd_schemas.py), and the rendered objects agree with the code: each Deployment's environment is read by
its Settings (or the `mailflow` command) and, over the image's ENV, builds it; every Deployment runs the
one image with `mailflow serve <service>`; listeners match container ports and probes, only the mail
ports face the outside, KEDA watches the delivery consumers declared in contracts/streams.py (issue 7 §3).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml

from mailflow import natsauth
from mailflow.contracts import streams
from mailflow.hostport import split_hostport
from tests.deploy.crd_schemas import NATS_JETSTREAM_METADATA, SCHEMAS
from tests.deploy.support import (
    ROOT,
    SERVICES,
    image_env,
    read_by_someone,
    required_env,
    rspamd_conf,
    settings_class,
)

K8S = ROOT / "deploy/k8s"
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSIONS = ("1.29", "1.37")  # oldest we support, newest the schemas know
MAIL_PORTS = {"smtp-ingress": {25, 587, 465, 443}, "imap-pop3": {143, 993, 110, 995, 4190}}  # 443: MTA-STS, autoconfig
# What the world reaches: the mail ports (LoadBalancers) and the web console's pages (for an Ingress).
PUBLIC_PORTS = MAIL_PORTS | {"web": {80}}
# Secrets the overlay does not render: made by an operator or by the person deploying (deploy/README.md).
EXTERNAL_SECRETS = {
    "dev": {"mailflow-db-app"},
    "prod": {"mailflow-db-app", "mailflow-secrets", "mailflow-nats", "mailflow-tls", "mailflow-backup-s3"},
}


def kustomize_command() -> list[str] | None:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    cmd = kustomize_command()
    if cmd is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs kubectl (or kustomize) on PATH to render deploy/k8s")
        pytest.skip("neither kubectl nor kustomize is installed")
    proc = subprocess.run(
        [*cmd, str(K8S / "overlays" / request.param)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return request.param, [d for d in yaml.safe_load_all(proc.stdout) if d]


def of_kind(objs: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def test_every_object_validates(rendered):
    _, objs = rendered
    for obj in objs:
        key = (obj["apiVersion"], obj["kind"])
        if key in SCHEMAS:
            jsonschema.validate(obj, SCHEMAS[key])
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} on {version}: {e}")


def test_everything_lands_in_the_overlay_namespace(rendered):
    overlay, objs = rendered
    namespace = {"dev": "mailflow-dev", "prod": "mailflow"}[overlay]
    assert of_kind(objs, "Namespace").keys() == {namespace}
    for obj in objs:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == namespace, obj["metadata"]["name"]


def container(deploy: dict) -> dict:
    return deploy["spec"]["template"]["spec"]["containers"][0]


def pod_env(objs: list[dict], deploy: dict, image: bool = True) -> dict[str, str]:
    """The environment the container would see (the image's ENV unless image=False, then the pod's),
    secrets replaced by stand-ins, $(VAR) expanded."""
    configmaps = of_kind(objs, "ConfigMap")
    c = container(deploy)
    env: dict[str, str] = dict(image_env()) if image else {}
    for src in c.get("envFrom", []):
        env.update(configmaps[src["configMapRef"]["name"]]["data"])
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"]
            )
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = f"{ref['name']}-{ref['key']}"
    return env


def build_settings(monkeypatch, service: str, env: dict[str, str]):
    for key in list(os.environ):
        if key.startswith("MAILFLOW_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return settings_class(service)()


def test_one_deployment_per_service_with_probes_resources_and_no_root(rendered):
    _, objs = rendered
    deployments = of_kind(objs, "Deployment")
    assert set(deployments) == set(SERVICES)
    for name, deploy in deployments.items():
        pod = deploy["spec"]["template"]["spec"]
        c = container(deploy)
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"], name
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        image, _, tag = c["image"].partition(":")
        assert image == "mailflow" and tag and tag != "latest", "one image for all six"
        assert c["command"] == ["mailflow", "serve", name] and "args" not in c
        assert pod["terminationGracePeriodSeconds"] >= 30, "time to drain on SIGTERM"


def test_environment_is_read_by_the_settings_and_builds_them(rendered, monkeypatch):
    _, objs = rendered
    for name, deploy in of_kind(objs, "Deployment").items():
        known = read_by_someone(name)
        unknown = sorted(k for k in pod_env(objs, deploy, image=False) if k.startswith("MAILFLOW_") and k not in known)
        assert not unknown, f"{name} sets variables nothing in its container reads: {unknown}"
        env = pod_env(objs, deploy)
        missing = sorted(v for v in required_env(name) if not env.get(v))
        assert not missing, f"{name} would not start: {missing}"
        settings = build_settings(monkeypatch, name, env)
        assert settings.log_format == "json"
        assert urlparse(settings.nats_url).hostname == "nats"
        assert settings.tls_cert.startswith("/etc/mailflow/tls/")
        if name in ("mailbox-store", "queue"):
            db = urlparse(settings.database_url)
            assert (db.scheme, db.hostname, db.port) == ("postgresql+psycopg", "mailflow-db-rw", 5432)
            assert db.username == "mailflow-db-app-username" and db.password == "mailflow-db-app-password"


def test_listeners_match_container_ports_probes_and_services(rendered, monkeypatch):
    _, objs = rendered
    services = of_kind(objs, "Service")
    for name, deploy in of_kind(objs, "Deployment").items():
        settings = build_settings(monkeypatch, name, pod_env(objs, deploy))
        c = container(deploy)
        declared = {p["name"]: p["containerPort"] for p in c["ports"]}
        listening = {}
        for field in settings_class(name).model_fields:
            if field.endswith("listen") and getattr(settings, field):
                host, port = split_hostport(getattr(settings, field))
                assert host == "0.0.0.0", f"{name}.{field}"
                listening[field] = port
        if getattr(settings, "https_port", 0):  # smtp-ingress's HTTPS, on the MX listener's address
            listening["https_port"] = settings.https_port
        assert listening.pop("http_listen") == declared.pop("http") == 8080
        assert c["readinessProbe"]["httpGet"]["port"] == "http"
        assert set(listening.values()) == set(declared.values()) == PUBLIC_PORTS.get(name, set())
        internal = services[name]
        assert internal["spec"].get("type", "ClusterIP") == "ClusterIP"
        assert internal["spec"]["selector"] == {"app.kubernetes.io/name": name}
        assert [p["port"] for p in internal["spec"]["ports"]] == [8080]


def test_only_the_mail_ports_are_load_balanced(rendered):
    _, objs = rendered
    balanced = {n: s for n, s in of_kind(objs, "Service").items() if s["spec"].get("type") == "LoadBalancer"}
    by_target = {
        s["spec"]["selector"]["app.kubernetes.io/name"]: {p["port"] for p in s["spec"]["ports"]}
        for s in balanced.values()
    }
    assert by_target == MAIL_PORTS
    for s in balanced.values():
        assert s["spec"]["externalTrafficPolicy"] == "Local"


def test_every_deployment_has_a_disruption_budget(rendered):
    _, objs = rendered
    pdbs = of_kind(objs, "PodDisruptionBudget")
    for name, deploy in of_kind(objs, "Deployment").items():
        labels = deploy["spec"]["template"]["metadata"]["labels"]
        covering = [
            p for p in pdbs.values() if p["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(covering) == 1, name
        assert covering[0]["spec"].get("maxUnavailable") == 1, "never blocks a drain, never takes two at once"


def test_network_policies_open_only_the_mail_ports_to_the_world(rendered):
    _, objs = rendered
    policies = of_kind(objs, "NetworkPolicy")
    deny = policies["default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    everyone = [
        (name, rule)
        for name, p in policies.items()
        for rule in p["spec"].get("ingress", [])
        if not rule.get("from")
    ]
    assert [name for name, _ in everyone] == ["mail-from-anywhere"]
    assert {p["port"] for p in everyone[0][1]["ports"]} == set().union(*PUBLIC_PORTS.values())
    for name, p in policies.items():
        for rule in p["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                assert "ipBlock" not in peer, f"{name}: internal ports are for pods, not addresses"
    # every pod that connects to NATS carries the label the nats policy admits
    for name, deploy in of_kind(objs, "Deployment").items():
        assert deploy["spec"]["template"]["metadata"]["labels"].get("mailflow.io/nats-client") == "true", name


def test_referenced_configmaps_and_secrets_exist(rendered):
    overlay, objs = rendered
    configmaps, secrets = of_kind(objs, "ConfigMap"), set(of_kind(objs, "Secret"))
    for name, deploy in of_kind(objs, "Deployment").items():
        pod = deploy["spec"]["template"]["spec"]
        for c in pod["containers"] + pod.get("initContainers", []):
            for src in c.get("envFrom", []):
                assert src["configMapRef"]["name"] in configmaps, name
            for item in c.get("env", []):
                if "valueFrom" in item:
                    ref = item["valueFrom"]["secretKeyRef"]["name"]
                    assert ref in secrets or ref in EXTERNAL_SECRETS[overlay], f"{name}: Secret {ref}"
        for vol in pod["volumes"]:
            if "secret" in vol:
                assert vol["secret"]["secretName"] in secrets | EXTERNAL_SECRETS[overlay], name
    for cert in of_kind(objs, "Certificate").values():
        assert cert["spec"]["secretName"] in EXTERNAL_SECRETS[overlay]


def test_tls_comes_from_a_secret_or_the_init_container(rendered):
    overlay, objs = rendered
    for deploy in of_kind(objs, "Deployment").values():
        pod = deploy["spec"]["template"]["spec"]
        tls = next(v for v in pod["volumes"] if v["name"] == "tls")
        if overlay == "dev":
            assert "emptyDir" in tls
            init = pod["initContainers"][0]
            assert init["command"] == ["python", "-m", "mailflow.tlsinit"]
            assert init["volumeMounts"][0]["mountPath"] == "/etc/mailflow/tls"
        else:
            assert tls["secret"]["secretName"] == "mailflow-tls"
            assert "mailflow-tls" in of_kind(objs, "Certificate")


def test_keda_scales_delivery_on_its_consumer(rendered):
    _, objs = rendered
    scaled = of_kind(objs, "ScaledObject")["delivery"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "delivery"
    assert scaled["minReplicaCount"] >= 1
    triggers = scaled["triggers"]
    # the one consumer delivery reads: job batches (delivery.job)
    assert [(t["metadata"]["stream"], t["metadata"]["consumer"]) for t in triggers] == [streams.DELIVERY]
    namespace = of_kind(objs, "ScaledObject")["delivery"]["metadata"]["namespace"]
    for trigger in triggers:
        assert trigger["type"] == "nats-jetstream"
        assert set(trigger["metadata"]) <= NATS_JETSTREAM_METADATA
        host, _, port = trigger["metadata"]["natsServerMonitoringEndpoint"].partition(":")
        assert host == f"nats-headless.{namespace}.svc.cluster.local", "KEDA resolves it from its own namespace"
        assert port == str(nats_values()["config"]["monitor"]["port"])


def test_postgres_cluster_matches_what_the_services_use(rendered):
    overlay, objs = rendered
    cluster = of_kind(objs, "Cluster")["mailflow-db"]["spec"]
    init = cluster["bootstrap"]["initdb"]
    assert init["database"] == "mailflow_store" and init["owner"] == "mailflow"
    assert any("mailflow_queue" in sql for sql in init["postInitSQL"])
    if overlay == "prod":
        assert cluster["instances"] == 3 and "barmanObjectStore" in cluster["backup"]
        assert (
            of_kind(objs, "ScheduledBackup")["mailflow-db-nightly"]["spec"]["cluster"]["name"]
            == "mailflow-db"
        )


def test_prod_runs_every_service_as_replicas_that_keep_no_state(rendered):
    overlay, objs = rendered
    if overlay != "prod":
        pytest.skip("prod only")
    deployments = of_kind(objs, "Deployment")
    for name in ("smtp-ingress", "imap-pop3", "resolver", "queue", "mailbox-store", "delivery"):
        assert deployments[name]["spec"]["replicas"] >= 2
        spread = deployments[name]["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
        # delivery grows with its backlog (KEDA, up to 20 pods): spread where it can, never held back
        wanted = "ScheduleAnyway" if name == "delivery" else "DoNotSchedule"
        assert (spread["topologyKey"], spread["whenUnsatisfiable"]) == ("kubernetes.io/hostname", wanted)
    for name, deploy in deployments.items():
        strategy = deploy["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"]["maxUnavailable"] == 0, name
        volumes = deploy["spec"]["template"]["spec"].get("volumes", [])
        assert not [v for v in volumes if "persistentVolumeClaim" in v], f"{name} keeps state of its own"
    store = {e["name"]: e.get("value") for e in container(deployments["mailbox-store"])["env"]}
    assert store["MAILFLOW_STORE_BLOBS"] == "postgres", "bodies where every replica reads them"


def nats_values() -> dict:
    return yaml.safe_load((K8S / "nats/values.yaml").read_text())


def test_nats_values_give_a_three_server_jetstream_cluster():
    values = nats_values()
    assert values["config"]["cluster"] == {"enabled": True, "replicas": 3}
    js = values["config"]["jetstream"]
    assert js["enabled"] and js["fileStore"]["enabled"] and js["fileStore"]["pvc"]["enabled"]
    assert js["merge"]["sync_interval"] == "always"
    base = (K8S / "base/kustomization.yaml").read_text()
    assert "MAILFLOW_NATS_URL=nats://nats:4222" in base, "the Helm release is named nats"


def test_each_service_logs_in_to_nats_as_its_own_user(rendered):
    """Each Deployment sends the user and the Secret key that auth-values.yaml gives the NATS release."""
    overlay, objs = rendered
    auth = yaml.safe_load((K8S / "nats/auth-values.yaml").read_text())
    users = {u["user"]: u["password"] for u in auth["config"]["merge"]["accounts"][natsauth.DEFAULT_INSTALLATION]["users"]}
    nats_env = auth["container"]["env"]
    for name, deploy in of_kind(objs, "Deployment").items():
        (container,) = [c for c in deploy["spec"]["template"]["spec"]["containers"] if c["name"] == name]
        env = {e["name"]: e for e in container["env"]}
        user = env["MAILFLOW_NATS_USER"]["value"]
        assert user == natsauth.user_name(natsauth.DEFAULT_INSTALLATION, name)
        var = natsauth.password_var(name)
        assert users[user] == f"<< ${var} >>"
        ref = env["MAILFLOW_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == nats_env[var]["valueFrom"]["secretKeyRef"] == {"name": natsauth.K8S_SECRET, "key": name}
    if overlay == "dev":  # generated here, under the exact name the Helm release reads
        assert set(of_kind(objs, "Secret")[natsauth.K8S_SECRET]["data"]) == set(SERVICES)


def test_rspamd_and_redis_run_the_local_image_non_root_with_their_secret(rendered):
    overlay, objs = rendered
    sets, secrets = of_kind(objs, "StatefulSet"), set(of_kind(objs, "Secret")) | EXTERNAL_SECRETS[overlay]
    mailflow_tag = container(of_kind(objs, "Deployment")["queue"])["image"].partition(":")[2]
    pdbs = of_kind(objs, "PodDisruptionBudget")
    for name in ("rspamd", "redis"):
        pod = sets[name]["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert c["image"] == f"mailflow-rspamd:{mailflow_tag}", "built from deploy/rspamd, tagged as the release"
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 11333
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
        assert c["readinessProbe"] and c["livenessProbe"]
        assert pdbs[name]["spec"]["maxUnavailable"] == 1
    (rspamd,) = sets["rspamd"]["spec"]["template"]["spec"]["containers"]
    (password,) = [e for e in rspamd["env"] if e["name"] == "RSPAMD_CONTROLLER_PASSWORD"]
    ref = password["valueFrom"]["secretKeyRef"]
    assert ref["name"] in secrets
    store_env = {e["name"]: e for e in container(of_kind(objs, "Deployment")["mailbox-store"])["env"]}
    assert store_env["MAILFLOW_STORE_RSPAMD_PASSWORD"]["valueFrom"]["secretKeyRef"] == ref


def test_smtp_ingress_and_the_store_reach_rspamd_and_rspamd_reaches_redis(rendered, monkeypatch):
    _, objs = rendered
    services, deployments = of_kind(objs, "Service"), of_kind(objs, "Deployment")
    sets = of_kind(objs, "StatefulSet")

    def target(url: str) -> int:
        """The container port a URL's Service port leads to."""
        u = urlparse(url)
        (port,) = [p for p in services[u.hostname]["spec"]["ports"] if p["port"] == u.port]
        (c,) = sets[u.hostname]["spec"]["template"]["spec"]["containers"]
        return {p["name"]: p["containerPort"] for p in c["ports"]}[port["targetPort"]]

    smtp = build_settings(monkeypatch, "smtp-ingress", pod_env(objs, deployments["smtp-ingress"]))
    assert target(smtp.rspamd_url) == int(rspamd_conf("override.d/worker-normal.inc", "bind_socket").split(":")[1])
    store = build_settings(monkeypatch, "mailbox-store", pod_env(objs, deployments["mailbox-store"]))
    assert target(store.rspamd_url) == int(rspamd_conf("override.d/worker-controller.inc", "bind_socket").split(":")[1])
    host, port = rspamd_conf("local.d/redis.conf", "servers").split(":")
    assert target(f"redis://{host}:{port}") == 6379
    # and only they: the network policies admit exactly these peers on these ports
    policies = of_kind(objs, "NetworkPolicy")
    admitted = {
        (name, peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"], p["port"])
        for name in ("rspamd", "redis")
        for rule in policies[name]["spec"]["ingress"]
        for peer in rule["from"]
        for p in rule["ports"]
    }
    assert admitted == {("rspamd", "smtp-ingress", 11333), ("rspamd", "mailbox-store", 11334), ("redis", "rspamd", 6379)}
