"""The student, its text classifier and inference, and CLIP alone (the training-free baseline);
training-only parts live in `training/`."""

from .backbones import build_clipzss_swin_backbone, build_clipzss_vit_backbone
from .clip_alone import CLIPAlone
from .clip_loading import CLIPWeightsUnavailableError, create_clip_model
from .embedding_head import (
    EMBEDDING_HEAD_REGISTRY,
    DeepLabV3PlusEmbeddingHead,
    build_embedding_head,
)
from .meta_arch import CLIPZSS
from .open_vocabulary import OpenVocabularySegmenter
from .text_classifier import TEMPLATE_SETS, TextClassifier, build_text_classifier
