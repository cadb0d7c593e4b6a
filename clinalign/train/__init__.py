"""Trainers: thin wrappers around TRL, one module per algorithm, named as in TRL."""
