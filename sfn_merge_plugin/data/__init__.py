"""Training data beyond s1K: read any local table, convert it to TRL's layout, decontaminate it.

``rows`` streams a .jsonl/.json/.parquet/.csv file; ``convert`` turns named columns into the s1 layout of
``sfn_merge_plugin.freeze.data``; ``normalize`` + ``index`` + ``decontaminate`` remove training rows that
copy an evaluation item (exact match after normalisation, or shared word n-grams); ``report`` says which.
"""
