"""Dense heads that turn backbone features into per-pixel embeddings in CLIP's joint space.

A closed-set segmenter becomes an open-vocabulary one by swapping its last classification layer
for a projection to the CLIP dimension; heads are in a registry so any decoder can be plugged in.
"""

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.projects.deeplab import DeepLabV3PlusHead
from detectron2.utils.registry import Registry
from torch import nn

EMBEDDING_HEAD_REGISTRY = Registry("CLIPZSS_EMBEDDING_HEAD")
EMBEDDING_HEAD_REGISTRY.__doc__ = """
Heads mapping backbone features to C-dimensional per-pixel embeddings (C = CLIP joint dim).
Registered classes are built with `(cfg, input_shape)` and expose `output_stride`.
"""


@EMBEDDING_HEAD_REGISTRY.register()
class DeepLabV3PlusEmbeddingHead(nn.Module):
    """DeepLabV3+ decoder (detectron2's) followed by a 1x1 projection to the embedding dimension.

    ASPP uses global image pooling so the model runs on any input size (detectron2's fixed
    pooling window would tie inference to the training crop).
    """

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        embed_dim: int,
        project_channels: list[int],
        aspp_dilations: list[int],
        aspp_dropout: float,
        decoder_channels: list[int],
        norm: str,
        use_depthwise_separable_conv: bool = False,
    ):
        super().__init__()
        self.decoder = DeepLabV3PlusHead(
            input_shape,
            project_channels=project_channels,
            aspp_dilations=aspp_dilations,
            aspp_dropout=aspp_dropout,
            decoder_channels=decoder_channels,
            common_stride=min(s.stride for s in input_shape.values()),
            norm=norm,
            train_size=None,
            num_classes=None,  # decoder only: we add our own projection
            use_depthwise_separable_conv=use_depthwise_separable_conv,
        )
        self.projection = Conv2d(decoder_channels[0], embed_dim, kernel_size=1)
        nn.init.normal_(self.projection.weight, std=0.01)
        nn.init.zeros_(self.projection.bias)
        self.output_stride = min(s.stride for s in input_shape.values())

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.SEM_SEG_HEAD
        in_features = head.IN_FEATURES
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.IN_FEATURES asks for {missing}, but the backbone only "
                f"outputs {sorted(input_shape)} (MODEL.RESNETS.OUT_FEATURES)."
            )
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in in_features},
            "embed_dim": cfg.MODEL.CLIPZSS.EMBED_DIM,
            "project_channels": head.PROJECT_CHANNELS,
            "aspp_dilations": head.ASPP_DILATIONS,
            "aspp_dropout": head.ASPP_DROPOUT,
            "decoder_channels": [head.CONVS_DIM] * (len(in_features) - 1) + [head.ASPP_CHANNELS],
            "norm": head.NORM,
            "use_depthwise_separable_conv": head.USE_DEPTHWISE_SEPARABLE_CONV,
        }

    def forward(self, features):
        return self.projection(self.decoder.layers(features))


def build_embedding_head(cfg, input_shape) -> nn.Module:
    return EMBEDDING_HEAD_REGISTRY.get(cfg.MODEL.CLIPZSS.HEAD_NAME)(cfg, input_shape)
