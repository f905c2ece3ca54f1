#!/usr/bin/env python
"""Train and evaluate CLIP-ZSS with detectron2's trainer.

python train_net.py --config-file configs/voc.yaml --num-gpus 8
python train_net.py --config-file configs/voc.yaml --eval-only MODEL.WEIGHTS output/voc/model_final.pth
python train_net.py --config-file configs/voc.yaml --num-gpus 8 --resume
python train_net.py --config-file configs/voc.yaml --eval-only MODEL.META_ARCHITECTURE CLIPAlone
    (CLIP alone, the training-free baseline: no student, MODEL.WEIGHTS not used)
"""

import contextlib
import logging
import os
import re
import warnings
import weakref
from collections import OrderedDict

# fvcore (which detectron2 imports) scripts a loss with torch.jit at import time and recent
# torch warns about it on every run: the script's own filter, so it comes before the imports.
warnings.filterwarnings("ignore", r".*torch\.jit\.script.*deprecated", FutureWarning)

import detectron2.engine.defaults as d2_defaults  # noqa: E402
import detectron2.utils.comm as comm  # noqa: E402
import torch  # noqa: E402
from detectron2.data import (  # noqa: E402
    build_detection_train_loader,
)
from detectron2.engine import (  # noqa: E402
    AMPTrainer,
    DefaultTrainer,
    HookBase,
    default_argument_parser,
    default_setup,
    launch,
)
from detectron2.layers import NaiveSyncBatchNorm  # noqa: E402
from detectron2.projects.deeplab import build_lr_scheduler  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

import clipzss_d2  # noqa: E402,F401  (registers the datasets and the model)
from clipzss_d2.checkpoint import SafeCheckpointer  # noqa: E402
from clipzss_d2.data import ZeroShotSemSegDatasetMapper, register_custom_datasets  # noqa: E402
from clipzss_d2.diagnostics import PseudoLabelReport  # noqa: E402
from clipzss_d2.entry import exit_on_user_error, load_config  # noqa: E402
from clipzss_d2.errors import UserInputError  # noqa: E402
from clipzss_d2.evaluation import (  # noqa: E402
    build_eval_student,
    build_gzss_evaluator,
    build_gzss_test_loader,
)
from clipzss_d2.model_folder import check_replaceable, write_model_folder  # noqa: E402
from clipzss_d2.modeling.clip_alone import DESCRIPTION, is_clip_alone, refuse_clip_alone  # noqa: E402
from clipzss_d2.reproducibility import (  # noqa: E402
    GatherRNGStates,
    GLMBankState,
    GlobalBatchSampler,
    RNGStates,
    build_deterministic_train_loader,
    check_deterministic_config,
    enable_deterministic_kernels,
)
from clipzss_d2.solver import build_optimizer  # noqa: E402
from clipzss_d2.utils.cuda_check import why_no_gpu  # noqa: E402
from clipzss_d2.utils.distributed import leave_process_groups  # noqa: E402
from clipzss_d2.utils.weights import resolve_model_weights  # noqa: E402

logger = logging.getLogger("clipzss_d2")
PROG = "train_net.py"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


class LogitScaleWriter(HookBase):
    """Put the classifier's logit scale (learned) into the EventStorage every step, so the
    writers (TensorBoard, metrics.json) show it beside the losses and the learning rate."""

    def after_step(self):
        scale = unwrap(self.trainer.model).logit_scale
        self.trainer.storage.put_scalar("logit_scale", float(scale.detach()), smoothing_hint=False)


class ModelFolderWriter(HookBase):
    """After a completed training (not a failed one), write OUTPUT_DIR/model: the folder the
    predictor, demo and export tool load alone (clipzss_d2/model_folder.py), with the final
    evaluation's results when there was one. Runs after the EvalHook's final evaluation."""

    def __init__(self, folder: str):
        self.folder = folder

    def after_train(self):
        if self.trainer.iter < self.trainer.max_iter:  # training stopped by an exception
            return
        write_model_folder(
            self.trainer.cfg,
            unwrap(self.trainer.model),
            self.folder,
            iteration=self.trainer.max_iter,
            eval_results=getattr(self.trainer, "_last_eval_results", None),
        )


@contextlib.contextmanager
def cpu_ddp_shim():
    """detectron2's DefaultTrainer passes device_ids=[local rank] to DDP, which DDP refuses for
    a CPU module; multi-process CPU runs (gloo, as the tests use) need device_ids=None."""
    original = d2_defaults.create_ddp_model

    def create_ddp_model(model, **kwargs):
        if next(model.parameters()).device.type == "cpu":
            kwargs.setdefault("device_ids", None)
        return original(model, **kwargs)

    d2_defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        d2_defaults.create_ddp_model = original


class Trainer(DefaultTrainer):
    """detectron2's DefaultTrainer with this project's builders (as projects/DeepLab does);
    __init__ only adapts the config for the CPU and applies the AMP precision."""

    def __init__(self, cfg):
        on_cpu = not cfg.MODEL.DEVICE.startswith("cuda")
        if cfg.SOLVER.AMP.ENABLED and on_cpu:
            logger.warning("SOLVER.AMP.ENABLED is ignored on the CPU; training in fp32.")
            cfg = cfg.clone()
            cfg.defrost()
            cfg.SOLVER.AMP.ENABLED = False
            cfg.freeze()
        with cpu_ddp_shim():
            super().__init__(cfg)
        if isinstance(self._trainer, AMPTrainer):  # DefaultTrainer builds it with fp16
            self._trainer.precision = getattr(torch, cfg.SOLVER.AMP.PRECISION)
            # the loss scale beside the losses ("[metric]grad_scaler" in metrics.json): one that
            # keeps falling means fp16 gradients overflow
            self._trainer.log_grad_scaler = True

    @classmethod
    def build_model(cls, cfg):
        """The student (and, for training, GLM / PLM), with the frozen CLIP teacher loaded now:
        missing CLIP weights fail before the data loader starts."""
        model = super().build_model(cfg)
        if comm.get_world_size() > 1:
            if cfg.DETERMINISTIC:  # one set of BatchNorm statistics over the global batch
                sync_batch_norms(model, (torch.nn.BatchNorm2d, torch.nn.SyncBatchNorm))
            elif not cfg.MODEL.DEVICE.startswith("cuda") and sync_batch_norms(
                model, (torch.nn.SyncBatchNorm,)
            ):
                logger.info(
                    "SyncBN has no CPU kernel: its layers synchronise through detectron2's "
                    "NaiveSyncBatchNorm (all-reduce over gloo) in this %d-process CPU run.",
                    comm.get_world_size(),
                )
        model.build_teacher()
        return model

    def resume_or_load(self, resume=True):
        if not (resume and self.checkpointer.has_checkpoint()):
            resolve_model_weights(self.cfg.MODEL.WEIGHTS)  # clear error before a long start-up
        super().resume_or_load(resume=resume)
        # A checkpoint restores the scheduler's whole state, schedule length included; the
        # config must win so a run can be extended (--resume with a larger SOLVER.MAX_ITER).
        if hasattr(self.scheduler, "max_iters"):
            self.scheduler.max_iters = self.cfg.SOLVER.MAX_ITER
        sampler = getattr(self.data_loader, "batch_sampler", None)
        if isinstance(sampler, GlobalBatchSampler):  # deterministic data stream: skip what was seen
            sampler.start_iter = self.start_iter

    def build_hooks(self):
        # the checkpointer, first: the GLM bank and every process's RNG states too, so that
        # --resume continues the run (DefaultTrainer's has no place for them)
        self.rng_states = RNGStates()
        self.checkpointer = SafeCheckpointer(
            self.model,
            self.cfg.OUTPUT_DIR,
            trainer=weakref.proxy(self),
            glm_bank=GLMBankState(unwrap(self.model)),
            rng=self.rng_states,
        )
        hooks = super().build_hooks()
        # first, on every process: the checkpointer (main process only) saves what it gathers
        period, max_iter = self.cfg.SOLVER.CHECKPOINT_PERIOD, self.cfg.SOLVER.MAX_ITER
        hooks = [GatherRNGStates(self.rng_states, period, max_iter), *hooks]
        if comm.is_main_process():  # the writers run there; the scale must precede them
            hooks.insert(1, LogitScaleWriter())
            hooks.append(ModelFolderWriter(os.path.join(self.cfg.OUTPUT_DIR, "model")))
        probe = unwrap(self.model).pseudo_label_probe  # MODEL.CLIPZSS.DIAGNOSTICS.PSEUDO_LABELS
        if probe is not None:
            hooks.append(PseudoLabelReport(probe, self.cfg.OUTPUT_DIR))
        return hooks

    @classmethod
    def build_train_loader(cls, cfg):
        mapper = ZeroShotSemSegDatasetMapper(cfg, is_train=True)
        if cfg.DETERMINISTIC:
            return build_deterministic_train_loader(cfg, mapper)
        return build_detection_train_loader(cfg, mapper=mapper)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_gzss_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_gzss_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Evaluate each test set over its own class list (its test loader puts it in every
        input), unless MODEL.CLIPZSS.TEST_VOCABULARY forces one."""
        results = OrderedDict()
        for idx, name in enumerate(cfg.DATASETS.TEST):
            single = cfg.clone()
            single.defrost()
            single.DATASETS.TEST = (name,)
            evaluator = [evaluators[idx]] if evaluators else None
            results[name] = super().test(single, model, evaluator)
        if len(results) == 1:
            return next(iter(results.values()))
        return results


def check_launch_arguments(args) -> None:
    """detectron2's launcher trusts its arguments; a wrong one fails in a worker, or waits."""
    if args.num_gpus < 1 or args.num_machines < 1:
        raise UserInputError(
            f"--num-gpus and --num-machines must be at least 1, got {args.num_gpus} and "
            f"{args.num_machines}."
        )
    if not 0 <= args.machine_rank < args.num_machines:
        raise UserInputError(
            f"--machine-rank {args.machine_rank} must be between 0 and --num-machines - 1 "
            f"({args.num_machines - 1})."
        )
    url = args.dist_url
    if args.num_gpus * args.num_machines == 1 or (url == "auto" and args.num_machines == 1):
        return
    if not re.fullmatch(r"tcp://[^:/\s]+:\d+|env://|file:///\S+", url):
        raise UserInputError(
            f"--dist-url {url!r} is not a rendezvous address torch accepts: use tcp://HOST:PORT "
            f"(the first machine's address), env://, or auto on one machine."
        )


def check_devices(cfg, args) -> None:
    """Refuse, before any process starts, a run asking for more GPUs than the machine has."""
    if not cfg.MODEL.DEVICE.startswith("cuda"):
        return  # CPU runs: --num-gpus N starts N gloo processes
    found = torch.cuda.device_count()
    if found == 0:
        raise UserInputError(
            f"MODEL.DEVICE is {cfg.MODEL.DEVICE} but torch finds no CUDA device: {why_no_gpu()}. "
            f"Or pass MODEL.DEVICE cpu to run on the CPU."
        )
    if args.num_gpus > found:
        raise UserInputError(
            f"--num-gpus {args.num_gpus} asks for {args.num_gpus} GPU(s) but {found} CUDA "
            f"device(s) were found: pass a smaller --num-gpus, or MODEL.DEVICE cpu to run on the "
            f"CPU (--num-gpus N then starts N CPU processes)."
        )


def sync_batch_norms(module: torch.nn.Module, types: tuple[type, ...]) -> int:
    """Layers of exactly these types -> detectron2's NaiveSyncBatchNorm, which all-reduces
    statistics with any backend (gloo included): SyncBatchNorm has no CPU kernel, and
    per-process BatchNorm statistics make a multi-process run differ from the single-process
    one. Returns how many layers were replaced."""
    replaced = 0
    for name, child in module.named_children():
        if type(child) in types:
            bn = NaiveSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine)
            bn.load_state_dict(child.state_dict())
            setattr(module, name, bn.to(child.weight.device))
            replaced += 1
        else:
            replaced += sync_batch_norms(child, types)
    return replaced


def check_trainable(cfg) -> None:
    refuse_clip_alone(cfg, "there is nothing to train: evaluate it with --eval-only.")


def setup(args):
    cfg = load_config(args)
    cfg.freeze()
    if cfg.DETERMINISTIC:
        check_deterministic_config(cfg)
        enable_deterministic_kernels()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="clipzss_d2")
    return cfg


@exit_on_user_error(PROG, system_exit=True)  # in every launched process
def main(args):
    cfg = setup(args)
    register_custom_datasets(cfg)  # DATASETS.CUSTOM files, checked before the model is built
    if args.eval_only:
        model = build_eval_student(cfg, resume=args.resume, build=Trainer.build_model)
        results = Trainer.test(cfg, model)
        if is_clip_alone(cfg):
            logger.warning("The results above are %s, not a trained student's.", DESCRIPTION)
    else:
        check_trainable(cfg)
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        results = trainer.train()
    leave_process_groups()  # a gloo rank could otherwise abort at exit after finishing its work
    return results


@exit_on_user_error(PROG, system_exit=True)
def check_before_launch(args) -> None:
    """User mistakes found here stop the run before any process starts."""
    check_launch_arguments(args)
    config = load_config(args)
    check_devices(config, args)
    register_custom_datasets(config)  # a bad dataset file stops here, before any process
    if config.DETERMINISTIC:
        check_deterministic_config(config)
    if not args.eval_only:  # the end of training writes OUTPUT_DIR/model (ModelFolderWriter)
        check_trainable(config)
        check_replaceable(
            os.path.join(config.OUTPUT_DIR, "model"),
            what="OUTPUT_DIR/model,",
            remedy="training ends by replacing it with the model folder: move it away or "
            "choose another OUTPUT_DIR",
        )


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    check_before_launch(args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
