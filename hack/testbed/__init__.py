"""The test bed: real components on loopback for tests and the demo.

Kubernetes (etcd + kube-apiserver with RBAC, built from the Go module proxy),
vCenter (govmomi's vcsim over TLS), Azure (our emulator, ``testbed.azure``) and
Helm. Run it as ``python -m testbed build|up|down|env`` with ``hack`` on
``PYTHONPATH`` (the Makefile does), or use the pytest fixtures of
``testbed.pytest_plugin``.
"""
