"""KubeRay: a ``RayJob`` manifest (and a ``ConfigMap`` carrying the sweep file) running the launch.

A head without GPUs, one GPU worker group, the image (``docker/Dockerfile``), the entrypoint, and
volumes for data and outputs; Ray token authentication through KubeRay's ``authOptions``. Worker
CPUs default to what fills every GPU with trials (``orchestration.cluster.sizing``). Names stay
within KubeRay's limits: a RayJob name has at most :data:`RAYJOB_NAME_LIMIT` characters (KubeRay
derives its cluster's and pods' names from it), longer ones are cut and end in a hash.

With object storage (``--storage s3://...``) and a tracking server, nothing needs a shared volume:
``/outputs`` is then a volume of the head pod alone (lock file and tables; the tables are also
artifacts of the launch's MLflow run), and the pods get the S3 settings and credentials from the
Secrets named by ``env_secrets`` (``envFrom``).

The manifest is data dumped by a YAML emitter; names, quantities and the image are checked
against Kubernetes' rules where they enter (``orchestration.cluster.kubernetes``), and the header
comment carries the sweep's path as :func:`~orchestration.cluster.quoting.comment_text`.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from orchestration.cluster.common import JOB_ENV_VARS, launch_args, short_name, slug, validated_plan
from orchestration.cluster.kubernetes import dns_label, dns_subdomain, image_reference, positive_quantity
from orchestration.cluster.quoting import comment_text
from orchestration.cluster.sizing import cpus_to_fill, fit_warnings
from orchestration.errors import ClusterError

DEFAULT_IMAGE = "prometar:latest"
SWEEP_MOUNT = "/etc/prometar/sweep"
DATA_MOUNT = "/data"
OUTPUT_MOUNT = "/outputs"
IMAGE_UID = 1000
"""The non-root user of ``docker/Dockerfile``; pods run as it and own the mounted volumes."""
RAYJOB_NAME_LIMIT = 47
"""KubeRay refuses longer RayJob names (the RayCluster and pod names it derives must stay valid)."""
LABEL_LIMIT = 63
DEFAULT_OUTPUT_CLAIM = "prometar-outputs"


def render_rayjob(
    sweep: str | Path,
    *,
    image: str = DEFAULT_IMAGE,
    workers: int = 1,
    gpus_per_worker: int = 1,
    worker_cpus: int | None = None,
    worker_memory: str = "32Gi",
    head_cpus: int = 4,
    head_memory: str = "16Gi",
    data_claim: str = "prometar-data",
    output_claim: str | None = None,
    tracking_uri: str | None = None,
    namespace: str | None = None,
    overrides: Sequence[str] = (),
    token_auth: bool = True,
    ttl_seconds: int = 3600,
    storage: str | None = None,
    env_secrets: Sequence[str] = (),
    warn: Callable[[str], None] | None = None,
) -> str:
    """A KubeRay ``RayJob`` manifest (preceded by a ``ConfigMap`` holding the sweep file).

    The head runs the launch and no trials (``num-gpus: 0``, and it gets no GPU); a worker group of
    ``workers`` pods with ``gpus_per_worker`` GPUs each runs the trials. Data is mounted read-only
    from the ``data_claim`` PersistentVolumeClaim at ``/data``; outputs (Ray storage, artifacts,
    and the SQLite ledger when no ``tracking_uri`` is given) go to ``output_claim`` at ``/outputs``
    on every pod (a ReadWriteMany claim).

    Args:
        sweep: The sweep file; its text is embedded in the ConfigMap.
        image: The container image (``docker/Dockerfile``).
        workers: Worker pods.
        gpus_per_worker: GPUs per worker pod (``nvidia.com/gpu``).
        worker_cpus: CPUs per worker pod; default: what fills every GPU with trials.
        worker_memory: Memory per worker pod (Kubernetes quantity).
        head_cpus: CPUs of the head pod.
        head_memory: Memory of the head pod.
        data_claim: PVC with the datasets.
        output_claim: PVC for outputs (ReadWriteMany); default: ``prometar-outputs``, or none with
            object storage and a tracking server (module docstring).
        tracking_uri: MLflow tracking URI (default: SQLite under ``/outputs``).
        namespace: Namespace written into the manifests (default: none, ``kubectl -n`` decides).
        overrides: ``KEY=VALUE`` overrides passed to the launch.
        token_auth: Enable Ray token authentication (KubeRay ≥ 1.5.1 ``authOptions``).
        ttl_seconds: Seconds the finished RayJob's cluster is kept before deletion.
        storage: Ray storage every pod reaches (``s3://...``), passed to the launch.
        env_secrets: Secrets whose keys become every pod's environment (``AWS_*`` for S3).
        warn: Receives each warning (CPUs that cannot feed the GPUs); they are also comments in the file.

    Returns:
        Multi-document YAML: the ConfigMap, then the RayJob.

    Raises:
        ClusterError: Bad counts, names, quantities or image (names the option).
        orchestration.errors.SpecError: A bad sweep file or override.
    """
    import ray

    for flag, value, low in (
        ("--workers", workers, 1),
        ("--gpus-per-worker", gpus_per_worker, 0),
        ("--worker-cpus", worker_cpus, 1),
        ("--head-cpus", head_cpus, 1),
    ):
        if value is not None and value < low:
            raise ClusterError(f"{flag}: must be {low} or more, got {value}")
    _check_kubernetes_values(
        image=image,
        worker_memory=worker_memory,
        head_memory=head_memory,
        data_claim=data_claim,
        output_claim=output_claim,
        namespace=namespace,
        env_secrets=env_secrets,
    )
    plan = validated_plan(sweep, overrides)
    if worker_cpus is None:
        worker_cpus = cpus_to_fill(plan, gpus_per_worker)
    warnings = fit_warnings(plan, gpus_per_worker, worker_cpus, cpu_flag="--worker-cpus")
    for warning in warnings:
        if warn is not None:
            warn(warning)
    name = short_name(f"prometar-{plan.name}", RAYJOB_NAME_LIMIT)
    sweep_file = f"{slug(plan.name)}.yaml"
    if output_claim is None and not (storage and "://" in storage and tracking_uri):
        output_claim = DEFAULT_OUTPUT_CLAIM
    entry = launch_args(
        f"{SWEEP_MOUNT}/{sweep_file}",
        address="auto",
        tracking_uri=tracking_uri or f"sqlite:///{OUTPUT_MOUNT}/mlflow.db",
        data_root=DATA_MOUNT,
        output=OUTPUT_MOUNT,
        overrides=overrides,
        storage=storage,
    )
    meta = {
        "name": name,
        "labels": {
            "app.kubernetes.io/name": "prometar",
            "prometar/sweep": short_name(plan.name, LABEL_LIMIT),
        },
    }
    if namespace:
        meta["namespace"] = namespace
    outputs = {"persistentVolumeClaim": {"claimName": output_claim}} if output_claim else {"emptyDir": {}}
    volumes = [
        {"name": "data", "persistentVolumeClaim": {"claimName": data_claim, "readOnly": True}},
        {"name": "outputs", **outputs},
        {"name": "sweep", "configMap": {"name": f"{name}-sweep"}},
        {"name": "shm", "emptyDir": {"medium": "Memory"}},
    ]
    mounts = [
        {"name": "data", "mountPath": DATA_MOUNT, "readOnly": True},
        {"name": "outputs", "mountPath": OUTPUT_MOUNT},
        {"name": "sweep", "mountPath": SWEEP_MOUNT, "readOnly": True},
        {"name": "shm", "mountPath": "/dev/shm"},
    ]
    env = [{"name": key, "value": value} for key, value in JOB_ENV_VARS.items()]
    env_from = [{"secretRef": {"name": secret}} for secret in env_secrets]
    security = {"runAsUser": IMAGE_UID, "runAsGroup": IMAGE_UID, "fsGroup": IMAGE_UID}  # the image's user
    head = {
        "rayStartParams": {"num-gpus": "0", "dashboard-host": "0.0.0.0"},
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "ray-head",
                        "image": image,
                        "env": env,
                        **({"envFrom": env_from} if env_from else {}),
                        "ports": [
                            {"containerPort": 6379, "name": "gcs-server"},
                            {"containerPort": 8265, "name": "dashboard"},
                            {"containerPort": 10001, "name": "client"},
                        ],
                        "resources": {
                            "requests": {"cpu": str(head_cpus), "memory": head_memory},
                            "limits": {"cpu": str(head_cpus), "memory": head_memory},
                        },
                        "volumeMounts": mounts,
                    }
                ],
                "volumes": volumes,
                "securityContext": security,
            }
        },
    }
    gpu = {"nvidia.com/gpu": str(gpus_per_worker)} if gpus_per_worker else {}
    worker = {
        "groupName": "gpu-workers" if gpus_per_worker else "cpu-workers",
        "replicas": workers,
        "minReplicas": workers,
        "maxReplicas": workers,
        "rayStartParams": {"num-gpus": str(gpus_per_worker)},
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "ray-worker",
                        "image": image,
                        "env": env,
                        **({"envFrom": env_from} if env_from else {}),
                        "resources": {
                            "requests": {"cpu": str(worker_cpus), "memory": worker_memory, **gpu},
                            "limits": {"cpu": str(worker_cpus), "memory": worker_memory, **gpu},
                        },
                        "volumeMounts": mounts,
                    }
                ],
                "volumes": volumes,
                "securityContext": security,
            }
        },
    }
    cluster: dict[str, Any] = {"rayVersion": ray.__version__}
    if token_auth:
        cluster["authOptions"] = {"mode": "token"}
    cluster.update({"headGroupSpec": head, "workerGroupSpecs": [worker]})
    rayjob = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": meta,
        "spec": {
            "entrypoint": shlex.join(["prometar-sweep", *entry]),
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": ttl_seconds,
            "backoffLimit": 0,
            "rayClusterSpec": cluster,
        },
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {**meta, "name": f"{name}-sweep"},
        "data": {sweep_file: Path(sweep).read_text()},
    }
    header = (
        f"# Generated by `prometar-sweep k8s` for the sweep {plan.name} ({comment_text(str(sweep))}).\n"
        f"# Apply with: kubectl apply -f <this file>; follow with: kubectl get rayjob {name} -w\n"
        + "".join(f"# warning: {comment_text(w)}\n" for w in warnings)
    )
    return header + yaml.dump_all(
        [config_map, rayjob], Dumper=_ManifestDumper, sort_keys=False, default_flow_style=False
    )


def _check_kubernetes_values(
    *,
    image: str,
    worker_memory: str,
    head_memory: str,
    data_claim: str,
    output_claim: str | None,
    namespace: str | None,
    env_secrets: Sequence[str],
) -> None:
    """Each value checked against Kubernetes' rules; a :class:`ClusterError` names the option."""
    image_reference("--image", image)
    positive_quantity("--worker-memory", worker_memory)
    positive_quantity("--head-memory", head_memory)
    dns_subdomain("--data-claim", data_claim)
    if output_claim is not None:
        dns_subdomain("--output-claim", output_claim)
    if namespace is not None:
        dns_label("--namespace", namespace)
    for secret in env_secrets:
        dns_subdomain("--env-secret", secret)


class _ManifestDumper(yaml.SafeDumper):
    """Plain Kubernetes YAML: no anchors or aliases, multi-line strings as ``|`` blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ManifestDumper.add_representer(str, _represent_str)
