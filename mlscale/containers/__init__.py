"""Container images and the stack under a container engine (docker or podman).

The engine is always a real one found on the machine (``engine.find_engine``);
mlscale never talks to a daemon's API directly, only through its command line,
so that docker and podman behave the same and their own messages reach the user.
"""
