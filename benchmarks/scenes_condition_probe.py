"""Does the scenes teacher's text conditioning tell apart prompts with the same words?

The built-in DiT conditions on one pooled prompt vector (masked mean of the encoder's tokens,
then ``text_proj``). This prints the cosine similarity of that vector between prompts that swap
colours, shapes or the relation, against a prompt with other words.

    python benchmarks/scenes_condition_probe.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as Fn

PROMPTS = ["a red circle left of a blue square", "a red circle right of a blue square",
           "a red circle above a blue square", "a blue circle left of a red square",
           "a red square left of a blue circle", "a green triangle left of a yellow circle"]


@torch.no_grad()
def main() -> None:
    from tbcm.models.bundle import load_bundle

    bundle = load_bundle("builtin:scenes", expect_kind="teacher")
    cond = bundle.encoder.encode(PROMPTS)
    mask = cond.mask.float()
    pooled = (cond.embeds * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    v = Fn.normalize(bundle.network.text_proj(pooled), dim=-1)
    sim = v @ v.T
    print(f"cosine similarity of the teacher's condition vector to {PROMPTS[0]!r}:")
    for p, s in zip(PROMPTS, sim[0].tolist()):
        print(f"  {s:.4f}  {p}")


if __name__ == "__main__":
    main()
