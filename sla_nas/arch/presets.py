"""Published cross-layer connectivity patterns as points of the spec (docs/CONNECTIVITY.md).

Each preset is a function of the model dimensions that *returns an ArchSpec*: connectivity is
data, never a model flag. ``names()`` lists the registered presets and ``get(name, **dims)``
builds one; dimension keywords are those of `Dims.create` (defaults: 4 layers, d_model 128,
4 heads, one head group per K/V head, 256-byte vocabulary, seq_len 128).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._genes import did_you_mean
from ._spec import ArchSpec, Dims

__all__ = ["names", "get", "load_arch", "VANILLA", "vanilla", "sla", "cla", "kv_sharing", "yoco",
           "skipv1former", "svformer", "value_residual", "last_layer_shortcut"]


VANILLA = "vanilla"  # the baseline preset: results are compared with it (see sla_nas.results)


def vanilla(dims: Dims) -> ArchSpec:
    """Every group reads its own layer. Vaswani et al., 2017, "Attention Is All You Need"."""
    return ArchSpec.create(dims)


def sla(dims: Dims, skip_groups: int | None = None, distance: int = 2,
        mode: str = "reproject") -> ArchSpec:
    """Skip heads: in every layer l >= distance, the last ``skip_groups`` head groups take K and
    V from layer l - distance (reprojected by the layer's own W_K/W_V, or reused).
    Chen et al., 2024, "Skip-Layer Attention: Bridging Abstract and Detailed Dependencies in
    Transformers" (arXiv:2406.11274)."""
    skip_groups = max(1, dims.n_groups // 2) if skip_groups is None else skip_groups
    if not 1 <= skip_groups <= dims.n_groups:
        raise ValueError(f"skip_groups must be in 1..{dims.n_groups}, got {skip_groups}")
    if not 1 <= distance < dims.n_layers:
        raise ValueError(f"distance must be in 1..{dims.n_layers - 1}, got {distance}")
    groups = list(range(dims.n_groups - skip_groups, dims.n_groups))
    return ArchSpec.create(dims, [{"layers": f"{distance}-{dims.n_layers - 1}", "groups": groups,
                                   "kv": {"sources": [f"l-{distance}"], "mode": mode}}])


def cla(dims: Dims, sharing: int = 2) -> ArchSpec:
    """Cross-layer attention: blocks of ``sharing`` layers reuse the K/V of the block's first
    layer. Brandon et al., 2024, "Reducing Transformer Key-Value Cache Size with Cross-Layer
    Attention" (arXiv:2405.12981)."""
    if not 2 <= sharing <= dims.n_layers:
        raise ValueError(f"sharing must be in 2..{dims.n_layers}, got {sharing}")
    kv_map = [l - l % sharing for l in range(dims.n_layers)]
    return _from_kv_map(dims, kv_map)


def _kv_layers(n_layers: int, partition: str, n_kv: int) -> list[int]:
    """The layers that keep their own K/V in a pizza (bottom) or sandwich (bottom and top)."""
    if partition == "pizza":
        return list(range(n_kv))
    bottom = (n_kv + 1) // 2
    return list(range(bottom)) + list(range(n_layers - (n_kv - bottom), n_layers))


def kv_sharing(dims: Dims, partition: str = "pizza", target: str = "bottom",
               kv_layers: int | None = None) -> ArchSpec:
    """A KV-sharing map kv(l): ``kv_layers`` layers keep their own K/V, the others reuse the
    K/V of one of them. ``pizza``: the KV layers are the bottom ones; ``sandwich``: bottom and
    top; ``lasagna``: one layer of every block of L/kv_layers layers. ``target`` picks the
    bottom, middle or top one among the KV layers (for lasagna: within each block); maps that
    would read a layer above (kv(l) > l) need iterative training and are rejected.
    Wu, Wu & Tu, 2024, "A Systematic Study of Cross-Layer KV Sharing for Efficient LLM
    Inference" (arXiv:2410.14442)."""
    n_kv = max(1, dims.n_layers // 2) if kv_layers is None else kv_layers
    if partition not in ("pizza", "sandwich", "lasagna"):
        raise ValueError(f"partition must be pizza, sandwich or lasagna, got {partition!r}")
    if target not in ("bottom", "middle", "top"):
        raise ValueError(f"target must be bottom, middle or top, got {target!r}")
    if not 1 <= n_kv < dims.n_layers or (partition == "lasagna" and dims.n_layers % n_kv):
        raise ValueError(f"kv_layers must be in 1..{dims.n_layers - 1}"
                         f"{' and divide n_layers' if partition == 'lasagna' else ''}, "
                         f"got {n_kv}")
    pick = {"bottom": 0, "middle": None, "top": -1}[target]
    if partition == "lasagna":  # each block of L/kv_layers layers shares one of its layers
        block = dims.n_layers // n_kv
        pools = [list(range(l - l % block, l - l % block + block)) for l in range(dims.n_layers)]
        kv_map = [pool[(len(pool) - 1) // 2] if pick is None else pool[pick] for pool in pools]
    else:
        kv = _kv_layers(dims.n_layers, partition, n_kv)
        target_layer = kv[(len(kv) - 1) // 2] if pick is None else kv[pick]
        kv_map = [l if l in kv else target_layer for l in range(dims.n_layers)]
    above = [(l, t) for l, t in enumerate(kv_map) if t > l]
    if above:
        l, t = above[0]
        raise ValueError(f"{partition}-{target} makes layer {l} read layer {t} above it; "
                         f"sources above a layer are out of scope")
    return _from_kv_map(dims, kv_map)


def _from_kv_map(dims: Dims, kv_map: list[int]) -> ArchSpec:
    rules = [{"layers": [l], "kv": {"sources": [t], "mode": "reuse"}}
             for l, t in enumerate(kv_map) if t != l]
    return ArchSpec.create(dims, rules)


def yoco(dims: Dims) -> ArchSpec:
    """YOCO-like split: the lower half keeps its own K/V, the upper half reuses the K/V of the
    first upper layer. Sun et al., 2024, "You Only Cache Once: Decoder-Decoder Architectures
    for Language Models" (arXiv:2405.05254)."""
    half = dims.n_layers // 2
    return _from_kv_map(dims, [l if l <= half else half for l in range(dims.n_layers)])


def skipv1former(dims: Dims) -> ArchSpec:
    """From layer 1 on, the second half of the V head groups reuse layer 0's V; K unchanged.
    Wu, Zhang et al., 2025, "Improving Model Representation and Reducing KV Cache via Skip
    Connections with First Value Heads" (arXiv:2510.16807)."""
    if dims.n_groups < 2:
        raise ValueError(f"skipv1former needs n_groups >= 2, got {dims.n_groups}")
    groups = list(range(dims.n_groups // 2, dims.n_groups))
    return ArchSpec.create(dims, [{"layers": f"1-{dims.n_layers - 1}", "groups": groups,
                                   "v": {"sources": [0], "mode": "reuse"}}])


def svformer(dims: Dims) -> ArchSpec:
    """Single-value transformer: every layer reuses layer 0's V; own K. Zhou et al., 2024,
    "Value Residual Learning For Alleviating Attention Concentration In Transformers"
    (arXiv:2410.17897)."""
    return ArchSpec.create(dims, [{"layers": f"1-{dims.n_layers - 1}",
                                   "v": {"sources": [0], "mode": "reuse"}}])


def value_residual(dims: Dims, learned: bool = False) -> ArchSpec:
    """ResFormer: V_l <- 1/2 (V_l + V_0) for l >= 1, or learned weights starting at 1/2.
    Zhou et al., 2024, "Value Residual Learning For Alleviating Attention Concentration In
    Transformers" (arXiv:2410.17897)."""
    return ArchSpec.create(dims, [{"layers": f"1-{dims.n_layers - 1}", "v": {
        "sources": [0, "l"], "mode": "reuse", "combine": "mix", "weights": [0.5, 0.5],
        "learned": learned}}])


def last_layer_shortcut(dims: Dims, sources: list[int] | None = None) -> ArchSpec:
    """The last layer attends over the concatenated tokens of several earlier layers' states
    (reprojected; default: layer 0, the middle layer and itself). Layerwise shortcut
    connections in the spirit of DenseFormer, Pagliardini et al., 2024, "DenseFormer:
    Enhancing Information Flow in Transformers via Depth Weighted Averaging"
    (arXiv:2402.02622)."""
    last = dims.n_layers - 1
    if last < 1:
        raise ValueError("last_layer_shortcut needs at least 2 layers")
    chosen = sorted({0, dims.n_layers // 2, last}) if sources is None else sources
    return ArchSpec.create(dims, [{"layers": [last], "kv": {"sources": chosen,
                                                            "combine": "concat"}}])


_REGISTRY: dict[str, Callable[[Dims], ArchSpec]] = {
    VANILLA: vanilla,
    "sla-reproject": lambda d: sla(d, mode="reproject"),
    "sla-reuse": lambda d: sla(d, mode="reuse"),
    "cla2": lambda d: cla(d, 2),
    "kv-pizza-bottom": lambda d: kv_sharing(d, "pizza", "bottom"),
    "kv-pizza-middle": lambda d: kv_sharing(d, "pizza", "middle"),
    "kv-pizza-top": lambda d: kv_sharing(d, "pizza", "top"),
    "kv-sandwich-bottom": lambda d: kv_sharing(d, "sandwich", "bottom"),
    "kv-sandwich-middle": lambda d: kv_sharing(d, "sandwich", "middle"),
    "kv-lasagna-bottom": lambda d: kv_sharing(d, "lasagna", "bottom"),
    "yoco": yoco,
    "skipv1former": skipv1former,
    "svformer": svformer,
    "value-residual": value_residual,
    "value-residual-learned": lambda d: value_residual(d, learned=True),
    "last-layer-shortcut": last_layer_shortcut,
}


def names() -> list[str]:
    """The registered preset names, in a stable order."""
    return list(_REGISTRY)


def get(name: str, **dims: Any) -> ArchSpec:
    """Build preset ``name`` at the given dimensions (keywords of `Dims.create`)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown preset {name!r}{did_you_mean(name, names())}; "
                         f"known: {', '.join(names())}")
    return _REGISTRY[name](Dims.create(**dims))


def load_arch(name_or_path: str | Path, **dims: Any) -> ArchSpec:
    """A preset name, built at ``dims``, or a spec file (``.yaml``/``.yml``/``.json``): what a
    user names an architecture by on the command line. Dimension keywords apply to presets
    only; a file carries its own dims, and silently ignoring them would train something else."""
    if str(name_or_path) in _REGISTRY:
        return get(str(name_or_path), **dims)
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml", ".json") or path.exists():
        if not path.exists():  # a FIFO or a device exists: `ArchSpec.load` says what it is
            raise ValueError(f"{path}: no such file")
        if dims:
            raise ValueError(f"{path}: dimension flags apply to presets only; edit the file's "
                             f"dims instead")
        return ArchSpec.load(path)
    return get(str(name_or_path))  # raises "unknown preset ... (did you mean ...)"
