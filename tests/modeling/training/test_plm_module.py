import math

import pytest
import torch
import torch.nn.functional as F

from clipzss_d2 import get_clipzss_cfg
from clipzss_d2.errors import UserInputError
from clipzss_d2.modeling.student import class_logits
from clipzss_d2.modeling.training.criterion import CLIPZSSCriterion
from clipzss_d2.modeling.training.plm.module import PixelLearningModule, bce_prototype_loss
from clipzss_d2.modeling.training.teacher import TeacherOutput

C, S = 16, 3


def world(b=2, seed=0):
    """32x32 images; teacher grid 4x4 with three planted regions: top half (A), bottom-left
    (B), bottom-right (D). Labels: B is seen class 0, everything else ignored."""
    g = torch.Generator().manual_seed(seed)
    dirs = F.normalize(torch.randn(3, C, generator=g), dim=-1)
    truth = torch.zeros(4, 4, dtype=torch.long)
    truth[2:, :2] = 1
    truth[2:, 2:] = 2
    tokens = dirs[truth] + 0.03 * torch.randn(b, 4, 4, C, generator=g)
    teacher = TeacherOutput(
        cls_embed=torch.randn(b, C, generator=g) * 3, patch_embed=tokens.permute(0, 3, 1, 2)
    )
    labels = torch.full((b, 32, 32), 255)
    labels[:, 16:, :16] = 0
    dense = F.normalize(torch.randn(b, C, 8, 8, generator=g), dim=1).requires_grad_(True)
    text = F.normalize(torch.randn(S, C, generator=g), dim=-1)
    return dense, labels, text, teacher, truth


def logits_of(module, out, dense, text, alpha):
    """The model's classification over [seen text; PLM's prototypes] (CLIPZSS.losses)."""
    logits = class_logits(dense, text, alpha)
    if out.prototypes.shape[1] == 0:
        return logits
    beta = module.pseudo_logit_scale if module.pseudo_logit_scale > 0 else alpha
    return torch.cat([logits, class_logits(dense, out.prototypes, beta)], 1)


def plm(**kw):
    torch.manual_seed(0)
    args = dict(embed_dim=C, synth_heads=4, synth_layers=1, fusion_threshold=0.9)
    args.update(kw)
    return PixelLearningModule(**args)


def test_pseudo_ids_only_on_ignored_pixels_and_shapes():
    dense, labels, text, teacher, _ = world()
    alpha = torch.tensor(10.0, requires_grad=True)
    out = plm()(dense, labels, text, teacher, alpha)
    targets, prototypes, pseudo_valid, losses = out
    assert prototypes.shape == (2, 2, C) and pseudo_valid.shape == (2, 2)
    torch.testing.assert_close(prototypes.norm(dim=-1), torch.ones(2, 2))
    assert pseudo_valid.all()
    is_pseudo = (targets >= S) & (targets != 255)
    assert (labels[is_pseudo] == 255).all()
    assert torch.equal(targets[labels != 255], labels[labels != 255])
    # top half and bottom-right are two different pseudo classes
    for b in range(2):
        top, bottom_right = targets[b, :16].unique(), targets[b, 16:, 16:].unique()
        assert len(top) == 1 and len(bottom_right) == 1
        assert {int(top), int(bottom_right)} == {S, S + 1}
    assert set(losses) == {"loss_bce"} and torch.isfinite(losses["loss_bce"])


def test_zero_one_and_many_pseudo_regions():
    dense, labels, text, teacher, _ = world()
    alpha = torch.tensor(10.0)
    no_ignore = torch.zeros_like(labels)
    out = plm()(dense, no_ignore, text, teacher, alpha)
    assert out.prototypes.shape == (2, 0, C) and out.pseudo_valid.shape == (2, 0)
    one = labels.clone()
    one[:, 16:, 16:] = 1  # only the top half stays ignored
    out = plm()(dense, one, text, teacher, alpha)
    assert out.prototypes.shape == (2, 1, C)
    assert set(out.targets[:, :16].unique().tolist()) == {S}
    # many regions: random 8x8 tokens, one seed per token (nothing merges: 64 regions, capped
    # to the 20 kept); image 1 is ignored on its two left token columns only
    g = torch.Generator().manual_seed(3)
    rnd = TeacherOutput(teacher.cls_embed, torch.randn(2, C, 8, 8, generator=g))
    many = torch.full((2, 32, 32), 255)
    many[1, :, 8:] = 2
    module = plm(window_sizes=(1,), max_regions=20)
    out = module(dense, many, text, rnd, alpha)
    q = out.prototypes.shape[1]
    n_valid = out.pseudo_valid.sum(1)
    assert q == 20 and n_valid.tolist() == [20, 6]
    pad = (~out.pseudo_valid[1]).nonzero()[:, 0]
    assert not torch.isin(out.targets[1], S + pad).any()  # no pixel targets a padded class
    logits = logits_of(module, out, dense, text, alpha)
    assert logits.shape == (2, S + q, 8, 8)
    up = F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)
    ce = F.cross_entropy(up, out.targets, ignore_index=255)
    assert torch.isfinite(ce)


def test_synthesizer_off_uses_teacher_region_centroids():
    dense, labels, text, teacher, truth = world()
    module = plm(synthesizer=False, pseudo_logit_scale=5.0)
    assert module.synthesizer is None
    out = module(dense, labels, text, teacher, torch.tensor(10.0))
    assert out.losses == {}
    logits = logits_of(module, out, dense, text, torch.tensor(10.0))
    assert logits.shape == (2, S + 2, 8, 8)
    tokens = F.normalize(teacher.patch_embed, dim=1)  # B x C x 4 x 4
    for b in range(2):
        for q in range(2):
            # which planted teacher region carries pseudo id q: read it off the fused labels
            ys, xs = (out.targets[b] == S + q).nonzero()[0].tolist()
            region = truth[ys // 8, xs // 8]
            proto = F.normalize(tokens[b][:, truth == region].mean(1), dim=0)
            ref = 5.0 * torch.einsum("chw,c->hw", dense[b], proto)
            torch.testing.assert_close(out.prototypes[b, q], proto)
            torch.testing.assert_close(logits[b, S + q], ref)


def test_switches_off():
    dense, labels, text, teacher, _ = world()
    alpha = torch.tensor(10.0)
    out = plm(pseudo_labels=False)(dense, labels, text, teacher, alpha)
    assert out.prototypes.shape[1] == 0 and torch.equal(out.targets, labels)
    assert "loss_bce" in out.losses and out.losses["loss_bce"] > 0
    both_off = plm(pseudo_labels=False, synthesizer=False)
    out = both_off(dense, labels, text, None, alpha)
    assert out.prototypes.shape[1] == 0 and out.losses == {}
    assert list(both_off.parameters()) == []


def test_padding_and_vanishing_pseudo_region():
    dense, labels, text, teacher, _ = world(b=1)
    valid = torch.ones(1, 32, 32, dtype=torch.bool)
    valid[:, :, 24:] = False
    out = plm()(dense, labels, text, teacher, torch.tensor(10.0), valid_mask=valid)
    assert (out.targets[:, :, 24:] == 255).all()
    # the top region keeps a single ignored pixel, not sampled on R's 8x8 grid: its pseudo
    # class exists in the fused labels but has no centroid, so it is invalid and ignored
    lab = labels.clone()
    lab[:, :16] = 1
    lab[0, 0, 0] = 255
    out = plm()(dense, lab, text, teacher, torch.tensor(10.0))
    q_top = [q for q in range(out.pseudo_valid.shape[1]) if not out.pseudo_valid[0, q]]
    assert len(q_top) == 1
    assert out.targets[0, 0, 0] == 255
    # the criterion makes it no class of the image
    logits = torch.zeros(1, S + out.pseudo_valid.shape[1], 8, 8)
    assert not CLIPZSSCriterion.class_valid(logits, out.pseudo_valid)[0, S + q_top[0]]


def test_bce_against_hand_computation():
    g = torch.Generator().manual_seed(0)
    protos = F.normalize(torch.randn(2, S, C, generator=g), dim=-1)
    present = torch.tensor([[True, False, True], [False, True, False]])
    text = F.normalize(torch.randn(S, C, generator=g), dim=-1)
    scale = 7.0
    loss = bce_prototype_loss(protos, present, text, scale)
    total, n = 0.0, 0
    for b in range(2):
        for s in range(S):
            if not present[b, s]:
                continue
            row = 0.0
            for j in range(S):
                z = scale * float(protos[b, s] @ text[j])
                p = 1 / (1 + math.exp(-z))
                y = 1.0 if j == s else 0.0  # target matrix = identity over seen classes
                row += -(y * math.log(p) + (1 - y) * math.log(1 - p))
            total += row / S
            n += 1
    assert loss.item() == pytest.approx(total / n, rel=1e-5)
    none = bce_prototype_loss(protos.requires_grad_(True), present & False, text, scale)
    assert none.item() == 0.0 and none.requires_grad


def test_gradients_reach_dense_synthesizer_and_scale():
    dense, labels, text, teacher, _ = world()
    alpha = torch.tensor(10.0, requires_grad=True)
    module = plm(synth_use_patch_tokens=True)
    out = module(dense, labels, text, teacher, alpha)
    logits = logits_of(module, out, dense, text, alpha)
    up = F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)
    loss = F.cross_entropy(up, out.targets, ignore_index=255) + out.losses["loss_bce"]
    loss.backward()
    assert dense.grad.abs().sum() > 0
    assert alpha.grad is not None and alpha.grad != 0
    grads = [p.grad for p in module.synthesizer.parameters()]
    assert all(gr is not None for gr in grads) and sum(gr.abs().sum() for gr in grads) > 0
    assert teacher.cls_embed.grad is None


def small_cfg():
    """The project's config at this file's embedding width (C) and head count."""
    cfg = get_clipzss_cfg()
    cfg.MODEL.CLIPZSS.EMBED_DIM = C
    cfg.MODEL.CLIPZSS.PLM.SYNTH_HEADS = 4
    return cfg


def test_from_config():
    cfg = small_cfg()
    cfg.MODEL.CLIPZSS.PLM.REGION_MAX_SEEN_FRACTION = 0.5
    module = PixelLearningModule(cfg)
    assert module.labeler.fusion_mode == "agglomerative" and module.max_seen_fraction == 0.5
    assert module.labeler.window_sizes == (2, 4, 8) and module.synthesizer is not None
    dense, labels, text, teacher, _ = world()
    out = module(dense, labels, text, teacher, torch.tensor(10.0))
    assert out.prototypes.shape[:2] == (2, 2)
    # cross-scale fusion never merges the two same-scale clusters of the top region
    cfg.MODEL.CLIPZSS.PLM.FUSION_MODE = "cross_scale"
    out = PixelLearningModule(cfg)(dense, labels, text, teacher, torch.tensor(10.0))
    assert out.prototypes.shape[:2] == (2, 3)


def test_end_to_end_with_tiny_clip_teacher_glm_and_losses():
    import open_clip

    from clipzss_d2.modeling.clip_loading import create_clip_model
    from clipzss_d2.modeling.training.glm import GlobalLearningModule
    from clipzss_d2.modeling.training.teacher import CLIPTeacher

    torch.manual_seed(0)
    clip = create_clip_model("ClipZSS-Tiny-Test", "none")
    teacher = CLIPTeacher(
        visual=clip.visual,
        clip_mean=open_clip.OPENAI_DATASET_MEAN,
        clip_std=open_clip.OPENAI_DATASET_STD,
        dense_mode="maskclip",
    )
    images = torch.rand(2, 3, 64, 64) * 255
    labels = torch.full((2, 64, 64), 255)
    labels[:, 32:] = torch.randint(0, S, (2, 32, 64))
    valid = torch.ones(2, 64, 64, dtype=torch.bool)
    valid[1, :, 48:] = False
    t_out = teacher(images)
    assert t_out.patch_embed.shape == (2, 32, 8, 8)
    dense = F.normalize(torch.randn(2, 32, 16, 16), dim=1).requires_grad_(True)
    text = F.normalize(torch.randn(S, 32), dim=-1)
    alpha = torch.tensor(14.0, requires_grad=True)
    module = PixelLearningModule(embed_dim=32, synth_heads=4, fusion_threshold=0.5)
    out = module(dense, labels, text, t_out, alpha, valid)
    targets, losses = out.targets, out.losses
    logits = logits_of(module, out, dense, text, alpha)
    up = F.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=False)
    unit = {"loss_ce": 1.0, "loss_focal": 100.0, "loss_dice": 1.0}
    seg = CLIPZSSCriterion(weight_dict=unit)(
        {"pred_logits": up, "pseudo_valid": out.pseudo_valid},
        {"sem_seg": targets, "image_valid": valid},
    )
    glm = GlobalLearningModule(embed_dim=32, bank_size=4)
    total = sum(seg.values()) + losses["loss_bce"] + glm(dense, t_out.cls_embed)
    assert torch.isfinite(total)
    total.backward()
    assert torch.isfinite(dense.grad).all() and dense.grad.abs().sum() > 0
    assert (targets[1, :, 48:] == 255).all()


def run_recording_synthesizer(module, dense, labels, text, teacher):
    """Run PLM once; return what its synthesizer received and gave back (queries, query_valid,
    synthesized) and PLM's output."""
    seen = {}
    real = module.synthesizer.forward

    def watch(queries, query_valid, *rest):
        seen["queries"], seen["valid"] = queries, query_valid
        seen["synthesized"] = real(queries, query_valid, *rest)
        return seen["synthesized"]

    module.synthesizer.forward = watch
    out = module(dense, labels, text, teacher, torch.tensor(10.0))
    return seen, out


def region_of(targets_b, class_id, truth):
    """The planted teacher region (0, 1, 2) under the pixels of ``class_id`` (8 px per token)."""
    ys, xs = (targets_b == class_id).nonzero()[0].tolist()
    return int(truth[ys // 8, xs // 8])


@pytest.mark.parametrize("query", ["teacher", "both"])
def test_synthesizer_queries_from_the_teacher_hand_worked(query):
    """PLM.SYNTH_QUERY "teacher": each class's query is the normalised mean of the teacher's
    normalised tokens over its planted region, padding tokens left out; "both" adds the
    normalised student centroid. Worked from the planted world, not from PLM's helpers."""
    dense, labels, text, teacher, truth = world()
    token_valid = torch.ones(2, 4, 4, dtype=torch.bool)
    token_valid[1, :, 3] = False  # image 1's last token column is padding
    teacher = teacher._replace(token_valid=token_valid)
    seen, out = run_recording_synthesizer(plm(synth_query=query), dense, labels, text, teacher)
    queries, valid = seen["queries"], seen["valid"]
    tokens = F.normalize(teacher.patch_embed, dim=1)
    assert queries.shape == (2, S + 2, C)
    for b in range(2):
        assert valid[b].tolist() == [True, False, False, True, True]
        for k in (0, S, S + 1):
            region = region_of(out.targets[b], k, truth) if k else 1
            cells = (truth == region) & token_valid[b]
            expected = F.normalize(tokens[b][:, cells].mean(1), dim=0)
            if query == "both":
                student = F.interpolate(out.targets[None, b : b + 1].float(), size=(8, 8))
                mine = student[0, 0] == k
                expected = expected + F.normalize(dense[b][:, mine].mean(1), dim=0)
            torch.testing.assert_close(queries[b, k], expected.detach())
        assert not queries[b, 1:S].any()  # seen classes 1 and 2 are absent: zero rows


def test_synthesizer_query_from_config_and_refused():
    cfg = small_cfg()
    assert PixelLearningModule(cfg).synth_query == "student"  # the paper
    cfg.MODEL.CLIPZSS.PLM.SYNTH_QUERY = "teacher"
    assert PixelLearningModule(cfg).synth_query == "teacher"
    cfg.MODEL.CLIPZSS.PLM.SYNTH_QUERY = "clip"
    with pytest.raises(UserInputError, match="SYNTH_QUERY 'clip' is not one of student"):
        PixelLearningModule(cfg)


@pytest.mark.parametrize("mix", [0.5, 1.0])
def test_teacher_prototype_mix_hand_worked(mix):
    """PLM.TEACHER_PROTOTYPE_MIX m: pseudo prototype = normalise((1 - m) * synthesized + m *
    the normalised mean of the teacher's tokens over its planted region); L_bce unchanged."""
    dense, labels, text, teacher, truth = world()
    seen, out = run_recording_synthesizer(
        plm(teacher_prototype_mix=mix), dense, labels, text, teacher
    )
    paper = plm()(dense, labels, text, teacher, torch.tensor(10.0))
    torch.testing.assert_close(out.losses["loss_bce"], paper.losses["loss_bce"])
    tokens = F.normalize(teacher.patch_embed, dim=1)
    for b in range(2):
        for q in range(2):
            region = region_of(out.targets[b], S + q, truth)
            centroid = F.normalize(tokens[b][:, truth == region].mean(1), dim=0)
            expected = (1 - mix) * seen["synthesized"][b, S + q] + mix * centroid
            torch.testing.assert_close(out.prototypes[b, q], F.normalize(expected.detach(), dim=0))
    with pytest.raises(UserInputError, match="TEACHER_PROTOTYPE_MIX 1.5 is outside"):
        plm(teacher_prototype_mix=1.5)


@pytest.mark.parametrize(
    "key, value",
    [("SYNTH_QUERY", "teacher"), ("TEACHER_PROTOTYPE_MIX", 0.5), ("SYNTH_USE_PATCH_TOKENS", True)],
)
def test_synthesizer_options_refused_without_the_synthesizer(key, value):
    """Options that only change the synthesizer are refused, not ignored, when it is off."""
    cfg = small_cfg()
    cfg.MODEL.CLIPZSS.PLM.SYNTHESIZER = False
    PixelLearningModule(cfg)  # the defaults are fine without it
    setattr(cfg.MODEL.CLIPZSS.PLM, key, value)
    with pytest.raises(
        UserInputError, match=f"PLM.{key} set the synthesizer, but .*SYNTHESIZER is False"
    ):
        PixelLearningModule(cfg)
