"""Sweep files: the schema of ``architecture.md`` → a validated :class:`SweepSpec`.

A sweep file names a protocol, a run-config preset, dotted overrides, a cartesian grid (method,
dataset, seed, shots and any dotted run-config key), an optional hyper-parameter search, the
resources each trial asks for and how often a trial may be retried. :func:`read_sweep` reads it
and checks its schema (types, names, keys); ``planning.plan_sweep`` resolves its trials;
:func:`spec_to_yaml` writes one back (``--write-best``).

Every error is a :class:`~orchestration.errors.SpecError` whose message names the file and the key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from orchestration.errors import SpecError
from prometar import protocols
from prometar.config import MAX_SEED

GRID_ALIASES: dict[str, str] = {
    "method": "method",
    "dataset": "data.dataset",
    "seed": "seed",
    "shots": "data.shots",
}
"""Short grid axes → dotted run-config keys."""

VARIANT_AXIS = "variant"
"""A grid axis whose values are mappings of dotted overrides, applied together (ablations)."""

MAX_NAME_LENGTH = 100
"""Longest sweep name: it names folders, lock files, the MLflow experiment and Ray jobs."""

TOP_LEVEL_KEYS = (
    "name",
    "protocol",
    "preset",
    "overrides",
    "grid",
    "search",
    "resources",
    "max_failures",
    "checkpoint",
)
CHECKPOINT_KEYS = ("keep",)
DEFAULT_CHECKPOINT_KEEP = 1
SEARCH_KEYS = ("metric", "mode", "num_samples", "space", "scheduler", "seed")
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
NUMERIC_DISTRIBUTIONS = ("uniform", "loguniform", "randint")
RESOURCE_KEYS = ("cpu", "gpu")
DEFAULT_PRESET = "official"
DEFAULT_MAX_FAILURES = 2


MAX_TRIALS = 20_000
"""Most trials one sweep may plan (the grid's product, times ``search.num_samples``)."""
MAX_TRIAL_CPUS = 1024
"""Most CPUs one trial may ask (``resources.<name>.cpu``): more than any one node has."""
MAX_TRIAL_GPUS = 16
"""Most GPUs one trial may ask (``resources.<name>.gpu``): Ray places a trial on one node."""
MIN_GPU_FRACTION = 1 / 16
"""Smallest GPU fraction a trial may ask: at most 16 trials share one GPU."""


@dataclass(frozen=True)
class Resources:
    """What one trial asks Ray for; fractional GPUs pack several trials on one device."""

    cpu: float = 1.0
    gpu: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """The Tune resource request (``{"cpu": .., "gpu": ..}``)."""
        return {"cpu": self.cpu, "gpu": self.gpu}


@dataclass(frozen=True)
class SearchSpec:
    """A hyper-parameter search (Optuna through Ray Tune), run per grid point.

    Attributes:
        metric: Metric to optimise; measured on held-out base classes only (``val_*``).
        mode: ``max`` or ``min``.
        num_samples: Sampled configurations per grid point.
        space: Dotted run-config key → ``(distribution, arguments)``.
        scheduler: ``asha`` stops weak trials early; ``none`` runs them all.
        seed: Seed of the Optuna sampler (the search itself is then repeatable).
    """

    metric: str
    mode: Literal["max", "min"]
    num_samples: int
    space: dict[str, tuple[str, list[Any]]]
    scheduler: Literal["asha", "none"] = "none"
    seed: int = 0


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file.

    Attributes:
        name: The MLflow experiment (default: the file's stem).
        protocol: The sweep file's protocol (``prometar.protocols``: a ``Protocol.sweep_name``).
        preset: A run-config preset name or a path to a run-config YAML.
        overrides: Dotted run-config keys set for every trial.
        grid: Dotted run-config key → values; the trials are the cartesian product. The axis
            ``variant`` takes mappings of dotted overrides applied together (ablation arms).
        search: The hyper-parameter search, or ``None``.
        resources: ``default`` and per-dataset resource requests.
        max_failures: Retries of a failing trial (from its last checkpoint).
        checkpoint_keep: Epoch checkpoints kept per trial while it runs (``checkpoint.keep``);
            a FINISHED trial keeps none. Not part of any trial key.
        source: The sweep file.
    """

    name: str
    protocol: str
    preset: str
    overrides: dict[str, Any]
    grid: dict[str, list[Any]]
    search: SearchSpec | None = None
    resources: dict[str, Resources] = field(default_factory=lambda: {"default": Resources()})
    max_failures: int = DEFAULT_MAX_FAILURES
    source: str = "<dict>"
    checkpoint_keep: int = DEFAULT_CHECKPOINT_KEEP

    def resources_for(self, dataset: str) -> Resources:
        """The resources a trial on ``dataset`` asks for."""
        return self.resources.get(dataset, self.resources["default"])

    @property
    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid.values())

    @property
    def trial_count(self) -> int:
        """Trials the sweep runs: the grid, times ``num_samples`` for a search."""
        return self.grid_size * (self.search.num_samples if self.search else 1)


# --------------------------------------------------------------------------------------------
# Reading and validating


def read_sweep(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Read a sweep file and validate its schema (``orchestration.sweeps.planning.load_plan``
    also resolves its trials: use that).

    Args:
        path: The sweep YAML.
        overrides: Extra dotted run-config overrides (``--set``), applied after the file's.

    Returns:
        The spec: types, names and keys checked; the trials' run configs are resolved by planning.

    Raises:
        SpecError: Missing file, YAML syntax error, unknown key, wrong type, unknown dataset or
            method, empty grid, bad search section; the message names the file and the key.
    """
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise SpecError(source, "", "no such sweep file")
    from prometar.config import parse_yaml, yaml_problem
    from prometar.yamlio import YamlFileError, read_text_file

    try:
        data = parse_yaml(read_text_file(path))
    except YamlFileError as err:
        raise SpecError(source, "", err.reason) from None
    except yaml.YAMLError as err:
        kind = "YAML error" if isinstance(err, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise SpecError(source, "", f"{kind}: {yaml_problem(err)}") from None
    if data is None:
        data = {}
    return parse_sweep(data, source=source, default_name=path.stem, extra_overrides=overrides)


def parse_sweep(
    data: Any,
    *,
    source: str = "<dict>",
    default_name: str = "sweep",
    extra_overrides: Mapping[str, Any] | None = None,
) -> SweepSpec:
    """Validate the parsed YAML of a sweep file (types, names, keys) into a :class:`SweepSpec`."""
    from prometar.data.catalog import list_datasets
    from prometar.methods import list_methods

    if not isinstance(data, Mapping):
        raise SpecError(source, "", f"a sweep file is a mapping of {', '.join(TOP_LEVEL_KEYS)}")
    _check_keys(data, TOP_LEVEL_KEYS, source, "")

    name = data.get("name", default_name)
    _expect(isinstance(name, str) and name.strip() != "", source, "name", "must be a non-empty string", name)
    _expect(
        re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) is not None,
        source,
        "name",
        "must be letters, digits, '.', '_' or '-' (it names folders, the MLflow experiment, Ray jobs)",
        name,
    )
    _expect(
        len(name) <= MAX_NAME_LENGTH,
        source,
        "name",
        f"is {len(name)} characters; at most {MAX_NAME_LENGTH} (it names folders and files)",
        name,
    )
    protocol = data.get("protocol", protocols.get_protocol(protocols.DEFAULT).tag)
    try:
        protocols.sweep_protocol(protocol)
    except KeyError as err:
        raise SpecError(source, "protocol", err.args[0]) from None
    preset = data.get("preset", DEFAULT_PRESET)
    _expect(
        isinstance(preset, str) and preset != "", source, "preset", "must be a preset name or a path", preset
    )

    overrides = data.get("overrides") or {}
    _expect(
        isinstance(overrides, Mapping), source, "overrides", "must be a mapping of dotted keys", overrides
    )
    overrides = {str(k): v for k, v in overrides.items()}
    extra = dict(extra_overrides or {})
    overrides.update(extra)

    grid_raw = data.get("grid")
    if grid_raw is None or (isinstance(grid_raw, Mapping) and not grid_raw):
        raise SpecError(source, "grid", "the grid is empty: give at least method and dataset")
    _expect(isinstance(grid_raw, Mapping), source, "grid", "must be a mapping of key → list", grid_raw)
    grid: dict[str, list[Any]] = {}
    for axis, values in grid_raw.items():
        key = f"grid.{axis}"
        _expect(isinstance(values, list), source, key, "must be a list", values)
        if not values:
            raise SpecError(source, key, "is empty: the grid would have no trial")
        if axis == VARIANT_AXIS:
            for i, variant in enumerate(values):
                _expect(
                    isinstance(variant, Mapping) and all(isinstance(k, str) for k in variant),
                    source,
                    f"{key}[{i}]",
                    "must be a mapping of dotted keys",
                    variant,
                )
        dotted = GRID_ALIASES.get(str(axis), str(axis))
        if dotted in grid:
            raise SpecError(source, key, f"sets {dotted} twice")
        grid[dotted] = values
    _check_trial_count(math.prod(len(v) for v in grid.values()), source, "grid")
    variant_keys = {str(k) for variant in grid.get(VARIANT_AXIS, []) for k in variant}
    axis_of = {v: k for k, v in GRID_ALIASES.items()}
    for dotted in overrides:
        axis = axis_of.get(dotted, dotted)
        if dotted in grid or dotted in variant_keys:
            where = f"grid.{axis}" if dotted in grid else f"grid.{VARIANT_AXIS}"
            if dotted in extra:
                raise SpecError(
                    source,
                    f"--set {dotted}",
                    f"is an axis of the sweep's grid ({where}): each trial "
                    "takes its value from the grid, so --set would change nothing; edit the grid",
                )
            raise SpecError(
                source,
                f"overrides.{dotted}",
                f"is also an axis of the grid ({where}), whose values win: set it in one place",
            )
    if "data.dataset" not in grid and "data.dataset" not in overrides:
        raise SpecError(source, "grid.dataset", "is missing: name at least one dataset")
    datasets, methods = list_datasets(), list_methods()
    for i, value in enumerate(grid.get("data.dataset", [])):
        if value not in datasets:
            raise SpecError(
                source, f"grid.dataset[{i}]", f"unknown dataset {value!r}; valid: {', '.join(datasets)}"
            )
    for i, value in enumerate(grid.get("method", [])):
        if value not in methods:
            raise SpecError(
                source, f"grid.method[{i}]", f"unknown method {value!r}; valid: {', '.join(methods)}"
            )
    for axis in ("seed", "data.shots"):
        short = "shots" if axis == "data.shots" else axis
        for i, value in enumerate(grid.get(axis, [])):
            _expect(_is_int(value), source, f"grid.{short}[{i}]", "must be an integer", value)
    for i, value in enumerate(grid.get("seed", [])):
        _expect(0 <= value <= MAX_SEED, source, f"grid.seed[{i}]", f"must be in 0..{MAX_SEED}", value)

    resources = _parse_resources(data.get("resources"), source, datasets)
    max_failures = data.get("max_failures", DEFAULT_MAX_FAILURES)
    _expect(
        _is_int(max_failures) and max_failures >= 0,
        source,
        "max_failures",
        "must be an integer ≥ 0",
        max_failures,
    )
    search = _parse_search(data["search"], source) if data.get("search") is not None else None
    if search is not None:
        _check_trial_count(
            math.prod(len(v) for v in grid.values()) * search.num_samples, source, "search.num_samples"
        )
    checkpoint = {} if data.get("checkpoint") is None else data["checkpoint"]
    _expect(isinstance(checkpoint, Mapping), source, "checkpoint", "must be a mapping (keep)", checkpoint)
    _check_keys(checkpoint, CHECKPOINT_KEYS, source, "checkpoint")
    keep = checkpoint.get("keep", DEFAULT_CHECKPOINT_KEEP)
    _expect(_is_int(keep) and keep >= 1, source, "checkpoint.keep", "must be an integer ≥ 1", keep)

    return SweepSpec(
        name=name.strip(),
        protocol=protocol,
        preset=preset,
        overrides=overrides,
        grid=grid,
        search=search,
        resources=resources,
        max_failures=int(max_failures),
        source=source,
        checkpoint_keep=int(keep),
    )


def _parse_resources(raw: Any, source: str, datasets: list[str]) -> dict[str, Resources]:
    if raw is None:
        return {"default": Resources()}
    _expect(isinstance(raw, Mapping), source, "resources", "must be a mapping (default, <dataset>)", raw)
    out: dict[str, Resources] = {}
    for name, request in raw.items():
        key = f"resources.{name}"
        if name != "default" and name not in datasets:
            raise SpecError(source, key, f"unknown dataset {name!r}; valid: default, {', '.join(datasets)}")
        _expect(isinstance(request, Mapping), source, key, "must be a mapping {cpu, gpu}", request)
        _check_keys(request, RESOURCE_KEYS, source, key)
        values = {}
        for kind in RESOURCE_KEYS:
            value = request.get(kind, Resources.cpu if kind == "cpu" else Resources.gpu)
            ok = (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value >= 0
            )
            _expect(ok, source, f"{key}.{kind}", "must be a finite number ≥ 0", value)
            if kind == "cpu":  # a trial runs on at least part of a CPU; 0 would let Ray pack unboundedly
                _expect(
                    value > 0, source, f"{key}.cpu", "must be above 0 (a trial needs a CPU to run on)", value
                )
            limit = MAX_TRIAL_CPUS if kind == "cpu" else MAX_TRIAL_GPUS
            _expect(value <= limit, source, f"{key}.{kind}", f"must be at most {limit} (one node's)", value)
            values[kind] = float(value)
        if values["gpu"] > 1 and not float(values["gpu"]).is_integer():
            raise SpecError(source, f"{key}.gpu", "a fraction of a GPU must be below 1")
        if 0 < values["gpu"] < MIN_GPU_FRACTION:
            raise SpecError(
                source,
                f"{key}.gpu",
                f"{values['gpu']:g}: a fraction of a GPU must be at least 1/{round(1 / MIN_GPU_FRACTION)} "
                f"({MIN_GPU_FRACTION:g}; more trials than that on one GPU only queue)",
            )
        out[str(name)] = Resources(**values)
    out.setdefault("default", Resources())
    return out


def _parse_search(raw: Any, source: str) -> SearchSpec:
    _expect(isinstance(raw, Mapping), source, "search", "must be a mapping", raw)
    _check_keys(raw, SEARCH_KEYS, source, "search")
    searched = protocols.search_protocol()
    metric = raw.get("metric", searched.combined)
    _expect(
        metric in searched.metric_names(),
        source,
        "search.metric",
        f"must be a validation metric ({', '.join(searched.metric_names())}): search never looks at "
        "test data",
        metric,
    )
    mode = raw.get("mode", "max")
    _expect(mode in ("max", "min"), source, "search.mode", "must be max or min", mode)
    num_samples = raw.get("num_samples", 8)
    _expect(
        _is_int(num_samples) and num_samples >= 1,
        source,
        "search.num_samples",
        "must be an integer ≥ 1",
        num_samples,
    )
    scheduler = raw.get("scheduler", "none")
    _expect(scheduler in ("asha", "none"), source, "search.scheduler", "must be asha or none", scheduler)
    seed = raw.get("seed", 0)
    _expect(
        _is_int(seed) and 0 <= seed <= MAX_SEED,
        source,
        "search.seed",
        f"must be an integer in 0..{MAX_SEED}",
        seed,
    )
    space_raw = raw.get("space")
    if not space_raw:
        raise SpecError(source, "search.space", "is empty: name at least one dotted key to search")
    _expect(isinstance(space_raw, Mapping), source, "search.space", "must be a mapping", space_raw)
    space: dict[str, tuple[str, list[Any]]] = {}
    for dotted, dist in space_raw.items():
        key = f"search.space.{dotted}"
        ok = isinstance(dist, Mapping) and len(dist) == 1 and next(iter(dist)) in DISTRIBUTIONS
        _expect(ok, source, key, f"must be one of {{{' | '.join(DISTRIBUTIONS)}: [...]}}", dist)
        kind, args = next(iter(dist.items()))
        _expect(isinstance(args, list) and args, source, f"{key}.{kind}", "must be a non-empty list", args)
        if kind in NUMERIC_DISTRIBUTIONS:
            ok = len(args) == 2 and all(
                isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in args
            )
            _expect(ok, source, f"{key}.{kind}", "must be [low, high] finite numbers", args)
            if not args[0] < args[1]:
                raise SpecError(source, f"{key}.{kind}", f"low {args[0]} must be below high {args[1]}")
            if kind == "loguniform" and args[0] <= 0:
                raise SpecError(source, f"{key}.{kind}", "loguniform bounds must be > 0")
        space[str(dotted)] = (kind, list(args))
    return SearchSpec(
        metric=metric,
        mode=mode,
        num_samples=int(num_samples),
        space=space,
        scheduler=scheduler,
        seed=int(seed),
    )


# --------------------------------------------------------------------------------------------
# Helpers


def _check_trial_count(count: int, source: str, key: str) -> None:
    """Refuse a sweep of more than :data:`MAX_TRIALS` trials, counted before anything is expanded."""
    if count > MAX_TRIALS:
        raise SpecError(
            source,
            key,
            f"the sweep has {count:,} trials, more than the limit of {MAX_TRIALS:,}; "
            "split it into several sweep files",
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _expect(ok: bool, source: str, key: str, message: str, value: Any) -> None:
    if not ok:
        raise SpecError(source, key, f"{message} (got {value!r})")


def _check_keys(data: Mapping[str, Any], allowed: tuple[str, ...], source: str, prefix: str) -> None:
    for key in data:
        if key not in allowed:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise SpecError(source, where, f"unknown key; valid: {', '.join(allowed)}")


def spec_to_yaml(spec: SweepSpec, *, name: str, overrides: Mapping[str, Any]) -> str:
    """A sweep file running ``spec``'s grid on its real protocol with ``overrides`` (``--write-best``)."""
    short = {v: k for k, v in GRID_ALIASES.items()}
    data: dict[str, Any] = {
        "name": name,
        "protocol": spec.protocol,
        "preset": spec.preset,
        "overrides": dict(overrides),
        "grid": {short.get(k, k): list(v) for k, v in spec.grid.items()},
        "resources": {k: {"cpu": r.cpu, "gpu": r.gpu} for k, r in spec.resources.items()},
        "max_failures": spec.max_failures,
        "checkpoint": {"keep": spec.checkpoint_keep},
    }
    return yaml.safe_dump(data, sort_keys=False)
