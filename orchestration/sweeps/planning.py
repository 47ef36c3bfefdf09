"""Planning a sweep: its spec expanded once into resolved trials (and search groups) — the plan.

:func:`plan_sweep` resolves every grid point exactly once (preset → method settings → the sweep's
overrides → the grid point, ``prometar.config.resolve_config``) into a :class:`Trial`: the
validated run config, the protocol's tag and the trial key. A search sweep's grid points are its
:class:`SearchGroup` s, whose sampled trials Optuna draws at run time
(:meth:`SearchGroup.resolve`, the one place a searched trial is resolved). Every command plans a
sweep once (:func:`load_plan`) and passes the :class:`SweepPlan` on; nothing re-derives it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestration.errors import SpecError
from orchestration.sweeps.keys import search_group_key, trial_key
from orchestration.sweeps.spec import GRID_ALIASES, NUMERIC_DISTRIBUTIONS, VARIANT_AXIS, SweepSpec, read_sweep
from prometar import protocols
from prometar.protocols import Protocol

if TYPE_CHECKING:
    from prometar.config import RunConfig


@dataclass(frozen=True)
class Trial:
    """One resolved run: what the trainable runs and what the ledger records.

    Attributes:
        key: The trial key (``keys.trial_key`` of ``scientific_dict()`` and the protocol's tag).
        protocol: The protocol's tag (``Protocol.tag``: the sweep file's name for it, or ``search``).
        config: The resolved run config, ``RunConfig.to_dict()``.
        group: For searched trials, the search group's key; else ``""``.
        run_config: The validated run config itself (``None`` for a trial made from a dict).
        source: For a transfer trial, the key of the source-model trial whose prompts it
            evaluates (it trains nothing); else ``""``.
    """

    key: str
    protocol: str
    config: dict[str, Any]
    group: str = ""
    run_config: RunConfig | None = field(default=None, compare=False, repr=False)
    source: str = ""

    @property
    def is_source(self) -> bool:
        """Whether this is a transfer's source model (``protocols.SOURCE``)."""
        return self.protocol == protocols.get_protocol(protocols.SOURCE).tag

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
        epochs = 0 if self.method == "zeroshot" or self.source else self.epochs
        return float(_num_classes(self.dataset) * (max(self.shots, 1) * epochs + 1))

    def line(self) -> str:
        """A short human-readable line."""
        evaluates = f" (evaluates source {self.source})" if self.source else ""
        return (
            f"{self.key}  {self.method:<10} {self.dataset:<15} seed={self.seed} shots={self.shots} "
            f"[{self.protocol}]{evaluates}"
        )


@dataclass(frozen=True)
class SearchGroup:
    """One grid point of a search sweep: a base trial whose ``space`` keys Optuna samples.

    Attributes:
        key: The group's key (``keys.search_group_key``).
        base: The grid point's trial (protocol ``search``); sampled trials override its config.
        label: ``method/dataset/<shots>shots/seed<seed>``, for progress lines.
    """

    key: str
    base: Trial
    label: str

    @property
    def base_config(self) -> dict[str, Any]:
        return self.base.config

    @property
    def dataset(self) -> str:
        return self.base.dataset

    def resolve(self, sampled: Mapping[str, Any], *, source: str = "<search>") -> Trial:
        """The trial for one sampled configuration (dotted key → value)."""
        return resolve_trial(self.base.config, self.base.protocol, sampled, group=self.key, source=source)


@dataclass(frozen=True)
class SweepPlan:
    """A sweep planned once: its spec, its resolved trials and its search groups.

    Attributes:
        spec: The validated sweep file.
        trials: The grid's trials, longest first (a search sweep: each group's base trial).
        groups: The search groups (empty without a search), in the trials' order.
        notes: What the user should hear once (stderr): overrides that only some trials read.
    """

    spec: SweepSpec
    trials: tuple[Trial, ...]
    groups: tuple[SearchGroup, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def protocol(self) -> str:
        """The protocol tag of its trials (``search`` for a search sweep; a transfer sweep's
        source-model trials carry ``protocols.SOURCE`` besides)."""
        if self.spec.search:
            return protocols.search_protocol().tag
        return protocols.sweep_protocol(self.spec.protocol).tag

    @property
    def sources(self) -> tuple[Trial, ...]:
        """The source-model trials of a transfer sweep (trained once, evaluated by the others)."""
        return tuple(trial for trial in self.trials if trial.is_source)

    @property
    def total(self) -> int:
        """Trials the sweep runs: the grid, times ``num_samples`` for a search; a transfer sweep's
        source models besides."""
        return self.spec.trial_count + len(self.sources)

    @property
    def datasets(self) -> tuple[str, ...]:
        """The grid's datasets in grid order; the ``data.dataset`` override when not a grid axis."""
        grid = self.spec.grid.get("data.dataset")
        return tuple(str(d) for d in grid) if grid else (str(self.spec.overrides["data.dataset"]),)

    @property
    def targets(self) -> tuple[str, ...]:
        """The evaluation targets its trials plan (transfer protocols), in first-seen order."""
        return tuple(dict.fromkeys(t for trial in self.trials for t in trial.config["eval"]["targets"]))

    @property
    def seeds(self) -> int:
        """Seeds per (method, dataset, shots) cell (no seed axis: one)."""
        return len(self.spec.grid.get("seed") or [None])

    def recipe_line(self) -> str:
        """The recipe (preset) each method trains with: ``prometar: preset official (...)``."""
        methods = dict.fromkeys(trial.method for trial in self.trials)
        return "; ".join(f"{method}: preset {self.spec.preset}" for method in methods) + (
            " (every value and its source: docs/recipes.md)"
        )

    def describe(self) -> str:
        """What ``validate`` prints: the trial count and a sample trial."""
        spec = self.spec
        lines = [f"{spec.source}: valid sweep {spec.name!r} ({spec.protocol})", f"trials: {spec.trial_count}"]
        if spec.search:
            lines.append(
                f"search: {len(self.groups)} group(s) × {spec.search.num_samples} samples on "
                f"{spec.search.metric} ({spec.search.mode}); space: {', '.join(spec.search.space)}"
            )
        lines.append(f"recipe: {self.recipe_line()}")
        if self.sources:
            lines.append(
                f"source models: {len(self.sources)}, trained once for every transfer sweep "
                f"(protocol {protocols.SOURCE}); the transfer trials evaluate their prompts"
            )
        lines.append(f"sample trial: {self.trials[0].line()}")
        lines.append(json.dumps(self.trials[0].config, indent=2, sort_keys=True))
        return "\n".join(lines)


def load_plan(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> SweepPlan:
    """Read, validate and plan a sweep file: what every command does once.

    Args:
        path: The sweep YAML.
        overrides: Extra dotted run-config overrides (``--set``), applied after the file's.

    Raises:
        SpecError: Missing file, YAML syntax error, unknown key, wrong type, unknown dataset or
            method, empty grid, a grid point or override the run config rejects, bad search
            space; the message names the file and the key.
    """
    return plan_sweep(read_sweep(path, overrides=overrides))


def plan_sweep(spec: SweepSpec) -> SweepPlan:
    """Expand a spec's grid into trials, each grid point resolved once (and its search group).

    Trials come longest first (:attr:`Trial.cost`); duplicates (two grid points that resolve to
    the same config) are kept once. A search sweep's space is checked against every group's
    config (each distinct value once for ``choice``, the lower bound otherwise).

    Raises:
        SpecError: A grid point, override or search value the run config rejects (names the file
            and key).
    """
    protocol = protocols.search_protocol() if spec.search else protocols.sweep_protocol(spec.protocol)
    trials: dict[str, Trial] = {}
    for point in _grid_points(spec.grid):
        trial = _resolve_point(spec, point, protocol)
        if protocol.takes_targets:  # one source model, evaluated by the transfer trials
            source = _source_trial(spec, trial)
            trials.setdefault(source.key, source)
            trial = replace(trial, source=source.key)
        trials.setdefault(trial.key, trial)
    ordered = tuple(sorted(trials.values(), key=lambda t: (-t.cost, t.dataset, t.method, t.seed, t.key)))
    notes = _check_overrides_reach_trials(spec, ordered)
    if spec.search is None:
        return SweepPlan(spec, ordered, notes=notes)
    groups = []
    for trial in ordered:
        _check_space(spec, trial)
        key = search_group_key(trial.key, spec.search.space, spec.search.metric, spec.search.mode)
        label = f"{trial.method}/{trial.dataset}/{trial.shots}shots/seed{trial.seed}"
        groups.append(SearchGroup(key=key, base=trial, label=label))
    return SweepPlan(spec, ordered, tuple(groups), notes)


def _check_overrides_reach_trials(spec: SweepSpec, trials: tuple[Trial, ...]) -> tuple[str, ...]:
    """Refuse an override no trial reads; a note for one that only some trials read.

    A trial reads a key unless its method never does (``RunConfig.ignored_keys``: ``meta.*`` for
    IVLP, ``optim.*`` for zero-shot, ...). A section override (``optim: {lr: ...}``) counts per key.

    Raises:
        SpecError: An override that no trial of the sweep reads (names it and the methods).
    """
    ignored = [set(t.run_config.ignored_keys()) if t.run_config else set() for t in trials]
    notes = []
    for name, value in spec.overrides.items():
        leaves = [f"{name}.{k}" for k in value] if isinstance(value, Mapping) and "." not in name else [name]
        for leaf in leaves:
            skipping = sorted({t.method for t, keys in zip(trials, ignored, strict=True) if leaf in keys})
            if not skipping:
                continue
            if all(leaf in keys for keys in ignored):
                raise SpecError(
                    spec.source,
                    f"overrides.{leaf}",
                    f"no trial reads it: {', '.join(skipping)} "
                    f"never read{'s' if len(skipping) == 1 else ''} {leaf} (drop the override)",
                )
            notes.append(
                f"{spec.source}: overrides.{leaf} reaches only some trials: "
                f"{', '.join(skipping)} never read{'s' if len(skipping) == 1 else ''} it"
            )
    return tuple(notes)


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
    return Trial(
        key=trial_key(config.scientific_dict(), protocol),
        protocol=protocol,
        config=config.to_dict(),
        group=group,
        run_config=config,
    )


def _check_space(spec: SweepSpec, trial: Trial) -> None:
    from prometar.config import flatten
    from prometar.errors import ConfigError

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
                resolve_trial(trial.config, trial.protocol, {dotted: value}, source=spec.source)
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


def _resolve_point(spec: SweepSpec, point: Mapping[str, Any], protocol: Protocol) -> Trial:
    """Preset → method settings → the sweep's overrides → the grid point (``resolve_config``)."""
    from prometar.config import resolve_config
    from prometar.errors import ConfigError

    overrides = {**spec.overrides, **point, "protocol": protocol.name}
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
    return Trial(
        key=trial_key(config.scientific_dict(), protocol.tag),
        protocol=protocol.tag,
        config=config.to_dict(),
        run_config=config,
    )


def _source_trial(spec: SweepSpec, trial: Trial) -> Trial:
    """The source-model trial a transfer trial evaluates (``protocols.source_config`` of its config)."""
    from prometar.errors import ConfigError

    try:
        return resolve_trial(
            protocols.source_config(trial.config),
            protocols.get_protocol(protocols.SOURCE).tag,
            source=spec.source,
        )
    except ConfigError as err:  # the transfer trial's config resolved, so this is not expected
        raise SpecError(spec.source, err.key or "grid", err.reason) from None


def _num_classes(dataset: str) -> int:
    from prometar.data.catalog import get_dataset

    try:
        return int(get_dataset(dataset).num_classes)
    except Exception:  # an unknown dataset was rejected earlier; stay a pure estimate here
        return 1
