"""The `local` backend: runs calls in worker processes on this machine (no account needed)."""
