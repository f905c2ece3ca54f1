#!/usr/bin/env python
"""The main job: CLIP-ZSS end to end on the built-in miniature world, on the CPU, in minutes.

1. generate the world (train / tune / test splits; seen/unseen split in the metadata);
2. get the teacher: a tiny QuickGELU CLIP trained here on captions naming all classes (cached),
   loaded from its state-dict file as users load OpenAI's weights;
3. train the student with seen labels only (unseen pixels are ignored, unseen names unseen);
4. evaluate mIoU(seen), mIoU(unseen), hIoU on the *test* split; pseudo-label share and purity
   against the hidden labels (diagnostics, switched on here for runs with pseudo labels);
5. run the demo on test images with a vocabulary that includes the unseen names.

    python tools/run_miniworld.py                      # the README's main job (full method)
    python tools/run_miniworld.py --ablation           # baseline / +GLM / +PLM / full, 3 seeds
    python tools/run_miniworld.py --ablation --reuse   # ... keeping the runs already finished
    python tools/run_miniworld.py --ladder --reuse     # trained / oracle / ideal-text / weak
                                                       # teacher x the four variants, 5 seeds:
                                                       # `make ablation`
    python tools/run_miniworld.py --ladder --table-only  # its table from the runs finished so
                                                       # far; trains nothing, names what is missing
    python tools/run_miniworld.py --tune               # the hyper-parameter search, tune split
"""

import argparse
import copy
import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]  # the package and train_net; tools/benchmarking

# fvcore (which detectron2 imports) scripts a loss with torch.jit at import time and recent
# torch warns about it on every run: the script's own filter, so it comes before the imports.
warnings.filterwarnings("ignore", r".*torch\.jit\.script.*deprecated", FutureWarning)

from benchmarking.miniworld_tables import RUN_METRICS, results_table, tuning_table  # noqa: E402
from detectron2.utils.env import seed_all_rng  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from clipzss_d2 import get_clipzss_cfg  # noqa: E402
from clipzss_d2.entry import run_main  # noqa: E402
from clipzss_d2.errors import UserInputError  # noqa: E402
from clipzss_d2.miniworld import register_miniworld, world  # noqa: E402
from clipzss_d2.miniworld.generate import DEFAULT_COUNTS, generate_world  # noqa: E402
from clipzss_d2.miniworld.train_teacher import (  # noqa: E402
    DEFAULT_TEACHER_PATH,
    TeacherConfig,
    cached_teacher_info,
    get_miniworld_teacher,
)
from clipzss_d2.utils.config_loading import merge_config_file  # noqa: E402
from clipzss_d2.utils.io import atomic_write_text  # noqa: E402
from train_net import Trainer  # noqa: E402

VARIANTS = ("baseline", "glm-only", "plm-only", "full")
# The stated search (--tune): coordinate descent on the tune split, seed 0, full method; each
# step keeps the best hIoU so far. Ties and anything not listed keep configs/miniworld values.
# Only the GLM loss weight is searched: the one value this project once chose on reported
# images; λ (PLM.FUSION_THRESHOLD 0.9), K-Means windows and temperatures stay at the paper's
# defaults, and more steps can be added here (each value costs one training run).
TUNING_STEPS = (("MODEL.CLIPZSS.GLM.LOSS_WEIGHT", (0.1, 0.3, 1.0)),)
DIAGNOSTICS_FILE = "pseudo_label_diagnostics.json"
# --teacher-* flags (argparse dest) -> the TeacherConfig field each overrides
TEACHER_FLAGS = {"teacher_steps": "steps", "teacher_patch_dropout": "patch_dropout"}
# The ladder (--ladder, `make ablation`): what each module transfers with the default, an ideal
# and a weak teacher. The oracle (docs/notes/2026-12-06-oracle-teacher.md) keeps the trained
# teacher's text embeddings, which are the student's classifier, so its baseline (no teacher) is
# the trained teacher's and is not trained twice. "ideal-text" is the oracle with every class's
# text embedding replaced by an orthonormal one (docs/notes/2026-12-07-ideal-text.md): no
# look-alikes in the classifier, so it has its own baseline. The weak teacher is the default
# recipe with a quarter of its steps; its text embeddings are its own, so it has its own baseline.
LADDER = ("trained", "oracle", "ideal-text", "weak")
LADDER_SEEDS = (0, 1, 2, 3, 4)
ORACLE_OPTS = ("MODEL.CLIPZSS.DIAGNOSTICS.ORACLE_TEACHER", True)
IDEAL_TEXT_OPTS = ("MODEL.CLIPZSS.DIAGNOSTICS.IDEAL_TEXT", True)


@dataclasses.dataclass(frozen=True)
class Rung:
    """One teacher of the ladder: its file, the config opts of every variant, the opts of the
    variants a teacher teaches (not the baseline), its zero-shot figures (None: no teacher
    network), whether it trains a baseline of its own, and how the table describes it."""

    teacher_path: str
    opts: tuple = ()
    teacher_opts: tuple = ()
    figures: dict | None = None
    own_baseline: bool = True
    description: str = ""


WEAK_TEACHER_STEPS_DIVISOR = 4
logger = logging.getLogger("clipzss_d2.miniworld")


def stage(title):
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def train_and_evaluate(variant, seed, args, teacher_path, extra=(), name=None):
    cfg = variant_cfg(variant, args)
    out_dir = os.path.join(args.output, name or variant, f"seed{seed}")
    opts = [
        "MODEL.CLIPZSS.CLIP.PRETRAINED", teacher_path,
        "MODEL.CLIPZSS.TEXT.CACHE_DIR", os.path.join(args.output, "text_cache"),
        "OUTPUT_DIR", out_dir,
        "SEED", seed,
    ]  # fmt: skip
    if args.iters:
        opts += ["SOLVER.MAX_ITER", args.iters, "SOLVER.WARMUP_ITERS", min(100, args.iters // 10)]
    cfg.merge_from_list(opts + list(extra) + args.opts)
    # the diagnostics read hidden labels: asked for here, never on by default
    cfg.MODEL.CLIPZSS.DIAGNOSTICS.PSEUDO_LABELS = bool(cfg.MODEL.CLIPZSS.PLM.PSEUDO_LABELS)
    cfg.freeze()
    finished = finished_run(out_dir, cfg)
    if finished is not None and (args.reuse or args.table_only):
        print(f"reusing the finished run in {out_dir} (same config)")
        return finished
    if args.table_only:
        return None  # not trained: the caller names it among the missing runs
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, "config.yaml"), cfg.dump())
    seed_all_rng(seed)
    start = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    # detectron2's final EvalHook stores its results there (train() returns them only when
    # TEST.EXPECTED_RESULTS is set)
    results = getattr(trainer, "_last_eval_results", None) or Trainer.test(cfg, trainer.model)
    results = results["sem_seg"]
    minutes = (time.perf_counter() - start) / 60
    row = {k: results.get(k, float("nan")) for k in RUN_METRICS}
    row["unseen_iou"] = {c: results.get(f"IoU-{c}", float("nan")) for c in world.UNSEEN}
    row["from_seen"] = {c: results.get(f"FromSeen-{c}", float("nan")) for c in world.UNSEEN}
    row["pseudo_labels"] = read_diagnostics(out_dir)
    row["curve"] = read_curve(out_dir, cfg.SOLVER.MAX_ITER)
    row.update(
        variant=variant, seed=seed, train_minutes=minutes, output_dir=out_dir,
        test_set=list(cfg.DATASETS.TEST), overrides=[str(v) for v in extra],
        student=args.student or "Base-MiniWorld (DeepLabV3+ narrow R-50)",
    )  # fmt: skip
    atomic_write_text(os.path.join(out_dir, "results.json"), json.dumps(row, indent=2))
    return row


def read_diagnostics(out_dir):
    """Pseudo-label share and purity per unseen class (None for runs without pseudo labels)."""
    try:
        with open(os.path.join(out_dir, DIAGNOSTICS_FILE)) as f:
            summary = json.load(f)
    except OSError:
        return None
    per = summary["per_class"]
    return {
        "unseen_share": summary["unseen_share"],
        "share": {c: per[c]["share"] for c in world.UNSEEN},
        "purity": {c: per[c]["purity"] for c in world.UNSEEN},
        "void_share": per["(void)"]["share"],
    }


def read_curve(out_dir, max_iter):
    """Every evaluation of the run (TEST.EVAL_PERIOD's and the final one) from detectron2's
    metrics.json: [iterations done, mIoU(seen), mIoU(unseen), hIoU] per evaluation."""
    keys = ("sem_seg/mIoU(seen)", "sem_seg/mIoU(unseen)", "sem_seg/hIoU")
    curve = []
    with open(os.path.join(out_dir, "metrics.json")) as f:
        for line in f:
            entry = json.loads(line)
            if "sem_seg/hIoU" in entry:
                # a periodic evaluation is stored at the index of the iteration just finished,
                # the final one (never periodic: EvalHook skips max_iter) at max_iter
                done = entry["iteration"] + (entry["iteration"] != max_iter)
                curve.append([done] + [entry[k] for k in keys])
    return curve


def finished_run(out_dir, cfg):
    """The results of an earlier run in out_dir with this config, else None."""
    try:
        with open(os.path.join(out_dir, "config.yaml")) as f:
            same = same_config(f.read(), cfg)
        with open(os.path.join(out_dir, "results.json")) as f:
            return json.load(f) if same else None
    except (OSError, json.JSONDecodeError):
        return None


def same_config(stored, cfg):
    """Whether a run's config.yaml text is ``cfg``. A key added to the defaults after the run
    was written (a new option, off by default) counts as its default value; a key since removed
    makes it another config."""
    if stored == cfg.dump():
        return True
    old = get_clipzss_cfg()
    try:
        old.merge_from_other_cfg(old.load_cfg(stored))
    except (KeyError, ValueError, TypeError, AssertionError, yaml.YAMLError):
        return False  # a config.yaml cut short or edited by hand: another run
    return yaml.safe_load(old.dump()) == yaml.safe_load(cfg.dump())  # anchors resolved


def variant_cfg(variant, args):
    """configs/miniworld/<variant>.yaml with the --student delta (no _BASE_) merged over it."""
    cfg = get_clipzss_cfg()
    merge_config_file(cfg, str(ROOT / "configs" / "miniworld" / f"{variant}.yaml"))
    if args.student:
        merge_config_file(cfg, args.student, "--student")
    return cfg


def config_value(key, args):
    """The value configs/miniworld/full.yaml (with the command's overrides) gives `key`."""
    cfg = variant_cfg("full", args)
    cfg.merge_from_list(list(args.opts))
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def tune(args, teacher_path):
    """The stated search on the tune split (TUNING_STEPS); returns the table and the choice."""
    defaults = {key: config_value(key, args) for key, _ in TUNING_STEPS}
    chosen, rows, done = {}, [], {}
    for key, values in TUNING_STEPS:
        scored = []
        for value in values:
            setting = dict(defaults)
            setting.update(chosen)
            setting[key] = value
            ident = tuple(sorted(setting.items()))
            if ident not in done:  # the config's own value was run in an earlier step
                extra = [x for kv in setting.items() for x in kv]
                extra += ["DATASETS.TEST", "('miniworld_tune',)"]
                name = "tune/" + "_".join(f"{k.split('.')[-1]}={v}" for k, v in setting.items())
                print(f"\n--- tune: {key} = {value} ({setting}) ---", flush=True)
                row = train_and_evaluate("full", args.tune_seed, args, teacher_path, extra, name)
                row["setting"] = setting
                rows.append(row)
                done[ident] = row
            scored.append((done[ident]["hIoU"], value))
        # a tie keeps the configs' value (as stated above TUNING_STEPS), else the first listed
        chosen[key] = max(scored, key=lambda sv: (sv[0], sv[1] == defaults[key]))[1]
    table = tuning_table(rows, chosen, args.tune_seed)
    return table, rows, chosen


def run_demo(row, args, world_root):
    """The real demo script, as a user runs it, on a few validation images."""
    images = sorted((Path(world_root) / "images" / "test").glob("*"))[: args.demo_images]
    out = os.path.join(args.output, "demo")
    vocab = ",".join(world.CLASSES)
    cmd = [
        sys.executable, str(ROOT / "demo" / "demo.py"),
        "--config-file", os.path.join(row["output_dir"], "config.yaml"),
        "--input", *map(str, images),
        "--output", out,
        "--vocab", vocab,
        "--opts", "MODEL.WEIGHTS", os.path.join(row["output_dir"], "model_final.pth"),
    ]  # fmt: skip
    print(f"vocabulary (unseen: {', '.join(world.UNSEEN)}): {vocab}")
    subprocess.run(cmd, check=True, cwd=ROOT)
    print(f"overlays, label maps and JSON summaries in {out}/")


def teacher_config(args):
    """TeacherConfig with the command's overrides, or None for the default teacher."""
    overrides = {
        field: getattr(args, flag)
        for flag, field in TEACHER_FLAGS.items()
        if getattr(args, flag) is not None
    }
    return TeacherConfig(**overrides) if overrides else None


def teacher_path_for(cfg, args):
    """--teacher-path, else the default path for the default teacher and a path named by the
    config's fingerprint for any other, so that no teacher replaces another one's file."""
    if args.teacher_path:
        return args.teacher_path
    if cfg is None:
        return DEFAULT_TEACHER_PATH
    stem, ext = os.path.splitext(DEFAULT_TEACHER_PATH)
    return f"{stem}-{cfg.fingerprint()[:10]}{ext}"


def get_teacher(path, cfg, args):
    """The cached or newly trained teacher at `path`, and its zero-shot figures (with
    --table-only only the path and the figures of a teacher already there: nothing trains)."""
    if not args.table_only:
        path = get_miniworld_teacher(
            path, cfg=cfg, force=args.retrain_teacher, replace_flag="--retrain-teacher"
        )
    info = cached_teacher_info(path, cfg) or {}
    print(f"teacher: {path}; {json.dumps(info.get('eval', {}))}")
    return path, info.get("eval", {})


def ladder_rungs(args, teacher_cfg, teacher_path, teacher_eval, names=LADDER):
    """{rung: Rung} for the rungs named; trains the weak teacher (beside the trained one, named
    by its config) unless it is cached or not asked for."""
    rungs = {}
    for name in names:
        if name == "trained":
            rungs[name] = Rung(teacher_path, figures=teacher_eval)
        elif name == "oracle":
            rungs[name] = Rung(
                teacher_path,
                teacher_opts=ORACLE_OPTS,
                own_baseline=False,
                description="the hidden labels (patch tokens = each patch's class text "
                "embedding, CLS = the crop's classes by area); the trained teacher's text "
                "embeddings, so its baseline is the trained teacher's",
            )
        elif name == "ideal-text":
            rungs[name] = Rung(
                teacher_path,
                opts=IDEAL_TEXT_OPTS,
                teacher_opts=ORACLE_OPTS,
                description=f"the oracle, with every class's text embedding (classifier and "
                f"teacher) one of {len(world.CLASSES)} orthonormal vectors: no class looks like "
                "another; its own baseline",
            )
        else:
            trained = teacher_cfg or TeacherConfig()
            weak_cfg = dataclasses.replace(
                trained, steps=max(1, trained.steps // WEAK_TEACHER_STEPS_DIVISOR)
            )
            stem, ext = os.path.splitext(teacher_path)
            weak_path, weak_eval = get_teacher(
                f"{stem}-weak-{weak_cfg.fingerprint()[:10]}{ext}", weak_cfg, args
            )
            rungs[name] = Rung(weak_path, figures=weak_eval)
    return rungs


def run_ladder(rungs, variants, seeds, args):
    """Every rung x seed x variant (seeds before variants, so an interrupted ladder has whole
    seeds); each rung's runs under <output>/<rung>/. Returns the rows and the runs --table-only
    did not find."""
    rows, missing = [], []
    for name, rung in rungs.items():
        rung_args = copy.copy(args)
        rung_args.output = os.path.join(args.output, name)
        for seed in seeds:
            for variant in variants:
                if variant == "baseline" and not rung.own_baseline:
                    continue  # the trained teacher's baseline (see LADDER)
                extra = rung.opts + (rung.teacher_opts if variant != "baseline" else ())
                print(f"\n--- {name} teacher: {variant}, seed {seed} ---", flush=True)
                row = train_and_evaluate(variant, seed, rung_args, rung.teacher_path, extra)
                if row is None:
                    missing.append(f"{name} teacher: {variant}, seed {seed}")
                    continue
                row.update(teacher=name, label=f"{name} teacher: {variant}")
                rows.append(row)
    return rows, missing


def ladder_preamble(rungs):
    """The teachers of the ladder's table and their zero-shot accuracy on crops of things."""
    lines = ["Teachers (zero-shot accuracy on crops of things, seen / unseen, the teacher's "
             "own evaluation images):", ""]  # fmt: skip
    for name, rung in rungs.items():
        if rung.figures is None:
            lines.append(f"- {name}: {rung.description}")
        else:
            seen = 100 * rung.figures.get("thing_zero_shot_acc_seen", math.nan)
            unseen = 100 * rung.figures.get("thing_zero_shot_acc_unseen", math.nan)
            lines.append(f"- {name}: `{rung.teacher_path}`, {seen:.1f} / {unseen:.1f} %")
    return "\n".join(lines) + "\n\n"


def main(argv=None) -> int:
    run(argv)
    return 0


def run(argv=None):
    """Every stage; returns the result rows."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--output", default="output/miniworld")
    ap.add_argument(
        "--ablation", action="store_true", help="all four variants (default: full only)"
    )
    ap.add_argument(
        "--ladder",
        action="store_true",
        help="all four variants with each of an oracle, the trained and a weak teacher, in one "
        "table (`make ablation`)",
    )
    ap.add_argument(
        "--rungs",
        nargs="+",
        choices=LADDER,
        help="with --ladder: the teachers to run (default: all of them)",
    )
    ap.add_argument(
        "--variants", nargs="+", choices=VARIANTS, help="override the variants to train"
    )
    ap.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="default: 0 (main job), 0 1 2 (--ablation) or 0 1 2 3 4 (--ladder)",
    )
    ap.add_argument(
        "--tune",
        action="store_true",
        help="run the stated hyper-parameter search on the tune split instead (TUNING_STEPS)",
    )
    ap.add_argument(
        "--student",
        default="",
        help="a student config delta merged over each variant, e.g. "
        "configs/miniworld/students/segformer-b0.yaml (default: Base-MiniWorld's student)",
    )
    ap.add_argument("--tune-seed", type=int, default=0)
    ap.add_argument("--iters", type=int, default=0, help="override SOLVER.MAX_ITER")
    ap.add_argument(
        "--world-root",
        default=os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "miniworld"),
        help="where the generated world lives (default: $DETECTRON2_DATASETS/miniworld)",
    )
    for split, count in DEFAULT_COUNTS.items():
        ap.add_argument(f"--num-{split}", type=int, default=count, help=f"{split} images")
    ap.add_argument(
        "--teacher-path",
        default="",
        help=f"cached teacher checkpoint (default: {DEFAULT_TEACHER_PATH}, or a name with the "
        "config's fingerprint for a teacher changed by --teacher-*)",
    )
    ap.add_argument(
        "--retrain-teacher",
        action="store_true",
        help="train the teacher(s) again and replace their files, even one of another config",
    )
    ap.add_argument("--teacher-steps", type=int, default=None, help="override the teacher's steps")
    ap.add_argument(
        "--teacher-patch-dropout",
        type=float,
        default=None,
        help="override the teacher's training patch dropout (a cheaper, weaker teacher; docs/notes/2026-11-30-miniworld-record.md)",
    )
    ap.add_argument("--demo-images", type=int, default=4)
    ap.add_argument("--no-demo", action="store_true")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="skip runs whose output dir already holds results for the same config "
        "(resumes an interrupted ablation)",
    )
    ap.add_argument(
        "--table-only",
        action="store_true",
        help="write the table from the runs already finished with the same configs and name "
        "the missing ones; generates, trains and evaluates nothing",
    )
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = ap.parse_args(argv)
    if sum((args.ablation, args.ladder, args.tune)) > 1:
        raise UserInputError("--ablation, --ladder and --tune are separate jobs: give one.")
    if args.table_only and args.tune:
        raise UserInputError(
            "--table-only reads the runs of the main job, --ablation or --ladder; the search "
            "(--tune) keeps its own table: give one of them."
        )
    if args.table_only and args.retrain_teacher:
        raise UserInputError(
            "--table-only trains nothing: drop --retrain-teacher, or --table-only."
        )
    if args.rungs and not args.ladder:
        raise UserInputError("--rungs picks the teachers of --ladder: add --ladder, or drop it.")
    variants = args.variants or (VARIANTS if args.ablation or args.ladder else ("full",))
    seeds = args.seeds or list(LADDER_SEEDS if args.ladder else [0, 1, 2] if args.ablation else [0])
    if any(not 0 <= s < 2**32 for s in seeds):
        raise UserInputError(f"--seeds must be between 0 and 2**32 - 1, got {seeds}.")
    variant_cfg("full", args)  # a bad --student file stops here, before any work
    setup_logger(name="detectron2", abbrev_name="d2")
    setup_logger(name="clipzss_d2")
    timings = {}

    world_root = args.world_root
    if not args.table_only:
        t = stage("1/5 world")
        counts = {s: getattr(args, f"num_{s}") for s in DEFAULT_COUNTS}
        manifest = generate_world(world_root, seed=0, counts=counts)
        register_miniworld(world_root)
        timings["world"] = time.perf_counter() - t
        counts = " / ".join(f"{n} {s}" for s, n in manifest["key"]["counts"].items())
        print(f"{world_root}: {counts} images, {len(world.CLASSES)} classes, "
              f"unseen = {', '.join(world.UNSEEN)}")  # fmt: skip

    t = stage("2/5 teacher (tiny CLIP trained on captions naming all classes)")
    teacher_cfg = teacher_config(args)
    teacher_path, teacher_eval = get_teacher(teacher_path_for(teacher_cfg, args), teacher_cfg, args)
    rungs = None
    if args.ladder:
        rungs = ladder_rungs(args, teacher_cfg, teacher_path, teacher_eval, args.rungs or LADDER)
    timings["teacher"] = time.perf_counter() - t

    if args.tune:
        t = stage(f"tuning on the tune split: at most {sum(len(v) for _, v in TUNING_STEPS)} runs")
        table, rows, chosen = tune(args, teacher_path)
        timings["tuning"] = time.perf_counter() - t
        path = os.path.join(args.output, "tuning.md")
        atomic_write_text(path, table)
        payload = {"rows": rows, "chosen": chosen, "timings_s": timings}
        atomic_write_text(path[:-3] + ".json", json.dumps(payload, indent=2))
        print("\n" + table + f"\n(saved to {path})")
        return rows

    rows, missing = [], []
    jobs = f"{' / '.join(rungs)} teacher x " if rungs else ""
    what = "the finished runs of" if args.table_only else "student training + evaluation:"
    t = stage(f"3-4/5 {what} {jobs}{', '.join(variants)} x seeds {seeds}")
    if rungs:
        rows, missing = run_ladder(rungs, variants, seeds, args)
    else:
        for variant in variants:
            for seed in seeds:
                print(f"\n--- {variant}, seed {seed} ---", flush=True)
                row = train_and_evaluate(variant, seed, args, teacher_path)
                if row is None:
                    missing.append(f"{variant}, seed {seed}")
                else:
                    rows.append(row)
    timings["students"] = time.perf_counter() - t
    if missing:
        print(f"\nnot finished ({len(missing)} runs): " + "; ".join(missing))
    if not rows:
        raise UserInputError(
            f"No finished run with these configs under {args.output}: train them with the same "
            "command without --table-only (with --reuse to keep the runs already done)."
        )
    table = (ladder_preamble(rungs) if rungs else "") + results_table(rows, seeds)
    # named by the job asked for, not by the runs found (--table-only), so that a table of
    # one finished ablation run never replaces the main job's results.md, nor a part of the
    # ladder (--rungs, --seeds, --variants) its whole table
    name = "ladder" if rungs else "ablation" if len(variants) * len(seeds) > 1 else "results"
    if rungs:  # a part of the ladder is named by what differs from the whole
        parts = [(list(rungs), list(LADDER), ""), (list(variants), list(VARIANTS), ""),
                 (list(map(str, seeds)), list(map(str, LADDER_SEEDS)), "seeds")]  # fmt: skip
        name += "".join(f"_{tag}{'-'.join(asked)}" for asked, whole, tag in parts if asked != whole)
    path = os.path.join(args.output, f"{name}.md")
    atomic_write_text(path, table)
    atomic_write_text(
        path[:-3] + ".json", json.dumps({"rows": rows, "timings_s": timings}, indent=2)
    )
    print("\n" + table + f"\n(saved to {path})")

    if not (args.no_demo or args.table_only):
        t = stage("5/5 demo with a vocabulary that includes the unseen classes")
        full = [r for r in rows if r["variant"] == "full"] or rows
        run_demo(full[0], args, world_root)
        timings["demo"] = time.perf_counter() - t
    print("\nstage times: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items()))
    return rows


if __name__ == "__main__":
    sys.exit(run_main(main, prog="run_miniworld.py"))
