"""Sweep files: the schema of ``architecture.md`` → a validated :class:`SweepSpec` → trials.

A sweep file names a protocol, a run-config preset, dotted overrides, a cartesian grid (method,
dataset, seed, shots and any dotted run-config key), an optional hyper-parameter search, the
resources each trial asks for and how often a trial may be retried. :func:`load_sweep` reads and
validates it; :func:`plan_trials` expands it into :class:`Trial` objects, each a fully resolved run
config (``RunConfig.to_dict()``) plus the protocol, identified by its *trial key*: a short hash of
the canonical JSON of everything that changes the scientific result (``scientific_dict()`` and the
protocol) and of nothing else (resources, paths, tracking URI, concurrency).

Every error is a :class:`SpecError` whose message names the file and the key.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

SweepProtocol = Literal["base2new", "domain_generalization", "cross_dataset", "few_shot"]

RUN_PROTOCOLS: dict[str, str] = {
    "base2new": "base2new",
    "domain_generalization": "domain_generalization",
    "cross_dataset": "cross_dataset",
    "few_shot": "all_classes",
}
"""Sweep protocol → the run-config protocol ``prometar.run`` evaluates."""

SEARCH_PROTOCOL = "search"
"""Run protocol (and trial protocol) of searched trials: pseudo-base/pseudo-new from base classes."""

GRID_ALIASES: dict[str, str] = {
    "method": "method",
    "dataset": "data.dataset",
    "seed": "seed",
    "shots": "data.shots",
}
"""Short grid axes → dotted run-config keys."""

VARIANT_AXIS = "variant"
"""A grid axis whose values are mappings of dotted overrides, applied together (ablations)."""

TOP_LEVEL_KEYS = ("name", "protocol", "preset", "overrides", "grid", "search", "resources", "max_failures",
                  "checkpoint")
CHECKPOINT_KEYS = ("keep",)
DEFAULT_CHECKPOINT_KEEP = 1
SEARCH_KEYS = ("metric", "mode", "num_samples", "space", "scheduler", "seed")
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
NUMERIC_DISTRIBUTIONS = ("uniform", "loguniform", "randint")
RESOURCE_KEYS = ("cpu", "gpu")
DEFAULT_PRESET = "official"
DEFAULT_MAX_FAILURES = 2
KEY_LENGTH = 12


class SpecError(ValueError):
    """A bad sweep file; the message names the file and the key.

    Attributes:
        source: The sweep file (or ``<dict>``).
        key: The offending key, dotted (``grid.dataset``), or ``""`` for the whole file.
    """

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source = source
        self.key = key
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + message)


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
class Trial:
    """One resolved run: what the trainable runs and what the ledger records.

    Attributes:
        key: The trial key (hash of ``scientific_dict()`` and the protocol).
        protocol: The sweep protocol (``base2new``, ..., or ``search``).
        config: The resolved run config, ``RunConfig.to_dict()``.
        group: For searched trials, the search group's key; else ``""``.
    """

    key: str
    protocol: str
    config: dict[str, Any]
    group: str = ""

    @property
    def dataset(self) -> str:
        return str(self.config["data"]["dataset"])

    @property
    def method(self) -> str:
        return str(self.config["method"])

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def shots(self) -> int:
        return int(self.config["data"]["shots"])

    @property
    def epochs(self) -> int:
        return int(self.config.get("optim", {}).get("epochs", 1) or 1)

    @property
    def cost(self) -> float:
        """A relative cost estimate (classes × (shots × epochs + 1)) to start the longest trials first.

        Zero-shot trials only evaluate, so their cost is the class count alone.
        """
        epochs = 0 if self.method == "zeroshot" else self.epochs
        return float(_num_classes(self.dataset) * (max(self.shots, 1) * epochs + 1))

    def tags(self, sweep: str) -> dict[str, str]:
        """The MLflow tags that identify this trial (``docs/internals.md``)."""
        tags = {
            "prometar.trial_key": self.key,
            "dataset": self.dataset,
            "method": self.method,
            "seed": str(self.seed),
            "shots": str(self.shots),
            "protocol": self.protocol,
            "sweep": sweep,
        }
        if self.group:
            tags["prometar.search_group"] = self.group
        return tags


@dataclass(frozen=True)
class SearchGroup:
    """One grid point of a search sweep: a base config whose ``space`` keys Optuna samples."""

    key: str
    base_config: dict[str, Any]
    label: str

    def resolve(self, sampled: Mapping[str, Any], *, source: str = "<search>") -> Trial:
        """The trial for one sampled configuration (dotted key → value)."""
        return resolve_trial(self.base_config, SEARCH_PROTOCOL, sampled, group=self.key, source=source)


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file.

    Attributes:
        name: The MLflow experiment (default: the file's stem).
        protocol: The sweep protocol.
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
# Loading and validation


def load_sweep(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Read and validate a sweep file.

    Args:
        path: The sweep YAML.
        overrides: Extra dotted run-config overrides (``--set``), applied after the file's.

    Returns:
        The validated spec; its trials are validated too (:func:`plan_trials` builds them).

    Raises:
        SpecError: Missing file, YAML syntax error, unknown key, wrong type, unknown dataset or
            method, empty grid, bad search space; the message names the file and the key.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise SpecError(source, "", "no such sweep file")
    from prometar.config import parse_yaml

    try:
        data = parse_yaml(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError(source, "", f"YAML syntax error: {where}{problem}") from None
    if data is None:
        data = {}
    spec = parse_sweep(data, source=source, default_name=path.stem, extra_overrides=overrides)
    plan_trials(spec)  # resolves every run config: errors surface now, before anything is written
    plan_search_groups(spec)  # checks the search space against the resolved configs
    return spec


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
    _expect(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) is not None, source, "name",
            "must be letters, digits, '.', '_' or '-' (it names folders, the MLflow experiment, Ray jobs)", name)
    protocol = data.get("protocol", "base2new")
    if protocol not in RUN_PROTOCOLS:
        raise SpecError(source, "protocol", f"unknown protocol {protocol!r}; valid: {', '.join(RUN_PROTOCOLS)}")
    preset = data.get("preset", DEFAULT_PRESET)
    _expect(isinstance(preset, str) and preset != "", source, "preset", "must be a preset name or a path", preset)

    overrides = data.get("overrides") or {}
    _expect(isinstance(overrides, Mapping), source, "overrides", "must be a mapping of dotted keys", overrides)
    overrides = {str(k): v for k, v in overrides.items()}
    overrides.update(dict(extra_overrides or {}))

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
                _expect(isinstance(variant, Mapping) and all(isinstance(k, str) for k in variant),
                        source, f"{key}[{i}]", "must be a mapping of dotted keys", variant)
        dotted = GRID_ALIASES.get(str(axis), str(axis))
        if dotted in grid:
            raise SpecError(source, key, f"sets {dotted} twice")
        grid[dotted] = values
    if "data.dataset" not in grid and "data.dataset" not in overrides:
        raise SpecError(source, "grid.dataset", "is missing: name at least one dataset")
    datasets, methods = list_datasets(), list_methods()
    for i, value in enumerate(grid.get("data.dataset", [])):
        if value not in datasets:
            raise SpecError(source, f"grid.dataset[{i}]", f"unknown dataset {value!r}; valid: {', '.join(datasets)}")
    for i, value in enumerate(grid.get("method", [])):
        if value not in methods:
            raise SpecError(source, f"grid.method[{i}]", f"unknown method {value!r}; valid: {', '.join(methods)}")
    for axis in ("seed", "data.shots"):
        short = "shots" if axis == "data.shots" else axis
        for i, value in enumerate(grid.get(axis, [])):
            _expect(_is_int(value), source, f"grid.{short}[{i}]", "must be an integer", value)

    resources = _parse_resources(data.get("resources"), source, datasets)
    max_failures = data.get("max_failures", DEFAULT_MAX_FAILURES)
    _expect(_is_int(max_failures) and max_failures >= 0, source, "max_failures", "must be an integer ≥ 0", max_failures)
    search = _parse_search(data["search"], source) if data.get("search") is not None else None
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
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
            _expect(ok, source, f"{key}.{kind}", "must be a number ≥ 0", value)
            values[kind] = float(value)
        if values["gpu"] > 1 and not float(values["gpu"]).is_integer():
            raise SpecError(source, f"{key}.gpu", "a fraction of a GPU must be below 1")
        out[str(name)] = Resources(**values)
    out.setdefault("default", Resources())
    return out


def _parse_search(raw: Any, source: str) -> SearchSpec:
    _expect(isinstance(raw, Mapping), source, "search", "must be a mapping", raw)
    _check_keys(raw, SEARCH_KEYS, source, "search")
    metric = raw.get("metric", "val_hm")
    _expect(isinstance(metric, str) and metric.startswith("val_"), source, "search.metric",
            "must be a validation metric (val_base, val_new, val_hm): search never looks at test data", metric)
    mode = raw.get("mode", "max")
    _expect(mode in ("max", "min"), source, "search.mode", "must be max or min", mode)
    num_samples = raw.get("num_samples", 8)
    _expect(_is_int(num_samples) and num_samples >= 1, source, "search.num_samples", "must be an integer ≥ 1", num_samples)
    scheduler = raw.get("scheduler", "none")
    _expect(scheduler in ("asha", "none"), source, "search.scheduler", "must be asha or none", scheduler)
    seed = raw.get("seed", 0)
    _expect(_is_int(seed), source, "search.seed", "must be an integer", seed)
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
            ok = len(args) == 2 and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
            _expect(ok, source, f"{key}.{kind}", "must be [low, high] numbers", args)
            if not args[0] < args[1]:
                raise SpecError(source, f"{key}.{kind}", f"low {args[0]} must be below high {args[1]}")
            if kind == "loguniform" and args[0] <= 0:
                raise SpecError(source, f"{key}.{kind}", "loguniform bounds must be > 0")
        space[str(dotted)] = (kind, list(args))
    return SearchSpec(metric=metric, mode=mode, num_samples=int(num_samples), space=space,
                      scheduler=scheduler, seed=int(seed))


# --------------------------------------------------------------------------------------------
# Expansion and trial identity


def trial_key(scientific: Mapping[str, Any], protocol: str) -> str:
    """The short hash identifying a trial: canonical JSON of the scientific config and protocol.

    A local checkpoint (``backbone.pretrained`` naming a file) enters by its content, not its
    path: the same weights give the same key wherever the checkout or the data live.
    """
    canonical = json.dumps({"config": _with_checkpoint_content(scientific), "protocol": protocol},
                           sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:KEY_LENGTH]


def _with_checkpoint_content(scientific: Mapping[str, Any]) -> Mapping[str, Any]:
    backbone = scientific.get("backbone")
    pretrained = backbone.get("pretrained") if isinstance(backbone, Mapping) else None
    if not isinstance(pretrained, str) or not Path(pretrained).is_file():
        return scientific
    stat = Path(pretrained).stat()
    digest = _file_sha256(str(Path(pretrained).resolve()), stat.st_size, stat.st_mtime_ns)
    return {**scientific, "backbone": {**backbone, "pretrained": f"sha256:{digest}"}}


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file's bytes; cached per (path, size, mtime) so a sweep hashes each once."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def resolve_trial(
    base: Mapping[str, Any],
    protocol: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    group: str = "",
    source: str = "<dict>",
) -> Trial:
    """Resolve a run-config dict plus dotted overrides into a validated :class:`Trial`."""
    from prometar.config import apply_overrides, build_config

    data = apply_overrides(dict(base), dict(overrides or {}), source=source) if overrides else dict(base)
    config = build_config(data, source=source)
    return Trial(key=trial_key(config.scientific_dict(), protocol), protocol=protocol,
                 config=config.to_dict(), group=group)


def plan_trials(spec: SweepSpec) -> list[Trial]:
    """Expand a spec's grid into trials (for a search sweep: the search groups' base trials).

    Trials come longest first (:attr:`Trial.cost`); duplicates (two grid points that resolve to
    the same config) are kept once.

    Raises:
        SpecError: A grid point or override the run config rejects (names the file and key).
    """
    protocol = SEARCH_PROTOCOL if spec.search else spec.protocol
    trials: dict[str, Trial] = {}
    for point in _grid_points(spec.grid):
        trial = _resolve_point(spec, point, protocol)
        trials.setdefault(trial.key, trial)
    return sorted(trials.values(), key=lambda t: (-t.cost, t.dataset, t.method, t.seed, t.key))


def plan_search_groups(spec: SweepSpec) -> list[SearchGroup]:
    """The search groups of a search sweep: one per grid point, with the space checked."""
    if spec.search is None:
        return []
    groups = []
    for trial in plan_trials(spec):
        _check_space(spec, trial)
        space = {k: [kind, args] for k, (kind, args) in sorted(spec.search.space.items())}
        ident = {"base": trial.key, "space": space, "metric": spec.search.metric, "mode": spec.search.mode}
        key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:KEY_LENGTH]
        label = f"{trial.method}/{trial.dataset}/{trial.shots}shots/seed{trial.seed}"
        groups.append(SearchGroup(key=key, base_config=trial.config, label=label))
    return groups


def _check_space(spec: SweepSpec, trial: Trial) -> None:
    from prometar.config import ConfigError, flatten

    assert spec.search is not None
    flat = flatten(trial.config)
    for dotted, (kind, args) in spec.search.space.items():
        key = f"search.space.{dotted}"
        if dotted not in flat:
            raise SpecError(spec.source, key, f"{dotted!r} is not a run-config key")
        current = flat[dotted]
        numeric = isinstance(current, (int, float)) and not isinstance(current, bool)
        if kind in NUMERIC_DISTRIBUTIONS and not numeric:
            raise SpecError(spec.source, key, f"{kind} needs a numeric key; {dotted} is {current!r}")
        for value in args if kind == "choice" else args[:1]:
            try:
                resolve_trial(trial.config, SEARCH_PROTOCOL, {dotted: value}, source=spec.source)
            except ConfigError as err:
                raise SpecError(spec.source, key, str(err)) from None


def _grid_points(grid: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = [{}]
    for key, values in grid.items():
        if key == VARIANT_AXIS:
            points = [{**p, **{str(k): x for k, x in v.items()}} for p in points for v in values]
        else:
            points = [{**p, key: v} for p in points for v in values]
    return points


def _resolve_point(spec: SweepSpec, point: Mapping[str, Any], protocol: str) -> Trial:
    """Preset → method settings → the sweep's overrides → the grid point (``resolve_config``)."""
    from prometar.config import ConfigError, resolve_config

    run_protocol = SEARCH_PROTOCOL if protocol == SEARCH_PROTOCOL else RUN_PROTOCOLS[spec.protocol]
    overrides = {**spec.overrides, **point, "protocol": run_protocol}
    try:
        config = resolve_config(spec.preset, overrides, source=spec.source)
    except ConfigError as err:
        key = err.key or ""
        if key == "preset" or err.source == spec.preset:
            section, short = "preset", ""
        else:
            section = "grid" if key in point else "overrides"
            short = {v: k for k, v in GRID_ALIASES.items()}.get(key, key) if section == "grid" else key
        raise SpecError(spec.source, f"{section}.{short}".rstrip("."), err.reason) from None
    return Trial(key=trial_key(config.scientific_dict(), protocol), protocol=protocol, config=config.to_dict())


# --------------------------------------------------------------------------------------------
# Helpers


def _num_classes(dataset: str) -> int:
    from prometar.data.catalog import get_dataset

    try:
        return int(get_dataset(dataset).num_classes)
    except Exception:  # an unknown dataset was rejected earlier; stay a pure estimate here
        return 1


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


def describe_trial(trial: Trial) -> str:
    """A short human-readable line for a trial."""
    return f"{trial.key}  {trial.method:<10} {trial.dataset:<15} seed={trial.seed} shots={trial.shots} [{trial.protocol}]"


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
