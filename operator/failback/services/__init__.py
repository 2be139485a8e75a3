"""Services: observe through the ports, ask the domain what to do, do one thing."""
