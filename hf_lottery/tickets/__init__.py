"""Tickets: what a finished run ships and how it is loaded again.

Export (sparse and dense safetensors, masks, compact smaller stock models), the sparse file format, the model
card, loading a ticket from a folder or the Hub, push, and sparse kernels for inference.
"""
