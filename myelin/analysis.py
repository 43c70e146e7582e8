"""Diagnostics of weight importances: how two overlap, and how well one predicts what matters.

Two tools from Kirkpatrick et al. (2017, "Overcoming catastrophic forgetting in neural
networks", PNAS), usable with any estimator of `myelin.importance` (Fisher, MAS, SIG, ...):

* `overlap` — the Fisher overlap of their Fig. 3C: do two tasks (or two estimators) rely on
  the same weights? Per layer or for the whole model.
* `perturbation_test` — their Fig. 4C: move a trained model's weights by random noise shaped by
  the inverse importance, by uniform noise, and by noise confined to the importance's null space
  (the weights it calls unimportant), at a range of perturbation norms, and record loss and
  accuracy. A good importance is one whose "unimportant" directions really do not hurt.

Example::

    from myelin.analysis import overlap, perturbation_test
    from myelin.importance import fisher, signal

    f1, f2 = fisher(model, task1), fisher(model, task2)
    overlap(f1, f2)                       # {"0": 0.41, "2": 0.93}: per layer, in [0, 1]
    overlap(f1, f2, per="model")          # 0.58

    res = perturbation_test(model, f1, test_set, norms=[0, 1, 2, 4, 8], seed=0)
    fig = res.plot()                      # loss and accuracy against the perturbation norm
    other = perturbation_test(model, signal(model, task1), test_set, norms=[0, 1, 2, 4, 8])
    other.plot(axes=fig.axes, label="SIG") # the same axes: compare the estimators
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .importance.base import eval_mode, iter_batches, trainable_parameters

__all__ = ["KINDS", "PER", "PerturbationResult", "overlap", "perturbation_test"]

PER = ("layer", "model", "parameter")
"""What `overlap` compares: each layer (the parameters of one module), the whole model, or each
parameter tensor on its own."""

KINDS = ("inverse-importance", "uniform", "null-space")
"""The perturbations of `perturbation_test` (Kirkpatrick et al. 2017, Fig. 4C: blue, black,
orange)."""

_COLOURS = {"inverse-importance": "tab:blue", "uniform": "black", "null-space": "tab:orange"}


# --------------------------------------------------------------------------------------------
# Validation shared by both tools


def _check_importance(imp: Any, arg: str, owner: str) -> dict[str, Tensor]:
    """`imp` as name -> detached tensor, or a clear error naming the argument.

    Raises:
        TypeError: Not a mapping of tensors.
        ValueError: Empty, or a value holds NaN/inf or negative numbers.
    """
    if not isinstance(imp, Mapping):
        raise TypeError(f"The {arg!r} argument of {owner} must be an Importance (a mapping "
                        f"parameter name -> tensor, from myelin.importance). "
                        f"Got {type(imp).__name__}.")
    if not imp:
        raise ValueError(f"The {arg!r} argument of {owner} is empty: it has no parameters.")
    out: dict[str, Tensor] = {}
    for name, value in imp.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"The {arg!r} argument of {owner}: the value for {name!r} is a "
                            f"{type(value).__name__}, not a tensor.")
        v = value.detach()
        if v.is_complex():
            raise TypeError(f"The {arg!r} argument of {owner}: {name!r} has dtype {v.dtype}; "
                            "importances are real numbers.")
        v = v.to(torch.float64)
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"The {arg!r} argument of {owner}: {name!r} holds NaN or inf.")
        if v.numel() and float(v.min()) < 0:
            raise ValueError(
                f"The {arg!r} argument of {owner}: {name!r} has negative values (min "
                f"{float(v.min()):.4g}). Importances must be >= 0 (Fisher, MAS and SIG are; "
                "clip Synaptic Intelligence's negative values to 0 first).")
        out[str(name)] = v
    return out


def _layer_of(name: str) -> str:
    """The module a parameter belongs to: ``"2.weight"`` -> ``"2"``; a top-level one: itself."""
    prefix, dot, _ = name.rpartition(".")
    return prefix if dot else name


# --------------------------------------------------------------------------------------------
# Fisher overlap


def overlap(a: Mapping[str, Tensor], b: Mapping[str, Tensor], *,
            per: str = "layer") -> dict[str, float] | float:
    """Overlap of two diagonal importances (Kirkpatrick et al. 2017, Fig. 3C, "Fisher overlap").

    Each diagonal is normalised to unit trace, F̂ = F / Σ F, and compared by the Fréchet distance
    between the two diagonal matrices, d² = ½ tr(F̂₁ + F̂₂ − 2(F̂₁F̂₂)^½) = ½ Σ_i (√F̂₁ᵢ − √F̂₂ᵢ)²
    (the paper's SI prints the last form without its square; the trace form it gives is the
    squared one); the overlap is 1 − d². With
    unit traces this equals Σ_i √(F̂₁ᵢ F̂₂ᵢ) (the Bhattacharyya coefficient of the two normalised
    diagonals), so it lies in [0, 1]: 1 if and only if a = c·b for some c > 0, 0 if and only if
    the two are never non-zero at the same element (disjoint supports). It is symmetric and
    invariant to rescaling either argument, so importances in different units (Fisher vs MAS vs
    SIG) can be compared, and so can tasks whose importances differ in overall size.

    Args:
        a: One importance, parameter name -> non-negative tensor (`myelin.Importance`).
        b: The other, with the same parameter names and shapes.
        per: "layer": one overlap per layer, the parameters of one module together (the
            weight and bias of ``"2"``: ``"2.weight"``, ``"2.bias"``), each layer normalised on
            its own (the paper's per-depth curve); "model": one number, every parameter
            together; "parameter": one per parameter tensor.

    Returns:
        A float for ``per="model"``; otherwise a dict layer (or parameter) name -> overlap, in
        the order of `a`.

    Raises:
        TypeError: `a` or `b` is not a mapping of tensors.
        ValueError: Unknown `per`; names or shapes differ; negative, NaN or inf values; or an
            argument whose trace is zero over a compared group (the argument and the group
            named), since a zero diagonal cannot be normalised.
    """
    if per not in PER:
        raise ValueError(f"The 'per' parameter of overlap must be one of {PER}. "
                         f"Got {per!r} instead.")
    fa = _check_importance(a, "a", "overlap")
    fb = _check_importance(b, "b", "overlap")
    only_a, only_b = sorted(set(fa) - set(fb)), sorted(set(fb) - set(fa))
    if only_a or only_b:
        raise ValueError(f"overlap needs importances over the same parameters: only in 'a' "
                         f"{only_a}, only in 'b' {only_b}.")
    for name, v in fa.items():
        if v.shape != fb[name].shape:
            raise ValueError(f"overlap: parameter {name!r} has shape {tuple(v.shape)} in 'a' "
                             f"but {tuple(fb[name].shape)} in 'b'.")
    groups: dict[str, list[str]] = {}
    for name in fa:
        key = "model" if per == "model" else (_layer_of(name) if per == "layer" else name)
        groups.setdefault(key, []).append(name)
    out: dict[str, float] = {}
    for key, names in groups.items():
        va = torch.cat([fa[n].reshape(-1).cpu() for n in names])
        vb = torch.cat([fb[n].reshape(-1).cpu() for n in names])
        for arg, v in (("a", va), ("b", vb)):
            if float(v.sum()) <= 0:
                where = "" if per == "model" else f" over {per} {key!r} ({', '.join(names)})"
                raise ValueError(
                    f"The {arg!r} argument of overlap is zero everywhere{where}: a zero "
                    "diagonal cannot be normalised to unit trace. "
                    + ("Compare per='model' instead, or leave this layer out."
                       if per != "model" else "Is it the importance of a trained model?"))
        d2 = 0.5 * float(((va / va.sum()).sqrt() - (vb / vb.sum()).sqrt()).square().sum())
        out[key] = min(1.0, max(0.0, 1.0 - d2))
    return out["model"] if per == "model" else out


# --------------------------------------------------------------------------------------------
# Perturbation test


@dataclass(frozen=True)
class PerturbationResult:
    """Loss and accuracy of a model under random weight perturbations, by kind and norm.

    Attributes:
        norms: The perturbation norms, as given (L2 norm of the whole perturbation vector).
        kinds: The perturbation kinds measured (a subset of `KINDS`).
        loss: Kind -> mean loss over the samples, one value per norm.
        loss_std: Kind -> standard deviation of the loss over the samples (0 for one sample).
        accuracy: Kind -> mean accuracy per norm; None when the model's output is not a
            classifier's logits (N, C) with integer labels (N,).
        accuracy_std: Kind -> standard deviation of the accuracy, or None.
        baseline_loss: The unperturbed model's loss.
        baseline_accuracy: The unperturbed model's accuracy, or None.
        n_parameters: Elements perturbed (every trainable parameter of the model).
        null_space: Elements in the null space (importance ≤ threshold · mean importance).
        meta: How it was measured: estimator, threshold, damping, ε, samples, seed, the norm's
            definition, the number of evaluation samples.
    """

    norms: tuple[float, ...]
    kinds: tuple[str, ...]
    loss: dict[str, tuple[float, ...]]
    loss_std: dict[str, tuple[float, ...]]
    accuracy: dict[str, tuple[float, ...]] | None
    accuracy_std: dict[str, tuple[float, ...]] | None
    baseline_loss: float
    baseline_accuracy: float | None
    n_parameters: int
    null_space: int
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (lists instead of tuples)."""
        def lists(d: Mapping[str, Sequence[float]] | None) -> dict[str, list[float]] | None:
            return None if d is None else {k: list(v) for k, v in d.items()}
        return {"norms": list(self.norms), "kinds": list(self.kinds),
                "loss": lists(self.loss), "loss_std": lists(self.loss_std),
                "accuracy": lists(self.accuracy), "accuracy_std": lists(self.accuracy_std),
                "baseline_loss": self.baseline_loss,
                "baseline_accuracy": self.baseline_accuracy,
                "n_parameters": self.n_parameters, "null_space": self.null_space,
                "meta": dict(self.meta)}

    def plot(self, axes: Sequence[Any] | None = None, *, label: str | None = None) -> Any:
        """Loss (left) and accuracy (right) against the perturbation norm, one line per kind.

        Colours follow the paper's Fig. 4C: inverse importance blue, uniform black, null space
        orange; the band is ± one standard deviation over the samples, the dotted line the
        unperturbed model.

        Args:
            axes: Two matplotlib axes to draw on (e.g. ``fig.axes`` of an earlier call, to
                compare estimators on one figure); None: a new figure. With no accuracy, only
                the first axis is used.
            label: Prefix of the legend entries (e.g. the estimator's name); default the
                estimator recorded in `meta`, if any.

        Returns:
            The matplotlib `Figure` (not registered with pyplot: save it with
            ``fig.savefig(path)``, or show it in a notebook as the cell's value).
        """
        if axes is None:
            from matplotlib.figure import Figure

            n = 1 if self.accuracy is None else 2
            fig = Figure(figsize=(4.6 * n, 3.6))
            axes = [fig.add_subplot(1, n, i + 1) for i in range(n)]
            new = True
        else:
            axes = list(axes)
            need = 1 if self.accuracy is None else 2
            if len(axes) < need:
                raise ValueError(f"plot needs {need} axes (loss, accuracy); got {len(axes)}.")
            fig = axes[0].figure
            new = False
        prefix = label if label is not None else self.meta.get("estimator")
        styles = ["-", "--", ":", "-."]             # one line style per result drawn here
        drawn = sum(1 for line in axes[0].lines if line.get_label() != "unperturbed")
        style = styles[(drawn // len(self.kinds)) % len(styles)]
        order = sorted(range(len(self.norms)), key=lambda i: self.norms[i])
        x = [self.norms[i] for i in order]
        panels = [(axes[0], self.loss, self.loss_std, self.baseline_loss, "loss")]
        if self.accuracy is not None and self.accuracy_std is not None:
            panels.append((axes[1], self.accuracy, self.accuracy_std, self.baseline_accuracy,
                           "accuracy"))
        for ax, mean, std, base, what in panels:
            for kind in self.kinds:
                m = [mean[kind][i] for i in order]
                s = [std[kind][i] for i in order]
                colour = _COLOURS.get(kind)
                name = f"{prefix}: {kind}" if prefix else kind
                ax.plot(x, m, style, color=colour, marker="o", markersize=3, label=name)
                ax.fill_between(x, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)],
                                color=colour, alpha=0.15, linewidth=0)
            if base is not None and new:
                ax.axhline(base, color="grey", linestyle=":", linewidth=1, label="unperturbed")
            ax.set_xlabel("perturbation norm ‖δ‖₂")
            ax.set_ylabel(what)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        if new:
            fig.suptitle("Perturbation test (Kirkpatrick et al. 2017, Fig. 4C)", fontsize=9)
            fig.tight_layout()
        return fig


def _check_norms(norms: Any) -> tuple[float, ...]:
    if isinstance(norms, (str, bytes)) or not isinstance(norms, Iterable):
        raise TypeError("The 'norms' parameter of perturbation_test must be a sequence of "
                        f"numbers (e.g. [0, 1, 2, 4]). Got {norms!r}.")
    out = []
    for r in norms:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) \
                or r < 0:
            raise ValueError("The 'norms' parameter of perturbation_test must hold finite "
                             f"numbers >= 0. Got {r!r} in {list(norms)!r}.")
        out.append(float(r))
    if not out:
        raise ValueError("The 'norms' parameter of perturbation_test is empty; give at least "
                         "one perturbation norm.")
    return tuple(out)


def _check_kinds(kinds: Any) -> tuple[str, ...]:
    if isinstance(kinds, str):
        kinds = (kinds,)
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"The 'kinds' parameter of perturbation_test must be a non-empty "
                         f"subset of {KINDS}. Got {kinds!r}.")
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"The 'kinds' parameter of perturbation_test repeats a kind: {kinds!r}.")
    return kinds


def _check_number(value: Any, name: str, *, positive: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) \
        and math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        raise ValueError(f"The {name!r} parameter of perturbation_test must be a finite number "
                         f"{'> 0' if positive else '>= 0'}. Got {value!r} instead.")
    return float(value)


def _evaluate(model: nn.Module, batches: list[tuple[Any, Tensor]], loss: Any
              ) -> tuple[float, float | None]:
    """Mean loss and accuracy over the batches (weighted by batch size)."""
    total_loss, total_correct, total, classifier = 0.0, 0, 0, True
    with torch.no_grad():
        for x, y in batches:
            out = model(x)
            logits = loss.logits(out) if hasattr(loss, "logits") else out
            value = F.cross_entropy(logits, y) if loss is None else loss(model, (x, y))
            n = len(y)
            total_loss += float(value) * n
            total += n
            if classifier and isinstance(logits, Tensor) and logits.dim() == 2 \
                    and y.dim() == 1 and not y.is_floating_point():
                total_correct += int((logits.argmax(1) == y).sum())
            else:
                classifier = False
    return total_loss / total, (total_correct / total if classifier else None)


def perturbation_test(
    model: nn.Module,
    importance: Mapping[str, Tensor],
    data: Any,
    *,
    norms: Sequence[float],
    kinds: Sequence[str] = KINDS,
    threshold: float = 1e-3,
    damping: float = 0.1,
    samples: int = 5,
    seed: int | None = 0,
    loss: Any = None,
    batch_size: int = 512,
    max_samples: int | None = None,
) -> PerturbationResult:
    """Perturb a trained model's weights at random, shaped by an importance; measure the damage.

    Kirkpatrick et al. (2017, Fig. 4C) checked their diagonal Fisher this way: noise shaped by
    the inverse Fisher should hurt less than uniform noise of the same size, and noise inside
    the Fisher's null space should not hurt at all. Any importance (Fisher, MAS, SIG, ...) can
    be tested; compare estimators by running each and overlaying the plots.

    The perturbation. All trainable parameters of the model form one vector θ of D elements,
    with importance I (D elements). For each sample s a standard normal vector z ~ N(0, I_D)
    is drawn (a private generator seeded by `seed`; the global RNG is untouched) and shaped:

    * ``"uniform"``: u = z (every weight alike);
    * ``"inverse-importance"``: u_i = z_i / √(I_i + ε), with ε = damping · mean(I) — a draw
      from N(0, (diag I + εI)⁻¹), the paper's "(F + λI)⁻¹", the weight changes a Laplace
      posterior (and EWC) allows; ε makes zero importances finite and, being relative to the
      mean, keeps the result independent of the estimator's units;
    * ``"null-space"``: u_i = z_i where I_i ≤ threshold · mean(I), else 0 — uniform noise on
      the weights the importance calls unimportant.

    The same z is shared by the kinds (common random numbers), then for each norm r the model
    is evaluated at θ + r · u/‖u‖₂. So the **perturbation norm** r is the L2 norm of the whole
    perturbation vector δ = θ' − θ over all D elements (the direction is sampled, then rescaled
    to exactly r); the paper's "magnitude (standard deviation)" of uniform noise corresponds to
    r/√D, recorded as ``meta["rms_per_element"]``. Each sample is one direction evaluated at
    every norm, so the curves are smooth in r; loss and accuracy are averaged over `samples`.

    The model is evaluated in eval mode under ``torch.no_grad``; its weights are copied before
    and copied back after (also on error), so they are restored exactly, and every module's
    train/eval mode is restored.

    Args:
        model: A trained model. Its trainable parameters are perturbed.
        importance: One non-negative tensor per trainable parameter of `model` (same names and
            shapes), e.g. ``myelin.importance.fisher(model, data)``.
        data: Evaluation data: (x, y) batches in any form `myelin.importance.iter_batches`
            accepts (an (X, Y) pair, a DataLoader, a Dataset). Read once and kept in memory.
        norms: Perturbation norms r ≥ 0 (0 gives the unperturbed model).
        kinds: Which perturbations, a subset of `KINDS`.
        threshold: The null space is every element with importance ≤ threshold · mean(I).
        damping: ε = damping · mean(I) in the inverse-importance shaping; > 0.
        samples: Random directions per kind, averaged.
        seed: Seed of the noise (None: drawn from the global RNG once).
        loss: None: cross-entropy of the model's logits. Otherwise a callable
            ``loss(model, (x, y)) -> scalar`` (mean over the batch), e.g.
            `myelin.losses.CrossEntropy`; if it has ``logits(output)``, accuracy uses them.
        batch_size: Batch size when cutting `data` into batches.
        max_samples: Evaluate on at most this many samples of `data`.

    Returns:
        A `PerturbationResult`: per kind, mean and standard deviation of loss and accuracy at
        every norm, the unperturbed baseline, and how it was measured; ``.plot()`` draws it.

    Raises:
        TypeError: `model` is not a module, `importance` not a mapping of tensors, `norms` not
            a sequence.
        ValueError: `importance` does not match the model's trainable parameters, or holds
            negative, NaN or inf values, or is zero everywhere; bad norms, kinds, threshold,
            damping or samples; data without labels or empty; an empty null space when
            ``"null-space"`` is asked for (raise `threshold`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"The 'model' argument of perturbation_test must be a torch.nn.Module. "
                        f"Got {type(model).__name__}.")
    imp = _check_importance(importance, "importance", "perturbation_test")
    params = trainable_parameters(model)
    missing, extra = sorted(set(params) - set(imp)), sorted(set(imp) - set(params))
    wrong = [f"{n}: importance {tuple(imp[n].shape)} vs parameter {tuple(p.shape)}"
             for n, p in params.items() if n in imp and imp[n].shape != p.shape]
    if missing or extra or wrong:
        raise ValueError("The 'importance' argument of perturbation_test does not match the "
                         f"model's trainable parameters: without importance {missing}, not in "
                         f"the model {extra}, shape mismatches {wrong}.")
    norms = _check_norms(norms)
    kinds = _check_kinds(kinds)
    threshold = _check_number(threshold, "threshold")
    damping = _check_number(damping, "damping", positive=True)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError("The 'samples' parameter of perturbation_test must be an int >= 1. "
                         f"Got {samples!r} instead.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"The 'seed' parameter of perturbation_test must be an int or None. "
                        f"Got {seed!r}.")
    if loss is not None and not callable(loss):
        raise TypeError("The 'loss' parameter of perturbation_test must be None or a callable "
                        f"loss(model, (x, y)) -> scalar. Got {type(loss).__name__}.")

    names = list(params)
    flat = torch.cat([imp[n].reshape(-1).cpu() for n in names])          # float64, (D,)
    mean = float(flat.mean())
    if mean <= 0:
        raise ValueError("The 'importance' argument of perturbation_test is zero everywhere: "
                         "it cannot shape a perturbation. Is it the importance of a trained "
                         "model on data it has seen?")
    eps = damping * mean
    null = flat <= threshold * mean
    n_null = int(null.sum())
    if "null-space" in kinds and n_null == 0:
        raise ValueError(f"No parameter has importance <= threshold · mean = {threshold:g} × "
                         f"{mean:.4g}: the null space is empty. Raise 'threshold' (the smallest "
                         f"importance is {float(flat.min()):.4g} = "
                         f"{float(flat.min()) / mean:.3g} × mean), or leave 'null-space' out.")

    batches: list[tuple[Any, Tensor]] = []
    first = next(iter(params.values()))
    for x, y in iter_batches(data, batch_size=batch_size, max_samples=max_samples,
                             device=first.device):
        if y is None:
            raise ValueError("perturbation_test needs labelled data, (x, y) batches; the data "
                             "yields inputs only.")
        batches.append((x, y.to(first.device)))
    if not batches:
        raise ValueError("The 'data' argument of perturbation_test is empty.")
    n_eval = sum(len(y) for _, y in batches)

    gen = torch.Generator()
    gen.manual_seed(seed if seed is not None else int(torch.randint(2**62, ()).item()))
    shapes = {"uniform": torch.ones_like(flat),
              "inverse-importance": (flat + eps).rsqrt(),
              "null-space": null.to(flat.dtype)}
    sizes = [p.numel() for p in params.values()]
    originals = {n: p.detach().clone() for n, p in params.items()}
    losses = {k: [[0.0] * samples for _ in norms] for k in kinds}
    accs: dict[str, list[list[float]]] = {k: [[0.0] * samples for _ in norms] for k in kinds}
    classifier = True
    try:
        with eval_mode(model), torch.no_grad():
            base_loss, base_acc = _evaluate(model, batches, loss)
            for s in range(samples):
                z = torch.randn(flat.shape, generator=gen, dtype=torch.float64)
                for kind in kinds:
                    u = z * shapes[kind]
                    u /= u.norm()
                    parts = torch.split(u, sizes)
                    for i, r in enumerate(norms):
                        for (n, p), d in zip(params.items(), parts):
                            p.copy_(originals[n] + (r * d).view_as(p).to(p))
                        lo, acc = _evaluate(model, batches, loss)
                        losses[kind][i][s] = lo
                        if acc is None:
                            classifier = False
                        else:
                            accs[kind][i][s] = acc
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(originals[n])

    def stats(table: dict[str, list[list[float]]]
              ) -> tuple[dict[str, tuple[float, ...]], dict[str, tuple[float, ...]]]:
        t = {k: torch.tensor(v, dtype=torch.float64) for k, v in table.items()}
        return ({k: tuple(v.mean(1).tolist()) for k, v in t.items()},
                {k: tuple((v.std(1, unbiased=False)).tolist()) for k, v in t.items()})

    loss_mean, loss_std = stats(losses)
    acc_mean, acc_std = stats(accs) if classifier and base_acc is not None else (None, None)
    d = int(flat.numel())
    meta = {"estimator": getattr(importance, "meta", {}).get("estimator"),
            "norm": "L2 norm of the whole perturbation vector over all trainable parameters",
            "rms_per_element": [r / math.sqrt(d) for r in norms],
            "threshold": threshold, "damping": damping, "epsilon": eps,
            "mean_importance": mean, "samples": samples, "seed": seed,
            "evaluated_on": n_eval,
            "loss": "cross-entropy" if loss is None else repr(loss)}
    return PerturbationResult(norms=norms, kinds=kinds, loss=loss_mean, loss_std=loss_std,
                              accuracy=acc_mean, accuracy_std=acc_std,
                              baseline_loss=base_loss,
                              baseline_accuracy=base_acc if classifier else None,
                              n_parameters=d, null_space=n_null, meta=meta)
