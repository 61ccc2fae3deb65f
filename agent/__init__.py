"""netplumbd, the netplumb agent (importable as ``netplumb.agent``)."""

__version__ = "0.1.0"
