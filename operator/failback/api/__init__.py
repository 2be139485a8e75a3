"""Typed models of the failback.io/v1alpha1 custom resources (spec and status).

One module per kind, plus the constants shared by all of them. Pure: no I/O.
"""
