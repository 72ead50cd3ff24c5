"""A tiny random ``StableDiffusion3Pipeline`` folder, saved with save_pretrained (nothing downloaded).

Two CLIP text encoders with projections (hidden 8 and 16: their 24-wide sequence is zero-padded
to T5's 32, as ``encode_prompt`` does), a T5 encoder, the word-level tokenizers of the FLUX tests,
an ``SD3Transformer2DModel`` on 16 x 8 x 8 latents (patch 2), an ``AutoencoderKL`` with 16 latent
channels (16 px images).
"""

from __future__ import annotations

from pathlib import Path

import torch

from tests.models.families.tiny_diffusers import tiny_clip_tokenizer, tiny_t5_encoder, tiny_t5_tokenizer


def tiny_clip_with_projection(vocab_size: int, hidden: int, max_positions: int):
    """``CLIPTextModelWithProjection``, two layers (SD3 takes the penultimate hidden state)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=max_positions, projection_dim=hidden,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return CLIPTextModelWithProjection(cfg).eval()


def tiny_sd3_transformer(joint_attention_dim: int = 32, pooled_projection_dim: int = 24, sample_size: int = 8,
                         sd35: bool = False):
    """2 heads of 8 (inner 16), two joint blocks; ``sd35``: SD3.5's qk RMS norm and a dual-attention block."""
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(
        sample_size=sample_size, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=joint_attention_dim, caption_projection_dim=16,
        pooled_projection_dim=pooled_projection_dim, pos_embed_max_size=8,
        qk_norm="rms_norm" if sd35 else None, dual_attention_layers=(0,) if sd35 else ())


def tiny_sd3_vae():
    """AutoencoderKL, 16 latent channels, downsampling 2 (SD3's scaling and shift factors)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 8), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4,
        sample_size=16, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False)


def save_tiny_sd3_pipeline(folder: Path, seed: int = 0, sd35: bool = False) -> Path:
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    tokenizer, tokenizer_2, tokenizer_3 = tiny_clip_tokenizer(), tiny_clip_tokenizer(), tiny_t5_tokenizer()
    text_encoder = tiny_clip_with_projection(len(tokenizer), 8, tokenizer.model_max_length)
    text_encoder_2 = tiny_clip_with_projection(len(tokenizer_2), 16, tokenizer_2.model_max_length)
    text_encoder_3 = tiny_t5_encoder(len(tokenizer_3))
    transformer = tiny_sd3_transformer(text_encoder_3.config.d_model, 8 + 16, sd35=sd35)
    with torch.no_grad():  # adaLN modulations start small: make the network do something
        for p in transformer.parameters():
            p.add_(0.02 * torch.randn_like(p))
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=tiny_sd3_vae(),
        text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
        text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3)
    pipe.save_pretrained(str(folder))
    return Path(folder)
