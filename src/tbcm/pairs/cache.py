"""A trajectory cache on disk: teacher rollouts written once in shards, replayed as a pair source.

Layout of a cache folder:

* ``index.json``              -- the settings the cache was made with (see :func:`write_trajectory_cache`);
* ``shard_{i:05d}.safetensors`` -- ``prompts_per_shard`` trajectories of ``K - 1`` pairs each,
  prompt-major: ``x_t`` / ``u`` ``[N, C, H, W]``, ``t`` / ``w`` / ``mask`` ``[N]`` (float, ``t`` in
  radians), ``prompt_ids`` ``[N]`` (long), with ``N = prompts_per_shard * (K - 1)``;
* ``shard_{i:05d}.json``      -- the sidecar ``{"sha256", "pairs", "trajectories"}``, written last,
  so a shard counts as done only once its sidecar exists.

Shard ``i`` depends only on ``seed`` and ``i`` (never on which rank made it), so any rank split
writes the same files and a rerun regenerates only missing or corrupt shards.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import safetensors.torch
import torch
from torch import Tensor
from tqdm import tqdm

from ..atomic import atomic_write
from ..errors import UserError, brief
from ..models.condition import TextCondition
from .base import Pairs

FORMAT = "tbcm-trajectory-cache/1"
FIELDS = ("x_t", "t", "u", "w", "mask", "prompt_ids")
SEED_STRIDE = 1_000_003  # shard i is generated from seed * SEED_STRIDE + i


def shard_path(cache_dir: Path, i: int) -> Path:
    return Path(cache_dir) / f"shard_{i:05d}.safetensors"


def sidecar_path(cache_dir: Path, i: int) -> Path:
    return Path(cache_dir) / f"shard_{i:05d}.json"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_json(path: Path, obj: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1) + "\n"))


def _read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None if it is missing or not a JSON object."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _shard_is_done(cache_dir: Path, i: int) -> bool:
    side = _read_json(sidecar_path(cache_dir, i))
    path = shard_path(cache_dir, i)
    return side is not None and path.is_file() and _sha256(path.read_bytes()) == side.get("sha256")


def write_trajectory_cache(source, prompts: list[str], out_dir, num_shards: int, prompts_per_shard: int,
                           seed: int, rank: int = 0, world_size: int = 1, progress: bool = True,
                           extra_meta: dict | None = None) -> Path:
    """Write this rank's shards (``i % world_size == rank``) of a trajectory cache into ``out_dir``.

    ``source`` is a :class:`~tbcm.pairs.trajectory.TrajectoryPairSource` whose ``conds`` encode
    ``prompts``; shard ``i`` holds ``source.sample(ids)`` for the prompt ids
    ``arange(i * prompts_per_shard, (i + 1) * prompts_per_shard) % len(prompts)`` with the
    generator reseeded to ``seed * 1_000_003 + i``. Shards already written with a matching
    checksum are skipped. Raises :class:`UserError` if ``out_dir`` holds a cache made with other
    settings. Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    if not prompts:
        raise UserError("the prompt list is empty: give at least one prompt")
    if len(source.conds) != len(prompts):
        raise ValueError(f"source encodes {len(source.conds)} prompts, but {len(prompts)} prompts were given")
    index = {
        "format": FORMAT,
        "prompts": list(prompts),
        "route_points": source.config.route_points,
        "image_shape": list(source.image_shape),
        "sigma_d": float(source.teacher.sigma_d),
        "cfg_scales": [float(w) for w in source.cfg_scales.tolist()],
        "num_shards": num_shards,
        "prompts_per_shard": prompts_per_shard,
        "seed": seed,
    }
    clash = index.keys() & (extra_meta or {}).keys()
    if clash:
        raise ValueError(f"extra_meta may not override the cache settings {sorted(clash)}")
    index = json.loads(json.dumps({**index, **(extra_meta or {})}))  # as it will read back
    out_dir.mkdir(parents=True, exist_ok=True)
    index_file = out_dir / "index.json"
    if index_file.exists():
        old = _read_json(index_file)
        if old != index:
            differ = sorted(k for k in index.keys() | (old or {}).keys() if (old or {}).get(k) != index.get(k))
            raise UserError(f"{out_dir} holds a trajectory cache made with other settings "
                            f"(differing: {', '.join(differ)}): use another --out")
    else:
        _write_json(index_file, index)

    mine = range(rank, num_shards, world_size)
    for i in tqdm(mine, desc=f"trajectories (rank {rank})", disable=not progress, dynamic_ncols=True):
        if _shard_is_done(out_dir, i):
            continue
        source.generator.manual_seed(seed * SEED_STRIDE + i)
        ids = torch.arange(i * prompts_per_shard, (i + 1) * prompts_per_shard) % len(prompts)
        pairs = source.sample(ids)
        tensors = {name: getattr(pairs, name).detach().cpu().contiguous() for name in FIELDS}
        digest = {}

        def save(tmp: Path) -> None:
            safetensors.torch.save_file(tensors, str(tmp))
            digest["sha256"] = _sha256(tmp.read_bytes())

        atomic_write(shard_path(out_dir, i), save)
        _write_json(sidecar_path(out_dir, i), {"sha256": digest["sha256"], "pairs": len(pairs),
                                               "trajectories": prompts_per_shard})
    return out_dir


def verify_cache(cache_dir) -> list[str]:
    """Every problem found in a cache folder (missing index, shard or sidecar; bad checksum)."""
    cache_dir = Path(cache_dir)
    index = _read_json(cache_dir / "index.json")
    if index is None or index.get("format") != FORMAT:
        return [f"{cache_dir / 'index.json'} is missing or not a {FORMAT} index"]
    problems = []
    for i in range(int(index["num_shards"])):
        path, side = shard_path(cache_dir, i), _read_json(sidecar_path(cache_dir, i))
        if not path.is_file():
            problems.append(f"{path} is missing")
        if side is None:
            problems.append(f"{sidecar_path(cache_dir, i)} is missing or malformed")
        elif path.is_file() and _sha256(path.read_bytes()) != side.get("sha256"):
            problems.append(f"{path} does not match the checksum in its sidecar")
    return problems


class CachePairSource:
    """Replays a trajectory cache as a :class:`~tbcm.pairs.base.PairSource`.

    ``conds`` encode the cache's prompts (batch = number of prompts). The trajectory stream walks
    the shards in a fresh shuffled order per pass (``seed``; the same on every rank) and each
    shard's trajectories in stored order. Every rank draws the same global batch of
    ``num_prompts * world_size`` trajectories and keeps ``[rank::world_size]`` of it, so ranks
    never duplicate a trajectory. At most one shard is held in memory.
    """

    def __init__(self, cache_dir, conds: TextCondition, seed: int, rank: int = 0, world_size: int = 1):
        self.cache_dir, self.conds = Path(cache_dir), conds
        self.rank, self.world_size = rank, world_size
        fix = f"run `tbcm trajectories --out {self.cache_dir}` first"
        index_file = self.cache_dir / "index.json"
        if not index_file.is_file():
            raise UserError(f"no trajectory cache index at {index_file}: {fix}")
        try:
            index = json.loads(index_file.read_text())
            if not isinstance(index, dict) or index.get("format") != FORMAT:
                raise ValueError(f"expected format {FORMAT}")
            self.num_shards = int(index["num_shards"])
            self.pairs_per_traj = int(index["route_points"]) - 1
            num_prompts = len(index["prompts"])
        except Exception as exc:  # noqa: BLE001 - any parse problem is the same user-facing error
            raise UserError(f"{index_file} is malformed ({brief(exc)}): {fix}") from None
        self.index = index
        rerun = (f"rerun `tbcm trajectories --out {self.cache_dir}` with the same settings "
                 "(it regenerates only missing or corrupt shards)")
        self.sidecars = []
        for i in range(self.num_shards):
            side = _read_json(sidecar_path(self.cache_dir, i))
            if side is None or not shard_path(self.cache_dir, i).is_file():
                raise UserError(f"trajectory cache shard {shard_path(self.cache_dir, i)} is missing "
                                f"or unfinished (no {sidecar_path(self.cache_dir, i).name}): {rerun}")
            self.sidecars.append(side)
        self._rerun = rerun
        if len(conds) != num_prompts:
            raise UserError(f"{len(conds)} encoded prompts given, but the cache {self.cache_dir} was made "
                            f"with {num_prompts}: encode exactly the prompts listed in {index_file}")
        self.generator = torch.Generator().manual_seed(seed)
        self.order: list[int] = []  # shards still to visit in this pass
        self.shard, self.pos = -1, 0  # current shard and next trajectory inside it (-1: none yet)
        self._loaded: tuple[int, dict[str, Tensor]] | None = None

    def _load(self, i: int) -> dict[str, Tensor]:
        """Shard ``i``'s tensors, checksum-verified; replaces the one shard held in memory."""
        if self._loaded is None or self._loaded[0] != i:
            self._loaded = None  # free the previous shard before reading the next
            path = shard_path(self.cache_dir, i)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise UserError(f"trajectory cache shard {path} cannot be read ({brief(exc)}): "
                                f"{self._rerun}") from None
            if _sha256(data) != self.sidecars[i].get("sha256"):
                raise UserError(f"trajectory cache shard {path} is corrupt (checksum mismatch): {self._rerun}")
            self._loaded = (i, safetensors.torch.load(data))
        return self._loaded[1]

    def _next_global(self, count: int) -> list[tuple[int, int]]:
        """The next ``count`` trajectories of the stream as ``(shard, trajectory)`` locations."""
        locs: list[tuple[int, int]] = []
        while len(locs) < count:
            if self.shard < 0 or self.pos >= int(self.sidecars[self.shard]["trajectories"]):
                if not self.order:
                    self.order = torch.randperm(self.num_shards, generator=self.generator).tolist()
                self.shard, self.pos = self.order.pop(0), 0
            take = min(count - len(locs), int(self.sidecars[self.shard]["trajectories"]) - self.pos)
            locs += [(self.shard, j) for j in range(self.pos, self.pos + take)]
            self.pos += take
        return locs

    def next_pairs(self, num_prompts: int) -> Pairs:
        """Pairs of ``num_prompts`` trajectories for this rank: ``num_prompts * (K - 1)`` pairs,
        trajectory-major (``x_t`` / ``u`` ``[N, C, H, W]``, ``t`` / ``w`` / ``mask`` / ``prompt_ids`` ``[N]``)."""
        mine = self._next_global(num_prompts * self.world_size)[self.rank::self.world_size]
        k1, parts = self.pairs_per_traj, {name: [] for name in FIELDS}
        start = 0
        while start < len(mine):  # one run of consecutive locations per shard visit
            end = start
            while end < len(mine) and mine[end][0] == mine[start][0]:
                end += 1
            shard = self._load(mine[start][0])
            rows = torch.cat([torch.arange(j * k1, (j + 1) * k1) for _, j in mine[start:end]])
            for name in FIELDS:
                parts[name].append(shard[name][rows])
            start = end
        out = {name: torch.cat(parts[name]) for name in FIELDS}
        return Pairs(x_t=out["x_t"], t=out["t"], u=out["u"], cond=self.conds.index(out["prompt_ids"]),
                     w=out["w"], mask=out["mask"], prompt_ids=out["prompt_ids"])

    def state_dict(self) -> dict:
        return {"order": torch.tensor(self.order, dtype=torch.long), "shard": torch.tensor(self.shard),
                "pos": torch.tensor(self.pos), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.order = [int(i) for i in state["order"].tolist()]
        self.shard, self.pos = int(state["shard"]), int(state["pos"])
        self.generator.set_state(state["generator"])
