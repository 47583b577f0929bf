"""The live catalog: posted items (schema, Redis stream, overlays), its router, and display metadata."""
