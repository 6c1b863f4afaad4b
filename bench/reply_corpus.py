"""How often the email channel's visible reply is right, on a public corpus of real reply emails.

The corpus is the fixtures of GitHub's ``email_reply_parser`` (MIT, its LICENSE beside them in
``bench/corpus/email_reply_parser/``). Its tests say, per fixture, which fragments are quoted and
which hidden; the expected visible reply is the text of the fragments that are neither, written
below as line ranges of each fixture (1-based, inclusive). Texts are compared with trailing
spaces and runs of blank lines normalised. ``email_long_quote`` and ``pathological`` are left out:
their tests time the parser and state no visible text.

    python -m bench.reply_corpus [--output FILE] [--show-failures]
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.report import RESULTS, code_version, replace_section, table
from triggers.email.text import strip_quoted

CORPUS = Path(__file__).resolve().parent / "corpus" / "email_reply_parser"

# fixture -> the line ranges its authors' fragment flags leave visible and unquoted
EXPECTED: dict[str, list[tuple[int, int]]] = {
    "correct_sig": [(1, 1)],
    "email_1_1": [(1, 5)],  # "-Abhishek Kona" and the list footer are signature
    "email_1_2": [(1, 1), (9, 34)],  # bottom-posted below the quote
    "email_1_3": [(1, 3)],
    "email_1_4": [(1, 1)],
    "email_1_5": [(1, 15)],
    "email_1_6": [(1, 3)],
    "email_1_7": [(1, 1)],
    "email_1_8": [(13, 13), (19, 19)],  # answers interleaved with the quote
    "email_2_1": [(1, 1)],  # Outlook, dashed rule
    "email_2_2": [(1, 1)],  # Outlook, underscore rule
    "email_2_3": [(1, 1)],
    "email_BlackBerry": [(1, 1)],
    "email_iPhone": [(1, 1)],
    "email_multi_word_sent_from_my_mobile_device": [(1, 1)],
    "email_sent_from_my_not_signature": [(1, 3)],
    "email_bullets": [(1, 9)],
    "email_one_is_not_on": [(1, 5)],
    "email_sig_delimiter_in_middle_of_line": [(1, 7)],
    "greedy_on": [(1, 6)],
}


@dataclass(frozen=True)
class Verdict:
    fixture: str
    expected: str
    got: str

    @property
    def right(self) -> bool:
        return self.expected == self.got


def normalised(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def expected_reply(fixture: str, lines: list[str]) -> str:
    parts = ("\n".join(lines[first - 1 : last]) for first, last in EXPECTED[fixture])
    return normalised("\n\n".join(parts))


def judge(corpus: Path = CORPUS) -> list[Verdict]:
    verdicts = []
    for fixture in EXPECTED:
        text = (corpus / f"{fixture}.txt").read_bytes().decode("utf-8")
        lines = text.replace("\r\n", "\n").split("\n")
        verdicts.append(
            Verdict(fixture, expected_reply(fixture, lines), normalised(strip_quoted(text)))
        )
    return verdicts


def section(verdicts: list[Verdict]) -> str:
    right = sum(verdict.right for verdict in verdicts)
    wrong = [verdict.fixture for verdict in verdicts if not verdict.right]
    lines = [
        "## Email: the visible reply on a public corpus (bench/reply_corpus.py, issue 17)",
        "",
        f"Code: {code_version()}. Corpus: GitHub's `email_reply_parser` fixtures (MIT), the",
        "expected text from its tests' fragment flags (visible and not quoted).",
        "",
        *table(["right", "of", "wrong"], [[right, len(verdicts), ", ".join(wrong) or "none"]]),
        "",
        "Measured once (2026-12-03) on the same 20 fixtures and expectations: main before issue",
        "17's fix (753d9ae) 13; the libraries, each cutting at the first quote header, so none",
        "keeps a bottom-posted or interleaved answer: `email-reply-parser` 0.5.12 (2020) 17,",
        "`mail-parser-reply` 1.36 8 (keeps Outlook's `____` rule), `quotequail` 0.5.4 3.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--show-failures", action="store_true")
    args = parser.parse_args(argv)
    verdicts = judge()
    text = section(verdicts)
    replace_section(text, args.output)
    print(text)
    if args.show_failures:
        for verdict in verdicts:
            if not verdict.right:
                print(f"### {verdict.fixture}\n--- expected\n{verdict.expected}")
                print(f"--- got\n{verdict.got}")
    return 0 if all(verdict.right for verdict in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
