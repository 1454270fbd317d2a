"""Hugging Face transformers' checkpoints: Swin, Swinv2 and ViT (v5 state_dicts and the v4 names the
hub's files carry; with a classifier or without), DINOv2 (with and without registers), CLIP and
SigLIP image towers.
"""
from __future__ import annotations

import re

from swin_jax.layouts.engine import Layout, Rule
from swin_jax.layouts.timm import SWIN_BUFFERS

R = Rule


def _hugging_face_swinv2(prefix: str, head: Rule) -> tuple[Rule, ...]:
    """transformers' Swinv2: v4 names in v4 and v5 alike; separate q/k/v Linear layers, the
    key's without a bias (timm's fused `qkv.weight` and its `q_bias`, `v_bias`); `layernorm_before`
    is timm's norm1, which V2 applies after the attention."""
    block = prefix + "encoder.layers.{i}.blocks.{j}."
    attn = block + "attention.self."
    return (
        R("patch_embed.proj.{rest}", prefix + "embeddings.patch_embeddings.projection.{rest}"),
        R("patch_embed.norm.{rest}", prefix + "embeddings.norm.{rest}"),
        R("layers.{i}.blocks.{j}.norm1.{rest}", block + "layernorm_before.{rest}"),
        R("layers.{i}.blocks.{j}.norm2.{rest}", block + "layernorm_after.{rest}"),
        R("layers.{i}.blocks.{j}.attn.qkv.weight", tuple(attn + f"{n}.weight" for n in ("query", "key", "value")),
          "split3"),
        R("layers.{i}.blocks.{j}.attn.q_bias", attn + "query.bias"),
        R("layers.{i}.blocks.{j}.attn.v_bias", attn + "value.bias"),
        R("layers.{i}.blocks.{j}.attn.logit_scale", attn + "logit_scale"),
        R("layers.{i}.blocks.{j}.attn.cpb_mlp.{rest}", attn + "continuous_position_bias_mlp.{rest}"),
        R("layers.{i}.blocks.{j}.attn.proj.{rest}", block + "attention.output.dense.{rest}"),
        R("layers.{i}.blocks.{j}.mlp.fc1.{rest}", block + "intermediate.dense.{rest}"),
        R("layers.{i}.blocks.{j}.mlp.fc2.{rest}", block + "output.dense.{rest}"),
        R("layers.{i}.downsample.{rest}", prefix + "encoder.layers.{i-1}.downsample.{rest}"),
        R("norm.{rest}", prefix + "layernorm.{rest}"),
        head,
    )


def _hugging_face(name: str, description: str, v4: bool, bare: bool) -> Layout:
    """transformers' Swin/Swinv2/ViT: v5 state_dicts (q_proj, ..., `vit.layers`) or the v4 names
    that checkpoint files on the hub carry (attention.self.query, ..., `vit.encoder.layer`);
    Swinv2 has the v4 names in both. `bare`: SwinModel / Swinv2Model / ViTModel (no prefix, no
    classifier) instead of *ForImageClassification."""
    swin, swinv2, vit = ("", "", "") if bare else ("swin.", "swinv2.", "vit.")
    sb = swin + "encoder.layers.{i}.blocks.{j}."
    vb = vit + ("encoder.layer.{i}." if v4 else "layers.{i}.")
    if v4:
        qkv = ("attention.self.query", "attention.self.key", "attention.self.value")
        vit_qkv = tuple(k.replace(".self.", ".attention.") for k in qkv)
        proj, table, fc1, fc2 = "attention.output.dense", "attention.self.relative_position_bias_table", \
            "intermediate.dense", "output.dense"
    else:
        qkv = vit_qkv = ("attention.q_proj", "attention.k_proj", "attention.v_proj")
        proj, table, fc1, fc2 = "attention.o_proj", "attention.relative_position_bias.relative_position_bias_table", \
            "mlp.fc1", "mlp.fc2"
    if bare:
        why = ("transformers' SwinModel / Swinv2Model / ViTModel has no classifier; use the layout without _model, "
               "or num_classes=0")
        heads = {"swin": R("head.fc.{rest}", (), why=why), "vit": R("head.{rest}", (), why=why)}
    else:
        heads = {"swin": R("head.fc.{rest}", "classifier.{rest}"), "vit": R("head.{rest}", "classifier.{rest}")}
    first_swin = re.escape(sb.format(i=0, j=0) + qkv[0]) + r"\.weight"
    first_vit = re.escape(vb.format(i=0) + vit_qkv[0]) + r"\.weight"
    # Swinv2's names are the same in v4 and v5: its files are detected as the v5 layouts, listed first
    first_swinv2 = re.escape(swinv2 + "encoder.layers.0.blocks.0.attention.self.logit_scale")
    signature = f"^({first_swin}|{first_vit}{'' if v4 else '|' + first_swinv2})$"
    return Layout(name, description, signature, {
        "swin": (
            R("patch_embed.proj.{rest}", swin + "embeddings.patch_embeddings.projection.{rest}"),
            R("patch_embed.norm.{rest}", swin + "embeddings.norm.{rest}"),
            R("layers.{i}.blocks.{j}.norm1.{rest}", sb + "layernorm_before.{rest}"),
            R("layers.{i}.blocks.{j}.norm2.{rest}", sb + "layernorm_after.{rest}"),
            R("layers.{i}.blocks.{j}.attn.qkv.{rest}", tuple(sb + f"{q}.{{rest}}" for q in qkv), "split3"),
            R("layers.{i}.blocks.{j}.attn.proj.{rest}", sb + proj + ".{rest}"),
            R("layers.{i}.blocks.{j}.attn.relative_position_bias_table", sb + table),
            R("layers.{i}.blocks.{j}.mlp.fc1.{rest}", sb + fc1 + ".{rest}"),
            R("layers.{i}.blocks.{j}.mlp.fc2.{rest}", sb + fc2 + ".{rest}"),
            R("layers.{i}.downsample.{rest}", swin + "encoder.layers.{i-1}.downsample.{rest}"),
            R("norm.{rest}", swin + "layernorm.{rest}"),
            heads["swin"],
        ),
        "swinv2": _hugging_face_swinv2(swinv2, heads["swin"]),
        "vit": (
            R("cls_token", vit + "embeddings.cls_token"),
            R("pos_embed", vit + "embeddings.position_embeddings"),
            R("patch_embed.proj.{rest}", vit + "embeddings.patch_embeddings.projection.{rest}"),
            R("blocks.{i}.norm1.{rest}", vb + "layernorm_before.{rest}"),
            R("blocks.{i}.norm2.{rest}", vb + "layernorm_after.{rest}"),
            R("blocks.{i}.attn.qkv.{rest}", tuple(vb + f"{q}.{{rest}}" for q in vit_qkv), "split3"),
            R("blocks.{i}.attn.proj.{rest}", vb + proj + ".{rest}"),
            R("blocks.{i}.mlp.fc1.{rest}", vb + fc1 + ".{rest}"),
            R("blocks.{i}.mlp.fc2.{rest}", vb + fc2 + ".{rest}"),
            R("norm.{rest}", vit + "layernorm.{rest}"),
            R("fc_norm.{rest}", (), why="transformers' ViT pools the class token; use global_pool='token'"),
            heads["vit"],
        ),
    }, ignored=SWIN_BUFFERS + (r"^pooler\.",))  # ViTModel's tanh pooler is not on the classifier path


def _hf_dinov2(name: str, description: str, v4: bool) -> Layout:
    """transformers' Dinov2Model and Dinov2WithRegistersModel: v5 state_dicts (q_proj, ..., o_proj)
    or the v4 names of the hub's files (attention.attention.query, ..., attention.output.dense).
    LayerScale is `layer_scale1.lambda1`; the mask token is written as zeros; the position
    embedding has the class token's row (FOLDS['class_pos_row'])."""
    block = "encoder.layer.{i}."
    if v4:
        qkv = tuple(block + f"attention.attention.{n}.{{rest}}" for n in ("query", "key", "value"))
        proj, signature = block + "attention.output.dense.{rest}", r"^encoder\.layer\.0\.layer_scale1\.lambda1$"
    else:
        qkv = tuple(block + f"attention.{n}_proj.{{rest}}" for n in "qkv")
        proj, signature = block + "attention.o_proj.{rest}", r"^encoder\.layer\.0\.attention\.q_proj\.weight$"
    return Layout(name, description, signature, {"vit": (
        R("cls_token", "embeddings.cls_token"),
        R("reg_token", "embeddings.register_tokens"),
        R("pos_embed", "embeddings.position_embeddings"),
        R("patch_embed.proj.{rest}", "embeddings.patch_embeddings.projection.{rest}"),
        R("blocks.{i}.norm1.{rest}", block + "norm1.{rest}"),
        R("blocks.{i}.attn.qkv.{rest}", qkv, "split3"),
        R("blocks.{i}.attn.proj.{rest}", proj),
        R("blocks.{i}.ls1.gamma", block + "layer_scale1.lambda1"),
        R("blocks.{i}.norm2.{rest}", block + "norm2.{rest}"),
        R("blocks.{i}.mlp.{rest}", block + "mlp.{rest}"),
        R("blocks.{i}.ls2.gamma", block + "layer_scale2.lambda1"),
        R("norm.{rest}", "layernorm.{rest}"),
        R("head.{rest}", (), why="transformers' Dinov2Model has no classifier; use num_classes=0"),
    )}, zeros={"embeddings.mask_token": (1, "embed_dim")}, folds=("class_pos_row",))


def _hf_clip_blocks(block: str) -> tuple[Rule, ...]:
    """The encoder layers that transformers' CLIP and SigLIP share: pre-norm, separate q/k/v."""
    return (
        R("blocks.{i}.norm1.{rest}", block + "layer_norm1.{rest}"),
        R("blocks.{i}.attn.qkv.{rest}", tuple(block + f"self_attn.{n}_proj.{{rest}}" for n in "qkv"), "split3"),
        R("blocks.{i}.attn.proj.{rest}", block + "self_attn.out_proj.{rest}"),
        R("blocks.{i}.norm2.{rest}", block + "layer_norm2.{rest}"),
        R("blocks.{i}.mlp.{rest}", block + "mlp.{rest}"),
    )


def _hf_clip(name: str, description: str, prefix: str) -> Layout:
    """transformers' CLIP image tower: CLIPVisionModel (no prefix, no projection) or the image
    side of CLIPModel / CLIPVisionModelWithProjection files (`vision_model.`, with the bias-free
    `visual_projection` as timm's head). The class embedding is a vector, the position embedding
    an Embedding table without the batch axis; the patch convolution has no bias (timm's
    pre_norm=True models)."""
    if prefix:
        head = (R("head.weight", "visual_projection.weight"),
                R("head.bias", (), fixed=0.0, why="CLIP's visual_projection has no bias"))
    else:
        head = (R("head.{rest}", (), why="transformers' CLIPVisionModel has no projection; use num_classes=0, or "
                                         "the hf_clip layout, whose files have visual_projection"),)
    return Layout(name, description, "^" + re.escape(prefix + "pre_layrnorm.weight") + "$", {"vit": (
        R("cls_token", prefix + "embeddings.class_embedding", "flat_token"),
        R("pos_embed", prefix + "embeddings.position_embedding.weight", "no_batch_axis"),
        R("patch_embed.proj.weight", prefix + "embeddings.patch_embedding.weight"),
        R("patch_embed.proj.bias", (), why="CLIP's patch convolution has no bias; create the model with pre_norm=True"),
        R("norm_pre.{rest}", prefix + "pre_layrnorm.{rest}"),
        *_hf_clip_blocks(prefix + "encoder.layers.{i}."),
        R("norm.{rest}", prefix + "post_layernorm.{rest}"),
        *head,
    )}, ignored=(r"(^|\.)position_ids$",) + ((r"^(?!vision_model\.|visual_projection\.)",) if prefix else ()))


def _hf_siglip(name: str, description: str, prefix: str) -> Layout:
    """transformers' SigLIP image tower: SiglipVisionModel (no prefix) or the image side of
    SiglipModel files (`vision_model.`). No class token; the attention-pooling head's fused
    `in_proj` holds timm's `attn_pool.q` (first third) and `attn_pool.kv` (last two thirds)."""
    head = prefix + "head."
    return Layout(name, description, "^" + re.escape(prefix + "post_layernorm.weight") + "$", {"vit": (
        R("pos_embed", prefix + "embeddings.position_embedding.weight", "no_batch_axis"),
        R("patch_embed.proj.{rest}", prefix + "embeddings.patch_embedding.{rest}"),
        *_hf_clip_blocks(prefix + "encoder.layers.{i}."),
        R("norm.{rest}", prefix + "post_layernorm.{rest}"),
        R("attn_pool.latent", head + "probe"),
        R("attn_pool.q.{rest}", head + "attention.in_proj_{rest}", part=(0, 3)),
        R("attn_pool.kv.{rest}", head + "attention.in_proj_{rest}", part=(1, 3, 2)),
        R("attn_pool.proj.{rest}", head + "attention.out_proj.{rest}"),
        R("attn_pool.norm.{rest}", head + "layernorm.{rest}"),
        R("attn_pool.mlp.{rest}", head + "mlp.{rest}"),
        R("head.{rest}", (), why="SigLIP's image tower has no classifier; use num_classes=0"),
    )}, ignored=(r"(^|\.)position_ids$",) + ((r"^(?!vision_model\.)",) if prefix else ()))


TABLE: tuple[Layout, ...] = (
    _hf_dinov2("hf_dinov2", "transformers v5 Dinov2Model / Dinov2WithRegistersModel", False),
    # before hf_v4_model, whose ViT names are DINOv2's v4 names too
    _hf_dinov2("hf_v4_dinov2", "transformers v4 Dinov2Model / Dinov2WithRegistersModel names, as the hub's files hold "
                               "them", True),
    _hf_clip("hf_clip_vision", "transformers CLIPVisionModel (no projection)", ""),
    _hf_clip("hf_clip", "transformers CLIPModel / CLIPVisionModelWithProjection files: the image tower and "
                        "visual_projection (the text tower is ignored)", "vision_model."),
    # after the CLIP layouts, whose files have post_layernorm too
    _hf_siglip("hf_siglip_vision", "transformers SiglipVisionModel", ""),
    _hf_siglip("hf_siglip", "transformers SiglipModel files: the image tower (the text tower is ignored)",
               "vision_model."),
    _hugging_face("hf", "transformers v5 SwinForImageClassification / Swinv2ForImageClassification / "
                        "ViTForImageClassification", False, False),
    _hugging_face("hf_model", "transformers v5 SwinModel / Swinv2Model / ViTModel (no classifier)", False, True),
    _hugging_face("hf_v4", "transformers v4 names, as checkpoint files on the hub hold them "
                           "(Swinv2's are the same as hf's)", True, False),
    _hugging_face("hf_v4_model", "transformers v4 SwinModel / Swinv2Model / ViTModel names (no classifier)", True, True),
)
