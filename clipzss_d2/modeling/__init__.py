"""Student model, text classifier and training-only teacher modules."""

from .clip_loading import CLIPWeightsUnavailableError, create_clip_model
