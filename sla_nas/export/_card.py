"""The words of an export: the docstring of its ``model.py`` and its model card
``README.md``, pure functions of a spec and its provenance."""

from __future__ import annotations

import platform
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sla_nas import __version__
from sla_nas.arch import LEGEND, ArchSpec, cell_label, estimate

__all__ = ["Provenance", "docstring", "model_card", "WEIGHTS_FILE"]

WEIGHTS_FILE = "weights.pt"


@dataclass(frozen=True)
class Provenance:
    """Where an exported model comes from: the run, the trial and its weights."""

    run: str  # the run folder's name
    space_file: str  # the space file the search ran (a copy is space.yaml in the run folder)
    started: str
    search_seed: int
    objectives: list[tuple[str, str]]
    task: str
    budget_tokens: int
    trial: int
    status: str
    train_seed: int
    rank: int
    weights: str  # where the weights come from, one sentence
    metrics: dict[str, float] = field(default_factory=dict)  # the trial's search metrics
    seed_mean: dict[str, Any] | None = None  # {n_seeds, metric: mean} if trained with several
    vanilla: dict[str, Any] | None = None  # the vanilla seed's row: status and metrics
    seed_preset: str | None = None  # the preset's name if the trial was a seed architecture
    versions: dict[str, str] = field(default_factory=dict)  # of the search (run.json)
    confirmed: dict[str, Any] | None = None  # its sla-nas confirm result, if it was confirmed


def _connectivity(spec: ArchSpec, indent: str) -> list[str]:
    d = spec.dims
    cells = [[str(l), *(cell_label(spec, l, g) for g in range(d.n_groups))]
             for l in range(d.n_layers)]
    header = ["layer", *(f"group {g}" for g in range(d.n_groups))]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
            for row in [header, *cells]]


def _dims_sentence(spec: ArchSpec) -> str:
    d = spec.dims
    return (f"{d.n_layers} layers, d_model {d.d_model}, {d.n_heads} heads of {d.head_dim} "
            f"dims, {d.n_kv_heads} K/V heads in {d.n_groups} groups, d_ff {d.d_ff}, seq_len "
            f"{d.seq_len}, vocab {d.vocab_size}, {d.norm}, {d.pos} positions, "
            f"{'tied' if d.tie_embeddings else 'untied'} embeddings")


def _legend(indent: str) -> list[str]:
    parts = [p.strip() for p in LEGEND.split("   ") if p.strip()]
    lines = [""]
    for part in parts:
        joined = f"{lines[-1]}   {part}" if lines[-1] else part
        if lines[-1] and len(indent + joined) > 96:
            lines.append(part)
        else:
            lines[-1] = joined
    return [indent + line for line in lines]


def _costs(spec: ArchSpec) -> list[tuple[str, int, int, float]]:
    costs, base = estimate(spec), estimate(ArchSpec.create(spec.dims))
    return [(k, v, base[k], v / base[k]) for k, v in costs.items()]


def _paragraphs(text: str, width: int = 96, hang: int = 0) -> list[str]:
    """``text`` wrapped to ``width``; continuation lines indented by ``hang``."""
    return textwrap.wrap(text, width, subsequent_indent=" " * hang, break_on_hyphens=False)


def docstring(spec: ArchSpec, prov: Provenance) -> str:
    d = spec.dims
    lines = [f'"""Architecture {spec.key}: a decoder-only Transformer whose cross-layer attention',
             f"was found by sla-nas (rank {prov.rank} of run {prov.run!r}, trial {prov.trial}).",
             "",
             *_paragraphs("Standalone: it needs only PyTorch (>= 2.5) and the Python standard "
                          "library. The LAYERS table below is the whole architecture; the code "
                          "after it is the same for every exported model."),
             "",
             "Load the weights exported next to this file (weights_only=True: nothing is "
             "unpickled):",
             "",
             "    from model import Model  # this file, next to your code or on sys.path",
             f'    model = Model.from_pretrained("{WEIGHTS_FILE}")  # refuses another '
             "architecture's weights",
             f"    logits, loss = model(idx, targets)  # idx, targets: (B, T) ids, T <= "
             f"{d.seq_len}",
             "",
             "``Model(seed=0)`` builds it with fresh weights (sla-nas's initialisation).",
             "",
             "Dimensions:",
             *("    " + line for line in _paragraphs(_dims_sentence(spec), 92)),
             "",
             "Connectivity (which layer's K/V each head group reads; K and V differ where "
             "shown):",
             "",
             *_connectivity(spec, "    "),
             "",
             *_legend("    "),
             "",
             "Costs per token (analytic; bytes at 2 per element), against vanilla attention "
             "at the",
             "same dimensions:",
             "",
             f"    {'':<28}{'this':>14}{'vanilla':>14}{'ratio':>8}",
             *(f"    {k:<28}{v:>14,}{b:>14,}{r:>8.3f}" for k, v, b, r in _costs(spec)),
             "",
             "Provenance:",
             "",
             f"    run          {prov.run} (started {prov.started}), space file "
             f"{Path(prov.space_file).name}",
             *("    " + line for line in _paragraphs(
                 f"trial        {prov.trial} (status {prov.status}, train seed "
                 f"{prov.train_seed}, search seed {prov.search_seed}){_seed_note(prov)}", 92, 13)),
             *("    " + line for line in _paragraphs(f"weights      {prov.weights}", 92, 13)),
             *("    " + line for line in _paragraphs(
                 "metrics      " + _metrics_text(prov.metrics) + _mean_text(prov), 92, 13)),
             f"    search with  {_versions_text(prov.versions)}",
             f"    exported by  sla-nas {__version__}, python {platform.python_version()}",
             '"""']
    return "\n".join(line.rstrip() for line in lines)


def _means(prov: Provenance) -> dict[str, float]:
    return {k: v for k, v in (prov.seed_mean or {}).items() if k != "n_seeds"}


def _mean_text(prov: Provenance) -> str:
    if not prov.seed_mean:
        return ""
    return (f" (this trial; mean over {prov.seed_mean['n_seeds']} training seeds: "
            f"{_metrics_text(_means(prov))})")


def _seed_note(prov: Provenance) -> str:
    return f"; the seed architecture {prov.seed_preset}" if prov.seed_preset else ""


def _metrics_text(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {_number(v)}" for k, v in metrics.items()) or "none recorded"


def _versions_text(versions: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in versions.items()) or "unknown versions"


def model_card(spec: ArchSpec, prov: Provenance, folder_name: str) -> str:
    """The model card: what it is, its costs next to vanilla's, the search it came from."""
    d = spec.dims
    vanilla = prov.vanilla or {}
    objectives = ", ".join(f"{m} ({mode})" for m, mode in prov.objectives)
    lines = [f"# Architecture {spec.key}", "",
             f"Rank {prov.rank} of the sla-nas search `{prov.run}` (objectives: {objectives}). "
             f"A decoder-only Transformer ({_dims_sentence(spec)}) whose attention reads keys "
             f"and values across layers as the table below shows.", "",
             "## Use it", "",
             "`model.py` needs only PyTorch and the standard library:", "",
             "```python",
             "from model import Model",
             f'model = Model.from_pretrained("{WEIGHTS_FILE}")  # or Model() for fresh weights',
             "logits, loss = model(idx, targets)  # (B, T) token ids",
             "```", "",
             "With sla-nas installed, `sla_nas.load_exported(\"" + folder_name + "\")` returns "
             "the same model as an `SlaModel` with its `ArchSpec` (`arch.yaml`).", "",
             "## Connectivity", "",
             "| layer | " + " | ".join(f"group {g}" for g in range(d.n_groups)) + " |",
             "|---:|" + "---|" * d.n_groups,
             *(f"| {l} | " + " | ".join(cell_label(spec, l, g) for g in range(d.n_groups))
               + " |" for l in range(d.n_layers)), "",
             LEGEND, "",
             "## Costs per token", "",
             "Analytic (`sla_nas.cost.estimate`), bytes at 2 per element.", "",
             "| cost | this | vanilla | ratio |", "|---|---:|---:|---:|",
             *(f"| {k} | {v:,} | {b:,} | {r:.3f} |" for k, v, b, r in _costs(spec)), "",
             "## Search result", "",
             *_result_table(prov, vanilla), "",
             *([f"Mean over its {prov.seed_mean['n_seeds']} training seeds: "
                f"{_metrics_text(_means(prov))}.", ""] if prov.seed_mean else []),
             f"Proxy training: task `{prov.task}`, {prov.budget_tokens:,} tokens. "
             + _pairing(prov, vanilla), "",
             *_confirmation_lines(prov),
             "## Provenance", "",
             f"- run: `{prov.run}`, started {prov.started}; space file `{prov.space_file}` "
             f"(as run: `space.yaml` in the run folder); search seed {prov.search_seed}",
             f"- trial: {prov.trial}, status `{prov.status}`, train seed {prov.train_seed}"
             f"{_seed_note(prov)}",
             f"- weights (`{WEIGHTS_FILE}`): {prov.weights}",
             f"- search ran with: {_versions_text(prov.versions)}",
             f"- exported by sla-nas {__version__}, python {platform.python_version()}", "",
             "## Files", "",
             "- `arch.yaml`: the architecture spec (`sla_nas.ArchSpec.load`)",
             "- `model.py`: the standalone PyTorch definition",
             f"- `{WEIGHTS_FILE}`: `{{format, spec_key, state_dict}}`, read with "
             "`torch.load(..., weights_only=True)`",
             "- `metrics.json`: the search metrics and costs", ""]
    return "\n".join(lines)


def _confirmation_lines(prov: Provenance) -> list[str]:
    c = prov.confirmed
    if not c:
        return ["Not confirmed: `sla-nas confirm` re-trains the winners on fresh paired seeds.",
                ""]
    lines = ["## Confirmation", "",
             f"Chosen by `sla-nas confirm`: re-trained with {c['n_seeds']} fresh paired seeds "
             f"at {c['tokens']:,} tokens, mean {c['metric']} {c['mean']:.4f} ± {c['std']:.4f} "
             f"(std over seeds)."]
    if c.get("vs_vanilla") is not None:
        lines.append(f"Paired difference to vanilla: {c['vs_vanilla']:+.4f} "
                     f"[{c['low']:+.4f}, {c['high']:+.4f}] (95 % interval), p = {c['p']:.2g}.")
    return [*lines, "", f"In words: {c['sentence']}.", ""]


def _pairing(prov: Provenance, vanilla: dict[str, Any]) -> str:
    if vanilla.get("status") == "ok" and vanilla.get("train_seed") == prov.train_seed:
        return (f"Both columns are trials at train seed {prov.train_seed} (the same data and "
                f"shared initial weights); a small difference may still be seed noise.")
    return "A small difference to other architectures may be seed noise."


def _result_table(prov: Provenance, vanilla: dict[str, Any]) -> list[str]:
    status = vanilla.get("status")
    metrics = vanilla.get("metrics", {})
    head = (f"vanilla seed (trial {vanilla['trial']})" if status == "ok" else
            f"vanilla seed ({status or 'not in the search'})")
    rows = [f"| metric | this (trial {prov.trial}) | {head} |", "|---|---:|---:|"]
    for name, value in prov.metrics.items():
        other = metrics.get(name) if status == "ok" else None
        rows.append(f"| {name} | {_number(value)} | {'' if other is None else _number(other)} |")
    return rows


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4f}"


