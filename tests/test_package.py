import subprocess
import sys

import trim_pomdp


def test_import_is_light():
    # `import trim_pomdp` must not pull in numba, scipy, matplotlib or an HTTP client.
    code = (
        "import sys, trim_pomdp; "
        "heavy = [m for m in ('numba', 'scipy', 'matplotlib', 'httpx', 'aiohttp', 'torch') "
        "if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=300)
    assert out.stdout.strip() == ""


def test_unknown_attribute():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        trim_pomdp.nope  # noqa: B018


def test_core_loads():
    from trim_pomdp import _core

    assert "trim_pomdp" in _core.__doc__


def test_cli_help():
    out = subprocess.run(
        [sys.executable, "-m", "trim_pomdp", "--help"], capture_output=True, text=True, check=True,
        timeout=300,
    )
    assert "trim-pomdp" in out.stdout
