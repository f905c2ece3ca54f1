"""Config builders for detectron2's Swin and ViT backbones, so YAML configs can name them.

detectron2 ships both modules but only builds them through LazyConfig; registering builders in
BACKBONE_REGISTRY lets `MODEL.BACKBONE.NAME` pick them like the ResNets. The ViT is wrapped in
ViTDet's SimpleFeaturePyramid so dense heads get stride-4..32 maps (p2..p5).
"""

from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.swin import SwinTransformer
from detectron2.modeling.backbone.vit import SimpleFeaturePyramid, ViT


@BACKBONE_REGISTRY.register()
def build_clipzss_swin_backbone(cfg, input_shape):
    """Swin Transformer; features "p0".."p3" at strides 4, 8, 16, 32."""
    s = cfg.MODEL.SWIN
    return SwinTransformer(
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
