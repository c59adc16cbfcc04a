"""Small shared helpers: atomic writes, seeded randomness, logging, hashing."""
