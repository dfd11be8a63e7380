"""CPU stand-in for ``simple_knn`` (test harness only; NOT the CUDA package): see :mod:`._C`."""

__standin__ = True
