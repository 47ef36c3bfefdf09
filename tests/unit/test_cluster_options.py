"""The cluster files a site adapts: every SLURM and KubeRay option lands where it belongs, and no
value can add a line, a shell word or a YAML key. Checked by parsing (``bash -n``, a YAML load)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from orchestration.cli import main
from orchestration.cluster.kuberay import render_rayjob
from orchestration.cluster.slurm import render_slurm
from orchestration.errors import ClusterError

SWEEP = """\
name: adapt
protocol: base2new
overrides:
  backbone.name: tiny-test
  optim.epochs: 1
grid:
  method: [ivlp]
  dataset: [caltech101, eurosat]
  seed: [1]
  shots: [1]
resources:
  default: {cpu: 4, gpu: 0.5}
"""


@pytest.fixture()
def sweep(tmp_path: Path) -> Path:
    path = tmp_path / "adapt.yaml"
    path.write_text(SWEEP)
    return path


def directives(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


def test_slurm_with_every_site_option(sweep: Path, tmp_path: Path) -> None:
    text = render_slurm(
        sweep,
        nodes=2,
        gpus_per_node=4,
        mem="240G",
        qos="high",
        constraint="a100&ib",
        time_limit="2-00:00:00",
        account="proj",
        exclusive=False,
        sbatch_lines=[
            "#SBATCH --mail-type=END,FAIL",
            "#SBATCH --mail-user=me@example.org",
            "#SBATCH --requeue",
        ],
    )
    found = directives(text)
    for line in (
        "#SBATCH --mem=240G",
        "#SBATCH --qos=high",
        "#SBATCH --constraint=a100&ib",
        "#SBATCH --time=2-00:00:00",
        "#SBATCH --account=proj",
        "#SBATCH --mail-type=END,FAIL",
        "#SBATCH --mail-user=me@example.org",
        "#SBATCH --requeue",
    ):
        assert found.count(line) == 1, line
    assert "#SBATCH --exclusive" not in found
    # every directive comes before the first command (sbatch stops reading them there)
    first_command = next(i for i, line in enumerate(text.splitlines()) if line and not line.startswith("#"))
    assert all(text.splitlines().index(line) < first_command for line in found)
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_slurm_asks_whole_nodes_by_default(sweep: Path) -> None:
    assert "#SBATCH --exclusive" in directives(render_slurm(sweep, nodes=1, gpus_per_node=1))


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"mem": "64 G"}, "--mem"),
        ({"mem": "64G\n#SBATCH --uid=0"}, "--mem"),
        ({"qos": "high;reboot"}, "--qos"),
        ({"constraint": "a100 && $(id)"}, "--constraint"),
        ({"constraint": "a100\nrm -rf /"}, "--constraint"),
        ({"sbatch_lines": ["--mail-type=END"]}, "--sbatch-line"),
        ({"sbatch_lines": ["#SBATCH --mail-type=END\necho hi"]}, "--sbatch-line"),
        ({"sbatch_lines": ["#SBATCH --mail-user=$(id)"]}, "--sbatch-line"),
        ({"sbatch_lines": ["#SBATCH --comment='a b'"]}, "--sbatch-line"),
        ({"sbatch_lines": ["#SBATCH --mail-type=END #SBATCH --x"]}, "--sbatch-line"),
        ({"sbatch_lines": ["#SBATCH -N 4"]}, "--sbatch-line"),
        ({"sbatch_lines": ["#SBATCH --nodes=8"]}, "--nodes"),
        ({"sbatch_lines": ["#SBATCH --mem=1G"]}, "use --mem"),
        ({"sbatch_lines": ["#SBATCH --exclusive"]}, "--exclusive/--no-exclusive"),
        ({"sbatch_lines": ["#SBATCH --cpus-per-task=2"]}, "--cpus-per-node"),
    ],
)
def test_slurm_refuses_values_that_could_leave_their_line(sweep: Path, kwargs: dict, flag: str) -> None:
    with pytest.raises(ClusterError, match=re.escape(flag)):
        render_slurm(sweep, nodes=2, gpus_per_node=1, **kwargs)


def test_slurm_verb_takes_the_site_options(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.sbatch"
    args = ["slurm", str(sweep), "--nodes", "1", "--gpus-per-node", "2", "--mem", "0", "--qos", "q",
            "--constraint", "[r1|r2]", "--no-exclusive", "--sbatch-line", "#SBATCH --reservation=maint",
            "-o", str(out)]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    found = directives(out.read_text())
    assert {"#SBATCH --mem=0", "#SBATCH --qos=q", "#SBATCH --constraint=[r1|r2]",
            "#SBATCH --reservation=maint"} <= set(found)  # fmt: skip
    assert "#SBATCH --exclusive" not in found
    bad = CliRunner().invoke(
        main, [*args[:-2], "--sbatch-line", "#SBATCH --x=`id`", "-o", str(tmp_path / "b")]
    )
    assert bad.exit_code == 2 and "--sbatch-line" in bad.output and not (tmp_path / "b").exists()


def worker_pod(text: str) -> dict:
    config_map, job = yaml.safe_load_all(text)
    assert config_map["kind"] == "ConfigMap" and job["kind"] == "RayJob"
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    return group["template"]["spec"]


def test_k8s_sizes_worker_memory_from_the_trials_per_pod(sweep: Path) -> None:
    # 4 GPUs, half a GPU and 4 CPUs per trial: 8 trials at once (32 CPUs by default) x 8Gi + 4Gi
    pod = worker_pod(render_rayjob(sweep, gpus_per_worker=4))
    resources = pod["containers"][0]["resources"]
    assert resources["requests"]["cpu"] == "32" and resources["limits"]["memory"] == "68Gi"
    # fewer CPUs: 4 trials at once; 12Gi per trial
    pod = worker_pod(render_rayjob(sweep, gpus_per_worker=4, worker_cpus=16, memory_per_trial="12Gi"))
    assert pod["containers"][0]["resources"]["requests"]["memory"] == "52Gi"
    # an explicit size wins
    pod = worker_pod(render_rayjob(sweep, gpus_per_worker=4, worker_memory="100Gi"))
    assert pod["containers"][0]["resources"]["limits"]["memory"] == "100Gi"


def test_k8s_node_selectors_and_tolerations_reach_the_worker_pods(sweep: Path) -> None:
    text = render_rayjob(
        sweep,
        gpus_per_worker=2,
        node_selectors=["nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3", "pool=gpu"],
        tolerations=["nvidia.com/gpu:NoSchedule", "dedicated=ml:NoExecute"],
    )
    pod = worker_pod(text)
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "pool": "gpu"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"},
    ]
    head = list(yaml.safe_load_all(text))[1]["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert "nodeSelector" not in head and "tolerations" not in head  # the head runs no trial


@pytest.mark.parametrize(
    "option, value",
    [
        ("--node-selector", "pool"),
        ("--node-selector", "pool=gpu\nkind: Pod"),
        ("--node-selector", "bad key=x"),
        ("--node-selector", "pool=" + "v" * 64),
        ("--toleration", "nvidia.com/gpu"),
        ("--toleration", "nvidia.com/gpu:Sometimes"),
        ("--toleration", "a=b c:NoSchedule"),
        ("--memory-per-trial", "lots"),
    ],
)
def test_k8s_refuses_bad_selectors_and_tolerations(
    sweep: Path, tmp_path: Path, option: str, value: str
) -> None:
    out = tmp_path / "rayjob.yaml"
    result = CliRunner().invoke(main, ["k8s", str(sweep), option, value, "-o", str(out)])
    assert result.exit_code == 2, result.output
    (message,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert option in message and "Traceback" not in result.output and not out.exists()


def test_k8s_refuses_more_worker_pods_than_a_worker_group_can_hold(sweep: Path, tmp_path: Path) -> None:
    """A worker group's replicas are Kubernetes' int32: more is refused naming the option, and
    nothing is written; the largest value is accepted."""
    out = tmp_path / "job.yaml"
    result = CliRunner().invoke(main, ["k8s", str(sweep), "--workers", str(2**31), "-o", str(out)])
    assert result.exit_code == 2 and "--workers" in result.output and not out.exists()
    result = CliRunner().invoke(main, ["k8s", str(sweep), "--workers", str(2**31 - 1), "-o", str(out)])
    assert result.exit_code == 0, result.output
    (group,) = list(yaml.safe_load_all(out.read_text()))[1]["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert group["replicas"] == 2**31 - 1
