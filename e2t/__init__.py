"""The app on top: the ``e2t`` command line (cli), ``e2t deploy`` (deploy) and the energy
calibration's engine micro-benchmarks (microbench), the one place that ties host/ and energy/
together. Board side: never torch; workstation backends only through contract.backends.
"""
