"""The trajectory cache: deterministic sharded writing, resumable reruns, and replay as a pair source."""

import io

import pytest
import torch

from tbcm.errors import UserError
from tbcm.models.bundle import load_bundle
from tbcm.models.teacher import Teacher
from tbcm.pairs.cache import CachePairSource, shard_path, sidecar_path, verify_cache, write_trajectory_cache
from tbcm.pairs.trajectory import TrajectoryConfig, TrajectoryPairSource

PROMPTS = [f"a handwritten digit {d}" for d in range(10)]
K = 4  # route points: K - 1 = 3 pairs per trajectory
PER_SHARD = 2
SEED = 7


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """8x8 images gain nothing from intra-op threads, and on a busy machine they spin (10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def teacher(tiny_teacher_dir):
    return Teacher.from_bundle(load_bundle(tiny_teacher_dir, expect_kind="teacher"))


def make_source(teacher) -> TrajectoryPairSource:
    return TrajectoryPairSource(teacher, teacher.encoder.encode(PROMPTS), [1.5, 2.0, 3.0], (1, 8, 8),
                               TrajectoryConfig(route_points=K), generator=torch.Generator().manual_seed(0))


def write(source, out, num_shards=3, seed=SEED, **kw):
    return write_trajectory_cache(source, PROMPTS, out, num_shards, PER_SHARD, seed, progress=False, **kw)


def count_samples(source) -> list:
    """Make ``source.sample`` record its calls; returns the list it appends to."""
    calls, sample = [], source.sample
    source.sample = lambda ids: calls.append(ids) or sample(ids)
    return calls


def trajectories(pairs) -> torch.Tensor:
    """``x_t`` regrouped per trajectory: ``[P, K - 1, C, H, W]``."""
    return pairs.x_t.reshape(-1, K - 1, *pairs.x_t.shape[1:])


def test_cached_pairs_equal_a_fresh_sample_with_the_shard_seed(teacher, tmp_path):
    write(make_source(teacher), tmp_path / "cache")
    conds = teacher.encoder.encode(PROMPTS)
    cache = CachePairSource(tmp_path / "cache", conds, seed=0)
    fresh, seen = make_source(teacher), set()
    for _ in range(3):  # one pass: one whole shard per call
        got = cache.next_pairs(PER_SHARD)
        i = int(got.prompt_ids[0]) // PER_SHARD  # shard i holds prompts 2i, 2i + 1
        seen.add(i)
        fresh.generator.manual_seed(SEED * 1_000_003 + i)
        want = fresh.sample(torch.arange(i * PER_SHARD, (i + 1) * PER_SHARD))
        assert len(got) == PER_SHARD * (K - 1)
        for name in ("x_t", "t", "u", "w", "mask", "prompt_ids"):
            assert torch.equal(getattr(got, name), getattr(want, name)), name
        assert torch.equal(got.cond.embeds, want.cond.embeds) and torch.equal(got.cond.mask, want.cond.mask)
    assert seen == {0, 1, 2}
    assert verify_cache(tmp_path / "cache") == []


def test_rerun_skips_done_shards_and_regenerates_missing_or_corrupt_ones(teacher, tmp_path):
    out, source = tmp_path / "cache", make_source(teacher)
    write(source, out)
    files = [shard_path(out, i) for i in range(3)]
    before = {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files}
    calls = count_samples(source)
    write(source, out)
    assert calls == [] and {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files} == before

    files[1].unlink()
    data = bytearray(files[2].read_bytes())
    data[-5:] = bytes(b ^ 0xFF for b in data[-5:])
    files[2].write_bytes(bytes(data))
    assert len(verify_cache(out)) == 2
    write(source, out)
    assert [c.tolist() for c in calls] == [[2, 3], [4, 5]]  # only shards 1 and 2, each once
    assert all(f.read_bytes() == before[f][1] for f in files)  # regenerated identically
    assert verify_cache(out) == []


def test_corrupt_shard_is_named_when_loaded(teacher, tmp_path):
    out = write(make_source(teacher), tmp_path / "cache")
    data = bytearray(shard_path(out, 1).read_bytes())
    data[-1] ^= 0xFF
    shard_path(out, 1).write_bytes(bytes(data))
    assert any("shard_00001.safetensors" in p for p in verify_cache(out))
    cache = CachePairSource(out, teacher.encoder.encode(PROMPTS), seed=0)
    with pytest.raises(UserError, match=r"shard_00001\.safetensors is corrupt.*tbcm trajectories"):
        for _ in range(3):
            cache.next_pairs(PER_SHARD)


def test_missing_sidecar_index_or_prompts_are_user_errors(teacher, tmp_path):
    out = write(make_source(teacher), tmp_path / "cache")
    conds = teacher.encoder.encode(PROMPTS)
    with pytest.raises(UserError, match="no trajectory cache index.*tbcm trajectories --out"):
        CachePairSource(tmp_path / "nowhere", conds, seed=0)
    with pytest.raises(UserError, match="encode exactly the prompts"):
        CachePairSource(out, conds.index(slice(0, 5)), seed=0)
    sidecar_path(out, 2).unlink()
    with pytest.raises(UserError, match=r"shard_00002\.safetensors.*shard_00002\.json.*tbcm trajectories"):
        CachePairSource(out, conds, seed=0)
    (out / "index.json").write_text("{not json")
    with pytest.raises(UserError, match="index.json is malformed.*tbcm trajectories --out"):
        CachePairSource(out, conds, seed=0)


def test_rerun_with_other_settings_is_refused(teacher, tmp_path):
    source = make_source(teacher)
    write(source, tmp_path / "cache")
    calls = count_samples(source)
    with pytest.raises(UserError, match="other settings.*seed.*another --out"):
        write(source, tmp_path / "cache", seed=SEED + 1)
    assert calls == []


def test_two_writer_ranks_produce_the_files_of_one(teacher, tmp_path):
    source = make_source(teacher)
    one, two = tmp_path / "one", tmp_path / "two"
    write(source, one, num_shards=4)
    write(source, two, num_shards=4, rank=0, world_size=2)
    assert [shard_path(two, i).exists() for i in range(4)] == [True, False, True, False]
    write(source, two, num_shards=4, rank=1, world_size=2)
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir()) and len(names) == 9  # no temp files left
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name


def test_reader_ranks_split_the_global_batch(teacher, tmp_path):
    out = write(make_source(teacher), tmp_path / "cache", num_shards=4)
    conds = teacher.encoder.encode(PROMPTS)
    world1 = CachePairSource(out, conds, seed=3)
    ranks = [CachePairSource(out, conds, seed=3, rank=r, world_size=2) for r in range(2)]
    for _ in range(3):  # 3 trajectories per rank: crosses shards, and the pass of 8 trajectories
        glob = world1.next_pairs(6)
        for r, src in enumerate(ranks):
            got = src.next_pairs(3)
            assert torch.equal(trajectories(got), trajectories(glob)[r::2])
            assert torch.equal(got.prompt_ids, glob.prompt_ids.reshape(6, K - 1)[r::2].reshape(-1))


def test_state_dict_resumes_exactly(teacher, tmp_path):
    out = write(make_source(teacher), tmp_path / "cache", num_shards=4)
    conds = teacher.encoder.encode(PROMPTS)
    src = CachePairSource(out, conds, seed=5, rank=1, world_size=2)
    src.next_pairs(3)
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    want = [src.next_pairs(3) for _ in range(3)]
    resumed = CachePairSource(out, conds, seed=999, rank=1, world_size=2)
    resumed.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    for w in want:
        got = resumed.next_pairs(3)
        assert torch.equal(got.x_t, w.x_t) and torch.equal(got.t, w.t) and torch.equal(got.prompt_ids, w.prompt_ids)
