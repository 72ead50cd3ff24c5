"""The benchmark harness: everything the entry points in benchmarks/ share.

- :mod:`.splits`: tune and confirm training seeds and evaluation draws (to be replaced by
  ``tbcm.evaluation.splits``);
- :mod:`.score`: the one scorer, :func:`~.score.score_run`, a run folder on draws of a split
  through ``tbcm eval`` (the judge follows the model: digits classifier, scenes judge);
- :mod:`.suites`: the pinned suites, whole configs in ``benchmarks/suites/``;
- :mod:`.runner`: train a suite on given seeds (checkpoints every N steps for a curve) and turn
  checkpoints into scorable student folders;
- :mod:`.store`: the results store (JSON lines, a manifest per record);
- :mod:`.tables`: the markdown tables report.py prints from the store.
"""
