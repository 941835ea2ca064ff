#!/usr/bin/env python3
"""Regenerates tests/fixtures/tiny-llama-{bin,sharded}/: a randomly initialised tiny
LlamaForCausalLM saved by transformers as PyTorch `pytorch_model.bin` and as sharded
safetensors with an index, with the SentencePiece fixture as its tokenizer.model, plus the
greedy tokens transformers itself generates (expected.json): an independent reference for
umi's HuggingFace loading path. Needs torch and transformers.
"""
import json
import pathlib
import shutil

import torch
from transformers import LlamaConfig, LlamaForCausalLM

FIX = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"
PROMPT = [1, 349, 278, 261, 361, 349, 377, 308]


def main():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
        out = model.generate(torch.tensor([PROMPT]), max_new_tokens=20, do_sample=False,
                             eos_token_id=None, pad_token_id=0)
    expected = {"prompt": PROMPT, "greedy": out[0, len(PROMPT):].tolist()}
    sharded = FIX / "tiny-llama-sharded"
    shutil.rmtree(sharded, ignore_errors=True)
    model.save_pretrained(sharded, max_shard_size="100KB")
    # transformers 5 only writes safetensors; the α-UMi checkpoints are torch.save pickles.
    pickled = FIX / "tiny-llama-bin"
    shutil.rmtree(pickled, ignore_errors=True)
    config.save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    for d in (sharded, pickled):
        shutil.copy(FIX / "spm-bpe.model", d / "tokenizer.model")
        (d / "generation_config.json").unlink(missing_ok=True)
    (FIX / "tiny-llama.expected.json").write_text(json.dumps(expected) + "\n")


if __name__ == "__main__":
    main()
