"""Commands: what a user calls, from the shell or from Python.

The command line (``cli``, the parser built from each command's arguments in ``flags``), ``find_ticket`` for a
model and a training function of the user's, ``finetune`` with a ticket's mask fixed, and the built-in demo.
"""
