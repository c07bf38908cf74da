"""The benchmark's outputs: results.json (everything measured), report.md (the headline,
phases, training details and replies side by side) and training.png (reward and KL over
the training steps). Files are written to a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def _write_atomically(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)


def write_report(results: dict[str, Any], out_dir: Path, num_samples_shown: int = 6) -> None:
    out_dir = Path(out_dir)
    _write_atomically(out_dir / "results.json", json.dumps(results, indent=1, ensure_ascii=False, default=str).encode())
    plot_path = out_dir / "training.png"
    has_plot = plot_training(results, plot_path)
    markdown = render_markdown(results, num_samples_shown, plot_path.name if has_plot else None)
    _write_atomically(out_dir / "report.md", markdown.encode())


# ---------------------------------------------------------------------------------------
# The plot


def training_curves(results: dict[str, Any]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """algo -> curve name -> [(step, value)]: PPO's per-step history from the store's
    training run; DPO's (and the reward model's) progress points from the trainer's log."""
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for algo, trained in results.get("training", {}).items():
        metrics = trained.get("metrics") or {}
        found: dict[str, list[tuple[float, float]]] = {}
        history = metrics.get("ppo") if isinstance(metrics.get("ppo"), list) else None
        if history:
            for key in ("reward", "kl", "score", "reply_length"):
                points = [(i + 1.0, float(h[key])) for i, h in enumerate(history) if key in h]
                if points:
                    found[key] = points
        for phase, points in (trained.get("log_curves") or {}).items():
            if phase == "ppo" and history:
                continue
            for key in ("loss", "margin", "accuracy", "reward", "kl"):
                series = [(p["step"], p[key]) for p in points if key in p]
                if series:
                    found[f"{phase} {key}"] = series
        curves[algo] = found
    return curves


def plot_training(results: dict[str, Any], path: Path) -> bool:
    """PPO reward and KL per step, DPO margin and loss per logged step; False if no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = training_curves(results)
    panels = [
        ("PPO: reward-model score of rollouts", curves.get("ppo", {}), ["reward"]),
        ("PPO: KL to the parent (nats / reply)", curves.get("ppo", {}), ["kl"]),
        ("DPO: implicit reward margin and loss", curves.get("dpo", {}), ["dpo margin", "dpo loss"]),
        ("Reward model training (PPO run)", curves.get("ppo", {}), ["reward accuracy", "reward loss"]),
    ]
    if not any(series.get(key) for _, series, keys in panels for key in keys):
        return False
    figure, axes = plt.subplots(2, 2, figsize=(11, 7))
    for axis, (title, series, keys) in zip(axes.flat, panels):
        drawn = False
        for key in keys:
            points = series.get(key)
            if points:
                axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=key)
                drawn = True
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("step")
        if drawn:
            axis.legend(fontsize=8)
            axis.grid(alpha=0.3)
        else:
            axis.text(0.5, 0.5, "no data", ha="center", va="center", transform=axis.transAxes)
    summary = results.get("summary", {})
    preference = results.get("taste", {}).get("name", "")
    rates = ", ".join(
        f"{algo.upper()} {100 * s['rate_before']:.0f}% -> {100 * s['rate_after']:.0f}%"
        for algo, s in summary.items() if isinstance(s, dict) and "rate_after" in s
    )
    figure.suptitle(f"Taste '{preference}' on held-out prompts: {rates}", fontsize=11)
    figure.tight_layout()
    temp = path.with_name(f".{path.stem}.tmp.png")
    figure.savefig(temp, dpi=110)
    plt.close(figure)
    os.replace(temp, path)
    return True


# ---------------------------------------------------------------------------------------
# The markdown


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def _quote(text: str, limit: int = 600) -> str:
    text = text.strip() or "(empty)"
    if len(text) > limit:
        text = text[:limit].rstrip() + " …"
    return text.replace("|", "\\|").replace("\n", "<br>")


def outcome_sentence(s: dict[str, Any]) -> str:
    """One verdict (bench/loop/outcome.py) in words."""
    text = (f"{_pct(s['rate_before'])} -> {_pct(s['rate_after'])} ({s['gain_points']:+.1f} points, z = {s['z']:.2f}; "
            f"the gain {'counts' if s['gain_counts'] else 'does not count'}: it needs z >= 2 and a doubling or "
            f"+20 points); median reply {s['median_words_before']:.0f} -> {s['median_words_after']:.0f} words "
            f"({100 * s['median_words_change']:+.0f}%{', LENGTH DRIFT' if s['length_drift'] else ''}); "
            f"perplexity ratio {s['perplexity_ratio']:.3f} ({'within' if s['fluency_within_10pct'] else 'outside'} 10%)")
    if s.get("train_s") is not None:
        text += f"; training {_minutes(s['train_s'])} ({'within' if s['train_within_10_min'] else 'over'} 10 min)"
    return text + "."


def render_markdown(results: dict[str, Any], num_samples_shown: int = 6, plot_name: str | None = None) -> str:
    from bench.loop.tastes.text import count_words

    evaluation = results.get("evaluation", {})
    summary = results.get("summary", {})
    prompts = results.get("prompts", {})
    config = results.get("config", {})
    lines = ["# Closed-loop benchmark", ""]
    lines += [
        f"Taste `{results.get('taste', {}).get('name', '')}`: **{results.get('taste', {}).get('description', '')}**",
        "",
        f"Base version: `{results.get('base_version', {}).get('name')}`. Prompts: {prompts.get('train')} ranked "
        f"(k = {config.get('k')} alternatives each), {prompts.get('held_out')} held out (split seed "
        f"{prompts.get('split_seed')}). Replies sampled with the chat's default settings; every version answers "
        "each held-out prompt once with the same seed.",
        "",
        "| version | taste rate (95% Wilson CI) | change | KL to parent (nats/reply, /token) | "
        "perplexity on fixed text | mean words | cut at max tokens |",
        "|---|---|---|---|---|---|---|",
    ]
    base = evaluation.get("base")
    for name, e in evaluation.items():
        r = e["preference_rate"]
        change = "" if base is None or name == "base" else f"{100 * (r['rate'] - base['preference_rate']['rate']):+.1f} pts"
        kl = e.get("kl_to_parent")
        kl_text = f"{kl['kl_per_reply']:.2f} / {kl['kl_per_token']:.4f}" if kl else ""
        ratio = "" if base is None or name == "base" else f" ({e['perplexity'] / base['perplexity']:.3f}x)"
        lines.append(
            f"| {name} | {_pct(r['rate'])} ({r['hits']}/{r['total']}; {_pct(r['ci95_low'])}-{_pct(r['ci95_high'])}) "
            f"| {change} | {kl_text} | {e['perplexity']:.2f}{ratio} | {e['mean_words']:.1f} | {e['length_cutoffs']} |"
        )
    lines += ["", "## Against the targets", ""]
    for algo, s in summary.items():
        if not isinstance(s, dict):
            continue
        if s.get("failed"):
            lines.append(f"- {algo.upper()}: training failed, see the log.")
            continue
        lines.append(f"- {algo.upper()}: {outcome_sentence(s)}")
    lines += ["", "## Phases", "", "| phase | wall time | peak RSS |", "|---|---|---|"]
    for phase in results.get("phases", []):
        note = " (process lifetime)" if phase.get("peak_is_lifetime") else ""
        where = " (subprocess)" if phase.get("in_subprocess") else ""
        lines.append(f"| {phase['name']}{where} | {_minutes(phase['wall_s'])} | {phase['peak_rss_mb']:.0f} MB{note} |")
    collection = results.get("collection", {})
    if collection:
        lines += [
            "", "## Feedback collected", "",
            f"{collection.get('prompts')} prompts, {collection.get('replies')} replies ({collection.get('generated_tokens')} "
            f"tokens); {_pct(collection.get('reply_satisfaction_rate', 0))} of replies met the taste; "
            f"{collection.get('prompts_with_mixed_replies')} prompts had both kinds; "
            f"{collection.get('store', {}).get('pairs')} preference pairs in the store; "
            f"{collection.get('thumbs_up')} thumbs up, {collection.get('thumbs_down')} down; "
            f"{collection.get('taught', 0)} replies written by the user.",
        ]
    candidates = results.get("candidates", {})
    if candidates:
        lines += ["", f"The alternatives and the base version's held-out replies were "
                      f"{'reused from' if candidates.get('cached') else 'generated into'} `{candidates.get('path')}`; "
                      f"generating them takes {_minutes(sum(candidates.get('seconds', {}).values()))} on the machine "
                      "that made them."]
    lines += ["", "## Training runs", ""]
    for algo, trained in results.get("training", {}).items():
        lines.append(f"### {algo.upper()}")
        lines.append("")
        lines.append("`" + " ".join(Path(trained["command"][0]).name if i == 0 else a for i, a in enumerate(trained["command"])) + "`")
        lines.append("")
        if "error" in trained:
            lines += ["Failed:", "", "```", trained["error"], "```", ""]
            continue
        metrics = trained.get("metrics") or {}
        flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        lines.append(f"Run {trained.get('run_id')} -> version `{trained.get('version_name')}` "
                     f"({'activated' if trained.get('activated') else 'not activated'}).")
        lines.append("")
        if flat:
            lines += ["| metric | value |", "|---|---|"]
            lines += [f"| {k} | {v:.4g} |" for k, v in sorted(flat.items())]
            lines.append("")
        if isinstance(metrics.get("phase_seconds"), dict):
            lines.append("Trainer phase times: " + ", ".join(f"{k} {_minutes(v)}" for k, v in metrics["phase_seconds"].items()))
            lines.append("")
    if plot_name:
        lines += ["## Reward and KL over training", "", f"![training curves]({plot_name})", ""]
    replies = results.get("held_out_replies", [])[:num_samples_shown]
    if replies:
        names = list(evaluation)
        lines += ["## Held-out replies side by side", "", "| prompt | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        for row in replies:
            cells = [f"{_quote(row.get(n, ''))} *({count_words(row.get(n, ''))} words)*" for n in names]
            lines.append(f"| {_quote(row['prompt'])} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Configuration", "", "```json", json.dumps(config, indent=1), "```", ""]
    return "\n".join(lines)
