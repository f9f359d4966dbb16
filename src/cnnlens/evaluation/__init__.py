"""Evaluation of explanation methods on datasets (runner, datasets, distributed, tables)."""
