"""What the diffusers families share: loading a transformer and a VAE from local files, the
latent decoder and blank latent of a VAE, dtypes, the network wrapper base. Each family folder
(``sana/``, ``flux/``, ...) builds its :class:`~tbcm.models.family.Family` from these.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from ...errors import UserError, brief

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_transformer(folder: Path, class_name: str, family: str, dtype: torch.dtype | None = None) -> nn.Module:
    """``folder`` (a pipeline's ``transformer/``) as diffusers' ``class_name``, from local files only."""
    import diffusers

    try:
        return getattr(diffusers, class_name).from_pretrained(str(folder), local_files_only=True, torch_dtype=dtype)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"cannot load a {class_name} from {folder} ({brief(exc)}): pass the pipeline folder of a "
                        f"{family} model (with a transformer/ subfolder)") from None


def quiet_libraries() -> None:
    """diffusers / transformers log warnings and weight-loading progress bars to stderr; tbcm keeps
    stderr for its own one-line errors and its progress bars."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for lib in (diffusers_logging, transformers_logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()


class TransformerNet(nn.Module):
    """Base of the diffusers velocity-network wrappers (``SanaVelocityNet``, ``FluxVelocityNet``):
    holds ``self.transformer`` and passes gradient checkpointing through to it.

    ``lora_prefix``: a LoRA student's adapters are saved in diffusers' LoRA format, the
    transformer's peft keys under this prefix (what ``load_lora_weights`` / ``load_lora_adapter`` read).
    """

    lora_prefix = "transformer"

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.transformer = transformer

    @property
    def gradient_checkpointing(self) -> bool:
        return bool(self.transformer.gradient_checkpointing)

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, on: bool) -> None:
        (self.transformer.enable_gradient_checkpointing if on else self.transformer.disable_gradient_checkpointing)()


@lru_cache(maxsize=4)
def load_vae(folder: str, class_name: str, family: str) -> nn.Module:
    """The ``vae/`` of a pipeline folder as diffusers' ``class_name``, loaded once per folder."""
    import diffusers

    try:
        return getattr(diffusers, class_name).from_pretrained(str(Path(folder) / "vae"), local_files_only=True).eval()
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"cannot load the VAE of {folder} ({brief(exc)}): sample grids and evaluation of a {family} "
                        "model need its vae/ folder") from None


def torch_dtype(name: str | torch.dtype | None) -> torch.dtype:
    """``"fp32"`` / ``"bf16"`` / ``"fp16"`` (or a dtype, or None = fp32) as a torch dtype."""
    if name is None or isinstance(name, torch.dtype):
        return name or torch.float32
    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def latent_decoder(folder: str | Path, sigma_d: float, vae_class: str, family: str):
    """``decode(x0 [B, C, h, w] TrigFlow latents) -> pixels [B, 3, H, W]`` in [-1, 1] with the
    folder's VAE, undoing the pipeline's latent normalisation
    ``z = x0 / sigma_d / scaling_factor + shift_factor`` (no shift for VAEs without one)."""
    folder = str(Path(folder).resolve())

    @torch.no_grad()
    def decode(x0: torch.Tensor) -> torch.Tensor:
        vae = load_vae(folder, vae_class, family).to(x0.device)  # decode where the latents are
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        latents = (x0 / sigma_d).to(vae.dtype) / vae.config.scaling_factor + shift
        return vae.decode(latents, return_dict=False)[0].float().clamp(-1, 1).cpu()

    return decode


@torch.no_grad()
def blank_latent(folder: str | Path, latent_shape: tuple[int, int, int], vae_class: str, family: str) -> torch.Tensor:
    """The flow-space latent ``[C, h, w]`` of a black image, by the folder's VAE encoder (once, at
    start-up; the degenerate filter compares each trajectory's final latent with it, as
    hustvl/TBCM compares with its stored black latent). Normalised as the pipeline normalises
    latents: ``(z - shift_factor) * scaling_factor``."""
    vae = load_vae(str(Path(folder).resolve()), vae_class, family)
    c, h, w = latent_shape
    ratio = getattr(vae, "spatial_compression_ratio", None) or 2 ** (len(vae.config.block_out_channels) - 1)
    black = -torch.ones(1, 3, h * ratio, w * ratio, dtype=vae.dtype, device=vae.device)
    encoded = vae.encode(black)
    z = encoded.latent if hasattr(encoded, "latent") else encoded.latent_dist.mode()
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    z = ((z.float() - shift) * vae.config.scaling_factor)[0]
    if tuple(z.shape) != (c, h, w):
        raise UserError(f"the VAE of {folder} encodes a {h * ratio} px image to {tuple(z.shape)}, the teacher makes "
                        f"{(c, h, w)} latents: pairs.blank_threshold needs a VAE of the teacher's latent shape")
    return z.cpu()


def student_teacher_folder(student: Path, meta) -> Path:
    """The teacher folder a diffusers student takes its text encoders and VAE from."""
    folder = Path(meta.prompt_encoder["folder"])
    if not folder.is_dir():
        raise UserError(f"the student in {student} takes its text encoder from {folder}, which does not exist: "
                        f"restore that folder or edit prompt_encoder.folder in {student}/model.yaml")
    return folder


def write_transformer_folder(bundle, folder: Path) -> None:
    """A diffusers student's network files: its transformer in diffusers' format
    (``folder/transformer``, ``save_pretrained``); the text encoders and VAE stay with the teacher."""
    bundle.network.transformer.save_pretrained(str(Path(folder) / "transformer"), safe_serialization=True)
