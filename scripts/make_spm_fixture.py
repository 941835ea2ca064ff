#!/usr/bin/env python3
"""Regenerates tests/fixtures/spm-bpe.model and spm-bpe.expected.json.

Trains a small SentencePiece BPE model with LLaMA's settings (byte fallback, split digits,
identity normalization, dummy prefix, whitespace kept) and records how SentencePiece itself
encodes some strings, so umi's tokenizer.model loader is checked against the real library.
Needs `pip install sentencepiece`.
"""
import io
import json
import pathlib

import sentencepiece as spm

HERE = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"
CORPUS = """You have assess to the following apis:
The conversation history is:
user: Find me comedy videos about cats and dogs.
assistant: I should call the search API with the query comedy. Next: caller.
caller: Action: search_for_youtube_search
Action Input: {"q": "comedy"}
observation: {"items": [{"title": "Funny cats 2024", "views": 1234567}]}
conclusion: Here are some comedy videos for you: Funny cats 2024.
Make a conclusion based on the conversation history.
The thought of the next step, followed by Next: caller or conclusion or give up.
""" * 20

SAMPLES = [
    "user: Find me comedy videos.",
    "assistant: I should call search. Next: caller.",
    "Action Input: {\"q\": \"comedy\", \"n\": 42}",
    "  leading spaces and    runs",
    "naïve café — ünïcödé ✓ 漢字",
    "tabs\tand\nnewlines",
]


def main():
    HERE.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.splitlines()),
        model_writer=model,
        model_type="bpe",
        vocab_size=400,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
    )
    (HERE / "spm-bpe.model").write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    expected = [{"text": s, "ids": sp.encode(s), "decoded": sp.decode(sp.encode(s))} for s in SAMPLES]
    (HERE / "spm-bpe.expected.json").write_text(json.dumps(expected, ensure_ascii=False, indent=1) + "\n")


if __name__ == "__main__":
    main()
