"""Can a weight-sharing supernet rank connectivity like standalone training does? Kendall tau
between supernet scores (held-out loss with inherited weights) and standalone losses.

Two sets of architectures (issue #17, item 5):

* ``presets``: the 8 presets of rank_fidelity.py at its default proxy size (bytes-lm, d_model
  128, 4 layers, seq 128, batch 32, 1.5M tokens), the supernet's space being every wiring of
  those dimensions (embedding sources, reuse, concat and mixes, K and V apart);
* ``quickstart``: ``--archs`` (default 24) architectures drawn uniformly from
  search_spaces/quickstart.yaml, at its own budget.

Standalone: `train_proxy` exactly as a search trial trains (the space's task, its budget and
evaluation plan), ``--seeds`` paired seeds (default 2); the loss is their mean. The tau between
two standalone seeds is the noise ceiling. Supernet: `train_supernet` for at most ``--ratio``
(default 4) times one standalone run's tokens, counting every architecture each step trains.
Variants, each reported:

* ``fair``: fair sampling, one architecture per step; ``uniform``: a uniform draw;
* ``sandwich``: fair, plus every seed architecture of the space on each step's batch (its
  steps are fewer: the same token total);
* ``finetune``: the fair supernet, each candidate fine-tuned ``--finetune-tokens`` (default a
  twentieth of a standalone run) before it is scored;
* ``split``: fair, with split projections (`Supernet`'s ``split_projections``: every layer,
  head group and gene its own copy of that group's W_Q rows and of the W_K / W_V rows it owns);
* ``balanced``: balanced sampling (every gene of a place trained about equally often, see
  `train_supernet`);
* ``per-decision``: the fair supernet's scores of ``--pool`` extra random architectures of the
  space (plus the candidates) fit an additive model (the mean score of the architectures taking
  each option of each decision); a candidate's score is the sum of its options' effects, which
  averages out the interference one architecture's weights suffer from the others'.

Each tau comes with a 95 % bootstrap interval over architectures. Every finished run (standalone
or supernet) is appended to ``--runs`` (JSON lines) at once and skipped by a rerun, so an
interrupted measurement loses at most the runs in flight.

    python benchmarks/one_shot_fidelity.py              # both sets (about an hour on 2 cores)
    python benchmarks/one_shot_fidelity.py --parts quickstart --archs 32
    python benchmarks/one_shot_fidelity.py --quick      # tiny budgets, 4 architectures a set
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ["vanilla", "sla-reproject", "sla-reuse", "cla2", "yoco", "svformer",
           "value-residual", "last-layer-shortcut"]  # as rank_fidelity.py
VARIANTS = ["fair", "uniform", "sandwich", "finetune", "per-decision", "split", "balanced"]
TRAINED = {"fair": ("fair", False, False), "uniform": ("uniform", False, False),
           "sandwich": ("fair", True, False), "split": ("fair", False, True),
           "balanced": ("balanced", False, False)}  # (sampling,
# sandwich, split_projections) of each variant that trains a supernet of its own

PRESET_SPACE = """\
name: {name}
model: {{vocab_size: 256, d_model: {d_model}, n_layers: 4, n_heads: 4, seq_len: {seq_len}}}
connectivity:
  streams: separate
  sources: {{embedding: true}}
  max_sources: 3
  modes: [reproject, reuse]
  combines: [select, concat, mix]
  mix_weights: [fixed, learned]
seeds: [{seeds}]
objectives: [{{metric: val_loss, mode: min}}]
task: {{name: bytes-lm}}
budget: {{tokens: {tokens}, batch_size: {batch_size}}}
search: {{scheduler: fifo}}
"""


# ---------------------------------------------------------------------- the sets
@dataclasses.dataclass
class Part:
    """One set of architectures: its space file, the candidates and the standalone budget."""

    name: str
    space_path: str
    archs: list[tuple[str, str]]  # (label, spec JSON)
    budget: dict[str, Any]  # Budget's fields as a search trial of the space gets them
    params: dict[str, dict[str, Any]]  # spec key -> its decisions in the space


class _Recorder:
    """An Optuna-like trial drawing uniformly and recording its decisions."""

    def __init__(self, rng: random.Random):
        self.rng, self.params = rng, {}

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        self.params[name] = self.rng.choice(list(choices))
        return self.params[name]


def _space(path: str) -> Any:
    from sla_nas.space import SearchSpace

    return SearchSpace.from_yaml(path)


def _trial_budget(space: Any, tokens: int | None) -> dict[str, Any]:
    """The budget `run_search` gives every trial of ``space`` (``tokens`` overrides)."""
    from sla_nas.results import search_plan

    plan, _ = search_plan(space, tokens)
    config = space.config.budget
    return {"tokens": plan.budget, "eval_at": list(plan.eval_at),
            "batch_size": config.batch_size, "lr": config.lr, "schedule": config.schedule}


def sample_archs(space: Any, n: int, seed: int) -> list[tuple[dict[str, Any], Any]]:
    """``n`` distinct architectures drawn uniformly (per decision) from ``space``."""
    rng, out, keys = random.Random(seed), [], set()
    for _ in range(100 * n):
        trial = _Recorder(rng)
        spec = space.sample(trial)
        if spec.key not in keys and not space.violations(spec):
            keys.add(spec.key)
            out.append((trial.params, spec))
            if len(out) == n:
                break
    return out


def make_parts(args: argparse.Namespace, folder: Path) -> list[Part]:
    """The sets ``args.parts`` names, in its order (the order their runs start in)."""
    parts = []
    if "presets" in args.parts:
        size = dict(d_model=32, seq_len=32, batch_size=16, tokens=args.tokens or 8192) \
            if args.quick else dict(d_model=128, seq_len=128, batch_size=32,
                                    tokens=args.tokens or 1_500_000)
        names = PRESETS[:4] if args.quick else PRESETS
        path = folder / f"presets{'-quick' if args.quick else ''}.yaml"
        path.write_text(PRESET_SPACE.format(name=path.stem, seeds=", ".join(names), **size))
        space = _space(str(path))
        archs = [(name, spec.to_json()) for name, spec in space.seeds]
        params = {spec.key: space.params_for(spec) or {} for _, spec in space.seeds}
        parts.append(Part("presets", str(path), archs, _trial_budget(space, size["tokens"]),
                          params))
    if "quickstart" in args.parts:
        path = ROOT / "search_spaces" / "quickstart.yaml"
        space = _space(str(path))
        n = args.archs or (4 if args.quick else 24)
        drawn = sample_archs(space, n, args.sample_seed)
        tokens = args.tokens or (8192 if args.quick else None)
        parts.append(Part("quickstart", str(path), [(s.key, s.to_json()) for _, s in drawn],
                          _trial_budget(space, tokens), {s.key: p for p, s in drawn}))
    return sorted(parts, key=lambda part: args.parts.index(part.name))


# ---------------------------------------------------------------------- the runs
def _budget(fields: dict[str, Any]) -> Any:
    from sla_nas.proxy import Budget

    return Budget(**{**fields, "eval_at": tuple(fields["eval_at"]) if fields.get("eval_at")
                     else None})


def _task(space: Any, val_tokens: int | None) -> Any:
    """The space's task, as a search trial makes it (``val_tokens`` overrides its held-out
    set: only --quick does)."""
    from sla_nas.proxy import make_task

    dims = next(iter(space.dims_choices))
    options = space.task_options()
    if val_tokens is not None:
        options["val_tokens"] = val_tokens
    return make_task(space.config.task.name, dims.seq_len, vocab_size=dims.vocab_size,
                     **options)


def standalone_run(job: dict[str, Any]) -> dict[str, Any]:
    """One architecture, one seed, trained as a search trial trains it."""
    import torch

    from sla_nas import ArchSpec
    from sla_nas.proxy import train_proxy

    torch.set_num_threads(job["threads"])
    spec = ArchSpec.from_json(job["spec"])
    started = time.perf_counter()
    task = _task(_space(job["space"]), job["val_tokens"])
    result = train_proxy(spec, task, _budget(job["budget"]), seed=job["seed"])
    return {"kind": "standalone", "id": job["id"], "part": job["part"], "arch": job["arch"],
            "key": spec.key, "seed": job["seed"], "status": result["status"],
            "val_loss": result["val_loss"], "tokens": result["tokens"],
            "seconds": time.perf_counter() - started}


def supernet_run(job: dict[str, Any]) -> dict[str, Any]:
    """Train one supernet variant and score every candidate (and, for ``fair``, the fine-tuned
    scores and the scores of the per-decision pool)."""
    import torch

    from sla_nas import ArchSpec
    from sla_nas.proxy import Budget, score, train_supernet

    torch.set_num_threads(job["threads"])
    space = _space(job["space"])
    task = _task(space, job["val_tokens"])
    fields = job["budget"]
    per_step = 1 + (len({s.key for _, s in space.seeds}) if job["sandwich"] else 0)
    tokens = job["ratio"] * fields["tokens"] // per_step  # batch tokens; times archs per step
    budget = Budget(tokens=tokens, eval_at=(tokens,), batch_size=fields["batch_size"],
                    lr=fields["lr"], schedule=fields["schedule"])
    started = time.perf_counter()
    net, record = train_supernet(space, task, budget, seed=0, checkpoint=job["checkpoint"],
                                 sampling=job["sampling"], sandwich=job["sandwich"],
                                 split_projections=job["split"])
    # the steps' seconds over every call (a resumed supernet's earlier calls included), or
    # this call's wall time where the record has none
    train_seconds = record.get("train_seconds") or time.perf_counter() - started
    specs = {key: ArchSpec.from_json(text) for key, text in job["specs"].items()}
    scores, finetuned, seconds = {}, {}, []
    for key, spec in specs.items():
        out = score(net, spec, task, fields["batch_size"])
        scores[key] = out["val_loss"]
        seconds.append(out["seconds"])
    ft_seconds = []
    for key, spec in specs.items() if job["finetune_tokens"] else ():
        out = score(net, spec, task, fields["batch_size"], finetune_tokens=job["finetune_tokens"],
                    seed=0, lr=fields["lr"])
        finetuned[key] = out["val_loss"]
        ft_seconds.append(out["seconds"])
    pool = []
    for params, spec in sample_archs(space, job["pool"], 10_000):
        pool.append({"params": params, "score": score(net, spec, task,
                                                      fields["batch_size"])["val_loss"]})
    main_steps = budget.plan(task.seq_len)[0]
    return {"kind": "supernet", "id": job["id"], "part": job["part"], "variant": job["variant"],
            "status": record["status"], "scores": scores, "finetuned": finetuned,
            "finetune_tokens": job["finetune_tokens"], "pool": pool,
            "archs_per_step": per_step, "batch_tokens": tokens,
            "arch_tokens": tokens * per_step, "standalone_tokens": fields["tokens"],
            "main_steps": main_steps, "steps_per_s": record["steps_per_s"],
            "train_seconds": train_seconds, "score_seconds": statistics.mean(seconds),
            "finetune_seconds": statistics.mean(ft_seconds) if ft_seconds else None}


def subset_run(job: dict[str, Any]) -> dict[str, Any]:
    """The finished fair supernet (loaded from its checkpoint) scoring the candidates and the
    pool on ``score_tokens`` held-out tokens each (`score`'s evenly spaced sequences)."""
    import torch

    from sla_nas import ArchSpec
    from sla_nas.proxy import Budget, score, train_supernet

    torch.set_num_threads(job["threads"])
    space = _space(job["space"])
    task = _task(space, job["val_tokens"])
    fields = job["budget"]
    tokens = job["ratio"] * fields["tokens"]
    net, _ = train_supernet(space, task, Budget(
        tokens=tokens, eval_at=(tokens,), batch_size=fields["batch_size"], lr=fields["lr"],
        schedule=fields["schedule"]), seed=0, checkpoint=job["checkpoint"])
    specs = [ArchSpec.from_json(text) for text in job["specs"].values()]
    specs += [spec for _, spec in sample_archs(space, job["pool"], 10_000)]
    out = {}
    for n in [None, *job["score_tokens"]]:  # None: the whole held-out set, to compare with
        started = time.perf_counter()
        scores = {spec.key: score(net, spec, task, fields["batch_size"],
                                  score_tokens=n)["val_loss"] for spec in specs}
        out[str(n)] = {"scores": scores,
                       "seconds": (time.perf_counter() - started) / len(specs)}
    return {"kind": "subset", "id": job["id"], "part": job["part"], "subsets": out}


def jobs_of(part: Part, args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    """Every run of ``part``: supernets first (the longest), then standalone by seed."""
    val_tokens = 2048 if args.quick else None
    ident = json.dumps([part.budget, val_tokens], sort_keys=True)
    common = {"part": part.name, "space": part.space_path, "budget": part.budget, "threads": 1,
              "val_tokens": val_tokens}
    jobs = []
    for variant, (sampling, sandwich, split) in TRAINED.items():
        if variant not in args.variants:
            continue
        finetune = args.finetune_tokens if args.finetune_tokens is not None else \
            part.budget["tokens"] // 20
        digest = hashlib.sha256(ident.encode()).hexdigest()[:10]
        name = f"{part.name}-{variant}-r{args.ratio}-{digest}"
        jobs.append({**common, "kind": "supernet", "variant": variant, "sampling": sampling,
                     "sandwich": sandwich, "split": split, "ratio": args.ratio,
                     "specs": {_key(s): s for _, s in part.archs},
                     "finetune_tokens": finetune if variant == "fair" else 0,
                     "pool": args.pool if variant == "fair" else 0,
                     "checkpoint": str(folder / "supernets" / name),
                     "id": f"supernet|{part.name}|{variant}|{args.ratio}|{ident}|"
                           f"{sorted(_key(s) for _, s in part.archs)}|{finetune}|{args.pool}"})
    for seed in range(args.seeds):
        for label, text in part.archs:
            jobs.append({**common, "kind": "standalone", "arch": label, "spec": text,
                         "seed": seed, "id": f"standalone|{part.space_path}|{_key(text)}|"
                                             f"{seed}|{ident}"})
    return jobs


def _key(spec_json: str) -> str:
    from sla_nas import ArchSpec

    return ArchSpec.from_json(spec_json).key


def _run(job: dict[str, Any]) -> dict[str, Any]:
    return {"supernet": supernet_run, "subset": subset_run,
            "standalone": standalone_run}[job["kind"]](job)


def subset_jobs(jobs: list[dict[str, Any]], done: dict[str, dict[str, Any]],
                score_tokens: list[int]) -> list[dict[str, Any]]:
    """A `subset_run` per part whose fair supernet has finished (never beside its training:
    they would share its checkpoint)."""
    out = []
    for job in jobs:
        if job["kind"] == "supernet" and job["variant"] == "fair" and job["id"] in done \
                and score_tokens:
            out.append({**job, "kind": "subset", "score_tokens": score_tokens,
                        "pool": job["pool"], "id": f"subset|{job['id']}|{score_tokens}"})
    return out


# ---------------------------------------------------------------------- the analysis
def kendall_tau(a: list[float], b: list[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def bootstrap(a: list[float], b: list[float], n: int, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of tau over architectures resampled with replacement."""
    if n <= 0 or len(a) < 3:
        return math.nan, math.nan
    rng, taus = random.Random(seed), []
    for _ in range(n):
        idx = [rng.randrange(len(a)) for _ in a]
        tau = kendall_tau([a[i] for i in idx], [b[i] for i in idx])
        if math.isfinite(tau):
            taus.append(tau)
    if not taus:
        return math.nan, math.nan
    taus.sort()
    return taus[int(0.025 * (len(taus) - 1))], taus[int(0.975 * (len(taus) - 1))]


def per_decision(pool: list[dict[str, Any]], params: dict[str, dict[str, Any]],
                 scores: dict[str, float]) -> dict[str, float]:
    """Each candidate's additive score: the mean over all scored architectures plus, for each
    of its decisions, the mean score of the architectures taking its option minus that mean."""
    rows = pool + [{"params": params[k], "score": v} for k, v in scores.items()]
    rows = [r for r in rows if math.isfinite(r["score"])]
    mean = statistics.mean(r["score"] for r in rows)
    by_option: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        for name, value in r["params"].items():
            by_option.setdefault((name, json.dumps(value)), []).append(r["score"])
    effect = {k: statistics.mean(v) - mean for k, v in by_option.items()}
    return {key: mean + sum(effect[name, json.dumps(value)] for name, value in params[key].items())
            for key in scores}


def _tau_entry(score_list: list[float], loss: list[float], per_seed: list[list[float]],
               n_boot: int) -> dict[str, Any]:
    low, high = bootstrap(score_list, loss, n_boot)
    return {"tau": kendall_tau(score_list, loss), "low": low, "high": high,
            "tau_per_seed": [kendall_tau(score_list, s) for s in per_seed]}


def analyse(part: Part, rows: list[dict[str, Any]], seeds: int, n_boot: int) -> dict[str, Any]:
    keys = [_key(s) for _, s in part.archs]
    labels = dict(zip(keys, (label for label, _ in part.archs)))
    stand = {(r["key"], r["seed"]): r for r in rows if r["kind"] == "standalone"}
    losses = {k: [stand[k, s]["val_loss"] for s in range(seeds)] for k in keys}
    usable = [k for k in keys if all(math.isfinite(v) for v in losses[k])]
    mean = [statistics.mean(losses[k]) for k in usable]
    per_seed = [[losses[k][s] for k in usable] for s in range(seeds)]
    out: dict[str, Any] = {
        "architectures": [{"key": k, "label": labels[k], "losses": losses[k]} for k in keys],
        "excluded": [k for k in keys if k not in usable],
        "standalone_tokens": part.budget["tokens"], "budget": part.budget,
        "standalone_seconds": statistics.mean(r["seconds"] for r in stand.values()),
        "variants": {}}
    if seeds >= 2:
        low, high = bootstrap(per_seed[0], per_seed[1], n_boot)
        out["seed_tau"] = {"tau": kendall_tau(per_seed[0], per_seed[1]), "low": low,
                           "high": high}
    supernets = {r["variant"]: r for r in rows if r["kind"] == "supernet"}
    for variant in VARIANTS:
        source = supernets.get({"finetune": "fair", "per-decision": "fair"}.get(variant, variant))
        if source is None:
            continue
        if variant == "finetune":
            scores = source["finetuned"]
        elif variant == "per-decision":
            if not source["pool"] or not all(part.params.get(k) for k in keys):
                continue
            scores = per_decision(source["pool"], part.params, source["scores"])
        else:
            scores = source["scores"]
        if not scores:
            continue
        score_list = [scores[k] for k in usable]
        entry = _tau_entry(score_list, mean, per_seed, n_boot)
        entry.update(scores=dict(zip(usable, score_list)),
                     supernet_arch_tokens=source["arch_tokens"],
                     ratio=source["arch_tokens"] / source["standalone_tokens"],
                     train_seconds=source["train_seconds"],
                     score_seconds=source["finetune_seconds"] if variant == "finetune"
                     else source["score_seconds"], steps_per_s=source["steps_per_s"])
        if variant == "finetune":
            entry["finetune_tokens"] = source["finetune_tokens"]
        if variant == "per-decision":
            entry["pool"] = len(source["pool"])
        out["variants"][variant] = entry
    if all(part.params.get(k) for k in usable):  # the bias the README diagnoses
        own = [sum(v == "l" for n, v in part.params[k].items() if n.endswith("_src"))
               for k in usable]
        if len(set(own)) > 1:
            out["own_layer_reads_tau"] = {"standalone": kendall_tau(own, mean), **{
                v: kendall_tau(own, list(e["scores"].values()))
                for v, e in out["variants"].items()}}
    subset = next((r for r in rows if r["kind"] == "subset"), None)
    if subset is not None:
        full = subset["subsets"]["None"]
        keys_all = list(full["scores"])
        out["score_tokens"] = {n: {
            "seconds_per_candidate": e["seconds"],
            "tau_vs_whole_set": kendall_tau([e["scores"][k] for k in keys_all],
                                            [full["scores"][k] for k in keys_all]),
            "tau_vs_standalone": kendall_tau([e["scores"][k] for k in usable], mean),
            "architectures": len(keys_all)} for n, e in subset["subsets"].items()}
    return out


def _fmt(entry: dict[str, Any]) -> str:
    return f"{entry['tau']:+.2f} [{entry['low']:+.2f}, {entry['high']:+.2f}]"


def table(result: dict[str, Any]) -> str:
    lines = []
    for name, part in result["parts"].items():
        n = len(part["architectures"]) - len(part["excluded"])
        lines += [f"{name}: {n} architectures, standalone {part['standalone_tokens']:,} tokens "
                  f"x {result['seeds']} seeds ({part['standalone_seconds']:.0f} s a run)",
                  "| scores | tau vs mean loss [95 % CI] | tau per seed | supernet tokens | "
                  "train s | score s/arch |", "|---|---|---|---|---|---|"]
        if "seed_tau" in part:
            lines.append(f"| standalone seed 0 vs seed 1 (noise ceiling) | "
                         f"{_fmt(part['seed_tau'])} | | | | |")
        for variant, e in part["variants"].items():
            lines.append(f"| {variant} | {_fmt(e)} | "
                         + ", ".join(f"{t:+.2f}" for t in e["tau_per_seed"])
                         + f" | {e['supernet_arch_tokens']:,} ({e['ratio']:.1f}x) | "
                         f"{e['train_seconds']:.0f} | {e['score_seconds']:.2f} |")
        if part.get("own_layer_reads_tau"):
            lines += ["", "tau of the number of places reading their own layer with the "
                      "standalone loss and with each variant's score: " + ", ".join(
                          f"{v} {t:+.2f}" for v, t in part["own_layer_reads_tau"].items())]
        if part.get("score_tokens"):
            lines += ["", "| held-out tokens scored on | s/candidate | tau vs whole set | "
                      "tau vs standalone |", "|---|---|---|---|"]
            for n, e in part["score_tokens"].items():
                lines.append(f"| {'all' if n == 'None' else f'{int(n):,}'} | "
                             f"{e['seconds_per_candidate']:.3f} | "
                             f"{e['tau_vs_whole_set']:+.2f} | {e['tau_vs_standalone']:+.2f} |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------- main
def _record(row: dict[str, Any], runs: Path, done: dict[str, dict[str, Any]]) -> None:
    """Append a finished run to ``runs`` at once and say what it gave."""
    with runs.open("a") as f:
        f.write(json.dumps(row) + "\n")
    done[row["id"]] = row
    if row["kind"] == "supernet":
        what = (f"supernet {row['variant']:8s} {row['train_seconds']:.0f}s train "
                f"({row['steps_per_s']:.1f} steps/s), {row['score_seconds']:.2f}s/score")
    elif row["kind"] == "subset":
        what = "fair supernet on fewer held-out tokens: " + ", ".join(
            f"{n} {e['seconds']:.2f}s" for n, e in row["subsets"].items())
    else:
        what = (f"{row['arch'][:22]:22s} seed {row['seed']}  {row['seconds']:.0f}s  "
                f"val_loss {row['val_loss']:.4f}")
    print(f"  {row['part']:10s} {what}", flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny budgets and 4 architectures a set (a smoke test)")
    parser.add_argument("--parts", default="presets,quickstart",
                        help="comma-separated: presets, quickstart")
    parser.add_argument("--archs", type=int, help="architectures drawn from quickstart "
                        "(default 24; 4 with --quick)")
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of that draw")
    parser.add_argument("--seeds", type=int, default=2, help="paired standalone seeds")
    parser.add_argument("--tokens", type=int, help="standalone tokens (default: the set's)")
    parser.add_argument("--ratio", type=int, default=4,
                        help="supernet tokens (all architectures) per standalone run's")
    parser.add_argument("--finetune-tokens", type=int,
                        help="fine-tune per candidate (default: a twentieth of a run)")
    parser.add_argument("--variants", default=",".join(TRAINED),
                        help="comma-separated supernets to train (default all: "
                             f"{', '.join(TRAINED)}); finetune and per-decision come with fair")
    parser.add_argument("--pool", type=int, default=64,
                        help="extra architectures scored for the per-decision model")
    parser.add_argument("--score-tokens", default="",
                        help="comma-separated held-out token counts the finished fair "
                             "supernet also scores on (e.g. 2048,8192,32768): their speed and "
                             "tau against the whole set")
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples for intervals")
    parser.add_argument("--workers", type=int, default=2, help="runs at once (1 thread each)")
    parser.add_argument("--out", type=Path, help="the JSON result (default "
                        "benchmarks/out/one_shot_fidelity[-quick].json)")
    parser.add_argument("--runs", type=Path, help="finished runs, JSON lines (default: --out "
                        "with .runs.jsonl)")
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(args.parts) - {"presets", "quickstart"}
    if unknown or not args.parts:
        parser.error(f"--parts: expected presets and/or quickstart, got {sorted(unknown)}")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if set(args.variants) - set(TRAINED) or not args.variants:
        parser.error(f"--variants: expected some of {', '.join(TRAINED)}, got "
                     f"{sorted(set(args.variants) - set(TRAINED))}")
    try:
        args.score_tokens = [int(n) for n in args.score_tokens.split(",") if n.strip()]
    except ValueError:
        parser.error(f"--score-tokens: expected comma-separated integers, got "
                     f"{args.score_tokens!r}")
    if any(n < 1 for n in args.score_tokens):
        parser.error("--score-tokens: each at least 1")
    if args.seeds < 2:
        parser.error("--seeds: at least 2 (the noise ceiling is the tau between two seeds)")
    if args.quick:
        args.pool = min(args.pool, 6)
        args.bootstrap = min(args.bootstrap, 200)
    out = args.out or ROOT / "benchmarks" / "out" / (
        f"one_shot_fidelity{'-quick' if args.quick else ''}.json")
    runs = args.runs or out.with_suffix(".runs.jsonl")
    folder = out.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    parts = make_parts(args, folder)
    jobs = [j for part in parts for j in jobs_of(part, args, folder)]
    done: dict[str, dict[str, Any]] = {}
    if runs.exists():
        for line in runs.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line torn by a kill while written: rerun it
                continue
            done[row["id"]] = row
    todo = [j for j in jobs if j["id"] not in done]
    print(f"{len(jobs)} runs ({sum(j['kind'] == 'supernet' for j in jobs)} supernets), "
          f"{len(todo)} to do, {args.workers} at a time; finished runs go to {runs}", flush=True)
    with ProcessPoolExecutor(max(1, args.workers)) as pool:
        for batch in (todo, None):  # then the subset scorings of the finished fair supernets
            if batch is None:
                subsets = subset_jobs(jobs, done, args.score_tokens)
                jobs += subsets
                batch = [j for j in subsets if j["id"] not in done]
            futures = [pool.submit(_run, job) for job in batch]  # started in this order
            try:  # each run is written as it finishes: an interruption loses only those
                for future in as_completed(futures):  # in flight
                    _record(future.result(), runs, done)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    result = {"seeds": args.seeds, "ratio": args.ratio, "quick": args.quick,
              "parts": {part.name: analyse(part, [done[j["id"]] for j in jobs
                                                  if j["part"] == part.name], args.seeds,
                                           args.bootstrap) for part in parts}}
    out.write_text(json.dumps(result, indent=1))
    print(table(result))
    print(f"written: {out}")
    return result


if __name__ == "__main__":
    main()
