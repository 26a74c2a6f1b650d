"""One command that checks a machine with a GPU: step times, precision, compilation, a search.

    python benchmarks/gpu_check.py [--device cuda:0] [--quick] [--skip-search] [--json OUT]

On ``cuda`` (built to finish in under 8 minutes on one GPU; not yet run on one) it

1. measures a bf16 (and an fp32) ``torch.mm`` peak in this run;
2. times one training step (forward + backward + AdamW step, batch on the device) of
   ``vanilla``, ``cla2`` (KV sharing: select-type), ``sla-reproject`` (skip-layer attention,
   select-type) and ``value-residual`` (a mix), and of a plain GPT of the same dimensions
   written here with ``F.scaled_dot_product_attention``: eager and compiled, fp32 and bf16
   (autocast), at the dimensions of ``search_spaces/gpu_small.yaml`` (d_model 512, 8 layers,
   seq 512); ratios and the achieved model TFLOP/s (cost model) / peak in one table;
3. checks correctness: the plain GPT computes vanilla's function (same weights, same logits),
   a compiled step matches the eager one, bf16 starts where fp32 does, and ``train_proxy``
   trains in bf16 on the device (and lands near fp32);
4. decodes with the KV cache: prefill + decode equal the full forward (fp32) for a select, a
   V-reuse and a mix preset, the bf16 cache holds what the cost model counts, and ``cla2``
   decodes at a cache budget of 512 vanilla sequences of 2,048 tokens (bf16) against vanilla,
   beside the cost model's predicted tokens/s ratio (target: within 15 %), with the peak memory
   CUDA measures;
5. runs a 4-trial search with ``gpus_per_trial: 0.5`` on a tokens corpus it prepares in a
   temporary folder (a small BPE trained on the standard library's text): two trials share
   each GPU.

Targets, one PASS/FAIL line each: vanilla bf16 compiled at least 0.9x the plain GPT's speed;
the select-type presets within 1.10x of vanilla's step time (bf16, compiled); cla2's decode
tokens/s at the cache budget within 15 % of the cost model's prediction; the correctness
checks above; 4 trials trained, two at a time on one GPU. Exit status 1 when a correctness
check fails (``--strict``: a speed target too).

Without CUDA it runs the same steps on the CPU at smaller sizes and says so first (2 min 36 s
on the 2-core development machine at load average 5 from other jobs; compiled cases other
than vanilla's within a 60 s budget): speed is reported, with no target on the CPU.

The model and step-time part needs only torch and what ``sla_nas.arch`` and ``sla_nas.model``
import (PyYAML); the trainer check adds pydantic and NumPy (``sla_nas.proxy``); the search
needs Ray, Optuna, pandas and tokenizers, and says it was skipped, and why, where one is
missing. docs/GPUS.md explains every line of the output.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from sla_nas.arch import ArchSpec, estimate, presets  # noqa: E402
from sla_nas.model import build_model  # noqa: E402

BASELINE, PLAIN = "vanilla", "sdpa-gpt"
PRESETS = {"cla2": "select", "sla-reproject": "select", "value-residual": "mix"}
GPT_TARGET = 0.9  # vanilla bf16 compiled speed / the plain SDPA GPT's, at least
SELECT_TARGET = 1.10  # select-type preset step time / vanilla's, at most (bf16, compiled)
PRECISIONS = ("fp32", "bf16")
LR = 3e-3  # the proxy's default learning rate: the steps change the weights visibly

# Tolerances of the correctness checks, set from runs of this script (docs/GPUS.md):
# relative difference of the loss after two AdamW steps from the same weights and batch.
COMPILE_TOL = {"fp32": 1e-3, "bf16": 2e-2}
BF16_START_TOL = 0.01  # relative difference of the first (untrained) loss, bf16 vs fp32
PLAIN_LOGITS_TOL = 1e-4  # max |logits| difference, plain GPT vs vanilla, fp32, same weights
PROXY_BF16_TOL = 0.03  # relative val_loss difference of a short train_proxy, bf16 vs fp32


@dataclass(frozen=True)
class Size:
    """Dimensions of the step-time table, timing lengths, and the trainer check's run."""

    dims: dict[str, int]
    batch: int
    warmup: int  # untimed steps (>= 3: their losses are the correctness checks)
    steps: int  # timed steps, each synchronised; the median counts
    budget_s: float  # compiled cases start only while the table's time is below this
    proxy_dims: dict[str, int]
    proxy_batch: int
    proxy_steps: int


SIZES = {
    # search_spaces/gpu_small.yaml's model at batch 16 (8,192 tokens a step)
    "gpu": Size(dict(vocab_size=50304, d_model=512, n_layers=8, n_heads=8, seq_len=512), 16,
                warmup=4, steps=20, budget_s=270,
                proxy_dims=dict(vocab_size=256, d_model=256, n_layers=4, n_heads=8,
                                seq_len=256), proxy_batch=16, proxy_steps=300),
    "cpu": Size(dict(vocab_size=256, d_model=64, n_layers=3, n_heads=4, seq_len=64), 8,
                warmup=3, steps=4, budget_s=60,
                proxy_dims=dict(vocab_size=256, d_model=32, n_layers=2, n_heads=2, seq_len=32),
                proxy_batch=8, proxy_steps=60),
    "tiny": Size(dict(vocab_size=256, d_model=32, n_layers=3, n_heads=2, seq_len=32), 4,
                 warmup=3, steps=1, budget_s=20,
                 proxy_dims=dict(vocab_size=256, d_model=32, n_layers=2, n_heads=2, seq_len=32),
                 proxy_batch=4, proxy_steps=30),
}


# ----------------------------------------------------------------------------- checks
@dataclass
class Check:
    """One line of the verdict: ``passed`` None means reported without a target."""

    name: str
    passed: bool | None
    detail: str
    kind: str  # "speed", "correctness" or "search"

    def line(self) -> str:
        flag = {True: "PASS", False: "FAIL", None: "----"}[self.passed]
        return f"{flag}  {self.name:<42} {self.detail}"


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, passed: bool | None, detail: str, kind: str) -> None:
        check = Check(name, passed, detail, kind)
        self.checks.append(check)
        print(check.line(), flush=True)


# ----------------------------------------------------------------------------- plain GPT
class PlainBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model, bias=False)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.ln2 = nn.LayerNorm(d_model, bias=False)
        self.fc = nn.Linear(d_model, d_ff, bias=False)
        self.proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2)
                   for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(y.transpose(1, 2).reshape(B, T, D))
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))


class PlainGPT(nn.Module):
    """The textbook pre-norm GPT (nanoGPT's shape) with vanilla's dimensions and operations:
    what the sla-nas model must keep up with where its architecture is vanilla."""

    def __init__(self, vocab_size: int, d_model: int, n_layers: int, n_heads: int, d_ff: int,
                 seq_len: int):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, d_model)
        self.wpe = nn.Embedding(seq_len, d_model)
        self.blocks = nn.ModuleList(PlainBlock(d_model, n_heads, d_ff) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model, bias=False)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, None]:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x)), None


def plain_gpt_like(spec: ArchSpec, seed: int = 0) -> PlainGPT:
    """The plain GPT of ``spec``'s dimensions with vanilla's weights for ``seed``."""
    d = spec.dims
    if d.n_kv_heads != d.n_heads or d.norm != "layernorm" or d.pos != "learned" or \
            not d.tie_embeddings:
        raise ValueError("the plain GPT is multi-head, LayerNorm, learned positions, tied")
    gpt = PlainGPT(d.vocab_size, d.d_model, d.n_layers, d.n_heads, d.d_ff, d.seq_len)
    src = build_model(presets.get(BASELINE, **dims_of(spec)), seed=seed)
    with torch.no_grad():
        gpt.wte.weight.copy_(src.wte.weight)
        gpt.wpe.weight.copy_(src.wpe.weight)
        gpt.ln_f.weight.copy_(src.ln_f.weight)
        for mine, theirs in zip(gpt.blocks, src.blocks):
            a = theirs.attn
            mine.qkv.weight.copy_(torch.cat([a.wq.weight, a.wk, a.wv]))
            mine.out.weight.copy_(a.wo.weight)
            for name in ("ln1", "ln2"):
                getattr(mine, name).weight.copy_(getattr(theirs, name).weight)
            mine.fc.weight.copy_(theirs.mlp.fc.weight)
            mine.proj.weight.copy_(theirs.mlp.proj.weight)
    return gpt


def dims_of(spec: ArchSpec) -> dict[str, Any]:
    d = spec.dims
    return dict(vocab_size=d.vocab_size, d_model=d.d_model, n_layers=d.n_layers,
                n_heads=d.n_heads, seq_len=d.seq_len)


# ----------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def matmul_peak(device: torch.device, dtype: torch.dtype, shapes: list[tuple[int, int, int]],
                repeats: int) -> float:
    """Best TFLOP/s of ``torch.mm`` over ``shapes`` (n, k, m), measured now on ``device``."""
    best = 0.0
    for n, k, m in shapes:
        gen = torch.Generator().manual_seed(1)
        a = torch.randn(n, k, generator=gen).to(device, dtype)
        b = torch.randn(k, m, generator=gen).to(device, dtype)
        calls = 10 if device.type == "cuda" else 1
        for _ in range(2):
            torch.mm(a, b)
        sync(device)
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                torch.mm(a, b)
            sync(device)
            best = max(best, 2 * n * k * m * calls / (time.perf_counter() - start) / 1e12)
    return best


def build(name: str, spec: ArchSpec) -> nn.Module:
    return plain_gpt_like(spec) if name == PLAIN else build_model(spec, seed=0)


def measure(name: str, spec: ArchSpec, size: Size, device: torch.device, precision: str,
            compiled: bool, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """Step times of one (model, precision, compile) and the losses of its first steps."""
    model = build(name, spec).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95))
    if compiled:
        torch.compiler.reset()  # a fresh compile, below dynamo's recompile limit
    net = torch.compile(model) if compiled else model
    idx, targets = batch

    def step() -> torch.Tensor:
        with autocast(device, precision):
            logits, _ = net(idx)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    sync(device)
    start = time.perf_counter()
    losses = [step().item()]  # the first step compiles
    first = time.perf_counter() - start
    losses += [step().item() for _ in range(size.warmup - 1)]
    times = []
    for _ in range(size.steps):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    if compiled:
        torch.compiler.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"step_s": statistics.median(times), "step_s_best": min(times),
            "first_step_s": first, "losses": losses}


def step_table(size: Size, device: torch.device, compile_ok: bool, report: Report,
               log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every (model, precision, compile) the budget allows: eager ones first, then compiled
    ones in the order the targets need them (vanilla's two always: the compile checks)."""
    specs = {n: presets.get(n if n != PLAIN else BASELINE, **size.dims)
             for n in (BASELINE, PLAIN, *PRESETS)}
    flops = {n: estimate(s)["train_flops_per_token"] for n, s in specs.items()}
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, size.dims["vocab_size"], (size.batch, size.dims["seq_len"] + 1),
                         generator=gen)
    batch = (data[:, :-1].contiguous().to(device), data[:, 1:].contiguous().to(device))
    order = [(n, p, False) for p in PRECISIONS for n in specs]
    if compile_ok:
        order += [(BASELINE, "bf16", True), (PLAIN, "bf16", True), (BASELINE, "fp32", True),
                  *[(n, "bf16", True) for n in PRESETS], (PLAIN, "fp32", True),
                  *[(n, "fp32", True) for n in PRESETS]]
    rows, start, longest = [], time.perf_counter(), 0.0
    for name, precision, compiled in order:
        elapsed = time.perf_counter() - start
        if compiled and name != BASELINE and elapsed + longest > size.budget_s:
            log(f"  {name} {precision} compiled: not measured (the table's {size.budget_s:.0f}s "
                f"budget; --budget-s)")
            continue
        began = time.perf_counter()
        try:
            row = measure(name, specs[name], size, device, precision, compiled, batch)
        except Exception as error:  # a compile failure is a result, not a crash
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            report.add(f"{name} {precision} {'compiled' if compiled else 'eager'} runs", False,
                       f"{type(error).__name__}: {first[:160]}", "correctness")
            continue
        if compiled:
            longest = max(longest, time.perf_counter() - began)
        tokens = size.batch * size.dims["seq_len"]
        row.update(name=name, precision=precision, compiled=compiled,
                   kind="plain" if name == PLAIN else PRESETS.get(name, "vanilla"),
                   train_flops_per_token=flops[name],
                   tflops=flops[name] * tokens / row["step_s"] / 1e12)
        rows.append(row)
        log(f"  {name:<15} {precision} {'compiled' if compiled else 'eager   '} "
            f"{row['step_s'] * 1e3:8.2f} ms/step (first step {row['first_step_s']:.1f}s)")
    return rows


# ----------------------------------------------------------------------------- verdicts
def find(rows: list[dict], name: str, precision: str, compiled: bool) -> dict | None:
    return next((r for r in rows if (r["name"], r["precision"], r["compiled"]) ==
                 (name, precision, compiled)), None)


def judge_speed(rows: list[dict], on_gpu: bool, report: Report) -> None:
    cpu_note = "" if on_gpu else " (no target on CPU)"
    for compiled in (True, False):
        for precision in ("bf16", "fp32"):
            van, gpt = find(rows, BASELINE, precision, compiled), find(rows, PLAIN, precision,
                                                                         compiled)
            judged = on_gpu and compiled and precision == "bf16"
            mode = f"{precision} {'compiled' if compiled else 'eager'}"
            if van and gpt:
                speed = gpt["step_s"] / van["step_s"]
                report.add(f"vanilla vs SDPA GPT, {mode}", speed >= GPT_TARGET if judged else None,
                           f"{speed:.3f}x the plain GPT's speed" +
                           (f" (target >= {GPT_TARGET})" if judged else cpu_note or " (info)"),
                           "speed")
            elif judged:  # a target that was not measured is not met
                report.add(f"vanilla vs SDPA GPT, {mode}", False, "not measured (a failed run, "
                           "or over --budget-s)", "speed")
            for name, kind in PRESETS.items():
                row = find(rows, name, precision, compiled)
                if judged and kind == "select" and not (van and row):
                    report.add(f"{name} vs vanilla, {mode}", False, "not measured (a failed "
                               "run, or over --budget-s)", "speed")
                if not (van and row):
                    continue
                ratio = row["step_s"] / van["step_s"]
                select = kind == "select"
                flops = row["train_flops_per_token"] / van["train_flops_per_token"]
                report.add(f"{name} vs vanilla, {mode}",
                           ratio <= SELECT_TARGET if judged and select else None,
                           f"{ratio:.3f}x vanilla's step time, cost model {flops:.3f}x" +
                           (f" (target <= {SELECT_TARGET})" if judged and select
                            else cpu_note or " (info)"), "speed")


def judge_correctness(rows: list[dict], size: Size, device: torch.device,
                      report: Report) -> None:
    spec = presets.get(BASELINE, **size.dims)
    van, gpt = build_model(spec, seed=0).to(device).eval(), plain_gpt_like(spec).to(device).eval()
    idx = torch.randint(0, size.dims["vocab_size"], (2, size.dims["seq_len"]),
                        generator=torch.Generator().manual_seed(2)).to(device)
    with torch.no_grad():
        diff = (van(idx)[0] - gpt(idx)[0]).abs().max().item()
    report.add("plain GPT = vanilla's function", diff <= PLAIN_LOGITS_TOL,
               f"max |logits difference| {diff:.1e}, fp32, same weights "
               f"(tolerance {PLAIN_LOGITS_TOL:.0e})", "correctness")
    del van, gpt
    for name in (BASELINE, PLAIN, *PRESETS):
        for precision in PRECISIONS:
            eager, comp = find(rows, name, precision, False), find(rows, name, precision, True)
            if not (eager and comp):
                continue
            e, c = eager["losses"][2], comp["losses"][2]
            rel = abs(c - e) / abs(e)
            report.add(f"compiled = eager, {name} {precision}", rel <= COMPILE_TOL[precision],
                       f"loss after 2 steps {c:.5f} vs {e:.5f}: {rel:.1e} relative "
                       f"(tolerance {COMPILE_TOL[precision]:.0e})", "correctness")
    for name in (BASELINE, *PRESETS):
        f32, b16 = find(rows, name, "fp32", False), find(rows, name, "bf16", False)
        if f32 and b16:
            rel = abs(b16["losses"][0] - f32["losses"][0]) / f32["losses"][0]
            fell = b16["losses"][-1] < b16["losses"][0]
            report.add(f"bf16 step = fp32 step, {name}", rel <= BF16_START_TOL and fell,
                       f"first loss {b16['losses'][0]:.4f} vs {f32['losses'][0]:.4f} "
                       f"({rel:.1e} relative, tolerance {BF16_START_TOL}); bf16 loss "
                       f"{'fell' if fell else 'did not fall'} to {b16['losses'][-1]:.4f} in "
                       f"{len(b16['losses']) - 1} steps", "correctness")


def trainer_check(size: Size, device: torch.device, report: Report) -> dict[str, Any]:
    """``train_proxy`` in bf16 and fp32 on the device: the real trainer's precision path."""
    try:
        from sla_nas.proxy import Budget, BytesLM, train_proxy
    except ImportError as error:
        print(f"trainer check skipped: sla_nas.proxy needs {error.name} ({error})")
        return {"skipped": str(error)}
    import sla_nas

    spec = presets.get(BASELINE, **size.proxy_dims)
    seq = size.proxy_dims["seq_len"]
    # a small validation set and one evaluation: the check is the precision path, not a rank
    task = BytesLM(seq, corpus=str(Path(sla_nas.__file__).parent),
                   val_tokens=16 * size.proxy_batch * seq)
    tokens = size.proxy_steps * size.proxy_batch * seq
    budget = Budget(tokens=tokens, eval_at=(tokens,), batch_size=size.proxy_batch, lr=LR)
    out = {}
    for precision in PRECISIONS:
        start = time.perf_counter()
        result = train_proxy(spec, task, budget, seed=0, device=device, precision=precision)
        out[precision] = {k: result.get(k) for k in ("status", "val_loss", "device", "precision",
                                                      "tokens_per_s")}
        out[precision]["wall_s"] = time.perf_counter() - start
    b16, f32 = out["bf16"], out["fp32"]
    start_loss = math.log(size.proxy_dims["vocab_size"])
    rel = abs(b16["val_loss"] - f32["val_loss"]) / f32["val_loss"]
    ok = (b16["status"] == "ok" and b16["val_loss"] < 0.8 * start_loss and
          b16["precision"] == "bf16" and b16["device"] == str(device) and
          rel <= PROXY_BF16_TOL)
    report.add("train_proxy trains in bf16", ok,
               f"val_loss {b16['val_loss']:.4f} (fp32 {f32['val_loss']:.4f}, {rel:.1e} relative, "
               f"tolerance {PROXY_BF16_TOL}; start ~{start_loss:.2f}) on {b16['device']} after "
               f"{budget.tokens:,} tokens", "correctness")
    return out


# ----------------------------------------------------------------------------- decoding
# decoding with the KV cache: dims of the cache-bound regime, context, and the cache budget in
# vanilla sequences (on a GPU a step must read gigabytes before reading, not launching
# kernels, sets its time)
DECODE = {"gpu": (dict(vocab_size=50304, d_model=256, n_layers=8, n_heads=8, seq_len=2048),
                  2048, 512),
          "cpu": (dict(vocab_size=256, d_model=128, n_layers=4, n_heads=4, seq_len=512), 512, 8),
          "tiny": (dict(vocab_size=256, d_model=32, n_layers=3, n_heads=2, seq_len=64), 64, 4)}
DECODE_PRESETS = ("cla2", "svformer", "value-residual-learned")  # select, V reuse, a mix
DECODE_LOGITS_TOL = 1e-4  # max |logits difference|, prefill + decode vs the full forward, fp32
DECODE_SPEED_TOL = 0.15  # measured tokens/s ratio at the budget within 15 % of the prediction


def decode_check(size_name: str, device: torch.device, report: Report,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """The KV cache on the device: prefill + decode compute the full forward's logits (fp32),
    a bf16 cache stores what the cost model counts, and cla2 decodes at a cache budget against
    vanilla (bf16 on a GPU, fp32 on the CPU) beside the cost model's prediction."""
    try:
        from sla_nas.arch import decode_throughput_ratio
        from sla_nas.proxy import MIB, compare_decode
    except ImportError as error:
        print(f"decode check skipped: sla_nas.proxy needs {error.name} ({error})")
        return {"skipped": str(error)}
    from sla_nas.model import KVCache

    dims, context, sequences = DECODE[size_name]
    small = {**SIZES["tiny"].dims, "pos": "rope"}
    worst, stored = 0.0, True
    for name in DECODE_PRESETS:
        spec = presets.get(name, **small)
        model = build_model(spec, seed=0).to(device).eval()
        idx = torch.randint(0, spec.dims.vocab_size, (2, spec.dims.seq_len),
                            generator=torch.Generator().manual_seed(3)).to(device)
        with torch.no_grad():
            full = model(idx)[0]
            logits, cache = model.prefill(idx[:, :5])
            steps = [logits]
            for t in range(5, idx.shape[1]):
                logits, cache = model.decode(idx[:, t], cache)
                steps.append(logits[:, None])
        worst = max(worst, (torch.cat(steps, 1) - full).abs().max().item())
        half = KVCache(model, 1, 1, dtype=torch.bfloat16).bytes_per_token()
        stored &= half == estimate(spec)["kv_cache_bytes_per_token"]
    report.add("prefill + decode = full forward", worst <= DECODE_LOGITS_TOL and stored,
               f"max |logits difference| {worst:.1e} over {', '.join(DECODE_PRESETS)} (rope, "
               f"fp32, tolerance {DECODE_LOGITS_TOL:.0e}); bf16 cache bytes "
               f"{'=' if stored else '!='} the cost model's", "correctness")

    on_gpu = device.type == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    per_element = dtype.itemsize
    spec = presets.get("cla2", **dims)
    vanilla_seq = estimate(presets.get(BASELINE, **dims),
                           per_element)["kv_cache_bytes_per_token"] * context
    budget = sequences * vanilla_seq
    log(f"decoding cla2 and vanilla at context {context}, cache budget {budget / MIB:,.4g} MiB "
        f"({sequences} vanilla sequences), {str(dtype).removeprefix('torch.')}")
    start = time.perf_counter()
    result = compare_decode(spec, batch=sequences, context=context,
                            cache_budget_mb=budget / MIB, device=str(device), dtype=dtype,
                            steps=8, log=log)
    predicted = decode_throughput_ratio(spec, budget, context, per_element)
    measured = result.ratios()["budget_decode_tokens_per_s"]
    off = measured / predicted.ratio - 1
    a, v = result.arch_at_budget, result.vanilla_at_budget
    detail = (f"{measured:.3f}x vanilla's decode tokens/s ({a.batch} vs {v.batch} sequences, "
              f"{a.decode_tokens_per_s:,.0f} vs {v.decode_tokens_per_s:,.0f} tokens/s), cost "
              f"model {predicted.ratio:.3f}x ({100 * off:+.0f} %)")
    report.add("cla2 decode at a cache budget", abs(off) <= DECODE_SPEED_TOL if on_gpu else None,
               detail + ("" if on_gpu else "; no target on CPU"), "speed")
    if on_gpu:
        peak = result.arch.peak_measured and result.vanilla.peak_measured
        report.add("decode peak memory measured", peak,
                   f"cla2 {result.arch.peak_bytes / MIB:,.0f} MiB, vanilla "
                   f"{result.vanilla.peak_bytes / MIB:,.0f} MiB at batch {sequences}",
                   "correctness")
    return {"logits_max_abs_diff": worst, "cache_bytes_equal": stored,
            "budget_bytes": budget, "context": context, "dtype": str(dtype),
            "measured_ratio": measured, "predicted_ratio": predicted.ratio,
            "ratios": result.ratios(), "seconds": time.perf_counter() - start}


# ----------------------------------------------------------------------------- the search
SEARCH_NEEDS = (("ray", "Ray is not installed"), ("optuna", "Optuna is not installed"),
                ("pandas", "pandas is not installed"),
                ("tokenizers", "tokenizers (for prepare-tokens) is not installed"))


def recording_trial(log_dir: str) -> Callable[..., None]:
    """The search's own trial function, wrapped to record which GPU Ray gave each trial and
    when it ran (in ``log_dir``, one JSON file per trial): what shows that trials shared."""
    from sla_nas.search import run_trial  # the default trainable of run_search

    def trial(config: dict[str, Any], setup: Any) -> None:
        import json
        import os
        import time
        import uuid

        import ray

        start = time.time()
        try:
            run_trial(config, setup)
        finally:
            Path(log_dir, f"{uuid.uuid4().hex}.json").write_text(json.dumps({
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "start": start,
                "end": time.time(), "node": ray.get_runtime_context().get_node_id(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}))

    return trial


def most_at_once(records: list[dict], per_gpu: bool = True) -> int:
    """The most trials that ran at the same time on one GPU (``per_gpu``), or at all."""
    best = 0
    for r in records:
        for gpu in r["gpu_ids"] if per_gpu else [None]:
            best = max(best, sum(1 for o in records if o["start"] <= r["start"] < o["end"] and
                                 (gpu is None or (gpu in o["gpu_ids"] and
                                                  o["node"] == r["node"]))))
    return best


def search_check(size_name: str, device: torch.device, folder: Path, report: Report,
                 log: Callable[[str], None]) -> dict[str, Any]:
    import importlib

    for module, why in SEARCH_NEEDS:
        try:
            importlib.import_module(module)
        except ImportError as error:
            print(f"search skipped: {why} ({error}); pip install the project with its "
                  f"dependencies (pip install -e .) to run it", flush=True)
            return {"skipped": why}
    from sla_nas.proxy import default_corpus_files, prepare_tokens
    from sla_nas.search import SearchOptions, run_search

    on_gpu = device.type == "cuda"
    text_bytes = {"gpu": 4_000_000, "cpu": 600_000, "tiny": 200_000}[size_name]
    text, size = [], 0
    for path in default_corpus_files():
        if size >= text_bytes:
            break
        text.append(path.read_text(encoding="utf-8", errors="replace"))
        size += len(text[-1])
    (folder / "text").mkdir()
    (folder / "text" / "stdlib.txt").write_text("\n".join(text), encoding="utf-8")
    start = time.perf_counter()
    meta = prepare_tokens(folder / "text", folder / "tokens", train_bpe=500)
    log(f"  prepare_tokens: a 500-token BPE on {size / 1e6:.1f} MB of stdlib text in "
        f"{time.perf_counter() - start:.1f}s")
    dims = (dict(vocab_size=512, d_model=256, n_layers=4, n_heads=4, seq_len=256) if on_gpu
            else dict(vocab_size=512, d_model=32, n_layers=2, n_heads=2, seq_len=32))
    batch = 16 if on_gpu else 8
    space = {
        "name": "gpu-check", "model": dims,
        "connectivity": {"layers": f"1-{dims['n_layers'] - 1}", "modes": ["reproject", "reuse"],
                         "sources": {"max_distance": 1}},
        "objectives": [{"metric": "val_loss", "mode": "min"}],
        "task": {"name": "tokens", "train": "tokens/train.bin", "val": "tokens/val.bin"},
        "budget": {"tokens": (150 if on_gpu else 60) * batch * dims["seq_len"],
                   "batch_size": batch},
        "train": {"device": "auto", "precision": "bf16" if on_gpu else "fp32",
                  "compile": False},
        "search": {"sampler": "grid", "n_trials": 4, "concurrency": 2, "scheduler": "fifo",
                   "seed": 0, "seed_runs": 1, "cpus_per_trial": 1,
                   "gpus_per_trial": 0.5 if on_gpu else 0},
    }
    path = folder / "space.yaml"
    path.write_text(json.dumps(space, indent=1) + "\n")  # JSON is YAML
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if on_gpu:  # one GPU for Ray: 4 trials of 0.5 GPU must then run two to a GPU
        index = device.index or 0
        os.environ["CUDA_VISIBLE_DEVICES"] = visible.split(",")[index] if visible else str(index)
    records = folder / "trials"
    records.mkdir()
    start = time.perf_counter()
    try:
        outcome = run_search(path, SearchOptions(results=folder / "results", quiet=True,
                                                 confirm=False),
                             trainable=recording_trial(str(records)))
    finally:
        if on_gpu:
            if visible is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = visible
    wall = time.perf_counter() - start
    frame = outcome.frame
    statuses = {str(k): int(v) for k, v in frame["status"].value_counts().items()}
    ok = statuses.get("ok", 0)
    devices = sorted(set(frame["device"].dropna())) if "device" in frame else []
    report.add("search: 4 trials trained", ok == 4,
               f"{ok} trials ok on {', '.join(map(str, devices)) or '?'} in {wall:.0f}s (table: "
               f"{', '.join(f'{n} {k}' for k, n in statuses.items())}; tokens corpus: "
               f"{meta.get('vocab_size', '?')}-token BPE)", "search")
    rows = [json.loads(p.read_text()) for p in sorted(records.glob("*.json"))]
    together = most_at_once(rows)
    if on_gpu:
        report.add("search: trials shared a GPU", together >= 2 and len(rows) == 4,
                   f"at most {together} trials at once on one GPU (gpus_per_trial 0.5, one "
                   f"GPU given to Ray)", "search")
    else:
        report.add("search: trials shared a GPU", None, f"no GPU: the CPU run uses "
                   f"gpus_per_trial 0; {most_at_once(rows, per_gpu=False)} trials ran at once "
                   f"(no target on CPU)", "search")
    return {"trials_ok": ok, "statuses": statuses, "wall_s": wall, "devices": devices,
            "records": rows, "most_at_once_per_gpu": together}


# ----------------------------------------------------------------------------- main
def resolve(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {name}: this torch ({torch.__version__}) sees no CUDA")
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None
                              else device.index)
    elif device.type != "cpu":
        raise SystemExit(f"--device {name}: expected auto, cpu, cuda or cuda:N")
    return device


def print_table(rows: list[dict], peaks: dict[str, float]) -> None:
    base = {(r["precision"], r["compiled"]): r for r in rows if r["name"] == BASELINE}
    head = (f"{'model':<16}{'kind':<8}{'precision':<10}{'mode':<10}{'ms/step':>9}{'x van':>7}"
            f"{'TFLOP/s':>9}{'% peak':>8}{'1st step s':>11}")
    print("\n" + head + "\n" + "-" * len(head))
    for r in sorted(rows, key=lambda r: (r["compiled"], r["precision"] != "bf16",
                                         list(SIZE_ORDER).index(r["name"]))):
        van = base.get((r["precision"], r["compiled"]))
        ratio = f"{r['step_s'] / van['step_s']:7.3f}" if van else f"{'-':>7}"
        peak = peaks[r["precision"]]
        print(f"{r['name']:<16}{r['kind']:<8}{r['precision']:<10}"
              f"{'compiled' if r['compiled'] else 'eager':<10}{r['step_s'] * 1e3:>9.2f}{ratio}"
              f"{r['tflops']:>9.3g}{100 * r['tflops'] / peak:>7.1f}%{r['first_step_s']:>11.1f}")
    print(f"matmul peak measured in this run: bf16 {peaks['bf16']:.3g}, fp32 {peaks['fp32']:.3g} "
          f"TFLOP/s; % peak: the model's cost-model TFLOP/s / the peak of its precision")


SIZE_ORDER = (BASELINE, PLAIN, *PRESETS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Reads: PASS/FAIL lines (---- = reported, no target), a step-time table, and a "
               "summary; docs/GPUS.md explains each line.")
    parser.add_argument("--device", default="auto",
                        help="auto (cuda when torch sees CUDA, else cpu), cpu, cuda or cuda:N")
    parser.add_argument("--size", choices=[*SIZES, "auto"], default="auto",
                        help="dimensions: gpu (gpu_small.yaml's model), cpu (small), tiny "
                             "(seconds; for tests); auto: gpu on cuda, else cpu")
    parser.add_argument("--quick", action="store_true",
                        help="fewer timed steps and half the compile budget")
    parser.add_argument("--budget-s", type=float,
                        help="seconds the step-time table may take before it skips the "
                             "remaining compiled cases (default: 270 on gpu, 60 on cpu)")
    parser.add_argument("--no-compile", action="store_true", help="eager cases only")
    parser.add_argument("--skip-trainer", action="store_true",
                        help="skip the train_proxy bf16 check")
    parser.add_argument("--skip-decode", action="store_true",
                        help="skip the KV-cache decoding check")
    parser.add_argument("--skip-search", action="store_true", help="skip the 4-trial search")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a speed target fails too (correctness always)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--json", metavar="OUT", help="also write everything measured as JSON")
    args = parser.parse_args(argv)

    begun = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve(args.device)
    on_gpu = device.type == "cuda"
    size_name = args.size if args.size != "auto" else ("gpu" if on_gpu else "cpu")
    size = SIZES[size_name]
    if args.quick or args.budget_s is not None:
        size = Size(**{**size.__dict__, "steps": max(2, size.steps // 2) if args.quick
                       else size.steps,
                       "budget_s": args.budget_s if args.budget_s is not None
                       else size.budget_s / 2})
    if on_gpu:
        print(f"gpu_check on {device} ({torch.cuda.get_device_name(device)}), torch "
              f"{torch.__version__}, size {size_name}", flush=True)
    else:
        why = "no CUDA device" if args.device == "auto" else f"--device {args.device}"
        print(f"gpu_check: on the CPU ({why}): running the same steps with smaller sizes "
              f"(size {size_name}, torch {torch.__version__}, {torch.get_num_threads()} "
              f"threads); speed has no target on the CPU", flush=True)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    report = Report()
    d = size.dims
    shapes = [(size.batch * d["seq_len"], d["d_model"], 4 * d["d_model"]),
              (size.batch * d["seq_len"], d["d_model"], d["vocab_size"])]
    shapes.append((8192, 8192, 8192) if on_gpu else (512, 512, 512))
    repeats = 5 if on_gpu else 3
    peaks = {"bf16": matmul_peak(device, torch.bfloat16, shapes, repeats),
             "fp32": matmul_peak(device, torch.float32, shapes, repeats)}
    log(f"matmul peak: bf16 {peaks['bf16']:.3g} TFLOP/s, fp32 {peaks['fp32']:.3g} TFLOP/s")
    log(f"step times: {d['n_layers']} layers, d_model {d['d_model']}, seq {d['seq_len']}, "
        f"vocab {d['vocab_size']}, batch {size.batch}")
    rows = step_table(size, device, not args.no_compile, report, log)
    print_table(rows, peaks)
    print()
    judge_speed(rows, on_gpu, report)
    judge_correctness(rows, size, device, report)
    trainer = {"skipped": "--skip-trainer"} if args.skip_trainer else \
        trainer_check(size, device, report)
    decode = {"skipped": "--skip-decode"} if args.skip_decode else \
        decode_check(size_name, device, report, log)
    search: dict[str, Any] = {"skipped": "--skip-search"}
    if not args.skip_search:
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            search = search_check(size_name, device, Path(tmp), report, log)

    failed = [c for c in report.checks if c.passed is False]
    hard = [c for c in failed if c.kind != "speed" or args.strict]
    passed = sum(c.passed is True for c in report.checks)
    wall = time.perf_counter() - begun
    load = (f", load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
            if hasattr(os, "getloadavg") else "")
    print(f"\n{passed} PASS, {len(failed)} FAIL, "
          f"{sum(c.passed is None for c in report.checks)} reported without a target; "
          f"{wall:.0f}s on {device}{load}" + (f"; failed: {', '.join(c.name for c in failed)}"
                                              if failed else ""))
    if args.json:
        out = {"device": str(device), "size": size_name, "size_config": size.__dict__,
               "torch": torch.__version__, "platform": platform.platform(),
               "gpu": torch.cuda.get_device_name(device) if on_gpu else None,
               "matmul_peak_tflops": peaks, "steps": rows, "trainer": trainer, "decode": decode,
               "search": search, "wall_s": wall,
               "checks": [c.__dict__ for c in report.checks]}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 1 if hard else 0


if __name__ == "__main__":
    sys.exit(main())
