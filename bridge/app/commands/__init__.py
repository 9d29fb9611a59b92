"""Command groups of the ``bridge`` CLI; each module exports ``app`` (or one command)."""
