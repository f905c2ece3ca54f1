"""Training-only parts of CLIP-ZSS: the frozen CLIP teacher, GLM, PLM and the criterion.

This package is the line the deployable student does not cross: the predictor, demo, export
and web demo build the model with MODEL.CLIPZSS.STUDENT_ONLY and never import anything below
it (tests/modeling/test_student_only.py). ``CLIPZSS.from_config`` imports ``training_modules`` only
when it builds a model for training.
"""
