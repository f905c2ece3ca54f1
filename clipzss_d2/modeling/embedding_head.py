"""Dense heads that turn backbone features into per-pixel embeddings in CLIP's joint space.

A closed-set segmenter becomes an open-vocabulary one by swapping its last classification layer
for a projection to the CLIP dimension; heads are in a registry so any decoder can be plugged in.
"""

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
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


@EMBEDDING_HEAD_REGISTRY.register()
class MLPEmbeddingHead(nn.Module):
    """SegFormer's all-MLP decoder with its classifier replaced by a projection to EMBED_DIM.

    Per level: a linear map (1x1 conv) to `channels`, bilinear resize to the `output_stride`
    grid; concat (coarsest level first, as SegFormer does), fuse with 1x1 conv + norm + ReLU,
    dropout, project. SegFormer decodes at stride 4; stride 8 keeps 4x fewer pixels through the
    fuse, projection and classification, and the logits are upsampled to the image only once.
    """

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        embed_dim: int,
        channels: int = 256,
        output_stride: int = 8,
        norm: str = "BN",
        dropout: float = 0.1,
    ):
        super().__init__()
        # coarsest first: SegFormer's concat order [c4, c3, c2, c1]
        self.in_features = sorted(input_shape, key=lambda k: -input_shape[k].stride)
        self.linear = nn.ModuleList(
            Conv2d(input_shape[f].channels, channels, kernel_size=1) for f in self.in_features
        )
        n = len(self.in_features)
        self.fuse = Conv2d(
            n * channels,
            channels,
            kernel_size=1,
            bias=not norm,
            norm=get_norm(norm, channels),
            activation=F.relu,
        )
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.projection = Conv2d(channels, embed_dim, kernel_size=1)
        nn.init.normal_(self.projection.weight, std=0.01)
        nn.init.zeros_(self.projection.bias)
        self.output_stride = output_stride
        self._strides = {f: input_shape[f].stride for f in self.in_features}
        self._finest_stride = self._strides[self.in_features[-1]]
        same = [f for f in self.in_features if self._strides[f] == output_stride]
        self._grid_feature = same[0] if same else None
        if not same and output_stride % self._finest_stride:
            raise ValueError(
                f"Output stride {output_stride} must be an input level's stride or a multiple "
                f"of the finest one ({self._finest_stride})."
            )

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.CLIPZSS.MLP_HEAD
        missing = [f for f in head.IN_FEATURES if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.CLIPZSS.MLP_HEAD.IN_FEATURES asks for {missing}, but the backbone only "
                f"outputs {sorted(input_shape)}."
            )
        finest = min(input_shape[f].stride for f in head.IN_FEATURES)
        if head.OUTPUT_STRIDE < finest:
            raise ValueError(
                f"MODEL.CLIPZSS.MLP_HEAD.OUTPUT_STRIDE = {head.OUTPUT_STRIDE} is finer than the "
                f"finest input feature (stride {finest})."
            )
        return {
            "input_shape": {f: input_shape[f] for f in head.IN_FEATURES},
            "embed_dim": cfg.MODEL.CLIPZSS.EMBED_DIM,
            "channels": head.CHANNELS,
            "output_stride": head.OUTPUT_STRIDE,
            "norm": head.NORM,
            "dropout": head.DROPOUT,
        }

    def forward(self, features):
        # The grid is read off a tensor's shape (not computed in Python) so that traced and
        # exported models keep dynamic input sizes.
        if self._grid_feature is not None:
            size = features[self._grid_feature].shape[-2:]
        else:
            finest = features[self.in_features[-1]].shape[-2:]
            ratio = self.output_stride // self._finest_stride
            size = (finest[0] // ratio, finest[1] // ratio)
        maps = []
        for name, linear in zip(self.in_features, self.linear):
            x = linear(features[name])
            if self._strides[name] != self.output_stride:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            maps.append(x)
        return self.projection(self.dropout(self.fuse(torch.cat(maps, dim=1))))


def build_embedding_head(cfg, input_shape) -> nn.Module:
    return EMBEDDING_HEAD_REGISTRY.get(cfg.MODEL.CLIPZSS.HEAD_NAME)(cfg, input_shape)
