import copy

import open_clip
import pytest
import torch
import torch.nn.functional as F

from clipzss_d2.modeling.clip_loading import create_clip_model
from clipzss_d2.modeling.training.teacher import CLIPTeacher, TeacherOutput, teacher_grid_size

TINY = "ClipZSS-Tiny-Test"


@pytest.fixture(scope="module")
def clip_model():
    torch.manual_seed(0)
    return create_clip_model(TINY, "none")


def make_teacher(clip_model, **kw):
    args = dict(
        visual=copy.deepcopy(clip_model.visual),
        clip_mean=open_clip.OPENAI_DATASET_MEAN,
        clip_std=open_clip.OPENAI_DATASET_STD,
        input_format="BGR",
    )
    args.update(kw)
    return CLIPTeacher(**args)


def reference_clip_input(raw_bgr):
    """CLIP's documented preprocessing, written out independently of the teacher."""
    rgb = raw_bgr[:, [2, 1, 0]] / 255.0
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (rgb - mean) / std


def test_cls_matches_encode_image_at_native_size(clip_model):
    teacher = make_teacher(clip_model)
    torch.manual_seed(1)
    raw = torch.rand(2, 3, 32, 32) * 255
    out = teacher(raw)
    assert isinstance(out, TeacherOutput)
    with torch.no_grad():
        ref = clip_model.encode_image(reference_clip_input(raw))
    torch.testing.assert_close(out.cls_embed, ref, rtol=1e-5, atol=1e-5)
    assert out.patch_embed.shape == (2, 32, 4, 4)


def test_patch_tokens_match_open_clip_tokens(clip_model):
    """Plain patch tokens = open_clip's own ln_post'ed tokens times proj (native size)."""
    teacher = make_teacher(clip_model)
    raw = torch.rand(1, 3, 32, 32) * 255
    vis = copy.deepcopy(clip_model.visual)
    vis.output_tokens = True
    with torch.no_grad():
        _, tokens = vis(reference_clip_input(raw))
        ref = (tokens @ vis.proj).transpose(1, 2).reshape(1, 32, 4, 4)
    torch.testing.assert_close(teacher(raw).patch_embed, ref, rtol=1e-5, atol=1e-5)


def test_other_sizes_and_resize(clip_model):
    teacher = make_teacher(clip_model)
    out = teacher(torch.rand(3, 3, 48, 64) * 255)
    assert out.cls_embed.shape == (3, 32)
    assert out.patch_embed.shape == (3, 32, 6, 8)
    assert teacher_grid_size(teacher, 48, 64) == (6, 8)
    resized = make_teacher(clip_model, input_size=32)
    out = resized(torch.rand(2, 3, 48, 64) * 255)
    assert out.patch_embed.shape == (2, 32, 4, 4)
    assert teacher_grid_size(resized, 48, 64) == (4, 4)


def test_bgr_rgb_and_normalized_inputs_agree(clip_model):
    bgr_teacher = make_teacher(clip_model, input_format="BGR")
    rgb_teacher = make_teacher(clip_model, input_format="RGB")
    raw_bgr = torch.rand(2, 3, 40, 40) * 255
    a = bgr_teacher(raw_bgr)
    b = rgb_teacher(raw_bgr.flip(1))
    torch.testing.assert_close(a.cls_embed, b.cls_embed)
    torch.testing.assert_close(a.patch_embed, b.patch_embed)
    # a swapped image is a different image: guards against the swap being a no-op
    c = bgr_teacher(raw_bgr.flip(1))
    assert not torch.allclose(a.cls_embed, c.cls_embed, atol=1e-3)

    mean, std = (103.53, 116.28, 123.675), (57.375, 57.12, 58.395)
    norm_teacher = make_teacher(clip_model, pixel_mean=mean, pixel_std=std)
    normed = (raw_bgr - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    d = norm_teacher(normed, normalized=True)
    torch.testing.assert_close(a.cls_embed, d.cls_embed, rtol=1e-4, atol=1e-4)


def test_no_grad_and_eval_forever(clip_model):
    teacher = make_teacher(clip_model)
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    wrapper = torch.nn.Sequential(teacher)
    wrapper.train(True)
    assert not teacher.training
    x = (torch.rand(1, 3, 32, 32) * 255).requires_grad_(True)
    out = teacher(x)
    assert not out.cls_embed.requires_grad and not out.patch_embed.requires_grad
    assert out.cls_embed.dtype == torch.float32  # fp32 on CPU whatever PRECISION says
    teacher.half()  # a stray cast must not leave CPU weights in half precision
    assert teacher.dtype == torch.float32


def test_pos_embed_interpolation_and_cache(clip_model):
    teacher = make_teacher(clip_model)
    teacher(torch.rand(1, 3, 48, 48) * 255)
    assert set(teacher._pos_cache) == {(6, 6)}
    cached = teacher._pos_cache[(6, 6)]
    assert cached.shape == (37, 64)
    # bicubic resize of the 4x4 grid, computed here independently of the teacher
    pos = clip_model.visual.positional_embedding
    grid = pos[1:].reshape(1, 4, 4, 64).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False)
    torch.testing.assert_close(cached[1:], ref.permute(0, 2, 3, 1).reshape(36, 64))
    torch.testing.assert_close(cached[0], pos[0])
    teacher(torch.rand(2, 3, 48, 48) * 255)
    assert teacher._pos_cache[(6, 6)] is cached  # hit: not recomputed
    teacher(torch.rand(1, 3, 32, 48) * 255)
    assert set(teacher._pos_cache) == {(6, 6), (4, 6)}


def test_maskclip_mode(clip_model):
    teacher = make_teacher(clip_model, dense_mode="maskclip")
    plain = make_teacher(clip_model)
    raw = torch.rand(1, 3, 32, 32) * 255
    out, ref = teacher(raw), plain(raw)
    torch.testing.assert_close(out.cls_embed, ref.cls_embed)  # CLS untouched
    assert out.patch_embed.shape == ref.patch_embed.shape
    # Independent check: run the first blocks with open_clip, then the value path by hand.
    vis = clip_model.visual
    with torch.no_grad():
        x = vis._embeds(reference_clip_input(raw))
        for blk in vis.transformer.resblocks[:-1]:
            x = blk(x)
        last = vis.transformer.resblocks[-1]
        _, _, v = F.linear(last.ln_1(x), last.attn.in_proj_weight, last.attn.in_proj_bias).chunk(
            3, dim=-1
        )
        y = x + last.attn.out_proj(v)
        y = y + last.mlp(last.ln_2(y))
        ref_tokens = (vis.ln_post(y[:, 1:]) @ vis.proj).transpose(1, 2).reshape(1, 32, 4, 4)
    torch.testing.assert_close(out.patch_embed, ref_tokens, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out.patch_embed, ref.patch_embed, atol=1e-3)


def test_unsupported_towers_raise(clip_model):
    vis = copy.deepcopy(clip_model.visual)
    vis.attn_pool = torch.nn.Identity()
    with pytest.raises(NotImplementedError):
        make_teacher(clip_model, visual=vis)
    with pytest.raises(NotImplementedError):
        make_teacher(clip_model, visual=torch.nn.Linear(2, 2))


def test_from_config():
    from detectron2.config import get_cfg
    from detectron2.projects.deeplab import add_deeplab_config

    from clipzss_d2.config import add_clipzss_config

    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_clipzss_config(cfg)
    cfg.MODEL.CLIPZSS.CLIP.MODEL_NAME = TINY
    cfg.MODEL.CLIPZSS.CLIP.PRETRAINED = "none"
    cfg.MODEL.CLIPZSS.TEACHER.DENSE_MODE = "maskclip"
    teacher = CLIPTeacher(cfg)
    assert teacher.dense_mode == "maskclip" and teacher.input_format == "BGR"
    assert not hasattr(teacher, "transformer")  # only the visual tower is kept
    assert teacher.embed_dim == 32
    out = teacher(torch.rand(1, 3, 32, 32) * 255)
    assert out.patch_embed.shape == (1, 32, 4, 4)


def test_autocast_does_not_change_teacher_precision(clip_model):
    teacher = make_teacher(clip_model)
    raw = torch.rand(1, 3, 32, 32) * 255
    ref = teacher(raw)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = teacher(raw)
    assert out.cls_embed.dtype == torch.float32
    torch.testing.assert_close(out.cls_embed, ref.cls_embed)
