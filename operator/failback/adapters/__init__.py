"""Adapters implementing the ports for the outside systems (vSphere, Azure)."""
