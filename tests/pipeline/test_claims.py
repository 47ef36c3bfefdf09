"""Trial keys are claimed in the ledger before trials run: two launches that share one ledger never
run the same key (a SQLite MLflow store; no Ray)."""

from __future__ import annotations

from pathlib import Path

from orchestration.ledger.store import TrialLedger
from orchestration.ledger.vocabulary import CLAIM_KEY_TAG, FINISHED, PARENT_TAG, TRIAL_KEY_TAG

KEYS = ["k1", "k2", "k3", "k4"]


def ledgers(tmp_path: Path, count: int) -> list[tuple[TrialLedger, str]]:
    """``count`` launches of sweep ``demo`` on one SQLite ledger, each with its live parent run."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = []
    for _ in range(count):
        ledger = TrialLedger(uri, "demo")
        ledger.check_reachable()
        out.append((ledger, ledger.start_launch({})))
    return out


def test_launches_claiming_at_the_same_time_hold_each_key_once(tmp_path: Path) -> None:
    """Both launches create their claims before either reads them back: each key has one holder."""
    (a, parent_a), (b, parent_b) = ledgers(tmp_path, 2)
    staked_a = a.stake(KEYS, parent_a)
    staked_b = b.stake(KEYS[1:], parent_b)
    claims_a, claims_b = a.settle(staked_a), b.settle(staked_b)
    assert set(claims_a.held) | set(claims_b.held) == set(KEYS)
    assert not set(claims_a.held) & set(claims_b.held)
    assert set(claims_b.elsewhere) == set(KEYS[1:]) - set(claims_b.held)
    assert a.statuses() == {}  # a claim is not a trial's record


def test_a_later_launch_gets_no_key_a_live_launch_holds(tmp_path: Path) -> None:
    (a, parent_a), (c, parent_c) = ledgers(tmp_path, 2)
    claims_a = a.claim(KEYS, parent_a)
    assert set(claims_a.held) == set(KEYS)
    claims_c = c.claim(KEYS, parent_c)
    assert claims_c.held == {} and set(claims_c.elsewhere) == set(KEYS)
    assert all("pid" in holder for holder in claims_c.elsewhere.values())
    a.release(claims_a.held)
    assert set(c.claim(KEYS, parent_c).held) == set(KEYS)


def test_a_dead_launchs_claims_are_ignored_and_cleared(tmp_path: Path) -> None:
    (a, parent_a), (c, parent_c) = ledgers(tmp_path, 2)
    a.claim(KEYS, parent_a)
    a.end_run(parent_a, FINISHED)  # the launch ended without releasing (killed): not live any more
    assert set(c.claim(KEYS, parent_c).held) == set(KEYS)
    assert c.close_stale_runs() == 0  # its claim runs are deleted, not recorded as KILLED trials
    claims = [r for r in c.runs() if r.data.tags.get(CLAIM_KEY_TAG)]
    assert sorted(r.data.tags[CLAIM_KEY_TAG] for r in claims) == KEYS  # only the live launch's
    assert {r.data.tags[PARENT_TAG] for r in claims} == {parent_c}


def test_a_key_finished_meanwhile_is_not_held(tmp_path: Path) -> None:
    ((a, parent_a),) = ledgers(tmp_path, 1)
    experiment = a.experiment_id(create=True)
    run = a.client.create_run(experiment, tags={TRIAL_KEY_TAG: "k2"})
    a.client.set_terminated(run.info.run_id, FINISHED)
    claims = a.claim(KEYS, parent_a)
    assert claims.finished == {"k2"}
    assert set(claims.held) == {"k1", "k3", "k4"}
