"""Every test session can use the test bed's fixtures (see hack/testbed/pytest_plugin.py)."""

pytest_plugins = ["testbed.pytest_plugin"]
