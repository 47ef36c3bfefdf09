"""Node sizes that fill the hardware: CPUs per node from the sweep's ``resources``, and warnings.

A trial asks ``resources.<dataset>`` (``cpu``, fractional ``gpu``); Ray packs as many on a node as
both its CPUs and its GPUs allow. On a node with ``G`` GPUs a class of trials asking ``g`` GPUs and
``c`` CPUs fills every GPU when the node has ``floor(G / g) * c`` CPUs; :func:`cpus_to_fill` is the
most any class of the sweep needs (``base2new.yaml`` on 8-GPU nodes: 16 half-GPU trials × 4 CPUs
= 64). ``slurm --cpus-per-node`` and ``k8s --worker-cpus`` default to it. :func:`fit_warnings`
names the numbers when the CPUs given cannot feed the GPUs; a class asking more GPUs than a node
has can never start (:class:`~orchestration.errors.ClusterError`). :func:`memory_to_fill` sizes a
pod's memory from the trials it runs at once (``k8s --worker-memory`` default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from orchestration.errors import ClusterError
from orchestration.sweeps.planning import SweepPlan

CPU_ONLY_DEFAULT = 8
"""CPUs per node for CPU-only nodes (no GPU to fill)."""
MAX_NODE_CPUS = 1024
"""Most CPUs per node the sizing proposes; a sweep that needs more to fill the GPUs is refused."""
_EPS = 1e-9


@dataclass(frozen=True)
class TrialClass:
    """The trials of a sweep that ask the same resources.

    Attributes:
        label: Which datasets ask it (``resources.<key>`` names).
        cpu: CPUs per trial.
        gpu: GPUs per trial (fractions pack trials on a GPU).
    """

    label: str
    cpu: float
    gpu: float

    def per_node(self, gpus: int, cpus: int) -> int:
        """How many of these trials a node runs at once."""
        by_cpu = math.floor(cpus / self.cpu + _EPS) if self.cpu > 0 else math.inf
        by_gpu = math.floor(gpus / self.gpu + _EPS) if self.gpu > 0 else math.inf
        return int(min(by_cpu, by_gpu))


def trial_classes(plan: SweepPlan) -> list[TrialClass]:
    """The distinct resource requests of the sweep's trials (its grid or its search groups)."""
    datasets = [t.dataset for t in plan.trials] + [g.dataset for g in plan.groups]
    by_request: dict[tuple[float, float], list[str]] = {}
    for dataset in dict.fromkeys(datasets):
        name = dataset if dataset in plan.spec.resources else "default"
        request = plan.spec.resources_for(dataset)
        names = by_request.setdefault((float(request.cpu), float(request.gpu)), [])
        if name not in names:
            names.append(name)
    return [TrialClass(", ".join(names), cpu, gpu) for (cpu, gpu), names in by_request.items()]


def cpus_to_fill(plan: SweepPlan, gpus: int) -> int:
    """CPUs per node with which every GPU of a ``gpus``-GPU node receives trials, for every class.

    Raises:
        ClusterError: A class needs more than :data:`MAX_NODE_CPUS` CPUs per node to fill its GPUs.
    """
    if gpus <= 0:
        return CPU_ONLY_DEFAULT
    need = {c.label: math.floor(gpus / c.gpu + _EPS) * c.cpu for c in trial_classes(plan) if c.gpu > 0}
    for label, cpus in need.items():
        if cpus > MAX_NODE_CPUS:
            raise ClusterError(
                f"resources.{label}: filling {gpus} GPUs with its trials takes {math.ceil(cpus)} CPUs "
                f"per node, more than the {MAX_NODE_CPUS} a node may have; ask a larger GPU fraction "
                "or fewer CPUs per trial"
            )
    return max(1, math.ceil(max(need.values(), default=CPU_ONLY_DEFAULT)))


def fit_warnings(plan: SweepPlan, gpus: int, cpus: int, *, cpu_flag: str) -> list[str]:
    """Why some GPUs of a node would sit idle with ``cpus`` CPUs (empty when every GPU gets trials).

    Raises:
        ClusterError: A class of trials asks more GPUs than a node has (it could never start).
    """
    warnings = []
    for klass in trial_classes(plan):
        if klass.gpu <= 0:
            continue
        if gpus > 0 and klass.gpu > gpus + _EPS:
            raise ClusterError(
                f"resources.{klass.label}: a trial asks {klass.gpu:g} GPUs, a node has {gpus}: "
                "it could never start (Ray places a trial on one node)"
            )
        if gpus <= 0:
            warnings.append(
                f"resources.{klass.label} asks {klass.gpu:g} GPU per trial, the nodes have none: "
                "those trials never start"
            )
            continue
        gpu_slots = math.floor(gpus / klass.gpu + _EPS)
        running = klass.per_node(gpus, cpus)
        if running < gpu_slots:
            busy = math.ceil(running * klass.gpu - _EPS)
            warnings.append(
                f"{cpus} CPUs per node feed {running} trial(s) of resources.{klass.label} "
                f"({klass.cpu:g} CPU, {klass.gpu:g} GPU each) at once, where its {gpus} GPUs hold "
                f"{gpu_slots}: {gpus - busy} of "
                f"{gpus} GPUs idle. Give {cpu_flag} {math.ceil(gpu_slots * klass.cpu)} (the default), or ask "
                f"fewer CPUs per trial in the sweep's resources"
            )
    return warnings


POD_OVERHEAD_GIB = 4
"""A worker pod's memory besides its trials: the Ray raylet, its object store's floor, the agent."""


def trials_per_node(plan: SweepPlan, gpus: int, cpus: int) -> int:
    """The most trials of one class a node with ``gpus`` GPUs and ``cpus`` CPUs runs at once."""
    classes = [c for c in trial_classes(plan) if gpus > 0 or c.gpu <= 0]
    return max((c.per_node(gpus, cpus) for c in classes), default=0)


def memory_to_fill(plan: SweepPlan, gpus: int, cpus: int, per_trial_gib: float) -> str:
    """A pod's memory (``<n>Gi``): its trials at once × ``per_trial_gib``, plus :data:`POD_OVERHEAD_GIB`."""
    trials = max(1, trials_per_node(plan, gpus, cpus))
    return f"{math.ceil(trials * per_trial_gib + POD_OVERHEAD_GIB)}Gi"
