"""The container image and the Kubernetes manifests, checked offline: every manifest of the rendered
kustomizations validated (core kinds with kubernetes-validate, KubeRay kinds against the operator's
own CRD schemas in tests/fixtures/kuberay), the Dockerfile parsed, and the nightly CronJob's
command run against the local Ray cluster and the S3 test server."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import boto3
import jsonschema
import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from farm import cli
from tests.test_render import MEDIA, REPO

K8S = REPO / "k8s"
CRDS = REPO / "tests" / "fixtures" / "kuberay"
KUBERNETES_VERSION = "1.32.0"
KUBERAY_KINDS = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml", "RayCronJob": "ray.io_raycronjobs.yaml"}


VENV_BIN = Path(sysconfig.get_path("scripts"))  # the bin of the venv pytest runs in


def kubectl_path(venv_bin: Path = VENV_BIN) -> str | None:
    """kubectl in the venv's bin (where `make test` installs it on a machine without one; an
    unactivated venv's bin is not on PATH), else the machine's on PATH."""
    return shutil.which("kubectl", path=os.pathsep.join([str(venv_bin), os.environ.get("PATH", "")]))


def _build(overlay: str) -> list[dict]:
    kubectl = kubectl_path()
    assert kubectl, "kubectl (with kustomize) is missing: `make test` installs it"
    out = subprocess.run([kubectl, "kustomize", str(K8S / overlay)], check=True, capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module", params=["base", "overlays/dev", "campaign-job"])
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, _build(request.param)


def _crd_schema(kind: str, version: str) -> dict:
    crd = yaml.safe_load((CRDS / KUBERAY_KINDS[kind]).read_text())
    (found,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return found["schema"]["openAPIV3Schema"]


def _by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def test_every_manifest_validates(rendered):
    overlay, docs = rendered
    kinds = sorted(d["kind"] for d in docs)
    if overlay == "campaign-job":
        assert kinds == ["RayJob"]
    else:  # applying the farm starts no campaign
        assert {"Namespace", "ConfigMap", "RayCluster", "CronJob", "NetworkPolicy"} <= set(kinds) and "RayJob" not in kinds
    if overlay == "overlays/dev":
        assert {"Deployment", "Service", "Secret", "Job"} <= set(kinds)
    for doc in docs:
        group_version = doc["apiVersion"]
        if doc["kind"] in KUBERAY_KINDS:
            assert group_version == "ray.io/v1"
            jsonschema.validate(doc, _crd_schema(doc["kind"], "v1"))
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert doc["metadata"].get("namespace", "motion-farm") == "motion-farm"


def test_kuberay_schemas_catch_a_broken_manifest():
    """The CRD validation is real: a misspelt field and a wrong type are refused."""
    (cluster,) = _by_kind(_build("base"), "RayCluster")
    broken = json.loads(json.dumps(cluster))
    broken["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "eight"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, _crd_schema("RayCluster", "v1"))
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "x"},
                                      "spec": {"schedule": "* * * * *", "concurrencyPolicy": 3, "jobTemplate": {}}},
                                     KUBERNETES_VERSION, strict=True)


def test_raycluster_shape():
    docs = _build("base")
    (cluster,) = _by_kind(docs, "RayCluster")
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    (gpu,) = spec["workerGroupSpecs"]
    assert gpu["minReplicas"] == 0 < gpu["maxReplicas"]
    pods = [spec["headGroupSpec"]["template"]["spec"], gpu["template"]["spec"]]
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            sources = {next(iter(s.values()))["name"] for s in container["envFrom"]}
            assert sources == {"farm-env", "farm-s3"}  # config from the ConfigMap, S3 credentials from the Secret
            assert container["resources"]["requests"] == container["resources"]["limits"]
    worker = gpu["template"]["spec"]["containers"][0]["resources"]
    assert worker["limits"]["nvidia.com/gpu"] == worker["requests"]["nvidia.com/gpu"] == 1
    # The dev overlay runs CPU workers against MinIO.
    dev = _build("overlays/dev")
    (dev_cluster,) = _by_kind(dev, "RayCluster")
    assert "nvidia.com/gpu" not in json.dumps(dev_cluster)
    env = {d["metadata"]["name"]: d for d in _by_kind(dev, "ConfigMap")}["farm-env"]["data"]
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000" and env["RAY_ADDRESS"] == "ray://farm-head-svc:10001"
    (rayjob,) = _by_kind(_build("campaign-job"), "RayJob")
    assert rayjob["spec"]["clusterSelector"] == {"ray.io/cluster": "farm"}
    assert rayjob["spec"]["entrypoint"].startswith("farm submit /etc/motion-farm/campaigns/")
    # The submitter expands the entrypoint's $FARM_OUTPUT: it has the farm's environment.
    (submitter,) = rayjob["spec"]["submitterPodTemplate"]["spec"]["containers"]
    assert "$FARM_OUTPUT" in rayjob["spec"]["entrypoint"] and {"configMapRef": {"name": "farm-env"}} in submitter["envFrom"]
    # Only the namespace reaches the head's ports.
    (policy,) = _by_kind(docs, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"ray.io/cluster": "farm"} and policy["spec"]["ingress"] == [
        {"from": [{"podSelector": {}}]}]


def test_dockerfile_runs_farm_as_a_non_root_user():
    parser = DockerfileParser(path=str(REPO / "Dockerfile"))
    instructions = parser.structure
    args = {}
    for ins in instructions:
        if ins["instruction"] == "ARG" and "=" in ins["value"]:
            key, value = ins["value"].split("=", 1)
            args[key] = value
    assert args["BASE_IMAGE"].startswith("nvidia/cuda:") and "ubuntu22.04" in args["BASE_IMAGE"]
    assert args["VARIANT"] == "gpu"
    (entrypoint,) = [i["value"] for i in instructions if i["instruction"] == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["farm"]
    users = [i["value"] for i in instructions if i["instruction"] == "USER"]
    user = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], users[-1])
    assert user not in ("root", "0") and int(user) == 1000
    runs = " ".join(i["value"] for i in instructions if i["instruction"] == "RUN")
    # Installed the way `make setup` installs: a venv, torch pinned, the project editable; a CPU variant.
    assert "python3.11 -m venv .venv" in runs and ".venv/bin/pip install -e ." in runs
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in runs and '"$VARIANT" = "cpu"' in runs
    assert "useradd --uid ${FARM_UID}" in runs
    pinned = re.search(r'"torch==([\d.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    assert f"torch=={pinned}" in runs


def test_nightly_cronjob_command_submits_the_campaign_files_and_a_rerun_renders_nothing(
    tmp_path, s3_endpoint, ray_cluster, capsys, monkeypatch
):
    docs = _build("overlays/dev")
    (cron,) = _by_kind(docs, "CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    configmaps = {d["metadata"]["name"]: d["data"] for d in _by_kind(docs, "ConfigMap")}
    env = {}
    for source in container["envFrom"]:
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]])
    # Here: the S3 test server instead of MinIO, the local Ray instead of the cluster's head.
    env.update(AWS_ENDPOINT_URL=s3_endpoint)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RAY_ADDRESS")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    campaigns_dir = next(path for path, name in mounts.items() if "configMap" in volumes[name])
    local_dir = tmp_path / "campaigns"
    local_dir.mkdir()
    for name, text in configmaps[volumes[mounts[campaigns_dir]]["configMap"]["name"]].items():
        (local_dir / name).write_text(text)
    # The inputs the campaign names, where the dev overlay's setup job puts them.
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    for bucket in ("farm-inputs", "farm-renders"):
        s3.create_bucket(Bucket=bucket)
    for path in MEDIA.iterdir():
        s3.upload_file(str(path), "farm-inputs", f"demo/{path.name}")
    argv = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg) for arg in container["args"]]
    argv = [str(local_dir) if arg == campaigns_dir else arg for arg in argv]
    assert argv[:2] == ["submit", str(local_dir)] and argv[3] == "s3://farm-renders/nightly"

    assert cli.run(argv) == 0, capsys.readouterr().err
    record = json.loads(s3.get_object(Bucket="farm-renders", Key="nightly/nightly-demo/campaign.json")["Body"].read())
    assert record["counts"]["shots_succeeded"] == 1 and record["counts"]["windows_rendered"] > 0
    shot = "nightly/nightly-demo/shots/please-crown-man/"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="farm-renders", Prefix=shot)["Contents"]}
    assert {shot + "video.mp4", shot + "manifest.json", shot + "report.html"} <= keys
    manifest = json.loads(s3.get_object(Bucket="farm-renders", Key=shot + "manifest.json")["Body"].read())
    assert manifest["config"]["storage"]["endpoint_url"] == s3_endpoint  # from AWS_ENDPOINT_URL
    # The next night (or a retry after a crash) renders nothing.
    assert cli.run(argv) == 0
    again = json.loads(s3.get_object(Bucket="farm-renders", Key="nightly/nightly-demo/campaign.json")["Body"].read())
    assert again["counts"]["shots_reused"] == 1 and again["counts"]["windows_rendered"] == 0
