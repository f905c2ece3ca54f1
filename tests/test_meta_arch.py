import pytest
import torch
from detectron2.modeling import build_model

from clipzss_d2.modeling import CLIPZSS

from .helpers import TOY_CLASSES, TOY_UNSEEN, tiny_cfg, toy_batch


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model(tiny_cfg())


def test_registered_and_built_from_config(model):
    assert isinstance(model, CLIPZSS)
    # The training vocabulary holds the seen classes only, in dataset order.
    assert model.train_vocabulary == [c for c in TOY_CLASSES if c not in TOY_UNSEEN]
    assert model.vocabulary == TOY_CLASSES


def test_training_forward_backward(model):
    model.train()
    losses = model(toy_batch())
    assert set(losses) == {"loss_ce"}
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    for name in (
        "backbone.stem.conv1.weight",
        "embedding_head.projection.weight",
        "log_logit_scale",
    ):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_loss_decreases_on_learnable_pattern(model):
    """Coloured squares: a correct student must fit them quickly through the text classifier."""
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


def test_checkpoint_holds_only_student_weights(model):
    keys = model.state_dict().keys()
    assert all(k.startswith(("backbone.", "embedding_head.", "log_logit_scale")) for k in keys)
    model.eval()
    model(toy_batch(batch_size=1))
    # The text tower was loaded for the vocabulary, without any image encoder.
    assert model.text_classifier.clip_loaded and model.text_classifier._clip.visual is None
    assert not any("visual" in k or "text" in k for k in model.state_dict())


def test_fixed_logit_scale_is_not_a_parameter():
    model = build_model(tiny_cfg(extra_opts=["MODEL.CLIPZSS.LEARN_LOGIT_SCALE", False]))
    assert "log_logit_scale" not in dict(model.named_parameters())
    assert model.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
