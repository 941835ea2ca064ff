#!/usr/bin/env python3
"""Regenerates tests/fixtures/tiny-llama-{bin,bin-sharded,sharded}/: a randomly initialised
tiny LlamaForCausalLM saved by transformers as PyTorch `pytorch_model.bin`, as the same
pickle split into shards with `pytorch_model.bin.index.json` (as older transformers wrote
them: the α-UMi checkpoints), and as sharded safetensors with an index, with the SentencePiece fixture as its tokenizer.model, plus the
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
    shard_pickle(pickled, FIX / "tiny-llama-bin-sharded")
    for d in (sharded, pickled, FIX / "tiny-llama-bin-sharded"):
        shutil.copy(FIX / "spm-bpe.model", d / "tokenizer.model")
        (d / "generation_config.json").unlink(missing_ok=True)
    (FIX / "tiny-llama.expected.json").write_text(json.dumps(expected) + "\n")


def shard_pickle(pickled, out, shards=3):
    """Splits `pickled`'s pytorch_model.bin into `shards` torch.save files with an index."""
    state = torch.load(pickled / "pytorch_model.bin")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    shutil.copy(pickled / "config.json", out / "config.json")
    names = list(state)
    step = -(-len(names) // shards)
    weight_map = {}
    for k in range(shards):
        part = names[k * step:(k + 1) * step]
        file = f"pytorch_model-{k + 1:05d}-of-{shards:05d}.bin"
        torch.save({n: state[n].clone() for n in part}, out / file)
        weight_map.update({n: file for n in part})
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2) + "\n")


if __name__ == "__main__":
    main()
