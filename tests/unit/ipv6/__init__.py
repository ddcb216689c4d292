"""IPv6 underlay: dual-stack address forms, candidates, path choice (pure)."""
