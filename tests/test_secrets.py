"""No credentials in the repository: detect-secrets over every tracked file finds nothing.
(A false positive is marked on its line with ``# pragma: allowlist secret`` and a reason.)"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [f for f in out.stdout.splitlines() if (ROOT / f).is_file()]


def test_no_secrets_in_tracked_files():
    files = _tracked()
    assert len(files) > 50
    # detect-secrets' library API, one file after another: its CLI scans through a multiprocessing
    # pool, which hung for good once when a worker died (seen on a loaded 2-core machine)
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    found = SecretsCollection(root=str(ROOT))
    with default_settings():
        for f in files:
            found.scan_file(f)
    results = found.json()
    assert results == {}, json.dumps(results, indent=1)


def test_the_scan_would_find_one(tmp_path):
    """The scanner runs for real: a planted AWS key is found."""
    planted = tmp_path / "config.py"
    planted.write_text('aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"\n')  # pragma: allowlist secret
    out = subprocess.run([str(BIN / "detect-secrets"), "scan", planted.name], cwd=tmp_path, capture_output=True,
                         text=True, check=True)
    assert json.loads(out.stdout)["results"], out.stdout
