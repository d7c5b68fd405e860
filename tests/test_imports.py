"""Every module imports on its own: no import cycle hides behind the order create_app uses."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import devlab

PROJECT = Path(__file__).resolve().parent.parent
MODULES = sorted(module.name for module in pkgutil.walk_packages(devlab.__path__, prefix="devlab."))
# Imports each module first in a fresh child process. The third-party libraries are imported
# once before forking, which keeps this quick and changes nothing about DevLab's own cycles.
IMPORT_EACH_FIRST = """
import importlib, os, sys, traceback
import flask, flask_jwt_extended, flask_limiter, flask_smorest, flask_sqlalchemy, sqlalchemy
children = {}
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except Exception:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    children[pid] = name
print(" ".join(name for pid, name in children.items() if os.waitpid(pid, 0)[1] != 0))
"""


def test_every_module_imports_first_in_a_fresh_interpreter():
    assert {"devlab.ratelimit", "devlab.auth.access", "devlab.audit.trail"} <= set(MODULES)

    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_FIRST, *MODULES],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=True,
    )

    assert result.stdout.split() == [], result.stderr


def test_feature_packages_re_export_nothing():
    for init in (PROJECT / "devlab").glob("*/__init__.py"):
        assert init.read_text() == "", f"{init.relative_to(PROJECT)} should be empty"
