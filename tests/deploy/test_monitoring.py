"""Monitoring (issue 17 item 8): the Grafana dashboard (deploy/grafana/mailflow.json) and the Prometheus
Operator's ServiceMonitor and PrometheusRule (deploy/k8s/components/monitoring, in the prod overlay).

Every metric a panel, a dashboard variable or an alert names is one the code exports: the names come from
prometheus_client's registry after importing every module of the six services (and so the shared ones
they use: mailflow.worker, mailflow.tls...), with the series names each type makes (a counter's `_total`,
a histogram's `_bucket`/`_sum`/`_count`), and each label a selector or a `by (...)` names is one of the
metric's labels. The ServiceMonitor selects exactly the six services' ClusterIP Services, on a port that
leads to the container port the service's HTTP (and so /metrics) listens on; the alerts' `job` values are
those Services' names (the job label the operator gives their targets). The objects validate against the
CRD subsets in crd_schemas.py (test_kubernetes.py renders and checks them with everything else).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import shutil
import subprocess
from functools import cache

import jsonschema
import pytest
import yaml
from prometheus_client import REGISTRY

from mailflow.hostport import split_hostport
from tests.deploy.crd_schemas import SCHEMAS
from tests.deploy.support import ROOT, SERVICES, image_env, settings_class
from tests.deploy.test_kubernetes import K8S, kustomize_command, of_kind

DASHBOARD = ROOT / "deploy/grafana/mailflow.json"
COMPONENT = K8S / "components/monitoring"
# Series Prometheus makes itself for every target it scrapes, not the services.
SCRAPE_SERIES = {"up": set(), "scrape_duration_seconds": set()}
RECORDED_PREFIX = "mailflow:"  # recording rules' outputs (level:metric:operations), checked against their rule
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset", "inf", "nan"}
# Labels every series gets from the operator's scrape (target labels), besides the metric's own.
TARGET_LABELS = {"namespace", "pod", "job", "instance", "service", "endpoint", "container", "le"}


@cache
def exported() -> dict[str, set[str]]:
    """Every series name the services export, with the metric's label names."""
    for service in SERVICES.values():
        package = importlib.import_module(service.module)
        for info in pkgutil.walk_packages(package.__path__, f"{service.module}."):
            # not __main__ (it runs the service), not the Alembic scripts (run by Alembic only)
            if not info.name.endswith("__main__") and ".migrations" not in info.name:
                importlib.import_module(info.name)
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count", "")}
    names: dict[str, set[str]] = {}
    for collector in list(REGISTRY._collector_to_names):  # the collectors themselves: their label names
        if not hasattr(collector, "describe"):  # the process and GC collectors of prometheus_client
            continue
        labels = set(getattr(collector, "_labelnames", ()))
        for family in collector.describe():
            if family.name.startswith("mailflow_"):
                for suffix in suffixes.get(family.type, ()):
                    names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def test_the_registry_holds_every_services_metrics():
    names = exported()
    prefixes = {"mailflow_smtp_", "mailflow_queue_", "mailflow_resolver_", "mailflow_delivery_", "mailflow_mailbox_store_", "mailflow_imap_", "mailflow_worker_"}
    assert {p for p in prefixes if any(n.startswith(p) for n in names)} == prefixes
    assert "mailflow_smtp_tls_certificate_expiry_timestamp_seconds" in names
    assert "mailflow_imap_tls_certificate_expiry_timestamp_seconds" in names


def strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)


def uses(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """([(metric or recorded name, label names its selector matches on)], label names the expression
    groups or matches by) for a PromQL expression. A small lexer, enough for the expressions we write:
    strings, durations in [], label lists after by/without/on/ignoring/group_*, and function names (an
    identifier before "(") are skipped."""
    text = strip_strings(expr)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries: [5m], [$__rate_interval], [30m:1m]
    clause = r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
    grouped = {w.strip() for m in re.finditer(clause, text) for w in m.group(2).split(",") if w.strip()}
    text = re.sub(clause, " ", text)
    found = []
    for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?", text):
        name, selector, call = m.group(1), m.group(2), m.group(3)
        if call or name.lower() in PROMQL_WORDS:
            continue
        found.append((name, set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", selector or ""))))
    return found, grouped


def test_the_lexer_finds_metrics_not_functions_labels_or_durations():
    expr = 'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{namespace="$ns", x=~"p|q"}[$__rate_interval]))) / on (pod) group_left () b > 0.5 and deriv(c[30m:1m]) > 0 or absent(up{job="queue"})'
    series, grouped = uses(expr)
    assert series == [("a_bucket", {"namespace", "x"}), ("b", set()), ("c", set()), ("up", {"job"})]
    assert grouped == {"le", "route", "pod"}


def check_expr(expr: str, where: str, recorded: dict[str, set[str]]) -> None:
    """Each series exported (or recorded, or made by the scrape), each selector's labels the metric's own
    (or a target label), each label grouped or matched by one that some series of the expression has."""
    names = exported()
    series, grouped = uses(expr)
    assert series, f"{where}: no metric in {expr!r}"
    every: set[str] = set(TARGET_LABELS)
    for name, labels in series:
        if name in SCRAPE_SERIES:
            known = TARGET_LABELS
        elif name in recorded:
            known = recorded[name] | TARGET_LABELS
        else:
            assert name in names, f"{where}: {name} is not a metric any service exports"
            known = names[name] | TARGET_LABELS
        unknown = labels - known
        assert not unknown, f"{where}: {name} has no label {sorted(unknown)}"
        every |= known
    assert grouped <= every, f"{where}: no series has the labels {sorted(grouped - every)}"


# --- the dashboard -------------------------------------------------------------------------------------


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out += p.get("panels", [])
    return out


def test_the_dashboard_is_grafana_json_with_a_prometheus_datasource_variable():
    dash = dashboard()
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids are unique"


def test_every_panel_has_the_datasource_and_targets_in_the_grid():
    dash = dashboard()
    graphs = [p for p in panels(dash) if p["type"] != "row"]
    assert len(graphs) >= 20
    cells: set[tuple[int, int]] = set()
    for p in graphs:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"] and t["expr"].strip(), p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine


def test_every_metric_the_dashboard_names_is_exported():
    dash = dashboard()
    for p in panels(dash):
        for t in p.get("targets", []):
            check_expr(t["expr"], f"panel {p['title']!r}", {})
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            query = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", v["definition"])
            assert query, v["name"]
            check_expr(query.group(1), f"variable {v['name']}", {})
            assert query.group(2) in TARGET_LABELS


def test_every_service_has_a_row():
    titles = [p["title"] for p in dashboard()["panels"] if p["type"] == "row"]
    assert set(SERVICES) <= set(titles)


# --- the ServiceMonitor and the PrometheusRule ---------------------------------------------------------


@pytest.fixture(scope="module")
def prod() -> list[dict]:
    cmd = kustomize_command()
    if cmd is None:
        pytest.skip("neither kubectl nor kustomize is installed")  # test_kubernetes.py fails CI for it
    proc = subprocess.run([*cmd, str(K8S / "overlays/prod")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def component(kind: str) -> dict:
    """The object as the component holds it (read without kustomize, for the expression checks)."""
    for path in COMPONENT.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        if doc.get("kind") == kind:
            return doc
    raise AssertionError(f"no {kind} in {COMPONENT}")


def test_monitoring_objects_validate_against_their_crds():
    for kind in ("ServiceMonitor", "PrometheusRule"):
        obj = component(kind)
        jsonschema.validate(obj, SCHEMAS[(obj["apiVersion"], kind)])


def test_the_prometheus_rule_schema_refuses_what_prometheus_would():
    rule = component("PrometheusRule")
    schema = SCHEMAS[(rule["apiVersion"], "PrometheusRule")]
    bad = json.loads(json.dumps(rule))
    bad["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad = json.loads(json.dumps(rule))
    bad["spec"]["groups"][0]["rules"][0]["record"] = "both"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_the_service_monitor_scrapes_each_services_http_port(prod):
    (monitor,) = of_kind(prod, "ServiceMonitor").values()
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = of_kind(prod, "Service")
    selected = {n: s for n, s in services.items() if selector.items() <= s["metadata"].get("labels", {}).items()}
    assert set(selected) == set(SERVICES), "the internal Services of every service, not the load balancers or rspamd"
    deployments = of_kind(prod, "Deployment")
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["path"] == "/metrics"
        for name, service in selected.items():
            (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
            (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
            target = {p["name"]: p["containerPort"] for p in container["ports"]}[port["targetPort"]]
            assert target == split_hostport(_http_listen(name))[1], f"{name}: the scraped port is where /metrics answers"
            assert service["spec"]["selector"] == {"app.kubernetes.io/name": name}


def _http_listen(service: str) -> str:
    """The HTTP listen address the image gives the service (its ENV), where /metrics answers."""
    var = f"{settings_class(service).model_config['env_prefix']}HTTP_LISTEN"
    return image_env()[var]


def rules() -> list[dict]:
    return [r for g in component("PrometheusRule")["spec"]["groups"] for r in g["rules"]]


def test_every_metric_an_alert_names_is_exported_and_the_jobs_are_the_services():
    recorded: dict[str, set[str]] = {}
    for rule in rules():
        if "record" in rule:  # a recorded series keeps the labels its expression groups by
            check_expr(rule["expr"], f"record {rule['record']}", recorded)
            by = re.match(r"\s*\w+\s+by\s*\(([^)]*)\)", rule["expr"])
            recorded[rule["record"]] = {w.strip() for w in by.group(1).split(",")} if by else set()
            assert rule["record"].startswith(RECORDED_PREFIX)
            continue
        check_expr(rule["expr"], f"alert {rule['alert']}", recorded)
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        for jobs in re.findall(r'job\s*=~?\s*"([^"]*)"', rule["expr"]):
            assert set(jobs.split("|")) <= set(SERVICES), f"{rule['alert']}: job {jobs} is no Service's name"
        if "up{" in rule["expr"] and "absent(" in rule["expr"]:  # a service with no target at all
            assert set(re.findall(r'absent\(up\{job="([^"]+)"\}\)', rule["expr"])) == set(SERVICES)


def test_the_alerts_the_brief_asks_for_are_there():
    alerts = {r["alert"]: r["expr"] for r in rules() if "alert" in r}
    assert "mailflow_queue_recipients" in " ".join(r["expr"] for r in rules() if r.get("record")), "queue growing"
    assert any("mailflow:queue_active_recipients" in e and "deriv(" in e for e in alerts.values())
    assert any("mailflow_delivery_recipients_total" in e and "bounced" in e for e in alerts.values())
    assert any(re.search(r"\bup\{", e) and "== 0" in e for e in alerts.values())
    expiry = [e for e in alerts.values() if "tls_certificate_expiry_timestamp_seconds" in e]
    assert expiry and all("mailflow_smtp_" in e and "mailflow_imap_" in e and "time()" in e for e in expiry)


def test_prod_takes_the_component_and_dev_does_not(prod):
    assert set(of_kind(prod, "ServiceMonitor")) == {"mailflow"}
    assert set(of_kind(prod, "PrometheusRule")) == {"mailflow"}
    dev = (K8S / "overlays/dev/kustomization.yaml").read_text()
    assert "components/monitoring" not in dev, "dev clusters rarely run the Prometheus Operator"


# --- PromQL as Prometheus parses and evaluates it (promtool, Debian's package prometheus) ----------------


def promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return tool


def run_promtool(*args: str, cwd) -> None:
    proc = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60, cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_parses_the_rules_and_every_dashboard_query(tmp_path):
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(component("PrometheusRule")["spec"]))
    queries = [t["expr"] for p in panels(dashboard()) for t in p.get("targets", [])]
    panel_rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{n}", "expr": q.replace("$__rate_interval", "5m").replace("$namespace", "mailflow")}
        for n, q in enumerate(queries)
    ]}]}  # fmt: skip
    (tmp_path / "panels.yaml").write_text(yaml.safe_dump(panel_rules))
    run_promtool("check", "rules", "rules.yaml", "panels.yaml", cwd=tmp_path)


ALERT_TESTS = """
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # a certificate with 10 days left at t=0, then 2 days (a renewal that never came)
      - series: 'mailflow_smtp_tls_certificate_expiry_timestamp_seconds{namespace="mailflow", job="smtp-ingress", pod="s-1"}'
        values: '864000x120'
      - series: 'mailflow_imap_tls_certificate_expiry_timestamp_seconds{namespace="mailflow", job="imap-pop3", pod="i-1"}'
        values: '172800x120'
      # queue: the scheduler's replica counts ever more deferred recipients; the standby's gauge is stale
      - series: 'mailflow_queue_scheduler_active{namespace="mailflow", job="queue", pod="q-1"}'
        values: '1x120'
      - series: 'mailflow_queue_scheduler_active{namespace="mailflow", job="queue", pod="q-2"}'
        values: '0x120'
      - series: 'mailflow_queue_recipients{namespace="mailflow", job="queue", pod="q-1", state="deferred"}'
        values: '600+10x120'
      - series: 'mailflow_queue_recipients{namespace="mailflow", job="queue", pod="q-2", state="deferred"}'
        values: '100000x120'
      # delivery: 1 recipient a second delivered, 1 a second bounced
      - series: 'mailflow_delivery_recipients_total{namespace="mailflow", job="delivery", pod="d-1", route="remote", outcome="delivered"}'
        values: '0+60x120'
      - series: 'mailflow_delivery_recipients_total{namespace="mailflow", job="delivery", pod="d-1", route="remote", outcome="bounced"}'
        values: '0+60x120'
      # the resolver's only pod stops answering at minute 10; there is no mailbox-store target at all
      - series: 'up{namespace="mailflow", job="resolver", pod="r-1"}'
        values: '1x10 0x110'
      - series: 'up{namespace="mailflow", job="smtp-ingress", pod="s-1"}'
        values: '1x120'
      - series: 'up{namespace="mailflow", job="queue", pod="q-1"}'
        values: '1x120'
      - series: 'up{namespace="mailflow", job="delivery", pod="d-1"}'
        values: '1x120'
      - series: 'up{namespace="mailflow", job="imap-pop3", pod="i-1"}'
        values: '1x120'
      - series: 'up{namespace="mailflow", job="web", pod="w-1"}'
        values: '1x120'
    alert_rule_test:
      - eval_time: 90m
        alertname: MailflowCertificateExpiresSoon
        exp_alerts:
          - exp_labels: {severity: warning, namespace: mailflow, job: smtp-ingress}
          - exp_labels: {severity: warning, namespace: mailflow, job: imap-pop3}
      - eval_time: 90m
        alertname: MailflowCertificateExpiresVerySoon
        exp_alerts:
          - exp_labels: {severity: critical, namespace: mailflow, job: imap-pop3}
      - eval_time: 100m
        alertname: MailflowQueueGrowing
        exp_alerts:
          - exp_labels: {severity: warning, namespace: mailflow}
      - eval_time: 100m
        alertname: MailflowQueueSchedulerMissing
        exp_alerts: []
      - eval_time: 40m
        alertname: MailflowDeliveryFailures
        exp_alerts:
          - exp_labels: {severity: warning, namespace: mailflow}
      - eval_time: 30m
        alertname: MailflowServiceDown
        exp_alerts:
          - exp_labels: {severity: critical, namespace: mailflow, job: resolver}
          - exp_labels: {severity: critical, job: mailbox-store}
      - eval_time: 30m
        alertname: MailflowTargetDown
        exp_alerts:
          - exp_labels: {severity: warning, namespace: mailflow, job: resolver, pod: r-1}
"""


def test_promtool_fires_the_alerts_on_made_up_series(tmp_path):
    """The alerts evaluated by Prometheus's own engine: each fires on series that should make it fire,
    and not on the others (promtool compares the whole set of firing alerts of each name). Annotations are
    left out (promtool would compare their rendered text too; `check rules` parses their templates)."""
    spec = component("PrometheusRule")["spec"]
    for group in spec["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "tests.yaml").write_text(ALERT_TESTS)
    run_promtool("test", "rules", "tests.yaml", cwd=tmp_path)
