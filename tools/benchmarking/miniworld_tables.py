"""The miniature world's result tables (tools/run_miniworld.py writes them, docs/MODEL_ZOO.md shows them)."""

import math
import statistics

from clipzss_d2.miniworld import world

# The evaluator's figures each run keeps (tools/run_miniworld.py) and those the table shows.
RUN_METRICS = (
    "mIoU(seen)", "mIoU(unseen)", "hIoU", "mIoU", "pAcc", "seen_as_unseen", "unseen_as_seen",
)  # fmt: skip
TABLE_METRICS = tuple(m for m in RUN_METRICS if m != "pAcc")


def fmt(values):
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.pstdev(values):.1f}"


def label(row):
    """A run's method: its variant, with the teacher it learned from in a ladder."""
    return row.get("label", row["variant"])


def results_table(rows, seeds):
    """Markdown: one line per variant (mean ± population std over seeds), per unseen class IoU,
    seen truth among its predictions and pseudo-label share / purity, and every run."""
    header = (
        "| method | mIoU(seen) | mIoU(unseen) | hIoU | mIoU(all) | seen → unseen | "
        "unseen → seen | train time (min) |\n"
    )
    header += "|---|---:|---:|---:|---:|---:|---:|---:|\n"
    lines, classes = [], []
    for variant in dict.fromkeys(map(label, rows)):
        runs = [r for r in rows if label(r) == variant]
        cells = [fmt([r.get(k, math.nan) for r in runs]) for k in TABLE_METRICS]
        lines.append(
            f"| {variant}{seeds_short_of(runs, seeds)} | "
            + " | ".join(cells)
            + f" | {fmt([r['train_minutes'] for r in runs])} |"
        )
        for c in world.UNSEEN:
            pseudo = [r["pseudo_labels"] for r in runs if r.get("pseudo_labels")]
            share = [100 * p["share"][c] for p in pseudo if p["share"][c] is not None]
            purity = [100 * p["purity"][c] for p in pseudo if p["purity"][c] is not None]
            from_seen = [r.get("from_seen", {}).get(c, math.nan) for r in runs]
            classes.append(
                f"| {variant} | {c} | {fmt([r['unseen_iou'][c] for r in runs])} | "
                f"{fmt(from_seen)} | "
                f"{fmt(share) if pseudo else '-'} | {fmt(purity) if pseudo else '-'} |"
            )
    per_class = (
        "\n\nseen → unseen: share of seen pixels predicted as an unseen class; unseen → seen: "
        "the reverse (the evaluator's seen_as_unseen, unseen_as_seen), %."
        "\n\nPer unseen class: IoU; from seen: of the pixels predicted as the class, the share "
        "whose truth is a seen class; and the pseudo labels of training against the hidden "
        "labels (share of the class's unlabelled pixels given a pseudo label; purity of the "
        "regions whose majority it is), %:\n\n"
        "| method | class | IoU | from seen | pseudo share | pseudo purity |\n"
        "|---|---|---:|---:|---:|---:|\n" + "\n".join(classes)
    )
    per_run = "\n\nPer run (seed: seen / unseen / hIoU):\n\n" + "\n".join(
        f"- {label(r)}, seed {r['seed']}: {r['mIoU(seen)']:.1f} / {r['mIoU(unseen)']:.1f} / {r['hIoU']:.1f}"
        for r in rows
    )
    tested = sorted({d for r in rows for d in r.get("test_set", [])})
    note = f"\n\nevaluated on {', '.join(tested)}"
    note += f"; mean ± std over seeds {list(seeds)}" if len(seeds) > 1 else ""
    return header + "\n".join(lines) + note + per_class + per_run + curves_table(rows) + "\n"


def seeds_short_of(runs, seeds):
    """' (seeds 0, 2)' for a method whose runs do not cover every seed of the table (a ladder
    read before it finished), so that its mean is not taken for one over all of them."""
    have = sorted({r["seed"] for r in runs})
    if len(seeds) < 2 or set(have) >= set(seeds):
        return ""
    return f" (seed{'s' if len(have) > 1 else ''} {', '.join(map(str, have))})"


def curves_table(rows):
    """Markdown: seen / unseen / hIoU at every evaluation of each run (TEST.EVAL_PERIOD), so a
    schedule can be checked for runs still climbing; empty when no run evaluated on the way."""
    runs = [r for r in rows if len(r.get("curve") or ()) > 1]
    if not runs:
        return ""
    iterations = sorted({point[0] for r in runs for point in r["curve"]})
    cells = {(id(r), point[0]): point[1:] for r in runs for point in r["curve"]}
    lines = [
        "| iterations | " + " | ".join(f"{label(r)}, seed {r['seed']}" for r in runs) + " |",
        "|---:|" + "---:|" * len(runs),
    ]
    for it in iterations:
        row = [cells.get((id(r), it)) for r in runs]
        text = ["-" if c is None else " / ".join(f"{v:.1f}" for v in c) for c in row]
        lines.append(f"| {it} | " + " | ".join(text) + " |")
    return (
        "\n\nAt every evaluation of the run (TEST.EVAL_PERIOD; seen / unseen / hIoU):\n\n"
        + "\n".join(lines)
    )


def tuning_table(rows, chosen, seed):
    """Markdown: every run of the search (tune split) and the values it chose."""
    lines = ["| setting | mIoU(seen) | mIoU(unseen) | hIoU |", "|---|---:|---:|---:|"]
    for r in rows:
        setting = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in r["setting"].items())
        lines.append(
            f"| {setting} | {r['mIoU(seen)']:.1f} | {r['mIoU(unseen)']:.1f} | {r['hIoU']:.1f} |"
        )
    table = (
        "Tuning (full method, miniworld_tune, seed "
        f"{seed}; coordinate search in this order, best hIoU kept):\n\n"
        + "\n".join(lines)
        + "\n\nchosen: "
        + ", ".join(f"{k} {v}" for k, v in chosen.items())
        + "\n"
    )
    return table
