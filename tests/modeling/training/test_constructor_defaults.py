"""Constructor defaults of the configurable training modules equal the config's defaults
(`get_clipzss_cfg()`), so a module built without a config is the module a config builds."""

import inspect

from clipzss_d2.config import get_clipzss_cfg
from clipzss_d2.modeling.training.criterion import CLIPZSSCriterion
from clipzss_d2.modeling.training.glm import GlobalLearningModule
from clipzss_d2.modeling.training.plm import (
    PixelLearningModule,
    PseudoLabeler,
    PseudoWeightSynthesizer,
)


def plain(value):
    return list(value) if isinstance(value, tuple | list) else value


def assert_defaults(fn, values: dict, skip=()):
    """Every parameter of `fn` with a default, named in `values`, defaults to that value."""
    checked = []
    for name, param in inspect.signature(fn).parameters.items():
        if param.default is inspect.Parameter.empty or name in skip:
            continue
        assert name in values, f"{fn.__qualname__}: {name} has a default but no config key"
        assert plain(param.default) == plain(values[name]), (
            f"{fn.__qualname__}: {name} defaults to {param.default!r}, the config to "
            f"{values[name]!r}"
        )
        checked.append(name)
    return checked


def test_plm_defaults_are_the_configs():
    cfg = get_clipzss_cfg()
    plm = PixelLearningModule.from_config(cfg)
    assert len(assert_defaults(PixelLearningModule.__init__, plm)) == 18
    labeler = {
        "window_sizes": plm["window_sizes"],
        "iters": plm["kmeans_iters"],
        "metric": plm["kmeans_metric"],
        "threshold": plm["fusion_threshold"],
        "fusion_mode": plm["fusion_mode"],
        "min_region_patches": plm["min_region_patches"],
        "max_regions": plm["max_regions"],
    }
    assert_defaults(PseudoLabeler.__init__, labeler)
    synthesizer = {
        "num_layers": plm["synth_layers"],
        "num_heads": plm["synth_heads"],
        "use_patch_tokens": plm["synth_use_patch_tokens"],
    }
    # the decoder layers' own shape (no config key)
    assert_defaults(PseudoWeightSynthesizer.__init__, synthesizer, skip=("ffn_ratio", "dropout"))


def test_glm_and_criterion_defaults_are_the_configs():
    cfg = get_clipzss_cfg()
    assert len(
        assert_defaults(GlobalLearningModule.__init__, GlobalLearningModule.from_config(cfg))
    )
    assert len(assert_defaults(CLIPZSSCriterion.__init__, CLIPZSSCriterion.from_config(cfg)))
