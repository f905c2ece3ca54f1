"""The Markdown tables of tools/benchmark.py, one per measurement that ran."""

from __future__ import annotations


def markdown(args, header: list[str], tput, pred, train, comp, floor=()) -> str:
    mem = (
        "peak GPU memory allocated beyond the resident models (GiB)"
        if args.device.startswith("cuda")
        else "peak RSS increase over the resident models (GiB)"
    )
    out = ["## Benchmark (`tools/benchmark.py`)", "", *header, ""]
    if tput:
        out += [
            f"### Throughput at {args.size}², {args.num_classes} classes",
            "",
            f"| pipeline | batch | precision | ms / batch (median) | min–max | images/s | "
            f"vs CLIP-in-the-loop | {mem} |",
            "|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        for r in tput:
            ratio = f"**{r['ratio']:.2f}x**" if r["ratio"] else ""
            out.append(
                f"| {r['pipeline']} | {r['batch']} | {r['precision']} | {r['ms']:.1f} | "
                f"{r['spread']} | {r['ips']:.2f} | {ratio} | {r['peak']:.2f} |"
            )
        out.append("")
    if pred:
        out += [
            f"### `OpenVocabularyPredictor`, one {args.size}² uint8 image (numpy in, labels + "
            f"scores out)",
            "",
            f"| student | precision | latency ms (median) | min–max | {mem} |",
            "|---|---|---:|---:|---:|",
        ]
        for r in pred:
            out.append(
                f"| {r['student']} | {r['precision']} | {r['ms']:.1f} | {r['spread']} | "
                f"{r['peak']:.2f} |"
            )
        out.append("")
    out += list(floor)  # breakdown.floor_markdown: the floor, the multiples, the stages
    if train:
        names = sorted({k for r in train for k in r["parts"]})
        out += [
            f"### Training step, batch {args.train_batch} x {args.train_crop}², "
            f"{args.train_iters} timed steps after {args.train_warmup} warm-up",
            "",
            "| student | step | ms (median) | min–max | vs baseline | "
            + " | ".join(names)
            + f" | student fwd/bwd + losses + optimizer | {mem} |",
            "|---|---|---:|---:|---:|" + "---:|" * len(names) + "---:|---:|",
        ]
        for r in train:
            parts = " | ".join(f"{r['parts'][n]:.0f}" if n in r["parts"] else "" for n in names)
            out.append(
                f"| {r['student']} | {r['variant']} | {r['ms']:.0f} | {r['spread']} | "
                f"{r['ratio']:.2f}x | {parts} | {r['rest']:.0f} | {r['peak']:.2f} |"
            )
        out.append("")
    if comp:
        out += [
            "### `torch.compile` (backbone + head), batch 1",
            "",
            "| student | precision | first call (compile) s | eager ms | compiled ms | min–max |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in comp:
            out.append(
                f"| {r['student']} | {r['precision']} | {r['first']:.1f} | {r['eager']:.0f} | "
                f"{r['compiled']:.0f} | {r['spread']} |"
            )
        out.append("")
    return "\n".join(out)
