"""The documentation holds together: every relative link (and heading anchor) of the README, docs/ and
bench/README.md leads somewhere, every YAML block parses and the resources of our kinds in it are ones the API
accepts, and docs/api-reference.md is what `make docs` generates from crds/."""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlsteward_operator.api import DriftMonitor, Experiment, ModelDeployment, ModelVersion

ROOT = Path(__file__).resolve().parents[3]
DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", ROOT / "bench" / "README.md", *DOCS.glob("*.md")])
MODELS = {"ModelVersion": ModelVersion, "ModelDeployment": ModelDeployment, "Experiment": Experiment,
          "DriftMonitor": DriftMonitor}
GUIDES = ("rollouts", "experiments", "drift-and-retraining", "access-control", "retention", "observability",
          "gitops", "api-reference", "architecture", "development", "limitations")

_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE_SPAN = re.compile(r"(`+).+?\1")


def _blocks(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str, str]]]:
    """The prose lines (number, text) outside code fences, and the fenced blocks (first line, language, body)."""
    prose: list[tuple[int, str]] = []
    blocks: list[tuple[int, str, str]] = []
    fence: tuple[str, str, int, str] | None = None  # marker, language, start line, indentation
    body: list[str] = []
    for n, line in enumerate(text.splitlines(), start=1):
        m = _FENCE.match(line)
        if fence is None and m:
            fence, body = (m.group(2), m.group(3).lower(), n, m.group(1)), []
        elif fence is not None and line.strip().startswith(fence[0]) and not line.strip().strip(fence[0][0]):
            blocks.append((fence[2], fence[1], "\n".join(body)))
            fence = None
        elif fence is not None:
            indent = fence[3]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
        else:
            prose.append((n, line))
    assert fence is None, f"a code fence opened at line {fence[2]} is never closed"
    return prose, blocks


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: the rendered text, lowercased, punctuation removed except `-` and `_`,
    each space a hyphen (github-slugger's rule)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").replace("*", "").strip().lower()
    kept = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "-_" or ch == " " or cat[0] in "LNM":
            kept.append("-" if ch == " " else ch)
    return "".join(kept)


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every heading anchor of a Markdown file, duplicates numbered as GitHub does (`x`, `x-1`, `x-2`)."""
    prose, _ = _blocks(path.read_text())
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose:
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = github_slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return frozenset(out)


def _links(path: Path) -> list[tuple[int, str]]:
    prose, _ = _blocks(path.read_text())
    out = []
    for n, line in prose:
        for m in _LINK.finditer(_CODE_SPAN.sub("", line)):
            out.append((n, m.group(1)))
    return out


def _relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)  # http:, https:, mailto: ...


def test_the_guides_exist_and_the_readme_is_short() -> None:
    missing = [g for g in GUIDES if not (DOCS / f"{g}.md").is_file()]
    assert not missing, f"docs/ lacks {missing}"
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 200, f"README.md has {len(lines)} lines"
    text = "\n".join(lines)
    for command in ("make demo", "make test"):
        assert command in text
    linked = {t.split("#")[0] for _, t in _links(ROOT / "README.md")}
    assert {f"docs/{g}.md" for g in GUIDES} <= linked, "the README links every guide"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_lead_to_existing_files_and_headings(page: Path) -> None:
    broken = []
    for n, target in _links(page):
        if not _relative(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"line {n}: {target} (no file {dest.relative_to(ROOT) if ROOT in dest.parents else dest})")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"line {n}: {target} (no heading with anchor #{anchor} in {dest.name})")
    assert not broken, f"{page.relative_to(ROOT)}:\n" + "\n".join(broken)


def _yaml_blocks() -> list[tuple[str, str]]:
    out = []
    for page in PAGES:
        if page.parent != DOCS and page != ROOT / "README.md":
            continue
        _, blocks = _blocks(page.read_text())
        out += [(f"{page.relative_to(ROOT)}:{line}", body) for line, lang, body in blocks if lang in ("yaml", "yml")]
    return out


YAML_BLOCKS = _yaml_blocks()


@cache
def crd_spec_schemas() -> dict[str, dict[str, Any]]:
    """kind -> the openAPIV3Schema of its spec, from crds/."""
    out = {}
    for path in (ROOT / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        out[crd["spec"]["names"]["kind"]] = schema["properties"]["spec"]
    return out


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "spec") -> list[str]:
    """Field paths of `value` that the structural schema does not declare (the API server would prune them)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        for key, sub in value.items():
            if key not in schema["properties"]:
                out.append(f"{path}.{key}")
            else:
                out += unknown_fields(sub, schema["properties"][key], f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return out


@pytest.mark.parametrize("where,body", YAML_BLOCKS, ids=[w for w, _ in YAML_BLOCKS])
def test_yaml_blocks_parse_and_our_resources_are_accepted(where: str, body: str) -> None:
    try:
        docs: list[Any] = [d for d in yaml.safe_load_all(body) if d is not None]
    except yaml.YAMLError as exc:
        pytest.fail(f"{where}: invalid YAML: {exc}")
    assert docs, f"{where}: an empty YAML block"
    for doc in docs:
        assert isinstance(doc, dict), f"{where}: a YAML block of a {type(doc).__name__}, not a mapping"
        if str(doc.get("apiVersion", "")).split("/")[0] == "mlsteward.io":
            assert doc.get("kind") in MODELS, f"{where}: unknown kind {doc.get('kind')!r}"
            MODELS[doc["kind"]].model_validate(doc)  # the same rules the CRD's schema and CEL carry
            unknown = unknown_fields(doc.get("spec"), crd_spec_schemas()[doc["kind"]])
            assert not unknown, f"{where}: {doc['kind']} fields not in its CRD: {unknown}"
        elif set(doc) == {"spec"}:
            # A spec excerpt (`spec:` and some fields): the spec of one of our kinds, with no field its CRD lacks.
            fits = [kind for kind, schema in crd_spec_schemas().items()
                    if not unknown_fields(doc["spec"], schema) and _accepts(kind, doc["spec"])]
            assert fits, f"{where}: the spec excerpt is not a valid spec of any of {sorted(MODELS)}"


def _accepts(kind: str, spec: Any) -> bool:
    try:
        MODELS[kind].model_fields["spec"].annotation.model_validate(spec)  # type: ignore[union-attr]
    except ValueError:
        return False
    return True


def test_the_yaml_check_sees_the_resources_of_every_kind() -> None:
    kinds = set()
    for _, body in YAML_BLOCKS:
        kinds |= {d.get("kind") for d in yaml.safe_load_all(body) if isinstance(d, dict)
                  and str(d.get("apiVersion", "")).startswith("mlsteward.io/")}
    assert kinds >= {"ModelVersion", "ModelDeployment", "Experiment"}


def test_github_slugs() -> None:
    # Headings of these docs and what GitHub renders their anchors as.
    assert github_slug("Drift: detect, then alert, roll back or retrain") == \
        "drift-detect-then-alert-roll-back-or-retrain"
    assert github_slug("Serving benchmark (`bench/serve.py`)") == "serving-benchmark-benchservepy"
    assert github_slug("On a fresh machine: `make demo`") == "on-a-fresh-machine-make-demo"
    assert github_slug("ModelDeployment spec") == "modeldeployment-spec"


def _apidocs() -> Any:
    spec = importlib.util.spec_from_file_location("apidocs", ROOT / "hack" / "apidocs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_generated_from_the_crds() -> None:
    committed = (DOCS / "api-reference.md").read_text()
    assert committed == _apidocs().render(ROOT / "crds"), "docs/api-reference.md is stale: run `make docs`"


def _paths(node: dict[str, Any], path: str):
    """Every field path of a schema node and every CEL rule below it, walked independently of the generator."""
    yield "field", path, node
    for rule in node.get("x-kubernetes-validations") or []:
        yield "rule", path, rule
    for name, sub in (node.get("properties") or {}).items():
        yield from _paths(sub, f"{path}.{name}")
    for key, mark in (("items", "[]"), ("additionalProperties", "{}")):
        sub = node.get(key)
        if isinstance(sub, dict):
            for rule in sub.get("x-kubernetes-validations") or []:
                yield "rule", path + mark, rule
            for name, child in (sub.get("properties") or {}).items():
                yield from _paths(child, f"{path}{mark}.{name}")


def test_api_reference_lists_every_field_and_every_cel_rule() -> None:
    text = _apidocs().render(ROOT / "crds")
    sections = re.split(r"^## ", text, flags=re.M)
    checked = 0
    for crd_path in sorted((ROOT / "crds").glob("*.yaml")):
        crd = yaml.safe_load(crd_path.read_text())
        kind = crd["spec"]["names"]["kind"]
        section = next(s for s in sections if s.startswith(f"{kind}\n"))
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for part in ("spec", "status"):
            if part not in schema["properties"]:
                continue
            for what, path, node in _paths(schema["properties"][part], part):
                if what == "field":
                    assert f"| `{path}` |" in section, f"{kind}: {path} is missing"
                else:
                    message = " ".join(node["message"].split()).replace("|", "\\|")
                    assert any(f"| `{path}` |" in row and message in row for row in section.splitlines()), \
                        f"{kind}: the rule of {path} ({node['message']}) is missing"
                checked += 1
    assert checked > 200
