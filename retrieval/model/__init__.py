"""Models: open_clip specs and identities, weights lookup, loading, devices, and the `Encoder`."""
