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
from sla_nas.proxy._supernet_train import SUPERNET_STATE, _Chooser
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
    for name, p in own.items():
        if name.endswith((".wk", ".wv")):  # the rows of the groups that own a projection
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


def test_resume_is_the_uninterrupted_run(tiny, tmp_path):
    task, b = tiny_task(), budget(40)
    kwargs = dict(archs_per_step=2, sandwich=True, device="cpu")
    whole, record = train_supernet(tiny, task, b, seed=3, **kwargs)
    assert record["status"] == "ok" and len(record["history"]) == 2
    assert record["archs_trained"] == 40 * 4 and len(whole.mix) > 0

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
    resumed.drop_mix(0)  # created again: from the gene's weights, not from trained ones
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
