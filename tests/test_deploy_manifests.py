"""deploy/: every YAML parses and carries what its API needs; Dockerfiles, compose, SLURM script."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
YAMLS = sorted(DEPLOY.rglob("*.yaml"))
SBATCH = DEPLOY / "slurm" / "hpo_study.sbatch"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _k8s() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object of deploy/k8s, but gateway-tls.yaml's (it replaces gateway.yaml's Deployment;
    tests/test_cli.py runs its probes against a TLS gateway)."""
    out = {}
    for path in (DEPLOY / "k8s").glob("*.yaml"):
        if path.name == "gateway-tls.yaml":
            continue
        for doc in _docs(path):
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def _container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod_spec["containers"] if c["name"] == name)


def test_deploy_every_yaml_parses() -> None:
    assert len(YAMLS) >= 4
    for path in YAMLS:
        docs = _docs(path)
        assert docs, path
        for doc in docs:
            assert isinstance(doc, dict), path
            if path.parent.name == "k8s":
                assert {"apiVersion", "kind", "metadata"} <= set(doc), path
                assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])


def test_deploy_gateway_deployment_probes_and_secret() -> None:
    k = _k8s()
    dep = k[("Deployment", "qpu-gateway")]
    assert dep["apiVersion"] == "apps/v1"
    spec = dep["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    pod = spec["template"]["spec"]
    c = _container(pod, "gateway")
    port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
    assert "--address" in c["args"] and c["args"][c["args"].index("--address") + 1].endswith(
        f":{port}"
    )
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["grpc"]["port"] == port, probe
    env = {e["name"]: e for e in c["env"]}
    ref = env["DWAVE_API_TOKEN"]["valueFrom"]["secretKeyRef"]
    secret = k[("Secret", ref["name"])]
    assert ref["key"] in secret["stringData"]
    assert env["QPU_GATEWAY_STORE"]["value"].startswith(c["volumeMounts"][0]["mountPath"])
    claim = pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in k
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"


def test_deploy_gateway_service_targets_the_deployment() -> None:
    k = _k8s()
    svc = k[("Service", "qpu-gateway")]
    dep = k[("Deployment", "qpu-gateway")]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    port = svc["spec"]["ports"][0]
    c = _container(dep["spec"]["template"]["spec"], "gateway")
    assert port["targetPort"] in {p["name"] for p in c["ports"]} | {p["containerPort"] for p in c["ports"]}
    assert port["appProtocol"] == "grpc"


def test_deploy_rayjob_runs_the_study_against_the_service() -> None:
    k = _k8s()
    job = k[("RayJob", "qhpo-study")]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    entry = spec["entrypoint"].split()
    assert entry[:2] == ["hpo-node", "run"] and (REPO / entry[2]).exists()
    # a user-style study: its trainable is a module beside the TOML (shipped to every node)
    module = tomllib.loads((REPO / entry[2]).read_text())["trainable"]["function"].split(":")[0]
    assert (REPO / entry[2]).with_name(f"{module}.py").exists()
    svc = k[("Service", "qpu-gateway")]
    target = f"{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}"
    assert entry[entry.index("--gateway") + 1] == target
    assert entry[entry.index("--ray-address") + 1] == "auto"
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"].startswith("2.60")
    head = cluster["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert head["template"]["spec"]["containers"][0]["image"]
    claims = set()
    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        worker = group["template"]["spec"]["containers"][0]
        assert worker["resources"]["limits"]["nvidia.com/gpu"]
        claims |= {v["persistentVolumeClaim"]["claimName"] for v in group["template"]["spec"]["volumes"]
                   if "persistentVolumeClaim" in v}
    claims |= {v["persistentVolumeClaim"]["claimName"] for v in head["template"]["spec"]["volumes"]}
    assert len(claims) == 1
    pvc = k[("PersistentVolumeClaim", claims.pop())]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_deploy_compose_pairs_gateway_and_node() -> None:
    compose = _docs(DEPLOY / "compose.yaml")[0]
    services = compose["services"]
    gw, node = services["gateway"], services["node"]
    for svc in (gw, node):
        ctx = (DEPLOY / svc["build"]["context"]).resolve()
        assert ctx == REPO and (ctx / svc["build"]["dockerfile"]).exists()
    assert gw["healthcheck"]["test"][0] == "CMD"
    assert node["depends_on"]["gateway"]["condition"] == "service_healthy"
    cmd = node["command"]
    assert cmd[0] == "run" and (REPO / cmd[1]).exists()
    assert cmd[cmd.index("--gateway") + 1] == "gateway:50051"
    for vol in gw["volumes"]:
        name = vol.split(":")[0]
        assert name in compose["volumes"]


def test_deploy_compose_config_with_docker_compose() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True,
                                         check=False).returncode != 0:
        pytest.skip("docker compose is not installed here: compose.yaml checked structurally only")
    run = subprocess.run([docker, "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("name", ["gateway.Dockerfile", "node.Dockerfile"])
def test_deploy_dockerfiles_copy_existing_paths(name: str) -> None:
    lines = [ln.strip() for ln in (DEPLOY / "docker" / name).read_text().splitlines()]
    instructions = [ln for ln in lines if ln and not ln.startswith("#") and ln[0].isupper()]
    first = next(i for i in instructions if not i.startswith("ARG"))
    assert first.startswith("FROM python:3.11")
    for ins in instructions:
        if ins.startswith("COPY"):
            for src in ins.split()[1:-1]:
                assert (REPO / src).exists(), f"{name}: COPY {src} is not in the repository"
    assert any(i.startswith("ENTRYPOINT") for i in instructions)
    if name == "gateway.Dockerfile":
        assert any(i.startswith("HEALTHCHECK") for i in instructions)
        assert any(i.startswith("EXPOSE 50051") for i in instructions)


def test_deploy_k8s_manifests_validate_against_the_kubernetes_schemas() -> None:
    """Offline, no cluster: every built-in object against the Kubernetes 1.30 OpenAPI schema,
    strict (an unknown field fails); the RayJob is a CRD (KubeRay), checked structurally above."""
    import copy

    from kubernetes_validate import ValidationError, validate

    checked, crds = [], []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            if doc["apiVersion"].startswith("ray.io/"):
                crds.append(doc["kind"])
                continue
            validate(doc, "1.30.0", strict=True)
            checked.append(f"{path.name}:{doc['kind']}")
    assert crds == ["RayJob"] and len(checked) >= 6, checked
    bad = copy.deepcopy(next(d for d in yaml.safe_load_all((DEPLOY / "k8s" / "gateway.yaml")
                                                           .read_text()) if d["kind"] == "Deployment"))
    bad["spec"]["template"]["spec"]["container"] = bad["spec"]["template"]["spec"].pop("containers")
    with pytest.raises(ValidationError):
        validate(bad, "1.30.0", strict=True)


def test_deploy_kubectl_client_dry_run() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed here: manifests checked structurally only")
    run = subprocess.run(
        [kubectl, "apply", "--dry-run=client", "--validate=false", "-o", "name",
         "-f", str(DEPLOY / "k8s" / "gateway.yaml")],
        capture_output=True, text=True, check=False, timeout=60,
    )
    if run.returncode != 0 and ("connect" in run.stderr or "refused" in run.stderr
                                or "server" in run.stderr):
        pytest.skip(f"kubectl needs an API server for a dry run here: {run.stderr.strip()[:200]}")
    assert run.returncode == 0, run.stderr


def test_deploy_slurm_script_syntax_and_waits() -> None:
    text = SBATCH.read_text()
    assert text.startswith("#!/usr/bin/env bash")
    assert subprocess.run(["bash", "-n", str(SBATCH)], check=False).returncode == 0
    assert "#SBATCH --nodes=" in text
    # every wait is a health-check poll: the only `sleep` is inside wait_until()
    body = text.split("wait_until() {", 1)[1].split("\n}\n", 1)[0]
    assert body.count("sleep") == 1 and text.count("sleep ") == 1
    code = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    assert not [ln for ln in code if re.search(r'ray(_bin")? stop', ln)]
    assert "trap cleanup EXIT INT TERM" in text
    assert re.search(r"hpo-node\" run \"\$config\" --gateway \"\$gateway_address\" --ray-address", text)


def test_deploy_slurm_script_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (Debian package `shellcheck`); CI must install it")
    run = subprocess.run([shellcheck, "-x", str(SBATCH)], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stdout
