"""README's quick-start commands and CI must not drift apart."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quickstart() -> list[str]:
    spec = importlib.util.spec_from_file_location("readme_commands", ROOT / ".ci" / "readme_commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.quickstart(ROOT / "README.md")


def test_readme_starts_with_two_commands_install_then_main_job_then_tests():
    lines = _quickstart()
    assert len(lines) == 2
    main, tests = lines
    assert "pip install" in main and "erf measure" in main
    assert "pip install" in tests and "[test]" in tests and "pytest" in tests
    # the block is the first thing after the title
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.index("```bash") < text.index("\n## ")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "readme_commands.py test" in ci
    out = subprocess.run([sys.executable, str(ROOT / ".ci" / "readme_commands.py"), "test"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == _quickstart()[1]


def test_main_job_model_has_bundled_weights_and_data():
    from erf.checkpoints import bundled_weights
    from erf.data.sources import BUNDLED_SAMPLE

    main = _quickstart()[0]
    model = main.split("erf measure", 1)[1].split()[0]
    assert bundled_weights(model) is not None, f"the README's main job uses {model}, which ships no weights"
    assert BUNDLED_SAMPLE.exists()


def test_readme_python_api_block_runs():
    """The README's Python section is executed as written (on the bundled models and images)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    block = section[section.index("```python") + len("```python"): section.index("```", section.index("```python") + 9)]
    namespace: dict = {}
    exec(compile(block, "README.md (Python API)", "exec"), namespace)
    layer = namespace["layer"]
    assert layer.name == "stage3" and layer.metrics.radius[0.95] > 0
    assert namespace["cmp"].difference("stage3", "radius.95").model == "resnet20_cbam"
