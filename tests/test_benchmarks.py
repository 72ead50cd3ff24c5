"""The benchmark harness and a smoke of each entry point on the tiny teacher (seconds, not minutes).

One module-scoped pipeline runs every entry point once into one results store (quality, then the
sampler on the same tune run, curves, cost), on the tiny teacher of tests/conftest.py; the tests
read that store: the manifests, each table's records, and that report.py prints the same text twice.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from pathlib import Path

import pytest
import yaml

from benchmarks import cost, curves, lora_memory, quality, report, sampler, tune_sampler
from tbcm.evaluation import splits
from benchmarks.harness import score, tables
from benchmarks.harness.score import mean_of, score_run
from benchmarks.harness.store import MANIFEST_KEYS, ROOT, Store
from benchmarks.harness.suites import SUITES_DIR, load_suite, suite_names
from tbcm.config import DistillConfig, _all_keys
from tbcm.models.bundle import Bundle, ModelMeta, save_bundle
from tests.conftest import tiny_encoder, tiny_network

NAME = "tiny"


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Every entry point's smoke, once, into one store: ``(store, teacher dir, runs dir, capsys-free)``.
    The teacher is tests/conftest.py's tiny teacher (as ``tiny_teacher_dir`` builds it), here shared
    by the whole module so the pipeline runs once."""
    root = tmp_path_factory.mktemp("bench")
    net, enc = tiny_network(), tiny_encoder()
    meta = ModelMeta(kind="teacher", sigma_d=0.5, channels=1, image_size=8, network=net.config.to_dict(),
                     prompt_encoder=enc.config())
    teacher = save_bundle(Bundle(meta, net, enc), root / "teacher")
    store, runs = root / "store", root / "runs"
    common = ["--smoke", "--store", str(store), "--set", f"teacher={teacher}"]
    where = [*common, "--runs", str(runs), "--name", NAME]
    assert quality.main([*where, "--steps", "1,2"]) == 0  # tune: the teacher's tiny grid runs here, once
    # confirm: two seeds, two draws; the teacher's best is found in the store, not chosen again; the
    # seeds trained by two calls (--skip-seeds, as processes side by side do) make one row
    confirm = [*where, "--split", "confirm", "--draws", "2", "--steps", "1,2,4"]
    assert quality.main([*confirm, "--seeds", "1"]) == 0
    assert quality.main([*confirm, "--skip-seeds", "1", "--seeds", "1", "--no-best"]) == 0
    assert sampler.main([*where, "--steps", "2", "--fresh", "0.5,1"]) == 0
    # --eval-device: the scoring device passed through (auto is the CPU here)
    assert curves.main([*where, "--steps", "1", "--png", str(root / "curves.png"), "--eval-device", "auto"]) == 0
    assert cost.main([*common, "--same-process"]) == 0
    return Store(store), teacher, runs, root


def _check_manifest(m: dict, script: str) -> None:
    assert set(m) == set(MANIFEST_KEYS)
    assert re.fullmatch(r"[0-9a-f]{40}", m["git_commit"]) and isinstance(m["git_dirty"], bool)
    assert m["command"].startswith(f"python benchmarks/{script} --smoke")
    assert {"cpu", "cores", "torch", "python", "platform"} <= set(m["machine"]) and m["machine"]["cores"] >= 1
    assert datetime.datetime.fromisoformat(m["date"]).tzinfo is not None


def _whole(config: dict) -> set[str]:
    keys = set()

    def walk(tree, prefix=""):
        for k, v in tree.items():
            keys.add(prefix + k)
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
    walk(config)
    return keys


def _quality(store: Store, kind: str, split: str | None = None) -> list[dict]:
    return [r for r in store.latest("quality") if r["kind"] == kind and split in (None, r["split"])]


def test_the_manifest_names_the_commit_the_sender_gives_over_the_local_git(monkeypatch):
    # a lent GPU machine's copy may carry an older .git than the tree sent: the sender's commit wins
    from benchmarks.harness.store import manifest

    local = manifest(["x"])
    assert re.fullmatch(r"[0-9a-f]{40}", local["git_commit"])
    monkeypatch.setenv("TBCM_GIT_COMMIT", "4e640fb")
    assert (manifest(["x"])["git_commit"], manifest(["x"])["git_dirty"]) == ("4e640fb", False)
    monkeypatch.setenv("TBCM_GIT_DIRTY", "1")
    assert manifest(["x"])["git_dirty"] is True


def test_quality_stores_each_student_and_the_teacher_with_a_manifest(bench):
    store, teacher, runs, _ = bench
    rows = store.latest("quality")
    assert [(r["kind"], r["split"]) for r in rows] == [
        ("student", "tune"), ("teacher_best", "tune"), ("teacher", "tune"),
        ("student", "confirm"), ("teacher", "confirm"), ("student", "confirm")]
    for r in rows:
        _check_manifest(r["manifest"], "quality.py")
        config = r["manifest"]["config"]
        assert _whole(config) == set(_all_keys(DistillConfig))  # the resolved full config, every key
        assert config["teacher"] == str(teacher) and config["seed"] == splits.train_seeds(r["split"])[0] \
            or r["kind"] == "student"
    (student,) = _quality(store, "student", "tune")
    assert student["label"] == f"{NAME} (smoke)" and student["split"] == "tune" and student["smoke"]
    assert student["train_seed"] == 100 and Path(student["run"]).is_relative_to(runs)
    assert student["manifest"]["config"]["seed"] == 100 and student["training"]["steps"] == 6
    score = student["score"]
    assert score["seeds"] == [splits.draw_seed("tune", 0)] and score["n_per_class"] == 2
    assert set(score["student"]) == {"1", "2"} and score["sampler"]["cfg_scale"] == 3.0  # the suite's saved sampler
    assert score["per_draw"][0]["seed"] == splits.draw_seed("tune", 0) and score["per_draw"][0]["split"] == "tune"
    # evaluate's new entries: fidelity per step count, the teacher as copied, the data floor
    assert set(score["fidelity"]) == {"1", "2"}
    assert {"latent_mse", "feature_distance", "label_agreement", "fid_to_teacher"} <= set(score["fidelity"]["1"])
    copied = score["teacher_as_copied"]
    assert (copied["steps"], copied["shift"], copied["cfg"], copied["guidance_interval"]) == (16, 2.5, 3.0, [0.0, 0.5])
    assert score["data_floor"]["images"] == 20 and score["data_floor"]["fid"] > 0


def test_confirm_stores_each_seeds_draws_and_the_means(bench):
    store, *_ = bench
    students = _quality(store, "student", "confirm")
    assert [r["train_seed"] for r in students] == list(splits.train_seeds("confirm")[:2])
    for r in students:
        s = r["score"]
        assert s["draws"] == [0, 1] and s["seeds"] == [splits.draw_seed("confirm", d) for d in (0, 1)]
        assert [p["draw"] for p in s["per_draw"]] == [0, 1] and set(s["student"]) == {"1", "2", "4"}
        for k in ("1", "4"):  # the means over the draws of each draw's scores
            assert s["student"][k]["fid"] == pytest.approx(sum(p["student"][k]["fid"] for p in s["per_draw"]) / 2)
            assert s["fidelity"][k]["latent_mse"] == pytest.approx(
                sum(p["fidelity"]["steps"][k]["latent_mse"] for p in s["per_draw"]) / 2)
            bands = [p["fidelity"]["steps"][k]["spectrum_ratio"] for p in s["per_draw"]]
            assert bands[0] != bands[1]  # two draws, two spectra: their mean is kept, band by band
            assert s["fidelity"][k]["spectrum_ratio"] == pytest.approx([(a + b) / 2 for a, b in zip(*bands)])
            # the digits network's 2-pixel patch grid: the block ratio is measured beside the spectrum
            assert all(p["fidelity"]["steps"][k]["block_ratio"] > 0 for p in s["per_draw"])
        assert s["teacher_as_copied"]["fid"] == pytest.approx(
            sum(p["teacher_as_copied"]["fid"] for p in s["per_draw"]) / 2)


def test_the_confirm_table_shows_each_band_and_judges_the_spectrum_target_band_by_band(bench):
    store, *_ = bench
    records = [json.loads(json.dumps(r)) for r in store.latest("quality")]  # a copy to edit
    students = [r for r in records if r["kind"] == "student" and r["split"] == "confirm"]
    label = students[0]["label"]
    assert len(students) == 2 and all(r["label"] == label for r in students)

    def table(per_seed_bands):
        for r, b in zip(students, per_seed_bands):
            r["score"]["fidelity"]["1"]["spectrum_ratio"] = b
        return next(line for line in tables.quality_section(records, label, "confirm").splitlines()
                    if line.startswith("| 1 step: spectrum ratio"))

    inside = table([[1.0, 0.9, 1.1, 1.2], [1.02, 0.92, 1.12, 1.18]])
    assert inside.endswith("| met |") and "1.00 0.90 1.10 1.20; 1.02 0.92 1.12 1.18" in inside
    assert table([[1.0, 0.9, 1.1, 1.3], [1.02, 0.92, 1.12, 1.4]]).endswith("| not shown |")  # a top band over 1.25
    assert table([[1.0, 0.75, 1.1, 1.2], [1.02, 0.85, 1.12, 1.2]]).endswith("| not shown |")  # 0.8 within one SE


def test_without_a_teacher_record_the_table_takes_the_as_copied_scores_only_when_they_are_the_chosen_best(bench):
    # quality.py stopped before scoring the teacher (a lent machine's time limit): when the chosen
    # best is the as-copied setting, the students' as-copied scores are the same images' scores
    store, *_ = bench
    records = [json.loads(json.dumps(r)) for r in store.latest("quality")
               if not (r["kind"] == "teacher" and r["split"] == "confirm")]
    (choice,) = [r for r in records if r["kind"] == "teacher_best"]
    student = next(r for r in records if r["kind"] == "student" and r["split"] == "confirm")
    copied = score.teacher_as_copied(student["score"])

    def lines(setting):
        choice["setting"] = setting
        return tables.quality_section(records, student["label"], "confirm").splitlines()

    same = lines(dict(copied["setting"]))
    row = next(line for line in same if line.startswith("| teacher at its best |"))
    assert f"| {copied['mean']['fid']:.2f} |" in row and "| 1.00x |" in row
    assert any(line.startswith("- Teacher at its best:") for line in same)
    other = lines({**copied["setting"], "steps": copied["setting"]["steps"] + 1})
    assert not any(line.startswith("| teacher at its best |") for line in other)
    assert any("no teacher at its best" in line for line in other)


def test_mean_of_averages_numbers_and_lists_of_numbers_over_draws():
    draws = [{"fid": 1.0, "fid_se": 0.1, "spectrum_ratio": [1.0, 2.0], "interval": [0.0, 0.5], "judge": "digits",
              "mixed": [1, "a"], "ragged": [1.0], "seen": {"fid": 2.0}},
             {"fid": 3.0, "fid_se": 0.3, "spectrum_ratio": [2.0, 4.0], "interval": [0.0, 0.5], "judge": "digits",
              "mixed": [2, "a"], "ragged": [1.0, 2.0], "seen": {"fid": 4.0}}]
    assert mean_of(draws) == {"fid": 2.0, "spectrum_ratio": [1.5, 3.0], "interval": [0.0, 0.5], "judge": "digits",
                              "seen": {"fid": 3.0}}  # no SE, and lists that are not one length of numbers go


def test_the_teachers_best_is_chosen_once_on_a_tune_draw_and_scored_on_each_reported_draw(bench):
    store, *_ = bench
    (choice,) = [r for r in store.read("quality") if r["kind"] == "teacher_best"]  # one grid run, reused by confirm
    assert choice["tune"]["draw"] == 0 and choice["tune"]["seed"] == splits.draw_seed("tune", 0)
    assert choice["tune"]["n_per_class"] == 2 and choice["grid"]["steps"] == [2]
    # the tiny grid: 2 steps at shifts 1 and 2.5 unguided, then the teacher as copied
    assert [(t["steps"], t["shift"], t["cfg"]) for t in choice["tried"]] == \
        [(2, 1.0, 1.0), (2, 2.5, 1.0), (16, 2.5, 3.0)]
    assert choice["tune"]["fid"] == min(t["fid"] for t in choice["tried"])
    tune, confirm = _quality(store, "teacher", "tune")[0], _quality(store, "teacher", "confirm")[0]
    assert tune["best_key"] == confirm["best_key"] == choice["key"]
    for t in (tune, confirm):
        assert t["at_best"]["setting"] == choice["setting"]
    # the harness's scoring of the chosen setting gives evaluate's numbers on the draw it was chosen on
    assert tune["at_best"]["per_draw"][0]["fid"] == pytest.approx(choice["tune"]["fid"], rel=1e-6)
    assert confirm["at_best"]["seeds"] == [splits.draw_seed("confirm", d) for d in (0, 1)]
    assert confirm["at_best"]["mean"]["fid"] == pytest.approx(sum(p["fid"] for p in confirm["at_best"]["per_draw"]) / 2)
    # the teacher as copied on the same draws: what evaluate scored beside every confirm student
    for r in _quality(store, "student", "confirm"):
        assert [p["fid"] for p in confirm["as_copied"]["per_draw"]] == \
            [p["teacher_as_copied"]["fid"] for p in r["score"]["per_draw"]]


def test_a_finished_run_is_not_trained_again_and_scores_the_same(bench):
    store, teacher, runs, _ = bench
    student = _quality(store, "student", "tune")[0]
    run = Path(student["run"])
    before = (run / "metrics.csv").stat().st_mtime_ns
    assert quality.main(["--smoke", "--store", str(store.root), "--runs", str(runs), "--name", NAME,
                         "--set", f"teacher={teacher}", "--steps", "1,2"]) == 0
    assert (run / "metrics.csv").stat().st_mtime_ns == before
    again = _quality(store, "student", "tune")[0]  # the same key: the new record replaces the old in latest()
    assert again["score"]["student"] == student["score"]["student"]
    assert len(store.read("quality")) == 8  # a student and its suite's teacher record more
    assert len([r for r in store.read("quality") if r["kind"] == "teacher_best"]) == 1  # the grid did not run again


def test_sampler_scores_each_setting_on_the_tune_runs(bench):
    store, *_ = bench
    rows = store.latest("sampler")
    assert [r["setting"]["fresh_noise"] for r in rows] == [0.5, 1.0]
    assert all(r["split"] == "tune" and r["per_run"][0]["train_seed"] == 100 for r in rows)
    for r in rows:
        _check_manifest(r["manifest"], "sampler.py")
    # the saved sampler (fresh noise 0.5) is what quality.py scored; the other share samples otherwise
    assert rows[0]["per_run"][0]["student"]["2"] == store.latest("quality")[0]["score"]["student"]["2"]
    assert rows[1]["per_run"][0]["student"]["2"] != rows[0]["per_run"][0]["student"]["2"]


def test_curves_score_every_checkpoint_and_plot(bench):
    store, _, _, root = bench
    (row,) = store.latest("curves")
    _check_manifest(row["manifest"], "curves.py")
    assert [p["step"] for p in row["points"]] == [3, 6] and row["manifest"]["config"]["checkpoint_every"] == 3
    assert all(set(p["student"]) == {"1"} and p["seconds"] > 0 for p in row["points"])
    assert (root / "curves.png").stat().st_size > 0
    # --fidelity (the default): each point's fidelity to the teacher as copied, the spectrum per band
    assert row["fidelity"] and row["teacher_as_copied"]["steps"] == 16 and row["teacher_as_copied"]["fid"] > 0
    for p in row["points"]:
        f = p["fidelity"]["1"]
        assert {"latent_mse", "label_agreement", "fid_to_teacher"} <= set(f) and f["latent_mse"] > 0
        assert len(f["spectrum_ratio"]) == 4 and all(b > 0 for b in f["spectrum_ratio"])
    assert row["points"][0]["fidelity"] != row["points"][1]["fidelity"]
    # the last checkpoint's student is the run's own final student; the teacher's samples kept across
    # the checkpoints give what sampling them afresh gives
    final = score_run(Path(row["run"]), "tune", [0], (1,), 2, teacher=True)
    assert final["student"]["1"]["fid"] == pytest.approx(row["points"][-1]["student"]["1"]["fid"])
    _close(final["fidelity"]["1"], row["points"][-1]["fidelity"]["1"])
    _close(final["teacher_as_copied"], row["teacher_as_copied"])


def _close(a, b) -> None:
    """``a`` and ``b`` the same up to float rounding, through dicts and lists."""
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            _close(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _close(x, y)
    else:
        assert a == pytest.approx(b, rel=1e-6)


def test_curves_without_fidelity_and_old_records_still_render(bench, tmp_path):
    store, teacher, runs, _ = bench
    old = Store(tmp_path / "store")
    assert curves.main(["--smoke", "--store", str(old.root), "--set", f"teacher={teacher}", "--runs", str(runs),
                        "--name", NAME, "--steps", "1", "--no-fidelity", "--png", str(tmp_path / "c.png")]) == 0
    (row,) = old.latest("curves")
    assert not row["fidelity"] and "teacher_as_copied" not in row and (tmp_path / "c.png").stat().st_size > 0
    assert all("fidelity" not in p for p in row["points"])  # the trained run was scored again, students alone
    (new,) = store.latest("curves")
    assert [p["student"] for p in row["points"]] == [p["student"] for p in new["points"]]
    text = report.render(old, smoke=True).split("## FID against training steps")[1].split("\n## ")[0]
    assert "| training step | seconds | 1 step |\n|---|---|---|\n| 3 |" in text and "latent MSE" not in text
    # a record made before points had fidelity (no "fidelity" key at all) beside a new one of another seed:
    # the fidelity columns are the new seed's means, FID the mean of both
    before = {k: v for k, v in row.items() if k != "fidelity"} | {"train_seed": 999}
    mixed = tables.curves_section([new, before], new["label"], "tune")
    fid = (new["points"][0]["student"]["1"]["fid"] + before["points"][0]["student"]["1"]["fid"]) / 2
    f = new["points"][0]["fidelity"]["1"]
    assert (f"| 3 | {(new['points'][0]['seconds'] + before['points'][0]['seconds']) / 2:.0f} | {fid:.2f} | "
            f"{f['latent_mse']:.3g} | {f['spectrum_ratio'][-1]:.2f} |") in mixed


def test_cost_compares_the_variants_in_one_run(bench):
    store, *_ = bench
    (row,) = store.latest("cost")
    _check_manifest(row["manifest"], "cost.py")
    names = [v["name"] for v in row["variants"]]
    assert names == ["tbcm_pool", "tbcm_rollout", "scm_forward"] and set(row["manifest"]["config"]) == set(names)
    configs = row["manifest"]["config"]
    assert configs["scm_forward"]["source"] == "forward" and configs["tbcm_rollout"]["pairs"]["pool_prompts"] == 0
    assert all(v["ms_per_step"] > 0 and v["pairs_per_step"] > 0 for v in row["variants"])


def test_cost_plan_prints_the_memory_arithmetic(capsys):
    assert cost.main(["--plan", "--gpus", "8"]) == 0
    out = capsys.readouterr().out
    assert "| Sana 0.6B | 8 | 12.0 | 1.50 | 1.2 | 5.2 |" in out


def test_lora_memory_smoke_records_both_students_and_lora_trains_far_fewer_parameters(tmp_path):
    # depth 1, 256 px, a narrow Sana (width 128) so the two fresh processes take seconds
    assert lora_memory.main(["--smoke", "--width", "128", "--cases", "full,lora8", "--store", str(tmp_path),
                             "--write-results"]) == 0
    store = Store(tmp_path)
    (row,) = store.latest(lora_memory.STORE_TABLE)
    _check_manifest(row["manifest"], "lora_memory.py")
    assert row["smoke"] and row["settings"]["depth"] == 1 and row["settings"]["px"] == 256
    full, lo = row["cases"]["full"], row["cases"]["lora8"]
    for c in (full, lo):
        assert "error" not in c, c
        for key in ("params_teacher", "params_trainable", "held_mb", "peak_rss_mb", "peak_rise_mb",
                    "rss_before_build_mb", "optimizer_state_mb", "ema_mb"):
            assert c[key] > 0, (key, c)
        assert c["peak_rss_mb"] >= c["rss_before_build_mb"]
    assert full["params_teacher"] == lo["params_teacher"]
    assert full["params_trainable"] == full["params_student"] > full["params_teacher"]  # + guidance embedder, logvar
    assert lo["params_trainable"] < 0.25 * full["params_trainable"] and lo["adapted_layers"] > 0
    assert lo["held_mb"] < full["held_mb"]  # the base is the teacher's storage, held once
    text = report.render(store, smoke=True)
    assert lora_memory.HEADING in text and "| lora8 / full |" in text
    assert lora_memory.HEADING in report.render(store) and "Not measured yet" in report.render(store)


def test_start_angles_sample_1_step_from_each_angle_and_pi_2_is_the_students_own_1_step(bench, tmp_path):
    import torch

    from tbcm.evaluation.draws import Encodings, ImageDraw, sample_draw, teacher_fn
    from tbcm.evaluation.splits import draw_seed
    from tbcm.evaluation.teachers import copied_setting
    from tbcm.models.bundle import load_bundle
    from tbcm.models.student import Student
    from tbcm.models.teacher import Teacher
    from tbcm.sampler import StudentSampler
    from tbcm.sampler_tuning import score

    _, teacher_dir, runs, _ = bench
    run = sorted(runs.glob("*/tune_s100_*"))[0]
    store = tmp_path / "store"
    assert tune_sampler.main(["start", str(run), "--images", "20", "--store", str(store)]) is None
    rec = Store(store).latest("tune_sampler")[0]
    assert rec["mode"] == "start" and [r["start"] for r in rec["starts"]] == list(tune_sampler.START_ANGLES)
    # pi/2 is the student's saved 1-step sampler: the same paired error, computed through it
    bundle = load_bundle(run / "student", expect_kind="student", text_cache=None)
    student, sampler = Student.from_bundle(bundle).eval(), StudentSampler.from_extra(bundle.meta.extra)
    prompts = [f"a handwritten digit {k}" for k in range(10)]
    draw, shape = ImageDraw(tuple(prompts), 2, draw_seed("tune", 0)), (1, 8, 8)
    teacher = Teacher.from_bundle(load_bundle(teacher_dir, expect_kind="teacher", text_cache=None))
    setting = copied_setting(sampler, sampler.cfg_scale)
    with torch.no_grad():
        t_x0 = sample_draw(draw, teacher_fn(teacher, setting.route(), setting.cfg, setting.interval),
                           Encodings(prompts, teacher.encoder), shape)
        s_x0 = sample_draw(draw, lambda c, z, g: sampler.sample(student, c, z, 1, generator=g),
                           Encodings(prompts, bundle.encoder), shape)
    rows = rec["starts"]
    assert rows[0]["paired"] == pytest.approx(score(s_x0, t_x0, 0.5), rel=1e-5)
    assert rows[-1]["paired"] != pytest.approx(rows[0]["paired"], rel=1e-3)  # another angle, another sample
    assert all(len(r["spectrum"]) == 4 and all(v > 0 for v in r["spectrum"]) for r in rows)
    text = report.render(Store(store), smoke=True)
    assert "| start angle (rad) | FID | paired error |" in text and f"| {rows[0]['fid_data']:.2f} |" in text


def test_report_prints_the_same_text_from_the_same_store(bench, tmp_path):
    store, teacher, runs, _ = bench
    first, second = tmp_path / "a.md", tmp_path / "b.md"
    for out in (first, second):
        assert report.main(["--store", str(store.root), "--smoke", "--write", str(out)]) == 0
    text = first.read_text()
    assert text == second.read_text() == report.render(store, smoke=True, doc=first.resolve())
    for needle in (f"**{NAME} (smoke)**, tune split", f"**{NAME} (smoke)**, confirm split", "| teacher at its best |",
                   "| teacher as copied | 16 |", "| data floor (real images) | - |",
                   "FID / teacher at its best (headline) | FID / teacher as copied |",
                   "| latent MSE (paired) | label agreement | FID to the teacher's samples |",
                   "| 1 step: FID <= 1.3x the teacher at its best |",
                   "| 4 steps: FID <= 1.1x the teacher at its best |",
                   "| 2 steps below 1 step by more than one SE", "| 4 steps below 2 steps by more than one SE",
                   "chosen once on tune draw 0 (2 images per digit", "Tune split: no verdicts",
                   "| w | shift | fresh noise |",
                   "| training step | seconds | FID, 1 step | latent MSE, 1 step | top band, 1 step |",
                   "Teacher as copied (16 steps, route shift 2.5, guidance 3 in (0, 0.5] rad): FID",
                   "| tbcm_pool | digits_default |"):
        assert needle in text
    # every number comes from the store: the 1-step row of the confirm table, recomputed from its records
    students = _quality(store, "student", "confirm")
    best = _quality(store, "teacher", "confirm")[0]["at_best"]["mean"]["fid"]
    fids = [r["score"]["student"]["1"]["fid"] for r in students]
    ratios = [f / best for f in fids]
    s, r = splits.summarize(fids), splits.summarize(ratios)
    row = f"| student | 1 | {s.mean:.2f} ± {s.se:.2f} | {fids[0]:.2f} / {fids[1]:.2f} | {r.mean:.2f} ± {r.se:.2f}x |"
    assert row in text
    assert f"| {ratios[0]:.2f} / {ratios[1]:.2f} | {r.mean:.2f} ± {r.se:.2f} | {splits.verdict(ratios, 1.3)} |" in text
    assert str(runs.parent) not in text and "/tmp" not in text  # no path outside the repository
    # smoke rows stay out of docs/results.md: without --smoke the store reads as not measured
    assert "not measured yet under the tune/confirm protocol" in report.render(store, smoke=False)
    assert f"{NAME} (smoke)" not in report.render(store, smoke=False)


def test_docs_results_md_is_the_report_of_the_repositorys_store():
    doc = ROOT / "docs" / "results.md"
    assert doc.read_text() == report.render(Store(), doc=doc), \
        "docs/results.md is generated: python benchmarks/report.py --write docs/results.md"
    assert not re.search(r"(?<![\w.:/])/(?:work|tmp|root|home)/", doc.read_text())


@pytest.mark.parametrize("name", suite_names())
def test_every_suite_is_a_whole_pinned_config(name):
    path = SUITES_DIR / f"{name}.yaml"
    assert _whole(yaml.safe_load(path.read_text())) == set(_all_keys(DistillConfig)), "write every key (suites.pin)"
    assert "Pinned" in path.read_text().split("teacher:")[0]
    load_suite(name)


def test_score_run_is_the_only_caller_of_evaluate():
    callers = [p.relative_to(ROOT).as_posix() for p in (ROOT / "benchmarks").rglob("*.py")
               if re.search(r"\bevaluate\(", p.read_text()) or "import evaluate" in p.read_text()]
    assert callers == ["benchmarks/harness/score.py"]
    assert set(splits.train_seeds("tune")).isdisjoint(splits.train_seeds("confirm"))
    assert splits.draw_seed("confirm", 0) > splits.draw_seed("tune", splits.DRAWS_PER_SPLIT - 1)


def test_a_teacher_that_names_its_guidance_later_keeps_its_teacher_best_record(tiny_teacher_dir):
    """The teacher-best store key hashes the teacher's files; ``model.yaml``'s ``guidance:`` line
    (the scale a distillation trains around) is not part of what the teacher samples."""
    from benchmarks.harness.score import _files_digest

    before = _files_digest(tiny_teacher_dir)
    meta = tiny_teacher_dir / "model.yaml"
    meta.write_text(meta.read_text() + "guidance: 2.0\n")
    assert _files_digest(tiny_teacher_dir) == before
    meta.write_text(meta.read_text().replace("sigma_d: 0.5", "sigma_d: 0.6"))  # anything else is another teacher
    assert _files_digest(tiny_teacher_dir) != before


def test_the_spectrum_guard_tried_by_the_sampler_check_admits_the_band_or_else_the_closest():
    assert tune_sampler.spectrum_deviation([1.0, 0.8, 1.25]) == pytest.approx(math.log(1.25))
    assert tune_sampler.spectrum_deviation([1.0, 0.5, float("nan")]) == pytest.approx(math.log(2.0))
    assert tune_sampler.admissible([0.1, 0.3, 0.2]) == [True, False, True]
    assert tune_sampler.admissible([0.9, 0.5, 0.5, 0.7]) == [False, True, True, False]


def test_skipping_every_seed_of_a_split_is_refused_before_any_training(tmp_path):
    with pytest.raises(SystemExit, match="--skip-seeds 5 leaves none of the confirm split's 5 training seeds"):
        quality.main(["--suite", "digits_default", "--smoke", "--split", "confirm", "--skip-seeds", "5",
                      "--runs", str(tmp_path)])
    assert not any(tmp_path.iterdir())


def test_a_cuda_eval_device_without_cuda_is_refused_before_any_training(monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="--eval-device cuda but torch sees no CUDA device"):
        quality.main(["--suite", "digits_default", "--smoke", "--runs", str(tmp_path), "--eval-device", "cuda"])
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


def test_a_change_is_judged_against_its_base_paired_by_seed():
    assert tables.base_label("digits + objective.x=1") == "digits" and tables.base_label("digits") is None
    assert tables.change_verdict([-2.0, -2.2], lower_is_better=True) == "better by more than one SE"
    assert tables.change_verdict([-2.0, -2.2], lower_is_better=False) == "worse by more than one SE"
    assert tables.change_verdict([1.0, -1.2], lower_is_better=True) == "within one SE"
    assert tables.change_verdict([-3.0], lower_is_better=True) == "not shown (one seed)"

    def student(label: str, seed: int, fid: float, draws=(0, 1)) -> dict:
        score = {"draws": list(draws), "n_per_class": 10,
                 "student": {"1": {"fid": fid, "adherence": 0.9}},
                 "fidelity": {"1": {"latent_mse": 0.05, "fid_to_teacher": None}}}
        return {"kind": "student", "label": label, "split": "confirm", "train_seed": seed, "score": score}

    change = "s + a=1"
    records = [student("s", 200, 10.0), student("s", 201, 12.0), student("s", 202, 11.0),
               student(change, 200, 8.0), student(change, 201, 9.0),
               student(change, 202, 1.0, draws=(0,))]  # other draws: not paired
    text = tables.change_section(records, change, "confirm")
    fid = next(line for line in text.splitlines() if line.startswith("| 1 | FID |"))
    assert "10.00 / 12.00 | 8.00 / 9.00 | -2.00 / -3.00 | -2.50 ± 0.50 | better by more than one SE" in fid
    assert "training seeds 200, 201," in text
    adherence = next(line for line in text.splitlines() if "adherence" in line)
    assert "0.00 ± 0.00 | within one SE" in adherence
    assert "FID to the teacher's samples" not in text  # not scored: no row
    assert tables.change_section(records, "s", "confirm") is None  # a suite's own row has no base
    assert tables.change_section(records[3:5], change, "confirm") is None  # no base row
