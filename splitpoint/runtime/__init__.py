"""Runtimes: LiteRT (and the Edge TPU delegate) for heads, TensorFlow for tails."""
