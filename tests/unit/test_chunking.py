"""Splitting long answers into channel-sized parts."""

from __future__ import annotations

import re

import pytest

from core.chunking import split_text


def test_short_text_is_one_part() -> None:
    assert split_text("  hello  ", 100) == ["hello"]


def test_parts_fit_and_prefer_paragraph_then_sentence_then_word_boundaries() -> None:
    paragraphs = ["First paragraph. " * 5, "Second one. " * 5, "Third. " * 40]
    parts = split_text("\n\n".join(p.strip() for p in paragraphs), 120)
    assert all(len(part) <= 120 for part in parts)
    assert parts[0] == paragraphs[0].strip()  # the first paragraph fits whole: cut after it
    assert all(part.endswith(".") for part in parts)  # every cut fell after a sentence
    assert " ".join(parts).split() == "\n\n".join(paragraphs).split()  # nothing lost


def test_a_long_word_is_cut_only_when_nothing_else_fits() -> None:
    parts = split_text("x" * 250, 100)
    assert all(len(part) <= 100 for part in parts) and "".join(parts) == "x" * 250


def test_code_blocks_are_closed_and_reopened_across_parts() -> None:
    code = "\n".join(f"print({n})" for n in range(100))
    text = f"Here:\n\n```python\n{code}\n```\n\nDone."
    parts = split_text(text, 200)
    assert len(parts) > 3 and all(len(part) <= 200 for part in parts)
    for part in parts:
        assert part.count("```") % 2 == 0, part
    assert parts[1].startswith("```python\n")
    joined = "\n".join(parts)
    assert all(f"print({n})" in joined for n in range(100))


def test_limit_too_small_is_refused() -> None:
    with pytest.raises(ValueError, match="too small"):
        split_text("abc", 10)


LINK = re.compile(r"<[^<>]*>")


def test_a_cut_never_falls_inside_a_span_kept_whole() -> None:
    link = "<https://example.com/reports/2026/q3|the quarterly report with all the numbers>"
    text = "word " * 14 + link + " and some words after it." * 5
    unprotected = split_text(text, 120)  # the last space that fits is in the label
    assert unprotected[0].count("<") != unprotected[0].count(">")
    parts = split_text(text, 120, keep_whole=LINK)
    assert all(len(part) <= 120 for part in parts)
    assert sum(part.count(link) for part in parts) == 1
    assert all(part.count("<") == part.count(">") for part in parts)
    assert " ".join(parts).split() == text.split()


def test_a_span_without_a_boundary_before_it_starts_the_next_part() -> None:
    link = "<https://example.com/" + "a" * 30 + "|label>"
    text = "x" * 100 + link
    parts = split_text(text, 120, keep_whole=LINK)
    assert parts == ["x" * 100, link]


def test_a_span_longer_than_a_part_is_still_cut() -> None:
    link = "<https://example.com/" + "a" * 200 + ">"
    parts = split_text(link, 120, keep_whole=LINK)
    assert all(len(part) <= 120 for part in parts) and "".join(parts) == link
