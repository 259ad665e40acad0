"""The lottery: iterative magnitude pruning with rewinding, its controls and its cheaper methods, as a run.

A run's config (every part's options and its identity); the run directory and its file names; a level's shared
steps (``run.Run``); the IMP driver (``imp``) and the replicates around it (``runner``); result rows, the table
and plot; the controls (``controls/``) and ticket methods (``methods/``) that branch off level 0.
"""
