#!/usr/bin/env python3
"""Writes a random-weight LLaMA-shaped HuggingFace checkpoint, for measuring load time,
memory and speed at real sizes without the real weights. Its text is noise: it is never a
model and must never be presented as one.

    scripts/make_llama_checkpoint.py SIZE OUT_DIR --tokenizer tokenizer.json [--seed N]

SIZE: tiny (CI), 1b (TinyLlama-shaped), 7b or 13b (LLaMA-2-shaped). The weights are bf16,
seeded, of magnitude 2^-7..2^-6 (no NaN or inf), in safetensors shards of at most
--shard-gb GB with model.safetensors.index.json, as HuggingFace writes them. The tokenizer
is copied in; the vocabulary size follows it (LLaMA-2's own tokenizer.json cannot be
downloaded here). Pure Python: no numpy, no torch.
"""
import argparse
import json
import os
import random
import shutil
import struct

SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2),
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
               num_attention_heads=32, num_key_value_heads=4),
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=32),
    "13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                num_attention_heads=40, num_key_value_heads=40),
}

# High byte of a little-endian bf16: keep the sign, exponent 120..121 (the low byte's top
# bit is the exponent's last bit): values of magnitude 2^-7..2^-6, never NaN or inf.
HIGH = bytes((b & 0x80) | 0x3C for b in range(256))
# The same, 16x larger (exponent 124..125): the output rows of the "decisive" tokens.
HOT_HIGH = bytes((b & 0x80) | 0x3E for b in range(256))
# With random weights every logit is a near-tie at bf16's resolution, so two correct
# implementations (even transformers' own generate and full forward) part ways after a
# few greedy tokens. These output rows score 16x the others: the greedy pick is one of
# them, by margins far above rounding, and which one still depends on every layer.
HOT_TOKENS = range(1000, 1016)


def tensors(shape, vocab):
    h, i, n = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = h // shape["num_attention_heads"] * shape["num_key_value_heads"]
    yield "model.embed_tokens.weight", (vocab, h)
    for layer in range(n):
        p = f"model.layers.{layer}."
        yield p + "input_layernorm.weight", (h,)
        yield p + "self_attn.q_proj.weight", (h, h)
        yield p + "self_attn.k_proj.weight", (kv, h)
        yield p + "self_attn.v_proj.weight", (kv, h)
        yield p + "self_attn.o_proj.weight", (h, h)
        yield p + "post_attention_layernorm.weight", (h,)
        yield p + "mlp.gate_proj.weight", (i, h)
        yield p + "mlp.up_proj.weight", (i, h)
        yield p + "mlp.down_proj.weight", (h, i)
    yield "model.norm.weight", (h,)
    yield "lm_head.weight", (vocab, h)


def random_bf16(rng, count, norm, out):
    """Writes `count` bf16 values to `out`, in chunks (memory stays small)."""
    if norm:
        out.write(bytes([0x80, 0x3F]) * count)  # 1.0: RMSNorm weights start at one
        return
    chunk = 1 << 24
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        data = bytearray(rng.randbytes(2 * n))
        data[1::2] = data[1::2].translate(HIGH)
        out.write(data)


def random_head(rng, vocab, hidden, out):
    """lm_head: random rows, the HOT_TOKENS' rows 16x larger."""
    for row in range(vocab):
        data = bytearray(rng.randbytes(2 * hidden))
        data[1::2] = data[1::2].translate(HOT_HIGH if row in HOT_TOKENS else HIGH)
        out.write(data)


def write_shard(path, entries, rng):
    """entries: (name, shape, count); the data is generated while it is written."""
    header, offset = {}, 0
    for name, shape, count in entries:
        header[name] = {"dtype": "BF16", "shape": list(shape),
                        "data_offsets": [offset, offset + 2 * count]}
        offset += 2 * count
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, shape, count in entries:
            if name == "lm_head.weight":
                random_head(rng, shape[0], shape[1], f)
            else:
                random_bf16(rng, count, name.endswith("norm.weight"), f)
    os.replace(path + ".tmp", path)
    return offset


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("size", choices=sorted(SHAPES))
    ap.add_argument("out")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-gb", type=float, default=5.0)
    a = ap.parse_args()
    shape = SHAPES[a.size]
    tok = json.load(open(a.tokenizer))
    ids = list(tok["model"]["vocab"].values()) + [t["id"] for t in tok.get("added_tokens", [])]
    vocab = max(ids) + 1
    os.makedirs(a.out, exist_ok=True)
    shutil.copy(a.tokenizer, os.path.join(a.out, "tokenizer.json"))
    rng = random.Random(a.seed)
    names = list(tensors(shape, vocab))
    limit = int(a.shard_gb * 1e9)
    shards, current, size = [], [], 0
    for name, dims in names:
        count = 1
        for d in dims:
            count *= d
        if current and size + 2 * count > limit:
            shards.append(current)
            current, size = [], 0
        current.append((name, dims, count))
        size += 2 * count
    shards.append(current)
    weight_map, total = {}, 0
    for k, shard in enumerate(shards):
        file = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        total += write_shard(os.path.join(a.out, file), shard, rng)
        for n, _, _ in shard:
            weight_map[n] = file
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    config = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=vocab,
                  max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0,
                  tie_word_embeddings=False, hidden_act="silu", torch_dtype="bfloat16",
                  bos_token_id=1, eos_token_id=2, **shape)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"{a.size}: {total / 1e9:.2f} GB of bf16 weights in {len(shards)} shards -> {a.out}")


if __name__ == "__main__":
    main()
