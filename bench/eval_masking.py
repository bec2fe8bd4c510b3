"""Recall and precision of the masking detectors on the labelled corpus, per entity and overall.

    python bench/eval_masking.py              # prints JSON, writes bench/results/masking_eval.json
    python bench/eval_masking.py --errors     # also lists misses and false alarms

A finding counts as a true positive only with the exact gold span and entity.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import masking_corpus

from skillwarden_sidecar.masking import BUILTIN_ENTITIES, Masker, MaskingSpec


def evaluate(samples: list[masking_corpus.Sample]) -> dict[str, Any]:
    masker = Masker(MaskingSpec(BUILTIN_ENTITIES))
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    errors: list[dict[str, Any]] = []
    for sample in samples:
        gold = {tuple(span) for span in sample.spans}
        found = {(f.entity, f.start, f.end) for f in masker.mask_text(sample.text).findings}
        for entity, _, _ in gold & found:
            tp[entity] += 1
        for entity, start, end in found - gold:
            fp[entity] += 1
            errors.append({"error": "false_positive", "entity": entity, "kind": sample.kind,
                           "value": sample.text[start:end]})
        for entity, start, end in gold - found:
            fn[entity] += 1
            errors.append({"error": "missed", "entity": entity, "kind": sample.kind,
                           "value": sample.text[start:end]})
    per_entity = {}
    for entity in sorted(BUILTIN_ENTITIES):
        found_total, gold_total = tp[entity] + fp[entity], tp[entity] + fn[entity]
        per_entity[entity] = {
            "support": gold_total, "tp": tp[entity], "fp": fp[entity], "fn": fn[entity],
            "precision": round(tp[entity] / found_total, 4) if found_total else 1.0,
            "recall": round(tp[entity] / gold_total, 4) if gold_total else 1.0,
        }
    all_tp, all_fp, all_fn = sum(tp.values()), sum(fp.values()), sum(fn.values())
    return {
        "samples": len(samples),
        "negative_samples": sum(1 for s in samples if not s.spans),
        "overall": {"precision": round(all_tp / (all_tp + all_fp), 4) if all_tp + all_fp else 1.0,
                    "recall": round(all_tp / (all_tp + all_fn), 4) if all_tp + all_fn else 1.0,
                    "tp": all_tp, "fp": all_fp, "fn": all_fn},
        "per_entity": per_entity,
        "errors": errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--errors", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "masking_eval.json"))
    args = parser.parse_args()
    report = evaluate(masking_corpus.build())
    errors = report.pop("errors")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if args.errors:
        for error in errors:
            print(json.dumps(error, ensure_ascii=False), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
