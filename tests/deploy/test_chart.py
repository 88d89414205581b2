"""The Helm chart deploy/helm/forlop, rendered by Helm's own engine with the default and the production values."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartkit import (
    CHART,
    NAMESPACE,
    PRODUCTION_VALUES,
    ROOT,
    SKIPS_FILE,
    Rendered,
    load_values,
    render,
    rendered,
)

from app.serve import SERVICES
from forlop.config import Topics, load_settings
from forlop.kafka import group_id

SECRET_ENV = {
    "FORLOP_DATABASE_URL",
    "FORLOP_KAFKA_SASL_PASSWORD",
    "FORLOP_JWT_ISSUER",
    "FORLOP_JWT_AUDIENCE",
    "FORLOP_JWT_JWKS_URL",
}


def known_settings() -> set[str]:
    """Every FORLOP_* variable forlop/config.py reads (topic names are built from the Topics fields)."""
    source = (ROOT / "forlop" / "config.py").read_text(encoding="utf-8")
    names = set(re.findall(r'"(FORLOP_[A-Z0-9_]+)"', source))
    names |= {f"FORLOP_TOPIC_{field.upper()}" for field in Topics.__dataclass_fields__}
    return names


def deployments(r: Rendered) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in r.kind("Deployment")}


def container(d: dict[str, Any]) -> dict[str, Any]:
    containers = d["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def settings_configmap(r: Rendered) -> dict[str, Any]:
    """The ConfigMap of FORLOP_* settings (the tenant registry's is another)."""
    (cm,) = [c for c in r.kind("ConfigMap") if not c["metadata"]["name"].endswith("-tenants")]
    return cm


def configmap(r: Rendered) -> dict[str, str]:
    return settings_configmap(r)["data"]


# --- lint and render --------------------------------------------------------------------------


@pytest.mark.parametrize("values_file", [None, PRODUCTION_VALUES], ids=["default", "production"])
def test_lint_passes(values_file: Path | None) -> None:
    import helm_python as helm

    report = helm.lint(
        str(CHART), load_values(values_file) if values_file else None, namespace=NAMESPACE, strict=True
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


def test_one_deployment_per_service(any_render: Rendered) -> None:
    deps = deployments(any_render)
    assert sorted(deps) == sorted(SERVICES)
    for service, d in deps.items():
        assert container(d)["args"] == ["serve", service]
        assert d["metadata"]["name"] == f"forlop-{service}"


def test_pods_are_locked_down(any_render: Rendered) -> None:
    specs = list(any_render.pod_specs())
    assert len(specs) == 6  # four services, the migrate Job, the helm test pod
    for label, spec in specs:
        assert spec["automountServiceAccountToken"] is False, label
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] >= 10000, label
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, label
        tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, label
            assert sc["readOnlyRootFilesystem"] is True, label
            assert sc["allowPrivilegeEscalation"] is False, label
            assert sc["capabilities"] == {"drop": ["ALL"]}, label
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, label
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), label
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), label
            tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and tmp[0]["name"] in tmp_volumes, f"{label}: /tmp must be a writable emptyDir"


def test_service_accounts_mount_no_token(any_render: Rendered) -> None:
    accounts = any_render.kind("ServiceAccount")
    assert accounts
    for sa in accounts:
        assert sa["automountServiceAccountToken"] is False, sa["metadata"]["name"]


def test_probes_on_every_service(any_render: Rendered) -> None:
    port = int(configmap(any_render)["FORLOP_HTTP_PORT"])
    for service, d in deployments(any_render).items():
        c = container(d)
        assert c["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}], service
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, service
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, service
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz", service


def test_spread_and_disruption_budget(any_render: Rendered) -> None:
    pdbs = {p["metadata"]["name"]: p for p in any_render.kind("PodDisruptionBudget")}
    for service, d in deployments(any_render).items():
        spec = d["spec"]["template"]["spec"]
        keys = {t["topologyKey"] for t in spec["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, service
        for t in spec["topologySpreadConstraints"]:
            assert t["labelSelector"]["matchLabels"] == d["spec"]["selector"]["matchLabels"]
        pdb = pdbs[d["metadata"]["name"]]
        assert pdb["spec"]["selector"] == d["spec"]["selector"], service


def test_only_the_api_has_a_service_by_default(default_render: Rendered) -> None:
    (svc,) = default_render.kind("Service")
    assert svc["metadata"]["name"] == "forlop-api"
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "api"
    assert svc["spec"]["ports"][0]["targetPort"] == "http"


def test_autoscaling(default_render: Rendered, production_render: Rendered) -> None:
    assert not default_render.kind("HorizontalPodAutoscaler")
    assert all("replicas" in d["spec"] for d in default_render.kind("Deployment"))
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in production_render.kind("HorizontalPodAutoscaler")}
    assert sorted(hpas) == sorted(f"forlop-{s}" for s in SERVICES)
    for d in production_render.kind("Deployment"):
        assert "replicas" not in d["spec"], "the HPA owns the replica count"
        hpa = hpas[d["metadata"]["name"]]
        assert hpa["spec"]["minReplicas"] >= 2
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


# --- configuration and secrets ------------------------------------------------------------------


def test_config_uses_only_real_settings(any_render: Rendered) -> None:
    known = known_settings()
    names = set(configmap(any_render))
    for _, spec in any_render.pod_specs():
        for c in spec["containers"]:
            names |= {e["name"] for e in c.get("env", []) if e["name"].startswith("FORLOP_")}
    assert names <= known, f"not read by forlop/config.py: {sorted(names - known)}"


def test_forlop_accepts_the_rendered_settings(any_render: Rendered, tmp_path: Path) -> None:
    """The ConfigMap plus the secret-backed variables pass forlop's own start-up checks."""
    env = dict(configmap(any_render))
    env.pop("FORLOP_XSD_DIR", None)  # the shipped schemas (an override is a mounted volume in the cluster)
    env |= {
        "FORLOP_DATABASE_URL": "postgresql://forlop:secret@db.example:5432/forlop",
        "FORLOP_KAFKA_SASL_PASSWORD": "secret",
        "FORLOP_JWT_JWKS_URL": "https://helseid.example/jwks",
    }
    settings = load_settings(env)
    assert settings.production
    assert settings.kafka_bootstrap == any_render.values.get("kafka", {}).get(
        "bootstrap", "my-cluster-kafka-bootstrap.kafka.svc:9092"
    )


def test_one_consumer_group_per_service(any_render: Rendered) -> None:
    """All replicas of a service share one group: the prefix comes from the one ConfigMap, never from the pod."""
    cm = settings_configmap(any_render)
    group = cm["data"]["FORLOP_CONSUMER_GROUP"]
    assert group == any_render.values.get("config", {}).get("consumerGroup", "forlop")
    for service, d in deployments(any_render).items():
        c = container(d)
        assert c["envFrom"] == [{"configMapRef": {"name": cm["metadata"]["name"]}}], service
        overrides = [e for e in c.get("env", []) if e["name"] == "FORLOP_CONSUMER_GROUP"]
        assert not overrides, f"{service} sets its own consumer group: {overrides}"
        assert "fieldRef" not in json.dumps(c.get("env", [])), f"{service}: no per-pod values in env"


def test_secrets_only_by_reference(any_render: Rendered) -> None:
    assert not any_render.kind("Secret"), "the chart never writes a Secret"
    assert not SECRET_ENV & set(configmap(any_render))
    for label, spec in any_render.pod_specs():
        for c in spec["containers"]:
            for e in c.get("env", []):
                if e["name"] in SECRET_ENV:
                    assert set(e) == {"name", "valueFrom"} and "secretKeyRef" in e["valueFrom"], (label, e)
    d = deployments(any_render)
    env = {e["name"]: e for e in container(d["api"])["env"]}
    assert env["FORLOP_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "forlop-database",
        "key": "url",
    }
    assert env["FORLOP_JWT_JWKS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "forlop-jwt"
    # only the API checks tokens
    for service in ("ingest", "pathway", "messaging"):
        assert not any(e["name"].startswith("FORLOP_JWT") for e in container(d[service])["env"])


def test_production_kafka_credentials(production_render: Rendered) -> None:
    cm = configmap(production_render)
    assert cm["FORLOP_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert cm["FORLOP_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert cm["FORLOP_KAFKA_SSL_CAFILE"] == "/etc/forlop/kafka-ca/ca.crt"
    for service, d in deployments(production_render).items():
        c = container(d)
        env = {e["name"]: e for e in c["env"]}
        assert env["FORLOP_KAFKA_SASL_USERNAME"]["value"] == f"forlop-{service}"
        assert env["FORLOP_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": f"forlop-{service}",
            "key": "password",
        }
        assert {"name": "kafka-ca", "mountPath": "/etc/forlop/kafka-ca", "readOnly": True} in c[
            "volumeMounts"
        ]


def test_production_pins_the_image_by_digest(production_render: Rendered) -> None:
    for _, spec in production_render.pod_specs():
        for c in spec["containers"]:
            assert re.fullmatch(r".+@sha256:[0-9a-f]{64}", c["image"]), c["image"]
            assert c["imagePullPolicy"] == "IfNotPresent"


def test_default_image_without_digest_is_always_pulled(default_render: Rendered) -> None:
    for _, spec in default_render.pod_specs():
        for c in spec["containers"]:
            assert c["image"] == "ghcr.io/forlop/forlop:0.1.0"
            assert c["imagePullPolicy"] == "Always"


# --- migrations and helm test ---------------------------------------------------------------------


def test_migrate_job_is_a_pre_install_and_pre_upgrade_hook(any_render: Rendered) -> None:
    from app.cli import build_parser

    job = any_render.one("Job", "forlop-migrate")
    notes = job["metadata"]["annotations"]
    assert set(notes["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in notes["helm.sh/hook-delete-policy"]
    spec = job["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["args"] == ["migrate"]
    build_parser().parse_args(c["args"])  # the command exists
    assert spec["restartPolicy"] == "Never"
    # it runs before the chart's objects exist: its ServiceAccount (and NetworkPolicy) are earlier hooks,
    # its settings are inline, not from the ConfigMap
    sa = any_render.one("ServiceAccount", spec["serviceAccountName"])
    assert sa["metadata"]["annotations"]["helm.sh/hook"] == notes["helm.sh/hook"]
    assert int(sa["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(notes["helm.sh/hook-weight"])
    assert "envFrom" not in c
    env = {e["name"]: e for e in c["env"]}
    assert env["FORLOP_MODE"]["value"] == "production"
    assert "secretKeyRef" in env["FORLOP_DATABASE_URL"]["valueFrom"]


def test_helm_test_pod_checks_api_readyz(any_render: Rendered) -> None:
    pod = any_render.one("Pod", "forlop-test-readyz")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = "\n".join(pod["spec"]["containers"][0]["args"])
    assert f"http://forlop-api.{NAMESPACE}.svc:80/readyz" in script


# --- network policies -------------------------------------------------------------------------------


def _policies(r: Rendered) -> dict[str, dict[str, Any]]:
    return {
        p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]: p
        for p in r.kind("NetworkPolicy")
    }


def _egress_ports(policy: dict[str, Any]) -> set[int]:
    return {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}


def test_network_policy_every_pod_is_covered(any_render: Rendered) -> None:
    policies = _policies(any_render)
    components = {
        o["metadata"]["labels"]["app.kubernetes.io/component"]
        for o in any_render.objects
        if o["kind"] in ("Deployment", "Job", "Pod")
    }
    assert components <= set(policies), f"pods without a NetworkPolicy: {components - set(policies)}"
    for policy in policies.values():
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]


def test_network_policy_only_api_takes_ingress_by_default(default_render: Rendered) -> None:
    policies = _policies(default_render)
    for component, p in policies.items():
        if component == "api":
            (rule,) = p["spec"]["ingress"]
            assert rule["ports"] == [{"protocol": "TCP", "port": "http"}]
        else:
            assert p["spec"]["ingress"] == [], component
    for service in SERVICES:
        ports = _egress_ports(policies[service])
        assert {53, 9092, 9093, 5432} <= ports, service
        assert 443 not in ports, service


def test_network_policy_production(production_render: Rendered) -> None:
    values = load_values(PRODUCTION_VALUES)["networkPolicy"]
    policies = _policies(production_render)
    for service in ("ingest", "pathway", "messaging"):
        (rule,) = policies[service]["spec"]["ingress"]  # only Prometheus, only the metrics port
        assert rule["from"] == values["metricsIngressFrom"], service
        assert rule["ports"] == [{"protocol": "TCP", "port": "http"}]
    api_from = policies["api"]["spec"]["ingress"][0]["from"]
    assert values["apiIngressFrom"][0] in api_from
    gateway = values["messageGateway"]["cidrs"][0]

    def cidrs(policy: dict[str, Any]) -> set[str]:
        return {
            peer["ipBlock"]["cidr"]
            for rule in policy["spec"]["egress"]
            for peer in rule.get("to", [])
            if "ipBlock" in peer
        }

    assert gateway in cidrs(policies["messaging"])
    for service in ("ingest", "pathway", "api"):
        assert gateway not in cidrs(policies[service]), service
    assert values["postgres"]["cidrs"][0] in cidrs(policies["migrate"])
    assert _egress_ports(policies["migrate"]) == {53, 5432}


# --- Prometheus ---------------------------------------------------------------------------------------


def exported_metric_names() -> set[str]:
    """The series names forlop.metrics exposes (counters get _total, histograms _bucket/_sum/_count)."""
    from prometheus_client.metrics import MetricWrapperBase

    from forlop import metrics

    names: set[str] = set()
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            base = obj._name
            kind = obj._type
            if kind == "counter":
                names |= {f"{base}_total", f"{base}_created"}
            elif kind == "histogram":
                names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count", f"{base}_created"}
            else:
                names.add(base)
    return names


def test_prometheus_rule_alerts(default_render: Rendered, production_render: Rendered) -> None:
    assert not default_render.kind("PrometheusRule") and not default_render.kind("ServiceMonitor")
    (rule,) = production_render.kind("PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    for name in (
        "ForlopMessagesUnacknowledged",
        "ForlopDeadLettersGrowing",
        "ForlopOverdueMilestonesRising",
        "ForlopNoEventsDuringWorkingHours",
        "ForlopTargetDown",
        "ForlopConsumerLagHigh",
        "ForlopConsumerOutage",
        "ForlopOutboxRecordParked",
    ):
        assert name in alerts, name
        assert alerts[name]["labels"]["severity"] in ("info", "warning", "critical")
    assert "> 14400" in alerts["ForlopMessagesUnacknowledged"]["expr"]  # 4 hours
    assert "day_of_week()" in alerts["ForlopNoEventsDuringWorkingHours"]["expr"]
    used = set()
    for r in alerts.values():
        used |= set(re.findall(r"\b(forlop_[a-z0-9_]+)", r["expr"]))
    missing = used - exported_metric_names()
    assert not missing, f"alerts use metrics forlop/metrics.py does not export: {sorted(missing)}"

    (monitor,) = production_render.kind("ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    scraped = [
        s for s in production_render.kind("Service") if s["metadata"]["labels"].get("forlop.io/metrics")
    ]
    assert sorted(s["metadata"]["labels"]["app.kubernetes.io/component"] for s in scraped) == sorted(SERVICES)


# --- Strimzi -------------------------------------------------------------------------------------------


def test_strimzi_topics_and_users(default_render: Rendered, production_render: Rendered) -> None:
    assert not default_render.kind("KafkaTopic") and not default_render.kind("KafkaUser")
    values = load_values(PRODUCTION_VALUES)
    cm = configmap(production_render)
    topics = {t["spec"]["topicName"]: t for t in production_render.kind("KafkaTopic")}
    assert len(topics) == len(Topics.__dataclass_fields__)
    for field in Topics.__dataclass_fields__:
        name = cm[f"FORLOP_TOPIC_{field.upper()}"]
        assert name in topics, field
        assert topics[name]["metadata"]["labels"]["strimzi.io/cluster"] == values["strimzi"]["cluster"]
        assert topics[name]["spec"]["partitions"] >= 1 and topics[name]["spec"]["replicas"] == 3
        assert topics[name]["spec"]["config"]["retention.ms"] > 0

    users = {u["metadata"]["name"]: u for u in production_render.kind("KafkaUser")}
    assert sorted(users) == sorted(f"forlop-{s}" for s in SERVICES)

    class Settings:  # what group_id() reads
        consumer_group = cm["FORLOP_CONSUMER_GROUP"]

    inputs = {
        "ingest": [cm["FORLOP_TOPIC_DIPS"], cm["FORLOP_TOPIC_ESP"]],
        "pathway": [cm["FORLOP_TOPIC_EVENTS"]],
        "messaging": [cm["FORLOP_TOPIC_STATUS_CHANGED"], cm["FORLOP_TOPIC_APPREC"]],
        "api": [],
    }
    outputs = {  # what each service's code writes to its outbox (every one: dead letters, parking alerts)
        "ingest": [cm["FORLOP_TOPIC_EVENTS"], cm["FORLOP_TOPIC_DEAD_LETTER"], cm["FORLOP_TOPIC_ALERTS"]],
        "pathway": [cm["FORLOP_TOPIC_STATUS_CHANGED"], cm["FORLOP_TOPIC_ALERTS"], cm["FORLOP_TOPIC_DEAD_LETTER"]],
        "messaging": [cm["FORLOP_TOPIC_OUTBOUND"], cm["FORLOP_TOPIC_DEAD_LETTER"], cm["FORLOP_TOPIC_ALERTS"]],
        "api": [cm["FORLOP_TOPIC_EVENTS"], cm["FORLOP_TOPIC_DEAD_LETTER"], cm["FORLOP_TOPIC_ALERTS"]],
    }
    for service, user in users.items():
        service = service.removeprefix("forlop-")
        acls = user["spec"]["authorization"]["acls"]
        reads = {
            a["resource"]["name"]
            for a in acls
            if a["resource"]["type"] == "topic" and "Read" in a["operations"]
        }
        assert reads == set(inputs[service]), service
        groups = {a["resource"]["name"] for a in acls if a["resource"]["type"] == "group"}
        assert groups == ({group_id(Settings, service)} if inputs[service] else set()), service  # type: ignore[arg-type]
        writes = {a["resource"]["name"] for a in acls if "Write" in a["operations"]}
        assert set(outputs[service]) <= writes, service
        assert not {cm["FORLOP_TOPIC_DIPS"], cm["FORLOP_TOPIC_ESP"], cm["FORLOP_TOPIC_APPREC"]} & writes, (
            service
        )
        described = {a["resource"]["name"] for a in acls if "Describe" in a["operations"]}
        assert described == set(topics) | groups, f"{service}: every process checks that all topics exist"


# --- the schema ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"services": {"api": {"replicas": "two"}}}, "/services/api/replicas"),
        ({"services": {"web": {"replicas": 1}}}, "additional properties 'web' not allowed"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"config": {"logLevel": "LOUD"}}, "/config/logLevel"),
        ({"config": {"httpPort": 80}}, "/config/httpPort"),
        ({"kafka": {"securityProtocol": "TLS"}}, "/kafka/securityProtocol"),
        ({"kafka": {"bootstrap": "kafka"}}, "/kafka/bootstrap"),
        ({"topics": {"events": {"partitions": 0}}}, "/topics/events/partitions"),
        (
            {"services": {"ingest": {"autoscaling": {"maxReplicas": -1}}}},
            "/services/ingest/autoscaling/maxReplicas",
        ),
        ({"replicaCount": 2}, "additional properties 'replicaCount' not allowed"),
        ({"ingress": {"host": "Not A Host"}}, "/ingress/host"),
        ({"ingress": {"tls": {"enabled": "yes"}}}, "/ingress/tls/enabled"),
        ({"config": {"publicBaseUrl": "ftp://forlop.example"}}, "/config/publicBaseUrl"),
        ({"config": {"trustedProxies": ["ingress-nginx"]}}, "/config/trustedProxies/0"),
        ({"tenants": {"registry": {"tenants": [{"orgNumber": "12345", "kind": "hospital", "units": ["1"]}]}}},
         "/tenants/registry"),
        ({"tenants": {"registry": {"tenants": [{"orgNumber": "123456789", "kind": "pharmacy"}]}}},
         "/tenants/registry"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else None,
)
def test_wrong_values_fail_with_a_schema_message(values: dict[str, Any], message: str) -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmValuesError) as err:
        render(values)
    assert "schema" in str(err.value) and message in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kafka": {"securityProtocol": "SASL_SSL"}}, "needs kafka.sasl.mechanism"),
        (
            {"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "SCRAM-SHA-512"}}},
            "needs the password from a Secret",
        ),
        ({"jwt": {"existingSecret": ""}}, "needs real JWT settings"),
        ({"jwt": {"existingSecret": "", "jwksUrl": "https://helseid.example/jwks"}}, "needs real JWT settings"),
        ({"patientIds": {"existingSecret": ""}}, "needs patientIds.existingSecret (FORLOP_PATIENT_ID_KEY)"),
        ({"logMasking": {"existingSecret": ""}}, "needs logMasking.existingSecret (FORLOP_LOG_MASK_KEY)"),
        ({"tenants": {"existingConfigMap": ""}}, "needs the tenant registry (FORLOP_TENANTS)"),
        ({"xsd": {"override": True}}, "xsd.override=true needs xsd.volume"),
        ({"ingress": {"enabled": True}}, "ingress.enabled=true needs ingress.host"),
        ({"config": {"transport": "http"}}, "needs config.transportUrl"),
    ],
)
def test_inconsistent_values_fail_with_a_message(values: dict[str, Any], message: str) -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmRenderError) as err:
        render(values)
    assert message in str(err.value)


def test_ingress_with_tls_sets_the_public_base_url(default_render: Rendered, production_render: Rendered) -> None:
    assert not default_render.kind("Ingress")  # optional: off by default
    assert "FORLOP_PUBLIC_BASE_URL" not in configmap(default_render)
    (ing,) = production_render.kind("Ingress")
    host = production_render.values["ingress"]["host"]
    assert ing["apiVersion"] == "networking.k8s.io/v1" and ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"hosts": [host], "secretName": "forlop-api-tls"}]
    (rule,) = ing["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert rule["host"] == host and path["path"] == "/" and path["pathType"] == "Prefix"
    service = production_render.one("Service", path["backend"]["service"]["name"])
    assert service["metadata"]["labels"]["app.kubernetes.io/component"] == "api"
    assert path["backend"]["service"]["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert configmap(production_render)["FORLOP_PUBLIC_BASE_URL"] == f"https://{host}"
    assert ing["metadata"]["annotations"] == production_render.values["ingress"]["annotations"]


@pytest.mark.parametrize(("values", "expected"), [
    ({"ingress": {"enabled": True, "host": "fhir.example.no"}}, "https://fhir.example.no"),
    ({"ingress": {"enabled": True, "host": "fhir.example.no", "tls": {"enabled": False}}}, "http://fhir.example.no"),
    ({"ingress": {"enabled": True, "host": "fhir.example.no"}, "config": {"publicBaseUrl": "https://api.example/x/"}},
     "https://api.example/x"),
    ({"config": {"publicBaseUrl": "https://api.example"}}, "https://api.example"),
])
def test_public_base_url_and_trusted_proxies_reach_forlop(values: dict[str, Any], expected: str) -> None:
    base = load_values(PRODUCTION_VALUES)
    base.pop("ingress")
    for key, value in values.items():
        base[key] = {**base.get(key, {}), **value}
    base["config"]["trustedProxies"] = ["10.0.0.0/8", "fd00::/8"]
    r = rendered("custom", base)
    data = configmap(r)
    assert data["FORLOP_PUBLIC_BASE_URL"] == expected
    settings = load_settings({k: v for k, v in data.items() if k != "FORLOP_XSD_DIR"})
    assert settings.fhir_base_url == f"{expected}/fhir"
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "fd00::/8"]
    tls = r.kind("Ingress")[0]["spec"].get("tls") if r.kind("Ingress") else None
    if tls:
        assert tls[0]["secretName"] == "forlop-tls"  # the default: <fullname>-tls


def test_readme_lists_every_value() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([A-Za-z0-9_.<>-]+)` \|", readme, re.M))

    def leaves(node: Any, prefix: str = "") -> set[str]:
        if isinstance(node, dict) and node and not prefix.endswith(("resources", "volume", "Annotations")):
            out: set[str] = set()
            for k, v in node.items():
                out |= leaves(v, f"{prefix}.{k}" if prefix else k)
            return out
        return {prefix}

    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    services = values.pop("services")
    topics = values.pop("topics")
    expected = leaves(values) | {f"services.<name>.{k}" for k in leaves(services["api"])}
    expected |= {"topics.defaultPartitions"} | {f"topics.<key>.{k}" for k in topics["dips"]}
    missing = {
        e for e in expected if e not in documented and not any(e.startswith(d + ".") for d in documented)
    }
    assert not missing, f"values missing from the chart README: {sorted(missing)}"


# --- checkov -------------------------------------------------------------------------------------------


def load_skips() -> list[dict[str, Any]]:
    skips = yaml.safe_load(SKIPS_FILE.read_text(encoding="utf-8")) or []
    for s in skips:
        assert re.fullmatch(r"CKV2?_K8S_\d+", s["id"]), s
        assert len(str(s.get("reason", "")).strip()) > 20, f"{s['id']}: a skip needs a written reason"
    return skips


def skipped(failure: dict[str, Any], render_name: str, skips: list[dict[str, Any]]) -> bool:
    for s in skips:
        if s["id"] != failure["check_id"]:
            continue
        if "renders" in s and render_name not in s["renders"]:
            continue
        if "resources" in s and not any(fnmatch.fnmatch(failure["resource"], p) for p in s["resources"]):
            continue
        return True
    return False


def test_checkov(any_render: Rendered, tmp_path: Path) -> None:
    manifest = tmp_path / f"{any_render.name}.yaml"
    manifest.write_text(any_render.text, encoding="utf-8")
    checkov = Path(sys.executable).with_name("checkov")
    proc = subprocess.run(
        [
            str(checkov),
            "-f",
            str(manifest),
            "--framework",
            "kubernetes",
            "-o",
            "json",
            "--skip-download",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.stdout.strip(), proc.stderr[-2000:]
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failures = [f for r in reports for f in r.get("results", {}).get("failed_checks", [])]
    assert sum(r.get("summary", {}).get("passed", 0) for r in reports) > 100, "checkov scanned nothing"
    assert not any(r.get("summary", {}).get("parsing_errors") for r in reports)
    skips = load_skips()
    unexpected = [
        f"{f['check_id']} {f['resource']}: {f['check_name']}"
        for f in failures
        if not skipped(f, any_render.name, skips)
    ]
    assert not unexpected, "checkov failures not in deploy/helm/checkov-skips.yaml:\n" + "\n".join(unexpected)


def test_the_shipped_schemas_need_no_volume_and_an_override_is_mounted() -> None:
    default = rendered("default", {})
    assert "FORLOP_XSD_DIR" not in configmap(default)
    for _, spec in default.pod_specs():
        assert not any(v["name"] == "xsd" for v in spec.get("volumes", []))
    override = rendered("override", {"xsd": {"override": True, "volume": {"configMap": {"name": "forlop-xsd"}}}})
    assert configmap(override)["FORLOP_XSD_DIR"] == "/etc/forlop/xsd"
    for label, spec in override.pod_specs():
        if not label.startswith("Deployment/"):
            continue  # the migration Job and the helm-test Pod send no message
        assert {"name": "xsd", "configMap": {"name": "forlop-xsd"}} in spec["volumes"]
        for c in spec["containers"]:
            assert {"name": "xsd", "mountPath": "/etc/forlop/xsd", "readOnly": True} in c["volumeMounts"]
