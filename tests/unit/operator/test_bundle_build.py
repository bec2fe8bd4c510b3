"""Bundles are deterministic, content-addressed and carry only the vetted Rego plus data."""

from __future__ import annotations

import copy
import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import yaml

from skillwarden_operator import fixtures
from skillwarden_operator.bundle import build_bundle, content_revision, read_bundle

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return loaded


def test_same_policies_same_bytes_whatever_the_order() -> None:
    finance = example("skillpolicy-finance.yaml")
    other = copy.deepcopy(finance)
    other["metadata"]["name"] = "a-second-policy"
    other["spec"]["rules"] = []
    first = build_bundle("finance", [finance, other])
    second = build_bundle("finance", [copy.deepcopy(other), copy.deepcopy(finance)])
    assert first.data == second.data
    assert first.revision == second.revision
    assert first.etag == f'"{first.revision}"'


def test_archive_layout_manifest_and_revision() -> None:
    bundle = build_bundle("finance", [example("skillpolicy-finance.yaml")])
    files = read_bundle(bundle.data)
    assert sorted(files) == [".manifest", "skillwarden/bundle/data.json", "skillwarden/policies/data.json",
                             "skillwarden/skillwarden.rego"]
    manifest = json.loads(files[".manifest"])
    assert manifest == {"revision": bundle.revision, "roots": ["skillwarden"]}
    assert json.loads(files["skillwarden/bundle/data.json"]) == {"revision": bundle.revision}
    # The revision is the hash of what decides: the Rego and the compiled data.
    assert bundle.revision == content_revision({k: v for k, v in files.items()
                                                if k in ("skillwarden/skillwarden.rego",
                                                         "skillwarden/policies/data.json")})
    # Fixed metadata: nothing about the build machine or time leaks into the bytes.
    with tarfile.open(fileobj=io.BytesIO(bundle.data), mode="r:gz") as tar:
        for member in tar.getmembers():
            assert (member.mtime, member.uid, member.gid, member.mode) == (0, 0, 0, 0o644)
    assert gzip.decompress(bundle.data)  # valid gzip
    assert bundle.data[4:8] == b"\x00\x00\x00\x00"  # gzip header mtime


def test_any_change_changes_the_revision() -> None:
    finance = example("skillpolicy-finance.yaml")
    base = build_bundle("finance", [finance])
    edited = copy.deepcopy(finance)
    edited["spec"]["rules"][0]["message"] = "changed"
    assert build_bundle("finance", [edited]).revision != base.revision
    assert build_bundle("other", [finance]).revision != base.revision


def test_invalid_policy_is_reported_and_poisons_the_namespace() -> None:
    finance = example("skillpolicy-finance.yaml")
    bad = copy.deepcopy(finance)
    bad["metadata"]["name"] = "bad"
    bad["spec"]["masking"]["upstream"] = ["NOT_AN_ENTITY"]
    bundle = build_bundle("finance", [finance, bad])
    assert list(bundle.invalid) == ["finance/bad"]
    assert bundle.included == ("finance/finance-reporting",)
    assert bundle.document["invalid"][0]["policy"] == "finance/bad"


def test_rules_are_indexed_by_the_key_they_require() -> None:
    bundle = build_bundle("platform-sandbox", [example("skillpolicy-platform-blocklist.yaml")])
    index = bundle.document["rule_index"]
    rules = bundle.document["rules"]
    by_skill = index["skill"]["custom/skill_01SandboxUploader"]
    assert [rules[i]["name"] for i in by_skill] == ["no-code-exec-custom-skills"]
    assert [rules[i]["name"] for i in index["model_prefix"]["claude-opus-"]] == ["no-opus"]
    private_key = bundle.document["prompt_patterns"]["patterns"].index("-----BEGIN [A-Z ]*PRIVATE KEY-----")
    assert [rules[i]["name"] for i in index["pattern"][str(private_key)]] == ["no-private-keys"]
    assert [rules[i]["name"] for i in index["any"]] == ["no-skill-deletes"]


def test_rego_fixtures_are_current() -> None:
    for name, content in fixtures.fixtures().items():
        on_disk = (fixtures.TESTDATA / name / "data.json").read_bytes()
        assert on_disk == content + b"\n", f"stale {name}: run python -m skillwarden_operator.fixtures"


def test_pattern_ids_name_their_position_in_the_table() -> None:
    """Ids are decimal positions: with more than ten patterns a string sort ("10" < "2") would
    point rules at the wrong pattern."""
    finance = example("skillpolicy-finance.yaml")
    finance["spec"]["rules"] = [{"name": f"r{i}", "action": "deny",
                                 "when": {"promptMatches": [f"topic-{i:02d}"]}} for i in range(25)]
    document = build_bundle("finance", [finance]).document
    table = document["prompt_patterns"]["patterns"]
    assert len(table) == 25
    for rule in document["rules"]:
        assert [table[int(i)] for i in rule["when"]["promptPatterns"]] == rule["when"]["promptMatches"]
    for pattern_id, rules in document["rule_index"]["pattern"].items():
        assert all(table[int(pattern_id)] in document["rules"][r]["when"]["promptMatches"] for r in rules)
