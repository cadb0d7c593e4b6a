"""Plots shared by the report and the web app's dashboard, as base64 PNG for self-contained pages.

Reads: figures (dicts of numbers).  Writes: nothing (returns PNG data).

matplotlib is imported inside each function, on its file-only backend (Agg), so that importing this
module costs nothing and no plot ever needs a display.
"""

from __future__ import annotations

import base64
import io

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig) -> str:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def loss_plot(curves: dict[str, list[dict]]) -> str | None:
    plt = _pyplot()
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3))
    for ax, (name, curve) in zip([axes] if len(curves) == 1 else axes, curves.items(), strict=True):
        ax.plot([p["step"] for p in curve], [p["loss"] for p in curve], color="#2b6cb0")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
    return png(fig)


def rl_plot(name: str, curve: list[dict]) -> str:
    """An RL run step by step: mean reward, KL to the reference (nats per answer) and answer length,
    with the monitor's alerts marked: a PNG. Takes PPO's records and TRL's GRPO/RLOO log alike."""
    plt = _pyplot()
    steps = [p["step"] for p in curve]
    reward = [p.get("score", p.get("reward")) for p in curve]
    length = [p.get("length", p.get("completions/mean_length")) for p in curve]
    # TRL logs the KL per token; PPO per answer: shown per answer for both.
    per_token = ["completions/mean_length" in p and p.get("kl") is not None for p in curve]
    kl = [p["kl"] * p["completions/mean_length"] if t else p.get("kl") for p, t in zip(curve, per_token, strict=True)]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    panels = zip(axes, (reward, kl, length), ("mean reward", "KL to reference", "answer length"), strict=True)
    for ax, values, label in panels:
        ax.plot(steps, values, color="#2b6cb0", marker=".")
        alarmed = [(s, v) for s, v, p in zip(steps, values, curve, strict=True) if p.get("alerts")]
        if alarmed:
            ax.scatter(*zip(*alarmed, strict=True), color="#c53030", zorder=3, label="monitor alert")
            ax.legend(fontsize=8)
        ax.set_title(f"{name}: {label}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return png(fig)


def agreement_plot(agreement: dict, rm_accuracy: float | None = None) -> str:
    """Per-rater agreement with the rest of the panel (and gold accuracy), and alpha per axis: a PNG."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    raters = sorted((name, r) for name, r in agreement["per_rater"].items() if r["vs_rest"] is not None)
    xs = np.arange(len(raters))
    left.bar(xs - 0.2, [r["vs_rest"] for _, r in raters], width=0.4, color="#4a5568", label="vs rest of panel")
    gold = [r["gold_accuracy"] if r["gold_accuracy"] is not None else np.nan for _, r in raters]
    if not np.all(np.isnan(gold)):
        left.bar(xs + 0.2, gold, width=0.4, color="#d69e2e", label="gold accuracy")
    left.set_xticks(xs, [name for name, _ in raters])
    if rm_accuracy is not None:
        left.axhline(rm_accuracy, color="#c53030", linestyle="--", label=f"reward model ({rm_accuracy:.2f})")
    left.legend(loc="lower right", fontsize=8)
    left.axhline(0.5, color="#a0aec0", linewidth=0.8)
    left.set_ylim(0, 1)
    left.set_title("Each rater: agreement and calibration")
    left.tick_params(axis="x", rotation=30)
    alphas = {"choice": agreement["alpha_choice"], **agreement["alpha_axes"]}
    names = [k for k, v in alphas.items() if v is not None]
    right.bar(names, [alphas[k] for k in names], color="#2f855a")
    right.set_ylim(min(0, *[alphas[k] for k in names]) if names else 0, 1)
    right.set_title("Krippendorff's alpha")
    right.tick_params(axis="x", rotation=30)
    return png(fig)


MODEL_COLOURS = ("#a0aec0", "#63b3ed", "#2b6cb0", "#1a365d")


def models_plot(summary: dict, labels: dict[str, str]) -> str:
    """Each rate for each model of the lineage, with its 95% interval as an error bar."""
    plt = _pyplot()
    models = summary["models"]
    metrics = [m for m in labels if any(summary[m][x["key"]]["value"] is not None for x in models)]
    fig, ax = plt.subplots(figsize=(10, 3.4))
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        figures = [summary[m][model["key"]] for m in metrics]
        values = [f["value"] or 0.0 for f in figures]
        errors = [
            [v - (f["low"] if f["low"] is not None else v) for v, f in zip(values, figures, strict=True)],
            [(f["high"] if f["high"] is not None else v) - v for v, f in zip(values, figures, strict=True)],
        ]
        xs = [x + (i - (len(models) - 1) / 2) * width for x in range(len(metrics))]
        last = i == len(models) - 1
        colour = MODEL_COLOURS[0] if i == 0 else MODEL_COLOURS[-1] if last else MODEL_COLOURS[1 + (i - 1) % 2]
        ax.bar(xs, values, width=width, yerr=errors, capsize=2, label=model["label"], color=colour)
    ax.set_xticks(range(len(metrics)), [labels[m] for m in metrics], rotation=12, fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("Held-out prompts, each model of the lineage (bars: 95% intervals)")
    return png(fig)


def reliability_plot(curve: list[dict]) -> str:
    """Predicted probability against the observed frequency, per bin; the diagonal is perfect calibration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    ax.plot([0, 1], [0, 1], color="#a0aec0", linewidth=1)
    ax.scatter(
        [b["predicted"] for b in curve],
        [b["observed"] for b in curve],
        s=[12 + 3 * b["n"] for b in curve],
        color="#2b6cb0",
    )
    ax.set_xlabel("predicted P(A preferred)")
    ax.set_ylabel("observed share preferring A")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Reward model calibration")
    return png(fig)


def axis_accuracy_plot(axis_accuracy: dict, overall: float | None) -> str:
    """Held-out pairwise accuracy of each axis head, beside the aggregate's."""
    plt = _pyplot()
    names = [a for a, f in axis_accuracy.items() if f["accuracy"] is not None]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(names, [axis_accuracy[a]["accuracy"] for a in names], color="#2f855a")
    if overall is not None:
        ax.axhline(overall, color="#2b6cb0", linestyle="--", label=f"aggregate ({overall:.2f})")
        ax.legend(fontsize=8)
    ax.axhline(0.5, color="#a0aec0", linewidth=0.8)
    ax.set_ylim(0, 1)
    ax.tick_params(axis="x", rotation=30)
    ax.set_title("Reward model accuracy per axis (held out)")
    return png(fig)


def trips_plot(trips: dict[str, dict], top: int = 15) -> str | None:
    """Guardrail trip rates by rule (and category), with 95% intervals: the monitoring page's chart."""
    shown = list(trips.items())[:top]
    if not shown:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.32 * len(shown) + 0.9))
    names = [name.replace("_", " ") for name, _ in shown][::-1]
    values = [f["value"] for _, f in shown][::-1]
    low = [f["value"] - f["low"] for _, f in shown][::-1]
    high = [f["high"] - f["value"] for _, f in shown][::-1]
    ax.barh(names, values, xerr=[low, high], color="#2b6cb0", ecolor="#4a5568", capsize=2)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of served answers")
    ax.set_title("Guardrail trips by rule")
    return png(fig)
