"""Master patient index: find the same person registered more than once (splink)."""
