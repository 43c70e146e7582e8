"""myelin's benchmarks and reproductions; every script runs as a module from the repository root.

    python -m benchmarks.reproduce list | run EXPERIMENT --seeds 0-4 | report
    python -m benchmarks.colanet single | permuted | alpha | emnist | report
    python -m benchmarks.warm_adam --importance signal --lam 0.2 --seeds 0-19
    python -m benchmarks.importance | overhead | walltime       # → results/<name>.json
    python -m benchmarks.tables --write-readme                   # README tables from the JSON

Modules (imports point down this list only, never back):

* `catalogue` — the reproduced experiments and their rows, as data (`EXPERIMENTS`);
* `runner` — runs (row, seed) pairs into a `myelin.records.RecordStore` (resumable);
* `report` — summary JSON, plots and ``docs/results.md`` from the records;
* `reproduce` — the command line over the three; `colanet`, `warm_adam` — their own runs;
* `_common` — data location, seeds, timing and the environment record, shared by all.
"""
