"""salt: compute-efficient video SSL with frozen teachers (SALT, arXiv 2509.24317)."""
