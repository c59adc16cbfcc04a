"""medssl.data."""
