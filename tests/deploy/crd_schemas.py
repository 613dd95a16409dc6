"""JSON schemas for the custom resources Mailflow's manifests use, which kubernetes-validate does not carry.

Each schema is the subset of the operator's CRD that our manifests touch, with `additionalProperties:
false` where we write, so a misspelt or misplaced field fails like it would at `kubectl apply` time.
Field names and types follow the operators' API references: CloudNativePG postgresql.cnpg.io/v1
(Cluster, ScheduledBackup), KEDA keda.sh/v1alpha1 (ScaledObject), cert-manager cert-manager.io/v1
(Certificate), the Prometheus Operator monitoring.coreos.com/v1 (ServiceMonitor, PrometheusRule: the
CRDs in its example/prometheus-operator-crd, operator 0.82).
"""

from __future__ import annotations

STR = {"type": "string"}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
STR_MAP = {"type": "object", "additionalProperties": STR}
QUANTITY = {"anyOf": [STR, INT]}
RESOURCES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "requests": {"type": "object", "additionalProperties": QUANTITY},
        "limits": {"type": "object", "additionalProperties": QUANTITY},
    },
}
SECRET_KEY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "key"],
    "properties": {"name": STR, "key": STR},
}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": STR, "namespace": STR, "labels": STR_MAP, "annotations": STR_MAP},
}


def _resource(api_version: str, kind: str, spec: dict) -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
    }


CNPG_CLUSTER = _resource(
    "postgresql.cnpg.io/v1",
    "Cluster",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["instances", "storage"],
        "properties": {
            "instances": {"type": "integer", "minimum": 1},
            "imageName": STR,
            "primaryUpdateStrategy": {"enum": ["unsupervised", "supervised"]},
            "minSyncReplicas": INT,
            "maxSyncReplicas": INT,
            "bootstrap": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "initdb": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "database": STR,
                            "owner": STR,
                            "postInitSQL": {"type": "array", "items": STR},
                            "postInitApplicationSQL": {"type": "array", "items": STR},
                        },
                    }
                },
            },
            "postgresql": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"parameters": STR_MAP},
            },
            "storage": {
                "type": "object",
                "additionalProperties": False,
                "required": ["size"],
                "properties": {"size": STR, "storageClass": STR},
            },
            "resources": RESOURCES,
            "affinity": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "enablePodAntiAffinity": BOOL,
                    "topologyKey": STR,
                    "podAntiAffinityType": {"enum": ["preferred", "required"]},
                },
            },
            "backup": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "retentionPolicy": {"type": "string", "pattern": "^[1-9][0-9]*[dwm]$"},
                    "barmanObjectStore": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["destinationPath"],
                        "properties": {
                            "destinationPath": STR,
                            "s3Credentials": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {"accessKeyId": SECRET_KEY, "secretAccessKey": SECRET_KEY},
                            },
                            "wal": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {"compression": {"enum": ["gzip", "bzip2", "snappy"]}},
                            },
                        },
                    },
                },
            },
        },
    },
)

CNPG_SCHEDULED_BACKUP = _resource(
    "postgresql.cnpg.io/v1",
    "ScheduledBackup",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["schedule", "cluster"],
        "properties": {
            # six fields: seconds first (robfig/cron as CloudNativePG uses it)
            "schedule": {"type": "string", "pattern": r"^\S+( \S+){5}$"},
            "backupOwnerReference": {"enum": ["none", "self", "cluster"]},
            "cluster": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {"name": STR},
            },
        },
    },
)

KEDA_SCALED_OBJECT = _resource(
    "keda.sh/v1alpha1",
    "ScaledObject",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["scaleTargetRef", "triggers"],
        "properties": {
            "scaleTargetRef": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {"apiVersion": STR, "kind": STR, "name": STR},
            },
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "pollingInterval": INT,
            "cooldownPeriod": INT,
            "advanced": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "horizontalPodAutoscalerConfig": {
                        "type": "object",
                        "properties": {"behavior": {"type": "object"}},
                    }
                },
            },
            "triggers": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["type", "metadata"],
                    "properties": {"type": STR, "metadata": STR_MAP, "name": STR},
                },
            },
        },
    },
)

CERTIFICATE = _resource(
    "cert-manager.io/v1",
    "Certificate",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["secretName", "issuerRef"],
        "properties": {
            "secretName": STR,
            "dnsNames": {"type": "array", "items": STR, "minItems": 1},
            "duration": {"type": "string", "pattern": r"^[0-9]+h$"},
            "renewBefore": {"type": "string", "pattern": r"^[0-9]+h$"},
            "privateKey": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                    "size": INT,
                    "rotationPolicy": {"enum": ["Never", "Always"]},
                },
            },
            "issuerRef": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {"name": STR, "kind": {"enum": ["Issuer", "ClusterIssuer"]}, "group": STR},
            },
        },
    },
)

# Prometheus durations as the Prometheus Operator's CRDs check them (monitoring.coreos.com/v1 Duration)
DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": STR_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": STR,
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": STR},
                },
            },
        },
    },
}

SERVICE_MONITOR = _resource(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["selector"],
        "properties": {
            "jobLabel": STR,
            "selector": LABEL_SELECTOR,
            "namespaceSelector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"any": BOOL, "matchNames": {"type": "array", "items": STR}},
            },
            "endpoints": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "port": STR,
                        "targetPort": {"anyOf": [STR, INT]},
                        "path": STR,
                        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                        "interval": DURATION,
                        "scrapeTimeout": DURATION,
                        "honorLabels": BOOL,
                    },
                },
            },
        },
    },
)

PROMETHEUS_RULE = _resource(
    "monitoring.coreos.com/v1",
    "PrometheusRule",
    {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": DURATION,
                        "limit": INT,
                        "labels": STR_MAP,
                        "rules": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["expr"],
                                # only one of record and alert (the CRD says so in words; Prometheus refuses both)
                                "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                "properties": {
                                    "alert": STR,
                                    "record": STR,
                                    "expr": {"anyOf": [INT, STR]},
                                    "for": DURATION,
                                    "keep_firing_for": {**DURATION, "minLength": 1},
                                    "labels": STR_MAP,
                                    "annotations": STR_MAP,
                                },
                            },
                        },
                    },
                },
            }
        },
    },
)

# The KEDA nats-jetstream scaler's metadata keys (keda.sh docs, scalers/nats-jetstream).
NATS_JETSTREAM_METADATA = {
    "natsServerMonitoringEndpoint",
    "account",
    "stream",
    "consumer",
    "lagThreshold",
    "activationLagThreshold",
    "useHttps",
}

SCHEMAS = {
    ("postgresql.cnpg.io/v1", "Cluster"): CNPG_CLUSTER,
    ("postgresql.cnpg.io/v1", "ScheduledBackup"): CNPG_SCHEDULED_BACKUP,
    ("keda.sh/v1alpha1", "ScaledObject"): KEDA_SCALED_OBJECT,
    ("cert-manager.io/v1", "Certificate"): CERTIFICATE,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
}
