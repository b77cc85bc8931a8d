"""The container image and the Kubernetes manifests, checked offline: every manifest of the rendered
kustomizations validated (core kinds with kubernetes-validate, KubeRay kinds against the operator's
own CRD schemas in tests/fixtures/kuberay), the Dockerfile parsed, and the nightly CronJob's
command run against the local Ray cluster and the S3 test server."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path

import boto3
import jsonschema
import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

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


@pytest.fixture(scope="module", params=["base", "overlays/dev", "campaign-job", "raycronjob"])
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
    elif overlay == "raycronjob":  # the alternative to the CronJob where KubeRay's feature gate is on
        assert kinds == ["RayCronJob"]
        assert docs[0]["spec"]["jobTemplate"]["clusterSelector"] == {"ray.io/cluster": "farm"}
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_nightly_cronjob_runs_the_campaigns_as_a_ray_job_that_outlives_its_submitter(tmp_path, s3_endpoint):
    """The CronJob's command against a Ray head with its job server on 127.0.0.1 (a cluster of its
    own, in its own temp folder) and the S3 test server: the submitter is killed mid-run and the
    campaign completes; a retry the same night attaches (nothing new); the next night renders nothing."""
    from ray.job_submission import JobSubmissionClient

    from farm.runtime.jobs import default_id
    from tests.test_cluster import _fresh_process_env, _kill_processes_of

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
    assert env["FARM_RAY_JOBS"] == "http://farm-head-svc:8265"
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
    # Here: the S3 test server instead of MinIO, a local head's job server instead of farm-head-svc.
    port = _free_port()
    env.update(AWS_ENDPOINT_URL=s3_endpoint, FARM_RAY_JOBS=f"http://127.0.0.1:{port}")
    argv = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg) for arg in container["args"]]
    argv = [str(local_dir) if arg == campaigns_dir else arg for arg in argv]
    assert argv[:2] == ["job", str(local_dir)] and argv[3] == "s3://farm-renders/nightly"
    ray_tmp = Path(tempfile.mkdtemp(prefix="farm-job-"))  # short: Ray's socket paths must fit in 107 bytes
    head_env = {**_fresh_process_env(RAY_TMPDIR=str(ray_tmp)), **{k: v for k, v in env.items() if k != "RAY_ADDRESS"},
                "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    job_id = default_id(local_dir)
    record_key = "nightly/nightly-demo/campaign.json"
    try:
        subprocess.run([VENV_BIN / "ray", "start", "--head", "--port=0", "--num-cpus=2", "--include-dashboard=true",
                        "--dashboard-host=127.0.0.1", f"--dashboard-port={port}", "--disable-usage-stats",
                        # The session's own cluster holds the agent's default port (52365): without a
                        # port of its own this head's job agent never starts.
                        f"--dashboard-agent-listen-port={_free_port()}"],
                       check=True, capture_output=True, env=head_env, timeout=300)
        submitter = subprocess.Popen([VENV_BIN / "farm", *argv], env=head_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        jobs = JobSubmissionClient(env["FARM_RAY_JOBS"])
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and submitter.poll() is None:  # the driver is rendering on the head
            if _status(jobs, job_id) == "RUNNING" and _exists(s3, "farm-renders", record_key):
                break
            time.sleep(0.5)
        assert submitter.poll() is None, submitter.communicate()
        submitter.kill()  # the CronJob's pod goes (evicted, node drained)
        submitter.communicate()
        while time.monotonic() < deadline and _status(jobs, job_id) not in ("SUCCEEDED", "FAILED", "STOPPED"):
            time.sleep(1)
        assert _status(jobs, job_id) == "SUCCEEDED", jobs.get_job_logs(job_id)[-3000:]
        record = json.loads(s3.get_object(Bucket="farm-renders", Key=record_key)["Body"].read())
        assert record["status"] == "finished" and record["ray_job"] == job_id
        assert record["counts"]["shots_succeeded"] == 1 and record["counts"]["windows_rendered"] > 0
        shot = "nightly/nightly-demo/shots/please-crown-man/"
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="farm-renders", Prefix=shot)["Contents"]}
        assert {shot + "video.mp4", shot + "manifest.json", shot + "report.html"} <= keys
        manifest = json.loads(s3.get_object(Bucket="farm-renders", Key=shot + "manifest.json")["Body"].read())
        assert manifest["config"]["storage"]["endpoint_url"] == s3_endpoint  # from AWS_ENDPOINT_URL
        # A retried pod the same night: the job has succeeded, nothing more runs.
        retry = subprocess.run([VENV_BIN / "farm", *argv], env=head_env, capture_output=True, text=True, timeout=120)
        assert retry.returncode == 0 and f"job {job_id} has already succeeded" in retry.stdout, retry.stderr
        # The next night: a new job, which renders nothing.
        night = subprocess.run([VENV_BIN / "farm", *argv, "--id", "next-night"], env=head_env, capture_output=True, text=True,
                               timeout=300)
        assert night.returncode == 0 and "job next-night succeeded" in night.stdout, night.stderr[-3000:]
        again = json.loads(s3.get_object(Bucket="farm-renders", Key=record_key)["Body"].read())
        assert again["ray_job"] == "next-night"
        assert again["counts"]["shots_reused"] == 1 and again["counts"]["windows_rendered"] == 0
    finally:
        _kill_processes_of(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _status(jobs, job_id: str) -> str | None:
    try:
        return str(jobs.get_job_status(job_id).value)
    except RuntimeError:  # not submitted yet
        return None


def _exists(s3, bucket: str, key: str) -> bool:
    return "Contents" in s3.list_objects_v2(Bucket=bucket, Prefix=key)
