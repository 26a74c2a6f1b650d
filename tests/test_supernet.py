"""The weight-sharing supernet: exactly the standalone model with the same weights, started from
the same weights, fair sampling, resumable training, scoring."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch

from sla_nas.arch import ArchSpec, presets
from sla_nas.model import build_model
from sla_nas.proxy import Budget, Supernet, evaluate, make_task, score, train_supernet
from sla_nas.proxy._supernet_train import SUPERNET_STATE, _Chooser, held_out
from sla_nas.space import SearchSpace

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]

# A small space with every gene kind: embedding sources, reuse, concat, fixed and learned mixes,
# K and V searched apart, GQA (n_groups < n_kv_heads < n_heads) and rope.
TINY = """
name: tiny
model: {vocab_size: 32, d_model: 16, n_layers: 3, n_heads: 4, n_kv_heads: 2, n_groups: 2,
        seq_len: 16, pos: rope}
connectivity:
  layers: 1-2
  streams: separate
  sources: {embedding: true}
  max_sources: 2
  modes: [reproject, reuse]
  combines: [select, concat, mix]
  mix_weights: [fixed, learned]
seeds: [vanilla, value-residual]
objectives: [{metric: val_loss, mode: min}]
task: {name: mqar, n_pairs: 2}
"""


def space_file(tmp_path: Path, text: str) -> SearchSpace:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return SearchSpace.from_yaml(path)


@pytest.fixture
def tiny(tmp_path: Path) -> SearchSpace:
    return space_file(tmp_path, TINY)


def tiny_task():
    return make_task("mqar", 16, n_pairs=2, vocab_size=32, val_tokens=256)


def check_exact(net: Supernet, spec, seed: int, idx: torch.Tensor, targets: torch.Tensor) -> None:
    """Initial weights, logits and gradients of the shared weights equal the standalone
    model's."""
    model = build_model(spec, seed)
    inherited, own = net.weights(spec), dict(model.named_parameters())
    assert set(inherited) == set(own)
    for name, p in own.items():  # same seeds per name and per group: the same initial weights
        assert torch.equal(inherited[name], p), (spec.key, name)
    net.zero_grad(set_to_none=True)
    logits, loss = model(idx, targets)
    mine = net(idx, spec)
    assert torch.allclose(mine, logits, rtol=0, atol=1e-6), (spec.key,
                                                             (mine - logits).abs().max())
    loss.backward()
    net.loss(idx, targets, spec).backward()
    gd = spec.dims.group_kv_dim
    shared = dict(net.base.named_parameters())
    split = {name: how[2] for name, how in net.skeleton(spec)[1] if how[0] == "own"}
    for name, p in own.items():
        if name in split:  # each group's rows: their own copy's gradient
            start = 0
            for key, a, b in split[name]:
                torch.testing.assert_close(net.own[key].grad, p.grad[start:start + b - a],
                                           rtol=0, atol=1e-7, msg=(spec.key, name, key))
                start += b - a
            assert start == p.shape[0] and shared[name].grad is None
        elif name.endswith((".wk", ".wv")):  # the rows of the groups that own a projection
            grad = shared[name].grad
            attn = model.blocks[int(name.split(".")[1])].attn
            owners = attn.owners[name[-1]]
            for i, g in enumerate(owners):
                torch.testing.assert_close(grad[g * gd:(g + 1) * gd], p.grad[i * gd:(i + 1) * gd],
                                           rtol=0, atol=1e-7)
            for g in set(range(spec.dims.n_groups)) - set(owners):  # unused rows: no gradient
                assert not grad[g * gd:(g + 1) * gd].any()
        else:
            grad = inherited[name].grad if ".mix." in name or name == "ln_e.weight" \
                else shared[name].grad
            torch.testing.assert_close(grad, p.grad, rtol=0, atol=1e-7, msg=(spec.key, name))


def test_quickstart_presets_are_exact():
    space = SearchSpace.from_yaml(ROOT / "search_spaces" / "quickstart.yaml")
    dims = space.dims_choices[0]
    specs = {}
    for name in presets.names():  # every preset the space can produce, and its seeds
        try:
            spec = presets.get(name, **dataclasses.asdict(dims))
        except ValueError:
            continue
        if space.params_for(spec) is not None:
            specs[name] = spec
    specs.update(space.seeds)
    assert {"vanilla", "cla2", "sla-reuse", "yoco", "kv-pizza-middle"} <= set(specs)
    net = Supernet(space, seed=5)
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 256, (2, 24), generator=gen)
    targets = torch.randint(0, 256, (2, 24), generator=gen)
    for spec in specs.values():
        check_exact(net, spec, 5, idx, targets)


def test_random_full_specs_are_exact():
    space = SearchSpace.from_yaml(ROOT / "search_spaces" / "full.yaml")
    net = Supernet(space, seed=1)
    rng = random.Random(7)
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 256, (2, 12), generator=gen)
    targets = torch.randint(0, 256, (2, 12), generator=gen)
    kinds = set()
    for _ in range(20):
        spec = space.random_spec(rng)
        kinds |= {(g.mode, g.combine, g.learned) for _, _, _, g in spec.genes()}
        check_exact(net, spec, 1, idx, targets)
    assert {("reuse", "select", False), ("reproject", "concat", False),
            ("reproject", "mix", True)} <= kinds  # the samples cover the gene kinds
    assert net.ln_e is not None and len(net.mix) > 0


def test_tiny_space_exact_and_mix_shared(tiny):
    net = Supernet(tiny, seed=2)
    rng = random.Random(3)
    idx = torch.randint(0, 32, (3, 16))
    for _ in range(15):
        check_exact(net, tiny.random_spec(rng), 2, idx, idx.roll(1, 1))
    for key, (l, s, g, gene) in net.mix_genes.items():  # one vector per (layer, stream,
        assert gene.learned and key.startswith(f"l{l}_{s}{g}_")  # group, option)
    assert len(set(net.mix_genes.values())) == len(net.mix)


def test_split_projections_are_exact_and_per_option(tiny):
    net = Supernet(tiny, seed=2, split_projections=True)
    rng = random.Random(4)
    idx = torch.randint(0, 32, (3, 16))
    specs = [tiny.random_spec(rng) for _ in range(12)]
    for spec in specs:
        check_exact(net, spec, 2, idx, idx.roll(1, 1))
    assert not net.base.blocks[1].attn.wq.weight.requires_grad or \
        net.base.blocks[1].attn.wq.weight.grad is None  # the shared projections stay unused
    # one copy per (layer, group, gene): two architectures share a group's query rows exactly
    # when that group's K gene is the same
    a, b = specs[0], specs[1]
    plans = [dict(net.skeleton(s)[1]) for s in (a, b)]
    for g in range(a.dims.n_groups):
        same = a.gene(1, g, "k") == b.gene(1, g, "k")
        qa, qb = (p["blocks.1.attn.wq.weight"][2][g][0] for p in plans)
        assert (qa == qb) == same
    kinds = {key[0] for key in net.own}
    assert kinds == {"q", "k", "v"}
    assert len(net.created()) == len(net.own) + len(net.mix)
    # the plain supernet's view of the same weights holds only what `base` holds
    assert Supernet(tiny, seed=2).own.keys() == set()


def test_a_tampered_list_of_created_weights_is_refused_before_allocating(tiny, monkeypatch):
    net = Supernet(tiny, seed=0, split_projections=True)
    gd, d = net.dims.group_kv_dim, net.dims.d_model
    good = [("own", "q1_0_" + "a" * 12, [d // 2, d]), ("own", "k2_1_" + "b" * 12, [gd, d]),
            ("mix", "l1_v0_" + "c" * 12, [3])]
    net.ensure_created(good)
    assert [w for w, *_ in net.created()] == ["own", "own", "mix"]
    for bad in ([("own", "q1_0_" + "a" * 12, [2**34, d])],  # a huge shape
                [("own", "q9_0_" + "a" * 12, [d // 2, d])],  # no layer 9
                [("mix", "l1_v0_" + "c" * 12, [2**40])],  # longer than any gene's sources
                [("own", "../etc_passwd", [1])], [("mix",)], ["mix"],
                [("own", "q1_0_" + "a" * 12, ["8", d])]):
        with pytest.raises(ValueError, match="not a weight this supernet creates"):
            Supernet(tiny, seed=0).ensure_created(bad)
    monkeypatch.setenv("SLA_NAS_MAX_MODEL_BYTES", str(100 * gd * d * 4))
    many = [("own", f"k1_0_{i:012x}", [gd, d]) for i in range(101)]  # each fine, too many
    with pytest.raises(ValueError, match="over the limit"):
        Supernet(tiny, seed=0).ensure_created(many)


def test_split_copies_stop_at_the_model_size_limit(tiny, monkeypatch):
    net = Supernet(tiny, seed=0, split_projections=True)
    base = sum(p.numel() for p in net.parameters())
    rng = random.Random(1)
    monkeypatch.setenv("SLA_NAS_MAX_MODEL_BYTES", str(16 * base + 1000 * 4))  # a few copies
    with pytest.raises(ValueError, match="split projections: the supernet of space 'tiny' has "
                                         "grown to .* over the limit"):
        for _ in range(50):
            net.weights(tiny.random_spec(rng))
    assert 0 < 16 * sum(p.numel() for p in net.parameters()) <= 16 * base + 4000


def test_searched_dims_are_refused(tmp_path):
    space = space_file(tmp_path, TINY.replace("d_model: 16", "d_model: [16, 32]"))
    with pytest.raises(ValueError, match=r"model\.d_model"):
        Supernet(space)
    quickstart = Supernet(SearchSpace.from_yaml(ROOT / "search_spaces" / "quickstart.yaml"))
    idx = torch.zeros(1, 4, dtype=torch.long)
    dims = dataclasses.asdict(quickstart.dims)
    with pytest.raises(ValueError, match="reads the token embedding"):
        quickstart(idx, ArchSpec.create(quickstart.dims, [{"layers": [1], "kv": {
            "sources": ["e"]}}]))
    with pytest.raises(ValueError, match="other dimensions"):
        quickstart(idx, presets.get("vanilla", **dict(dims, d_ff=128)))


def test_skeletons_are_bounded_and_standalone_copies(tiny):
    net = Supernet(tiny, seed=0, max_skeletons=2)
    rng = random.Random(0)
    specs = [tiny.random_spec(rng) for _ in range(4)]
    for spec in specs:
        net(torch.zeros(1, 4, dtype=torch.long), spec)
    assert len(net._skeletons) == 2
    with torch.no_grad():
        net.base.blocks[1].attn.wq.weight.add_(1.0)  # weights that differ from the seed's
    model = net.standalone(specs[0])
    idx = torch.randint(0, 32, (2, 16))
    assert torch.equal(model(idx)[0], net(idx, specs[0]))
    model.blocks[0].attn.wq.weight.data.zero_()  # a copy: the supernet is unchanged
    assert net.base.blocks[0].attn.wq.weight.abs().sum() > 0


def test_fair_sampling_balances_every_decision(tiny):
    counts: dict = {}
    for step in range(300):
        tiny.sample(_Chooser(counts, random.Random(f"0:{step}:0"), fair=True))
    for name, used in counts.items():  # every option of every decision, whenever it is asked
        assert max(used.values()) - min(used.values()) <= 1, (name, used)
    assert len(counts["L1.g0.k_src"]) > 3
    # deterministic given the seed: pinned for a small case (6 source sets, 8 draws: each
    # once, then two of them again)
    pinned: dict = {}
    for step in range(8):
        tiny.sample(_Chooser(pinned, random.Random(f"0:{step}:0"), fair=True))
    assert pinned["L1.g0.k_src"] == {"l": 2, "l-1": 1, "e": 2, "e+l-1": 1, "l-1+l": 1,
                                     "e+l": 1}
    assert pinned["L1.g0.v_mode"] == {"reuse": 2, "reproject": 1}
    uniform: dict = {}
    for step in range(300):
        tiny.sample(_Chooser(uniform, random.Random(f"0:{step}:0"), fair=False))
    assert max(max(u.values()) - min(u.values()) for u in uniform.values()) > 1


def budget(steps: int, batch: int = 4) -> Budget:
    """``steps`` main-run steps at seq_len 16, evaluated twice."""
    tokens = round(steps * 1.2) * batch * 16
    return Budget(tokens=tokens, batch_size=batch, eval_every=steps // 2 * batch * 16, lr=1e-2)


@pytest.mark.parametrize("split, schedule, sampling, sandwich, steps", [
    (False, "wsd", "fair", True, 40), (True, "wsd", "balanced", True, 40),
    # cosine, few steps, no sandwich: evaluating the seeds creates weights in the main run
    (True, "cosine", "fair", False, 4)])
def test_resume_is_the_uninterrupted_run(tiny, tmp_path, split, schedule, sampling, sandwich,
                                         steps):
    task, b = tiny_task(), dataclasses.replace(budget(steps), schedule=schedule)
    kwargs = dict(archs_per_step=2, sandwich=sandwich, device="cpu", split_projections=split,
                  sampling=sampling)
    whole, record = train_supernet(tiny, task, b, seed=3, **kwargs)
    assert record["status"] == "ok" and len(record["history"]) == 2
    main_steps = steps if schedule == "wsd" else round(steps * 1.2)  # cosine: no cooldown
    assert record["archs_trained"] == main_steps * (4 if sandwich else 2)
    assert len(whole.mix) > 0
    assert (len(whole.own) > 0) == split and record["split_projections"] == split

    class Killed(Exception):
        pass

    def die(metrics):
        raise Killed

    with pytest.raises(Killed):
        train_supernet(tiny, task, b, seed=3, checkpoint=tmp_path / "ck", report=die, **kwargs)
    assert (tmp_path / "ck" / SUPERNET_STATE).exists()
    resumed, again = train_supernet(tiny, task, b, seed=3, checkpoint=tmp_path / "ck",
                                    **kwargs)
    a, r = whole.state_dict(), resumed.state_dict()
    assert list(a) == list(r)
    assert all(torch.equal(a[k], r[k]) for k in a)
    assert again["counts"] == record["counts"]
    spec = next(m.spec for m, _ in resumed._skeletons.values()  # a trained architecture
                if any(g.learned for *_, g in m.spec.genes()))
    resumed.drop_created(0)  # created again: from the gene's weights, not from trained ones
    fresh = dict(build_model(spec, 3).named_parameters())
    assert all(torch.equal(w, fresh[name]) for name, w in resumed.weights(spec).items()
               if ".mix." in name)
    assert [h["val_loss"] for h in again["history"]] == [h["val_loss"] for h in record["history"]]
    with pytest.raises(ValueError, match="another supernet run"):
        train_supernet(tiny, task, b, seed=4, checkpoint=tmp_path / "ck", **kwargs)


def test_training_counts_are_fair_and_score_is_the_standalone_evaluation(tiny):
    task = tiny_task()
    net, record = train_supernet(tiny, task, budget(30), seed=0, device="cpu")
    assert record["archs_trained"] == 30 and record["tokens_trained"] == 30 * 4 * 16
    for name, used in record["counts"].items():
        assert max(used.values()) - min(used.values()) <= 1, (name, used)
    spec = tiny.random_spec(random.Random(5))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = score(net, spec, task, batch_size=8)
    expected = evaluate(net.standalone(spec), task, 8)
    assert result["val_loss"] == pytest.approx(expected["val_loss"], abs=1e-6)
    assert result["val_acc"] == pytest.approx(expected["val_acc"], abs=1e-9)
    tuned = score(net, spec, task, batch_size=8, finetune_tokens=8 * 16 * 5)
    assert tuned["finetune_tokens"] == 8 * 16 * 5 and tuned["val_loss"] != result["val_loss"]
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_score_tokens_scores_on_evenly_spaced_held_out_sequences(tiny):
    task = tiny_task()  # 256 held-out tokens: 16 sequences of 16
    whole = torch.cat([x for x, _ in task.val_batches(5)])
    assert len(whole) == 16
    picked = held_out(task, 2, score_tokens=64)  # 4 sequences: 0, 5, 10, 15
    assert [len(x) for x, _ in picked] == [2, 2]
    assert torch.equal(torch.cat([x for x, _ in picked]), whole[[0, 5, 10, 15]])
    assert len(held_out(task, 4, score_tokens=1)[0][0]) == 1  # at least one sequence
    assert torch.equal(torch.cat([x for x, _ in held_out(task, 3, 10**9)]), whole)
    net = Supernet(tiny, seed=0)
    spec = tiny.random_spec(random.Random(2))
    part = score(net, spec, task, batch_size=2, score_tokens=64)["val_loss"]
    model = net.standalone(spec).eval()
    with torch.no_grad():
        losses = [model(x, y)[1].item() for x, y in picked]
    assert part == pytest.approx(sum(losses) / len(losses), abs=1e-6)
    assert part != score(net, spec, task, batch_size=2)["val_loss"]


def test_balanced_sampling_trains_every_gene_equally_often():
    """Fair per decision draws a quickstart layer's "own layer" (no mode asked) a third of the
    time, and a reuse that resolves to an older owner rarely; balanced draws each of the six
    genes a place can get (own; 1 or 2 back, reprojected; reused, resolved to the owner) within
    a few draws of a sixth."""
    from types import SimpleNamespace

    from sla_nas.proxy._supernet_train import _SupernetRun

    space = SearchSpace.from_yaml(ROOT / "search_spaces" / "quickstart.yaml")

    def gene_counts(draw) -> dict:
        out: dict = {}
        for step in range(600):
            for l, g, s, gene in draw(random.Random(f"0:{step}:0")).genes():
                if s == "k" and l == 3:
                    out.setdefault(g, {}).setdefault(gene, 0)
                    out[g][gene] += 1
        return out

    drawn: dict = {}
    fair = gene_counts(lambda rng: space.sample(_Chooser(drawn, rng, fair=True)))
    run = SimpleNamespace(space=space, counts={}, gene_counts={})
    balanced = gene_counts(lambda rng: _SupernetRun._balanced(run, rng))
    for g in (0, 1):
        assert len(fair[g]) == len(balanced[g]) == 6
        own = [n for gene, n in fair[g].items() if gene.sources == (3,)]
        assert own == [200] and min(fair[g].values()) < 70
        assert 95 <= min(balanced[g].values()) <= max(balanced[g].values()) <= 105, balanced[g]
    assert sum(run.counts["L3.g0.kv_src"].values()) == 600  # its decisions are counted too
