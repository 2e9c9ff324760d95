"""pytest plugin: `lf.interop.accelerate()` before any test module imports stable_worldmodel.

Used by benchmarks/peer_suite.py to run stable-worldmodel's own test suite with lewm_fast in place:

    PYTHONPATH=<repo>:<repo>/tests/peer python -m pytest -p accelerate_plugin <their tests>
"""

import json
import os

import lewm_fast as lf

_handle = None


def patched_names() -> list[str]:
    return sorted({f"{getattr(m, '__name__', m)}.{name}" for m, name, _ in _handle.patched}) if _handle else []


def pytest_configure(config):
    """Runs before collection, so every test module imports the patched classes. With LEWM_PEER_REPORT
    set, the patched names are written there (JSON) for the suite's record."""
    global _handle
    _handle = lf.interop.accelerate()
    if os.environ.get("LEWM_PEER_REPORT"):
        with open(os.environ["LEWM_PEER_REPORT"], "w") as f:
            json.dump(patched_names(), f)


def pytest_report_header(config):
    names = patched_names()
    return [f"lewm_fast accelerate(): {len(names)} public names patched: {', '.join(names)}"]


def pytest_unconfigure(config):
    if _handle is not None:
        _handle.undo()
