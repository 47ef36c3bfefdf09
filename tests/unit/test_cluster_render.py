"""Cluster artifacts without a cluster: the Ray Job submission, the sbatch script, the RayJob
manifest and the Docker image's install line (``orchestration/cluster.py``, ``docker/``)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from orchestration.cli import main
from orchestration.cluster.common import launch_args, parse_env, submission_id
from orchestration.cluster.jobs import DEFAULT_EXCLUDES, auth_headers, build_submission, resolve_token
from orchestration.cluster.kuberay import render_rayjob
from orchestration.cluster.slurm import render_slurm
from orchestration.errors import ClusterError

REPO = Path(__file__).resolve().parents[2]

TINY_SWEEP = """\
name: tiny-cluster
protocol: base2new
preset: official
overrides:
  backbone.name: tiny-test
  optim.epochs: 1
  data.batch_size: 4
  data.num_workers: 0
grid:
  method: [ivlp]
  dataset: [caltech101, eurosat]
  seed: [1, 2]
  shots: [1]
resources:
  default: {cpu: 1, gpu: 0}
max_failures: 2
"""


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A folder shipped as the job's working directory, holding a tiny sweep."""
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "tiny.yaml").write_text(TINY_SWEEP)
    return tmp_path


# --------------------------------------------------------------------------------------------
# Ray Jobs submission (built, not sent)


def test_submission_id_is_sweep_name_and_attempt() -> None:
    assert submission_id("base2new", 1) == "base2new-1"
    assert submission_id("base2new", 3) == "base2new-3"
    with pytest.raises(ClusterError, match="--attempt"):
        submission_id("base2new", 0)


def test_build_submission_ships_working_dir_without_bulky_folders(project: Path) -> None:
    out = project / "runs_out"
    sub_id, entrypoint, env, warnings = build_submission(
        project / "sweeps" / "tiny.yaml",
        attempt=2,
        working_dir=project,
        tracking_uri="http://mlflow:5000",
        data_root="/shared/data",
        output=str(out),
        overrides=["optim.epochs=2"],
        env_vars={"HF_HOME": "/cache"},
    )
    assert sub_id == "tiny-cluster-2"
    argv = shlex.split(entrypoint)
    assert argv[:5] == ["python", "-m", "orchestration.cli", "launch", "sweeps/tiny.yaml"]
    assert argv[argv.index("--address") + 1] == "auto"
    assert argv[argv.index("--tracking-uri") + 1] == "http://mlflow:5000"
    assert argv[argv.index("--data-root") + 1] == "/shared/data"
    assert argv[argv.index("--output") + 1] == str(out)
    assert argv[argv.index("--set") + 1] == "optim.epochs=2"
    assert env["working_dir"] == str(project)
    for bulky in ("/.git/", "/.venv/", "/prometar_runs/", "__pycache__/"):
        assert bulky in env["excludes"]
    assert "/runs_out/" in env["excludes"]  # the output folder inside the working dir is not shipped back
    assert env["env_vars"]["HF_HOME"] == "/cache" and env["env_vars"]["PYTHONUNBUFFERED"] == "1"
    assert warnings == []


def test_build_submission_warns_about_ephemeral_outputs(project: Path) -> None:
    _, _, _, warnings = build_submission(project / "sweeps" / "tiny.yaml", working_dir=project)
    assert len(warnings) == 1 and "temporary working directory" in warnings[0]
    _, _, _, warnings = build_submission(project / "sweeps" / "tiny.yaml", working_dir=project, output="rel")
    assert "--output rel is relative" in warnings[0]


def test_build_submission_refuses_sweep_outside_working_dir(project: Path, tmp_path_factory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    with pytest.raises(ClusterError, match="outside the shipped working directory"):
        build_submission(project / "sweeps" / "tiny.yaml", working_dir=elsewhere)


def test_build_submission_validates_the_sweep(project: Path) -> None:
    from orchestration.errors import SpecError

    bad = project / "sweeps" / "bad.yaml"
    bad.write_text(TINY_SWEEP.replace("dataset: [", "datasett: ["))
    with pytest.raises(SpecError, match="bad.yaml"):
        build_submission(bad, working_dir=project)


def test_default_excludes_cover_the_gitignored_outputs() -> None:
    assert "/prometar_runs/" in DEFAULT_EXCLUDES and "/.git/" in DEFAULT_EXCLUDES


def test_token_resolution(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert resolve_token(None) is None and auth_headers(None) == {}
    assert resolve_token("abc") == "abc"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "token"))
    with pytest.raises(ClusterError, match="RAY_AUTH_TOKEN_PATH"):
        resolve_token(None)
    (tmp_path / "token").write_text("from-file\n")
    assert resolve_token(None) == "from-file"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert resolve_token(None) == "from-env"
    assert resolve_token("explicit") == "explicit"
    assert auth_headers("t0k") == {"Authorization": "Bearer t0k"}


def test_parse_env() -> None:
    assert parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(ClusterError, match="--env"):
        parse_env(["NOEQUALS"])


def test_submit_unreachable_address_exits_2(project: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "submit",
            str(project / "sweeps" / "tiny.yaml"),
            "--working-dir",
            str(project),
            "--address",
            "http://127.0.0.1:9",
        ],
    )
    assert result.exit_code == 2
    assert "--address http://127.0.0.1:9" in result.output


def test_launch_args_order() -> None:
    assert launch_args("s.yaml", address="auto") == ["launch", "s.yaml", "--address", "auto"]


# --------------------------------------------------------------------------------------------
# SLURM


def test_slurm_script_header_and_syntax(project: Path, tmp_path: Path) -> None:
    sweep = project / "sweeps" / "tiny.yaml"
    text = render_slurm(
        sweep,
        nodes=4,
        gpus_per_node=8,
        cpus_per_node=32,
        partition="gpu",
        time_limit="1-02:00:00",
        account="proj",
        tracking_uri="http://mlflow:5000",
        data_root="/shared/data",
        output="/shared/out",
        overrides=["optim.epochs=3"],
        setup=["source /opt/venv/bin/activate"],
    )
    assert text.startswith("#!/usr/bin/env bash\n")
    directives = dict(re.findall(r"^#SBATCH --([a-z-]+)=?(\S*)$", text, flags=re.M))
    assert directives["nodes"] == "4" and directives["gpus-per-node"] == "8"
    assert directives["cpus-per-task"] == "32" and directives["ntasks-per-node"] == "1"
    assert (
        directives["partition"] == "gpu"
        and directives["time"] == "1-02:00:00"
        and directives["account"] == "proj"
    )
    assert directives["job-name"] == "prometar-tiny-cluster"
    # head first, then workers, then the launch; Ray stopped by a trap
    head = text.index("ray start --head --block")
    worker = text.index("ray start --block --address=")
    launch = text.index("prometar-sweep launch")
    assert head < worker < launch
    assert "trap stop_ray EXIT" in text and "ray stop" not in text.replace("stop_ray", "")
    assert "source /opt/venv/bin/activate" in text
    launch_line = text[launch:].splitlines()[0]
    assert '--address "$ADDRESS"' in launch_line and "--set optim.epochs=3" in launch_line
    assert "--tracking-uri http://mlflow:5000" in launch_line and "--output /shared/out" in launch_line
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_slurm_cpu_only_has_no_gpu_directive(project: Path) -> None:
    text = render_slurm(project / "sweeps" / "tiny.yaml", nodes=1, gpus_per_node=0)
    assert "--gpus-per-node=" not in "\n".join(
        line for line in text.splitlines() if line.startswith("#SBATCH")
    )
    assert "GPUS_PER_NODE=0" in text


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"nodes": 0}, "--nodes"),
        ({"gpus_per_node": -1}, "--gpus-per-node"),
        ({"time_limit": "soon"}, "--time"),
        ({"partition": "a b"}, "--partition"),
    ],
)
def test_slurm_bad_options_name_the_flag(project: Path, kwargs: dict, flag: str) -> None:
    args = {"nodes": 2, "gpus_per_node": 1, **kwargs}
    with pytest.raises(ClusterError, match=flag):
        render_slurm(project / "sweeps" / "tiny.yaml", **args)


def test_slurm_verb_writes_executable_script(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.sbatch"
    result = CliRunner().invoke(
        main,
        [
            "slurm",
            str(project / "sweeps" / "tiny.yaml"),
            "--nodes",
            "2",
            "--gpus-per-node",
            "1",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.stat().st_mode & 0o111 and "#SBATCH --nodes=2" in out.read_text()
    bad = CliRunner().invoke(
        main,
        [
            "slurm",
            str(project / "missing.yaml"),
            "--nodes",
            "2",
            "--gpus-per-node",
            "1",
            "-o",
            str(tmp_path / "never.sbatch"),
        ],
    )
    assert bad.exit_code == 2 and "missing.yaml" in bad.output and not (tmp_path / "never.sbatch").exists()


# --------------------------------------------------------------------------------------------
# KubeRay


def test_rayjob_manifest_fields(project: Path) -> None:
    import ray

    sweep = project / "sweeps" / "tiny.yaml"
    docs = list(
        yaml.safe_load_all(
            render_rayjob(
                sweep,
                image="reg.example/prometar:0.1.0",
                workers=3,
                gpus_per_worker=2,
                overrides=["optim.epochs=2"],
            )
        )
    )
    config_map, job = docs
    assert config_map["kind"] == "ConfigMap" and yaml.safe_load(
        config_map["data"]["tiny-cluster.yaml"]
    ) == yaml.safe_load(TINY_SWEEP)
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["metadata"]["name"] == "prometar-tiny-cluster"
    spec = job["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["prometar-sweep", "launch", "/etc/prometar/sweep/tiny-cluster.yaml"]
    assert argv[argv.index("--address") + 1] == "auto" and argv[argv.index("--data-root") + 1] == "/data"
    assert argv[argv.index("--output") + 1] == "/outputs" and "optim.epochs=2" in argv
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__ and cluster["authOptions"] == {"mode": "token"}
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    head_container = head["template"]["spec"]["containers"][0]
    assert head_container["image"] == "reg.example/prometar:0.1.0"
    assert "nvidia.com/gpu" not in head_container["resources"]["limits"]
    (group,) = cluster["workerGroupSpecs"]
    assert group["replicas"] == 3 and group["rayStartParams"]["num-gpus"] == "2"
    worker_pod = group["template"]["spec"]
    worker_container = worker_pod["containers"][0]
    assert worker_container["image"] == "reg.example/prometar:0.1.0"
    assert worker_container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    for pod in (head["template"]["spec"], worker_pod):
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["data"] == "/data" and mounts["outputs"] == "/outputs"
        claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
        assert claims["data"] == "prometar-data" and claims["outputs"] == "prometar-outputs"
        assert pod["securityContext"]["runAsUser"] == 1000
    assert "&id" not in render_rayjob(sweep)  # plain YAML, no anchors


def test_k8s_verb(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "rayjob.yaml"
    result = CliRunner().invoke(
        main,
        ["k8s", str(project / "sweeps" / "tiny.yaml"), "--image", "img:1", "--no-token-auth", "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    job = list(yaml.safe_load_all(out.read_text()))[1]
    assert "authOptions" not in job["spec"]["rayClusterSpec"]


# --------------------------------------------------------------------------------------------
# Docker image


def _constraints_flag(line: str) -> str:
    argv = shlex.split(line)
    return argv[argv.index("-c") + 1]


def test_dockerfile_installs_with_the_makefile_constraints() -> None:
    makefile = (REPO / "Makefile").read_text()
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    make_lines = [line for line in makefile.splitlines() if "pip install" in line and " -c " in line]
    docker_lines = [
        line.strip().removeprefix("RUN").removeprefix("&&").split("&&")[0]
        for line in dockerfile.splitlines()
        if "pip install" in line
    ]
    assert len(make_lines) == 1 and len(docker_lines) == 2  # the dependencies, then the project
    constraints = _constraints_flag(make_lines[0])
    for line in docker_lines:
        assert _constraints_flag(line.rstrip("\\")) == constraints == "constraints.txt"
    assert re.search(rf"^COPY .*\b{re.escape(constraints)}\b", dockerfile, flags=re.M)
    assert (REPO / constraints).is_file()


def test_dockerfile_user_entrypoint_and_base() -> None:
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", dockerfile, flags=re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["prometar-sweep"\]', dockerfile, flags=re.M)
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", dockerfile, flags=re.M).group(1)
    assert base.startswith("pytorch/pytorch:") and "cuda" in base
    torch_pin = re.search(r"^torch==(\S+)", (REPO / "constraints.txt").read_text(), flags=re.M).group(1)
    assert base.split(":")[1].startswith(torch_pin)  # the base's torch is the pinned one


# --------------------------------------------------------------------------------------------
# docs/cluster.md: every prometar-sweep command it shows uses a real verb and real options


def _documented_commands(text: str) -> list[list[str]]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        commands += [
            line.strip() for line in joined.splitlines() if line.strip().startswith("prometar-sweep ")
        ]
    commands += re.findall(r"`(prometar-sweep [^`]+)`", text)
    return [shlex.split(command.replace("$", "")) for command in commands]


def test_cluster_doc_commands_use_real_options() -> None:
    commands = _documented_commands((REPO / "docs" / "cluster.md").read_text())
    verbs = {argv[1] for argv in commands}
    assert {"submit", "slurm", "k8s", "status", "launch"} <= verbs
    for argv in commands:
        command = main.commands[argv[1]]
        known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        for token in argv[2:]:
            if token.startswith("-"):
                assert token in known, f"docs/cluster.md: {' '.join(argv)}: unknown option {token}"


def _docker_steps() -> list[str]:
    """The Dockerfile's lines without comments and blank lines."""
    text = (REPO / "docker" / "Dockerfile").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dependencies_are_installed_before_the_source_is_copied() -> None:
    steps = _docker_steps()
    deps = next(
        i for i, s in enumerate(steps) if "pip install -c constraints.txt -r /tmp/requirements.txt" in s
    )
    first_source = next(
        i for i, s in enumerate(steps) if re.match(r"COPY (--\S+ )*(prometar|orchestration)\b", s)
    )
    copies_before = [s for s in steps[:deps] if s.startswith("COPY")]
    assert deps < first_source
    assert copies_before == ["COPY pyproject.toml constraints.txt ./"]
    assert any("pip install --no-deps" in s for s in steps[first_source:])


def test_the_user_owns_the_work_folder() -> None:
    steps = _docker_steps()
    user = steps.index("USER prometar")
    workdirs = [i for i, s in enumerate(steps) if s.startswith("WORKDIR")]
    assert steps[workdirs[-1]] == "WORKDIR /work" and workdirs[-1] > user
    assert any("chown -R prometar:prometar /work" in s for s in steps[:user])


# --------------------------------------------------------------------------------------------
# Node sizes that fill the hardware, and names within KubeRay's limits

BASE2NEW = REPO / "sweeps" / "base2new.yaml"


def _trial_classes(sweep: Path) -> set[tuple[float, float]]:
    """(cpu, gpu) of every dataset's trials, read from the sweep file itself."""
    data = yaml.safe_load(sweep.read_text())
    resources = data["resources"]
    return {
        (float(r["cpu"]), float(r["gpu"]))
        for r in (resources.get(d, resources["default"]) for d in data["grid"]["dataset"])
    }


def _idle_gpus(cpus: float, gpus: int, classes: set[tuple[float, float]]) -> dict[tuple[float, float], float]:
    """GPUs left without a trial on one node, per class of trials (Ray packs by CPUs and GPUs)."""
    return {(c, g): gpus - min(cpus // c, (gpus + 1e-9) // g) * g for c, g in classes}


def test_slurm_and_k8s_defaults_put_trials_on_all_8_gpus_of_a_node(tmp_path: Path) -> None:
    classes = _trial_classes(BASE2NEW)
    assert classes == {(4.0, 0.5), (8.0, 1.0)}  # what the layouts below must fill
    script, manifest = tmp_path / "b2n.sbatch", tmp_path / "b2n.yaml"
    slurm = CliRunner().invoke(
        main, ["slurm", str(BASE2NEW), "--nodes", "2", "--gpus-per-node", "8", "-o", str(script)]
    )
    k8s = CliRunner().invoke(
        main, ["k8s", str(BASE2NEW), "--workers", "2", "--gpus-per-worker", "8", "-o", str(manifest)]
    )
    assert slurm.exit_code == 0 and k8s.exit_code == 0, slurm.output + k8s.output
    assert "warning" not in slurm.output + k8s.output

    text = script.read_text()
    directives = dict(re.findall(r"^#SBATCH --([a-z-]+)=?(\S*)$", text, flags=re.M))
    default_cpus = re.search(r"^CPUS_PER_NODE=\$\{SLURM_CPUS_PER_TASK:-(\d+)\}$", text, flags=re.M).group(1)
    assert directives["cpus-per-task"] == default_cpus and directives["gpus-per-node"] == "8"
    assert re.search(r"^GPUS_PER_NODE=8$", text, flags=re.M)
    assert text.count('--num-cpus="$CPUS_PER_NODE" --num-gpus="$GPUS_PER_NODE"') == 2  # head and workers
    assert _idle_gpus(float(default_cpus), 8, classes) == {c: 0 for c in classes}

    (group,) = list(yaml.safe_load_all(manifest.read_text()))[1]["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "8" and group["rayStartParams"]["num-gpus"] == "8"
    assert _idle_gpus(float(limits["cpu"]), 8, classes) == {c: 0 for c in classes}


def test_too_few_cpus_for_the_gpus_is_a_warning_naming_the_numbers(tmp_path: Path) -> None:
    script, manifest = tmp_path / "b2n.sbatch", tmp_path / "b2n.yaml"
    slurm = CliRunner().invoke(
        main,
        [
            "slurm",
            str(BASE2NEW),
            "--nodes",
            "1",
            "--gpus-per-node",
            "8",
            "--cpus-per-node",
            "8",
            "-o",
            str(script),
        ],
    )
    k8s = CliRunner().invoke(
        main, ["k8s", str(BASE2NEW), "--gpus-per-worker", "8", "--worker-cpus", "8", "-o", str(manifest)]
    )
    assert slurm.exit_code == 0 and k8s.exit_code == 0
    expected = (
        "8 CPUs per node feed 2 trial(s) of resources.default (4 CPU, 0.5 GPU each) at once, where its "
        "8 GPUs hold 16: 7 of 8 GPUs idle"
    )
    assert expected in slurm.output and "--cpus-per-node 64" in slurm.output
    assert expected in k8s.output and "--worker-cpus 64" in k8s.output
    assert f"# warning: {expected}" in script.read_text() and f"# warning: {expected}" in manifest.read_text()


def test_a_trial_asking_more_gpus_than_a_node_has_is_refused(project: Path) -> None:
    sweep = project / "sweeps" / "big.yaml"
    sweep.write_text(TINY_SWEEP.replace("default: {cpu: 1, gpu: 0}", "default: {cpu: 1, gpu: 2}"))
    result = CliRunner().invoke(main, ["slurm", str(sweep), "--nodes", "1", "--gpus-per-node", "1"])
    assert result.exit_code == 2 and "a trial asks 2 GPUs, a node has 1" in result.output


def test_kuberay_names_are_cut_to_47_characters_with_a_hash(project: Path) -> None:
    names = []
    for stem in ("a" * 50 + "-best-caltech101-16shots", "a" * 50 + "-best-eurosat-16shots"):
        sweep = project / "sweeps" / f"{stem}.yaml"
        sweep.write_text(TINY_SWEEP.replace("name: tiny-cluster", f"name: {stem}"))
        config_map, job = yaml.safe_load_all(render_rayjob(sweep))
        name = job["metadata"]["name"]
        assert len(name) <= 47 and re.fullmatch(r"prometar-a+-[0-9a-f]{8}", name), name
        assert config_map["metadata"]["name"] == f"{name}-sweep" and len(config_map["metadata"]["name"]) <= 63
        assert all(len(value) <= 63 for value in job["metadata"]["labels"].values())
        names.append(name)
    assert names[0] != names[1]  # cut the same way, told apart by the hash
    assert (
        yaml.safe_load_all(render_rayjob(project / "sweeps" / "tiny.yaml")).__next__()["metadata"]["name"]
        == "prometar-tiny-cluster-sweep"
    )  # short names are kept as they are


def test_k8s_with_object_storage_and_a_server_needs_no_shared_volume(project: Path) -> None:
    _, job = yaml.safe_load_all(
        render_rayjob(
            project / "sweeps" / "tiny.yaml",
            storage="s3://bucket/runs",
            tracking_uri="http://mlflow:5000",
            env_secrets=["s3-credentials"],
        )
    )
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[argv.index("--storage") + 1] == "s3://bucket/runs"
    for pod in (
        job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"],
        job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"],
    ):
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["outputs"] == {"name": "outputs", "emptyDir": {}}
        assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]


# --------------------------------------------------------------------------------------------
# Names from input cannot change a generated file's structure

HOSTILE_SWEEP_NAME = "tiny\ntouch INJECTED\n---\nkind: Pod\n#SBATCH --mem=1\u2028x $(id) 'q'.yaml"
"""A sweep file name holding a newline and a shell command, a YAML document, an sbatch directive,
a YAML line separator, a command substitution and quotes."""


@pytest.fixture()
def hostile_sweep(project: Path) -> Path:
    sweep = project / "sweeps" / HOSTILE_SWEEP_NAME
    sweep.write_text(TINY_SWEEP)
    return sweep


def _fake_commands(folder: Path, log: Path) -> dict[str, str]:
    """Stand-ins to run an sbatch script under bash here: ``srun`` does nothing (Ray is not
    started), ``scontrol`` lists two nodes, ``prometar-sweep`` and ``touch`` record their
    arguments in ``log`` (each NUL-terminated, each call ended by an ASCII record separator)."""
    import os

    folder.mkdir()
    record = f'{{ printf "%s\\0" "$(basename "$0")" "$@"; printf "\\036"; }} >> {shlex.quote(str(log))}\n'
    bodies = {
        "srun": "exit 0\n",
        "scontrol": "echo node1; echo node2\n",
        "prometar-sweep": record,
        "touch": record,
    }
    for name, body in bodies.items():
        tool = folder / name
        tool.write_text("#!/usr/bin/env bash\n" + body)
        tool.chmod(0o755)
    return {
        "PATH": f"{folder}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "node[1-2]",
        "SLURM_JOB_ID": "7",
        "PROMETAR_HEAD_IP": "10.0.0.1",
    }


def _calls(log: Path) -> list[list[str]]:
    return [call.split("\0")[:-1] for call in log.read_text().split("\036")[:-1]]


def test_hostile_names_keep_the_sbatch_script_structure(hostile_sweep: Path, tmp_path: Path) -> None:
    """The sweep path, the -o name and an override reach bash as exactly themselves: the script's
    lines are those of a plain name's script, and running it calls only the expected commands."""
    hostile_set = "optim.epochs=3\n touch INJECTED"
    kwargs = {"nodes": 2, "gpus_per_node": 0, "cpus_per_node": 2}
    text = render_slurm(hostile_sweep, script_name="job\nrm -rf x.sbatch", **kwargs, tracking_uri=hostile_set)
    plain = render_slurm(hostile_sweep.with_name("tiny.yaml"), **kwargs)
    assert all(" " <= char <= "~" for line in text.splitlines() for char in line)
    assert len(text.splitlines()) == len(plain.splitlines())
    directives = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    assert directives == [line for line in plain.splitlines() if line.startswith("#SBATCH")]
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    subprocess.run(["bash", "-n", str(script)], check=True)
    log = tmp_path / "calls.log"
    env = _fake_commands(tmp_path / "bin", log)
    subprocess.run(["bash", str(script)], check=True, env=env, cwd=tmp_path, capture_output=True)
    calls = _calls(log)  # the foreground commands, in order; nothing else ran
    assert [call[:2] for call in calls] == [["prometar-sweep", "wait-nodes"]] * 2 + [
        ["prometar-sweep", "launch"]
    ]
    assert calls[-1][1:] == [
        "launch",
        str(hostile_sweep),
        "--address",
        "10.0.0.1:6379",
        "--tracking-uri",
        hostile_set,
    ]
    assert not (tmp_path / "INJECTED").exists()


def test_hostile_names_keep_the_manifest_one_configmap_and_one_rayjob(hostile_sweep: Path) -> None:
    text = render_rayjob(
        hostile_sweep, overrides=["optim.epochs=2"], tracking_uri="http://m:5000\n---\nkind: Pod"
    )
    docs = list(yaml.safe_load_all(text))
    assert [doc["kind"] for doc in docs] == ["ConfigMap", "RayJob"]
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert len(comments) == 2 and "\\n---\\nkind: Pod" in comments[0] and "\\u2028" in comments[0]
    argv = shlex.split(docs[1]["spec"]["entrypoint"])
    assert argv[argv.index("--tracking-uri") + 1] == "http://m:5000\n---\nkind: Pod"
    assert docs[1]["metadata"]["name"] == "prometar-tiny-cluster"


def test_hostile_relative_path_is_one_word_of_the_ray_job_entrypoint(
    hostile_sweep: Path, project: Path
) -> None:
    _, entrypoint, _, _ = build_submission(hostile_sweep, working_dir=project)
    argv = shlex.split(entrypoint)
    assert argv[:5] == ["python", "-m", "orchestration.cli", "launch", f"sweeps/{HOSTILE_SWEEP_NAME}"]
    assert argv[5:] == ["--address", "auto"]


@pytest.mark.parametrize(
    "option, value",
    [
        ("--namespace", "Team_A"),
        ("--namespace", "ns\n---\nkind: Pod"),
        ("--namespace", "a" * 64),
        ("--worker-memory", "32 GB"),
        ("--worker-memory", "0Gi"),
        ("--worker-memory", "-1Gi"),
        ("--worker-memory", "32Gi\nkind: Pod"),
        ("--data-claim", "Data!"),
        ("--output-claim", "out/claim"),
        ("--env-secret", "aws creds"),
        ("--image", "img:1 --privileged"),
    ],
)
def test_k8s_refuses_values_kubernetes_would_refuse(
    project: Path, tmp_path: Path, option: str, value: str
) -> None:
    out = tmp_path / "rayjob.yaml"
    result = CliRunner().invoke(
        main, ["k8s", str(project / "sweeps" / "tiny.yaml"), option, value, "-o", str(out)]
    )
    assert result.exit_code == 2, result.output
    (message,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert option in message and "Traceback" not in result.output and not out.exists()


@pytest.mark.parametrize("memory", ["32Gi", "500M", "1.5e9", "128974848", ".5Ti"])
def test_k8s_accepts_kubernetes_quantities(project: Path, memory: str) -> None:
    job = list(
        yaml.safe_load_all(
            render_rayjob(project / "sweeps" / "tiny.yaml", worker_memory=memory, namespace="team-a")
        )
    )[1]
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == memory
    assert job["metadata"]["namespace"] == "team-a"
