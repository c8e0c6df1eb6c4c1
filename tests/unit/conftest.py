"""The unit layer: pure logic, no FiftyOne and no Prefect (checked when only this layer runs)."""

import sys


def pytest_sessionfinish(session, exitstatus):
    only_unit = all("tests/unit/" in str(item.fspath) for item in session.items)
    leaked = sorted(name for name in ("fiftyone", "prefect") if name in sys.modules)
    if session.items and only_unit and leaked:
        print(f"\nunit tests imported {', '.join(leaked)}: move the test to tests/integration")
        session.exitstatus = 1
