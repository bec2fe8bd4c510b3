"""The labelled corpus (bench/masking_corpus.py) scored by bench/eval_masking.py: the thresholds
the README promises, checked on every run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    sys.path.insert(0, str(BENCH))
    try:
        import eval_masking
        import masking_corpus
    finally:
        sys.path.remove(str(BENCH))
    result: dict[str, Any] = eval_masking.evaluate(masking_corpus.build())
    return result


def test_overall_recall_and_precision_at_least_097(report: dict[str, Any]) -> None:
    assert report["overall"]["recall"] >= 0.97, report["overall"]
    assert report["overall"]["precision"] >= 0.97, report["overall"]


def test_every_entity_has_positives_and_is_mostly_found(report: dict[str, Any]) -> None:
    for entity, figures in report["per_entity"].items():
        assert figures["support"] >= 100, entity
        assert figures["precision"] >= 0.97, (entity, figures)
        assert figures["recall"] >= 0.9, (entity, figures)


def test_hard_negatives_are_present(report: dict[str, Any]) -> None:
    assert report["negative_samples"] >= 500


def test_corpus_is_deterministic() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import masking_corpus
    finally:
        sys.path.remove(str(BENCH))
    assert [s.text for s in masking_corpus.build()] == [s.text for s in masking_corpus.build()]
