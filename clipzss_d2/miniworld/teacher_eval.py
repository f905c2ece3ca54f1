"""Probes of the trained teacher: zero-shot accuracy on fresh images and patch-token quality."""

from __future__ import annotations

import dataclasses

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from . import world as W
from .teacher_config import MODEL_NAME, STREAM_EVAL, TeacherConfig, model_image_size
from .teacher_data import Batches


@torch.no_grad()
def encode_names(
    model: open_clip.CLIP, model_name: str, names, template="a photo of a {}."
) -> torch.Tensor:
    tokenizer = open_clip.get_tokenizer(model_name)
    t = model.encode_text(tokenizer([template.format(n) for n in names]))
    return F.normalize(t, dim=-1)


@torch.no_grad()
def image_tokens(model: open_clip.CLIP, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CLS embedding (B x C) and patch tokens in the joint space (B x h x w x C), both normalised,
    of CLIP-normalised images: the student's teacher itself ('plain' dense mode), so the probes
    measure exactly what training uses. (Freezes ``model.visual``: evaluation comes last.)"""
    # training-only: not imported with the package
    from ..modeling.training.teacher import CLIPTeacher

    teacher = CLIPTeacher(
        visual=model.visual, clip_mean=(0.0,) * 3, clip_std=(1.0,) * 3, precision="fp32"
    )
    out = teacher.encode(images.to(teacher.dtype))
    patches = F.normalize(out.patch_embed, dim=1).permute(0, 2, 3, 1)
    return F.normalize(out.cls_embed, dim=-1), patches


def nearest_names(
    model: open_clip.CLIP, model_name: str, embeddings: torch.Tensor, names
) -> np.ndarray:
    """The teacher's zero-shot probe: for each normalised joint-space embedding (N x C: CLS or
    patch tokens), the index of the name whose prompt embeds nearest."""
    text = encode_names(model, model_name, names)
    return (embeddings @ text.T).argmax(1).numpy()


def _patch_labels(labels: np.ndarray, patch: int, purity: float) -> np.ndarray:
    """Majority class per patch (B x h x w), -1 where the patch is mixed or mostly ignored."""
    b, hh, ww = labels.shape
    h, w = hh // patch, ww // patch
    blocks = labels[:, : h * patch, : w * patch].reshape(b, h, patch, w, patch)
    blocks = blocks.transpose(0, 1, 3, 2, 4).reshape(-1, patch * patch).astype(np.int64)
    nc = len(W.CLASSES) + 1  # last bin: ignore
    blocks = np.where(blocks == W.IGNORE_LABEL, nc - 1, blocks)
    flat = blocks + nc * np.arange(len(blocks))[:, None]
    counts = np.bincount(flat.ravel(), minlength=nc * len(blocks)).reshape(-1, nc)
    major = counts.argmax(-1)
    major[(counts.max(-1) < purity * patch * patch) | (major == nc - 1)] = -1
    return major.reshape(b, h, w)


@torch.no_grad()
def evaluate_teacher(
    model: open_clip.CLIP,
    model_name: str = MODEL_NAME,
    num_images: int = 400,
    seed: int = 0,
    world: W.WorldParams | None = None,
    jpeg_quality: int = 90,
    batch_size: int = 100,
) -> dict:
    """Zero-shot accuracy on fresh single-object / stuff-only images and patch-token quality."""
    model.eval()
    size = model_image_size(model_name)
    base = world or W.WorldParams().square(size)
    cfg = TeacherConfig(model_name=model_name, seed=seed, jpeg_quality=jpeg_quality, world=base)
    batches = Batches(model, cfg, stream=STREAM_EVAL)
    things, stuff = list(base.things), list(base.stuff)
    results: dict = {"num_images": num_images}

    def run(params: W.WorldParams, offset: int):
        rendered = []
        for start in range(0, num_images, batch_size):
            n = min(batch_size, num_images - start)
            rendered += batches.render(offset + start, params, n)
        x = batches.to_tensor([r.image for r in rendered])
        cls, patches = zip(
            *(image_tokens(model, x[i : i + batch_size]) for i in range(0, len(x), batch_size))
        )
        return rendered, torch.cat(cls), torch.cat(patches)

    # 1) one object, no clutter: which thing is it? (over thing names, as in CLIP's zero-shot use)
    single = dataclasses.replace(
        base, min_objects=1, max_objects=1, empty_prob=0.0, clutter_prob=0.0
    )
    rendered, cls, _ = run(single, 0)
    pred = nearest_names(model, model_name, cls, things)
    truth = np.array([things.index(r.scene.things[0].name) for r in rendered])
    results["thing_zero_shot_acc"] = float((pred == truth).mean())
    for split, members in (
        ("seen", [c for c in things if c not in W.UNSEEN]),
        ("unseen", [c for c in things if c in W.UNSEEN]),
    ):
        sel = np.isin(truth, [things.index(c) for c in members])
        if sel.any():
            results[f"thing_zero_shot_acc_{split}"] = float((pred[sel] == truth[sel]).mean())
    results["thing_chance"] = 1.0 / len(things)
    typical = np.array([r.scene.things[0].typical_colour for r in rendered])
    for key, sel in (("typical_colour", typical), ("other_colour", ~typical)):
        if sel.any():
            results[f"thing_zero_shot_acc_{key}"] = float((pred[sel] == truth[sel]).mean())
    results["thing_zero_shot_acc_per_class"] = {
        c: round(float((pred[truth == i] == i).mean()), 3)
        for i, c in enumerate(things)
        if (truth == i).any()
    }

    # 2) background only: which texture?
    if len(stuff) > 1:
        plain = dataclasses.replace(
            base, max_objects=0, min_objects=0, second_stuff_prob=0.0, clutter_prob=0.0
        )
        rendered, cls, _ = run(plain, 10_000)
        pred = nearest_names(model, model_name, cls, stuff)
        truth = np.array([stuff.index(r.scene.stuff[0].name) for r in rendered])
        results["stuff_zero_shot_acc"] = float((pred == truth).mean())

    # 3) dataset-like scenes: patch tokens against text and against each other
    rendered, _, patches = run(base, 20_000)
    patch = size // patches.shape[1]
    labels = _patch_labels(np.stack([r.label for r in rendered]), patch, purity=0.75)
    names = list(W.CLASSES)
    valid = labels >= 0
    tok = patches[torch.from_numpy(valid)]
    lab = labels[valid]
    patch_pred = nearest_names(model, model_name, tok, names)
    results["patch_text_acc"] = float((patch_pred == lab).mean())
    results["patch_chance"] = 1.0 / len(names)
    unseen_ids = [W.CLASS_ID[c] for c in W.UNSEEN]
    sel = np.isin(lab, unseen_ids)
    if sel.any():
        results["patch_text_acc_unseen"] = float((patch_pred[sel] == lab[sel]).mean())
    # cosine similarity of patch tokens: pooled over images (subsampled) and within each image
    gen = np.random.default_rng(seed)
    idx = gen.choice(len(lab), size=min(4000, len(lab)), replace=False)
    sim = (tok[idx] @ tok[idx].T).numpy()
    same = lab[idx][:, None] == lab[idx][None, :]
    off = ~np.eye(len(idx), dtype=bool)
    results["patch_cos_same_class"] = float(sim[same & off].mean())
    results["patch_cos_diff_class"] = float(sim[~same].mean())
    s_in, d_in = [], []
    for b in range(len(rendered)):
        v = valid[b]
        if v.sum() < 2:
            continue
        t = patches[b][torch.from_numpy(v)]
        lb = labels[b][v]
        sm = (t @ t.T).numpy()
        sa = lb[:, None] == lb[None, :]
        o = ~np.eye(len(lb), dtype=bool)
        if (sa & o).any():
            s_in.append(sm[sa & o].mean())
        if (~sa).any():
            d_in.append(sm[~sa].mean())
    results["patch_cos_same_class_within_image"] = float(np.mean(s_in))
    results["patch_cos_diff_class_within_image"] = float(np.mean(d_in))
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in results.items()}
