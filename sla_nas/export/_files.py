"""The files of an export besides the spec and weights: the standalone ``model.py`` (the fixed
template in `_standalone` with this architecture's docstring and table), the model card
``README.md`` and ``model.onnx`` (the standalone model exported, then checked with onnxruntime).

Kept apart from `sla_nas.export`, which decides what to export and where it may write, so that
the generated text can be read (and tested) as a pure function of a spec and its provenance.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import textwrap
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sla_nas import __version__
from sla_nas.arch import LEGEND, ArchSpec, Gene, cell_label, estimate
from sla_nas.model import build_model

from . import _standalone

__all__ = ["Provenance", "model_py", "table_block", "model_card", "standalone_model",
           "require_onnx", "write_onnx", "check_onnx", "WEIGHTS_FORMAT", "WEIGHTS_FILE",
           "TEMPLATE", "ONNX_ATOL", "ONNX_RTOL"]

WEIGHTS_FORMAT = "sla-nas-weights/1"  # equal to _standalone.WEIGHTS_FORMAT (a test checks)
WEIGHTS_FILE = "weights.pt"
TEMPLATE = Path(__file__).with_name("_standalone.py")
ONNX_ATOL, ONNX_RTOL = 1e-5, 1e-4  # onnxruntime logits against PyTorch's (numpy allclose)
_BEGIN, _END = "# ---- architecture (generated) ----\n", "# ---- end of architecture ----\n"


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


# ---------------------------------------------------------------------- model.py
def _py(value: Any) -> str:
    """A Python literal in the project's style (double-quoted strings)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(map(_py, value)) + ("," if len(value) == 1 else "") + ")"
    return repr(value)  # int, float (repr round-trips exactly), bool


def _literal(gene: Gene) -> str:
    """``Gene((0, 2), "reuse", "concat")``: the shortest call that rebuilds ``gene``."""
    args = [_py(tuple(gene.sources))]
    if gene.mode != "reproject" or gene.combine != "select":
        args.append(_py(gene.mode))
    if gene.combine != "select":
        args.append(_py(gene.combine))
    if gene.weights is not None:
        args.append(_py(tuple(gene.weights)))
    if gene.learned:
        args.append("learned=True")
    return f"Gene({', '.join(args)})"


def _describe(spec: ArchSpec, layer: int, group: int) -> str:
    label = cell_label(spec, layer, group)
    return "own layer" if label == "·" else label


def table_block(spec: ArchSpec) -> str:
    """The generated part of model.py: the key, the dimensions and the per-layer gene table."""
    d = spec.dims
    fields = ", ".join(f"{f.name}={_py(getattr(d, f.name))}" for f in dataclasses.fields(d))
    lines = [_BEGIN,
             f'SPEC_KEY = "{spec.key}"  # the architecture\'s sla-nas key; weights.pt must '
             f"carry the same\n",
             *_wrap(f"DIMS = Dims({fields})", "            "),
             "# LAYERS[l][g] = (K gene, V gene) of head group g in layer l\n",
             "LAYERS: tuple[tuple[tuple[Gene, Gene], ...], ...] = (\n"]
    for l, groups in enumerate(spec.layers):
        lines.append(f"    (  # layer {l}\n")
        for g, genes in enumerate(groups):
            k, v = _literal(genes.k), _literal(genes.v)
            note = f"# group {g}: {_describe(spec, l, g)}"
            line = f"        ({k}, {v}),  {note}"
            lines += ([line + "\n"] if len(line) <= 100 else
                      [f"        {note}\n", f"        ({k},\n", f"         {v}),\n"])
        lines.append("    ),\n")
    lines += [")\n", _END]
    return "".join(lines)


def _wrap(text: str, indent: str, width: int = 100) -> list[str]:
    """Break a call at its commas to stay within ``width`` columns."""
    lines, current = [], ""
    for part in text.split(", "):
        candidate = f"{current}, {part}" if current else part
        if current and len(candidate) + 1 > width:
            lines.append(current + ",\n")
            current = indent + part
        else:
            current = candidate
    return [*lines, current + "\n"]


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


def model_py(spec: ArchSpec, prov: Provenance) -> str:
    """The standalone model definition of ``spec``: the template with this architecture's
    docstring and table."""
    template = TEMPLATE.read_text()
    end_doc = template.index('"""', 3) + 3
    begin, end = template.index(_BEGIN), template.index(_END) + len(_END)
    assert template.count(_BEGIN) == template.count(_END) == 1, "template markers"
    return (_docstring(spec, prov) + template[end_doc:begin] + table_block(spec)
            + template[end:])


def _docstring(spec: ArchSpec, prov: Provenance) -> str:
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


# ---------------------------------------------------------------------- README.md
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


# ---------------------------------------------------------------------- model.onnx
def standalone_model(spec: ArchSpec, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The template model (the code of every model.py) with this architecture's table."""
    sa = _standalone
    table = tuple(tuple((sa.Gene(*dataclasses.astuple(genes.k)),
                         sa.Gene(*dataclasses.astuple(genes.v))) for genes in groups)
                  for groups in spec.layers)
    model = sa.Model(sa.Dims(**dataclasses.asdict(spec.dims)), table)
    model.load_state_dict(state)
    return model.eval()


def require_onnx() -> None:
    """Fail before any work when --onnx cannot be honoured."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"--onnx needs {', '.join(missing)}: pip install onnx onnxscript "
                         f"onnxruntime")


class _Logits(torch.nn.Module):
    """The model with one output, the logits: what model.onnx computes."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)[0]


def write_onnx(path: Path, spec: ArchSpec, state: dict[str, torch.Tensor]) -> float:
    """``model.onnx`` of the standalone model (input ``idx``: (batch, seq <= seq_len) int64;
    output ``logits``), exported with torch's dynamo exporter; returns `check_onnx`'s
    largest difference."""
    d = spec.dims
    example = torch.randint(0, d.vocab_size, (2, d.seq_len),
                            generator=torch.Generator().manual_seed(0))
    seq = {1: torch.export.Dim("seq", min=1, max=d.seq_len)} if d.seq_len > 1 else {}
    quiet = logging.getLogger("torch.onnx")  # notes on operators of packages not installed
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations
            torch.onnx.export(_Logits(standalone_model(spec, state)).eval(), (example,),
                              str(path), dynamo=True, verbose=False, input_names=["idx"],
                              output_names=["logits"], external_data=False, dynamic_shapes={
                                  "idx": {0: torch.export.Dim("batch", min=1), **seq}})
    finally:
        quiet.setLevel(level)
    return check_onnx(path, spec, state)


def check_onnx(path: Path, spec: ArchSpec, state: dict[str, torch.Tensor]) -> float:
    """onnxruntime's logits against build_model's at a full and a shorter input; raises
    unless they agree within ONNX_ATOL + ONNX_RTOL * |logits|. The largest difference."""
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = build_model(spec)
    reference.load_state_dict(state)
    d, gen, worst = spec.dims, torch.Generator().manual_seed(1), 0.0
    for shape in ((2, d.seq_len), (3, max(1, d.seq_len // 2))):
        idx = torch.randint(0, d.vocab_size, shape, generator=gen)
        with torch.no_grad():
            expected = reference(idx)[0].numpy()
        got = session.run(None, {"idx": idx.numpy()})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
        if not np.allclose(got, expected, atol=ONNX_ATOL, rtol=ONNX_RTOL):
            raise ValueError(f"{path}: onnxruntime's logits differ from PyTorch's by up to "
                             f"{worst:.3g} at input shape {shape} (allowed: atol {ONNX_ATOL}, "
                             f"rtol {ONNX_RTOL}); the ONNX file is not trustworthy")
    return worst
