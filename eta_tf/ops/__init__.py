"""Graph-level kernels built from standard TF ops only (loadable by a stock TF Serving)."""
