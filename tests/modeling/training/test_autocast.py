"""The numerics GPUs train with. detectron2's AMPTrainer runs the training forward under fp16 (or
bf16) autocast; CPU autocast casts bmm / matmul / einsum / conv to half precision as CUDA's does,
so the shipped configs' training code is run here under ``torch.autocast("cpu", dtype)`` and
compared with fp32: pseudo labels must be identical, losses equal within a stated tolerance,
gradients finite. tools/gpu_check.py runs this file again on a GPU: CLIPZSS_TEST_DEVICE=cuda
moves every model and tensor there and makes autocast CUDA's (and the teacher fp16, as shipped).
"""

import contextlib
import os

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from clipzss_d2 import get_clipzss_cfg
from clipzss_d2.data import ZeroShotSemSegDatasetMapper
from clipzss_d2.errors import UserInputError
from clipzss_d2.modeling.text_classifier import build_text_classifier
from clipzss_d2.modeling.training.plm import PixelLearningModule
from clipzss_d2.modeling.training.teacher import TeacherOutput
from tests.helpers import CONFIGS, TINY_MODEL_OPTS

DEVICE = os.environ.get("CLIPZSS_TEST_DEVICE", "cpu")
HALF = [torch.float16, torch.bfloat16]
SHIPPED = [
    "voc.yaml",
    "coco_stuff.yaml",
    "pascal_context.yaml",
    "students/voc-segformer-b0.yaml",
    "students/coco_stuff-segformer-b0.yaml",
    "students/pascal_context-segformer-b0.yaml",
]


def shipped_cfg(name: str, *opts):
    """A shipped config as users run it, on DEVICE with random weights of its architectures
    (CLIP ViT-B/16, DeepLab R-101 or SegFormer-B0): nothing can be downloaded here."""
    cfg = get_clipzss_cfg()
    cfg.merge_from_file(str(CONFIGS / name))
    cfg.merge_from_list(
        ["MODEL.DEVICE", DEVICE, "MODEL.WEIGHTS", "", "MODEL.TIMM.PRETRAINED", "",
         "MODEL.CLIPZSS.CLIP.PRETRAINED", "none", "MODEL.CLIPZSS.TEXT.CACHE_DIR", "", *opts]
    )  # fmt: skip
    return cfg


def autocast(dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(DEVICE).type, dtype=dtype)


# -- PLM -------------------------------------------------------------------------------------------
def planted_scene(widths, dim=512, rows=32, seed=0):
    """Teacher tokens (1 x dim x rows x sum(widths)): vertical bands, one random direction each
    plus 1 % noise, so the right partition is known: one region per band."""
    g = torch.Generator().manual_seed(seed)
    band = torch.repeat_interleave(torch.arange(len(widths)), torch.tensor(widths))
    planted = band.expand(rows, -1)
    dirs = F.normalize(torch.randn(len(widths), dim, generator=g), dim=-1)
    tokens = dirs[planted] + 0.01 * torch.randn(rows, len(band), dim, generator=g)
    return tokens.permute(2, 0, 1)[None].to(DEVICE), planted.to(DEVICE)


def plm_inputs(cfg, tokens, seen_ids=(), seed=0):
    """Student embeddings, labels (16 input pixels per teacher token, ignored but for the
    rectangles of the given seen classes), text and teacher outputs for one image."""
    g = torch.Generator().manual_seed(seed)
    dim = cfg.MODEL.CLIPZSS.EMBED_DIM
    h, w = tokens.shape[-2:]
    labels = torch.full((1, 16 * h, 16 * w), 255, dtype=torch.long)
    for i, cls in enumerate(seen_ids):
        labels[:, 16 * 4 * i : 16 * 4 * (i + 1), : 16 * 4] = cls
    dense = F.normalize(torch.randn(1, dim, 4 * h, 4 * w, generator=g), dim=1)
    text = F.normalize(torch.randn(15, dim, generator=g), dim=-1)
    teacher = TeacherOutput(torch.randn(1, dim, generator=g).to(DEVICE), tokens, None)
    return dense.to(DEVICE), labels.to(DEVICE), text.to(DEVICE), teacher


def partition_matches(region_map, planted):
    """Each planted band is exactly one region and no two bands share one."""
    pairs = {(int(p), int(r)) for p, r in zip(planted.flatten(), region_map.flatten())}
    bands = {p for p, _ in pairs}
    return len(pairs) == len(bands) and len({r for _, r in pairs}) == len(bands)


@pytest.mark.parametrize("dtype", HALF, ids=["fp16", "bf16"])
@pytest.mark.parametrize(
    "widths", [(19, 13), (6, 5, 6, 5, 5, 5)], ids=["608+416 tokens", "six regions"]
)
def test_pseudo_labels_of_planted_scenes_ignore_autocast(widths, dtype):
    cfg = shipped_cfg("voc.yaml")
    plm = PixelLearningModule(cfg).to(DEVICE)
    tokens, planted = planted_scene(widths)
    inputs = plm_inputs(cfg, tokens)

    def run():
        regions = plm.labeler(tokens)
        return regions.region_map[0], plm(*inputs, torch.tensor(14.0, device=DEVICE)).targets

    ref_map, ref_targets = run()
    assert partition_matches(ref_map, planted)  # the reference is right: one region per band
    with autocast(dtype):
        region_map, targets = run()
    assert partition_matches(region_map, planted)
    assert torch.equal(region_map, ref_map)
    assert torch.equal(targets, ref_targets)


def test_pseudo_labels_of_a_real_voc_sample_ignore_autocast(prepared_root):
    """configs/voc.yaml's training mapper (512 crop, padding) on a real VOC photo, the teacher's
    tokens from a random ViT-B/16, PLM as the model calls it."""
    cfg = shipped_cfg(
        "voc.yaml", "DATASETS.TRAIN", ("voc20_zs_train",), "MODEL.CLIPZSS.TEXT.TEMPLATES", "single"
    )
    model = build_model(cfg)
    (record,) = [r for r in DatasetCatalog.get("voc20_zs_train") if "2011_000006" in r["file_name"]]
    np.random.seed(0)  # noqa: NPY002  (detectron2's augmentations draw from numpy's generator)
    sample = ZeroShotSemSegDatasetMapper(cfg, is_train=True)(record)
    images = model.preprocess_images([sample])
    extents = model.image_extents(images, [sample])
    valid = model.extent_mask(extents, *images.tensor.shape[-2:], model.device)
    teacher = model.run_teacher(images, extents)
    labels = sample["sem_seg"][None].to(DEVICE).masked_fill(~valid, 255)
    dim, (h, w) = cfg.MODEL.CLIPZSS.EMBED_DIM, labels.shape[-2:]
    dense = F.normalize(torch.randn(1, dim, h // 4, w // 4), dim=1).to(DEVICE)
    text = model.text_embeddings(model.train_vocabulary)

    def targets():
        return model.plm(dense, labels, text, teacher, model.logit_scale, valid).targets

    reference = targets()
    pseudo = (reference >= 15) & (reference != 255)
    assert pseudo.sum() > 1000 and len(reference[pseudo].unique()) >= 2
    for dtype in HALF:
        with autocast(dtype):
            assert torch.equal(targets(), reference), dtype


@pytest.mark.parametrize(
    "query, mix", [("student", 0.0), ("teacher", 0.0), ("both", 0.0), ("student", 0.5)]
)
@pytest.mark.parametrize("dtype", HALF, ids=["fp16", "bf16"])
def test_synthesizer_is_finite_in_half_precision(dtype, query, mix):
    """Two seen classes of fifteen are present: the other prototypes' centroids are zero rows,
    which must not become NaN (fp16's normalisation eps underflows) and spread. The same for
    each PLM.SYNTH_QUERY and with PLM.TEACHER_PROTOTYPE_MIX."""
    cfg = shipped_cfg(
        "voc.yaml",
        "MODEL.CLIPZSS.PLM.SYNTH_QUERY", query,
        "MODEL.CLIPZSS.PLM.TEACHER_PROTOTYPE_MIX", mix,
    )  # fmt: skip
    torch.manual_seed(0)
    plm = PixelLearningModule(cfg).to(DEVICE)
    tokens, _ = planted_scene((10, 12, 10))
    dense, labels, text, teacher = plm_inputs(cfg, tokens, seen_ids=(3, 7))
    dense = dense.requires_grad_()
    scale = torch.tensor(14.0, device=DEVICE)
    reference = plm(dense, labels, text, teacher, scale)
    with autocast(dtype):
        out = plm(dense.to(dtype), labels, text, teacher, scale)
    loss = out.losses["loss_bce"]
    assert torch.isfinite(loss) and torch.isfinite(out.prototypes).all()
    torch.testing.assert_close(loss.float(), reference.losses["loss_bce"], rtol=1e-2, atol=0)
    assert out.prototypes.shape[1] > 0 and torch.equal(out.targets, reference.targets)
    cosine = (out.prototypes.float() * reference.prototypes).sum(-1)[out.pseudo_valid]
    assert cosine.min() > 0.999, (dtype, cosine.min())
    loss.backward()
    grads = [p.grad for p in plm.parameters()]
    if query == "teacher":  # L_bce reads no student feature then: the segmentation losses do
        assert dense.grad is None
    else:
        grads.append(dense.grad)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_pseudo_ids_never_reach_the_ignore_value():
    """200 seen classes: pseudo ids 200 + 0..MAX_REGIONS-1 may not reach 255."""
    name = "clipzss_test_200_classes"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [])
        MetadataCatalog.get(name).set(
            stuff_classes=[f"class {i}" for i in range(200)], unseen_classes=[], ignore_label=255
        )
    opts = [*TINY_MODEL_OPTS, "DATASETS.TRAIN", (name,), "DATASETS.TEST", ()]
    with pytest.raises(UserInputError, match="MAX_REGIONS to at most 55"):
        build_model(shipped_cfg("voc.yaml", *opts))  # 64 regions: ids 200..263
    build_model(shipped_cfg("voc.yaml", *opts, "MODEL.CLIPZSS.PLM.MAX_REGIONS", 55))  # ..254


# -- the teacher in its shipped precision ---------------------------------------------------------
def test_the_teacher_sees_the_image_not_the_padding_in_its_precision():
    """configs/voc.yaml's teacher (random ViT-B/16; TEACHER.PRECISION fp16 on a GPU, fp32 on the
    CPU) on a padded batch with image sizes equals each image run alone at its own size, under
    the training step's autocast too."""
    cfg = shipped_cfg("voc.yaml")
    torch.manual_seed(0)
    teacher = build_model(cfg).build_teacher()
    extents = [(96, 128), (128, 80), (128, 128)]
    batch = (torch.rand(3, 3, 128, 128) * 255).to(DEVICE)
    for dtype in [None, *HALF]:
        with autocast(dtype):
            out = teacher(batch, image_sizes=torch.tensor(extents))
            for i, (h, w) in enumerate(extents):
                alone = teacher(batch[i : i + 1, :, :h, :w].contiguous())
                cls = F.cosine_similarity(out.cls_embed[i], alone.cls_embed[0], dim=0)
                patches = out.patch_embed[i, :, : h // 16, : w // 16].flatten(1)
                tokens = F.cosine_similarity(patches, alone.patch_embed[0].flatten(1), dim=0)
                assert cls > 0.999 and tokens.min() > 0.999, (dtype, i, float(cls), tokens.min())
                assert out.token_valid[i].sum() == (h // 16) * (w // 16)


# -- text embeddings ----------------------------------------------------------------------------------
def test_text_embeddings_computed_inside_autocast_are_the_fp32_ones():
    """A cache miss inside an AMP training step encodes class names; the result must be what
    evaluation and the predictor compute outside autocast (and open_clip's own classifier)."""
    classes = ["cat", "sofa", "potted plant"]
    cfg = shipped_cfg("voc.yaml", "MODEL.CLIPZSS.TEXT.TEMPLATES", "single")
    outside = build_text_classifier(cfg)
    reference = outside(classes)
    for dtype in HALF:
        with autocast(dtype):
            inside = build_text_classifier(cfg)(classes)  # a fresh one: nothing cached
        assert torch.equal(inside, reference), dtype
    clip, tokenizer = outside._load_clip()
    expected = open_clip.build_zero_shot_classifier(
        clip, tokenizer, classes, ["a photo of a {}."], num_classes_per_batch=None
    ).t()
    torch.testing.assert_close(reference, expected, rtol=1e-5, atol=1e-6)


# -- the whole training step of every shipped config ----------------------------------------------------
STEP_SIZE = 96  # the one reduction: 96 x 96 crops (6 x 6 teacher tokens) instead of 512
# Relative loss tolerance of each term against fp32 (B0's whole step measured within 0.02 % in
# fp16 and 0.2 % in bf16).
LOSS_RTOL = {torch.float16: 0.01, torch.bfloat16: 0.03}
# A random 101-layer ResNet in train-mode BatchNorm amplifies rounding block after block (its
# embeddings' cosine to fp32 falls to 0.75 under fp16 at 96 px, measured layer by layer): its
# whole-step losses can only be held to this, and are compared tightly with the student fixed.
RANDOM_R101_RTOL = 0.25


@pytest.fixture(scope="module")
def text_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("text_cache"))


def step_batch(num_seen: int, seed: int = 0):
    """Two images with two seen-class rectangles each; the rest is ignored (PLM's area)."""
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(2):
        image = torch.randint(0, 256, (3, STEP_SIZE, STEP_SIZE), generator=g).to(torch.uint8)
        label = torch.full((STEP_SIZE, STEP_SIZE), 255, dtype=torch.long)
        half = STEP_SIZE // 2
        label[:half, :half] = int(torch.randint(num_seen, (1,), generator=g))
        label[half:, half + 8 :] = int(torch.randint(num_seen, (1,), generator=g))
        batch.append({"image": image, "sem_seg": label, "height": STEP_SIZE, "width": STEP_SIZE})
    return batch


def training_step(model, state, batch, dtype, fixed_embeddings=None):
    """One forward + backward from `state` as AMPTrainer runs it (autocast around the model's
    forward). Returns losses, PLM's targets and every gradient (the fixed embeddings' too)."""
    model.load_state_dict(state)
    model.glm.bank_count.zero_()  # GLM's bank of earlier CLS tokens: empty, as at the start
    model.glm.bank_ptr.zero_()
    model.zero_grad()
    caught = {}
    hook = model.plm.register_forward_hook(lambda m, i, out: caught.update(targets=out.targets))
    if fixed_embeddings is not None:  # what the student would hand over in this precision
        model.embed = lambda crops: fixed_embeddings.to(dtype or torch.float32)
    torch.manual_seed(1)  # the same dropout masks
    try:
        with autocast(dtype):
            losses = model(batch)
        sum(losses.values()).backward()
    finally:
        hook.remove()
        model.__dict__.pop("embed", None)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if fixed_embeddings is not None:
        grads.append(fixed_embeddings.grad)
        fixed_embeddings.grad = None
    return {k: float(v) for k, v in losses.items()}, caught["targets"], grads


def assert_losses_close(losses, reference, rtol, what):
    for name, value in losses.items():
        error = abs(value - reference[name]) / max(abs(reference[name]), 1e-6)
        assert error <= rtol, f"{what}: {name} {value} vs fp32 {reference[name]}"


@pytest.mark.slow
@pytest.mark.parametrize("config", SHIPPED)
def test_training_step_of_each_shipped_config_under_autocast(config, text_cache):
    cfg = shipped_cfg(
        config,
        "MODEL.CLIPZSS.TEXT.CACHE_DIR", text_cache,  # class names encoded once per dataset
        "MODEL.CLIPZSS.TEXT.TEMPLATES", "single",  # 1 prompt per class instead of ViLD's 14
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg).train()
    model.build_teacher()
    assert model.glm is not None and model.plm is not None and model.plm.synthesizer is not None
    state = {k: v.clone() for k, v in model.state_dict().items()}
    batch = step_batch(len(model.train_vocabulary))
    reference, ref_targets, ref_grads = training_step(model, state, batch, None)
    assert all(torch.isfinite(g).all() for g in ref_grads)
    assert ((ref_targets >= len(model.train_vocabulary)) & (ref_targets != 255)).any()

    with torch.no_grad():
        images = model.preprocess_images(batch)
        fixed = model.embed(images.tensor).requires_grad_()
    fixed_reference, _, _ = training_step(model, state, batch, None, fixed)
    r101 = cfg.MODEL.BACKBONE.NAME == "build_resnet_deeplab_backbone"
    for dtype in HALF:
        losses, targets, grads = training_step(model, state, batch, dtype)
        assert torch.equal(targets, ref_targets), dtype
        assert all(torch.isfinite(g).all() for g in grads), dtype
        rtol = RANDOM_R101_RTOL if r101 else LOSS_RTOL[dtype]
        assert_losses_close(losses, reference, rtol, f"{config} {dtype} whole step")
        # the training modules (PLM, synthesizer, GLM, criterion) on the student's embeddings
        losses, targets, grads = training_step(model, state, batch, dtype, fixed)
        assert torch.equal(targets, ref_targets), dtype
        assert all(torch.isfinite(g).all() for g in grads), dtype
        assert_losses_close(losses, fixed_reference, LOSS_RTOL[dtype], f"{config} {dtype} modules")
