"""examples/cartpole_safety.py runs, and the rule keeps the cart on the track."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cartpole_safety.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cartpole_safety", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_rule_keeps_the_cart_on_the_track() -> None:
    example = _load()
    governed = example.main(example.Args(num_envs=64, steps=400))
    ungoverned = example.main(example.Args(num_envs=64, steps=400, governed=False))
    assert ungoverned["off_track"] > 0 and ungoverned["blocked"] == 0
    assert governed["off_track"] == 0 and governed["blocked"] > 0
    assert governed["cost"] == governed["blocked"]


def test_the_script_runs() -> None:
    out = subprocess.run([sys.executable, str(EXAMPLE), "--num-envs", "8", "--steps", "50"],
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.startswith("off_track ")
