"""Config keys of CLIP-ZSS, one namespace per component, in the order of the method: student,
classifier, training-only modules, training, inference.

Every hyper-parameter the method names is a key here, with this project's default (the paper's
values could not be read; see docs/configuration.md). Call after `add_deeplab_config`.
"""

from detectron2.config import CfgNode as CN


def add_clipzss_config(cfg):
    cfg.MODEL.CLIPZSS = CN()
    z = cfg.MODEL.CLIPZSS
    # ---- Student ---------------------------------------------------------------------------------
    # Student: any detectron2 backbone + a dense head that outputs EMBED_DIM channels per pixel.
    z.EMBED_DIM = 512  # must equal the CLIP joint dimension (512 for ViT-B/16)
    z.HEAD_NAME = "DeepLabV3PlusEmbeddingHead"
    z.SIZE_DIVISIBILITY = 32
    # Build the student alone: no teacher, GLM, PLM or criterion, not even imported. The
    # predictor, demo and export set it; training needs False.
    z.STUDENT_ONLY = False

    # SegFormer's all-MLP decode head (HEAD_NAME "MLPEmbeddingHead"): per level a linear map to
    # CHANNELS, resize to OUTPUT_STRIDE, concat, fuse, project to EMBED_DIM. Embeddings and logits
    # live at OUTPUT_STRIDE; logits are upsampled to the image once, after classification.
    z.MLP_HEAD = CN()
    z.MLP_HEAD.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    z.MLP_HEAD.CHANNELS = 256
    z.MLP_HEAD.OUTPUT_STRIDE = 8
    z.MLP_HEAD.NORM = "SyncBN"
    z.MLP_HEAD.DROPOUT = 0.1

    # detectron2's Swin (MODEL.BACKBONE.NAME "build_clipzss_swin_backbone"), Swin-T defaults.
    cfg.MODEL.SWIN = CN()
    cfg.MODEL.SWIN.PRETRAIN_IMG_SIZE = 224
    cfg.MODEL.SWIN.PATCH_SIZE = 4
    cfg.MODEL.SWIN.EMBED_DIM = 96
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 6, 2]
    cfg.MODEL.SWIN.NUM_HEADS = [3, 6, 12, 24]
    cfg.MODEL.SWIN.WINDOW_SIZE = 7
    cfg.MODEL.SWIN.MLP_RATIO = 4.0
    cfg.MODEL.SWIN.DROP_PATH_RATE = 0.3
    cfg.MODEL.SWIN.APE = False
    cfg.MODEL.SWIN.OUT_FEATURES = ["p0", "p1", "p2", "p3"]
    cfg.MODEL.SWIN.USE_CHECKPOINT = False
    # Official Swin ImageNet checkpoint (e.g. swin_tiny_patch4_window7_224.pth) for detectron2's
    # Swin; "" = random init.
    cfg.MODEL.SWIN.PRETRAINED = ""

    # detectron2's ViT + simple feature pyramid (MODEL.BACKBONE.NAME
    # "build_clipzss_vit_backbone"), ViT-B/16 defaults.
    cfg.MODEL.VIT = CN()
    cfg.MODEL.VIT.IMG_SIZE = 512
    cfg.MODEL.VIT.PATCH_SIZE = 16
    cfg.MODEL.VIT.EMBED_DIM = 768
    cfg.MODEL.VIT.DEPTH = 12
    cfg.MODEL.VIT.NUM_HEADS = 12
    cfg.MODEL.VIT.DROP_PATH_RATE = 0.1
    cfg.MODEL.VIT.WINDOW_SIZE = 14
    cfg.MODEL.VIT.WINDOW_BLOCK_INDEXES = [0, 1, 3, 4, 6, 7, 9, 10]
    cfg.MODEL.VIT.USE_REL_POS = True
    cfg.MODEL.VIT.PRETRAIN_IMG_SIZE = 224
    cfg.MODEL.VIT.OUT_CHANNELS = 256

    # Light students (configs/students/*.yaml). timm hierarchical backbone (MODEL.BACKBONE.NAME
    # "build_clipzss_timm_backbone"): pvt_v2_b1 is SegFormer's MiT-B1; features "p2".."p5".
    cfg.MODEL.TIMM = CN()
    cfg.MODEL.TIMM.NAME = "pvt_v2_b1"
    # ImageNet init: "" = random; a timm tag such as "pvt_v2_b1.in1k" (downloaded from the
    # Hugging Face hub at build time); or a local weights file. Leave "" when MODEL.WEIGHTS
    # holds a trained student.
    cfg.MODEL.TIMM.PRETRAINED = ""
    cfg.MODEL.TIMM.OUT_FEATURES = ["p2", "p3", "p4", "p5"]
    cfg.MODEL.TIMM.DROP_PATH_RATE = 0.1

    # ---- Classifier ------------------------------------------------------------------------------
    # Classifier: logits = scale * cos(pixel embedding, text embedding).
    z.LOGIT_SCALE = 1.0 / 0.07
    z.LEARN_LOGIT_SCALE = True
    z.MAX_LOGIT_SCALE = 100.0
    # Names for inference when set; otherwise the test dataset's classes. "a|b" = synonyms.
    z.TEST_VOCABULARY = []

    # The CLIP model whose joint space the student learns (text classifier and teacher share it).
    z.CLIP = CN()
    z.CLIP.MODEL_NAME = "ViT-B-16"
    z.CLIP.PRETRAINED = "openai"  # open_clip tag, local checkpoint path, or "none" (random)
    z.CLIP.DOWNLOAD_DIR = ""  # open_clip download cache ("" = open_clip's default)
    # MLP activation the weights were trained with: "quick_gelu" (OpenAI's CLIP), "gelu"
    # (LAION / DataComp), or "auto" = as open_clip's tag says (refused for a weights file, which
    # cannot say it). The shipped configs set it, so `openai` and the same weights from a file
    # build the same network.
    z.CLIP.ACTIVATION = "auto"

    z.TEXT = CN()
    z.TEXT.TEMPLATES = "vild"  # single | vild | imagenet
    z.TEXT.CACHE_DIR = "output/text_cache"  # on-disk embedding cache; "" disables it
    z.TEXT.CHUNK_SIZE = 256  # prompts encoded per forward pass of the text tower
    z.TEXT.DEVICE = ""  # "" = the model's device

    # ---- Training only (modeling/training/): teacher, GLM, PLM, criterion ------------------------
    # Frozen CLIP image encoder, built for training only when GLM or PLM needs it.
    z.TEACHER = CN()
    z.TEACHER.PRECISION = "fp16"  # fp16 | bf16 | fp32; applied on GPU only (CPU runs fp32)
    z.TEACHER.INPUT_SIZE = 0  # teacher's square input side; 0 = the training crop size
    # An approximation of the method, off in the paper setting: the teacher runs once per training
    # image, on the whole image resized to CACHE_SIZE (short side; 0 = the crop's shorter side,
    # long side at most INPUT.MAX_SIZE_TRAIN) without colour jitter, and every later crop's tokens
    # are resampled (bilinear) from that grid; GLM's target is the whole image's CLS, not the
    # crop's. Kept in memory per process, up to CACHE_MAX_GB (then misses are not stored), and
    # with CACHE_DIR also on disk, one safetensors file per image, which every process (GPU) and
    # later run with the same teacher reads. clipzss_d2/modeling/training/teacher_cache.py;
    # docs/benchmarks.md#the-teacher-cache.
    z.TEACHER.CACHE = False
    z.TEACHER.CACHE_SIZE = 0
    z.TEACHER.CACHE_MAX_GB = 4.0  # per process
    z.TEACHER.CACHE_DIR = ""
    # Dense tokens: "plain" = last block's patch tokens through ln_post + proj; "maskclip" =
    # MaskCLIP's value-path variant of the last block (better localised with real CLIP weights).
    z.TEACHER.DENSE_MODE = "plain"

    z.GLM = CN()
    z.GLM.ENABLED = True
    z.GLM.TEMPERATURE = 0.07
    z.GLM.BANK_SIZE = 1024  # FIFO bank of past CLS tokens; 0 disables it
    z.GLM.LOSS_WEIGHT = 1.0
    # attention pooling = softmax of cos(CLS, R) / this; 0 = the literal raw CLS . R / sqrt(C),
    # which over thousands of positions is a plain mean (docs/method.md#glm-pooling-temperature)
    z.GLM.POOL_TEMPERATURE = 0.07

    z.PLM = CN()
    z.PLM.PSEUDO_LABELS = True  # multi-scale K-Means pseudo regions on the ignored area
    z.PLM.SYNTHESIZER = True  # pseudo classifier weights from the synthesizer
    z.PLM.WINDOW_SIZES = [2, 4, 8]  # K-Means seeds: means over w x w patch windows
    z.PLM.KMEANS_ITERS = 10
    z.PLM.KMEANS_METRIC = "cosine"  # cosine | euclidean
    z.PLM.FUSION_THRESHOLD = 0.9  # merge masks whose centroids have cosine similarity > this
    # "agglomerative": masks of all scales pooled, mutual-nearest pairs above the threshold merge
    # round after round (also within a scale); "cross_scale": scale by scale, one-to-one
    # mutual-nearest matches with the fused set only. See modeling/training/plm/pseudo_labels.py.
    z.PLM.FUSION_MODE = "agglomerative"
    # A pseudo region whose pixels carry seen labels for more than this fraction gives no pseudo
    # id (it is a seen object's halo, e.g. VOC's ignored boundaries); 1.0 = off (the paper).
    z.PLM.REGION_MAX_SEEN_FRACTION = 1.0
    # Ignored pixels within this many input pixels of a seen label get no pseudo label (VOC's
    # void ring around objects; configs/voc.yaml sets 8: docs/method.md#the-void-halo).
    # 0 = off: COCO-Stuff and Context label maps have no such rings.
    z.PLM.SEEN_HALO_RADIUS = 0
    z.PLM.MIN_REGION_PATCHES = 1  # drop pseudo regions smaller than this many teacher patches
    z.PLM.MAX_REGIONS = 64  # cap on pseudo regions per image (padding size)
    z.PLM.PSEUDO_LOGIT_SCALE = 0.0  # beta; 0 = same as the classifier's logit scale (alpha)
    z.PLM.SYNTH_LAYERS = 2
    z.PLM.SYNTH_HEADS = 8
    z.PLM.SYNTH_USE_PATCH_TOKENS = False  # keys/values: teacher CLS, optionally + patch tokens
    # The synthesizer's queries: "student" = the student's region centroids (the paper);
    # "teacher" = the mean of the teacher's patch tokens over each region; "both" = the sum of
    # the two, each normalised. Not the paper: docs/method.md#synthesizer-queries.
    z.PLM.SYNTH_QUERY = "student"
    # With the synthesizer on: each pseudo prototype = normalise((1 - m) * synthesized + m *
    # the teacher's region centroid); 0 = the paper. Not the paper: same section.
    z.PLM.TEACHER_PROTOTYPE_MIX = 0.0
    z.PLM.BCE_WEIGHT = 1.0

    # Segmentation losses on the (fused) labels.
    z.LOSS = CN()
    # Where the losses are computed: "feature" = at the embedding head's resolution (stride 4)
    # with labels downsampled (nearest), 16x fewer pixels; "input" = logits upsampled to the
    # label resolution, as ZegCLIP does (GBs of activations with 150+ classes at 512^2).
    z.LOSS.RESOLUTION = "feature"
    z.LOSS.CE_WEIGHT = 1.0
    z.LOSS.NEL_WEIGHT = 1.0  # non-mutually-exclusive loss = focal * FOCAL_WEIGHT + dice
    # "zegclip" (the paper setting): focal summed over the image's classes and averaged over its
    # pixels, dice on present classes, both / number of present classes, as ZegCLIP;
    # "mean": both averaged over all (image, class) pairs
    # (docs/method.md#the-criterions-normalisation)
    z.LOSS.NEL_NORMALIZATION = "zegclip"
    z.LOSS.FOCAL_WEIGHT = 100.0
    z.LOSS.FOCAL_ALPHA = 0.25
    z.LOSS.FOCAL_GAMMA = 2.0
    z.LOSS.DICE_WEIGHT = 1.0

    # Diagnostics that read ground truth training never sees (clipzss_d2/diagnostics): off
    # unless asked for. PSEUDO_LABELS: share of the unlabelled area given a pseudo label and its
    # purity, per class (needs full labels of the training images; for calibrating PLM).
    z.DIAGNOSTICS = CN()
    z.DIAGNOSTICS.PSEUDO_LABELS = False
    # ORACLE_TEACHER: the teacher's outputs replaced by ideal ones built from the hidden labels
    # (clipzss_d2/modeling/training/oracle_teacher.py): the upper bound of what GLM + PLM can
    # transfer. Refused outside the miniature world's datasets.
    z.DIAGNOSTICS.ORACLE_TEACHER = False
    # IDEAL_TEXT: every class's text embedding replaced by one of a fixed orthonormal set, for
    # the student's classifier and the oracle teacher (clipzss_d2/modeling/ideal_text.py): tells
    # whether CLIP's text geometry limits transfer. Needs ORACLE_TEACHER when GLM or PLM is on.
    # Refused outside the miniature world's datasets.
    z.DIAGNOSTICS.IDEAL_TEXT = False

    # ---- Training: engineering, solver, input pipeline, data, determinism ------------------------
    # Training-time engineering of the student's forward (the same network; floats round
    # differently). CHANNELS_LAST: training crops enter the student NHWC, so its convolutions
    # and their gradients run channels-last (faster on the CPU; measured in
    # docs/notes/2026-11-30-miniworld-record.md#figures-moved-out-of-code-comments-and-the-worlds-readme-on-2026-12-06).
    z.TRAINING = CN()
    z.TRAINING.CHANNELS_LAST = False

    # Solver extras (AdamW with per-group multipliers).
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    cfg.SOLVER.AMP.PRECISION = "float16"  # float16 | bfloat16 (bf16 needs no loss scaling)

    # Input pipeline extras.
    cfg.INPUT.COLOR_AUG_SSD = False
    cfg.INPUT.SIZE_DIVISIBILITY = -1

    # Users' own datasets: YAML/JSON dataset files (datasets/README.md), registered as
    # <name>_<split> by clipzss_d2.data.register_custom_datasets(cfg) once the config is merged.
    cfg.DATASETS.CUSTOM = []

    # Deterministic mode (clipzss_d2/reproducibility.py, docs/reproducibility.md#deterministic-mode):
    # needs SEED >= 0; a seeded data stream that resumes where it stopped, deterministic kernels.
    cfg.DETERMINISTIC = False

    # ---- Inference and evaluation ----------------------------------------------------------------
    z.INFERENCE = CN()
    z.INFERENCE.MODE = "whole"  # whole | slide
    z.INFERENCE.SLIDE_CROP = 512
    z.INFERENCE.SLIDE_STRIDE = 341
    z.INFERENCE.FLIP = False  # test-time horizontal flip averaging
    z.INFERENCE.SCALES = [1.0]  # test-time multi-scale factors
    z.INFERENCE.SLIDE_BATCH_SIZE = 8  # windows per forward pass in slide mode; 0 = all at once
    # Test-time engineering of the student's forward (no effect on training).
    z.INFERENCE.PRECISION = "fp32"  # fp32 | bf16 | fp16: autocast of backbone + head + classify
    z.INFERENCE.CHANNELS_LAST = True  # NHWC images and logits (faster convs, upsampling, argmax)
    # Images per forward pass in OpenVocabularyPredictor.predict_batch (equal-sized images share
    # one); 0 = one at a time on a CPU (faster there: docs/benchmarks.md), all at once on a GPU.
    z.INFERENCE.IMAGES_PER_FORWARD = 0

    # Evaluation: also report detectron2 v0.6's averaging of classes absent from the ground truth.
    cfg.TEST.REPORT_BOTH_CONVENTIONS = True


def get_clipzss_cfg():
    """detectron2's defaults + DeepLab's + ours: the config every entry point starts from."""
    from detectron2.config import get_cfg
    from detectron2.projects.deeplab import add_deeplab_config

    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_clipzss_config(cfg)
    return cfg
