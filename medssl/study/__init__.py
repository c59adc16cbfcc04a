"""medssl.study."""
