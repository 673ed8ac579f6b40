"""Board data (``<board>/board.json``, read by contract/boards.py) and, per board, the Vivado flow
and the built overlays."""
