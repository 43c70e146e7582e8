"""Weight-importance estimators: how much each parameter matters for what was learned.

Estimators (all return an `Importance`, a mapping parameter name -> tensor):

* `fisher` — diagonal Fisher (empirical, sampled "true", or exact expectation over classes);
* `mas` — Memory Aware Synapses, mean |∂ Σ_c softmax_c² / ∂θ| per sample;
* `signal` — SIG, total absolute signal through each connection, forward passes only;
* `SynapticIntelligence` — online SI from the training path.

Fisher and MAS use exact per-sample gradients from one batched forward and backward per batch:
forward hooks keep each layer's input, one backward pass from the logits gives each layer's
output gradient δ, and a per-layer rule forms Σ_n f(g_n) (for Linear, f(δ)ᵀ f(x): one matmul).
Layers without a rule (e.g. MultiheadAttention; RNN, GRU and LSTM, run step by step so that
vmap can batch them) use `torch.func` (vmap of a vector-Jacobian product), so any model works.
`register_rule` adds a rule for a custom layer. SIG has no definition for recurrent layers and
refuses them by name.

Importances are summed, and returned, in float32 for half-precision (bfloat16/float16) models
(float64 for float64 ones): a bfloat16 sum over many batches stalls far below the true one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from .._registry import Registry
from ._persample import CHUNK_ELEMENTS, per_sample_sum
from ._rules import register_rule
from .base import Importance, eval_mode, iter_batches, loss_view, trainable_parameters
from .fisher import fisher
from .mas import mas
from .si import SynapticIntelligence
from .sig import signal

__all__ = [
    "CHUNK_ELEMENTS",
    "ESTIMATORS",
    "Importance",
    "SynapticIntelligence",
    "eval_mode",
    "fisher",
    "iter_batches",
    "loss_view",
    "mas",
    "per_sample_sum",
    "register_rule",
    "signal",
    "trainable_parameters",
]

# Every entry is called as ``estimator(model, data, *, loss=None, seed=None, **options)``: the
# training loop passes the task's loss (its class mask) and the run's seed to whichever it runs.
ESTIMATORS: Registry[Callable[..., Importance]] = Registry("importance estimator")


ESTIMATORS.add("fisher", fisher, "empirical Fisher: mean squared per-sample grad of log p(y|x)")
ESTIMATORS.add("fisher-sampled", functools.partial(fisher, empirical=False),
               "true Fisher, one label sampled from the model per sample")
ESTIMATORS.add("fisher-exact", functools.partial(fisher, empirical=False, exact=True),
               "true Fisher, exact expectation over all classes")
ESTIMATORS.add("mas", mas, "MAS: mean |per-sample grad of sum of squared softmax outputs|")
ESTIMATORS.add("signal", signal, "SIG: total absolute signal through each connection")
