"""The README's Python examples run as written."""
import re
from pathlib import Path

import pytest
from conftest import add_to_hub_cache, run_cli, safetensors_bytes, timm_model

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def hub_env(tmp_path_factory) -> dict:
    """An offline Hugging Face cache holding the pretrained weights the examples load (timm's
    architecture at its default init: the examples show the calls, not the accuracy)."""
    from swin_jax.configs import PRETRAINED

    root = tmp_path_factory.mktemp("readme_hub")
    names = sorted({n for block in BLOCKS for n in re.findall(r'load_pretrained\("([^"]+)"', block)})
    for name in names:
        state = {k: v.numpy() for k, v in timm_model(name).state_dict().items()}
        add_to_hub_cache(root / "hub", PRETRAINED[name].hf_hub_id, {"model.safetensors": safetensors_bytes(state)})
    return {"HF_HUB_CACHE": str(root / "hub"), "HF_HUB_OFFLINE": "1", "SWIN_JAX_CACHE": str(root / "converted")}


def test_readme_has_examples():
    assert any("swin_jax.from_torch" in b and "swin_jax.to_torch" in b for b in BLOCKS)
    assert any("swin_jax.load_pretrained" in b for b in BLOCKS)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(code, tmp_path, hub_env):
    result = run_cli("python", "-c", code, cwd=tmp_path, env=hub_env)
    assert result.returncode == 0, result.stderr[-3000:]
    if "max |JAX - timm|" in code:
        assert float(result.stdout.split("=")[-1]) < 1e-5
    for expected in stated_outputs(code):
        assert expected in result.stdout


def stated_outputs(code: str) -> list[str]:
    """Printed values an example states in a comment: on the print's line, or a printed list on
    the comment lines under it (`# ['a', 'b',` / `#  'c']` is `['a', 'b', 'c']`)."""
    lines, out = code.splitlines(), []
    for i, line in enumerate(lines):
        if not line.startswith("print("):
            continue
        if "  # " in line:
            out.append(line.split("  # ", 1)[1])
        elif i + 1 < len(lines) and lines[i + 1].startswith("# ["):
            block = [lines[i + 1]]
            for following in lines[i + 2:]:
                if not following.startswith("#  "):
                    break
                block.append(following)
            out.append("".join(b[2:] for b in block))
    return out


def test_stated_outputs_read_wrapped_lists():
    code = "print(x)\n# ['a', 'b',\n#  'c']\nprint(y)  # 3\n# prose, not an output\nprint(z)\n# not a list"
    assert stated_outputs(code) == ["['a', 'b', 'c']", "3"]
