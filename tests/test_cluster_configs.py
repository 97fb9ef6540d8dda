"""The cloud configs under cluster/: they parse, the `ray up` configs pass Ray's own schema
offline, the KubeRay manifests carry what KubeRay needs, and no file there holds a secret."""
from __future__ import annotations

import re
import socket
import sys
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
LAUNCHER = {"aws": CLUSTER / "aws.yaml", "gcp": CLUSTER / "gcp.yaml"}
RAYCLUSTER = CLUSTER / "kuberay" / "raycluster.yaml"
RAYJOB = CLUSTER / "kuberay" / "rayjob.yaml"
CLOUD_MODULES = ("boto3", "botocore", "googleapiclient", "google.cloud", "kubernetes")


def load(path: Path):
    return yaml.safe_load(path.read_text())


def launcher(name: str) -> dict:
    return load(LAUNCHER[name])


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a connection or resolve a name fails the test; no cloud SDK gets imported."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to reach the network: {args[1:] or kwargs}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    before = set(sys.modules)
    yield
    imported = sorted(m for m in set(sys.modules) - before if m.startswith(CLOUD_MODULES))
    assert not imported, f"validating a config imported cloud SDKs: {imported}"


# ---------------------------------------------------------------- every file


def test_every_yaml_under_cluster_parses():
    files = sorted([*CLUSTER.rglob("*.yaml"), *CLUSTER.rglob("*.yml")])
    assert set(LAUNCHER.values()) | {RAYCLUSTER, RAYJOB} <= set(files)
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs and all(isinstance(d, dict) for d in docs), f"{path}: not a YAML mapping"


# ---------------------------------------------------------------- `ray up` configs


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_config_passes_rays_schema_offline(name, offline):
    # prepare_config only merges the provider's bundled defaults.yaml (setup commands, per-type
    # min/max workers); reaching the cloud is `ray up`'s bootstrap step, which is not called here.
    prepared = prepare_config(launcher(name))
    validate_config(prepared)
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["max_workers"] == 0  # filled in by prepare_config: no extra heads


@pytest.mark.parametrize("name", LAUNCHER)
@pytest.mark.parametrize("mutation", ["top-level key", "node type key"])
def test_unknown_keys_are_rejected_by_rays_schema(name, mutation, offline):
    config = launcher(name)
    if mutation == "top-level key":
        config["max_worker"] = 4  # a typo of max_workers
    else:
        config["available_node_types"]["gpu_worker"]["min_worker"] = 1
    with pytest.raises(jsonschema.ValidationError) as error:
        validate_config(prepare_config(config))
    assert re.search(r"'(max|min)_worker' was unexpected", error.value.message)


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_has_a_cpu_head_and_autoscaled_gpu_workers(name):
    config = launcher(name)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    workers = [t for key, t in types.items() if key != config["head_node_type"]]
    assert workers and all(t["resources"].get("GPU", 0) >= 1 for t in workers)
    for t in workers:
        assert 0 <= t["min_workers"] <= t["max_workers"] <= config["max_workers"]
    assert config["idle_timeout_minutes"] > 0
    assert config["cluster_name"] and config["auth"]["ssh_user"]
    if name == "aws":
        assert all(t["node_config"]["InstanceType"].startswith(("g", "p")) for t in workers)
    else:
        assert all(t["node_config"]["guestAccelerators"][0]["acceleratorCount"] >= 1 for t in workers)
        assert all(t["node_config"]["scheduling"]["onHostMaintenance"] == "TERMINATE" for t in workers)
    placeholders = yaml.safe_dump(config["provider"]) + yaml.safe_dump(types)
    assert "EDIT" in placeholders  # what must be edited is marked


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_installs_the_project_with_cuda_torch(name):
    setup = "\n".join(launcher(name)["setup_commands"])
    assert re.search(r"git clone (--\S+ )*\S+ ~/ganimator-sweeps\b", setup)
    assert re.search(r"pip install .*-e ~/ganimator-sweeps", setup)
    assert re.search(r"pip install .*torch==[\d.]+ --index-url https://download\.pytorch\.org/whl/cu\d+", setup)
    assert "psycopg2" in setup  # optuna_storage=postgresql://...


@pytest.mark.parametrize("name", LAUNCHER)
def test_dashboard_on_loopback_and_token_auth(name):
    config = launcher(name)
    head = " ".join(config["head_start_ray_commands"])
    workers = " ".join(config["worker_start_ray_commands"])
    assert re.search(r"ray start --head\b", head)
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in head + workers
    for commands in (head, workers):
        assert "RAY_AUTH_MODE=token" in commands  # every node refuses to run without the token
    assert config["file_mounts"].get("~/.ray") == "~/.ray"  # the same token on every node


def test_configs_run_the_ray_of_this_environment():
    # A cluster must run the Ray that `ray up` and `ray job submit` run here.
    version = ray.__version__
    for name in LAUNCHER:
        config = launcher(name)
        assert config["docker"]["image"].startswith(f"rayproject/ray:{version}-")
        assert f'"ray[default,tune]=={version}"' in "\n".join(config["setup_commands"])
    for spec in (load(RAYCLUSTER)["spec"], load(RAYJOB)["spec"]["rayClusterSpec"]):
        assert spec["rayVersion"] == version
        for container in containers(spec):
            assert container["image"].rpartition(":")[2].startswith(version)
    dockerfile = (CLUSTER / "kuberay" / "Dockerfile").read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(version)}-\S+$", dockerfile, re.MULTILINE)
    assert f'"ray[default,tune]=={version}"' in dockerfile


# ---------------------------------------------------------------- KubeRay manifests


def containers(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def check_cluster_spec(spec: dict) -> None:
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    workers = spec["workerGroupSpecs"]
    assert workers
    for group in [head, *workers]:
        # map[string]string in the CRD: an unquoted number is rejected by the API server
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), group["rayStartParams"]
        pod = group["template"]["spec"]["containers"]
        assert pod and all(c.get("name") and c.get("image") for c in pod)
    for group in workers:
        assert group["groupName"]
        assert all(isinstance(group[k], int) for k in ("replicas", "minReplicas", "maxReplicas"))
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1
    assert spec["authOptions"]["mode"] == "token"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP" and not head.get("enableIngress")
    assert spec["enableInTreeAutoscaling"] is True


def test_raycluster_has_what_kuberay_requires():
    doc = load(RAYCLUSTER)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    assert doc["metadata"]["name"]
    check_cluster_spec(doc["spec"])


def test_rayjob_has_what_kuberay_requires():
    doc = load(RAYJOB)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    assert doc["metadata"]["name"]
    spec = doc["spec"]
    assert "rayClusterSpec" in spec or "clusterSelector" in spec
    if "rayClusterSpec" in spec:
        check_cluster_spec(spec["rayClusterSpec"])
        assert spec["shutdownAfterJobFinishes"] is True
    entrypoint = spec["entrypoint"]
    assert re.search(r"\bpython sweeps/run\.py\b", entrypoint)
    assert re.search(r"\bnpz_filename=\S", entrypoint)
    assert re.search(r"\bresults_dir=(s3|gs)://", entrypoint)
    # The PostgreSQL URL comes from the Secret, expanded on the head, never written in the job.
    assert 'optuna_storage="$OPTUNA_STORAGE"' in entrypoint
    head_env = {e["name"]: e for e in spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
                ["containers"][0]["env"]}
    assert "secretKeyRef" in head_env["OPTUNA_STORAGE"]["valueFrom"]


# ---------------------------------------------------------------- no secrets

CREDENTIAL_NAME = re.compile(r"(?i)(passw(or)?d|secret|token|credential|api_?key|access_?key|_key_?id"
                             r"|private_?key|optuna_storage|database_url|dsn)")
ASSIGNED = re.compile(r"(?i)\b([\w.-]*(?:passw(?:or)?d|secret[_-]?(?:access[_-]?)?key|access[_-]?key(?:[_-]?id)?"
                      r"|api[_-]?key|auth[_-]?token|token))[\"']?\s*[:=]\s*[\"']?([^\s\"',}]*)")
CODE_ASSIGNED = re.compile(ASSIGNED.pattern.replace(r"\s*[\"']?(", r"\s*[\"'](", 1))
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:([^@\s/'\"]+)@")
PLACEHOLDER = re.compile(r"^(|<[^>\s]*>|\.\.\.|\*+|[A-Z_]+|EDIT[\w-]*|\$.*|\{\{.*\}\}|true|false|null)$")


def secrets_in_text(text: str, code: bool = False) -> list[str]:
    """In code only a quoted literal is a value; `token = state.token()` is not a secret."""
    assigned = CODE_ASSIGNED if code else ASSIGNED
    found = re.findall(r"AKIA[0-9A-Z]{16}", text)
    found += re.findall(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", text)
    found += re.findall(r"\"private_key\"\s*:", text)  # a service account key file
    found += [m.group(0) for m in URL_PASSWORD.finditer(text) if not PLACEHOLDER.match(m.group(1))]
    found += [m.group(0) for m in assigned.finditer(text) if not PLACEHOLDER.match(m.group(2))]
    return found


def secrets_in_yaml(node, where="") -> list[str]:
    """Container env entries for credentials must come from a Secret (valueFrom.secretKeyRef)."""
    found = []
    if isinstance(node, dict):
        name = node.get("name")
        is_credential = isinstance(name, str) and CREDENTIAL_NAME.search(name) and {"value", "valueFrom"} & set(node)
        if is_credential and ("value" in node or "secretKeyRef" not in node.get("valueFrom", {})):
            found.append(f"{where}: env {name} is not a secretKeyRef")
        for key, value in node.items():
            if key in ("gcp_credentials", "ssh_private_key_content"):
                found.append(f"{where}.{key}")
            found += secrets_in_yaml(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += secrets_in_yaml(item, f"{where}[{i}]")
    return found


def test_the_secret_scan_finds_secrets():
    fake_key = "AKIA" + "Q7" * 8
    assert secrets_in_text(f"aws_access_key_id = {fake_key}")
    assert secrets_in_text("-----BEGIN " + "RSA PRIVATE KEY-----")
    assert secrets_in_text("optuna_storage=postgresql://sweeper:hunter2@db:5432/optuna")
    assert secrets_in_text("CLEARML_API_SECRET_KEY=d8f7a6s5d4f3")
    assert secrets_in_text("password: hunter2")
    assert secrets_in_text('RAY_AUTH_TOKEN = "3f9a0c7e"', code=True)
    assert not secrets_in_text("token = state.token()", code=True)
    assert secrets_in_yaml({"env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}]})
    assert secrets_in_yaml({"env": [{"name": "OPTUNA_STORAGE", "valueFrom": {"configMapKeyRef": {}}}]})
    # placeholders and references are not secrets
    assert not secrets_in_text("optuna_storage=postgresql://USER:PASSWORD@HOST:5432/optuna "
                               "RAY_AUTH_TOKEN=$(ray get-auth-token) --from-literal=api-key='<api-key>'")
    assert not secrets_in_yaml({"env": [{"name": "OPTUNA_STORAGE",
                                         "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]})


def test_no_file_under_cluster_holds_a_secret():
    files = [p for p in CLUSTER.rglob("*") if p.is_file()]
    assert len(files) >= 5
    found = []
    for path in files:
        text = path.read_text()
        found += [f"{path.relative_to(CLUSTER)}: {s}" for s in secrets_in_text(text, code=path.suffix == ".py")]
        if path.suffix in (".yaml", ".yml"):
            for doc in yaml.safe_load_all(text):
                found += [f"{path.relative_to(CLUSTER)}{s}" for s in secrets_in_yaml(doc)]
    assert not found, "secrets (or literal credentials) in cluster/:\n" + "\n".join(found)


def test_the_dev_cluster_and_the_fault_harness_stay_out_of_the_wheel():
    """cluster/ (the local dev cluster, the fault harness) runs from a checkout; the wheel ships ganimator and sweeps."""
    import tomllib

    from setuptools import find_packages

    root = CLUSTER.parent
    found = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    shipped = find_packages(root, include=found["include"])
    assert {p.split(".")[0] for p in shipped} == {"ganimator", "sweeps"}
