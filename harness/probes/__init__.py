"""`harness probe`: representation probes of MLLM and CLIP features (linear probes, alignment,
distances, t-SNE) and the knowledge-QA question builder."""
