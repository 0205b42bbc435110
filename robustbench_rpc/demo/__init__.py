"""The embedded demo: real handwritten digits (shipped by scikit-learn), tiny SymViT / RPC-SymViT checkpoints."""
