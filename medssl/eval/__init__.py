"""medssl.eval."""
