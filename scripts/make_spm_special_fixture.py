#!/usr/bin/env python3
"""Regenerates tests/fixtures/spm-special.expected.json.

How transformers' slow `LlamaTokenizer` (`use_fast=False`, the α-UMi checkpoints' tokenizer,
saved with transformers 4.28.1) encodes text with special-token strings in it (`</s>`, `<s>`,
`<unk>`) and spaces or newlines around them, on the SentencePiece fixture
tests/fixtures/spm-bpe.model (made by scripts/make_spm_fixture.py with LLaMA's settings).

The tokenizer is set up as α-UMi's was: a `LlamaTokenizer` on the model file (bos `<s>`, eos
`</s>`, unk `<unk>`, which it wraps as `AddedToken`s with lstrip/rstrip False), `pad_token =
unk_token` as training does, written with `save_pretrained` and read back with
`AutoTokenizer.from_pretrained(..., use_fast=False)`, so the special_tokens_map.json round trip
is part of it. Each case records `encode(text)` (BOS included) and
`decode(ids, skip_special_tokens=True)` (4.28.1's LlamaTokenizer defaults to
`clean_up_tokenization_spaces=False`, so decode does no clean-up).

What 4.28.1 does: the special strings split out with no whitespace stripped on either side,
each chunk between them encoded on its own with its own dummy prefix (`hi</s> ok` is
`<s> ▁h i </s> ▁ ▁o k`), and decode is SentencePiece's decode of the remaining pieces, which
drops only the first piece's leading space. transformers 4.57.6 with `legacy=True` gives the
same ids for every case, but its decode also drops the leading `▁` of text that starts with a
space (`</s> hi` decodes to `hi`, not ` hi`): 10 cases differ, all in decode (`--compare`).

    python3 -m venv venv && venv/bin/pip install transformers==4.28.1 sentencepiece
    venv/bin/python scripts/make_spm_special_fixture.py           # writes the fixture
    venv/bin/python scripts/make_spm_special_fixture.py --compare # checks another version
                                                                  # (legacy=True) against it
"""
import json
import pathlib
import sys
import tempfile

import transformers
from transformers import AutoTokenizer, LlamaTokenizer

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"
MODEL = FIXTURES / "spm-bpe.model"
OUT = FIXTURES / "spm-special.expected.json"

HISTORY = (
    "user: Find me comedy videos.</s>assistant: I should call search. Next: caller.</s>"
    "caller: Action: search_for_youtube_search\nAction Input: {\"q\": \"comedy\"}</s>"
    "observation: {\"items\": []}\n"
)

CASES = [
    # </s> with spaces on either side
    "hi</s>ok",
    "hi </s>ok",
    "hi</s> ok",
    "hi </s> ok",
    "hi  </s>  ok",
    # <s> and <unk> the same way
    "hi<s>ok",
    "hi <s>ok",
    "hi<s> ok",
    "hi <s> ok",
    "hi<unk>ok",
    "hi <unk>ok",
    "hi<unk> ok",
    "hi <unk> ok",
    # at the start of the text
    "</s>hi",
    "</s> hi",
    " </s>hi",
    "<s>hi",
    "<s> hi",
    " <s> hi",
    "<unk>hi",
    "<unk> hi",
    " hi",
    "  hi",
    # at the end
    "hi</s>",
    "hi </s>",
    "hi</s> ",
    "hi<s> ",
    "hi<unk> ",
    "hi ",
    "hi  ",
    # specials next to each other, or alone
    "</s>",
    "<s>",
    "<unk>",
    " ",
    "</s><s>",
    "</s> <s>",
    "hi</s></s>ok",
    "hi</s> </s> ok",
    "<s></s><unk>",
    # newlines next to them
    "hi\n</s>\nok",
    "hi</s>\nok",
    "hi\n</s>ok",
    "hi</s>\n ok",
    "hi \n</s>",
    "</s>\n",
    "\n</s>",
    "hi\n<s> ok",
    "hi<unk>\nok",
    # not special: near misses stay text
    "hi</ s>ok",
    "hi<S>ok",
    "hi</s",
    # the α-UMi prompts' joins
    "user: hi</s>assistant: ok",
    "Make a conclusion based on the conversation history:\n" + HISTORY
    + "assistant: The video is found. Next: conclusion.</s> conclusion: ",
    "The conversation history is:\n" + HISTORY
    + "assistant: I should call search. Next: caller.</s>caller: ",
    "Answer with a following format:\n"
    "The thought of the next step, followed by Next: caller or conclusion or give up. assistant: ",
    "conclusion: Here are some comedy videos for you.</s>",
    "</s>caller: Action: search",
    "</s> conclusion: Funny cats 2024.",
]


def alpha_umi_tokenizer(**extra):
    """A LlamaTokenizer on the fixture, saved and loaded back as α-UMi's checkpoints were."""
    tok = LlamaTokenizer(vocab_file=str(MODEL), **extra)
    tok.pad_token = tok.unk_token  # GLPFT/train.py
    with tempfile.TemporaryDirectory() as d:
        tok.save_pretrained(d)
        special_map = json.loads((pathlib.Path(d) / "special_tokens_map.json").read_text())
        loaded = AutoTokenizer.from_pretrained(d, use_fast=False, **extra)
    assert type(loaded).__name__ == "LlamaTokenizer", type(loaded)
    return loaded, special_map


def run(tok):
    out = []
    for text in CASES:
        ids = tok.encode(text)
        out.append(
            {
                "text": text,
                "ids": ids,
                "pieces": tok.convert_ids_to_tokens(ids),
                "decoded": tok.decode(ids, skip_special_tokens=True),
            }
        )
    return out


def main():
    if "--compare" in sys.argv:
        # Another transformers version, in legacy mode, against the written fixture.
        tok, _ = alpha_umi_tokenizer(legacy=True)
        want = json.loads(OUT.read_text())["cases"]
        got = run(tok)
        differ = 0
        for w, g in zip(want, got):
            for key in ("ids", "decoded"):
                if w[key] != g[key]:
                    differ += 1
                    print(f"{w['text']!r} {key}: fixture {w[key]!r}, {transformers.__version__} {g[key]!r}")
        print(f"transformers {transformers.__version__} (legacy=True): {differ} differences in {len(got)} cases")
        return
    tok, special_map = alpha_umi_tokenizer()
    fixture = {
        "transformers": transformers.__version__,
        "special_tokens_map": special_map,
        "cases": run(tok),
    }
    OUT.write_text(json.dumps(fixture, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {len(CASES)} cases to {OUT} with transformers {transformers.__version__}")


if __name__ == "__main__":
    main()
