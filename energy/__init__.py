"""Energy side of e2t: power-rail sources, the per-board energy model and reports.

Board side: numpy (+ pynq) only, never torch. Every figure this package produces says
whether it was measured (rails) or modeled, and from which table.
"""
