"""Re-ranking stage and its rules (business filters, freshness, MMR, genre caps)."""
