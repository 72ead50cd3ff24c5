"""Exponential moving average of the student's parameters.

Works on plain tensors and on FSDP2's sharded parameters (DTensor) alike: the average lives in
the same layout as the parameters (each rank averages its own shard), and :meth:`full_state_dict`
gathers full tensors when a file or a sampler needs them.
"""

from __future__ import annotations

import torch
from torch import nn


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a (possibly sharded) parameter, on the CPU. Collective for DTensors."""
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().cpu()


class EMA:
    """``shadow = decay * shadow + (1 - decay) * param`` after every optimiser step, for the
    parameters that train (a LoRA student's frozen base has no average)."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {name: p.detach().clone() for name, p in module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        params = dict(module.named_parameters())
        # one fused kernel launch per device and dtype instead of one per tensor
        torch._foreach_lerp_(list(self.shadow.values()), [params[n].detach() for n in self.shadow], 1.0 - self.decay)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        return {name: full_tensor(t) for name, t in self.shadow.items()}

    @torch.no_grad()
    def load_full_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, t in self.shadow.items():
            full = state[name].to(t.device if not hasattr(t, "to_local") else t.to_local().device)
            if hasattr(t, "device_mesh"):  # re-shard like the parameter
                from torch.distributed.tensor import distribute_tensor

                full = distribute_tensor(full, t.device_mesh, t.placements)
            t.copy_(full)
