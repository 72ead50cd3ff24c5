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


# -- FLUX ---------------------------------------------------------------------------------------

def _word_level_tokenizer(specials: list[str], template: str, model_max_length: int, **tokens):
    """A word-level fast tokenizer over ``specials + WORDS``; ``template`` adds the special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(specials + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=tokens["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    used = sorted({s for s in specials if s in template.split()})
    tok.post_processor = processors.TemplateProcessing(single=template, special_tokens=[(s, vocab[s]) for s in used])
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length, padding_side="right",
                                   **tokens)


def tiny_clip_tokenizer(model_max_length: int = 8):
    """CLIP-like: ``<|startoftext|> words <|endoftext|>``, padded with ``<|endoftext|>`` (id 1)."""
    return _word_level_tokenizer(["<|startoftext|>", "<|endoftext|>", "<|unk|>"], "<|startoftext|> $A <|endoftext|>",
                                 model_max_length, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                 pad_token="<|endoftext|>", unk_token="<|unk|>")


def tiny_t5_tokenizer(model_max_length: int = 12):
    """T5-like: ``words </s>``, padded with ``<pad>`` (id 0)."""
    return _word_level_tokenizer(["<pad>", "</s>", "<unk>"], "$A </s>", model_max_length,
                                 eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def tiny_clip_text_model(vocab_size: int, hidden: int = 16, max_positions: int = 8):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=max_positions, projection_dim=hidden,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return CLIPTextModel(cfg).eval()


def tiny_t5_encoder(vocab_size: int, d_model: int = 32):
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=1, num_heads=2,
                   relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
                   feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return T5EncoderModel(cfg).eval()


def tiny_flux_transformer(joint_attention_dim: int = 32, pooled_projection_dim: int = 16,
                          guidance_embeds: bool = False):
    """Latent channels 4 (packed 2x2: in_channels 16), 2 heads of 8, one double and one single block."""
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=joint_attention_dim, pooled_projection_dim=pooled_projection_dim,
        guidance_embeds=guidance_embeds, axes_dims_rope=(2, 2, 4))


def tiny_flux_vae(sample_size: int = 16):
    """AutoencoderKL, 4 latent channels, downsampling 2: a 16 px image is an 8 x 8 latent."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4,
        sample_size=sample_size, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
        use_post_quant_conv=False)


def save_tiny_flux_pipeline(folder: Path, seed: int = 0, guidance_embeds: bool = False) -> Path:
    """A FluxPipeline folder: transformer (latent 4 x 8 x 8), AutoencoderKL (16 px), CLIP + T5 and tokenizers."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = tiny_clip_tokenizer(), tiny_t5_tokenizer()
    text_encoder = tiny_clip_text_model(len(tokenizer), max_positions=tokenizer.model_max_length)
    text_encoder_2 = tiny_t5_encoder(len(tokenizer_2))
    transformer = tiny_flux_transformer(joint_attention_dim=text_encoder_2.config.d_model,
                                        pooled_projection_dim=text_encoder.config.hidden_size,
                                        guidance_embeds=guidance_embeds)
    with torch.no_grad():  # adaLN modulations and the output layer start small: make the network do something
        for p in transformer.parameters():
            p.add_(0.02 * torch.randn_like(p))
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0), vae=tiny_flux_vae(),
                        text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
                        tokenizer_2=tokenizer_2, transformer=transformer)
    pipe.save_pretrained(str(folder))
    return Path(folder)
