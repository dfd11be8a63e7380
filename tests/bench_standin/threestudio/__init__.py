"""The stand-in's ``threestudio`` package: only what makes this folder look like a checkout to sdi-bench."""

__version__ = "stand-in"
__standin__ = True
