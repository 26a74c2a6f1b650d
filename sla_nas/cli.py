"""The ``sla-nas`` command line: each subcommand calls one library function and prints."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import presets
from .spec import ArchSpec, Dims

__all__ = ["main"]

_DIM_FLAGS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "n_groups", "d_ff",
              "seq_len")


def load_arch(name_or_path: str, **dims: int) -> ArchSpec:
    """A preset name (built at ``dims``) or a spec file (YAML/JSON)."""
    if name_or_path in presets.names():
        return presets.get(name_or_path, **dims)
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml", ".json") or path.exists():
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        if dims:
            raise ValueError(f"{path}: dimension flags apply to presets only; edit the file's "
                             f"dims instead")
        return ArchSpec.load(path)
    return presets.get(name_or_path)  # raises "unknown preset ... did you mean"


def _cmd_show(args: argparse.Namespace) -> None:
    from .show import render

    dims = {k: getattr(args, k) for k in _DIM_FLAGS if getattr(args, k) is not None}
    spec = load_arch(args.arch, **dims)
    if args.json:
        from .cost import estimate

        print(json.dumps({"key": spec.key, "spec": spec.to_dict(), "cost": estimate(spec)},
                         indent=2))
    else:
        render(spec, title=args.arch)


def _cmd_validate(args: argparse.Namespace) -> None:
    from .validate import describe, print_description

    info = describe(args.space)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print_description(info)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sla-nas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="print an architecture's connectivity and costs",
                          description="Print the connectivity (layers x head groups, K and V "
                          "sources) and the costs of a preset or a spec file. Presets: "
                          + ", ".join(presets.names()))
    show.add_argument("arch", help="a preset name or an ARCH.yaml / .json spec file")
    for name in _DIM_FLAGS:
        show.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int,
                          help=f"preset dimension (default {getattr(Dims.create(), name)})")
    show.add_argument("--json", action="store_true", help="print the spec and costs as JSON")
    show.set_defaults(func=_cmd_show)

    validate = sub.add_parser("validate", help="check a search-space file and summarise it",
                              description="Check SPACE.yaml without running anything: print "
                              "its size, distinct architectures, cost range, seeds and three "
                              "example architectures. Exit 2 on any mistake.")
    validate.add_argument("space", help="a search-space YAML file")
    validate.add_argument("--json", action="store_true", help="print the summary as JSON")
    validate.set_defaults(func=_cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        args.func(args)
    except ValueError as err:
        print(f"sla-nas {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
