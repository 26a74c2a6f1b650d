"""Speed and memory of `train_proxy` at the default proxy size, against a bare loop.

* overhead: tokens/s of train_proxy's main run against a bare training loop of the same model
  (AdamW, clipping, the same batches) measured in the same process, rounds interleaved so that
  machine noise hits both alike (target: overhead <= 5 %);
* tokens/s of every preset;
* peak resident memory of one complete proxy training in a fresh process (target: <= 1 GB).

    python benchmarks/proxy_speed.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time

import torch

from sla_nas import build_model, presets
from sla_nas.proxy import Budget, make_task, train_proxy

SIZE = dict(d_model=128, n_heads=4, n_layers=4, seq_len=128)  # default proxy: docs/EVALUATION.md
BATCH = 32


def bare_loop(spec, task, steps: int) -> float:
    """Tokens/s of the plainest loop that trains the same model on the same batches."""
    model = build_model(spec, 0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    batches = [task.batch(0, i, BATCH) for i in range(steps)]
    started = time.perf_counter()
    for x, y in batches:
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return steps * BATCH * task.seq_len / (time.perf_counter() - started)


def proxy_rate(spec, task, steps: int) -> float:
    """train_proxy's own tokens/s of its main run (evaluations and cooldowns excluded)."""
    tokens = round(steps * (1 + 0.2)) * BATCH * task.seq_len
    return train_proxy(spec, task, Budget(tokens=tokens, batch_size=BATCH), seed=0)[
        "tokens_per_s"]


def peak_memory_mb(tokens: int) -> float:
    """Peak RSS of a fresh process that runs one complete default proxy training."""
    code = ("import resource, torch; from sla_nas import presets; "
            "from sla_nas.proxy import make_task; from sla_nas.train import Budget, train_proxy; "
            f"s = presets.get('vanilla', **{SIZE!r}); t = make_task('bytes-lm', 128); "
            f"train_proxy(s, t, Budget(tokens={tokens}, batch_size={BATCH})); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return int(out.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    steps, rounds = (20, 2) if args.quick else (60, 3)
    task = make_task("bytes-lm", SIZE["seq_len"])
    vanilla = presets.get("vanilla", **SIZE)
    bare_loop(vanilla, task, 5)  # warm up kernels and the allocator
    bare, proxy = [], []
    for _ in range(rounds):
        bare.append(bare_loop(vanilla, task, steps))
        proxy.append(proxy_rate(vanilla, task, steps))
    overhead = statistics.median(bare) / statistics.median(proxy) - 1
    rates = {}
    for name in presets.names():
        rates[name] = proxy_rate(presets.get(name, **SIZE), task, steps // 2)
    peak = peak_memory_mb(200_000 if args.quick else 1_500_000)
    result = {"threads": torch.get_num_threads(), "size": SIZE, "batch_size": BATCH,
              "bare_tokens_per_s": statistics.median(bare),
              "proxy_tokens_per_s": statistics.median(proxy), "overhead": overhead,
              "preset_tokens_per_s": rates, "peak_rss_mb": peak,
              "targets": {"overhead <= 5%": overhead <= 0.05, "peak RSS <= 1 GB": peak <= 1024}}
    print(f"bare loop      {result['bare_tokens_per_s']:>10,.0f} tokens/s")
    print(f"train_proxy    {result['proxy_tokens_per_s']:>10,.0f} tokens/s   overhead "
          f"{overhead:+.1%} (target <= 5%)")
    print(f"peak RSS of one default proxy training: {peak:,.0f} MB (target <= 1024 MB)")
    print("\n| preset | tokens/s | vs vanilla |\n|---|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} | {rate / rates['vanilla']:.2f} |")
    assert all(math.isfinite(v) for v in rates.values())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
