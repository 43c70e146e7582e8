"""benchmarks/distributed.py: the quick run end to end, and the estimate's arithmetic by hand."""

import json
import math
import subprocess
import sys

import pytest

from benchmarks._common import ROOT
from benchmarks.distributed import LLAMA_1B, LLAMA_7B, Assumptions, LlamaShape, estimate
from benchmarks.tables import distributed_table

TOY = LlamaShape("toy", layers=2, d=4, ffn=8, vocab=10, heads=2, kv_heads=1, tied=False)
ASSUME = Assumptions(gpus=4, sequences=10, tokens=5, peak_flops=1000.0, utilisation=0.5,
                     allreduce_bytes_per_s=100.0, gpu_memory_bytes=1000.0,
                     training_bytes_per_param=16.0)


def test_llama_shapes_count_the_published_parameters():
    assert LLAMA_1B.parameters() == 1_235_814_400
    assert LLAMA_7B.parameters() == 6_738_415_616


def test_estimate_arithmetic_on_fixed_inputs():
    # kv width 1·4/2 = 2; per layer 2·16 + 2·4·2 + 3·4·8 + 2·4 = 152; 2·152 + 2·10·4 + 4 = 388
    assert TOY.parameters() == 388
    assert TOY.matmul_parameters() == 388 - 5 * 4 - 40       # norms, untied input embedding
    e = estimate(TOY, fisher_over_plain=1.5, efficiency=0.75,
                 state_bytes_per_param={"ewc_fp32": 8.0}, assume=ASSUME)
    assert e["flops_per_token"] == 6 * 328 + 6 * 2 * 5 * 4 == 2208
    assert e["tokens"] == 50
    assert e["plain_fwd_bwd_s_one_gpu"] == pytest.approx(2208 * 50 / 500)      # 220.8 s
    assert e["allreduce_s"] == pytest.approx(2 * 3 / 4 * 4 * 388 / 100)       # 23.28 s
    assert e["importance_s"] == pytest.approx(1.5 * 220.8 / (4 * 0.75) + 23.28)   # 133.68
    assert e["importance_gpu_hours"] == pytest.approx(133.68 * 4 / 3600)
    s = e["state"]["ewc_fp32"]
    assert s["ddp_replicated_bytes_per_gpu"] == 3104
    assert s["fsdp_sharded_bytes_per_gpu"] == 776
    assert s["times_bf16_model"] == 4.0 and s["times_training_state"] == 0.5
    assert s["ddp_share_of_gpu_memory"] == pytest.approx(3.104)
    assert e["transient_per_sample_bytes"] == 2 * 4 * 2**24   # the chunk bound, not 40
    # an efficiency above 1 (timing noise) is capped: never better than linear scaling
    capped = estimate(TOY, fisher_over_plain=1.5, efficiency=1.2, state_bytes_per_param={},
                      assume=ASSUME)
    assert capped["efficiency_used"] == 1.0
    assert capped["importance_s"] == pytest.approx(1.5 * 220.8 / 4 + 23.28)


def test_quick_run_writes_a_complete_json(tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "distributed.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.distributed", "--quick", "--out",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "every core of this machine" in proc.stdout or "2 processes" in proc.stdout
    data = json.loads(out.read_text())
    assert data["quick"] and data["command"].endswith(f"--quick --out {out}")
    assert {"torch", "commit", "cpu_count"} <= set(data["environment"])

    def positive(v):
        return isinstance(v, float) and math.isfinite(v) and v > 0

    for kind in ("mlp", "llama"):
        imp, tr = data["scaling"][kind]["importance"], data["scaling"][kind]["training"]
        for key in ("one_process_samples_per_s", "two_processes_samples_per_s", "speedup",
                    "efficiency", "fisher_over_plain_one_process"):
            assert positive(imp[key]), (kind, key, imp[key])
        assert imp["efficiency"] == pytest.approx(imp["speedup"] / 2)
        for key in ("ewc_over_plain_one_process", "ewc_over_plain_two_processes",
                    "speedup_plain", "speedup_ewc"):
            assert positive(tr[key]), (kind, key, tr[key])
        assert set(tr["ms_per_step"]) == {"plain_one", "ewc_one", "plain_two", "ewc_two"}
        assert all(positive(v) for v in tr["ms_per_step"].values())
    assert 0 <= data["idle_rank_cpu_share"] < 1
    assert data["layers"] and all(positive(r["fisher_over_plain"]) for r in data["layers"])
    assert data["state_bytes_per_param"] == {"ewc_fp32": 8.0, "ewc_bf16": 4.0,
                                             "wva_fp32": 4.0, "wva_bf16": 2.0}
    est = data["estimate"]
    assert set(est["models"]) == {"Llama-3.2-1B", "Llama-2-7B"}
    assert est["measured_inputs"]["fisher_over_plain"] == max(
        r["fisher_over_plain"] for r in data["layers"])
    assert est["assumptions"]["gpus"] == 8 and est["assumption_notes"]
    for m in est["models"].values():
        assert positive(m["importance_s"]) and positive(m["transient_per_sample_bytes"] * 1.0)
        for key in ("ewc_fp32", "ewc_bf16", "wva_fp32", "wva_bf16"):
            s = m["state"][key]
            assert s["fsdp_sharded_bytes_per_gpu"] * 8 == s["ddp_replicated_bytes_per_gpu"]
        assert m["state"]["ewc_fp32"]["times_bf16_model"] == 4.0
        assert m["state"]["ewc_bf16"]["times_bf16_model"] == 2.0
    table = distributed_table(data)
    assert "Llama-2-7B" in table and "EWC step ÷ plain DDP step" in table
