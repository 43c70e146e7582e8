"""Issue 18 wall-time probe of CoLaNET (see contract-check.json); times the tree on sys.path."""

import os

import torch

import myelin
from myelin.scenarios import Scenario, Task, permuted
from myelin.snn import CoLaNET, fit_scenario

torch.set_num_threads(1)
root = os.path.join(os.environ.get("MYELIN_DATA", "../shared/data"), "mnist")
full = permuted("mnist", 2, seed=0, root=root)
scenario = Scenario(full.name, [Task(t.name, t.train.subset(range(20000)), t.test, t.classes)
                                for t in full.tasks], full.n_classes, full.setting)
result = fit_scenario(CoLaNET(784, 10, 15, alpha=0.005), scenario)
print(myelin.__file__, result.accuracy[-1])
