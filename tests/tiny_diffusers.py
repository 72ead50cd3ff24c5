"""Tiny real diffusers / transformers components with random weights, saved with save_pretrained.

Nothing is downloaded: the Gemma tokenizer is built from a word list with the ``tokenizers``
library, every model from a small config.
"""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ("a photo of cat dog red blue green house tree car on the in under sky sun big small "
         "painting drawing city night with and bird flower").split()


def tiny_gemma_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>", padding_side="right")


def tiny_gemma2(vocab_size: int, hidden: int = 32):
    from transformers import Gemma2Config, Gemma2Model

    cfg = Gemma2Config(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=2048,
                       pad_token_id=0, bos_token_id=2, eos_token_id=1)
    return Gemma2Model(cfg).eval()


def tiny_sana_transformer(caption_channels: int = 32, sprint_style: bool = False, sample_size: int = 16,
                          guidance_embeds: bool = False):
    from diffusers import SanaTransformer2DModel

    return SanaTransformer2DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16,
        caption_channels=caption_channels, mlp_ratio=2.5, sample_size=sample_size, patch_size=1,
        qk_norm="rms_norm_across_heads" if sprint_style else None, guidance_embeds=guidance_embeds)


def tiny_dc_ae():
    from diffusers import AutoencoderDC

    return AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=8,
        encoder_block_types=("ResBlock", "ResBlock"), decoder_block_types=("ResBlock", "ResBlock"),
        encoder_block_out_channels=(8, 16), decoder_block_out_channels=(8, 16),
        encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1),
        encoder_qkv_multiscales=((), ()), decoder_qkv_multiscales=((), ()),
        upsample_block_type="interpolate", downsample_block_type="stride_conv",
        decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407)


def save_tiny_sana_pipeline(folder: Path, sprint_style: bool = False, seed: int = 0) -> Path:
    """A SanaPipeline folder: transformer (latent 4 x 16 x 16), DC-AE (f2, 32 px), Gemma-2, tokenizer."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SanaPipeline

    torch.manual_seed(seed)
    tokenizer = tiny_gemma_tokenizer()
    text_encoder = tiny_gemma2(len(tokenizer))
    transformer = tiny_sana_transformer(caption_channels=text_encoder.config.hidden_size, sprint_style=sprint_style)
    if sprint_style:  # a dense time embedding: the network sees tau, not 1000 tau
        transformer.register_to_config(timestep_scale=0.001)
    pipe = SanaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=tiny_dc_ae(), transformer=transformer,
                        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    pipe.save_pretrained(str(folder))
    return Path(folder)
