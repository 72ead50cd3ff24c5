"""The golden run (tests/golden): 20 steps of the embedded default recipe, alone and with each
optional loss term, give the metrics and student weights recorded before the trainer's redesign.

Any change to the training maths shows here. A deliberate change (a new teacher, a new recipe)
re-records with ``python -m tests.golden.golden_run record`` in the commit that makes it.
"""

import json
import math

import pytest

from tests.golden.golden_run import CASES, GOLDEN, run_case

RECORDED = json.loads(GOLDEN.read_text())


def _close(a: float, b: float, rel: float = 1e-5) -> bool:
    # the same maths on another CPU's vector width rounds differently in the last bits
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= rel * max(abs(a), abs(b), 1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_run_is_unchanged(case, tmp_path):
    got, want = run_case(case, tmp_path / case), RECORDED[case]
    assert len(got["metrics"]) == len(want["metrics"]) == 20
    for row, ref in zip(got["metrics"], want["metrics"]):
        assert set(row) == set(ref), (case, sorted(set(row) ^ set(ref)))
        bad = {k: (row[k], ref[k]) for k in ref if not _close(row[k], ref[k])}
        assert not bad, (case, int(ref["step"]), bad)
    assert set(got["weight_sums"]) == set(want["weight_sums"])
    for key, (total, absolute) in want["weight_sums"].items():
        assert _close(got["weight_sums"][key][1], absolute, 1e-5), (case, key)
        # a signed sum can cancel to ~0: compare it on the scale of the absolute sum
        assert abs(got["weight_sums"][key][0] - total) <= 1e-5 * max(absolute, 1e-6), (case, key)
