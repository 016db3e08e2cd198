"""A small sentencepiece tokenizer, trained on the spot."""

from __future__ import annotations

from pathlib import Path


def train_tiny_tokenizer(directory: Path) -> Path:
    """A small sentencepiece model, trained here with the sentencepiece package."""
    import sentencepiece as spm

    corpus = directory / "corpus.txt"
    corpus.write_text("hello world\nthe quick brown fox jumps over the lazy dog\n"
                      "moshi speaks and listens\nwheels for every gpu target\nhello moshi\n")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(directory / "tiny"), vocab_size=60,
                                   model_type="unigram", hard_vocab_limit=False, character_coverage=1.0,
                                   normalization_rule_name="identity")
    return directory / "tiny.model"
