"""`python -m ul_pipeline.nets`: print parameter and FLOP counts of every preset as markdown."""

from .presets import size_table

print(size_table())
