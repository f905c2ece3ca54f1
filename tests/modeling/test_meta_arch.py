import pytest
import torch
from detectron2.modeling import build_model

from clipzss_d2.modeling import CLIPZSS
from tests.helpers import TOY_CLASSES, TOY_UNSEEN, tiny_cfg, toy_batch


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model(tiny_cfg())


def test_registered_and_built_from_config(model):
    assert isinstance(model, CLIPZSS)
    # The training vocabulary holds the seen classes only, in dataset order.
    assert model.train_vocabulary == [c for c in TOY_CLASSES if c not in TOY_UNSEEN]
    assert model.vocabulary == TOY_CLASSES


BASELINE = [
    "MODEL.CLIPZSS.GLM.ENABLED",
    False,
    "MODEL.CLIPZSS.PLM.PSEUDO_LABELS",
    False,
    "MODEL.CLIPZSS.PLM.SYNTHESIZER",
    False,
]
SEG = {"loss_ce", "loss_focal", "loss_dice"}


@pytest.mark.parametrize(
    "glm,pseudo,synth,expected",
    [
        (True, True, True, SEG | {"loss_glm", "loss_bce"}),
        (False, False, False, SEG),
        (True, False, False, SEG | {"loss_glm"}),
        (False, True, False, SEG),
        (False, False, True, SEG | {"loss_bce"}),
        (False, True, True, SEG | {"loss_bce"}),
    ],
)
def test_training_losses_for_each_module_switch(glm, pseudo, synth, expected):
    torch.manual_seed(0)
    cfg = tiny_cfg(
        extra_opts=[
            "MODEL.CLIPZSS.GLM.ENABLED",
            glm,
            "MODEL.CLIPZSS.PLM.PSEUDO_LABELS",
            pseudo,
            "MODEL.CLIPZSS.PLM.SYNTHESIZER",
            synth,
        ]
    )
    model = build_model(cfg)
    model.train()
    losses = model(toy_batch())
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    params = dict(model.named_parameters())
    for name in (
        "backbone.stem.conv1.weight",
        "embedding_head.projection.weight",
        "log_logit_scale",
    ):
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name
    if synth:
        synth_grads = [p.grad for n, p in params.items() if n.startswith("plm.synthesizer.")]
        assert synth_grads and all(g is not None for g in synth_grads)
    # The teacher exists only when a module needs it, and is never trained or saved.
    assert (model.teacher is not None) == (glm or pseudo or synth)
    if model.teacher is not None:
        assert not model.teacher.training
        assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    assert not any(k.startswith(("_teacher", "teacher")) for k in model.state_dict())


def test_teacher_stays_frozen_and_out_of_the_module_tree(model):
    model.train()
    teacher = model.build_teacher()
    assert teacher is not None and not teacher.training
    assert all(m is not teacher for m in model.modules())
    n_teacher = sum(p.numel() for p in teacher.parameters())
    assert n_teacher > 0 and all(
        p is not q for p in teacher.parameters() for q in model.parameters()
    )


def test_loss_decreases_on_learnable_pattern():
    """Coloured squares: a correct student must fit them quickly through the text classifier."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg(extra_opts=BASELINE))
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = toy_batch(batch_size=4, size=64, seed=1)
    history = []
    for _ in range(40):
        loss = sum(model(batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert sum(history[-5:]) / 5 < 0.5 * sum(history[:5]) / 5, history


def test_inference_output_at_original_size(model):
    model.eval()
    batch = toy_batch(batch_size=2, size=48)
    batch[0]["height"], batch[0]["width"] = 97, 75  # resized input: output goes back to 97x75
    batch[1]["image"] = batch[1]["image"][:, :37, :41]
    batch[1]["height"], batch[1]["width"] = 37, 41  # odd size, padded inside the model
    out = model(batch)
    assert out[0]["sem_seg"].shape == (len(TOY_CLASSES), 97, 75)
    assert out[1]["sem_seg"].shape == (len(TOY_CLASSES), 37, 41)
    assert torch.isfinite(out[0]["sem_seg"]).all()


def test_vocabulary_set_at_run_time(model):
    model.eval()
    model.set_vocabulary("cat, sofa|couch")
    out = model(toy_batch(batch_size=1))
    assert out[0]["sem_seg"].shape[0] == 2
    with pytest.raises(ValueError, match="appears twice"):
        model.set_vocabulary("cat,cat")


def test_the_vocabulary_travels_with_each_input(model):
    """Inputs naming different vocabularies in one batch get the logits they would get alone
    with that vocabulary as the model's default; the default itself is untouched."""
    model.eval()
    batch = toy_batch(batch_size=3, size=32)
    vocabularies = [["cat", "sofa|couch"], None, ["red square", "dog", "tree"]]
    for x, v in zip(batch, vocabularies):
        if v is not None:
            x["vocabulary"] = v
    together = model(batch)
    assert model.vocabulary == TOY_CLASSES
    for x, v, out in zip(batch, vocabularies, together):
        alone = {k: val for k, val in x.items() if k != "vocabulary"}
        model.set_vocabulary(v or TOY_CLASSES)
        expected = model([alone])[0]["sem_seg"]
        assert out["sem_seg"].shape[0] == len(v or TOY_CLASSES)
        torch.testing.assert_close(out["sem_seg"], expected, rtol=1e-4, atol=1e-4)


def test_checkpoint_holds_only_student_weights(model):
    model.train()
    model(toy_batch(batch_size=1))  # builds the teacher
    keys = model.state_dict().keys()
    # Student plus the synthesizer (trainable, needed to resume); no teacher, no GLM bank.
    assert all(
        k.startswith(("backbone.", "embedding_head.", "log_logit_scale", "plm.synthesizer."))
        for k in keys
    )
    model.eval()
    model(toy_batch(batch_size=1))
    # The text tower was loaded for the vocabulary, without any image encoder.
    assert model.text_classifier.clip_loaded and model.text_classifier._clip.visual is None
    assert not any("visual" in k or "text" in k for k in model.state_dict())


def test_fixed_logit_scale_is_not_a_parameter():
    model = build_model(tiny_cfg(extra_opts=["MODEL.CLIPZSS.LEARN_LOGIT_SCALE", False]))
    assert "log_logit_scale" not in dict(model.named_parameters())
    assert model.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)


@pytest.mark.parametrize("resolution", ["feature", "input"])
def test_loss_resolution_modes_agree_on_a_constant_image(resolution):
    """On a single-class image both modes see the same targets, so their CE must agree."""
    torch.manual_seed(0)
    cfg = tiny_cfg(extra_opts=BASELINE + ["MODEL.CLIPZSS.LOSS.RESOLUTION", resolution])
    model = build_model(cfg)
    model.eval()  # BN in eval: identical forward in both runs
    batch = toy_batch(batch_size=1)
    batch[0]["sem_seg"][:] = 1
    with torch.no_grad():
        images = model.preprocess_images(batch)
        loss = model.losses(images, batch)["loss_ce"]
        logits = model.classify(
            model.embed(images.tensor), model.text_embeddings(model.train_vocabulary)
        )
    # Independent reference: mean CE of class 1 over the logit grid (feature) or the upsampled grid.
    if resolution == "input":
        logits = torch.nn.functional.interpolate(
            logits, size=(64, 64), mode="bilinear", align_corners=False
        )
    expected = -torch.log_softmax(logits, dim=1)[:, 1].mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_unknown_loss_resolution_is_refused():
    with pytest.raises(ValueError, match="LOSS.RESOLUTION"):
        build_model(tiny_cfg(extra_opts=["MODEL.CLIPZSS.LOSS.RESOLUTION", "half"]))


def test_channels_last_training_gives_the_nchw_losses_and_gradients():
    """TRAINING.CHANNELS_LAST changes the memory layout only: the stem sees NHWC crops, and
    every loss and gradient of the full method equals the default NCHW step's. In float64, so
    that rounding (2e-4 relative in fp32 through the tiny net's train-mode BNs) cannot hide a
    real difference."""
    runs = {}
    for channels_last in (False, True):
        torch.manual_seed(0)
        cfg = tiny_cfg(extra_opts=["MODEL.CLIPZSS.TRAINING.CHANNELS_LAST", channels_last])
        model = build_model(cfg).train().double()
        seen = []

        def record_layout(_, args, seen=seen):
            seen.append(args[0].is_contiguous(memory_format=torch.channels_last))

        model.backbone.stem.conv1.register_forward_pre_hook(record_layout)
        torch.manual_seed(1)  # the same K-Means seeds and dropout in both runs
        losses = model(toy_batch(batch_size=2, size=64))
        sum(losses.values()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        runs[channels_last] = (seen, losses, grads)
    assert runs[False][0] == [False] and runs[True][0] == [True]
    assert set(runs[True][1]) == set(runs[False][1]) >= {"loss_glm", "loss_bce", "loss_ce"}
    for name, value in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][name], value, atol=1e-6, rtol=1e-6)
    assert runs[True][2].keys() == runs[False][2].keys()
    for name, grad in runs[False][2].items():
        scale = grad.abs().max().clamp(min=1e-6)
        assert (runs[True][2][name] - grad).abs().max() <= 1e-6 * scale, name


def test_the_classifier_stays_on_the_device_between_steps(model, monkeypatch):
    """Training steps and inference read the classifier cached on the model's device: the text
    classifier is asked (stack + copy) once per vocabulary, and the cache is bounded."""
    classifier = model.text_classifier
    calls = []
    real_call = type(classifier).__call__
    monkeypatch.setattr(
        type(classifier),
        "__call__",
        lambda self, entries: calls.append(list(entries)) or real_call(self, entries),
    )
    model.train()
    for _ in range(2):
        model(toy_batch(batch_size=1, size=64))
    assert calls == [model.train_vocabulary]
    first = model.text_embeddings(model.train_vocabulary)
    assert first is model.text_embeddings(model.train_vocabulary) and first.device == model.device
    torch.testing.assert_close(first, real_call(classifier, model.train_vocabulary), rtol=0, atol=0)
    for k in range(classifier.DEVICE_CACHE_SIZE):  # other vocabularies push it out
        model.text_embeddings([f"thing {k}", "cat"])
    calls.clear()
    assert model.text_embeddings(model.train_vocabulary) is not first
    assert calls == [model.train_vocabulary]
