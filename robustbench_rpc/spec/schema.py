"""Reading a benchmark spec (TOML, ``tomllib``): known keys and types, grids over model options, errors with lines.

A spec has the sections ``[benchmark]`` (name, description), ``[run]`` (device, batch size, precision, seeds, ...),
``[data]`` (where the datasets are), ``[evaluate]`` (the suites), ``[outputs]`` (tables, formats, plots, report)
and the arrays ``[[models]]`` and ``[[attacks]]``. Every mistake is one sentence naming the key and its line.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustbench_rpc.errors import UserError, did_you_mean

_STR, _INT, _BOOL, _NUM, _LIST, _TABLE = "a string", "an integer", "true or false", "a number", "a list", "a table"
_STR_OR_LIST = "a string or a list of strings"
_INT_OR_LIST = "an integer, a list of integers or a range such as '0-3'"
_EPS = "a budget such as '4/255', a list of them, or a range such as '1/255:6/255'"

#: Section -> {key: what the value must be}.
SECTIONS: dict[str, dict[str, str]] = {
    "benchmark": {"name": _STR, "description": _STR},
    "run": {"device": _STR, "batch_size": _INT, "workers": _INT, "prefetch": _INT, "precision": _STR,
            "channels_last": _BOOL, "compile": _BOOL, "decode": _STR, "seed": _INT, "seeds": _INT_OR_LIST},
    "data": {"root": _STR, "imagenet": _STR, "imagenet_c": _STR, "imagenet_a": _STR, "imagenet_r": _STR,
             "imagenet_o": _STR, "folder": _STR, "labels": _STR, "classes": _STR},
    "evaluate": {"suite": _STR_OR_LIST, "corruptions": _STR, "severities": _STR, "allow_missing": _BOOL,
                 "jpeg": _BOOL, "corruption_rng": _STR, "limit": _INT, "subset": _STR, "seeds": _INT_OR_LIST},
    "outputs": {"tables": _STR_OR_LIST, "formats": _STR_OR_LIST, "plots": _BOOL, "report": _BOOL},
}
#: Array of tables -> {key: what the value must be}.
ARRAYS: dict[str, dict[str, str]] = {
    "models": {"model": _STR, "checkpoint": _STR, "label": _STR, "options": _TABLE, "grid": _TABLE,
               "trust_checkpoint": _BOOL, "ema": _BOOL, "num_classes": _INT},
    "attacks": {"attack": _STR_OR_LIST, "protocol": _STR, "eps": _EPS, "norm": _STR, "options": _TABLE,
                "dataset": _STR, "data": _STR, "limit": _INT, "subset": _STR, "compat": _STR, "seeds": _INT_OR_LIST,
                "surrogate": _STR, "attack_dtype": _STR},
}
#: Paths in these keys are read relative to the spec file's folder.
PATH_KEYS = {"root", "imagenet", "imagenet_a", "imagenet_r", "imagenet_o", "folder", "labels", "classes",
             "checkpoint", "data"}

_HEADER = re.compile(r"^\s*(\[\[|\[)\s*([A-Za-z0-9_.\-\"' ]+?)\s*(\]\]|\])")


class SpecSource:
    """The spec's text, to find the line of a key (tomllib gives values, not positions)."""

    def __init__(self, text: str, name: str) -> None:
        self.name = name
        self.lines = text.splitlines()
        self.blocks: list[tuple[int, int, str, int | None]] = []  # (first line, end line, section, array index)
        counters: dict[str, int] = {}
        current: tuple[str, int | None] = ("", None)
        start = 0
        for number, line in enumerate(self.lines):
            match = _HEADER.match(line)
            if not match:
                continue
            self.blocks.append((start, number, *current))
            path = match.group(2).replace('"', "").replace("'", "").strip()
            top = path.split(".")[0].strip()
            if match.group(1) == "[[" and "." not in path:
                counters[top] = counters.get(top, -1) + 1
                current = (top, counters[top])
            else:
                current = (top, counters.get(top) if top in ARRAYS else None)
            start = number
        self.blocks.append((start, len(self.lines), *current))

    def line(self, section: str = "", index: int | None = None, key: str | None = None) -> int:
        """Return the 1-based line of ``key`` in ``section`` (entry ``index`` of an array), else of its header."""
        first = None
        if not section and key:  # a top-level key may be a table's header
            for number, line in enumerate(self.lines):
                match = _HEADER.match(line)
                if match and match.group(2).replace('"', "").strip().split(".")[0] == key:
                    return number + 1
        for start, end, owner, owner_index in self.blocks:
            if owner != section or owner_index != index:
                continue
            first = start if first is None else first
            if key is None:
                return start + 1
            pattern = re.compile(r"(^|[{,\s])\"?" + re.escape(key) + r"\"?\s*=")
            for number in range(start, end):
                if pattern.search(self.lines[number].split("#")[0]):
                    return number + 1
        return (first or 0) + 1

    def where(self, section: str = "", index: int | None = None, key: str | None = None) -> str:
        """Return ``'KEY in SPEC (line N)'`` text for messages."""
        name = section if index is None else f"{section}[{index}]"
        if key:
            name = f"{name}.{key}" if name else key
        return f"{name} in {self.name} (line {self.line(section, index, key)})"


@dataclass
class ModelVariant:
    """One model of the plan: what to load, its options (grid values filled in) and its label."""

    model: str
    checkpoint: str | None
    label: str | None
    options: dict[str, Any]
    trust_checkpoint: bool = False
    use_ema: bool = False
    num_classes: int | None = None
    entry: int = 0  # index in [[models]]
    grid: dict[str, Any] = field(default_factory=dict)  # this variant's grid values


@dataclass
class BenchmarkSpec:
    """A validated spec: its sections as dicts, its model variants and attack entries, and where it came from."""

    path: Path
    sha256: str
    source: SpecSource
    name: str
    run: dict[str, Any]
    data: dict[str, Any]
    evaluate: dict[str, Any] | None
    outputs: dict[str, Any]
    models: list[ModelVariant]
    attacks: list[dict[str, Any]]

    def provenance(self) -> dict[str, Any]:
        """What every cell's provenance says about the spec: its path, SHA-256 and name."""
        return {"path": str(self.path), "sha256": self.sha256, "name": self.name}


def _check_type(value: Any, kind: str, where: str) -> None:
    ok = {
        _STR: isinstance(value, str),
        _INT: isinstance(value, int) and not isinstance(value, bool),
        _BOOL: isinstance(value, bool),
        _NUM: isinstance(value, (int, float)) and not isinstance(value, bool),
        _TABLE: isinstance(value, dict),
        _STR_OR_LIST: isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)),
        _INT_OR_LIST: isinstance(value, (int, str)) and not isinstance(value, bool)
        or (isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)),
        _EPS: isinstance(value, (str, int, float)) and not isinstance(value, bool)
        or (isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value)),
    }[kind]
    if not ok:
        raise UserError(f"{where} must be {kind}, got {value!r}.")


def _check_keys(table: dict[str, Any], known: dict[str, str], src: SpecSource, section: str,
                index: int | None) -> None:
    for key, value in table.items():
        if key not in known:
            raise UserError(f"Unknown key {key!r}{did_you_mean(key, known)} at {src.where(section, index, key)}; "
                            f"expected one of: {', '.join(known)}.")
        _check_type(value, known[key], src.where(section, index, key))


def _resolve(value: Any, key: str, folder: Path) -> Any:
    """Read a path relative to the spec's folder (``generated`` and ``~`` paths kept as they are)."""
    if key not in PATH_KEYS or not isinstance(value, str) or value == "generated":
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (folder / path))


def _variants(entry: dict[str, Any], index: int, src: SpecSource, folder: Path) -> list[ModelVariant]:
    if "model" not in entry:
        raise UserError(f"Missing key 'model' at {src.where('models', index)}; expected a registered name or "
                        "package.module:factory.")
    grid = entry.get("grid", {})
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{src.where('models', index, key)} (a grid) must be a non-empty list, got {values!r}.")
    options = dict(entry.get("options", {}))
    clash = sorted(set(options) & set(grid))
    if clash:
        raise UserError(f"{src.where('models', index, clash[0])} is both an option and a grid of the model; "
                        "give it in one of the two.")
    keys = list(grid)
    out = []
    for values in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
        chosen = dict(zip(keys, values, strict=True))
        label = entry.get("label")
        if label is not None and chosen:
            try:
                label = label.format(**chosen)
            except (KeyError, IndexError, ValueError):
                raise UserError(f"{src.where('models', index, 'label')} names a value that is not in the grid "
                                f"({', '.join(keys)}): {label!r}.") from None
            if label == entry.get("label") and len(out) >= 1:
                raise UserError(f"{src.where('models', index, 'label')} gives every grid variant the same label; "
                                "put the grid's options in it, e.g. 'RPC ({rpc_iters} iter)'.")
        checkpoint = entry.get("checkpoint")
        out.append(ModelVariant(model=entry["model"], checkpoint=_resolve(checkpoint, "checkpoint", folder)
                                if checkpoint else None, label=label, options={**options, **chosen},
                                trust_checkpoint=bool(entry.get("trust_checkpoint", False)),
                                use_ema=bool(entry.get("ema", False)), num_classes=entry.get("num_classes"),
                                entry=index, grid=chosen))
    return out


def _toml() -> Any:
    """Return the standard library's ``tomllib`` (Python 3.11+), else ``tomli``, which has the same interface."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise UserError("Reading a spec needs Python 3.11 or later (tomllib), or the tomli package on "
                            "Python 3.10.") from None
    return tomllib


def load_spec(path: str | Path) -> BenchmarkSpec:
    """Read and validate a spec file; every mistake raises a UserError naming the key and its line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Spec file {path} does not exist; expected a TOML file such as specs/digits.toml.")
    toml = _toml()
    raw = path.read_bytes()
    try:
        text = raw.decode()
        table = toml.loads(text)
    except UnicodeDecodeError:
        raise UserError(f"Spec file {path} is not UTF-8 text; expected a TOML file.") from None
    except toml.TOMLDecodeError as exc:
        raise UserError(f"Cannot read spec {path}: {exc}.") from None
    src = SpecSource(text, path.name)
    folder = path.resolve().parent
    for key, value in table.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise UserError(f"{src.where('', None, key)} must be a table [{key}].")
            _check_keys(value, SECTIONS[key], src, key, None)
        elif key in ARRAYS:
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise UserError(f"{src.where('', None, key)} must be an array of tables [[{key}]].")
            for index, entry in enumerate(value):
                _check_keys(entry, ARRAYS[key], src, key, index)
        else:
            known = [*SECTIONS, *ARRAYS]
            raise UserError(f"Unknown key {key!r}{did_you_mean(key, known)} at {src.where('', None, key)}; "
                            f"expected one of: {', '.join(known)}.")
    if not table.get("models"):
        raise UserError(f"Spec {path.name} has no [[models]]; expected at least one model to evaluate.")
    if not table.get("evaluate") and not table.get("attacks"):
        raise UserError(f"Spec {path.name} has neither [evaluate] nor [[attacks]]; expected something to run.")
    models = [v for i, entry in enumerate(table["models"]) for v in _variants(entry, i, src, folder)]
    data = {k: _resolve(v, k, folder) for k, v in table.get("data", {}).items()}
    attacks = []
    for index, entry in enumerate(table.get("attacks", [])):
        if ("attack" in entry) == ("protocol" in entry):
            raise UserError(f"{src.where('attacks', index)} needs exactly one of 'attack' (with 'eps') or "
                            "'protocol'.")
        extra = sorted({"eps", "norm"} & set(entry)) if "protocol" in entry else []
        if extra:
            raise UserError(f"{src.where('attacks', index, extra[0])} is set by the protocol; drop it, or use "
                            "'attack' and 'eps' instead of 'protocol'.")
        if "attack" in entry and "eps" not in entry:
            raise UserError(f"Missing key 'eps' at {src.where('attacks', index)}; expected {_EPS}.")
        attacks.append({k: _resolve(v, k, folder) for k, v in entry.items()})
    name = table.get("benchmark", {}).get("name", path.stem)
    return BenchmarkSpec(path=path, sha256=hashlib.sha256(raw).hexdigest(), source=src, name=name,
                         run=dict(table.get("run", {})), data=data, evaluate=table.get("evaluate"),
                         outputs=dict(table.get("outputs", {})), models=models, attacks=attacks)
