#!/usr/bin/env python3
"""Writes tests/fixtures/pointwise.expected.json: transformers' LlamaRMSNorm and its MLP's
`act_fn(gate) * up` (SiLU) on bf16 and f16 rows, for services/engine/src/pointwise.rs's
tests. The inputs are a formula both sides compute (no random numbers to share):

    x[r][c] = sin(r * 7.3 + c * 0.37) * (1 + r % 5),  w[c] = 0.02 + 0.01 * cos(c * 1.1)

in f64, then rounded to f32 and to the dtype. For the MLP, each row of x is the gate
(first half) and up (second half) projections. Outputs are the dtype's 16-bit patterns.

    target/bench-venv/bin/python scripts/make_pointwise_fixture.py
"""
import json
import math

import torch
from transformers.activations import ACT2FN
from transformers.models.llama.modeling_llama import LlamaRMSNorm

ROWS, HIDDEN, EPS = 40, 96, 1e-5


def patterns(t):
    return [v & 0xFFFF for v in t.view(torch.int16).flatten().tolist()]


def main():
    x = torch.tensor([[math.sin(r * 7.3 + c * 0.37) * (1 + r % 5) for c in range(HIDDEN)]
                      for r in range(ROWS)], dtype=torch.float32)
    w = torch.tensor([0.02 + 0.01 * math.cos(c * 1.1) for c in range(HIDDEN)],
                     dtype=torch.float32)
    out = {"rows": ROWS, "hidden": HIDDEN, "eps": EPS, "rms_norm": {}, "silu_mul": {}}
    act = ACT2FN["silu"]  # LlamaMLP's act_fn for hidden_act "silu"
    ff = HIDDEN // 2
    for name, dtype in [("bf16", torch.bfloat16), ("f16", torch.float16)]:
        norm = LlamaRMSNorm(HIDDEN, eps=EPS).to(dtype)
        with torch.no_grad():
            norm.weight.copy_(w.to(dtype))
            out["rms_norm"][name] = patterns(norm(x.to(dtype)))
            xd = x.to(dtype)
            out["silu_mul"][name] = patterns(act(xd[:, :ff]) * xd[:, ff:])
    with open("tests/fixtures/pointwise.expected.json", "w") as f:
        json.dump(out, f)
        f.write("\n")


if __name__ == "__main__":
    main()
