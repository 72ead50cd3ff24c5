"""What a model family provides: the whole contract between a teacher architecture and tbcm.

A family is one :class:`Family` object in its own module (``tbcm/models/builtin`` for the
built-in TinyDiT, ``tbcm/models/families/<name>/`` for a diffusers family), named by one line of
:data:`tbcm.models.registry.FAMILIES`. Nothing else in tbcm knows which family it runs.

Time units.  TrigFlow time ``t`` is an angle in ``[0, pi/2]`` (radians; ``pi/2`` = pure noise);
flow time ``tau`` is in ``[0, 1]`` (1 = pure noise), ``tau = sin t / (sin t + cos t)``. Families
never see ``t``: :class:`~tbcm.models.adapter.TrigFlowAdapter` converts, in closed form.

A family supplies

* a velocity network ``net(x_flow [B, C, H, W], timestep [B], cond, guidance=None) -> v [B, C, H, W]``:
  the flow-matching velocity ``v = noise - x0`` at ``x_tau = (1 - tau) x0 + tau noise``, where
  ``timestep = meta.timestep_scale * tau`` (the scale the family records, e.g. 1000 or 1);
  ``cond`` a :class:`~tbcm.models.condition.TextCondition`; ``guidance`` ``[B]`` the CFG scale
  ``w`` (students only). It also has ``net.config.to_dict()`` (for ``model.yaml``), ``net.blocks``
  (the units FSDP2 shards), a settable ``net.gradient_checkpointing``, and
  ``net.with_guidance_embed()``: the student network, the teacher's weights plus a guidance input
  whose contribution starts at exactly zero (so the untrained student equals the teacher for
  every ``w``), differentiable by ``torch.func.jvp`` (no fused attention kernels);
  for LoRA students (:mod:`tbcm.models.lora`) optionally ``net.lora_targets`` (regular
  expressions of the layers adapted by default), ``net.lora_prefix`` (adapters saved in
  diffusers' LoRA format under that prefix; absent: peft's format) and ``net.teacher_key(name)``
  (the teacher's name of a student parameter, where the student moved it);
* a prompt encoder ``encode(prompts: list[str], progress=False) -> TextCondition`` (``""`` is the
  null condition of CFG) with ``config() -> dict``; an encoder with a disk cache is a
  :class:`~tbcm.models.text_cache.DiskCachedEncoder` and is streamed;
* the loaders and writer below, which return / take a :class:`~tbcm.models.bundle.Bundle`.

TrigFlow data scale: ``x0 = sigma_d * latent`` (``meta.sigma_d``); ``Bundle.decode`` maps TrigFlow
samples ``[B, C, H, W]`` to pixels ``[B, 3, H', W']`` in ``[-1, 1]`` (``None``: samples are pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Family:
    """One model family. Only ``name``, ``load_folder`` and ``write_folder`` are required.

    * ``load_folder(path, meta, **options) -> Bundle``: a ``model.yaml`` folder of this family
      (students; for the built-in family teachers too). ``options``: ``dtype``, ``text_cache``,
      ``time_multiplier`` -- a family ignores those it has no use for (or refuses them with a
      :class:`~tbcm.errors.UserError`).
    * ``write_folder(bundle, folder)``: write the network (and, where the family keeps it, the
      prompt encoder) into ``folder``; ``model.yaml`` and the logvar head are written by the caller.
    * ``pipeline_prefixes`` / ``load_pipeline(path, **options) -> Bundle``: diffusers pipeline
      class names (``model_index.json`` ``_class_name``, by prefix) whose folders are teachers of
      this family, and their loader.
    * ``blank_latent(meta, shape) -> Tensor [C, h, w]``: the flow-space latent of a black image
      (the degenerate-sample filter); ``None``: ``meta.blank_value`` is that value.
    * ``pixel_space``: samples are images (``source=forward`` can train on real images).
    * ``guidance``: the classifier-free guidance scale the family's diffusers pipeline samples at
      by default (its ``guidance_scale``), what a distillation of its teachers trains around
      unless the teacher's ``model.yaml`` or the run says otherwise; ``None``: the paper's 4.5.
    * ``export(bundle, folder, out) -> str``: write a runnable pipeline folder for a student into
      ``folder`` (renamed to ``out`` when complete), returning how to load it; ``None``: ``no_export`` says (in one
      sentence) why there is none and how to generate instead.
    """

    name: str
    load_folder: Callable
    write_folder: Callable
    pipeline_prefixes: tuple[str, ...] = ()
    load_pipeline: Callable | None = None
    blank_latent: Callable | None = None
    pixel_space: bool = False
    guidance: float | None = None
    export: Callable | None = None
    no_export: str = "tbcm cannot export its students; generate with `tbcm sample`"
