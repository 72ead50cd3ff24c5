"""LoRA students: the teacher's own frozen weights plus low-rank adapters (peft).

With ``student.lora_rank = r > 0`` the student network is built as for a full student
(``teacher_network.with_guidance_embed()``), and then

* every student parameter that still equals the teacher's is replaced by a frozen parameter on the
  teacher's own storage: the base weights are held once, by teacher and student together (the
  student's parameter objects are its own, so moving or casting the student never moves the
  teacher);
* every student parameter that is not the teacher's -- the guidance embedder, a refitted time
  embedding (Sana), whatever else a family's student adds -- is trained in full (in fp32; a
  dtype hook casts around it when the base runs in bf16 / fp16);
* the Linear and 1x1-style Conv2d layers whose names match ``student.lora_targets`` (regular
  expressions matched at the end of a layer's dotted name; ``[]`` = the network's
  ``lora_targets``, attention q / k / v / out and the MLP) get peft LoRA adapters of rank ``r``
  and scale ``lora_alpha / r``, ``B`` starting at zero, so the untrained student equals the teacher.

Only the adapters and the full modules require gradients: the optimiser, the EMA, FSDP2 and the
checkpoints see nothing else (:func:`trainable`). The teacher runs its own modules (fused
attention, no guidance input), the student the shared weights through its adapters.

A LoRA student folder (:func:`write_folder`) holds ``model.yaml`` (``lora``: rank, alpha, targets,
the teacher folder whose weights are the base), the adapters -- diffusers' LoRA format
(``pytorch_lora_weights.safetensors``, ``transformer.``-prefixed peft keys, with its adapter
metadata) for a network with ``lora_prefix`` (the diffusers families), else peft's
(``adapter_model.safetensors`` + ``adapter_config.json``) -- the full modules in
``trained_in_full.safetensors`` (keys: the network's parameter names) and the logvar head.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError, brief

ADAPTER = "default"  # peft's adapter name
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
PEFT_FILE, PEFT_CONFIG = "adapter_model.safetensors", "adapter_config.json"
PEFT_PREFIX = "base_model.model."  # PeftModel.save_pretrained's key prefix
FULL_FILE = "trained_in_full.safetensors"
METADATA_KEY = "lora_adapter_metadata"  # diffusers' LORA_ADAPTER_METADATA_KEY


@dataclass
class StudentConfig:
    """The student network: the teacher's network trained whole (``lora_rank: 0``), or the
    teacher's frozen weights with LoRA adapters (see :mod:`tbcm.models.lora`)."""

    lora_rank: int = 0  # 0 = a full student; r > 0: rank-r LoRA adapters on lora_targets, the base shared with the teacher
    lora_alpha: float = 0.0  # adapter scale = lora_alpha / lora_rank; 0 = lora_rank (scale 1)
    # regular expressions matched at the end of a layer's dotted name (a plain name like to_q matches
    # every layer called to_q); [] = the family's default (attention q/k/v/out and the MLP)
    lora_targets: list[str] = field(default_factory=list)

    def check(self, cfg, check) -> None:
        check(self.lora_rank >= 0, "student.lora_rank", self.lora_rank, ">= 0 (0 = a full student)")
        check(math.isfinite(self.lora_alpha) and self.lora_alpha >= 0, "student.lora_alpha", self.lora_alpha,
              ">= 0 (0 = student.lora_rank)")
        check(not self.lora_targets or self.lora_rank > 0, "student.lora_targets", self.lora_targets,
              "[] for a full student: set student.lora_rank too")
        for pattern in self.lora_targets:
            try:
                re.compile(pattern)
            except re.error as exc:
                check(False, "student.lora_targets", self.lora_targets,
                      f"a list of regular expressions ({pattern!r}: {exc})")


@dataclass
class LoraSpec:
    """What a LoRA network carries about itself (``network.lora_spec``)."""

    rank: int
    alpha: float
    targets: list[str]  # the patterns the adapted layers were chosen by
    modules: list[str]  # the adapted layers' names in the network
    full: list[str]  # the parameters trained in full (not the teacher's)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def lora_spec(network: nn.Module) -> LoraSpec | None:
    """The :class:`LoraSpec` of a LoRA network, ``None`` for a full one."""
    return getattr(network, "lora_spec", None)


def _peft():
    try:
        import peft
    except ImportError:
        raise UserError("student.lora_rank > 0 needs peft, which is not installed: pip install 'tbcm[lora]' "
                        "(or pip install peft), or set student.lora_rank=0") from None
    return peft


# -- building -------------------------------------------------------------------------------

def student_network(teacher_network: nn.Module, cfg: StudentConfig | None = None) -> nn.Module:
    """The student network of a run: ``teacher_network.with_guidance_embed()`` in fp32, trained
    whole (``lora_rank`` 0), or sharing the teacher's weights under LoRA adapters."""
    net = teacher_network.with_guidance_embed().float()
    if cfg is None or cfg.lora_rank == 0:
        return net
    full = _share_base(net, teacher_network)
    patterns = list(cfg.lora_targets) or list(getattr(net, "lora_targets", ()))
    modules = match_targets(net, patterns, set(full))
    alpha = float(cfg.lora_alpha) or float(cfg.lora_rank)
    return _adapt(net, LoraSpec(int(cfg.lora_rank), alpha, patterns, modules, full))


def _teacher_name(net: nn.Module):
    return getattr(net, "teacher_key", lambda name: name)


def _set_parameter(root: nn.Module, name: str, param: nn.Parameter) -> None:
    owner, _, leaf = name.rpartition(".")
    root.get_submodule(owner)._parameters[leaf] = param


def _share_base(net: nn.Module, teacher_net: nn.Module, full: set[str] | None = None) -> list[str]:
    """Put every parameter of ``net`` that is the teacher's (same name -- the network's
    ``teacher_key`` maps names that moved -- same shape; same values, or not in ``full`` when
    given) on the teacher's storage, frozen. Returns the names of the others (trained in full)."""
    teacher = dict(teacher_net.named_parameters())
    to_teacher = _teacher_name(net)
    kept = []
    for name, p in list(net.named_parameters()):
        t = teacher.get(to_teacher(name))
        same = t is not None and t.shape == p.shape
        if same:
            same = name not in full if full is not None else torch.equal(p.detach(), t.detach().to(p))
        if same:
            _set_parameter(net, name, nn.Parameter(t.detach(), requires_grad=False))
        else:
            kept.append(name)
    return kept


def _adaptable(module: nn.Module) -> bool:
    """Layers peft adapts and the JVP differentiates: Linear, and Conv2d without groups."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


def match_targets(net: nn.Module, patterns: list[str], full: set[str]) -> list[str]:
    """Names of the adaptable layers of ``net`` whose names end with a match of a pattern and
    whose weights are the teacher's (a layer trained in full gets no adapter)."""
    if not patterns:
        raise UserError(f"{type(net).__name__} names no default LoRA layers: set student.lora_targets")
    rx = re.compile(r"(?:.*\.)?(?:" + "|".join(f"(?:{p})" for p in patterns) + ")")
    found = [name for name, m in net.named_modules()
             if name and rx.fullmatch(name) and _adaptable(m)
             and not any(f"{name}.{k}" in full for k, _ in m.named_parameters())]
    if not found:
        examples = [n for n, m in net.named_modules() if _adaptable(m)][:4]
        raise UserError(f"student.lora_targets={patterns} match no Linear / Conv2d layer of the "
                        f"{type(net).__name__}: give patterns of its layer names, e.g. {', '.join(examples)}")
    return found


def _adapt(net: nn.Module, spec: LoraSpec) -> nn.Module:
    """Inject the adapters of ``spec`` into ``net`` (in place); the full parameters train."""
    peft = _peft()
    config = peft.LoraConfig(r=spec.rank, lora_alpha=spec.alpha, target_modules=list(spec.modules),
                             lora_dropout=0.0, bias="none")
    peft.inject_adapter_in_model(config, net, adapter_name=ADAPTER)  # freezes every non-adapter parameter
    params = dict(net.named_parameters())
    for name in spec.full:
        params[name].requires_grad_(True)
    for name, p in params.items():  # adapters in fp32 whatever the base's dtype (peft casts around them)
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    if any(not p.requires_grad and p.is_floating_point() and p.dtype != torch.float32 for p in params.values()):
        for module in _full_modules(net, set(spec.full)):
            _cast_around(module)
    net.lora_spec = spec
    return net


def _full_modules(net: nn.Module, full: set[str]) -> list[nn.Module]:
    """The outermost modules all of whose parameters are trained in full."""
    out, taken = [], []
    for name, m in net.named_modules():
        names = [f"{name}.{k}" if name else k for k, _ in m.named_parameters()]
        if not names or any(name.startswith(t + ".") for t in taken) or not all(n in full for n in names):
            continue
        out.append(m)
        taken.append(name)
    return out


def _cast_around(module: nn.Module) -> None:
    """An fp32 module inside a bf16 / fp16 network: inputs cast to its dtype, its output back to
    the dtype of its first floating input."""

    def before(m, args):  # the module is the hooks' argument: a deep copy's hooks act on the copy
        dtype = next(m.parameters()).dtype
        m._io_dtype = next((a.dtype for a in args if torch.is_tensor(a) and a.is_floating_point()), None)
        return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    def after(m, _args, out):
        io = m._io_dtype
        return out.to(io) if io is not None and torch.is_tensor(out) and out.is_floating_point() else out

    module.register_forward_pre_hook(before)
    module.register_forward_hook(after)


def trainable(module: nn.Module) -> list[nn.Parameter]:
    """The parameters that train: all of a full student's, a LoRA student's adapters and full modules."""
    return [p for p in module.parameters() if p.requires_grad]


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` without its frozen parameters (a LoRA base is the teacher's)."""
    frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
    return {k: v for k, v in module.state_dict().items() if k not in frozen}


def load_trainable_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load :func:`trainable_state`: every key of it, and nothing but frozen parameters missing."""
    frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in frozen]
    if missing or unexpected:
        raise RuntimeError(f"state does not fit the module: missing {missing[:3]}, unexpected {unexpected[:3]}")


def copy_network(net: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """A deep copy of ``net`` whose frozen parameters stay on the same storage (new parameter
    objects: moving the copy's leaves the original's); ``device``: where the copied tensors
    (trainable parameters, buffers) go. For a full network, a plain deep copy."""
    frozen = {id(p): nn.Parameter(p.detach(), requires_grad=False) for p in net.parameters() if not p.requires_grad}
    shared = {id(p) for p in frozen.values()}
    out = copy.deepcopy(net, memo=dict(frozen))
    if device is not None:
        for m in out.modules():
            for k, p in m._parameters.items():
                if p is not None and id(p) not in shared:
                    m._parameters[k] = nn.Parameter(p.detach().to(device), requires_grad=p.requires_grad)
            for k, b in m._buffers.items():
                if b is not None:
                    m._buffers[k] = b.to(device)
    return out


def held_bytes(*modules: nn.Module) -> tuple[int, int]:
    """``(parameters, bytes)`` the modules hold together, each storage counted once."""
    seen, params, total = set(), 0, 0
    for module in modules:
        for p in module.parameters():
            key = (p.device, p.untyped_storage().data_ptr())
            if key in seen:
                continue
            seen.add(key)
            params += p.numel()
            total += p.untyped_storage().nbytes()
    return params, total


# -- folders --------------------------------------------------------------------------------

def record(network: nn.Module, cfg) -> dict:
    """``model.yaml``'s ``lora`` entry of a student network distilled with ``cfg`` (``{}`` for a
    full one): rank, alpha, the target patterns, and the teacher (``base``, an absolute path, with
    the loader option it ran with) whose weights the adapters sit on."""
    from ..config import with_absolute_paths  # local: the config imports this module

    spec = lora_spec(network)
    if spec is None:
        return {}
    options = {"time_multiplier": cfg.teacher_time_multiplier} if cfg.teacher_time_multiplier else {}
    return {"rank": spec.rank, "alpha": spec.alpha, "targets": list(spec.targets),
            "base": with_absolute_paths(cfg).teacher, "base_options": options,
            "format": "diffusers" if _prefix(network) else "peft"}


def _prefix(network: nn.Module) -> str | None:
    return getattr(network, "lora_prefix", None)


def adapter_state(network: nn.Module) -> dict[str, torch.Tensor]:
    """``{"<layer>.lora_A.weight", "<layer>.lora_B.weight"}`` of every adapted layer, names in the network."""
    out = {}
    for name in lora_spec(network).modules:
        layer = network.get_submodule(name)
        for part in ("lora_A", "lora_B"):
            out[f"{name}.{part}.weight"] = getattr(layer, part)[ADAPTER].weight.detach().contiguous().cpu()
    return out


def adapter_config(network: nn.Module) -> dict:
    """peft ``LoraConfig`` keyword arguments of the adapters, layer names under the prefix (if any)."""
    spec, prefix = lora_spec(network), _prefix(network)
    cut = len(prefix) + 1 if prefix else 0
    return {"r": spec.rank, "lora_alpha": spec.alpha, "target_modules": [m[cut:] for m in spec.modules],
            "lora_dropout": 0.0, "bias": "none"}


def write_folder(bundle, folder: Path) -> None:
    """A LoRA student's network files: the adapters (diffusers' or peft's format) and the full modules."""
    from safetensors.torch import save_file

    net, folder = bundle.network, Path(folder)
    spec, prefix = lora_spec(net), _prefix(net)
    state = adapter_state(net)
    if prefix:  # diffusers: "transformer.<layer>.lora_A.weight", the LoraConfig as "transformer.<key>" metadata
        if not all(k.startswith(prefix + ".") for k in state):
            raise ValueError(f"adapted layers outside {prefix}: {list(state)[:3]}")
        meta = {f"{prefix}.{k}": v for k, v in adapter_config(net).items()}
        save_file(state, str(folder / DIFFUSERS_FILE),
                  metadata={"format": "pt", METADATA_KEY: json.dumps(meta, indent=2, sort_keys=True)})
    else:  # peft: PeftModel.save_pretrained's layout
        save_file({PEFT_PREFIX + k: v for k, v in state.items()}, str(folder / PEFT_FILE), metadata={"format": "pt"})
        _peft().LoraConfig(**adapter_config(net)).save_pretrained(str(folder))
    params = dict(net.named_parameters())
    save_file({k: params[k].detach().contiguous().cpu() for k in spec.full}, str(folder / FULL_FILE))


def _read(folder: Path, name: str, hint: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(folder / name))
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{folder}/{name} is missing or unreadable ({brief(exc)}): {hint}") from None


def load_folder(path: Path, meta, hint: str = "pass DIR/student of a `tbcm distill` run", **options):
    """A LoRA student folder as a :class:`~tbcm.models.bundle.Bundle`: its base teacher loaded with
    ``options`` (dtype, text cache), the student network on the teacher's weights, the adapters
    and full modules from the folder; the teacher's prompt encoder and decoder."""
    from .bundle import Bundle, load_bundle, load_logvar_head

    lora, path = meta.lora, Path(path)
    try:
        teacher = load_bundle(lora["base"], expect_kind="teacher", **{**options, **lora.get("base_options", {})})
    except UserError as exc:
        raise UserError(f"the LoRA student in {path} sits on the teacher {lora['base']}, which did not load ({exc}); "
                        f"restore it or edit lora.base in {path}/model.yaml") from None
    if lora.get("format") == "diffusers":
        state = _read(path, DIFFUSERS_FILE, hint)
    else:
        state = {k.removeprefix(PEFT_PREFIX): v for k, v in _read(path, PEFT_FILE, hint).items()}
    full_state = _read(path, FULL_FILE, hint)
    modules = sorted({k.rsplit(".lora_", 1)[0] for k in state})
    try:
        net = teacher.network.with_guidance_embed().float()
        full = _share_base(net, teacher.network, set(full_state))
        if sorted(full) != sorted(full_state):
            raise ValueError(f"trained-in-full parameters differ: {sorted(set(full) ^ set(full_state))[:3]}")
        net.load_state_dict(full_state, strict=False)
        _adapt(net, LoraSpec(int(lora["rank"]), float(lora["alpha"]), list(lora.get("targets", [])), modules, full))
        with torch.no_grad():
            for name in modules:
                layer = net.get_submodule(name)
                for part in ("lora_A", "lora_B"):
                    getattr(layer, part)[ADAPTER].weight.copy_(state[f"{name}.{part}.weight"])
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{path} has adapters that do not fit its teacher {lora['base']} ({brief(exc)}): {hint}") from None
    return Bundle(meta, net.eval(), teacher.encoder, load_logvar_head(path), teacher.decode)


def merged(network: nn.Module) -> nn.Module:
    """A LoRA network with its adapters merged into new weight tensors (the shared base is left
    untouched): a plain network, for exporters that save the network whole. A full network as is."""
    spec = lora_spec(network)
    if spec is None:
        return network
    net = copy_network(network)
    for name in spec.modules:
        layer = net.get_submodule(name)
        layer.merge(safe_merge=True)  # a new tensor, not an in-place add to the teacher's storage
        _set_module(net, name, layer.get_base_layer())
    for p in net.parameters():
        p.requires_grad_(True)
    del net.lora_spec
    return net


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    owner, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(owner), leaf, module)
