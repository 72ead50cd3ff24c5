"""The benchmark harness: everything the entry points in benchmarks/ share.

- :mod:`.score`: the one scorer, :func:`~.score.score_run`, a run folder on draws of a split
  through ``tbcm eval`` (the judge follows the model: digits classifier, scenes judge), with the
  teacher as copied, fidelity to it and the data floor; the teacher at its best chosen once per
  teacher (:func:`~.score.teacher_best_record`) and scored on the reported draws
  (:func:`~.score.score_teacher`);
- :mod:`.suites`: the pinned suites, whole configs in ``benchmarks/suites/``;
- :mod:`.runner`: train a suite on given seeds (checkpoints every N steps for a curve) and turn
  checkpoints into scorable student folders;
- :mod:`.store`: the results store (JSON lines, a manifest per record);
- :mod:`.tables`: the markdown tables report.py prints from the store.

The tune and confirm seeds and draws are ``tbcm.evaluation.splits``, the one definition of them.
"""
