"""The ``task_runner`` parameter: which specs name a runner."""

import pytest

from flows.runners import TaskRunnerError, check_task_runner


@pytest.mark.parametrize(
    "spec, valid",
    [
        ("local", True),
        ("dask", True),
        ("dask:3", True),
        ("tcp://10.0.0.5:8786", True),
        ("tls://scheduler.lan:8786", True),
        ("dask:0", False),
        ("threads", False),
        ("10.0.0.5:8786", False),
        ("tcp://host", False),
    ],
)
def test_task_runner_spec_is_checked(spec, valid):
    if valid:
        assert check_task_runner(spec) == spec
    else:
        with pytest.raises(TaskRunnerError, match=f"task_runner: '{spec}'"):
            check_task_runner(spec)
