"""The docs match the code: README's adapter example runs, the CLI reference is current, mkdocs builds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, text_manifest

from embedeverything.embed import embed_side
from embedeverything.train import make_config, train


def test_readme_adapter_example_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"### Loading an adapter.*?```python\n(.*?)```", readme, re.S)
    assert block, "README lost its adapter example"
    code = block.group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 6
    m = text_manifest(tmp_path / "m.jsonl", 60)
    store = str(tmp_path / "s.zarr")
    embed_side(store, str(m), "a", "test-text", {"dim": 12})
    embed_side(store, str(m), "b", "test-text", {"dim": 20, "seed": 1})
    result = train(store, None, None, tmp_path / "run", make_config(epochs=3))
    code = code.replace("ee-demo/result/train/adapter.safetensors", str(result.adapter_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("(4, ")


def test_cli_reference_is_current():
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_cli_docs.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def test_docs_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "site" / "index.html").exists()
    for page in ("concepts", "plugins", "store", "cli", "scaling"):
        assert (tmp_path / "site" / page / "index.html").exists(), page


def test_every_doc_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in Path(ROOT / "docs").glob("*.md"):
        assert page.name in nav, f"docs/{page.name} is not in mkdocs.yml's nav"
