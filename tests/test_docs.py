"""The documentation's code runs: every ```python block of docs/python-api.md, in order, in one namespace."""
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "python-api.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_every_code_block_of_the_python_api_page_runs(capsys):
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 7
    namespace: dict = {}
    for k, block in enumerate(blocks):
        try:
            exec(compile(block, f"{DOC.name} block {k + 1}", "exec"), namespace)
        except Exception as exc:  # name the block that broke
            pytest.fail(f"{DOC.name} block {k + 1} raised {type(exc).__name__}: {exc}\n{block}")
    printed = capsys.readouterr().out
    assert "[64, 32, 4]" in printed and "test accuracy" in printed and "hidden neurons alive" in printed
    assert namespace["summary"]["test_acc"] > 0.5  # four well-separated prototypes
