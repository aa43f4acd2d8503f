"""The staged, cached steps (prepare -> train -> calibrate, and validate), each declaring the spec
fields it reads and receiving its upstream results; run.py runs a command's steps."""
