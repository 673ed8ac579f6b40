"""Board data (``<board>/board.json``, read by host/boards.py) and, per board, the Vivado flow
and the built overlays."""
