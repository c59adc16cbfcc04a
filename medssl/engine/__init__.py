"""medssl.engine."""
