"""The README's Python examples run as written."""
import re
from pathlib import Path

import pytest
from conftest import run_cli

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert any("swin_jax.from_torch" in b and "swin_jax.to_torch" in b for b in BLOCKS)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(code, tmp_path):
    result = run_cli("python", "-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    if "max |JAX - timm|" in code:
        assert float(result.stdout.split("=")[-1]) < 1e-5
