"""vSphere adapter: sessions, PropertyCollector inventory, tasks, faults."""
