"""Read models built from the event stream, and live reads of the event tables."""
