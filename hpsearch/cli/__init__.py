"""The command line: ``main`` (the parser, exit codes) and one module per group of commands.

The top of the arrows: it may import every package; nothing imports it.
"""
