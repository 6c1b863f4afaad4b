"""The public reply corpus of bench/reply_corpus.py, kept right as a regression test."""

from __future__ import annotations

from bench.reply_corpus import judge


def test_every_fixture_of_the_public_reply_corpus_gives_its_visible_reply() -> None:
    wrong = [verdict for verdict in judge() if not verdict.right]
    assert [verdict.fixture for verdict in wrong] == []
