"""Experiment configs: each file's ``get_config(arg="")`` returns an ml_collections ConfigDict.

``path.py:smoke`` shrinks any of them to a seconds-long run (used by the CI smoke tests).
"""
