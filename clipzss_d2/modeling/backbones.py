"""Config builders for detectron2's Swin and ViT backbones and for timm models.

detectron2 ships both modules but only builds them through LazyConfig; registering builders in
BACKBONE_REGISTRY lets `MODEL.BACKBONE.NAME` pick them like the ResNets. The ViT is wrapped in
ViTDet's SimpleFeaturePyramid so dense heads get stride-4..32 maps (p2..p5).
"""

import math
import os
from collections.abc import Sequence

import timm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.swin import SwinTransformer
from detectron2.modeling.backbone.vit import SimpleFeaturePyramid, ViT

from ..checkpoint import torch_load_safely
from ..utils.weights import WeightsUnavailableError, resolve_model_weights


@BACKBONE_REGISTRY.register()
def build_clipzss_swin_backbone(cfg, input_shape):
    """Swin Transformer; features "p0".."p3" at strides 4, 8, 16, 32."""
    s = cfg.MODEL.SWIN
    swin = SwinTransformer(
        pretrain_img_size=s.PRETRAIN_IMG_SIZE,
        patch_size=s.PATCH_SIZE,
        in_chans=input_shape.channels,
        embed_dim=s.EMBED_DIM,
        depths=tuple(s.DEPTHS),
        num_heads=tuple(s.NUM_HEADS),
        window_size=s.WINDOW_SIZE,
        mlp_ratio=s.MLP_RATIO,
        drop_path_rate=s.DROP_PATH_RATE,
        ape=s.APE,
        out_indices=tuple(int(f.lstrip("p")) for f in s.OUT_FEATURES),
        use_checkpoint=s.USE_CHECKPOINT,
    )
    if s.PRETRAINED:
        load_swin_imagenet(swin, s.PRETRAINED)
    return swin


@BACKBONE_REGISTRY.register()
def build_clipzss_vit_backbone(cfg, input_shape):
    """Plain ViT + simple feature pyramid; features "p2".."p5" at strides 4, 8, 16, 32."""
    v = cfg.MODEL.VIT
    vit = ViT(
        img_size=v.IMG_SIZE,
        patch_size=v.PATCH_SIZE,
        in_chans=input_shape.channels,
        embed_dim=v.EMBED_DIM,
        depth=v.DEPTH,
        num_heads=v.NUM_HEADS,
        drop_path_rate=v.DROP_PATH_RATE,
        window_size=v.WINDOW_SIZE,
        window_block_indexes=tuple(v.WINDOW_BLOCK_INDEXES),
        use_rel_pos=v.USE_REL_POS,
        pretrain_img_size=v.PRETRAIN_IMG_SIZE,
        out_feature="last_feat",
    )
    return SimpleFeaturePyramid(
        vit,
        in_feature="last_feat",
        out_channels=v.OUT_CHANNELS,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        norm="LN",
        square_pad=0,
    )


class TimmBackbone(Backbone):
    """A timm hierarchical model (``features_only``) as a detectron2 Backbone.

    Gives the paper's light students (SegFormer's MiT = timm's ``pvt_v2_b*``, SegNeXt-like
    ConvNets, ...) without copying their code. Features are named by stride level like the ViT
    pyramid above: "p2" (stride 4) .. "p5" (stride 32).
    """

    def __init__(
        self,
        model_name: str,
        *,
        out_features: Sequence[str] = ("p2", "p3", "p4", "p5"),
        pretrained: str = "",
        drop_path_rate: float = 0.0,
        in_chans: int = 3,
    ):
        super().__init__()
        probe = timm.create_model(model_name, features_only=True, pretrained=False)
        names = [f"p{int(math.log2(r))}" for r in probe.feature_info.reduction()]
        del probe
        missing = [f for f in out_features if f not in names]
        if missing:
            raise ValueError(
                f"MODEL.TIMM.OUT_FEATURES asks for {missing}; {model_name} gives {names}."
            )
        is_file = bool(pretrained) and os.path.isfile(os.path.expanduser(pretrained))
        self.model = timm.create_model(
            pretrained if pretrained and not is_file else model_name,  # "name.tag" downloads
            features_only=True,
            out_indices=tuple(names.index(f) for f in out_features),
            in_chans=in_chans,
            drop_path_rate=drop_path_rate,
            pretrained=bool(pretrained),
            pretrained_cfg_overlay={"file": os.path.expanduser(pretrained)} if is_file else None,
        )
        self._out_features = list(out_features)
        info = self.model.feature_info
        self._out_feature_strides = dict(zip(out_features, info.reduction()))
        self._out_feature_channels = dict(zip(out_features, info.channels()))

    def forward(self, x):
        return dict(zip(self._out_features, self.model(x)))

    @property
    def size_divisibility(self) -> int:
        return max(self._out_feature_strides.values())


@BACKBONE_REGISTRY.register()
def build_clipzss_timm_backbone(cfg, input_shape):
    """timm model named by MODEL.TIMM.NAME; ImageNet weights from MODEL.TIMM.PRETRAINED."""
    t = cfg.MODEL.TIMM
    name, pretrained = t.NAME, t.PRETRAINED
    if pretrained and not os.path.isfile(os.path.expanduser(pretrained)):
        tag_model = pretrained.partition(".")[0]
        if tag_model != name:
            raise ValueError(
                f"MODEL.TIMM.PRETRAINED = {pretrained!r} is not a tag of MODEL.TIMM.NAME = "
                f"{name!r} (expected e.g. '{name}.in1k') nor an existing file."
            )
    try:
        return TimmBackbone(
            name,
            out_features=tuple(t.OUT_FEATURES),
            pretrained=pretrained,
            drop_path_rate=t.DROP_PATH_RATE,
            in_chans=input_shape.channels,
        )
    except (OSError, RuntimeError) as e:
        if not pretrained:
            raise
        raise WeightsUnavailableError(
            f"MODEL.TIMM.PRETRAINED = {pretrained!r} could not be loaded ({type(e).__name__}: "
            f"{e}). Offline: download it elsewhere and give the file's path, or set "
            f'MODEL.TIMM.PRETRAINED "" for random init (e.g. when MODEL.WEIGHTS holds a '
            f"trained student)."
        ) from e


def load_swin_imagenet(backbone: SwinTransformer, path: str) -> None:
    """Load an official Swin ImageNet checkpoint (microsoft/Swin-Transformer release format,
    which detectron2's SwinTransformer mirrors key for key); the classifier is dropped."""
    state = torch_load_safely(resolve_model_weights(path, "MODEL.SWIN.PRETRAINED"))
    state = state.get("model", state)
    state = {k: v for k, v in state.items() if not k.startswith(("head.", "norm."))}
    incompatible = backbone.load_state_dict(state, strict=False)
    missing = [k for k in incompatible.missing_keys if "relative_position_index" not in k]
    missing = [k for k in missing if not k.startswith("norm")]  # per-output norms are new
    if missing:
        raise ValueError(f"MODEL.SWIN.PRETRAINED = {path!r} lacks {missing[:5]} ...")
