"""The Hugging Face export of a winner (``sla-nas export --format hf``): a folder ``hf/`` that
``transformers.AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`` loads.

It holds ``config.json`` (the dimensions, the gene table the model is built from, the whole
``ArchSpec`` and ``auto_map``), ``configuration_sla_nas.py`` (templates/, a config class),
``modeling_sla_nas.py`` (sla_nas/model.py verbatim, as in the plain export's ``model.py``,
followed by the transformers wrapper of templates/modeling_sla_nas_tail.py.txt: generation with
the architecture's own `KVCache`), ``model.safetensors`` (the wrapper's state dict; a tied
``lm_head`` is left out as transformers does), ``generation_config.json`` and ``README.md`` (the
model card with the hub's metadata header). The two Python files need torch and transformers,
not sla-nas.

Before the folder is accepted, its files are loaded back (the generated package imported from
the folder, without byte-code files and without transformers' module cache, so nothing is
written outside the export folder) and checked: logits equal to sla-nas's within `HF_ATOL`
(fp32), greedy ``generate`` equal to `SlaModel.generate` token for token.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import secrets
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from sla_nas.arch import ArchSpec, atomic_write
from sla_nas.model import SlaModel, build_model

from ._card import Provenance, model_card
from ._modelfile import model_py

__all__ = ["EXPORT_FORMATS", "HF_ATOL", "HF_FOLDER", "MODEL_TYPE", "require_hf", "write_hf",
           "hf_files", "hf_card", "import_hf_folder"]

EXPORT_FORMATS = ("plain", "hf", "all")  # model.py and its weights; hf/; both
HF_ATOL = 1e-6  # fp32 logits of the Hugging Face model against sla-nas's
HF_FOLDER = "hf"  # the Hugging Face folder inside an exported rank folder
MODEL_TYPE = "sla_nas"
_TEMPLATES = Path(__file__).with_name("templates")
_CONFIG_PY, _MODELING_PY = "configuration_sla_nas.py", "modeling_sla_nas.py"
_CLASS = "SlaNasForCausalLM"
_MAIN = '\n\nif __name__ == "__main__":'  # model.py's script part, left out of the module


def require_hf() -> None:
    """Fail before any work when transformers is not installed (one line, exit status 2)."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ValueError("--format hf needs transformers: pip install 'sla-nas[hf]'") from None


def _config(spec: ArchSpec) -> dict[str, Any]:
    """config.json's fields: the dimensions, the gene table, the spec, how to load it."""
    import transformers

    genes = [[[_gene(genes.k), _gene(genes.v)] for genes in row] for row in spec.layers]
    return {"model_type": MODEL_TYPE, **dataclasses.asdict(spec.dims),
            "tie_word_embeddings": spec.dims.tie_embeddings, "genes": genes,
            "spec": spec.to_dict(), "transformers_version": transformers.__version__,
            "spec_key": spec.key, "architectures": [_CLASS], "dtype": "float32",
            "bos_token_id": None, "eos_token_id": None,
            "auto_map": {"AutoConfig": f"{_CONFIG_PY[:-3]}.SlaNasConfig",
                         "AutoModelForCausalLM": f"{_MODELING_PY[:-3]}.{_CLASS}"}}


def _gene(gene: Any) -> dict[str, Any]:
    return {"sources": list(gene.sources), "mode": gene.mode, "combine": gene.combine,
            "weights": None if gene.weights is None else list(gene.weights),
            "learned": bool(gene.learned)}


def modeling_py(spec: ArchSpec, prov: Provenance) -> str:
    """modeling_sla_nas.py: the plain export's model.py (sla_nas/model.py with this
    architecture's docstring and table) without its script part, then the wrapper."""
    text = model_py(spec, prov)
    if _MAIN in text:
        text = text[:text.index(_MAIN)] + "\n"
        if "sys." not in text.split('"""', 2)[2]:  # only the script part used it
            text = text.replace("\nimport sys\n", "\n", 1)
    return text + (_TEMPLATES / "modeling_sla_nas_tail.py.txt").read_text()


def hf_card(spec: ArchSpec, prov: Provenance, name: str) -> str:
    """README.md of the HF folder: the hub's metadata header, how to load it with
    transformers, then the plain export's card (its connectivity, costs, search result and
    provenance), whose own 'Use it' and 'Files' sections are about the plain files."""
    card = model_card(spec, prov, name)
    header = ("---\nlibrary_name: transformers\npipeline_tag: text-generation\n"
              "tags:\n- sla-nas\n- cross-layer-attention\n- custom_code\n---\n\n")
    use = ("## Use it\n\nWith PyTorch and transformers (not sla-nas):\n\n```python\n"
           "from transformers import AutoModelForCausalLM\n"
           f"model = AutoModelForCausalLM.from_pretrained(\"{name}/{HF_FOLDER}\",  # or its "
           "hub repository\n                                             trust_remote_code=True)\n"
           "out = model.generate(input_ids, max_new_tokens=8, do_sample=False)\n```\n\n"
           "`model(input_ids, labels=input_ids).loss` trains it. `generate` keeps the "
           "architecture's own KV cache (`SlaNasCache`), which holds only the keys and values "
           "no other layer holds: kv_cache_bytes_per_token in the Costs table (there at 2 "
           "bytes per element). "
           + ("Positions are learned up to seq_len "
              f"{spec.dims.seq_len}: prompt and new tokens together may not pass it. "
              if spec.dims.pos == "learned" else "Rotary positions: it may generate past "
              f"seq_len {spec.dims.seq_len}, the length it was trained at. ")
           + "Padding is not supported (an attention_mask must be all ones).\n")
    files = ("## Files\n\n- `config.json`: the dimensions, the gene table (`genes`) and the "
             "sla-nas spec (`spec`, `sla_nas.ArchSpec.from_dict`)\n"
             f"- `{_CONFIG_PY}`, `{_MODELING_PY}`: the configuration and the model (sla-nas's "
             "model definition verbatim, then its transformers wrapper)\n"
             "- `model.safetensors`: the weights\n"
             "- `generation_config.json`: generate's defaults\n")
    sections = card.split("\n## ")
    out = [sections[0]]
    for section in sections[1:]:
        title = section.split("\n", 1)[0].strip()
        out.append(use if title == "Use it" else files if title == "Files" else
                   "## " + section)
    body = out[0] + "".join("\n" + s if not s.startswith("\n") else s for s in out[1:])
    return header + body.rstrip("\n") + "\n"


def hf_files(spec: ArchSpec, prov: Provenance, name: str) -> dict[str, str]:
    """The text files of the HF folder (the weights and generate's defaults come apart)."""
    return {_CONFIG_PY: (_TEMPLATES / _CONFIG_PY).read_text(),
            _MODELING_PY: modeling_py(spec, prov),
            "config.json": json.dumps(_config(spec), indent=2) + "\n",
            "README.md": hf_card(spec, prov, name)}


@contextmanager
def import_hf_folder(folder: Path) -> Iterator[types.ModuleType]:
    """The modeling module of an HF folder, imported as a package from the folder itself:
    what trust_remote_code runs, without copying it into transformers' module cache (nothing
    is written outside the export folder; no byte-code files inside it either)."""
    name = f"_sla_nas_hf_{secrets.token_hex(4)}"
    package = types.ModuleType(name)
    package.__path__ = [str(folder)]
    sys.modules[name] = package
    bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        yield importlib.import_module(f"{name}.{_MODELING_PY[:-3]}")
    finally:
        sys.dont_write_bytecode = bytecode
        for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[module]


def _generation_config(spec: ArchSpec) -> str:
    from transformers import GenerationConfig

    return GenerationConfig(do_sample=False).to_json_string()


def _safetensors(state: dict[str, torch.Tensor], tied: bool) -> bytes:
    """sla-nas's weights as the wrapper's safetensors (``model.`` + each name, what
    save_pretrained writes); a tied lm_head is the embedding, stored once."""
    from safetensors.torch import save

    return save({f"model.{k}": v.detach().contiguous().cpu() for k, v in state.items()
                 if not (tied and k == "lm_head.weight")}, metadata={"format": "pt"})


def _load(folder: Path) -> torch.nn.Module:
    """The HF folder's model, loaded by its own code (imported from the folder, not cached)."""
    from transformers.utils import logging

    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # one small file: no "Loading weights" bar
    try:
        with import_hf_folder(folder) as module:
            return getattr(module, _CLASS).from_pretrained(folder).eval()
    finally:
        if shown:
            logging.enable_progress_bar()


@torch.no_grad()
def _check(folder: Path, spec: ArchSpec, reference: SlaModel) -> float:
    """Load the written folder and compare it with ``reference``: the largest difference of
    the logits; raises unless within `HF_ATOL` and greedy generation agrees."""
    d = spec.dims
    idx = torch.randint(0, d.vocab_size, (2, d.seq_len), generator=torch.Generator().manual_seed(0))
    model = _load(folder)
    worst = float((model(idx).logits - reference(idx)[0]).abs().max())
    if not worst <= HF_ATOL:
        raise ValueError(f"{folder}: the Hugging Face model's logits differ from sla-nas's by "
                         f"up to {worst:.3g} (allowed: {HF_ATOL})")
    prompt, new = idx[:, :2], max(1, min(6, d.seq_len - 2))
    tokens = model.generate(prompt, max_new_tokens=new, do_sample=False)
    if not torch.equal(tokens, reference.generate(prompt, new, temperature=0)):
        raise ValueError(f"{folder}: the Hugging Face model's greedy generation differs from "
                         f"sla-nas's")
    return worst


def write_hf(folder: Path, spec: ArchSpec, state: dict[str, torch.Tensor], prov: Provenance,
             name: str, write: Callable[[Path, Any], None] | None = None) -> dict[str, float]:
    """Write the HF folder ``folder`` (created new; its parent must exist) for ``spec`` with
    weights ``state`` (sla-nas's state dict), load it back and check it; returns what
    metrics.json records (``hf_max_abs_diff``). ``write(path, data)`` writes one file (default
    `atomic_write`; the export passes one that also refuses paths outside its folder)."""
    write = write or atomic_write
    reference = build_model(spec)
    reference.load_state_dict(state)
    reference.eval()
    folder.mkdir()  # new: never an existing path or a symlink
    for file, text in hf_files(spec, prov, name).items():
        write(folder / file, text)
    write(folder / "model.safetensors", _safetensors(state, spec.dims.tie_embeddings))
    write(folder / "generation_config.json", _generation_config(spec))
    return {"hf_max_abs_diff": _check(folder, spec, reference)}
