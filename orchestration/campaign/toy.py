"""``reproduce --toy``: the campaign on the toy world, judged against the toy world's own expectations.

:func:`prepare_toy` builds (or reuses) the toy world and toy CLIP (``prometar.toy.build.build_toy``,
as the demo does), adds toy stand-ins for the domain-generalisation targets
(``prometar.toy.datasets.write_toy_imagenet_variants``), and derives from each sweep the campaign
names a toy sweep: the same protocol, preset, methods and recipe, on the toy datasets of
:data:`TOY_DATASETS` (per table kind), the first :data:`TOY_SEEDS` seeds, the toy CLIP
(:data:`TOY_OVERRIDES`, prompt depth :data:`TOY_DEEP_DEPTH` where a method has deep prompts),
one CPU per trial. The derived sweeps are written with the sweep writer
(``orchestration.sweeps.spec.spec_to_yaml``) under ``<output>/toy-campaign/sweeps/``; a sweep none
of whose datasets is kept is left out (said in the report). Every cell is judged against the toy
world's own references (:class:`ToyExpectations`: chance, the single-attribute oracle, the toy
CLIP's zero-shot base accuracy), each a floor our interval must clear, not the paper's numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pandas as pd

from orchestration import layout
from orchestration.campaign.published import PublishedValue
from orchestration.campaign.spec import Campaign, CampaignError, CampaignTable
from orchestration.results import ablation, base2new, few_shot, transfer
from orchestration.results.base2new import BASE_METRIC, NEW_METRIC
from orchestration.results.labels import AVERAGE
from orchestration.sweeps.planning import load_plan
from orchestration.sweeps.spec import Resources, read_sweep, spec_to_yaml
from prometar.methods import get_method

if TYPE_CHECKING:
    from prometar.toy.datasets import ToyClass

TOY_DATASETS: dict[str, tuple[str, ...]] = {
    base2new.KIND: ("eurosat", "dtd"),  # two of the demo's three (sweeps/demo.yaml), for the budget
    ablation.KIND: ("eurosat",),
    few_shot.KIND: ("eurosat",),
    **dict.fromkeys(transfer.KINDS, ("imagenet",)),  # the source model's dataset
}
"""Toy datasets kept per table kind (the paper's 11 would not fit in 30 minutes on 2 cores)."""
TOY_SEEDS = 2
"""Seeds kept per cell (the paper's 3 cut to 2 for the budget)."""
TOY_MAX_EPOCHS: dict[str, int] = {few_shot.KIND: 10, **dict.fromkeys(transfer.KINDS, 10)}
"""Epochs cut per table kind for the budget (a recipe's own where it has fewer): few-shot's 50
(16 classes × up to 16 shots, batch 4: the campaign's largest trials) and the transfer source
model's 20 (all 16 toy ImageNet classes) to ProMetaR's base-to-new 10."""
TOY_DEEP_DEPTH = 3
"""Deep prompts in 3 blocks: the toy CLIP has 3 text and 4 vision blocks (as ``sweeps/demo.yaml``)."""
TOY_VISION_BLOCKS = 4
"""The toy CLIP's vision blocks: the depth of a vision-only recipe that prompts every block."""
VIT_B_BLOCKS = 12
"""ViT-B/16's blocks: a recipe at this depth (VPT's) prompts every block."""
TOY_OVERRIDES: dict[str, Any] = {"backbone.name": "toy-clip", "data.num_workers": 0}
"""The toy CLIP (its checkpoint is added per build) and in-process loading of 32-pixel images."""
TOY_FOLDER = "toy-campaign"


@dataclass(frozen=True)
class ToyCampaign:
    """The campaign on the toy world: derived sweeps, data root, expectation and what was cut."""

    campaign: Campaign
    data_root: Path
    expectation: ToyExpectations
    description: str


def prepare_toy(
    campaign: Campaign, output: Path, *, toy_options: Mapping[str, Any] | None = None, stream: IO[str]
) -> ToyCampaign:
    """Build the toy world and derive the toy campaign (see the module)."""
    from prometar.toy.build import build_toy
    from prometar.toy.datasets import write_toy_imagenet_variants

    output = Path(output).resolve()
    print(
        f"[{campaign.name}] toy world and toy CLIP in {layout.toy_folder(output)} ...",
        file=stream,
        flush=True,
    )
    options = dict(toy_options or {})
    build = build_toy(layout.toy_folder(output), **options)
    if not (build.data_root / "imagenet-rendition" / "classnames.txt").is_file():
        write_toy_imagenet_variants(build.data_root, seed=int(options.get("seed", 0)))
    folder = output / TOY_FOLDER / "sweeps"
    folder.mkdir(parents=True, exist_ok=True)
    overrides = {**TOY_OVERRIDES, "backbone.pretrained": str(build.checkpoint)}
    derived: dict[str, bool] = {}
    tables: list[CampaignTable] = []
    for table in campaign.tables:
        kept = []
        for name in table.sweeps:
            if name not in derived:
                cut = {"max_epochs": TOY_MAX_EPOCHS[table.kind]} if table.kind in TOY_MAX_EPOCHS else {}
                derived[name] = derive_sweep(
                    campaign, name, TOY_DATASETS[table.kind], overrides, folder, **cut
                )
            if derived[name]:
                kept.append(name)
        if kept:
            # the paper's numbers and the deviations from its recipes do not apply to the toy world
            tables.append(dataclasses.replace(table, sweeps=tuple(kept), published=None, deviations=()))
    left_out = sorted(n for n, kept in derived.items() if not kept)
    toy = dataclasses.replace(
        campaign,
        name=f"{campaign.name}_toy",
        tables=tuple(tables),
        caveats=(),
        sweeps_folder=folder,
    )
    kinds = "; ".join(f"{kind}: {', '.join(datasets)}" for kind, datasets in TOY_DATASETS.items())
    epochs = ", ".join(f"{kind} at most {cap}" for kind, cap in TOY_MAX_EPOCHS.items())
    description = (
        "Toy world (prometar/toy): every cell is judged against the toy world's own references, not "
        "against the paper's numbers; each is a floor our 95% interval must lie above. Chance on the "
        "cell's classes (every cell). The single-attribute oracle (knowing only the colour or only the "
        "shape: 50% on a base or new half, 25% on all 16 classes; every accuracy cell but Average): "
        "above it a model uses both attributes — expected of a trained prompt, not guaranteed. The "
        "toy CLIP's zero-shot base accuracy (the campaign's zeroshot runs; the base accuracy of a "
        "method that trains, per dataset): prompt learning is expected to beat it on base classes "
        "(measured for CoOp on the toy world's systematic styles), not guaranteed to; new accuracy has no "
        "such reference. "
        "Paired differences (ProMetaR − its base method) have no toy reference: not comparable. "
        f"Toy datasets per table kind: {kinds}; seeds: the first {TOY_SEEDS} of each sweep (the "
        f"paper's 3 cut for the 30-minute budget; with 2 seeds no paired test separates); toy CLIP "
        f"{build.checkpoint.name}, deep prompt depth {TOY_DEEP_DEPTH} ({TOY_VISION_BLOCKS}, every "
        "vision block, where a recipe prompts every block of ViT-B/16: VPT's 12); epochs cut to "
        f"{epochs} for the budget; every recipe otherwise the sweep's own."
        + (f" Left out (no toy dataset kept): {', '.join(left_out)}." if left_out else "")
    )
    expectation = toy_expectations(build.data_root, int(options.get("seed", 0)))
    return ToyCampaign(toy, build.data_root, expectation, description)


def derive_sweep(
    campaign: Campaign,
    name: str,
    datasets: tuple[str, ...],
    overrides: Mapping[str, Any],
    folder: Path,
    *,
    max_epochs: int | None = None,
) -> bool:
    """Write the toy sweep of ``name`` into ``folder``; False when none of its datasets is kept.

    Deep prompts get :data:`TOY_DEEP_DEPTH` blocks (:data:`TOY_VISION_BLOCKS` for a vision-only
    recipe that prompts every block of ViT-B/16); ``max_epochs`` caps the recipe's epochs.
    """
    spec = read_sweep(campaign.sweep_path(name))
    if spec.search is not None:
        raise CampaignError(campaign.source, f"tables: {name}", "a search sweep has no toy form")
    grid = dict(spec.grid)
    if "data.dataset" not in grid:
        raise CampaignError(campaign.source, f"tables: {name}", "the toy form needs a dataset grid axis")
    grid["data.dataset"] = [d for d in grid["data.dataset"] if d in datasets]
    if not grid["data.dataset"]:
        return False
    grid["seed"] = list(grid.get("seed", [1]))[:TOY_SEEDS]
    methods = set(grid.get("method", [])) | {
        v["method"] for v in grid.get("variant", []) if isinstance(v, Mapping) and "method" in v
    }
    toy_overrides = {**spec.overrides, **overrides}
    recipe = load_plan(campaign.sweep_path(name)).trials[0].config
    deep = [get_method(m) for m in methods if get_method(m).uses_deep_depth]
    if deep:
        toy_overrides["prompts.deep_depth"] = TOY_DEEP_DEPTH
        if recipe["prompts"]["deep_depth"] >= VIT_B_BLOCKS and all(m.design == "vpt" for m in deep):
            toy_overrides["prompts.deep_depth"] = TOY_VISION_BLOCKS
    if max_epochs is not None and int(recipe["optim"]["epochs"]) > max_epochs:
        toy_overrides["optim.epochs"] = max_epochs
    toy_spec = dataclasses.replace(spec, grid=grid, resources={"default": Resources(cpu=1.0, gpu=0.0)})
    (folder / f"{name}.yaml").write_text(spec_to_yaml(toy_spec, name=spec.name, overrides=toy_overrides))
    return True


def chance_expectation(data_root: Path) -> Callable[[str, str, str], PublishedValue | None]:
    """Chance on each cell's classes, as a floor: ``base_acc`` / ``new_acc`` (1 in the base / new
    classes), ``hm`` (their HM), ``acc`` (1 in all classes), ``acc/<target>`` (1 in the target's)."""
    from prometar.data.readers import read_dataset
    from prometar.protocols import harmonic_mean

    counts: dict[str, int] = {}

    def classes(dataset: str) -> int:
        if dataset not in counts:
            counts[dataset] = len(read_dataset(dataset, data_root).classnames)
        return counts[dataset]

    def expect(method: str, dataset: str, metric: str) -> PublishedValue | None:
        # the toy datasets all have 16 classes: the Average row's chance is any of theirs
        n = next(iter(counts.values())) if dataset == AVERAGE and counts else classes(dataset)
        base, new = 100.0 / math.ceil(n / 2), 100.0 / (n - math.ceil(n / 2))
        if metric.startswith("acc/") and metric != "acc/mean":
            target = classes(metric.split("/", 1)[1])
            value, what = 100.0 / target, f"1 in {target} classes"
        elif metric == "acc":
            value, what = 100.0 / n, f"1 in {n} classes"
        elif metric == "base_acc":
            value, what = base, f"1 in {math.ceil(n / 2)} base classes"
        elif metric == "new_acc":
            value, what = new, f"1 in {n - math.ceil(n / 2)} new classes"
        elif metric == "hm":
            value, what = harmonic_mean(base, new), "HM of the base and new chance levels"
        else:
            return None
        return PublishedValue(
            method=method,
            dataset=dataset,
            metric=metric,
            value=value,
            source=f"toy world: chance ({what})",
            relation="above",
        )

    return expect


ORACLE_SOURCE = "prometar/toy/datasets.py, single_attribute_baseline"
ZEROSHOT_METHOD = "zeroshot"


@dataclass(frozen=True)
class ToyExpectations:
    """Every cell's references on the toy world (:class:`orchestration.campaign.cells.Expectation`).

    - **chance** on the cell's classes: a floor our 95 % interval must clear, every cell;
    - the **single-attribute oracle**: the accuracy of knowing an object's colour only, or its
      shape only, and guessing among the classes sharing it (the better of the two), on the cell's
      classes (50 % on a base or new half: the halves are checkerboards of a 4 × 4 grid; 25 % on
      all 16 classes). Above it, a model uses both attributes; the toy world expects a trained
      prompt to get there but does not guarantee it;
    - **zero-shot**: the toy CLIP's own zero-shot base accuracy, from the campaign's ``zeroshot``
      runs on the same dataset (:meth:`with_runs`), for the base accuracy of a method that trains.
      The toy notes measured prompt learning lifting base accuracy on systematic styles; an
      expectation, not a guarantee. New accuracy has no such reference: prompt learning may lose
      there (the base/new trade-off ProMetaR is about).
    """

    chance: Callable[[str, str, str], PublishedValue | None]
    classes: Callable[[str], list[ToyClass] | None]
    zeroshot: Mapping[str, tuple[float, int]] = dataclasses.field(default_factory=dict)

    def __call__(self, method: str, dataset: str, shots: int, metric: str) -> list[PublishedValue]:
        found = [self.chance(method, dataset, metric)]
        found.append(self._oracle(method, dataset, metric))
        if metric == BASE_METRIC and dataset in self.zeroshot and get_method(method).trains:
            value, n = self.zeroshot[dataset]
            found.append(
                PublishedValue(
                    method=method,
                    dataset=dataset,
                    metric=metric,
                    value=value,
                    source=f"toy world: zero-shot toy CLIP on the base classes (the campaign's "
                    f"{ZEROSHOT_METHOD} runs, n={n}); expected, not guaranteed, to be beaten",
                    relation="above",
                )
            )
        return [v for v in found if v is not None]

    def _oracle(self, method: str, dataset: str, metric: str) -> PublishedValue | None:
        from prometar.protocols import harmonic_mean
        from prometar.toy.datasets import single_attribute_baseline

        def best(of: list[ToyClass]) -> float:
            return 100.0 * max(single_attribute_baseline(of, a) for a in ("colour", "shape"))

        if metric.startswith("acc/") and metric != "acc/mean":
            key = metric.split("/", 1)[1]
        elif metric in ("acc", BASE_METRIC, NEW_METRIC, "hm") and dataset != AVERAGE:
            key = dataset
        else:
            return None
        classes = self.classes(key)
        if not classes:
            return None
        base = [c for c in classes if c.is_base]
        new = [c for c in classes if not c.is_base]
        if metric == BASE_METRIC:
            value, what = best(base), "base classes"
        elif metric == NEW_METRIC:
            value, what = best(new), "new classes"
        elif metric == "hm":
            value, what = harmonic_mean(best(base), best(new)), "HM of the base and new halves"
        else:
            value, what = best(classes), f"{len(classes)} classes"
        return PublishedValue(
            method=method,
            dataset=dataset,
            metric=metric,
            value=value,
            source=f"toy world: single-attribute oracle (colour or shape only; {what}; {ORACLE_SOURCE}); "
            "expected, not guaranteed, to be beaten",
            relation="above",
        )

    def with_runs(self, runs: pd.DataFrame) -> ToyExpectations:
        """Bound to the zero-shot base accuracy per dataset of the campaign's ``zeroshot`` runs."""
        zeroshot: dict[str, tuple[float, int]] = {}
        if not runs.empty:
            rows = runs[(runs["method"] == ZEROSHOT_METHOD) & (runs["metric"] == BASE_METRIC)]
            for dataset, group in rows.groupby("dataset"):
                by_seed = group.groupby("seed")["value"].mean()
                zeroshot[str(dataset)] = (float(by_seed.mean()), int(by_seed.size))
        return dataclasses.replace(self, zeroshot=zeroshot)


def toy_expectations(data_root: Path, seed: int) -> ToyExpectations:
    """The toy world's expectations for the datasets under ``data_root`` written with ``seed``."""
    from prometar.data.readers import read_dataset
    from prometar.toy.datasets import TOY_DATASETS as WRITTEN
    from prometar.toy.datasets import toy_dataset_classes

    found: dict[str, list[ToyClass] | None] = {}

    def classes(dataset: str) -> list[ToyClass] | None:
        if dataset not in found:
            key = dataset if dataset in WRITTEN else "imagenet"  # the variants: ImageNet's classes
            grid = {c.name: c for c in toy_dataset_classes(key, seed)}
            names = read_dataset(dataset, data_root).classnames
            found[dataset] = [grid[n] for n in names] if all(n in grid for n in names) else None
        return found[dataset]

    return ToyExpectations(chance_expectation(data_root), classes)
