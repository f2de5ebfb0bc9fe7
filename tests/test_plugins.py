"""Plugin discovery through real entry points: broken plugins are listed, the others still load."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import run_ee

import embedeverything as ee
from embedeverything.encoder import validate_encoder_class
from embedeverything.errors import UserError
from embedeverything.plugins import get_encoder, register_plugin, registry, unregister_plugin


def make_dist(site, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """A minimal installed distribution (dist-info with entry points) on a path we put on PYTHONPATH."""
    info = site / f"{dist}-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\n")
    eps = "[embedeverything]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(eps)
    for name, code in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(code))


GOOD = """
    import numpy as np
    import embedeverything as ee

    class Ones(ee.Encoder):
        name, modality, dim = "ones", "text", 3
        def load(self):
            return ee.Weights(model_id="ones", weights="none")
        def embed_batch(self, items):
            return np.ones((len(items), 3), np.float32)

    @ee.hookimpl
    def register_encoders(register):
        register(Ones)
"""


def test_broken_plugins_are_listed_and_the_others_still_load(tmp_path):
    site = tmp_path / "site"
    make_dist(
        site,
        "ee-mixed",
        {
            "goodplug": "goodplug",
            "importfails": "importfails",
            "hookraises": "hookraises",
            "notanencoder": "notanencoder",
            "typo": "typo",
            "dupe": "dupe",
        },
        {
            "goodplug": GOOD,
            "importfails": "import no_such_module_anywhere\n",
            "hookraises": """
                import embedeverything as ee
                @ee.hookimpl
                def register_encoders(register):
                    raise RuntimeError("model zoo offline")
            """,
            "notanencoder": """
                import embedeverything as ee
                @ee.hookimpl
                def register_encoders(register):
                    register(dict)
            """,
            "typo": """
                import embedeverything as ee
                @ee.hookimpl
                def register_encoderz(register):
                    pass
            """,
            "dupe": GOOD.replace("Ones", "Twos"),
        },
    )
    r = run_ee("encoders", "--json", env={"PYTHONPATH": str(site)})
    assert r.code == 0, r.err
    listing = json.loads(r.out)
    names = {e["name"] for e in listing["encoders"]}
    assert {"ones", "test-text", "test-image", "test-audio"} <= names
    ones = next(e for e in listing["encoders"] if e["name"] == "ones")
    assert ones["plugin"] == "goodplug 0.3" and ones["dim"] == 3
    broken = {b["plugin"]: b["reason"] for b in listing["broken"]}
    assert "no_such_module_anywhere" in broken["importfails"]
    assert "model zoo offline" in broken["hookraises"]
    assert "not a subclass" in broken["notanencoder"]
    assert "register_encoderz" in broken["typo"]
    assert "already registered" in broken["dupe"]
    table = run_ee("encoders", env={"PYTHONPATH": str(site)})
    assert table.code == 0 and "broken plugin" in table.out and "Traceback" not in table.out + table.err


def test_load_plugins_env_restricts_loading():
    r = run_ee("encoders", "--json", env={"EE_LOAD_PLUGINS": ""})
    assert json.loads(r.out)["encoders"] == []
    r = run_ee("encoders", "--json", env={"EE_LOAD_PLUGINS": "testenc"})
    assert {e["name"] for e in json.loads(r.out)["encoders"]} == {"test-text", "test-image", "test-audio"}


def test_listing_encoders_imports_no_torch():
    code = (
        "import sys\n"
        "from embedeverything.cli import main\n"
        "try:\n    main(['encoders'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'open_clip', 'torchvggish', 'timm', 'zarr') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_in_process_registration_and_unknown_names():
    class Mean(ee.Encoder):
        name, modality, dim = "mean-image", "image", 3

        def load(self):
            return ee.Weights(model_id="mean", weights="none")

        def embed_batch(self, items):
            return np.stack([x.reshape(-1, 3).mean(0) for x in items]).astype(np.float32)

    class Plugin:
        @ee.hookimpl
        def register_encoders(self, register):
            register(Mean)

    register_plugin(Plugin(), name="mean-plugin", version="9.9")
    try:
        enc = get_encoder("mean-image")
        assert enc.plugin_name == "mean-plugin" and enc.plugin_version == "9.9"
        out = enc.embed([np.full((4, 5, 3), 7, np.uint8)])
        assert out.shape == (1, 3) and out.dtype == np.float32 and np.allclose(out, 7)
        assert enc.identity().plugin_version == "9.9"
    finally:
        unregister_plugin("mean-plugin")
    assert "mean-image" not in registry().encoders
    with pytest.raises(UserError, match="unknown encoder 'mean-image'"):
        get_encoder("mean-image")


def test_encoder_contract_is_checked():
    class NoEmbed(ee.Encoder):
        name, modality, dim = "x", "text", 2

        def load(self):
            return ee.Weights(model_id="x", weights="none")

    class BadModality(NoEmbed):
        modality = "smell"

        def embed_batch(self, items):
            return np.zeros((len(items), 2), np.float32)

    assert "embed_batch" in validate_encoder_class(NoEmbed)
    assert "smell" in validate_encoder_class(BadModality)


def test_frozen_encoder_modules_and_no_grad():
    torch = pytest.importorskip("torch")

    class Lin(ee.Encoder):
        name, modality, dim = "lin", "text", 4

        def load(self):
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Dropout(0.5))
            return ee.Weights(model_id="lin", weights="random-init", seed=0)

        def torch_modules(self):
            return [self.net]

        def embed_batch(self, items):
            x = torch.tensor([[len(s), s.count("a")] for s in items], dtype=torch.float32)
            out = self.net(x)
            assert not out.requires_grad and not torch.is_grad_enabled()
            return out

    enc = Lin()
    a = enc.embed(["aa", "banana"] * 3)
    b = enc.embed(["aa", "banana"] * 3)
    assert np.array_equal(a, b)  # eval mode: dropout is off
    assert not enc.net.training
    assert all(not p.requires_grad for p in enc.net.parameters())
    assert enc.identity().weights == "random-init" and enc.identity().seed == 0


# ---- the bundled plugins and the examples use the public API only ---------------------------------


def public_api_violations(source: str, where: str) -> list[str]:
    """Each use of embedeverything beyond its top-level exports (``embedeverything.__all__``): a
    submodule (``embedeverything.weights``), a private name, or a name the package does not export."""
    import ast

    public = set(ee.__all__)
    tree = ast.parse(source)
    aliases: set[str] = set()
    bad: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "embedeverything":
                    aliases.add(a.asname or a.name)
                elif a.name.startswith("embedeverything."):
                    bad.append(f"{where}:{node.lineno}: import {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("embedeverything."):
                bad.append(f"{where}:{node.lineno}: from {node.module} import ...")
            elif node.module == "embedeverything":
                bad += [
                    f"{where}:{node.lineno}: from embedeverything import {a.name}"
                    for a in node.names
                    if a.name not in public
                ]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            if node.attr not in public:
                bad.append(f"{where}:{node.lineno}: {node.value.id}.{node.attr}")
    return bad


def plugin_sources() -> list:
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    folders = [root / "plugins", root / "tests" / "ee-testenc"]
    folders += [d for d in (root / "examples").iterdir() if d.is_dir()]
    files = sorted(p for folder in folders for p in folder.rglob("*.py"))
    assert any("embedeverything_clip" in str(p) for p in files) and any("ee_minilm" in str(p) for p in files)
    return files


def test_plugins_and_examples_import_only_the_public_api():
    bad = [v for p in plugin_sources() for v in public_api_violations(p.read_text(), p.name)]
    assert not bad, "plugins must use only embedeverything's top-level exports:\n" + "\n".join(bad)


def test_the_public_api_check_catches_private_imports():
    code = textwrap.dedent(
        """
        import embedeverything as ee
        import embedeverything.weights
        from embedeverything import Encoder, _lazy, file_digest
        from embedeverything.encoder import Encoder as E
        ee.Encoder, ee._EXPORTS, ee.weights
        """
    )
    found = public_api_violations(code, "x.py")
    assert [v.split(": ", 1)[1] for v in found] == [
        "import embedeverything.weights",
        "from embedeverything import _lazy",
        "from embedeverything import file_digest",
        "from embedeverything.encoder import ...",
        "ee._EXPORTS",
        "ee.weights",
    ]
