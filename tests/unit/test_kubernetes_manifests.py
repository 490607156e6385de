"""deploy/kubernetes: every manifest validates against the Kubernetes schemas, strictly,
and the manifests agree with the cloud.toml they ship (ports, grace, mounted paths).

Validation uses kubernetes-validate, which ships the schemas: no cluster, no network (the
tests forbid sockets while validating). The manifests target Kubernetes 1.30 and later
(native gRPC probes, the preStop `sleep` action); they are checked against the oldest
and a newer version.
"""

from __future__ import annotations

import copy
import os
import socket
import tomllib
from pathlib import Path
from typing import Any

import pytest

from cloud_server.config import CloudConfig
from splitpoint.config import build, parse_address

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUBERNETES_VERSIONS = ("1.30", "1.34")
NAMESPACE = "splitpoint"  # the namespace docs/scaling.md uses; envoy.yaml names it
#: YAML under deploy/kubernetes that is not a Kubernetes object (listed, so that a new
#: manifest is never skipped by accident)
NOT_MANIFESTS = {"envoy/envoy.yaml"}


@pytest.fixture(scope="module")
def kv() -> Any:
    """kubernetes_validate; missing means failure in CI (CI=true), a skip elsewhere."""
    try:
        import kubernetes_validate
    except ImportError:
        message = "kubernetes-validate is not installed (pip install -e '.[dev]')"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return kubernetes_validate


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Schemas must come from the package, never from the network."""

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("schema validation tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _yaml() -> Any:
    # PyYAML comes with kubernetes-validate; without both, the kv fixture has already failed in CI
    return pytest.importorskip("yaml")


def manifest_files() -> list[Path]:
    files = sorted(p for p in ROOT.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
    return [p for p in files if p.relative_to(ROOT).as_posix() not in NOT_MANIFESTS]


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in _yaml().safe_load_all(path.read_text()) if d is not None]


def one(path: str, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in documents(ROOT / path) if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{path}: expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def test_the_manifests_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in manifest_files()}
    assert {"deployment.yaml", "service.yaml", "configmap.yaml", "pdb.yaml", "hpa.yaml",
            "bundle/pvc.yaml", "examples/secret.yaml"} <= names
    for name in NOT_MANIFESTS:
        assert (ROOT / name).is_file(), f"NOT_MANIFESTS lists {name}, which does not exist"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_manifest_validates_strictly(kv: Any, no_network: None, path: Path, version: str) -> None:
    docs = documents(path)
    assert docs, f"{path} holds no Kubernetes object"
    for doc in docs:
        # SchemaNotFoundError (an unknown kind or apiVersion) fails the test too
        kv.validate(doc, version, strict=True)


def test_validation_rejects_an_unknown_field(kv: Any, no_network: None) -> None:
    deployment = one("deployment.yaml", "Deployment")
    kv.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)
    bad = copy.deepcopy(deployment)
    # a plausible mistake: kubelet's gRPC probe has no TLS option
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["tls"] = True
    with pytest.raises(kv.ValidationError, match="tls"):
        kv.validate(bad, KUBERNETES_VERSIONS[0], strict=True)
    typo = copy.deepcopy(deployment)
    typo["spec"]["replica"] = 3
    with pytest.raises(kv.ValidationError, match="replica"):
        kv.validate(typo, KUBERNETES_VERSIONS[0], strict=True)
    with pytest.raises(kv.SchemaNotFoundError):
        kv.validate({**deployment, "kind": "Deploymnet"}, KUBERNETES_VERSIONS[0], strict=True)


# ---------------------------------------------------------------- consistency with cloud.toml


def cloud_config() -> CloudConfig:
    configmap = one("configmap.yaml", "ConfigMap", "splitpoint-cloud-config")
    return build(CloudConfig, tomllib.loads(configmap["data"]["cloud.toml"]))


def pod_spec() -> dict[str, Any]:
    return one("deployment.yaml", "Deployment", "splitpoint-cloud")["spec"]["template"]["spec"]


def container() -> dict[str, Any]:
    (c,) = pod_spec()["containers"]
    return c


def ports() -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container()["ports"]}


def mounts() -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container()["volumeMounts"]}


def test_configmap_cloud_toml_loads_with_the_project_loader() -> None:
    config = cloud_config()
    assert not config.insecure
    assert config.tls_client_ca, "replicas serve mutual TLS"
    assert config.token_file


def test_probes_use_grpc_health_on_the_plaintext_health_port() -> None:
    config = cloud_config()
    health_port = parse_address("health_listen", config.health_listen)[1]
    assert ports()["health"] == health_port
    assert ports()["grpc"] == parse_address("listen", config.listen)[1]
    assert health_port != ports()["grpc"], "the probe port must not be the mutual-TLS port"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container()[probe]["grpc"]["port"] == health_port, probe


def test_metrics_port_and_scrape_annotations_match_metrics_listen() -> None:
    metrics_port = parse_address("metrics_listen", cloud_config().metrics_listen)[1]
    assert ports()["metrics"] == metrics_port
    annotations = one("deployment.yaml", "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(metrics_port)


def test_termination_grace_covers_prestop_and_drain() -> None:
    config = cloud_config()
    pre_stop = container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop > 0
    assert pod_spec()["terminationGracePeriodSeconds"] > config.grace_s
    # the drain must end before the kubelet's SIGKILL, with a margin for the process to exit
    assert pod_spec()["terminationGracePeriodSeconds"] >= pre_stop + config.grace_s + 5


def test_the_files_cloud_toml_names_are_mounted() -> None:
    config, m = cloud_config(), mounts()
    assert container()["args"] == ["cloud", "--config", "/etc/splitpoint/cloud.toml"]
    assert m["/etc/splitpoint/cloud.toml"]["subPath"] == "cloud.toml"
    assert m[config.bundle]["readOnly"] is True
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    assert volumes[m[config.bundle]["name"]]["persistentVolumeClaim"]["readOnly"] is True
    claim = one("bundle/pvc.yaml", "PersistentVolumeClaim")["metadata"]["name"]
    assert volumes[m[config.bundle]["name"]]["persistentVolumeClaim"]["claimName"] == claim
    secret = one("examples/secret.yaml", "Secret")
    tls = next(v for v in volumes.values() if "secret" in v)
    assert tls["secret"]["secretName"] == secret["metadata"]["name"]
    tls_dir = next(path for path, mount in m.items() if mount["name"] == tls["name"])
    for key in ("tls_cert", "tls_key", "tls_client_ca", "token_file"):
        path = Path(getattr(config, key))
        assert path.parent == Path(tls_dir), key
        assert path.name in secret["stringData"], f"{key}: {path.name} is not a key of the Secret"


def test_pod_runs_unprivileged_with_a_read_only_root() -> None:
    pod, c = pod_spec(), container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    assert "/tmp" in mounts(), "a writable /tmp, since the root filesystem is read-only"


def test_service_is_headless_and_everything_selects_the_pods() -> None:
    labels = one("deployment.yaml", "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = one("service.yaml", "Service", "splitpoint-cloud")["spec"]
    assert service["clusterIP"] == "None"
    assert {"port": 50051, "targetPort": "grpc"}.items() <= service["ports"][0].items()
    assert service["selector"].items() <= labels.items()
    assert one("pdb.yaml", "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for path in ("hpa.yaml", "examples/hpa-queued-frames.yaml"):
        hpa = one(path, "HorizontalPodAutoscaler")
        assert hpa["metadata"]["name"] == "splitpoint-cloud", "the example replaces the CPU autoscaler"
        assert hpa["spec"]["scaleTargetRef"]["name"] == "splitpoint-cloud"
        assert hpa["spec"]["minReplicas"] >= 2, "one replica can drain while another serves"


def test_envoy_balances_grpc_over_the_headless_service_with_health_checks() -> None:
    envoy = _yaml().safe_load((ROOT / "envoy" / "envoy.yaml").read_text())
    (cluster,) = envoy["static_resources"]["clusters"]
    assert cluster["type"] == "STRICT_DNS", "re-resolves the headless name: one endpoint per pod"
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in options["explicit_http_config"]
    (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    assert address["address"] == f"splitpoint-cloud.{NAMESPACE}.svc.cluster.local"
    assert address["port_value"] == ports()["grpc"]
    (check,) = cluster["health_checks"]
    assert "grpc_health_check" in check
    assert cluster["transport_socket"]["name"] == "envoy.transport_sockets.tls", "replicas serve mutual TLS"
    routes = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    route = routes["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    assert route["cluster"] == cluster["name"]
    assert route["timeout"] == "0s", "Infer streams are long-lived: no route timeout"


def test_dockerfile_matches_the_deployment() -> None:
    """The image's user, ports and command are the ones the Deployment relies on."""
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()]
    instructions = {}
    for ln in lines:
        word, _, rest = ln.partition(" ")
        if word in ("USER", "EXPOSE", "ENTRYPOINT", "CMD"):
            assert word not in instructions, f"two {word} lines"
            instructions[word] = rest.strip()
    pod = pod_spec()["securityContext"]
    assert instructions["USER"] == f"{pod['runAsUser']}:{pod['runAsGroup']}"
    assert {int(p) for p in instructions["EXPOSE"].split()} == set(ports().values())
    assert instructions["ENTRYPOINT"] == '["splitpoint"]' and container()["command"] == ["splitpoint"]
    assert instructions["CMD"].replace('"', "") == "[" + ", ".join(container()["args"]) + "]"
    assert any("[cloud]" in ln for ln in lines if ln.startswith(("RUN", "&&"))), "installs the cloud extra"
