"""medssl.pretext."""
