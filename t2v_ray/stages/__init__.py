"""The pipeline stages: library, embed, experts, grid, select (+ rank). Each module holds a light config
(no torch or Ray at import) and ``run_<stage>(cfg) -> <Stage>Summary`` (with ``.table()``); stages never print."""
