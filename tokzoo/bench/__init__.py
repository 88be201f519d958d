"""``tokzoo bench``: a pipeline of rooms around one results dict.

options (what was asked) -> resolve (which tokenizer, its identity) ->
measure (one streaming pass, every metric) -> protocol (what the numbers
depend on) -> results (merged with the folder's earlier ones) -> render
(table, Markdown, CSV, grid) -> outputs (every file, atomically); compare and
report read results; harness is the loop.
"""
