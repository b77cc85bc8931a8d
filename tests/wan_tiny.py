"""A tiny, randomly initialised Wan-Animate pipeline built from config, for tests and the GPU smoke.

Same component classes and wiring as Wan2.2-Animate-14B-Diffusers, a few thousand parameters each:
a Unigram tokenizer made with `tokenizers` (UMT5's conventions: <pad> 0, </s> 1 appended), a UMT5
encoder, a CLIP vision encoder, the Wan VAE (8x space, 4x time), the Animate transformer with its
face motion encoder (32 px faces) and the UniPC flow scheduler. `save_tiny_wan(folder)` writes it
with save_pretrained; the product loads it back through its own loading code.
"""
from __future__ import annotations

from pathlib import Path

FACE_SIZE = 32
TEXT_WIDTH = 16  # UMT5 d_model = the transformer's text_dim
IMAGE_WIDTH = 16  # CLIP hidden size = the transformer's image_dim


def _tokenizer():
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import T5TokenizerFast

    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    words = ("the", "a", "and", "of", "in", "on", "with", "person", "character", "dancing", "walking", "waving")
    pieces = ["▁", *(f"▁{c}" for c in letters), *(letters + "0123456789.,!?'-"), *(f"▁{w}" for w in words)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(p, -2.0 + 0.1 * len(p)) for p in pieces]
    tok = Tokenizer(Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"],
                                                       special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0,
                           additional_special_tokens=[], model_max_length=512, padding_side="right")


def build_tiny_wan():
    """The pipeline's components, randomly initialised with fixed seeds."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanAnimatePipeline, WanAnimateTransformer3DModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    tokenizer = _tokenizer()
    torch.manual_seed(0)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=TEXT_WIDTH, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
        relative_attention_num_buckets=8, relative_attention_max_distance=32, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0,
    )).eval()
    torch.manual_seed(1)
    image_encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=IMAGE_WIDTH, intermediate_size=32, projection_dim=16, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8,
    )).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_center_crop=True)
    torch.manual_seed(2)
    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, attn_scales=[],
                           temperal_downsample=[False, True, True], dropout=0.0).eval()
    torch.manual_seed(3)
    transformer = WanAnimateTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=36, latent_channels=16,
        out_channels=16, text_dim=TEXT_WIDTH, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=IMAGE_WIDTH, added_kv_proj_dim=24, rope_max_seq_len=1024,
        pos_embed_seq_len=None, motion_encoder_channel_sizes={"4": 8, "8": 8, "16": 8, "32": 8},
        motion_encoder_size=FACE_SIZE, motion_style_dim=8, motion_dim=4, motion_encoder_dim=8,
        face_encoder_hidden_dim=8, face_encoder_num_heads=2, inject_face_latents_blocks=2, motion_encoder_batch_size=8,
    ).eval()
    scheduler = UniPCMultistepScheduler(num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=5.0)
    return WanAnimatePipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                              image_processor=image_processor, image_encoder=image_encoder, transformer=transformer)


def save_tiny_wan(folder: Path) -> Path:
    build_tiny_wan().save_pretrained(str(folder))
    return folder


if __name__ == "__main__":
    import sys

    print(save_tiny_wan(Path(sys.argv[1])))
