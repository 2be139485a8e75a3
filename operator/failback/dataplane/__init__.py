"""The replication data plane: process server and master target services."""
