"""Issue 18 wall-time probe of myelin.fit (see contract-check.json); times the tree on sys.path."""

import os

import torch

import myelin
from myelin.models import mlp
from myelin.scenarios import permuted

torch.set_num_threads(1)
root = os.path.join(os.environ.get("MYELIN_DATA", "../shared/data"), "mnist")
scenario = permuted("mnist", 3, seed=0, root=root)
torch.manual_seed(0)
result = myelin.fit(scenario, mlp((1, 28, 28), 10, (300, 150)), "ewc", "sgd", lr=0.1,
                    iterations=600, batch_size=100, closing="holdout", closing_samples=2000,
                    method_options={"lam": 14, "importance": "fisher-sampled"}, progress=False)
print(myelin.__file__, result.accuracy[-1])
