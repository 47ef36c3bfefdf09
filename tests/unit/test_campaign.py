"""Campaign files, the plan and its cost, the verdicts and the reproduction report (no Ray, no training).

The shipped campaign names sweeps that exist and plan, table kinds the results registry builds,
and published values that each carry a source. Bad campaign files exit 2 naming the file and key.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from orchestration.campaign.calibration import Calibration, EpochTime, read_benchmark_csv
from orchestration.campaign.cells import Cell, estimate_cells, judge_cells
from orchestration.campaign.plan import Cost, plan_campaign, trial_cost
from orchestration.campaign.published import PublishedValue, cited_values
from orchestration.campaign.report import (
    Reproduction,
    TableResult,
    comparable_published,
    render_html,
    render_markdown,
)
from orchestration.campaign.spec import CampaignError, CampaignTable, read_campaign
from orchestration.campaign.tables import TABLE_KINDS
from orchestration.campaign.verdicts import (
    INCONCLUSIVE,
    NOT_COMPARABLE,
    NOT_REPRODUCED,
    REPRODUCED,
    Estimate,
    judge_cell,
    judge_table,
    seed_interval,
)
from orchestration.cli import main
from orchestration.ledger.runs import RunsTable
from orchestration.results.kinds import RESULT_KINDS as RESULT_TABLE_KINDS
from orchestration.sweeps.planning import load_plan

REPO = Path(__file__).resolve().parents[2]
CAMPAIGN = REPO / "campaigns" / "prometar_cvpr2024.yaml"


# -- the shipped campaign ---------------------------------------------------------------------


def test_every_sweep_the_campaign_names_exists_and_plans() -> None:
    campaign = read_campaign(CAMPAIGN)
    names = campaign.sweeps()
    assert {"base2new", "baselines_coop", "ablation_meta", "domain_generalization", "few_shot"} <= set(names)
    for name in names:
        path = campaign.sweep_path(name)
        assert path.is_file() and path.parent == REPO / "sweeps"
        assert load_plan(path).total > 0


def test_every_table_kind_of_the_campaign_is_a_results_kind() -> None:
    campaign = read_campaign(CAMPAIGN)
    kinds = {t.kind for t in campaign.tables}
    assert {"base2new", "ablation", "domain_generalization", "cross_dataset", "few_shot"} <= kinds
    assert set(RESULT_TABLE_KINDS) <= set(TABLE_KINDS)
    assert kinds <= set(TABLE_KINDS)


def test_every_published_value_the_campaign_cites_has_a_source() -> None:
    campaign = read_campaign(CAMPAIGN)
    cited = [t for t in campaign.tables if t.published]
    assert cited, "the campaign compares at least one table with published values"
    for table in cited:
        values = cited_values(table.published.resource, table.published.methods)
        assert {v.method for v in values} == set(table.published.methods), table.name
        assert all(v.source for v in values), [v for v in values if not v.source][:3]
        assert all(math.isfinite(v.value) for v in values)


def test_prometar_on_the_baselines_names_the_shared_sweeps_and_trains_only_its_own(tmp_path: Path) -> None:
    campaign = read_campaign(CAMPAIGN)
    table = campaign.table("prometar_on_baselines")
    assert set(table.pairs) == {("coop", "prometar_coop"), ("vpt", "prometar_vpt"), ("ivlp", "prometar")}
    plans = {name: load_plan(campaign.sweep_path(name)) for name in table.sweeps}
    methods = {t.method for p in plans.values() for t in p.trials}
    assert {m for pair in table.pairs for m in pair} <= methods
    # the base methods and ProMetaR on IVLP come from the base-to-new table's own sweeps (the same
    # files, so the same trial keys and experiments: the ledger never trains them twice) ...
    assert set(table.sweeps) - {"prometar_on_baselines"} <= set(campaign.table("base2new").sweeps)
    assert {t.method for t in plans["prometar_on_baselines"].trials} == {"prometar_coop", "prometar_vpt"}
    keys = [t.key for p in plans.values() for t in p.trials]
    assert len(keys) == len(set(keys))
    # ... with the base-to-new sweep's datasets, seeds and shots
    grid = {(t.dataset, t.seed, t.shots) for t in plans["base2new"].trials}
    ours = plans["prometar_on_baselines"].trials
    assert {(t.dataset, t.seed, t.shots) for t in ours if t.method == "prometar_vpt"} == grid
    assert {(t.dataset, t.seed, t.shots) for t in ours if t.method == "prometar_coop"} == grid
    planned = plan_campaign(campaign, output=tmp_path / "out")
    [b2n, pairs] = [t for t in planned.tables if t.table.name in ("base2new", "prometar_on_baselines")]
    assert [s.name for s in pairs.sweeps] == ["prometar_on_baselines"]
    assert set(pairs.shared) == set(table.sweeps) - {"prometar_on_baselines"}
    assert "baselines_vpt" in {s.name for s in b2n.sweeps}
    # alone, the table launches every sweep it reads
    [alone] = plan_campaign(campaign, output=tmp_path / "out", only=["prometar_on_baselines"]).tables
    assert [s.name for s in alone.sweeps] == list(table.sweeps) and not alone.shared


def test_the_campaign_names_each_deviation_with_a_source() -> None:
    campaign = read_campaign(CAMPAIGN)
    for table in campaign.tables:
        for deviation in table.deviations:
            assert deviation.name and deviation.source
    assert campaign.caveats and all(c.source for c in campaign.caveats)


def test_dry_run_of_the_real_campaign_without_weights_or_data(tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "reproduce",
            str(CAMPAIGN),
            "--dry-run",
            "--output",
            str(output),
            "--data-root",
            str(tmp_path / "none"),
        ],
    )
    assert result.exit_code == 0, result.output
    text = result.output
    campaign = read_campaign(CAMPAIGN)
    for table in campaign.tables:
        assert f"  {table.name} ({table.kind}): trials " in text
    base2new = next(line for line in text.splitlines() if line.startswith("  base2new (base2new)"))
    assert "done 0" in base2new and "unknown (" in base2new  # no measured epoch time anywhere
    assert text.splitlines()[
        text.splitlines().index("missing here (a launch would stop before its first trial):") + 1
    ]
    assert f"data root {tmp_path / 'none'} does not exist" in text
    assert not output.exists()  # a dry run writes nothing


# -- bad campaign files: exit 2, naming the file and the key --------------------------------

GOOD_TABLE = {"name": "t", "kind": "base2new", "sweeps": ["demo"]}
BAD = {
    "unknown_key": ({"tables": [GOOD_TABLE], "colour": 1}, "colour"),
    "unknown_kind": ({"tables": [{**GOOD_TABLE, "kind": "pie"}]}, "tables.t.kind"),
    "missing_sweep": ({"tables": [{**GOOD_TABLE, "sweeps": ["nope"]}]}, "tables.t.sweeps"),
    "unknown_resource": (
        {"tables": [{**GOOD_TABLE, "published": {"resource": "x", "methods": ["prometar"]}}]},
        "tables.t.published.resource",
    ),
    "unknown_method": (
        {"tables": [{**GOOD_TABLE, "published": {"resource": "base2new", "methods": ["clipper"]}}]},
        "tables.t.published.methods",
    ),
    "deviation_without_source": (
        {"tables": [{**GOOD_TABLE, "deviations": [{"name": "recipe"}]}]},
        "tables.t.deviations[0].source",
    ),
    "unknown_after": ({"tables": [{**GOOD_TABLE, "after": ["u"]}]}, "tables.t.after"),
    "cycle": (
        {"tables": [{**GOOD_TABLE, "after": ["u"]}, {**GOOD_TABLE, "name": "u", "after": ["t"]}]},
        "tables",
    ),
    "no_tables": ({"name": "c"}, "tables"),
    "pair_of_one": ({"tables": [{**GOOD_TABLE, "pairs": [["coop"]]}]}, "tables.t.pairs[0]"),
    "pair_unknown_method": ({"tables": [{**GOOD_TABLE, "pairs": [["coop", "cooper"]]}]}, "tables.t.pairs[0]"),
    "pair_twice": (
        {"tables": [{**GOOD_TABLE, "pairs": [["coop", "prometar_coop"], ["coop", "prometar_coop"]]}]},
        "tables.t.pairs[1]",
    ),
    "pairs_of_a_few_shot_table": (
        {"tables": [{**GOOD_TABLE, "kind": "few_shot", "pairs": [["coop", "prometar_coop"]]}]},
        "tables.t.pairs",
    ),
}


def _write_campaign(folder: Path, data: dict) -> Path:
    path = folder / "campaigns" / "c.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump({"sweeps_folder": str(REPO / "sweeps"), **data}, sort_keys=False))
    return path


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_campaign_exits_2_naming_file_and_key(tmp_path: Path, case: str) -> None:
    data, key = BAD[case]
    path = _write_campaign(tmp_path, data)
    with pytest.raises(CampaignError) as caught:
        read_campaign(path)
    assert caught.value.key == key and str(path) in str(caught.value)
    output = tmp_path / "out"
    result = CliRunner().invoke(main, ["reproduce", str(path), "--dry-run", "--output", str(output)])
    assert result.exit_code == 2 and key in result.output and "Traceback" not in result.output
    assert not output.exists()


def test_tables_come_in_dependency_order_and_only_brings_what_it_needs(tmp_path: Path) -> None:
    data = {
        "tables": [
            {**GOOD_TABLE, "name": "eval", "after": ["source"]},
            {**GOOD_TABLE, "name": "other"},
            {**GOOD_TABLE, "name": "source"},
        ]
    }
    campaign = read_campaign(_write_campaign(tmp_path, data))
    assert [t.name for t in campaign.tables] == ["other", "source", "eval"]
    assert [t.name for t in campaign.select(["eval"])] == ["source", "eval"]
    with pytest.raises(CampaignError, match="no table 'nope'"):
        campaign.select(["nope"])


# -- verdicts ---------------------------------------------------------------------------------


def test_seed_interval_is_students_t() -> None:
    estimate = seed_interval([1.0, 2.0, 3.0])
    assert estimate.mean == 2.0 and estimate.n == 3
    assert estimate.high - 2.0 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)  # t(0.975, 2 df)
    one = seed_interval([5.0])
    assert one.n == 1 and math.isnan(one.low)


def test_cell_verdicts() -> None:
    ours = Estimate(70.0, 69.0, 71.0, 3)
    assert judge_cell(ours, 70.5).verdict == REPRODUCED
    missed = judge_cell(ours, 73.0)
    assert missed.verdict == NOT_REPRODUCED and missed.by == pytest.approx(2.0)
    assert missed.difference == pytest.approx(-3.0)
    assert judge_cell(ours, 68.5).by == pytest.approx(0.5)
    deviated = judge_cell(ours, 70.5, deviation="recipe: X (source: Y)")
    assert deviated.verdict == NOT_COMPARABLE and "recipe" in deviated.reason
    assert judge_cell(ours, None).reason == "no reference value (published or expected)"
    assert judge_cell(None, 70.0).reason == "no finished run"
    assert "no interval" in judge_cell(Estimate(70.0, math.nan, math.nan, 1), 70.0).reason


def test_a_floor_is_cleared_by_the_whole_interval() -> None:
    """Above a floor: the whole interval above it; below: the whole interval below it (by how much
    below its upper end); an interval spanning it decides nothing (inconclusive), whichever side
    the mean is on."""
    ours = Estimate(40.0, 30.0, 50.0, 2)
    assert judge_cell(ours, 12.5, relation="above").verdict == REPRODUCED
    below = judge_cell(ours, 55.0, relation="above")
    assert below.verdict == NOT_REPRODUCED and below.by == pytest.approx(5.0)
    for floor in (35.0, 45.0):
        spanned = judge_cell(ours, floor, relation="above")
        assert spanned.verdict == INCONCLUSIVE and spanned.by is None
        assert spanned.reason == "our 95% interval (n=2) spans the reference: more seeds would decide"
    # a published value (not a floor) within a wide interval stays "reproduced", as the issue defines it
    assert judge_cell(ours, 35.0).verdict == REPRODUCED


def test_toy_stand_ins_of_the_imagenet_variants_read_as_their_benchmarks(tmp_path: Path) -> None:
    from orchestration.campaign.toy import chance_expectation
    from prometar.data.readers import read_dataset
    from prometar.toy.datasets import toy_dataset_classes, write_toy_dataset, write_toy_imagenet_variants

    write_toy_dataset(tmp_path, "imagenet", seed=0, train_per_class=1, val_per_class=0, test_per_class=1)
    write_toy_imagenet_variants(tmp_path, seed=0, test_per_class=2)
    names = [c.name for c in toy_dataset_classes("imagenet", 0)]
    assert read_dataset("imagenet", tmp_path).classnames == names
    for key, count in (("imagenet_v2", 16), ("imagenet_sketch", 16), ("imagenet_a", 12), ("imagenet_r", 12)):
        splits = read_dataset(key, tmp_path)
        assert len(splits.classnames) == count and set(splits.classnames) <= set(names)
        assert len(splits.test) == 2 * count
    expect = chance_expectation(tmp_path)
    assert expect("prometar", "imagenet", "acc/imagenet_a").value == pytest.approx(100 / 12)
    assert expect("prometar", "imagenet", "base_acc").value == pytest.approx(12.5)
    assert expect("prometar", "imagenet", "acc").relation == "above"
    assert expect("prometar", "imagenet", "acc/mean") is None


def test_toy_expectations_are_chance_the_single_attribute_oracle_and_zero_shot(tmp_path: Path) -> None:
    import pandas as pd

    from orchestration.campaign.toy import toy_expectations
    from prometar.toy.datasets import (
        single_attribute_baseline,
        toy_dataset_classes,
        write_toy_dataset,
        write_toy_imagenet_variants,
    )

    for key in ("eurosat", "imagenet"):
        write_toy_dataset(tmp_path, key, seed=0, train_per_class=1, val_per_class=0, test_per_class=1)
    write_toy_imagenet_variants(tmp_path, seed=0, test_per_class=1)
    expect = toy_expectations(tmp_path, 0)

    def refs(expectation, *cell) -> dict[str, float]:
        found = expectation(*cell)
        assert all(v.relation == "above" for v in found)
        return {v.source.split(" (")[0]: v.value for v in found}

    chance, oracle, zeroshot = (
        "toy world: chance",
        "toy world: single-attribute oracle",
        "toy world: zero-shot toy CLIP on the base classes",
    )
    assert refs(expect, "ivlp", "eurosat", 16, "base_acc") == {chance: 12.5, oracle: 50.0}
    runs = pd.DataFrame(
        [("zeroshot", "eurosat", 16, seed, "base_acc", 40.0) for seed in (1, 2)]
        + [("zeroshot", "eurosat", 16, 1, "new_acc", 45.0), ("ivlp", "eurosat", 16, 1, "base_acc", 90.0)],
        columns=["method", "dataset", "shots", "seed", "metric", "value"],
    )
    bound = expect.with_runs(runs)
    assert refs(bound, "ivlp", "eurosat", 16, "base_acc") == {chance: 12.5, oracle: 50.0, zeroshot: 40.0}
    assert "n=2" in bound("ivlp", "eurosat", 16, "base_acc")[-1].source
    assert zeroshot not in refs(bound, "zeroshot", "eurosat", 16, "base_acc")  # nothing trains
    assert refs(bound, "ivlp", "eurosat", 16, "new_acc") == {
        chance: 12.5,
        oracle: 50.0,
    }  # no trade-off promise
    assert refs(bound, "ivlp", "eurosat", 16, "hm") == {chance: 12.5, oracle: 50.0}
    assert refs(bound, "prometar", "eurosat", 1, "acc") == {chance: 100 / 16, oracle: 25.0}
    assert refs(bound, "ivlp", "average", 16, "hm") == {chance: 12.5}
    # an ImageNet variant's own classes: ImageNet-A holds 12 of the toy ImageNet's 16
    subset = [c for c in toy_dataset_classes("imagenet", 0) if c.label % 4 != 3]
    best = 100 * max(single_attribute_baseline(subset, a) for a in ("colour", "shape"))
    assert refs(bound, "prometar", "imagenet", 16, "acc/imagenet_a") == {chance: 100 / 12, oracle: best}
    assert bound("prometar", "imagenet", 16, "acc/mean") == []


def test_toy_sweeps_fit_the_toy_clip_and_keep_vpt_on_every_vision_block(tmp_path: Path) -> None:
    from orchestration.campaign.toy import TOY_DEEP_DEPTH, TOY_VISION_BLOCKS, derive_sweep

    campaign = read_campaign(CAMPAIGN)
    toy = {"backbone.name": "toy-clip", "backbone.pretrained": None}
    depths = {}
    for name in ("baselines_vpt", "prometar_on_baselines", "baselines_ivlp", "baselines_coop"):
        assert derive_sweep(campaign, name, ("eurosat",), toy, tmp_path)
        for trial in load_plan(tmp_path / f"{name}.yaml").trials:
            prompts = trial.config["prompts"]
            depths[trial.method] = (prompts["text_depth"], prompts["vision_depth"])
    assert depths == {
        "vpt": (0, TOY_VISION_BLOCKS),  # VPT's 12: every block of ViT-B/16, every block of the toy's 4
        "prometar_vpt": (0, TOY_DEEP_DEPTH),  # ProMetaR's 9 of 12
        "prometar_coop": (1, 0),
        "ivlp": (TOY_DEEP_DEPTH, TOY_DEEP_DEPTH),
        "coop": (1, 0),
    }
    from prometar.backbone import load_model_config

    config = load_model_config("toy-clip")
    assert config["vision_cfg"]["layers"] == TOY_VISION_BLOCKS
    assert TOY_DEEP_DEPTH <= min(config["text_cfg"]["layers"], TOY_VISION_BLOCKS)
    assert not derive_sweep(campaign, "baselines_coop_imagenet", ("eurosat",), toy, tmp_path)
    # the budget's epoch cut: below a recipe's own epochs only, and the same for both transfer
    # sweeps, so that they still share their source model
    assert derive_sweep(campaign, "few_shot", ("eurosat",), toy, tmp_path, max_epochs=10)
    assert {t.config["optim"]["epochs"] for t in load_plan(tmp_path / "few_shot.yaml").trials} == {10}
    assert derive_sweep(campaign, "baselines_vpt", ("eurosat",), toy, tmp_path, max_epochs=10)
    assert {t.config["optim"]["epochs"] for t in load_plan(tmp_path / "baselines_vpt.yaml").trials} == {5}
    sources = []
    for name in ("domain_generalization", "cross_dataset"):
        assert derive_sweep(campaign, name, ("imagenet",), toy, tmp_path, max_epochs=10)
        plan = load_plan(tmp_path / f"{name}.yaml")
        sources.append([t.key for t in plan.sources])
        assert {t.config["optim"]["epochs"] for t in plan.sources} == {10}
    assert sources[0] == sources[1] and len(sources[0]) == 2


def test_table_verdicts() -> None:
    ok, bad, nc = (judge_cell(Estimate(1, 0, 2, 3), p) for p in (1.0, 5.0, None))
    assert judge_table([ok, nc]).verdict == REPRODUCED
    assert judge_table([ok, bad, nc]).verdict == NOT_REPRODUCED
    assert judge_table([nc]).verdict == NOT_COMPARABLE
    assert judge_table([ok, bad, nc]).line() == "1 of 2 comparable cells reproduced; 1 not comparable"
    unsure = judge_cell(Estimate(40.0, 30.0, 50.0, 2), 45.0, relation="above")
    assert judge_table([ok, unsure]).verdict == REPRODUCED  # the decided cells decide
    assert judge_table([bad, unsure]).verdict == NOT_REPRODUCED
    assert judge_table([unsure, nc]).verdict == INCONCLUSIVE
    assert judge_table([ok, unsure, nc]).line() == (
        "1 of 1 comparable cells reproduced; 1 inconclusive; 1 not comparable"
    )


def _runs(rows: list[tuple]) -> RunsTable:
    import pandas as pd

    columns = ["method", "dataset", "protocol", "shots", "seed", "metric", "value", "run_id"]
    return RunsTable(runs=pd.DataFrame(rows, columns=columns))


def test_cells_join_ours_with_the_published_values_and_add_the_average() -> None:
    rows = []
    for seed, (base, new) in enumerate([(70.0, 60.0), (72.0, 62.0)], start=1):
        for dataset, shift in (("eurosat", 0.0), ("dtd", 10.0)):
            run = f"{dataset}{seed}"
            rows += [
                ("ivlp", dataset, "base2new", 16, seed, "base_acc", base + shift, run),
                ("ivlp", dataset, "base2new", 16, seed, "new_acc", new + shift, run),
            ]
    estimates = estimate_cells(_runs(rows), kind="base2new", datasets=("eurosat", "dtd"))
    average = estimates[(estimates["dataset"] == "average") & (estimates["metric"] == "base_acc")]
    assert list(average["values"].iloc[0]) == [75.0, 77.0]
    published = [
        PublishedValue(method="ivlp", dataset="eurosat", metric="base_acc", value=71.0, source="paper T1"),
        PublishedValue(
            method="ivlp", dataset="oxford_pets", metric="base_acc", value=90.0, source="paper T1"
        ),
    ]
    cells = judge_cells(estimates, published)
    eurosat = next(c for c in cells if c.dataset == "eurosat" and c.metric == "base_acc")
    assert eurosat.verdict.verdict == REPRODUCED and eurosat.published.source == "paper T1"
    pets = next(c for c in cells if c.dataset == "oxford_pets")
    assert pets.ours is None and pets.verdict.reason == "no finished run"
    assert all(c.verdict.verdict == NOT_COMPARABLE for c in cells if c.published is None)


def test_the_papers_average_is_compared_only_over_its_datasets() -> None:
    from prometar.data.catalog import BASE_TO_NEW_DATASETS

    values = cited_values("base2new", ["prometar"])
    assert any(v.dataset == "average" for v in values)
    assert comparable_published(values, BASE_TO_NEW_DATASETS) == values
    subset = comparable_published(values, ("eurosat", "dtd"))
    assert subset and all(v.dataset != "average" for v in subset)


def test_paired_differences_are_per_seed_and_judged_against_the_papers_difference() -> None:
    from orchestration.campaign.cells import PAIRED, paired_cells

    rows = []
    for seed, (ours, theirs) in enumerate([(80.0, 70.0), (82.0, 71.0), (81.0, 70.0)], start=1):
        rows += [
            ("prometar", "eurosat", "base2new", 16, seed, "base_acc", ours, f"p{seed}"),
            ("coop", "eurosat", "base2new", 16, seed, "base_acc", theirs, f"c{seed}"),
        ]
    rows.append(("coop", "eurosat", "base2new", 16, 4, "base_acc", 0.0, "c4"))  # no partner: left out
    published = [
        PublishedValue(method="prometar", dataset="eurosat", metric="base_acc", value=90.0, source="A"),
        PublishedValue(method="coop", dataset="eurosat", metric="base_acc", value=80.0, source="B"),
        PublishedValue(method="prometar", dataset="dtd", metric="base_acc", value=80.0, source="A"),
        PublishedValue(method="coop", dataset="dtd", metric="base_acc", value=75.0, source="B"),
    ]
    cells = paired_cells(_runs(rows), published, lead="prometar")
    eurosat = next(c for c in cells if c.dataset == "eurosat")
    assert eurosat.setting == PAIRED and eurosat.method == "prometar − coop"
    assert eurosat.ours.n == 3 and eurosat.ours.mean == pytest.approx((10 + 11 + 11) / 3)
    assert eurosat.published.value == 10.0 and eurosat.published.source == "A; B"
    assert eurosat.verdict.verdict == REPRODUCED
    dtd = next(c for c in cells if c.dataset == "dtd")
    assert dtd.ours is None and dtd.verdict.reason == "no finished run"


def test_pairs_are_judged_on_the_paired_test_of_treated_minus_base() -> None:
    from orchestration.campaign.cells import PAIRED, pair_cells

    rows = []
    for seed in (1, 2, 3):
        for dataset, shift in (("eurosat", 0.0), ("dtd", 5.0)):
            for method, base, new in (("ivlp", 70.0, 60.0), ("prometar", 72.0, 66.0), ("coop", 60.0, 50.0)):
                run = f"{method}{dataset}{seed}"
                rows += [
                    (method, dataset, "base2new", 16, seed, "base_acc", base + shift + seed / 10, run),
                    (method, dataset, "base2new", 16, seed, "new_acc", new + shift - seed / 10, run),
                ]
    published = [
        PublishedValue(method="prometar", dataset="average", metric="hm", value=80.0, source="A"),
        PublishedValue(method="ivlp", dataset="average", metric="hm", value=76.0, source="B"),
        PublishedValue(method="ivlp", dataset="eurosat", metric="base_acc", value=76.0, source="B"),
    ]
    pairs = [("ivlp", "prometar"), ("coop", "prometar_coop")]
    cells, summaries = pair_cells(_runs(rows), pairs, published, datasets=("eurosat", "dtd"))
    average = next(
        c for c in cells if c.method == "prometar − ivlp" and c.dataset == "average" and c.metric == "hm"
    )
    assert average.ours.n == 3 and average.published.value == pytest.approx(4.0)
    assert average.published.source == "A; B" and average.setting.startswith(PAIRED)
    assert "ProMetaR better" in average.setting  # the paired t test over 3 seeds separates them
    assert average.verdict.verdict in (REPRODUCED, NOT_REPRODUCED)
    base = next(
        c
        for c in cells
        if c.method == "prometar − ivlp" and c.dataset == "eurosat" and c.metric == "base_acc"
    )
    assert base.ours.mean == pytest.approx(2.0) and base.published is None
    assert base.verdict.verdict == NOT_COMPARABLE and base.verdict.reason == "no published value of prometar"
    [missing] = [c for c in cells if c.method == "prometar_coop − coop"]
    assert missing.ours is None and "no finished runs to pair" in missing.verdict.reason
    assert len(summaries) == 1 and set(summaries[0]["method_b"]) == {"prometar"}
    # the Average only beside the paper's when ours covers every dataset of the table
    partial, _ = pair_cells(_runs(rows), pairs[:1], published, datasets=("eurosat", "dtd", "ucf101"))
    assert all(c.published is None for c in partial if c.dataset == "average")


# -- the cost ---------------------------------------------------------------------------------


def test_cost_is_measured_or_unknown(tmp_path: Path) -> None:
    plan = load_plan(REPO / "sweeps" / "baselines.yaml")
    trained = next(t for t in plan.trials if t.method == "ivlp_reg" and t.dataset == "eurosat")
    zeroshot = next(t for t in plan.trials if t.method == "zeroshot")
    assert trial_cost(trained, plan, Calibration()).unknown == 1
    assert trial_cost(zeroshot, plan, Calibration()) == Cost()
    csv = tmp_path / "epochs.csv"
    csv.write_text(
        "method,dataset,backbone,epoch_seconds,source\n"
        "ivlp_reg,eurosat,ViT-B-16-quickgelu,36,H100 gpu_check.sh 2026-12-01\n"
    )
    calibration = Calibration(benchmark=read_benchmark_csv(csv))
    cost = trial_cost(trained, plan, calibration)
    epochs = trained.config["optim"]["epochs"]
    assert cost.trial_hours == pytest.approx(epochs * 36 / 3600)
    assert cost.gpu_hours == pytest.approx(epochs * 36 / 3600 * 0.5)  # resources default gpu 0.5
    assert "H100 gpu_check.sh" in cost.text()
    ledger_first = Calibration(
        ledger={("ivlp_reg", "eurosat", "ViT-B-16-quickgelu"): 72.0}, benchmark=calibration.benchmark
    )
    assert ledger_first.lookup("ivlp_reg", "eurosat", "ViT-B-16-quickgelu") == EpochTime(72.0, "ledger")


def test_a_bad_calibration_file_is_one_error_naming_it(tmp_path: Path) -> None:
    csv = tmp_path / "epochs.csv"
    csv.write_text("method,dataset,backbone,epoch_seconds,source\nivlp,eurosat,x,-1,here\n")
    result = CliRunner().invoke(
        main,
        [
            "reproduce",
            str(CAMPAIGN),
            "--dry-run",
            "--calibration",
            str(csv),
            "--output",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 2 and str(csv) in result.output and "row 2" in result.output


def test_plan_counts_each_shared_sweep_once(tmp_path: Path) -> None:
    data = {
        "tables": [
            {"name": "a", "kind": "base2new", "sweeps": ["demo"]},
            {"name": "b", "kind": "ablation", "sweeps": ["demo"]},
        ]
    }
    plan = plan_campaign(read_campaign(_write_campaign(tmp_path, data)), output=tmp_path / "out")
    a, b = plan.tables
    assert a.total == load_plan(REPO / "sweeps" / "demo.yaml").total and b.total == 0
    assert b.shared == ("demo",)
    assert not (tmp_path / "out").exists()


# -- the report -------------------------------------------------------------------------------


def _finished_run(client, experiment: str, trial, metrics: dict[str, float]) -> str:
    from orchestration.ledger.vocabulary import IDENTITY_TAGS, TRIAL_KEY_TAG

    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    identity = {
        "method": trial.method,
        "dataset": trial.dataset,
        "protocol": trial.protocol,
        "shots": trial.shots,
    }
    tags = {IDENTITY_TAGS[k]: str(v) for k, v in {**identity, "seed": trial.seed}.items()}
    run = client.create_run(experiment_id, tags={**tags, TRIAL_KEY_TAG: trial.key})
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def test_a_transfer_table_counts_the_source_model_another_sweep_trained(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from orchestration.campaign.report import build_table_result, sweep_runs
    from orchestration.layout import default_tracking_uri

    sweeps = tmp_path / "sweeps"
    sweeps.mkdir()
    for name, protocol in (("dg", "domain_generalization"), ("xd", "cross_dataset")):
        spec = {
            "name": name,
            "protocol": protocol,
            "overrides": {"backbone.name": "tiny-test", "backbone.pretrained": None},
            "grid": {"method": ["prometar"], "dataset": ["imagenet"], "seed": [1, 2], "shots": [16]},
        }
        (sweeps / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    tables = [
        {"name": "dg", "kind": "domain_generalization", "sweeps": ["dg"]},
        {"name": "xd", "kind": "cross_dataset", "sweeps": ["xd"], "after": ["dg"]},
    ]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"sweeps_folder": "sweeps", "tables": tables}, sort_keys=False))
    campaign = read_campaign(path)
    output = tmp_path / "out"
    output.mkdir()
    uri = default_tracking_uri(output)
    client = MlflowClient(uri)
    dg, xd = (load_plan(sweeps / f"{n}.yaml") for n in ("dg", "xd"))
    assert [t.key for t in dg.sources] == [t.key for t in xd.sources]  # one source model per seed
    sources = {_finished_run(client, "dg", t, {"acc/imagenet": 70.0 + t.seed}) for t in dg.sources}
    for trial in xd.trials:
        if not trial.is_source:  # the evaluations report the source accuracy beside their targets
            metrics = {"acc/imagenet": 70.0 + trial.seed, "acc/eurosat": 40.0 + trial.seed}
            _finished_run(client, "xd", trial, metrics)

    plan = plan_campaign(campaign, output=output)
    xd_table = plan.tables[1]
    assert xd_table.table.name == "xd" and xd_table.done == xd_table.total == 4
    found = sweep_runs(plan, "xd", uri)
    assert sources <= set(found.runs["run_id"]) and set(found.trial_keys.values()) >= {
        t.key for t in xd.sources
    }
    result = build_table_result(plan, xd_table.table, uri)
    assert result.runs == 4  # two evaluations and the two source models the other sweep trained
    [source] = [c for c in result.cells if c.metric == "acc/imagenet"]
    assert source.ours.n == 2 and source.ours.mean == pytest.approx(71.5)  # one value per seed


def test_report_escapes_every_value_and_states_each_verdict() -> None:
    table = CampaignTable(name="t", kind="base2new", title="<script>x</script>", sweeps=("s",))
    ours = Estimate(70.0, 69.0, 71.0, 3)
    cell = Cell(
        method="prometar",
        dataset="eurosat",
        shots=16,
        setting="",
        metric="hm",
        ours=ours,
        published=PublishedValue(
            method="prometar", dataset="eurosat", metric="hm", value=75.0, source="<b>T1</b>"
        ),
        verdict=judge_cell(ours, 75.0),
    )
    result = TableResult(table=table, rendered=(), cells=(cell,), verdict=judge_table([cell.verdict]), runs=3)
    report = Reproduction(
        "c",
        "d",
        (result,),
        (("precision <fp16>", "README"),),
        "",
        "",
        {REPRODUCED: 0, NOT_REPRODUCED: 1, NOT_COMPARABLE: 0},
    )
    page = render_html(report)
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;T1&lt;/b&gt;" in page
    assert "not reproduced (by 4.00)" in page and "0 of 1 comparable cells reproduced" in page
    markdown = render_markdown(report)
    assert "## &lt;script&gt;x&lt;/script&gt;" in markdown and "<script>" not in markdown
    assert "| ProMetaR | EuroSAT | 16 |  | hm | 70.00 [69.00, 71.00] (n=3) | 75.00 |" in markdown
