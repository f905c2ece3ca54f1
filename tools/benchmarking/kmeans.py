"""Micro-benchmark of PLM's batched multi-scale K-Means (+ mask fusion) against scikit-learn.

PLM clusters every training image's teacher tokens at every iteration, so this must cost a
small fraction of a training step. Default workload = one ViT-B/16 batch at 512 px: 16 images,
32x32 tokens of 512-d, window seeds 2/4/8 (256 + 64 + 16 clusters), 10 Lloyd iterations.
scikit-learn (KMeans, init = the same seeds, n_init=1, lloyd, max_iter = iters, tol=0) runs
image by image and scale by scale; it has no fusion step, so the ratio compares K-Means only
(euclidean, as scikit-learn). Example:

    python tools/benchmark_kmeans.py --device cpu
"""

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from clipzss_d2.modeling.training.plm.kmeans import kmeans, window_seeds
from clipzss_d2.modeling.training.plm.pseudo_labels import PseudoLabeler


def make_tokens(batch, grid, dim, segments=8, noise=0.6, seed=0):
    """Patch tokens with planted blob-shaped segments (a coarse random label map upsampled)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, segments, (batch, 1, 4, 4), generator=g).float()
    seg = F.interpolate(coarse, size=(grid, grid), mode="nearest")[:, 0].long()
    dirs = torch.randn(batch, segments, dim, generator=g)
    tokens = dirs.gather(1, seg.flatten(1)[..., None].expand(-1, -1, dim))
    tokens = tokens + noise * torch.randn(tokens.shape, generator=g)
    return tokens.transpose(1, 2).reshape(batch, dim, grid, grid).contiguous()


def timed(fn, device, repeats):
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()  # warm-up (allocator, kernels, thread pools)
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def ours_kmeans_only(tokens, windows, iters, metric):
    b, c, h, w = tokens.shape
    x = F.normalize(tokens, dim=1) if metric == "cosine" else tokens
    flat = x.flatten(2).transpose(1, 2).contiguous()
    for win in windows:
        seeds, valid = window_seeds(x, win)
        kmeans(flat, seeds, valid, None, iters, metric)


def sklearn_kmeans(tokens, windows, iters):
    from sklearn.cluster import KMeans

    b, c, h, w = tokens.shape
    flat = tokens.flatten(2).transpose(1, 2).numpy().astype(np.float32)
    seeds_per_scale = [window_seeds(tokens, win)[0].numpy().astype(np.float32) for win in windows]
    n_iter = []
    for i in range(b):
        for seeds in seeds_per_scale:
            km = KMeans(
                n_clusters=seeds.shape[1],
                init=seeds[i],
                n_init=1,
                max_iter=iters,
                tol=0.0,
                algorithm="lloyd",
            ).fit(flat[i])
            n_iter.append(km.n_iter_)
    return n_iter


def _cases(x, labeler, args):
    w, it = args.windows, args.iters
    return (
        ("K-Means only, euclidean", lambda: ours_kmeans_only(x, w, it, "euclidean")),
        ("K-Means only, cosine", lambda: ours_kmeans_only(x, w, it, "cosine")),
        ("full PLM labeler (cosine K-Means + fusion + partition)", lambda: labeler(x)),
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--grid", type=int, default=32)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--windows", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--segments", type=int, default=8, help="planted segments per image")
    ap.add_argument("--noise", type=float, default=0.6, help="token noise (segment dirs ~1)")
    ap.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    ap.add_argument("--skip-sklearn", action="store_true")
    args = ap.parse_args(argv)

    tokens = make_tokens(args.batch, args.grid, args.dim, args.segments, args.noise)
    ks = [((args.grid + w - 1) // w) ** 2 for w in args.windows]
    print(
        f"workload: {args.batch} images, {args.grid}x{args.grid} tokens, {args.dim}-d, "
        f"windows {args.windows} -> K = {ks}, {args.iters} iterations, "
        f"{args.segments} planted segments, noise {args.noise}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    devices = []
    if args.device in ("cpu", "all"):
        devices.append(torch.device("cpu"))
    if args.device in ("cuda", "all"):
        if torch.cuda.is_available():
            devices.append(torch.device("cuda"))
        elif args.device == "cuda":
            raise SystemExit("CUDA requested but not available")

    results = {}
    for dev in devices:
        x = tokens.to(dev)
        labeler = PseudoLabeler(window_sizes=args.windows, iters=args.iters, metric="cosine")
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
        for label, fn in _cases(x, labeler, args):
            ms = timed(fn, dev, args.repeats)
            results[(dev.type, label)] = ms
            print(f"ours [{name}] {label}: {ms:.1f} ms/batch")
        n_regions = labeler(x).valid.sum(1).float().mean().item()
        print(f"ours [{name}] mean pseudo regions per image after fusion: {n_regions:.1f}")

    if not args.skip_sklearn:
        import sklearn
        from threadpoolctl import threadpool_info

        n_iter = []
        ms = timed(
            lambda: n_iter.extend(sklearn_kmeans(tokens, args.windows, args.iters)),
            torch.device("cpu"),
            args.repeats,
        )
        omp = [i.get("num_threads") for i in threadpool_info() if i.get("user_api") == "openmp"]
        print(
            f"scikit-learn {sklearn.__version__} KMeans (lloyd, {omp[:1] or '?'} OpenMP threads), "
            f"loop over images and scales: {ms:.1f} ms/batch "
            f"(iterations run: min {min(n_iter)}, max {max(n_iter)})"
        )
        for dev in devices:
            ours = results[(dev.type, "K-Means only, euclidean")]
            print(f"ratio sklearn / ours [{dev.type}] (K-Means only, euclidean): {ms / ours:.1f}x")
