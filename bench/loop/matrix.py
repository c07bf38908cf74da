"""`python -m bench.loop matrix`: several tastes on the same candidates, one table.

Every taste runs the whole loop (bench/loop/runner.py) in `<out>/<taste>/`, all of them
on one candidate cache (`<out>/candidates.json` unless given) and one imported base model
(`base-models/` beside the cache), so the k alternatives and the base model's held-out
replies are sampled once. The table (`<out>/matrix.md`, `<out>/matrix.json`) has a row per taste and
algorithm with the verdict of bench/loop/outcome.py. `resume` skips a taste whose
results.json already exists and reads its row from there.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from bench.loop.candidates import CACHE_FILE
from bench.loop.report import _write_atomically
from bench.loop.runner import LoopConfig, LoopRunner, base_models_dir
from bench.loop.tastes import get_taste


def taste_dir_name(spec: str) -> str:
    """A directory name for a taste spec ("short", "my.module:taste" -> "my.module-taste")."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", spec)


def run_matrix(config: LoopConfig, specs: list[str], resume: bool = False, echo=None) -> str:
    """Run every taste in `specs` and write the table; returns the markdown."""
    out_dir = Path(config.out_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    shared = {"candidates_path": Path(config.candidates_path or out_dir / CACHE_FILE).resolve(),
              "base_models_dir": base_models_dir(config, out_dir)}
    results: dict[str, dict[str, Any]] = {}
    for spec in specs:
        taste_out = out_dir / taste_dir_name(spec)
        done = taste_out / "results.json"
        if resume and done.is_file():
            results[spec] = json.loads(done.read_text(encoding="utf-8"))
            continue
        taste_config = dataclasses.replace(config, taste=spec, out_dir=taste_out, **shared)
        results[spec] = LoopRunner(taste_config, echo).run()
        write_matrix(out_dir, config, results)  # after every taste, so a long run shows its progress
    return write_matrix(out_dir, config, results)


def matrix_rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for spec, result in results.items():
        taste = result.get("taste") or get_taste(spec).as_dict()
        for algo, verdict in result.get("summary", {}).items():
            if not isinstance(verdict, dict):
                continue
            rows.append({"taste": taste["name"], "kind": taste["kind"], "is_about_length": taste["is_about_length"],
                         "algo": algo, "train_prompts": result.get("prompts", {}).get("train"),
                         "taught": result.get("collection", {}).get("taught"), **verdict})
    return rows


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def render_matrix(config: LoopConfig, rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Closed-loop benchmark: tastes", "",
        f"Model: `{config.model or 'default'}`; k = {config.k}; seed {config.seed}; trainer: `chat-tui train` with its "
        "defaults. A gain counts when z >= 2 and the rate doubles or rises 20 points. Length drift: a taste not "
        "about length moved the median reply length by more than 25%.", "",
        "| taste | kind | algo | prompts (taught) | base rate | after (95% CI) | z | gain counts | median words "
        "(change) | mean words | length drift | perplexity ratio | KL / reply | training | accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("failed"):
            lines.append(f"| {r['taste']} | {r['kind']} | {r['algo']} | {r['train_prompts']} | training or "
                         "evaluation failed |" + " |" * 10)
            continue
        low, high = r["ci95_after"]
        accuracy = ", ".join(f"{k} {v:.2f}" for k, v in r["accuracy"].items()) or "-"
        kl = "-" if r["kl_per_reply"] is None else f"{r['kl_per_reply']:.1f}"
        train = "-" if r["train_s"] is None else f"{r['train_s'] / 60:.1f} min"
        lines.append(
            f"| {r['taste']} | {r['kind']} | {r['algo']} | {r['train_prompts']} ({r['taught']}) | {_pct(r['rate_before'])} "
            f"| {_pct(r['rate_after'])} ({_pct(low)}-{_pct(high)}) | {r['z']:.2f} | {'yes' if r['gain_counts'] else 'no'} "
            f"| {r['median_words_before']:.0f} -> {r['median_words_after']:.0f} ({100 * r['median_words_change']:+.0f}%) "
            f"| {r['mean_words_before']:.0f} -> {r['mean_words_after']:.0f} "
            f"| {'n/a' if r['is_about_length'] else ('YES' if r['length_drift'] else 'no')} "
            f"| {r['perplexity_ratio']:.3f} | {kl} | {train} | {accuracy} |"
        )
    counted = {(r["taste"]) for r in rows if r.get("gain_counts")}
    drifted = {(r["taste"]) for r in rows if r.get("length_drift")}
    tastes = {r["taste"] for r in rows}
    lines += ["", f"Tastes with a gain that counts (any algorithm): {len(counted)} of {len(tastes)}"
              f"{' (' + ', '.join(sorted(counted)) + ')' if counted else ''}; with length drift: "
              f"{', '.join(sorted(drifted)) or 'none'}.", ""]
    return "\n".join(lines)


def write_matrix(out_dir: Path, config: LoopConfig, results: dict[str, dict[str, Any]]) -> str:
    rows = matrix_rows(results)
    markdown = render_matrix(config, rows)
    _write_atomically(out_dir / "matrix.json", json.dumps({"config": config.as_dict(), "rows": rows}, indent=1,
                                                          default=str).encode())
    _write_atomically(out_dir / "matrix.md", markdown.encode())
    return markdown
