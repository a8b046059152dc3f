"""Memory: embeddings and the entries they index."""
