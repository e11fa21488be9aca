"""The README's Python examples run as written (under asyncio and trio)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_examples_run() -> None:
    if not README.is_file():
        pytest.skip("README.md is not beside the tests")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "the README has Python examples"
    namespace: dict[str, object] = {}
    exec(compile("\n".join(blocks), str(README), "exec"), namespace)  # noqa: S102
    main = namespace.get("main")
    if main is not None:  # the async example
        import asyncio

        import trio

        asyncio.run(main())  # type: ignore[operator]
        trio.run(main)  # type: ignore[arg-type]
